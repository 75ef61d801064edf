//! The per-request entry: one request of an admitted connection, from
//! hyper's service call to the response body that counts and logs it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;

use super::body::BodyStats;
use super::context::ConnContext;
use super::forward::{UpstreamHold, forward};
use super::tracked::{Finish, ProxyBody, TrackedBody};
use super::upstream::ServerAddr;
use crate::access;

/// Handles one request from a client.
pub(super) async fn handle(
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
