//! One admitted connection's life: HTTP served until it ends, idles out,
//! is drained, or its client stops being admitted.

use super::activity::Activity;
use super::context::ConnContext;
use super::headers::ClientFacts;
use super::{Admission, ListenerShared, ListenerState, framing, service};
use crate::log_limit::SLOW_HEAD_LOG;
use crate::shutdown::stopped;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info};

use super::lifeline::Lifeline;

/// How long a connection accepted just before its listener stopped may
/// take to send its first request.
pub(super) const FIRST_REQUEST_WAIT: Duration = Duration::from_secs(1);

/// Serves HTTP on an accepted (and, for TLS, admitted) connection until it
/// ends, idles out, is drained, or its client stops being admitted.
pub(super) async fn serve_http<IO>(
    io: IO,
    peer: SocketAddr,
    (shared, state): (Arc<ListenerShared>, Arc<ListenerState>),
    facts: ClientFacts,
    tls: Option<super::context::TlsInfo>,
    admission: Admission,
    Lifeline { mut stop, drain }: Lifeline,
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
        lifeline: Lifeline {
            stop: stop.clone(),
            drain,
        },
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
                        debug!(listener = %name, %peer, error = %crate::error::error_chain(e.as_ref()), "connection ended with error");
                    }
                }
                return;
            }
            reason = revoked.as_mut() => {
                admission.count_closed(reason);
                info!(listener = %name, %peer, reason = reason.as_str(),
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
pub(super) fn is_header_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout)
}
