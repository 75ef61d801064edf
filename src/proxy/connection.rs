//! One admitted connection's life: HTTP served until it ends, idles out,
//! is drained, or its client stops being admitted.

use super::activity::Activity;
use super::context::{Alpn, ConnContext};
use super::framing::Framing;
use super::headers::ClientFacts;
use super::park::{PARK_AFTER, ParkIo, ParkedCount};
use super::serving::{BoxError, Handler, Serving};
use super::{Admission, ListenerShared, ListenerState, framing, service};
use crate::log_limit::SLOW_HEAD_LOG;
use crate::shutdown::stopped;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info};

use super::lifeline::Lifeline;

/// How long a connection accepted just before its listener stopped may
/// take to send its first request.
pub(super) const FIRST_REQUEST_WAIT: Duration = Duration::from_secs(1);

/// A connection ready to be served: accepted, and for TLS handshaken and
/// admitted. It is handed over boxed, by value: the handshake's future
/// (and what it held) is gone before the connection starts its life, and
/// neither the accept task nor [`serve_http`]'s future keeps a slot for
/// the whole of it (an async fn keeps its arguments for its whole life).
pub(super) struct Ready<IO> {
    /// The stream: TLS or plain TCP.
    pub(super) io: IO,
    /// The client's address (from the PROXY header where one is used).
    pub(super) peer: SocketAddr,
    /// The listener the connection came in on.
    pub(super) listener: (Arc<ListenerShared>, Arc<ListenerState>),
    /// What the backend is told about the client.
    pub(super) facts: ClientFacts,
    /// The handshake's facts; `None` on a plain-HTTP listener.
    pub(super) tls: Option<super::context::TlsInfo>,
    /// Whether the client is still admitted (approval, block, revocation).
    pub(super) admission: Admission,
    /// The listener's stop and drain signals.
    pub(super) lifeline: Lifeline,
}

/// Serves HTTP on an accepted (and, for TLS, admitted) connection until it
/// ends, idles out, is drained, or its client stops being admitted. An
/// HTTP/1 connection idle for [`PARK_AFTER`] is parked (see [`super::park`]).
pub(super) async fn serve_http<IO>(ready: Box<Ready<IO>>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Ready {
        io,
        peer,
        listener: (shared, state),
        facts,
        tls,
        admission,
        lifeline: Lifeline { mut stop, drain },
    } = {
        // Moved out in a block of its own: the box is freed here, not when
        // the connection ends (a box whose contents were moved out of is
        // freed at the end of its binding's scope).
        let ready = ready;
        *ready
    };
    let name = &state.name;
    let activity = Arc::new(Activity::default());
    let (io, framing) = framing::FramingScan::new(io, state.limits.max_request_header_bytes);
    let (io, watch) = ParkIo::new(io);
    let alpn = tls.map_or(Alpn::None, |t| t.alpn);
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
    // Exactly one of the two is set: hyper serves the connection, or it
    // waits parked (with its handler, counted in the parked gauge once it
    // has served a request) for the client's next bytes.
    let mut serving = None;
    let mut parked = None;
    match alpn {
        Alpn::Http2 => serving = Some(Serving::auto(&state.http, io, svc)),
        Alpn::Http1 => serving = Some(Serving::http1(&state.http1, io, svc)),
        // The first bytes tell HTTP/2's preface from HTTP/1.
        Alpn::None => parked = Some((io, svc, None)),
    }
    let revoked = admission.revoked();
    tokio::pin!(revoked);

    let limits = &state.limits;
    let idle_timeout = limits.idle_timeout;
    let now = tokio::time::Instant::now;
    // When the listener stops, a connection that has not sent its first
    // request yet gets a moment to send it: it was accepted, so its client
    // has a request on the way, and closing it unanswered would fail that
    // request (HTTP/1 has no way to say "go elsewhere" before a request).
    let first_request_wait = |accepted: tokio::time::Instant| accepted + FIRST_REQUEST_WAIT;
    let accepted = now();
    let mut close_at: Option<tokio::time::Instant> = None;
    let mut closing: Option<tokio::time::Instant> = None;
    let mut park_not_before = accepted + PARK_AFTER;
    // hyper's header timer runs from when it waits for a head; a parked
    // connection is given to a new hyper connection when bytes arrive, so
    // the deadline it would have had is kept here: (deadline, requests
    // started when it was set).
    let mut head_deadline: Option<(tokio::time::Instant, u64)> = None;
    if *stop.borrow() {
        close_at = Some(first_request_wait(accepted));
    }
    loop {
        let idle_deadline = activity
            .idle_since()
            .map(|t| t + idle_timeout)
            .unwrap_or_else(|| now().into_std() + idle_timeout);
        // A parked connection is closed by the header timer as hyper would
        // have closed it: from the start (first request) or from the end of
        // the last response.
        let parked_deadline = || {
            let since = match activity.idle_since() {
                Some(t) if activity.requests() > 0 => t.into(),
                _ => accepted,
            };
            (since + limits.request_header_timeout).min(idle_deadline.into())
        };
        if closing.is_none()
            && let Some(at) = close_at
            && (activity.requests() > 0 || now() >= at)
        {
            if let Some((io, ..)) = parked.take() {
                Box::pin(close_parked(io, state.grace)).await;
                return;
            }
            closing = Some(now() + state.grace);
            if let Some(s) = serving.as_mut() {
                s.graceful_shutdown();
            }
        }
        let park_at = activity.idle_since().map_or(park_not_before, |t| {
            (t + PARK_AFTER).max(park_not_before.into()).into()
        });
        let may_park = closing.is_none()
            && close_at.is_none()
            && serving.as_ref().is_some_and(Serving::can_park)
            && !watch.parking();
        // One timer for the earliest of the deadlines that apply now: a
        // connection lives in this loop for hours, and a timer per deadline
        // would be kept (and re-armed) for each of them.
        let mut timer: Option<(tokio::time::Instant, Timer)> = None;
        let mut arm = |at: tokio::time::Instant, which: Timer| {
            if timer.is_none_or(|(t, _)| at < t) {
                timer = Some((at, which));
            }
        };
        if let Some(at) = closing {
            arm(at, Timer::Grace);
        } else if close_at.is_some() {
            // Re-check for a first request now and then while waiting for it.
            arm(now() + Duration::from_millis(20), Timer::Recheck);
        }
        if may_park {
            arm(park_at, Timer::Park);
        }
        if parked.is_some() && closing.is_none() {
            arm(parked_deadline(), Timer::ParkedHead);
        }
        if let Some((at, _)) = head_deadline {
            arm(at, Timer::Head);
        }
        if closing.is_none() && parked.is_none() && !watch.parking() {
            arm(idle_deadline.into(), Timer::Idle);
        }
        let (timer_at, which) = timer.unwrap_or((now(), Timer::Recheck));
        tokio::select! {
            r = poll_serving(serving.as_mut()) => {
                if watch.parking()
                    && let Some((mut io, unread, svc)) = serving.take().and_then(Serving::into_parts)
                {
                    io.parked(unread);
                    io.get_mut().release_buffers();
                    if closing.is_some() {
                        // Closed (idle timeout) while hyper was stopping.
                        Box::pin(close_parked(io, state.grace)).await;
                        return;
                    }
                    if io.has_unread() {
                        // Pipelined bytes: straight back to hyper.
                        head_deadline = Some((parked_deadline(), activity.requests()));
                        serving = Some(Serving::http1(&state.http1, io, svc));
                    } else {
                        let count = ParkedCount::new(&state.metrics.parked);
                        parked = Some((io, svc, Some(count)));
                    }
                    continue;
                }
                match r {
                    Ok(()) => {}
                    Err(e) if is_header_timeout(e.as_ref()) => {
                        header_timeout(&state, peer, &activity, &framing);
                    }
                    Err(e) => {
                        debug!(listener = %name, %peer, error = %crate::error::error_chain(e.as_ref()), "connection ended with error");
                    }
                }
                return;
            }
            r = wait_parked(parked.as_mut().map(|(io, ..)| io)) => {
                match r {
                    Ok(true) => {
                        let Some((io, svc, _)) = parked.take() else { continue };
                        head_deadline = Some((parked_deadline(), activity.requests()));
                        serving = Some(if io.is_http2() {
                            Serving::auto(&state.http, io, svc)
                        } else {
                            Serving::http1(&state.http1, io, svc)
                        });
                    }
                    Ok(false) => {
                        // The client closed (after its close_notify): answer
                        // with ours, as hyper does.
                        if let Some((io, ..)) = parked.take() {
                            Box::pin(close_parked(io, state.grace)).await;
                        }
                        return;
                    }
                    Err(e) => {
                        debug!(listener = %name, %peer, error = %e, "connection ended with error while idle");
                        return;
                    }
                }
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
            _ = tokio::time::sleep_until(timer_at), if timer.is_some() => match which {
            Timer::Recheck => {}
            Timer::Grace => {
                info!(listener = %name, %peer, grace = ?state.grace,
                    "connection still busy when the grace period ended; closed");
                return;
            }
            Timer::Park => {
                // hyper holds an idle connection only after a request: before
                // the first one, a shutdown would close it.
                if activity.requests() > 0
                    && activity.idle_since().is_some_and(|t| t.elapsed() >= PARK_AFTER)
                    && watch.quiet()
                    && framing.between_requests()
                    && let Some(s) = serving.as_mut()
                {
                    watch.begin_parking();
                    s.graceful_shutdown();
                } else {
                    park_not_before = now() + PARK_AFTER;
                }
            }
            Timer::ParkedHead => {
                header_timeout(&state, peer, &activity, &framing);
                if let Some((io, ..)) = parked.take() {
                    Box::pin(close_parked(io, state.grace)).await;
                }
                return;
            }
            Timer::Head => {
                if head_deadline.is_some_and(|(_, requests)| activity.requests() == requests) {
                    header_timeout(&state, peer, &activity, &framing);
                    return;
                }
                head_deadline = None;
            }
            Timer::Idle => {
                if activity.idle_since().is_some_and(|t| t.elapsed() >= idle_timeout) {
                    state.metrics.timed_out("idle");
                    debug!(listener = %name, %peer, "idle timeout; closing");
                    closing = Some(now() + state.grace);
                    if let Some(s) = serving.as_mut() {
                        s.graceful_shutdown();
                    }
                }
            }
            },
        }
    }
}

/// The deadline a connection's one timer is armed for.
#[derive(Clone, Copy)]
enum Timer {
    /// Look again whether a draining connection has sent its first request.
    Recheck,
    /// The grace period of a closing connection is over.
    Grace,
    /// Long enough idle to be parked.
    Park,
    /// A parked connection's request-head timer.
    ParkedHead,
    /// The request-head timer kept across a park (hyper's own restarts).
    Head,
    /// The idle timeout.
    Idle,
}

/// Counts and logs a connection closed by the request-head timer: a slow
/// client when it had started a head (or sent no request yet), else an idle
/// keep-alive connection.
fn header_timeout(state: &ListenerState, peer: SocketAddr, activity: &Activity, framing: &Framing) {
    let name = &state.name;
    // hyper's header timer also runs while a keep-alive connection waits
    // for its next request: that is an idle close, not a slow client.
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

/// Ends a parked connection the way hyper ends one: TLS close_notify, then
/// the stream's end, within the grace period. Callers box it: it is awaited
/// once, at the end, and inline it would add its size (the stream and a
/// timer) to every connection's future for the connection's whole life.
async fn close_parked<IO: tokio::io::AsyncWrite + Unpin>(mut io: IO, grace: Duration) {
    let _ = tokio::time::timeout(grace, tokio::io::AsyncWriteExt::shutdown(&mut io)).await;
}

/// Polls the hyper connection, if there is one (else never ready).
async fn poll_serving<I, S>(serving: Option<&mut Serving<'_, I, S>>) -> Result<(), BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Handler,
{
    match serving {
        Some(s) => std::future::poll_fn(|cx| s.poll(cx)).await,
        None => std::future::pending().await,
    }
}

/// Waits on the parked connection, if there is one (else never ready).
async fn wait_parked<IO: tokio::io::AsyncRead + Unpin>(
    parked: Option<&mut ParkIo<IO>>,
) -> std::io::Result<bool> {
    match parked {
        Some(io) => std::future::poll_fn(|cx| io.poll_wait(cx)).await,
        None => std::future::pending().await,
    }
}

/// Whether a connection ended because hyper's request-head timer ran out.
pub(super) fn is_header_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout)
}
