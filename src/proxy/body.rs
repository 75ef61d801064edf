//! Request bodies on their way to the backend: counted, limited to
//! `max_request_body_bytes`, and reclaimable for a retry on another server.

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

/// What a request body did on its way through.
#[derive(Debug, Default)]
pub(super) struct BodyStats {
    pub(super) bytes: AtomicU64,
    /// The client's body was malformed (e.g. a bad chunk size) or cut off.
    pub(super) failed: std::sync::atomic::AtomicBool,
    /// Most body bytes passed on (`max_request_body_bytes`); 0 = no limit.
    pub(super) limit: u64,
    /// The body went past `limit` and was cut off.
    pub(super) too_large: std::sync::atomic::AtomicBool,
}

/// A request body cut off at `max_request_body_bytes`.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than max_request_body_bytes ({0})")]
pub(super) struct BodyTooLarge(u64);

/// A request body that counts the bytes it passes on.
#[derive(Debug)]
pub(crate) struct CountedBody {
    pub(super) source: Source,
    pub(super) stats: Arc<BodyStats>,
}

#[derive(Debug)]
pub(super) enum Source {
    /// Still in the retry slot: taken out when the backend connection
    /// first reads it, so a connect failure leaves it for the next server.
    Slot(Reclaim),
    Own(Incoming),
    Empty,
}

impl CountedBody {
    pub(super) fn new(body: Incoming, stats: Arc<BodyStats>) -> CountedBody {
        CountedBody {
            source: Source::Own(body),
            stats,
        }
    }

    pub(super) fn reclaimable(slot: Reclaim, stats: Arc<BodyStats>) -> CountedBody {
        CountedBody {
            source: Source::Slot(slot),
            stats,
        }
    }

    pub(super) fn empty(stats: Arc<BodyStats>) -> CountedBody {
        CountedBody {
            source: Source::Empty,
            stats,
        }
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Source::Slot(slot) = &self.source {
            let taken = slot.lock().ok().and_then(|mut b| b.take());
            self.source = taken.map_or(Source::Empty, Source::Own);
        }
        let r = match &mut self.source {
            Source::Own(b) => Pin::new(b).poll_frame(cx),
            _ => return Poll::Ready(None),
        };
        match r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let total = self
                        .stats
                        .bytes
                        .fetch_add(d.len() as u64, Ordering::Relaxed)
                        + d.len() as u64;
                    let limit = self.stats.limit;
                    if limit > 0 && total > limit {
                        self.stats.too_large.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge(limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.stats.failed.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Own(b) => b.is_end_stream(),
            Source::Slot(s) => s
                .lock()
                .map(|b| b.as_ref().is_none_or(|b| b.is_end_stream()))
                .unwrap_or(true),
            Source::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Own(b) => b.size_hint(),
            Source::Slot(s) => s
                .lock()
                .ok()
                .and_then(|b| b.as_ref().map(|b| b.size_hint()))
                .unwrap_or_else(|| SizeHint::with_exact(0)),
            Source::Empty => SizeHint::with_exact(0),
        }
    }
}

/// The request body slot of a request that may be retried on another
/// server: the body stays here until the backend connection starts reading
/// it, so after a connect failure it can be handed to the next server.
pub(super) type Reclaim = Arc<std::sync::Mutex<Option<hyper::body::Incoming>>>;
