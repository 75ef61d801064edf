//! The data path: accept loops, TLS handshakes with client-certificate
//! checks, the HTTP service and the upstream pool.
//!
//! A connection reads the listener's current [`ListenerTls`] once, at
//! accept, and keeps it for its lifetime: a reload changes what new
//! connections get, never what an open one negotiated.

pub mod headers;
pub mod service;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::config::{ClientAuthMode, ListenerLimits};
use crate::metrics::ListenerMetrics;
use crate::tls::{self, ListenerTls, PeerIdentity};
use headers::ClientFacts;
use service::{Activity, ConnContext};
use upstream::Upstream;

/// Everything one listener's accept loop needs.
pub struct ListenerShared {
    /// Listener name.
    pub name: Arc<str>,
    /// Current TLS state; swapped whole on reload.
    pub tls: ArcSwap<ListenerTls>,
    /// Where requests go.
    pub upstream: Arc<Upstream>,
    /// Timeouts and limits.
    pub limits: ListenerLimits,
    /// Metric handles.
    pub metrics: ListenerMetrics,
    /// The HTTP server settings (HTTP/1.1 and HTTP/2 by ALPN/preface).
    http: auto::Builder<TokioExecutor>,
}

impl ListenerShared {
    /// Assembles a listener's shared state.
    pub fn new(
        name: &str,
        tls: ListenerTls,
        upstream: Arc<Upstream>,
        limits: ListenerLimits,
        metrics: ListenerMetrics,
    ) -> ListenerShared {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
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
            .keep_alive_interval(Some(std::time::Duration::from_secs(30)))
            .keep_alive_timeout(std::time::Duration::from_secs(20));
        ListenerShared {
            name: name.into(),
            tls: ArcSwap::from_pointee(tls),
            upstream,
            limits,
            metrics,
            http,
        }
    }
}

impl std::fmt::Debug for ListenerShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerShared")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Accepts connections until `shutdown` turns true. Each connection task
/// holds a clone of `drain`; the caller waits for all clones to drop.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<ListenerShared>,
    mut shutdown: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
) {
    let slots = Arc::new(Semaphore::new(shared.limits.max_connections));
    loop {
        // Wait for a free slot before accepting: beyond the cap clients queue
        // in the kernel backlog instead of being accepted and dropped.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE/ENFILE and friends: back off instead of spinning.
                    warn!(listener = %shared.name, error = %e, "accept failed; retrying in 100ms");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        shared.metrics.accepted.inc();
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let drain = drain.clone();
        tokio::spawn(async move {
            shared.metrics.active.inc();
            connection(tcp, peer, &shared, shutdown).await;
            shared.metrics.active.dec();
            drop(permit);
            drop(drain);
        });
    }
}

fn version_label(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        _ => "other",
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &ListenerShared,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let state = shared.tls.load_full();
    let acceptor = TlsAcceptor::from(state.server_config.clone());
    let stream = match tokio::time::timeout(shared.limits.handshake_timeout, acceptor.accept(tcp))
        .await
    {
        Err(_) => {
            shared.metrics.handshake_failure("timeout");
            info!(listener = %shared.name, %peer, reason = "timeout",
                    "TLS handshake not completed within {:?}; closed", shared.limits.handshake_timeout);
            return;
        }
        Ok(Err(e)) => {
            let (reason, detail) = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
            {
                Some(te) => (tls::failure_reason(te), te.to_string()),
                None => ("io", e.to_string()),
            };
            shared.metrics.handshake_failure(reason);
            info!(listener = %shared.name, %peer, reason, error = %detail, "TLS handshake refused");
            return;
        }
        Ok(Ok(s)) => s,
    };

    let (_, conn) = stream.get_ref();
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let version = version_label(conn.protocol_version());
    let identity = match state.mode {
        ClientAuthMode::Off => None,
        ClientAuthMode::Required => {
            let Some(chain) = conn.peer_certificates() else {
                // The verifier requires a certificate; this cannot happen
                // unless rustls changes, and then we refuse rather than admit.
                shared.metrics.handshake_failure("no_certificate");
                warn!(listener = %shared.name, %peer, "handshake completed without a client certificate; closed");
                return;
            };
            if resumed
                && let Some(v) = &state.verifier
                && let Err(e) = tls::reverify(v.as_ref(), chain)
            {
                let reason = tls::failure_reason(&e);
                shared.metrics.handshake_failure(reason);
                info!(listener = %shared.name, %peer, reason, error = %e,
                    "resumed TLS session refused on re-verification; closed");
                return;
            }
            match chain.first().and_then(|c| PeerIdentity::from_der(c)) {
                Some(id) => Some(id),
                None => {
                    shared.metrics.handshake_failure("bad_certificate");
                    warn!(listener = %shared.name, %peer, "client certificate cannot be parsed; closed");
                    return;
                }
            }
        }
    };
    shared.metrics.handshake(version, resumed);
    debug!(listener = %shared.name, %peer, version, resumed,
        fingerprint = identity.as_ref().map(|i| i.fingerprint.as_str()).unwrap_or("-"),
        "TLS handshake complete");

    let verify = if identity.is_some() {
        "SUCCESS"
    } else {
        "NONE"
    };
    let activity = Arc::new(Activity::default());
    let ctx = Arc::new(ConnContext {
        listener: shared.name.clone(),
        peer,
        facts: ClientFacts {
            forwarded_for: HeaderValue::from_str(&peer.ip().to_canonical().to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
            proto: HeaderValue::from_static("https"),
            verify: HeaderValue::from_static(verify),
            identity,
        },
        upstream: shared.upstream.clone(),
        metrics: shared.metrics.clone(),
        activity: activity.clone(),
    });
    let svc = hyper::service::service_fn(move |req| service::handle(ctx.clone(), req));
    let conn = shared
        .http
        .serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);

    let idle_timeout = shared.limits.idle_timeout;
    let mut closing = *shutdown.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let idle_deadline = activity
            .idle_since()
            .map(|t| t + idle_timeout)
            .unwrap_or_else(|| tokio::time::Instant::now().into_std() + idle_timeout);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(listener = %shared.name, %peer, error = %service::error_chain(e.as_ref()), "connection ended with error");
                }
                return;
            }
            _ = shutdown.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(idle_deadline.into()), if !closing => {
                if activity.idle_since().is_some_and(|t| t.elapsed() >= idle_timeout) {
                    debug!(listener = %shared.name, %peer, "idle timeout; closing");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
