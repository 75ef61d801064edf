//! The data path: accept loops, TLS handshakes with client-certificate
//! checks, the HTTP service and the upstream pool.
//!
//! A connection reads the listener's current [`ListenerState`] once, at
//! accept, and keeps its TLS state and limits for its lifetime: a reload
//! changes what new connections get, never what an open one negotiated.
//! Two things do follow a reload on open connections: each request goes to
//! the upstream in force when it arrives, and a client that the new CAs,
//! CRLs or policy no longer admit is disconnected.

pub mod headers;
pub mod service;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::CertificateDer;
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

/// How long a connection accepted just before its listener stopped may
/// take to send its first request.
const FIRST_REQUEST_WAIT: Duration = Duration::from_secs(1);

/// One listener's complete runtime state: built whole from the config,
/// then only read. A reload builds a new one and swaps it in.
pub struct ListenerState {
    /// Listener name.
    pub name: Arc<str>,
    /// TLS state: certificates, verifier, session cache.
    pub tls: Arc<ListenerTls>,
    /// Where requests go.
    pub upstream: Arc<Upstream>,
    /// Timeouts and limits.
    pub limits: ListenerLimits,
    /// Metric handles.
    pub metrics: ListenerMetrics,
    /// How long a closing connection may take to finish its requests.
    pub grace: Duration,
    /// The HTTP server settings (HTTP/1.1 and HTTP/2 by ALPN/preface).
    http: auto::Builder<TokioExecutor>,
}

impl ListenerState {
    /// Assembles a listener's state.
    pub fn new(
        name: &str,
        tls: Arc<ListenerTls>,
        upstream: Arc<Upstream>,
        limits: ListenerLimits,
        metrics: ListenerMetrics,
        grace: Duration,
    ) -> ListenerState {
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
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        ListenerState {
            name: name.into(),
            tls,
            upstream,
            limits,
            metrics,
            grace,
            http,
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
pub struct ListenerShared {
    state: ArcSwap<ListenerState>,
    generation: watch::Sender<u64>,
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
    pub fn new(state: ListenerState) -> ListenerShared {
        ListenerShared {
            state: ArcSwap::from_pointee(state),
            generation: watch::Sender::new(0),
        }
    }

    /// The state in force now.
    pub fn current(&self) -> Arc<ListenerState> {
        self.state.load_full()
    }

    /// Swaps in a new state whole and tells open connections.
    pub fn replace(&self, state: ListenerState) {
        self.state.store(Arc::new(state));
        self.generation.send_modify(|g| *g += 1);
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// What a connection was admitted with, so that a reload that changes the
/// client CAs, CRLs or policy can re-check it: a device revoked or no longer
/// trusted is cut off on its open connections too, not only on its next
/// handshake (DESIGN.md, "refused on every path").
#[derive(Debug, Clone)]
pub struct Admission {
    shared: Arc<ListenerShared>,
    chain: Option<Arc<[CertificateDer<'static>]>>,
    digest: [u8; 32],
}

impl Admission {
    /// Resolves, with a reason label, once the listener's current state no
    /// longer admits this client; never resolves otherwise.
    pub async fn revoked(&self) -> &'static str {
        let mut changes = self.shared.subscribe();
        let mut digest = self.digest;
        loop {
            let state = self.shared.current();
            if state.tls.trust_digest != digest {
                digest = state.tls.trust_digest;
                if let Err(reason) = admits(&state.tls, self.chain.as_deref()) {
                    return reason;
                }
            }
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

impl Admission {
    /// Counts a connection closed because it is no longer admitted.
    pub fn count_closed(&self, reason: &'static str) {
        self.shared.current().metrics.closed_by_policy(reason);
    }
}

fn admits(
    tls: &ListenerTls,
    chain: Option<&[CertificateDer<'static>]>,
) -> Result<(), &'static str> {
    match (tls.mode, &tls.verifier, chain) {
        (ClientAuthMode::Off, _, _) => Ok(()),
        (ClientAuthMode::Required, _, None) | (ClientAuthMode::Required, None, _) => {
            Err("no_certificate")
        }
        (ClientAuthMode::Required, Some(v), Some(chain)) => {
            tls::reverify(v.as_ref(), chain).map_err(|e| tls::failure_reason(&e))
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Accepts connections until `stop` turns true. Each connection task
/// holds a clone of `drain`; the caller waits for all clones to drop.
pub async fn serve(
    listener: Arc<TcpListener>,
    shared: Arc<ListenerShared>,
    mut stop: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
) {
    let mut cap = shared.current().limits.max_connections;
    let mut slots = Arc::new(Semaphore::new(cap));
    loop {
        let state = shared.current();
        if state.limits.max_connections != cap {
            // A reload changed the cap: new connections count against a new
            // semaphore; open ones keep the permit they hold.
            cap = state.limits.max_connections;
            slots = Arc::new(Semaphore::new(cap));
        }
        // Wait for a free slot before accepting: beyond the cap clients queue
        // in the kernel backlog instead of being accepted and dropped.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stopped(&mut stop) => return,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE/ENFILE and friends: back off instead of spinning.
                    warn!(listener = %state.name, error = %e, "accept failed; retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return,
        };
        let state = shared.current();
        state.metrics.accepted.inc();
        let shared = shared.clone();
        let stop = stop.clone();
        let drain = drain.clone();
        tokio::spawn(async move {
            let metrics = state.metrics.clone();
            metrics.active.inc();
            connection(tcp, peer, shared, state, stop, drain).await;
            metrics.active.dec();
            drop(permit);
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
    shared: Arc<ListenerShared>,
    state: Arc<ListenerState>,
    mut stop: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
) {
    let _ = tcp.set_nodelay(true);
    let name = &state.name;
    let acceptor = TlsAcceptor::from(state.tls.server_config.clone());
    let stream = match tokio::time::timeout(state.limits.handshake_timeout, acceptor.accept(tcp))
        .await
    {
        Err(_) => {
            state.metrics.handshake_failure("timeout");
            info!(listener = %name, %peer, reason = "timeout",
                    "TLS handshake not completed within {:?}; closed", state.limits.handshake_timeout);
            return;
        }
        Ok(Err(e)) => {
            let (reason, detail) = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
            {
                Some(te) => (tls::failure_reason(te), te.to_string()),
                None => ("io", e.to_string()),
            };
            state.metrics.handshake_failure(reason);
            info!(listener = %name, %peer, reason, error = %detail, "TLS handshake refused");
            return;
        }
        Ok(Ok(s)) => s,
    };

    let (_, conn) = stream.get_ref();
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let version = version_label(conn.protocol_version());
    let mut chain = None;
    let identity = match state.tls.mode {
        ClientAuthMode::Off => None,
        ClientAuthMode::Required => {
            let Some(certs) = conn.peer_certificates() else {
                // The verifier requires a certificate; this cannot happen
                // unless rustls changes, and then we refuse rather than admit.
                state.metrics.handshake_failure("no_certificate");
                warn!(listener = %name, %peer, "handshake completed without a client certificate; closed");
                return;
            };
            if resumed
                && let Some(v) = &state.tls.verifier
                && let Err(e) = tls::reverify(v.as_ref(), certs)
            {
                let reason = tls::failure_reason(&e);
                state.metrics.handshake_failure(reason);
                info!(listener = %name, %peer, reason, error = %e,
                    "resumed TLS session refused on re-verification; closed");
                return;
            }
            let Some(id) = certs.first().and_then(|c| PeerIdentity::from_der(c)) else {
                state.metrics.handshake_failure("bad_certificate");
                warn!(listener = %name, %peer, "client certificate cannot be parsed; closed");
                return;
            };
            chain = Some(Arc::from(
                certs
                    .iter()
                    .map(|c| c.clone().into_owned())
                    .collect::<Vec<_>>(),
            ));
            Some(id)
        }
    };
    state.metrics.handshake(version, resumed);
    debug!(listener = %name, %peer, version, resumed,
        fingerprint = identity.as_ref().map(|i| i.fingerprint.as_str()).unwrap_or("-"),
        "TLS handshake complete");

    let admission = Admission {
        shared: shared.clone(),
        chain,
        digest: state.tls.trust_digest,
    };
    let verify = if identity.is_some() {
        "SUCCESS"
    } else {
        "NONE"
    };
    let activity = Arc::new(Activity::default());
    let ctx = Arc::new(ConnContext {
        shared: shared.clone(),
        peer,
        facts: ClientFacts {
            forwarded_for: HeaderValue::from_str(&peer.ip().to_canonical().to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
            proto: HeaderValue::from_static("https"),
            verify: HeaderValue::from_static(verify),
            identity,
        },
        activity: activity.clone(),
        admission: admission.clone(),
        stop: stop.clone(),
        drain,
    });
    let svc = hyper::service::service_fn(move |req| service::handle(ctx.clone(), req));
    let conn = state
        .http
        .serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let revoked = admission.revoked();
    tokio::pin!(revoked);

    let idle_timeout = state.limits.idle_timeout;
    let now = tokio::time::Instant::now;
    // When the listener stops, a connection that has not sent its first
    // request yet gets a moment to send it: it was accepted, so its client
    // has a request on the way, and closing it unanswered would fail that
    // request (HTTP/1 has no way to say "go elsewhere" before a request).
    let first_request_wait = |accepted: tokio::time::Instant| accepted + FIRST_REQUEST_WAIT;
    let accepted = now();
    let mut close_at: Option<tokio::time::Instant> = None;
    let mut closing: Option<tokio::time::Instant> = None;
    if *stop.borrow() {
        close_at = Some(first_request_wait(accepted));
    }
    loop {
        let idle_deadline = activity
            .idle_since()
            .map(|t| t + idle_timeout)
            .unwrap_or_else(|| now().into_std() + idle_timeout);
        if closing.is_none()
            && let Some(at) = close_at
            && (activity.requests() > 0 || now() >= at)
        {
            closing = Some(now() + state.grace);
            conn.as_mut().graceful_shutdown();
        }
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(listener = %name, %peer, error = %service::error_chain(e.as_ref()), "connection ended with error");
                }
                return;
            }
            reason = revoked.as_mut() => {
                admission.count_closed(reason);
                info!(listener = %name, %peer, reason,
                    "client no longer admitted after reload (client CA, CRL or policy changed); connection closed");
                return;
            }
            _ = stopped(&mut stop), if close_at.is_none() => {
                close_at = Some(if activity.requests() == 0 { first_request_wait(accepted) } else { now() });
            }
            // Re-check for a first request now and then while waiting for it.
            _ = tokio::time::sleep(Duration::from_millis(20)), if closing.is_none() && close_at.is_some() => {}
            _ = tokio::time::sleep_until(closing.unwrap_or_else(now)), if closing.is_some() => {
                info!(listener = %name, %peer, grace = ?state.grace,
                    "connection still busy when the grace period ended; closed");
                return;
            }
            _ = tokio::time::sleep_until(idle_deadline.into()), if closing.is_none() => {
                if activity.idle_since().is_some_and(|t| t.elapsed() >= idle_timeout) {
                    debug!(listener = %name, %peer, "idle timeout; closing");
                    closing = Some(now() + state.grace);
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
