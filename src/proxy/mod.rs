//! The data path: accept loops, TLS handshakes with client-certificate
//! checks, the HTTP service and the upstream pool.
//!
//! A connection reads the listener's current [`ListenerState`] once, at
//! accept, and keeps its TLS state and limits for its lifetime: a reload
//! changes what new connections get, never what an open one negotiated.
//! Two things do follow a reload on open connections: each request goes to
//! the upstream in force when it arrives, and a client that the new CAs,
//! CRLs or policy no longer admit is disconnected.

pub mod framing;
pub mod headers;
pub mod service;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::admission::{Admitted, Refusal, Verdict};
use crate::config::{ClientAuthMode, ListenerLimits};
use crate::identity;
use crate::metrics::ListenerMetrics;
use crate::readiness::{Event as ReadinessEvent, Readiness, Status};
use crate::registry::{DeviceStatus, Observation};
use crate::shutdown::stopped;
use crate::tls::hello::{self, Offered, Recorded};
use crate::tls::{self, HandshakeNote, ListenerTls};
use headers::ClientFacts;
use headers::ClientIdentity;
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
    /// TLS state: certificates, verifier, session cache; `None` for a
    /// plain-HTTP listener.
    pub tls: Option<Arc<ListenerTls>>,
    /// Sources a plain-HTTP listener admits.
    pub allow_from: Vec<ipnet::IpNet>,
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
    /// The HTTP server settings (HTTP/1.1 and HTTP/2 by ALPN/preface).
    http: auto::Builder<TokioExecutor>,
}

impl ListenerState {
    /// Assembles a listener's state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        tls: Option<Arc<ListenerTls>>,
        allow_from: Vec<ipnet::IpNet>,
        readiness: Option<Readiness>,
        upstream: Arc<Upstream>,
        limits: ListenerLimits,
        metrics: ListenerMetrics,
        grace: Duration,
    ) -> ListenerState {
        metrics
            .limit
            .set(i64::try_from(limits.max_connections).unwrap_or(i64::MAX));
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
            allow_from,
            readiness,
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
    fingerprint: Option<[u8; 32]>,
    chain: Option<Arc<[CertificateDer<'static>]>>,
    digest: [u8; 32],
}

impl Admission {
    /// Resolves, with a reason label, once the listener's current state no
    /// longer admits this client; never resolves otherwise.
    pub async fn revoked(&self) -> &'static str {
        let mut changes = self.shared.subscribe();
        let mut digest = self.digest;
        let mut registry = self
            .shared
            .current()
            .tls
            .as_ref()
            .and_then(|t| t.policy.as_ref())
            .and_then(|p| p.registry.as_ref().map(|r| r.revocations()));
        loop {
            let state = self.shared.current();
            let Some(tls) = &state.tls else {
                // Plain HTTP: nothing to re-check.
                return std::future::pending().await;
            };
            if tls.trust_digest != digest {
                digest = tls.trust_digest;
                if let Err(reason) = admits(tls, self.chain.as_deref()) {
                    return reason;
                }
            }
            // Blocked (or no longer approved) in the registry: a status
            // lookup, no chain verification. A block closes connections in
            // observe mode too.
            if let (Some(policy), Some(fp), Some(leaf)) = (
                &tls.policy,
                &self.fingerprint,
                self.chain.as_deref().and_then(|c| c.first()),
            ) && let Verdict::Refuse { reason, .. } = policy.decide(fp, leaf)
                && (reason.by_admin() || tls.mode == ClientAuthMode::Required)
            {
                return reason.as_str();
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() {
                    return std::future::pending().await;
                },
                r = async {
                    match registry.as_mut() {
                        Some(rx) => rx.changed().await,
                        None => std::future::pending().await,
                    }
                } => if r.is_err() {
                    registry = None;
                },
            }
        }
    }
}

impl Admission {
    /// Counts a connection closed because it is no longer admitted.
    pub fn count_closed(&self, reason: &'static str) {
        self.shared.current().metrics.closed_by_policy(reason);
    }

    /// An admission for a connection without TLS.
    fn plain(shared: Arc<ListenerShared>) -> Admission {
        Admission {
            shared,
            fingerprint: None,
            chain: None,
            digest: [0; 32],
        }
    }
}

fn admits(
    tls: &ListenerTls,
    chain: Option<&[CertificateDer<'static>]>,
) -> Result<(), &'static str> {
    match (tls.mode, &tls.verifier, chain) {
        (ClientAuthMode::Off | ClientAuthMode::Observe, _, _) => Ok(()),
        (ClientAuthMode::Required, _, None) | (ClientAuthMode::Required, None, _) => {
            Err("no_certificate")
        }
        (ClientAuthMode::Required, Some(v), Some(chain)) => {
            tls::reverify(v.as_ref(), chain).map_err(|e| tls::failure_reason(&e))
        }
    }
}

/// Open connections per source address, for `max_connections_per_source`.
/// Touched once at accept and once at close, never during a request.
#[derive(Debug, Default)]
struct SourceCounts(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// A connection's place in [`SourceCounts`]; released on drop.
struct SourceSlot(Arc<SourceCounts>, std::net::IpAddr);

impl SourceCounts {
    /// A slot for one more connection from `ip`, or `None` at the limit
    /// (`0` = no limit, and no bookkeeping).
    fn admit(self: &Arc<Self>, ip: std::net::IpAddr, limit: usize) -> Option<Option<SourceSlot>> {
        if limit == 0 {
            return Some(None);
        }
        let ip = ip.to_canonical();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Some(SourceSlot(self.clone(), ip)))
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut map = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

/// Token buckets of new connections per source address, for
/// `handshake_rate_per_source`. Only the accept loop touches it, so no
/// lock. A handful of fields per address; written here because the
/// rate-limit crates bring their own clocks and maps for what is ten lines.
#[derive(Debug, Default)]
struct HandshakeRates {
    buckets: std::collections::HashMap<std::net::IpAddr, (f64, Instant)>,
    swept: Option<Instant>,
}

impl HandshakeRates {
    /// Most addresses tracked; beyond it the table starts over (admitting
    /// rather than refusing: the limit is a brake, not an allow-list).
    const MAX_SOURCES: usize = 100_000;

    /// Whether one more handshake from `ip` fits `rate` per second.
    fn admit(&mut self, ip: std::net::IpAddr, rate: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let now = Instant::now();
        let rate = f64::from(rate);
        // A bucket untouched for a second is full again: forget it.
        if self
            .swept
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
        {
            self.buckets
                .retain(|_, (_, last)| now.duration_since(*last) < Duration::from_secs(1));
            self.swept = Some(now);
        }
        if self.buckets.len() >= Self::MAX_SOURCES {
            self.buckets.clear();
        }
        let (tokens, last) = self.buckets.entry(ip.to_canonical()).or_insert((rate, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// At most one log line a second for a refusal that an attacker can repeat.
#[derive(Debug, Default)]
struct LogLimit(std::sync::atomic::AtomicU64);

/// Slow request heads are logged through this one limit: a slowloris
/// attack opens thousands of connections, each ending in that line.
static SLOW_HEAD_LOG: LogLimit = LogLimit(std::sync::atomic::AtomicU64::new(0));

impl LogLimit {
    fn should_log(&self) -> bool {
        let now = u64::try_from(crate::clock::now_unix()).unwrap_or(0);
        self.0.swap(now, std::sync::atomic::Ordering::Relaxed) != now
    }
}

/// Accepts connections until `stop` turns true. Each connection task
/// holds a clone of `drain`; the caller waits for all clones to drop.
pub async fn serve(
    listener: Arc<TcpListener>,
    shared: Arc<ListenerShared>,
    mut stop: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
) {
    let sources = Arc::new(SourceCounts::default());
    let mut rates = HandshakeRates::default();
    let refusal_log = LogLimit::default();
    let full_log = LogLimit::default();
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
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                // Agents queued here see slow connects, not refusals: the
                // admin needs to hear it from certgate.
                state.metrics.limit_reached.inc();
                if full_log.should_log() {
                    warn!(listener = %state.name, max_connections = cap,
                        "listener full: max_connections open, new connections wait in the kernel backlog \
                         until one closes (raise [[listener]] max_connections if the host can take more; \
                         counted in certgate_connections_limit_reached_total)");
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                    _ = stopped(&mut stop) => return,
                }
            }
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
        if !rates.admit(peer.ip(), state.limits.handshake_rate_per_source) {
            state.metrics.connection_refused("handshake_rate");
            if refusal_log.should_log() {
                info!(listener = %state.name, %peer, rate = state.limits.handshake_rate_per_source,
                    "too many new connections per second from this source (handshake_rate_per_source); \
                     closed before TLS (further refusals are counted in certgate_connections_refused_total, \
                     logged at most once a second)");
            }
            drop(tcp);
            continue;
        }
        let Some(slot) = sources.admit(peer.ip(), state.limits.max_connections_per_source) else {
            state.metrics.connection_refused("per_source_limit");
            if refusal_log.should_log() {
                info!(listener = %state.name, %peer, limit = state.limits.max_connections_per_source,
                    "too many connections from this source (max_connections_per_source); closed before TLS \
                     (further refusals are counted in certgate_connections_refused_total, logged at most once a second)");
            }
            drop(tcp);
            continue;
        };
        let shared = shared.clone();
        let stop = stop.clone();
        let drain = drain.clone();
        tokio::spawn(async move {
            let metrics = state.metrics.clone();
            metrics.active.inc();
            connection(tcp, peer, shared, state, stop, drain).await;
            metrics.active.dec();
            drop(slot);
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

type Tls = tokio_rustls::server::TlsStream<Recorded<TcpStream>>;

/// After a completed handshake: a resumed session is verified again
/// (rustls restores its client chain without calling the verifier), with
/// the listener state it was accepted under. A refusal says why: the
/// policy's reason when the policy refused, else the CA failure's.
fn check_session(
    stream: Tls,
    tls: &ListenerTls,
) -> Result<Tls, (Option<Refusal>, &'static str, String)> {
    let (_, conn) = stream.get_ref();
    if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
        && let (Some(v), Some(certs)) = (&tls.verifier, conn.peer_certificates())
        && let Err(e) = tls::reverify(v.as_ref(), certs)
    {
        let noted = tls::HANDSHAKE
            .try_with(|n| match n.borrow().verdict {
                Some(Verdict::Refuse { reason, .. }) => Some(reason),
                _ => None,
            })
            .ok()
            .flatten();
        let reason = noted.map_or_else(|| tls::failure_reason(&e), Refusal::as_str);
        return Err((noted, reason, tls::failure_detail(&e)));
    }
    Ok(stream)
}

/// Tells the registry about a handshake of a device it knows, or of a
/// first-seen device it is to record.
fn observe(
    tls: &ListenerTls,
    note: &HandshakeNote,
    peer: SocketAddr,
    refused: Option<&'static str>,
    admitted_record: bool,
) {
    let Some(reg) = tls.policy.as_ref().and_then(|p| p.registry.as_ref()) else {
        return;
    };
    let Some(fp) = note.fingerprint else { return };
    let record = match note.verdict {
        Some(Verdict::Refuse {
            record_pending: true,
            ..
        }) => Some(DeviceStatus::Pending),
        Some(Verdict::Admit { record: true, .. }) if admitted_record => {
            Some(DeviceStatus::Approved)
        }
        _ => None,
    };
    // Refusals of certificates the registry has never seen and will not
    // record (bad CA, expired, ...) are not sent: strangers cannot fill
    // the queue with them.
    if record.is_none() && reg.status(&fp).is_none() {
        return;
    }
    reg.observe(Observation {
        fingerprint: fp,
        der: note.der.clone(),
        peer,
        at: crate::clock::now_unix(),
        refused,
        record,
    });
}

/// The readiness status of a policy refusal.
fn refusal_status(r: Refusal) -> Status {
    match r {
        Refusal::Blocked => Status::Blocked,
        Refusal::Unapproved | Refusal::NotAllowed => Status::Unapproved,
    }
}

/// How a client authenticated, from what the verifier noted: `policy` when
/// the policy refused it, `failure` when the handshake failed otherwise.
fn classify(
    note: &HandshakeNote,
    policy: Option<Refusal>,
    failure: Option<&'static str>,
) -> (Status, &'static str) {
    if let Some(r) = policy {
        return (refusal_status(r), r.as_str());
    }
    if let Some(r) = failure {
        return match r {
            "no_certificate" => (Status::NoCredentials, "none"),
            _ => (Status::Failed, r),
        };
    }
    if note.fingerprint.is_none() {
        return (Status::NoCredentials, "none");
    }
    if let Some(r) = note.ca_failure {
        return (Status::Failed, r);
    }
    match note.verdict {
        Some(Verdict::Refuse { reason, .. }) => (refusal_status(reason), reason.as_str()),
        _ => (Status::Authenticated, "none"),
    }
}

fn record(
    state: &ListenerState,
    peer: SocketAddr,
    (status, reason): (Status, &'static str),
    note: &HandshakeNote,
    subject: Option<String>,
    legacy: Option<String>,
) {
    state.metrics.client_auth(status.as_str(), reason);
    if let Some(r) = &state.readiness {
        r.record(ReadinessEvent {
            listener: state.name.clone(),
            status,
            reason,
            peer: peer.ip().to_canonical(),
            fingerprint: note.fingerprint.map(|f| identity::sha256_hex_of(&f)),
            subject,
            legacy_version: legacy,
            at: crate::clock::now_unix(),
        });
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<ListenerShared>,
    state: Arc<ListenerState>,
    stop: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
) {
    let _ = tcp.set_nodelay(true);
    let Some(tls_state) = state.tls.clone() else {
        return Box::pin(plain(tcp, peer, shared, state, stop, drain)).await;
    };
    let name = &state.name;
    let accepted_at = std::time::Instant::now();
    let acceptor = TlsAcceptor::from(tls_state.server_config.clone());
    // The handshake runs inside HANDSHAKE's scope so the verifier (and the
    // session store) can tell this task what they decided. The stream
    // keeps a copy of the ClientHello until then, to explain a refusal.
    let (accepted, note, offered) = Box::pin(tls::HANDSHAKE.scope(
        std::cell::RefCell::new(HandshakeNote::default()),
        async {
            let mut offered = Offered::Incomplete;
            let r = tokio::time::timeout(
                state.limits.handshake_timeout,
                acceptor.accept(Recorded::new(tcp)).into_fallible(),
            )
            .await;
            let r = match r {
                Ok(Ok(mut stream)) => {
                    stream.get_mut().0.forget();
                    // Boxed: the stream (rustls state included) is ~1.2 KiB,
                    // and moved by value it would take a slot in this task's
                    // future at every step of its way into hyper.
                    Ok(check_session(stream, &tls_state).map(Box::new))
                }
                Ok(Err((e, io))) => {
                    offered = io.offered();
                    Err(Some(e))
                }
                Err(_) => Err(None),
            };
            let note = tls::HANDSHAKE.with(|n| std::mem::take(&mut *n.borrow_mut()));
            (r, note, offered)
        },
    ))
    .await;
    let policy_refusal = match note.verdict {
        Some(Verdict::Refuse { reason, .. })
            if reason.by_admin() || tls_state.mode == ClientAuthMode::Required =>
        {
            Some(reason)
        }
        _ => None,
    };
    let stream = match accepted {
        Err(None) => {
            state.metrics.handshake_failure("timeout");
            info!(listener = %name, %peer, reason = "timeout",
                    "TLS handshake not completed within {:?}; closed", state.limits.handshake_timeout);
            return;
        }
        Err(Some(e)) => {
            let (mut reason, mut detail) = match (
                policy_refusal,
                e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
            ) {
                (Some(r), _) => (r.as_str(), r.detail().to_string()),
                (None, Some(te)) => (tls::failure_reason(te), tls::failure_detail(te)),
                (None, None) => ("io", e.to_string()),
            };
            let mut legacy = None;
            if offered.is_legacy()
                && let Some(v) = offered.version()
            {
                let version = hello::version_name(v);
                reason = "legacy_protocol";
                detail = format!("offered at most {version}; this listener needs TLS 1.2 or newer");
                legacy = Some(version);
            }
            state.metrics.handshake_failure(reason);
            let fp_hex = note.fingerprint.map(|f| identity::sha256_hex_of(&f));
            if let Some(r) = policy_refusal {
                state.metrics.decision(r.as_str());
            }
            info!(listener = %name, %peer, reason, error = %detail,
                fingerprint = fp_hex.as_deref().unwrap_or("-"), "TLS handshake refused");
            crate::access::refused(name, peer, reason, fp_hex.as_deref());
            if tls_state.mode != ClientAuthMode::Off {
                // A legacy client never got as far as a policy verdict.
                let class = classify(
                    &note,
                    policy_refusal.filter(|_| legacy.is_none()),
                    Some(reason),
                );
                record(&state, peer, class, &note, None, legacy);
            }
            observe(&tls_state, &note, peer, Some(reason), false);
            return;
        }
        Ok(Err((policy, reason, detail))) => {
            state.metrics.handshake_failure(reason);
            info!(listener = %name, %peer, reason, error = %detail,
                "resumed TLS session refused on re-verification; closed");
            if tls_state.mode != ClientAuthMode::Off {
                record(
                    &state,
                    peer,
                    classify(&note, policy, Some(reason)),
                    &note,
                    None,
                    None,
                );
            }
            return;
        }
        Ok(Ok(s)) => s,
    };

    let (_, conn) = stream.get_ref();
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let version = version_label(conn.protocol_version());
    let certs = conn.peer_certificates();
    let class = match (tls_state.mode, certs) {
        (ClientAuthMode::Off, _) => None,
        // Admitted under `required`: the verifier (and re-verification of
        // a resumed session) accepted the certificate.
        (ClientAuthMode::Required, _) => Some((Status::Authenticated, "none")),
        (ClientAuthMode::Observe, None) => Some((Status::NoCredentials, "none")),
        (ClientAuthMode::Observe, Some(_)) => Some(classify(&note, None, None)),
    };
    if tls_state.mode == ClientAuthMode::Required && certs.is_none() {
        // The verifier requires a certificate; this cannot happen unless
        // rustls changes, and then we refuse rather than admit.
        state.metrics.handshake_failure("no_certificate");
        warn!(listener = %name, %peer, "handshake completed without a client certificate; closed");
        return;
    }
    // Identity headers only for a certificate that passed CA validation:
    // the fields of any other certificate are the client's own claims.
    let ca_valid = class.is_some_and(|(s, _)| s != Status::Failed && s != Status::NoCredentials);
    let mut chain = None;
    let identity = match certs {
        Some(certs) if ca_valid => {
            let Some(id) = certs.first().and_then(|c| ClientIdentity::from_der(c)) else {
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
        _ => None,
    };
    // "ca": observe mode without a registry or rules, no admission decision.
    if let Some(Verdict::Admit { why, .. }) = note.verdict
        && why != Admitted::Ca
    {
        state.metrics.decision(why.as_str());
    }
    if let Some(c) = class {
        // The report may show the subject of a certificate that failed
        // validation (it helps find the device); headers never do.
        let subject = identity.as_ref().map(|i| i.id.subject.clone()).or_else(|| {
            certs
                .and_then(|c| c.first())
                .and_then(|c| identity::subject_of(c))
        });
        record(&state, peer, c, &note, subject, None);
    }
    match (&identity, class) {
        (Some(_), Some((Status::Authenticated, _))) => observe(&tls_state, &note, peer, None, true),
        (_, Some((_, reason))) if note.fingerprint.is_some() => {
            observe(&tls_state, &note, peer, Some(reason), false)
        }
        _ => {}
    }
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|c| c.suite().as_str())
        .unwrap_or("unknown");
    state.metrics.handshake(version, cipher, resumed);
    let handshake_time = accepted_at.elapsed();
    state
        .metrics
        .handshake_seconds
        .observe(handshake_time.as_secs_f64());
    let tls_info = service::TlsInfo {
        version,
        cipher,
        handshake_ms: handshake_time.as_secs_f64() * 1000.0,
    };
    debug!(listener = %name, %peer, version, resumed,
        fingerprint = identity.as_ref().map(|i| i.id.fingerprint.as_str()).unwrap_or("-"),
        "TLS handshake complete");

    let admission = Admission {
        shared: shared.clone(),
        fingerprint: identity.as_ref().map(|i| i.id.fingerprint_bytes),
        chain,
        digest: tls_state.trust_digest,
    };
    let verify = match class {
        None | Some((Status::NoCredentials, _)) => HeaderValue::from_static("NONE"),
        Some((Status::Authenticated, _)) => HeaderValue::from_static("SUCCESS"),
        Some((_, reason)) => HeaderValue::from_str(&format!("FAILED:{reason}"))
            .unwrap_or(HeaderValue::from_static("FAILED")),
    };
    let facts = ClientFacts {
        forwarded_for: HeaderValue::from_str(&peer.ip().to_canonical().to_string())
            .unwrap_or(HeaderValue::from_static("unknown")),
        proto: HeaderValue::from_static("https"),
        verify,
        identity,
    };
    Box::pin(serve_http(
        stream,
        peer,
        (shared, state),
        facts,
        Some(tls_info),
        admission,
        stop,
        drain,
    ))
    .await;
}

/// A plain-HTTP listener (legacy devices): sources in `allow_from` are
/// forwarded like TLS clients without a certificate; others get 403.
async fn plain(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<ListenerShared>,
    state: Arc<ListenerState>,
    stop: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
) {
    let ip = peer.ip().to_canonical();
    if !state.allow_from.iter().any(|n| n.contains(&ip)) {
        state.metrics.source_refused();
        info!(listener = %state.name, %peer,
            "source not in allow_from of this plain-HTTP listener; answering 403");
        let svc = hyper::service::service_fn(|_req| async {
            let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
                b"forbidden: this source may not use the plain-HTTP port\n",
            )));
            *r.status_mut() = http::StatusCode::FORBIDDEN;
            r.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            Ok::<_, std::convert::Infallible>(r)
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(state.limits.request_header_timeout)
            .keep_alive(false)
            .serve_connection(TokioIo::new(tcp), svc);
        let _ = tokio::time::timeout(state.limits.request_header_timeout, conn).await;
        return;
    }
    record(
        &state,
        peer,
        (Status::NoCredentials, "none"),
        &HandshakeNote::default(),
        None,
        None,
    );
    let facts = ClientFacts {
        forwarded_for: HeaderValue::from_str(&ip.to_string())
            .unwrap_or(HeaderValue::from_static("unknown")),
        proto: HeaderValue::from_static("http"),
        verify: HeaderValue::from_static("NONE"),
        identity: None,
    };
    let admission = Admission::plain(shared.clone());
    Box::pin(serve_http(
        tcp,
        peer,
        (shared, state),
        facts,
        None,
        admission,
        stop,
        drain,
    ))
    .await;
}

/// Serves HTTP on an accepted (and, for TLS, admitted) connection until it
/// ends, idles out, is drained, or its client stops being admitted.
#[allow(clippy::too_many_arguments)]
async fn serve_http<IO>(
    io: IO,
    peer: SocketAddr,
    (shared, state): (Arc<ListenerShared>, Arc<ListenerState>),
    facts: ClientFacts,
    tls: Option<service::TlsInfo>,
    admission: Admission,
    mut stop: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let name = &state.name;
    let activity = Arc::new(Activity::default());
    let (io, framing) = framing::FramingScan::new(io, state.limits.max_request_header_bytes);
    let ctx = Arc::new(ConnContext {
        framing: framing.clone(),
        shared: shared.clone(),
        peer,
        facts,
        activity: activity.clone(),
        admission: admission.clone(),
        stop: stop.clone(),
        drain,
        tls,
    });
    let svc = hyper::service::service_fn(move |req| service::handle(ctx.clone(), req));
    let conn = state
        .http
        .serve_connection_with_upgrades(TokioIo::new(io), svc);
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
                match r {
                    Ok(()) => {}
                    Err(e) if is_header_timeout(e.as_ref()) => {
                        // hyper's header timer also runs while a keep-alive
                        // connection waits for its next request: that is an
                        // idle close, not a slow client.
                        if activity.requests() == 0 || framing.head_started() {
                            state.metrics.timed_out("request_header");
                            if SLOW_HEAD_LOG.should_log() {
                                info!(listener = %name, %peer, requests = activity.requests(),
                                    timeout = ?state.limits.request_header_timeout,
                                    "no complete request head within request_header_timeout (slow or stalled client); connection closed \
                                     (further ones are counted in certgate_connections_timed_out_total, logged at most once a second)");
                            }
                        } else {
                            state.metrics.timed_out("idle");
                            debug!(listener = %name, %peer, "keep-alive connection sent no new request within request_header_timeout; closed");
                        }
                    }
                    Err(e) => {
                        debug!(listener = %name, %peer, error = %service::error_chain(e.as_ref()), "connection ended with error");
                    }
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
                    state.metrics.timed_out("idle");
                    debug!(listener = %name, %peer, "idle timeout; closing");
                    closing = Some(now() + state.grace);
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Whether a connection ended because hyper's request-head timer ran out.
fn is_header_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout)
}
