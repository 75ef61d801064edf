//! Forwarding one request: check and rewrite it (`request`), take an
//! upstream slot, pick a server, retry what is safe to retry on another
//! one, map upstream failures to 502/503/504, and hand a 101 to `tunnel`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::{Body, Incoming};
use tracing::{info, warn};

use super::body::{BodyStats, CountedBody, Reclaim};
use super::context::ConnContext;
use super::headers::{self};
use super::replies::{Reply, closing, short_response, unavailable};
use super::request::{Prepared, prepare};
use super::state::ListenerState;
use super::tunnel::tunnel;
use super::upstream::{AttemptError, Conn, Pick, SendError, ServerAddr, ServerGuard};
use crate::error::error_chain;

/// Forwards one request; the response and, when the upstream answered,
/// how long its response head took (ms).
pub(super) async fn forward(
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
    req: Request<Incoming>,
    bytes_in: &Arc<BodyStats>,
) -> Reply {
    let Prepared {
        parts,
        body,
        client_upgrade,
    } = match prepare(ctx, state, req) {
        Ok(p) => p,
        Err(reply) => return *reply,
    };
    let started = Instant::now();

    let upstream = &state.upstream;
    let settings = &upstream.settings;
    // A slot first: at most `max_connections` requests in flight to the
    // backend, the rest wait here (a storm of reconnecting agents queues in
    // certgate instead of exhausting the backend's connections).
    let Ok(slot) = acquire_slot(ctx, state).await else {
        return unavailable(1);
    };

    // With several servers a failed attempt may be repeated on another
    // one: keep what is needed to rebuild the request. One server: nothing
    // to keep, nothing to pay.
    let servers = upstream.servers();
    let retry = (servers.len() > 1).then(|| Retry::new(&parts, &body));
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
    let mut last: Option<(SocketAddr, SendError)> = None;
    let (mut resp, conn, server, guard) = loop {
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
                return upstream_failure(ctx, state, server, &e, e.connect(), started);
            }
        };
        tried |= 1u64 << i;
        let server = &servers[i];
        let guard = server.begin();
        let result = tokio::time::timeout(settings.response_timeout, server.conns.send(out)).await;
        let e = match result {
            Ok(Ok((resp, conn))) => {
                server.succeeded();
                break (resp, conn, server, guard);
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
        let connect = e.connect();
        let kind = match connect {
            Some(AttemptError::TimedOut) => "connect_timeout",
            Some(AttemptError::Failed(_)) => "connect_failed",
            None => "protocol",
        };
        state.metrics.upstream_error(kind);
        server.failed(settings, servers.len());
        let next = retry
            .as_ref()
            .and_then(|r| r.next_request(connect.is_some(), bytes_in));
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
            conn.upgraded();
            tunnel(ctx, state, client_upgrade, server_upgrade, (slot, guard));
            return resp.map(Either::Left);
        }
        // A 101 nobody asked for cannot be relayed, and its connection
        // speaks something else now.
        conn.upgraded();
        return short_response(StatusCode::BAD_GATEWAY, "bad gateway\n");
    }
    headers::strip_hop_by_hop(resp.headers_mut(), false);
    resp.extensions_mut().insert(UpstreamHold {
        _held: Arc::new((conn, slot, guard)),
    });
    resp.map(Either::Left)
}

/// What a response holds until its body is done: the backend connection
/// (back in its pool then), the upstream slot (`max_connections`) and the
/// server's in-flight mark (`least_conn`).
#[derive(Debug, Clone)]
pub(super) struct UpstreamHold {
    // The connection first: it is back in its pool before the slot is
    // free, so the request the slot goes to finds it there.
    _held: Arc<(Conn, Option<tokio::sync::OwnedSemaphorePermit>, ServerGuard)>,
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

impl Retry {
    /// Keeps what is needed to rebuild the request; the body itself is
    /// put in the slot by the caller when the first attempt is sent.
    fn new(parts: &http::request::Parts, body: &Incoming) -> Retry {
        Retry {
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
        }
    }

    /// The request for the next server, when repeating it is safe: nothing
    /// was sent (`connect_failed`: the connect failed, so the body is still
    /// in its slot), or a bodiless idempotent request whose connection
    /// broke before the response head.
    fn next_request(
        &self,
        connect_failed: bool,
        bytes_in: &Arc<BodyStats>,
    ) -> Option<Request<CountedBody>> {
        let reclaimed = connect_failed && self.body.lock().map(|b| b.is_some()).unwrap_or(false);
        let body = if reclaimed {
            CountedBody::reclaimable(self.body.clone(), bytes_in.clone())
        } else if self.empty_body && self.idempotent {
            CountedBody::empty(bytes_in.clone())
        } else {
            return None;
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        Some(req)
    }
}

/// The upstream's `max_connections` is reached and no slot came free
/// within its `queue_timeout` (logged and counted).
struct QueueTimeout;

/// Takes a slot first: at most `max_connections` requests in flight to the
/// backend, the rest wait here (a storm of reconnecting agents queues in
/// certgate instead of exhausting the backend's connections).
async fn acquire_slot(
    ctx: &ConnContext,
    state: &ListenerState,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, QueueTimeout> {
    let upstream = &state.upstream;
    let settings = &upstream.settings;
    let Some(slots) = &upstream.slots else {
        return Ok(None);
    };
    if let Ok(p) = slots.clone().try_acquire_owned() {
        return Ok(Some(p));
    }
    match tokio::time::timeout(settings.queue_timeout, slots.clone().acquire_owned()).await {
        Ok(Ok(p)) => Ok(Some(p)),
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
            Err(QueueTimeout)
        }
    }
}

fn upstream_failure(
    ctx: &ConnContext,
    state: &ListenerState,
    server: SocketAddr,
    err: &SendError,
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
