//! The per-request path: rewrite headers, forward to the upstream, map
//! upstream failures to 502/504, pass protocol upgrades through.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tracing::{debug, info, warn};

use tokio::sync::{mpsc, watch};

use super::body::{BodyStats, CountedBody, Reclaim};
use super::headers::{self, ClientFacts};
use super::recheck::Admission;
use super::state::{ListenerShared, ListenerState};
use super::upstream::{AttemptError, ConnectError, Pick, ServerAddr, ServerGuard};
use crate::access;

/// The body of every response certgate sends: the backend's, streamed, or a
/// short one of its own.
pub type ProxyBody = TrackedBody<Either<Incoming, Full<Bytes>>>;

/// Per-connection state the service reads on every request.
#[derive(Debug)]
pub struct ConnContext {
    /// The listener; each request reads its current state (upstream,
    /// metrics), so a reload that changes the upstream applies to the next
    /// request on a keep-alive connection.
    pub shared: Arc<ListenerShared>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Client facts turned into headers.
    pub facts: ClientFacts,
    /// Idle tracking shared with the connection task.
    pub activity: Arc<Activity>,
    /// What the client was admitted with; upgraded tunnels watch it too.
    pub admission: Admission,
    /// Turns true when the listener stops (shutdown or removed by reload).
    pub stop: watch::Receiver<bool>,
    /// Held while the connection or a tunnel it opened is alive.
    pub drain: mpsc::Sender<()>,
    /// The TLS session, for the access log; `None` on plain HTTP.
    pub tls: Option<TlsInfo>,
    /// Framing problems seen in the raw request heads.
    pub framing: Arc<super::framing::Framing>,
}

/// What the access log says about a connection's TLS session.
#[derive(Debug, Clone, Copy)]
pub struct TlsInfo {
    /// `1.2` or `1.3`.
    pub version: &'static str,
    /// Cipher suite name.
    pub cipher: &'static str,
    /// Handshake duration, ms.
    pub handshake_ms: f64,
}

/// Tracks whether a connection has requests in flight and since when it
/// has been idle, for the idle timeout.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    idle_since_ms: AtomicU64,
    requests: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Requests started on this connection so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    /// When the connection became idle, or `None` while a request is in
    /// flight.
    pub fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = self.idle_since_ms.load(Ordering::Acquire);
        Some(self.start + std::time::Duration::from_millis(ms))
    }
}

/// Marks one request in flight until dropped (when its response body has
/// been sent or abandoned).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .idle_since_ms
            .store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its request's [`InFlight`] mark until the
/// body is finished or dropped.
/// When it is dropped (body done or abandoned) the request is counted in
/// the duration histogram and byte counters and, if enabled, access-logged.
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    _in_flight: Option<InFlight>,
    _slot: Option<UpstreamHold>,
    finish: Option<Box<Finish>>,
}

/// What is recorded when a response is done.
#[derive(Debug)]
struct Finish {
    state: Arc<ListenerState>,
    started: Instant,
    bytes_in: Arc<BodyStats>,
    bytes_out: u64,
    entry: Option<access::Entry>,
}

impl<B> Drop for TrackedBody<B> {
    fn drop(&mut self) {
        let Some(f) = self.finish.take() else { return };
        let total = f.started.elapsed();
        let bytes_in = f.bytes_in.bytes.load(Ordering::Relaxed);
        let m = &f.state.metrics;
        m.request_seconds.observe(total.as_secs_f64());
        m.bytes_in.inc_by(bytes_in);
        m.bytes_out.inc_by(f.bytes_out);
        if let Some(mut e) = f.entry {
            e.bytes_in = bytes_in;
            e.bytes_out = f.bytes_out;
            e.total_ms = total.as_secs_f64() * 1000.0;
            e.emit();
        }
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body + Unpin,
    B::Data: bytes::Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &r
            && let Some(d) = frame.data_ref()
            && let Some(f) = self.finish.as_mut()
        {
            f.bytes_out += bytes::Buf::remaining(d) as u64;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A short answer after which the connection is closed (the request's
/// framing or body cannot be trusted, so neither can what follows it).
fn closing(status: StatusCode, text: &'static str) -> Response<Either<Incoming, Full<Bytes>>> {
    let mut resp = short_response(status, text);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn short_response(
    status: StatusCode,
    text: &'static str,
) -> Response<Either<Incoming, Full<Bytes>>> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Handles one request from a client.
pub async fn handle(
    ctx: Arc<ConnContext>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let in_flight = ctx.activity.begin();
    let state = ctx.shared.current();
    let started = Instant::now();
    let bytes_in = Arc::new(BodyStats {
        limit: state.limits.max_request_body_bytes,
        ..BodyStats::default()
    });
    let mut entry = access::enabled().then(|| access::Entry {
        listener: state.name.to_string(),
        peer: Some(ctx.peer),
        fingerprint: ctx
            .facts
            .identity
            .as_ref()
            .map(|i| i.id.fingerprint.clone()),
        subject: ctx.facts.identity.as_ref().map(|i| i.id.subject.clone()),
        tls_version: ctx.tls.map(|t| t.version),
        cipher: ctx.tls.map(|t| t.cipher),
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_string(), |p| p.to_string()),
        handshake_ms: ctx.tls.map(|t| t.handshake_ms),
        ..access::Entry::default()
    });
    let (resp, upstream_ms) = forward(&ctx, &state, req, &bytes_in).await;
    let status = resp.status().as_u16();
    state.metrics.request(status);
    if let Some(e) = entry.as_mut() {
        e.status = status;
        e.upstream_ms = upstream_ms;
        e.upstream_server = resp.extensions().get::<ServerAddr>().map(|s| s.0);
    }
    let (mut parts, body) = resp.into_parts();
    let slot = parts.extensions.remove::<UpstreamHold>();
    Ok(Response::from_parts(
        parts,
        TrackedBody {
            inner: body,
            _in_flight: Some(in_flight),
            _slot: slot,
            finish: Some(Box::new(Finish {
                state,
                started,
                bytes_in,
                bytes_out: 0,
                entry,
            })),
        },
    ))
}

/// Forwards one request; the response and, when the upstream answered,
/// how long its response head took (ms).
async fn forward(
    ctx: &ConnContext,
    state: &ListenerState,
    req: Request<Incoming>,
    bytes_in: &Arc<BodyStats>,
) -> (Response<Either<Incoming, Full<Bytes>>>, Option<f64>) {
    let started = Instant::now();
    let resp = forward_inner(ctx, state, req, bytes_in).await;
    let upstream_ms = resp
        .extensions()
        .get::<ServerAddr>()
        .map(|_| started.elapsed().as_secs_f64() * 1000.0);
    (resp, upstream_ms)
}

async fn forward_inner(
    ctx: &ConnContext,
    state: &ListenerState,
    mut req: Request<Incoming>,
    bytes_in: &Arc<BodyStats>,
) -> Response<Either<Incoming, Full<Bytes>>> {
    if req.method() == Method::CONNECT {
        return short_response(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n");
    }
    let why = ctx
        .framing
        .ambiguous(ctx.activity.requests().saturating_sub(1))
        .or_else(|| headers::ambiguous_framing(req.headers()));
    if let Some(why) = why {
        info!(listener = %state.name, peer = %ctx.peer, problem = why,
            "ambiguous request framing; answered 400 and closed the connection");
        return closing(
            StatusCode::BAD_REQUEST,
            "bad request: ambiguous message framing\n",
        );
    }
    let limits = &state.limits;
    if req
        .uri()
        .path_and_query()
        .is_some_and(|p| p.as_str().len() > limits.max_uri_bytes)
    {
        info!(listener = %state.name, peer = %ctx.peer, max_uri_bytes = limits.max_uri_bytes,
            "request target longer than max_uri_bytes; answered 414");
        return short_response(StatusCode::URI_TOO_LONG, "request target too long\n");
    }
    if limits.max_request_body_bytes > 0
        && req
            .body()
            .size_hint()
            .exact()
            .is_some_and(|n| n > limits.max_request_body_bytes)
    {
        // Refused before a byte goes upstream; the unread body makes
        // hyper close the connection after the answer.
        info!(listener = %state.name, peer = %ctx.peer,
            max_request_body_bytes = limits.max_request_body_bytes,
            "Content-Length above max_request_body_bytes; answered 413");
        return closing(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
    }
    let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    // HTTP/2 carries the host in :authority, HTTP/1.1 in Host; the backend
    // speaks HTTP/1.1 and needs a Host header either way.
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    headers::prepare_request(&mut parts.headers, &ctx.facts, host.clone(), upgrade);
    match host {
        Some(h) => {
            parts.headers.insert(header::HOST, h);
        }
        None => {
            if let Some(first) = state.upstream.settings.servers.first()
                && let Ok(v) = HeaderValue::from_str(&first.to_string())
            {
                parts.headers.insert(header::HOST, v);
            }
        }
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = match Uri::builder()
        .scheme("http")
        .authority(state.upstream.authority.clone())
        .path_and_query(path)
        .build()
    {
        Ok(u) => u,
        Err(_) => return short_response(StatusCode::BAD_REQUEST, "bad request target\n"),
    };
    parts.version = Version::HTTP_11;
    let started = Instant::now();

    let upstream = &state.upstream;
    let settings = &upstream.settings;
    // A slot first: at most `max_connections` requests in flight to the
    // backend, the rest wait here (a storm of reconnecting agents queues in
    // certgate instead of exhausting the backend's connections).
    let slot = match &upstream.slots {
        None => None,
        Some(slots) => match slots.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                match tokio::time::timeout(settings.queue_timeout, slots.clone().acquire_owned())
                    .await
                {
                    Ok(Ok(p)) => Some(p),
                    _ => {
                        state.metrics.upstream_error("queue_timeout");
                        warn!(
                            listener = %state.name,
                            peer = %ctx.peer,
                            upstream = %settings.name,
                            max_connections = settings.max_connections,
                            queue_timeout_ms = settings.queue_timeout.as_millis() as u64,
                            "no upstream connection slot within queue_timeout; answered 503 \
                             (raise [[upstream]] max_connections if the backend can take more)"
                        );
                        return unavailable(1);
                    }
                }
            }
        },
    };

    // With several servers a failed attempt may be repeated on another
    // one: keep what is needed to rebuild the request. One server: nothing
    // to keep, nothing to pay.
    let servers = upstream.servers();
    let retry = (servers.len() > 1).then(|| Retry {
        empty_body: body.is_end_stream(),
        idempotent: matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        ),
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        body: Arc::new(std::sync::Mutex::new(None)),
    });
    let mut out = Request::from_parts(
        parts,
        match &retry {
            None => CountedBody::new(body, bytes_in.clone()),
            Some(r) => {
                if let Ok(mut b) = r.body.lock() {
                    *b = Some(body);
                }
                CountedBody::reclaimable(r.body.clone(), bytes_in.clone())
            }
        },
    );

    let mut tried = 0u64;
    let mut last: Option<(SocketAddr, hyper_util::client::legacy::Error)> = None;
    let (mut resp, server, guard) = loop {
        let i = match upstream.pick(tried) {
            Pick::Server(i) => i,
            Pick::AllDown { retry_after } => {
                state.metrics.upstream_error("all_down");
                warn!(
                    listener = %state.name,
                    peer = %ctx.peer,
                    upstream = %settings.name,
                    retry_after_s = retry_after,
                    "every server of the upstream is out of rotation (health check or ejection); answered 503"
                );
                return unavailable(retry_after);
            }
            Pick::Exhausted => {
                // Every server in rotation failed this request; answer as
                // the last one did (all timed out: 504).
                let Some((server, e)) = last.take() else {
                    return short_response(StatusCode::BAD_GATEWAY, "bad gateway\n");
                };
                return upstream_failure(ctx, state, server, &e, connect_error(&e), started);
            }
        };
        tried |= 1u64 << i;
        let server = &servers[i];
        let guard = server.begin();
        let result =
            tokio::time::timeout(settings.response_timeout, server.client.request(out)).await;
        let e = match result {
            Ok(Ok(resp)) => {
                server.succeeded();
                break (resp, server, guard);
            }
            Ok(Err(_)) if bytes_in.too_large.load(Ordering::Relaxed) => {
                info!(listener = %state.name, peer = %ctx.peer,
                    max_request_body_bytes = bytes_in.limit,
                    "request body grew past max_request_body_bytes; answered 413 and closed the connection");
                return closing(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
            }
            Ok(Err(_)) if bytes_in.failed.load(Ordering::Relaxed) => {
                // The client's body was malformed or cut off: its fault, not
                // the backend's; the backend connection was dropped mid-body.
                info!(listener = %state.name, peer = %ctx.peer,
                    "malformed or incomplete request body; answered 400 and closed the connection");
                return closing(StatusCode::BAD_REQUEST, "bad request body\n");
            }
            Ok(Err(e)) => e,
            Err(_) => {
                // Not retried: the request may be running on the backend,
                // and a second try would double the client's wait.
                state.metrics.upstream_error("response_timeout");
                warn!(
                    listener = %state.name,
                    peer = %ctx.peer,
                    upstream = %settings.name,
                    server = %server.addr,
                    timeout_ms = settings.response_timeout.as_millis() as u64,
                    "upstream response timed out; answered 504"
                );
                return short_response(StatusCode::GATEWAY_TIMEOUT, "gateway timeout\n");
            }
        };
        drop(guard);
        let connect = connect_error(&e);
        let kind = match connect {
            Some(AttemptError::TimedOut) => "connect_timeout",
            Some(AttemptError::Failed(_)) => "connect_failed",
            None => "protocol",
        };
        state.metrics.upstream_error(kind);
        server.failed(settings, servers.len());
        // Safe to repeat: nothing was sent (connect failed, so the body is
        // still in its slot), or a bodiless idempotent request whose
        // connection broke before the response head.
        let next = retry.as_ref().and_then(|r| {
            let reclaimed =
                connect.is_some() && r.body.lock().map(|b| b.is_some()).unwrap_or(false);
            let body = if reclaimed {
                CountedBody::reclaimable(r.body.clone(), bytes_in.clone())
            } else if r.empty_body && r.idempotent {
                CountedBody::empty(bytes_in.clone())
            } else {
                return None;
            };
            let mut req = Request::new(body);
            *req.method_mut() = r.method.clone();
            *req.uri_mut() = r.uri.clone();
            *req.headers_mut() = r.headers.clone();
            Some(req)
        });
        match next {
            Some(req) => {
                info!(
                    listener = %state.name,
                    peer = %ctx.peer,
                    upstream = %settings.name,
                    server = %server.addr,
                    error = %error_chain(&e),
                    "upstream attempt failed before the request reached the server (or a bodiless idempotent request); trying the next server"
                );
                out = req;
                last = Some((server.addr, e));
            }
            None => return upstream_failure(ctx, state, server.addr, &e, connect, started),
        }
    };
    resp.extensions_mut().insert(ServerAddr(server.addr));

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let server_upgrade = hyper::upgrade::on(&mut resp);
            let listener = state.name.clone();
            let peer = ctx.peer;
            let admission = ctx.admission.clone();
            let mut stop = ctx.stop.clone();
            let drain = ctx.drain.clone();
            let grace = state.grace;
            tokio::spawn(async move {
                // The tunnel holds its backend connection, and so its slot
                // and its place in the server's in-flight count.
                let _hold = (slot, guard);
                let tunnel = async {
                    let (c, s) = tokio::try_join!(client_upgrade, server_upgrade)?;
                    let mut c = TokioIo::new(c);
                    let mut s = TokioIo::new(s);
                    tokio::io::copy_bidirectional(&mut c, &mut s).await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                };
                let stopped = async {
                    // A tunnel has no request boundary to stop at: on shutdown
                    // or listener removal it gets the grace period, then closes.
                    if stop.wait_for(|s| *s).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(grace).await;
                };
                tokio::select! {
                    r = tunnel => if let Err(e) = r {
                        debug!(%listener, %peer, error = %e, "upgraded connection ended");
                    },
                    reason = admission.revoked() => {
                        admission.count_closed(reason);
                        info!(%listener, %peer, reason = reason.as_str(),
                            "client no longer admitted after reload; upgraded connection closed");
                    }
                    _ = stopped => {
                        info!(%listener, %peer, "upgraded connection still open when the grace period ended; closed");
                    }
                }
                drop(drain);
            });
            return resp.map(Either::Left);
        }
        // A 101 nobody asked for cannot be relayed.
        return short_response(StatusCode::BAD_GATEWAY, "bad gateway\n");
    }
    headers::strip_hop_by_hop(resp.headers_mut(), false);
    resp.extensions_mut().insert(UpstreamHold {
        _held: Arc::new((slot, guard)),
    });
    resp.map(Either::Left)
}

/// What a response holds until its body is done: the upstream slot
/// (`max_connections`) and the server's in-flight mark (`least_conn`);
/// the backend connection is busy until then.
#[derive(Debug, Clone)]
struct UpstreamHold {
    _held: Arc<(Option<tokio::sync::OwnedSemaphorePermit>, ServerGuard)>,
}

/// What is kept of a request so it can be sent to another server.
struct Retry {
    empty_body: bool,
    idempotent: bool,
    method: Method,
    uri: Uri,
    headers: http::HeaderMap,
    body: Reclaim,
}

fn unavailable(retry_after: u64) -> Response<Either<Incoming, Full<Bytes>>> {
    let mut resp = short_response(StatusCode::SERVICE_UNAVAILABLE, "service unavailable\n");
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    resp
}

/// The connect failure inside a client error, if that is what it was.
fn connect_error(err: &hyper_util::client::legacy::Error) -> Option<&AttemptError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(s) = source {
        if let Some(ce) = s.downcast_ref::<ConnectError>() {
            return Some(&ce.error);
        }
        source = s.source();
    }
    None
}

fn upstream_failure(
    ctx: &ConnContext,
    state: &ListenerState,
    server: SocketAddr,
    err: &hyper_util::client::legacy::Error,
    connect: Option<&AttemptError>,
    started: Instant,
) -> Response<Either<Incoming, Full<Bytes>>> {
    let settings = &state.upstream.settings;
    let (status, what) = match connect {
        Some(AttemptError::TimedOut) => (StatusCode::GATEWAY_TIMEOUT, "cannot connect to upstream"),
        Some(AttemptError::Failed(_)) => (StatusCode::BAD_GATEWAY, "cannot connect to upstream"),
        None => (StatusCode::BAD_GATEWAY, "upstream request failed"),
    };
    warn!(
        listener = %state.name,
        peer = %ctx.peer,
        upstream = %settings.name,
        server = %server,
        elapsed_ms = started.elapsed().as_millis() as u64,
        error = %error_chain(err),
        "{what}; answered {}", status.as_u16()
    );
    if status == StatusCode::GATEWAY_TIMEOUT {
        short_response(status, "gateway timeout\n")
    } else {
        short_response(status, "bad gateway\n")
    }
}

/// Renders an error and its sources on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        s.push_str(": ");
        s.push_str(&e.to_string());
        source = e.source();
    }
    s
}
