//! One listener's runtime state, built whole and swapped on reload, and
//! the shared slot connections read it from.

use super::upstream::Upstream;
use crate::config::{ListenerLimits, ListenerSettings};
use crate::metrics::ListenerMetrics;
use crate::readiness::Readiness;
use crate::tls::ListenerTls;
use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// One listener's complete runtime state: built whole from the config,
/// then only read. A reload builds a new one and swaps it in.
pub(crate) struct ListenerState {
    /// Listener name.
    pub name: Arc<str>,
    /// TLS state: certificates, verifier, session cache; `None` for a
    /// plain-HTTP listener.
    pub tls: Option<Arc<ListenerTls>>,
    /// Sources a plain-HTTP listener admits.
    pub allow_from: Vec<ipnet::IpNet>,
    /// The PROXY header its balancers send, and who they are.
    pub proxy: Option<crate::config::ProxySettings>,
    /// Where connection classifications go (readiness report).
    pub readiness: Option<Readiness>,
    /// Where requests go.
    pub upstream: Arc<Upstream>,
    /// Timeouts and limits.
    pub limits: ListenerLimits,
    /// Metric handles.
    pub metrics: ListenerMetrics,
    /// How long a closing connection may take to finish its requests.
    pub grace: Duration,
    /// The HTTP server settings for HTTP/2 (by ALPN or preface).
    pub(super) http: auto::Builder<TokioExecutor>,
    /// The HTTP/1 server settings: an HTTP/1 connection is served by
    /// hyper's HTTP/1 server directly, so it can be parked when idle.
    pub(super) http1: hyper::server::conn::http1::Builder,
}

impl ListenerState {
    /// Assembles a listener's state from its settings and what was built
    /// for it: its TLS state, its upstream, where readiness events go, its
    /// metric handles and the shutdown grace period.
    pub(crate) fn new(
        settings: &ListenerSettings,
        tls: Option<Arc<ListenerTls>>,
        upstream: Arc<Upstream>,
        readiness: Option<Readiness>,
        metrics: ListenerMetrics,
        grace: Duration,
    ) -> ListenerState {
        let limits = settings.limits.clone();
        metrics
            .limit
            .set(i64::try_from(limits.max_connections).unwrap_or(i64::MAX));
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.request_header_timeout)
            .max_buf_size(limits.max_request_header_bytes)
            .max_headers(limits.max_request_headers);
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.request_header_timeout)
            .max_buf_size(limits.max_request_header_bytes)
            .max_headers(limits.max_request_headers);
        http.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(
                u32::try_from(limits.max_request_header_bytes).unwrap_or(u32::MAX),
            )
            .max_concurrent_streams(128)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        ListenerState {
            name: settings.name.as_str().into(),
            tls,
            allow_from: settings.allow_from.clone(),
            proxy: settings.proxy.clone(),
            readiness,
            upstream,
            limits,
            metrics,
            grace,
            http,
            http1,
        }
    }
}

impl std::fmt::Debug for ListenerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerState")
            .field("name", &self.name)
            .field("upstream", &self.upstream.settings.name)
            .finish_non_exhaustive()
    }
}

/// The swappable state of one bound listener socket. Connections read it at
/// accept (TLS, limits) and per request (upstream), and are told when it
/// changes so they can re-check their client against new CAs and CRLs.
pub(crate) struct ListenerShared {
    pub(super) state: ArcSwap<ListenerState>,
    pub(super) generation: watch::Sender<u64>,
    /// What may change whether an open connection's client is still
    /// admitted, merged for all of them by one task
    /// ([`super::recheck::watch_changes`]), started with the first.
    pub(super) changes: std::sync::OnceLock<watch::Sender<super::recheck::Changes>>,
}

impl std::fmt::Debug for ListenerShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerShared")
            .field("state", &self.state.load())
            .finish_non_exhaustive()
    }
}

impl ListenerShared {
    /// Wraps the first state of a listener.
    pub(crate) fn new(state: ListenerState) -> ListenerShared {
        ListenerShared {
            state: ArcSwap::from_pointee(state),
            generation: watch::Sender::new(0),
            changes: std::sync::OnceLock::new(),
        }
    }

    /// The state in force now.
    pub(crate) fn current(&self) -> Arc<ListenerState> {
        self.state.load_full()
    }

    /// Swaps in a new state whole and tells open connections.
    pub(crate) fn replace(&self, state: ListenerState) {
        self.state.store(Arc::new(state));
        self.generation.send_modify(|g| *g += 1);
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
