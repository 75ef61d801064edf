//! One request on its way in: refused when its framing is ambiguous or it
//! exceeds the listener's limits, else rewritten for the backend.

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, StatusCode, Uri, Version};
use hyper::body::{Body, Incoming};
use tracing::info;

use super::context::ConnContext;
use super::headers::{self};
use super::replies::{Reply, closing, short_response};
use super::state::ListenerState;

/// A request checked and rewritten for the backend, not sent yet.
pub(super) struct Prepared {
    /// Method, backend URI, rewritten headers, HTTP/1.1.
    pub(super) parts: http::request::Parts,
    /// The client's body, unread.
    pub(super) body: Incoming,
    /// The client side of a protocol upgrade it asked for.
    pub(super) client_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// Checks a request against the listener's limits and framing rules and
/// rewrites it for the backend (identity headers, hop-by-hop headers,
/// Host, an origin-form URI on the upstream's authority). A request that
/// fails a check gets certgate's own answer instead (boxed: the refusal
/// path is the rare one).
pub(super) fn prepare(
    ctx: &ConnContext,
    state: &ListenerState,
    mut req: Request<Incoming>,
) -> Result<Prepared, Box<Reply>> {
    if req.method() == Method::CONNECT {
        return Err(Box::new(short_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported\n",
        )));
    }
    let why = ctx
        .framing
        .ambiguous(ctx.activity.requests().saturating_sub(1))
        .or_else(|| headers::ambiguous_framing(req.headers()));
    if let Some(why) = why {
        info!(listener = %state.name, peer = %ctx.peer, problem = why,
            "ambiguous request framing; answered 400 and closed the connection");
        return Err(Box::new(closing(
            StatusCode::BAD_REQUEST,
            "bad request: ambiguous message framing\n",
        )));
    }
    let limits = &state.limits;
    if req
        .uri()
        .path_and_query()
        .is_some_and(|p| p.as_str().len() > limits.max_uri_bytes)
    {
        info!(listener = %state.name, peer = %ctx.peer, max_uri_bytes = limits.max_uri_bytes,
            "request target longer than max_uri_bytes; answered 414");
        return Err(Box::new(short_response(
            StatusCode::URI_TOO_LONG,
            "request target too long\n",
        )));
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
        return Err(Box::new(closing(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large\n",
        )));
    }
    let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    // HTTP/2 carries the host in :authority, HTTP/1.1 in Host; the backend
    // speaks HTTP/1.1 and needs a Host header either way.
    let sent_host = parts.headers.get(header::HOST).cloned();
    let had_host = sent_host.is_some();
    let host = sent_host.or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    headers::prepare_request(&mut parts.headers, &ctx.facts, host.clone(), upgrade);
    match host {
        // Host stays as the client sent it.
        Some(_) if had_host => {}
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
    // The backend gets the origin form (`/path?query`). An HTTP/1.1
    // request has it already and keeps its URI untouched; HTTP/2's and an
    // absolute-form target's path is taken over without parsing it again.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from(path);
    }
    parts.version = Version::HTTP_11;
    Ok(Prepared {
        parts,
        body,
        client_upgrade,
    })
}
