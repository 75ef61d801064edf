//! The response body certgate sends: it holds the request's in-flight
//! mark and upstream slot until it is done, then counts and logs the
//! request.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::activity::InFlight;
use super::body::BodyStats;
use super::forward::UpstreamHold;
use super::state::ListenerState;
use crate::access;

/// The body of every response certgate sends: the backend's, streamed, or a
/// short one of its own.
pub(super) type ProxyBody = TrackedBody<Either<Incoming, Full<Bytes>>>;

/// A response body that holds its request's [`InFlight`] mark until the
/// body is finished or dropped.
/// When it is dropped (body done or abandoned) the request is counted in
/// the duration histogram and byte counters and, if enabled, access-logged.
#[derive(Debug)]
pub(super) struct TrackedBody<B> {
    pub(super) inner: B,
    pub(super) _in_flight: Option<InFlight>,
    pub(super) _slot: Option<UpstreamHold>,
    pub(super) finish: Option<Box<Finish>>,
}

/// What is recorded when a response is done.
#[derive(Debug)]
pub(super) struct Finish {
    pub(super) state: Arc<ListenerState>,
    pub(super) started: Instant,
    pub(super) bytes_in: Arc<BodyStats>,
    pub(super) bytes_out: u64,
    pub(super) entry: Option<access::Entry>,
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
