//! An idle keep-alive connection waits for its next request outside
//! hyper, holding no HTTP buffers.
//!
//! hyper keeps a connection's read buffer (8–16 KiB) and its write buffer
//! (8 KiB) for as long as the connection lives; agents hold their
//! connections open for minutes between check-ins, so those buffers were
//! most of what an idle connection cost. Once a connection has been idle a
//! moment ([`PARK_AFTER`]), certgate asks hyper to shut the connection
//! down: hyper closes an idle keep-alive connection at once (nothing is in
//! flight, so nothing is cut short), and [`ParkIo`] swallows the shutdown
//! so that the stream stays open. hyper hands back the stream and any bytes
//! it had read but not parsed; the connection task keeps the bare stream
//! and starts a new hyper connection when the client sends its next bytes.
//! nginx does the same (it frees a keep-alive connection's buffers while
//! it waits).
//!
//! A connection that has not negotiated its protocol (no ALPN: legacy
//! agents, plain HTTP) starts out parked too: its first bytes say whether
//! it speaks HTTP/2 (the connection preface) or HTTP/1.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a keep-alive connection waits with nothing in flight before it
/// gives its HTTP buffers back. Long enough that a client sending requests
/// back to back does not pay for a new hyper connection per request; short
/// enough that a fleet of agents between check-ins holds none.
pub(super) const PARK_AFTER: Duration = Duration::from_millis(250);

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Counts a connection in `certgate_connections_parked` while it lives.
#[derive(Debug)]
pub(super) struct ParkedCount(prometheus_client::metrics::gauge::Gauge);

impl ParkedCount {
    /// One more parked connection on the listener `gauge` counts.
    pub(super) fn new(gauge: &prometheus_client::metrics::gauge::Gauge) -> ParkedCount {
        gauge.inc();
        ParkedCount(gauge.clone())
    }
}

impl Drop for ParkedCount {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the connection task reads about the stream hyper is using.
#[derive(Debug, Default)]
pub(super) struct Watch {
    /// hyper's last read found nothing to read.
    read_pending: AtomicBool,
    /// hyper wrote bytes it has not flushed since.
    unflushed: AtomicBool,
    /// The task asked hyper to stop for parking: its shutdown is swallowed.
    parking: AtomicBool,
}

impl Watch {
    /// Whether hyper is waiting for the client with everything it wrote
    /// flushed: nothing of this connection is on its way in either
    /// direction inside certgate.
    pub(super) fn quiet(&self) -> bool {
        self.read_pending.load(Ordering::Relaxed) && !self.unflushed.load(Ordering::Relaxed)
    }

    /// Whether the task asked hyper to stop so that it can park.
    pub(super) fn parking(&self) -> bool {
        self.parking.load(Ordering::Relaxed)
    }

    /// From now on a shutdown of the stream by hyper leaves it open.
    pub(super) fn begin_parking(&self) {
        self.parking.store(true, Ordering::Relaxed);
    }
}

/// The stream under hyper: bytes read ahead are served first, and a
/// shutdown while parking does not reach the stream.
#[derive(Debug)]
pub(super) struct ParkIo<IO> {
    io: IO,
    /// Bytes read from the stream that hyper has not seen yet.
    prefix: Bytes,
    watch: Arc<Watch>,
}

impl<IO> ParkIo<IO> {
    /// Wraps `io`; the [`Watch`] is the connection task's view of it.
    pub(super) fn new(io: IO) -> (ParkIo<IO>, Arc<Watch>) {
        let watch = Arc::new(Watch::default());
        (
            ParkIo {
                io,
                prefix: Bytes::new(),
                watch: watch.clone(),
            },
            watch,
        )
    }

    /// The stream it wraps.
    pub(super) fn get_mut(&mut self) -> &mut IO {
        &mut self.io
    }

    /// Back from hyper: `unread` is what hyper had read and not parsed
    /// (pipelined bytes), served first to the next hyper connection.
    pub(super) fn parked(&mut self, unread: Bytes) {
        self.watch.parking.store(false, Ordering::Relaxed);
        self.watch.read_pending.store(false, Ordering::Relaxed);
        self.watch.unflushed.store(false, Ordering::Relaxed);
        // An empty `Bytes` from hyper may still hold its whole read buffer.
        self.prefix = if unread.is_empty() {
            Bytes::new()
        } else {
            unread
        };
    }

    /// Whether bytes are waiting for the next hyper connection.
    pub(super) fn has_unread(&self) -> bool {
        !self.prefix.is_empty()
    }

    /// Whether the bytes read ahead begin the HTTP/2 connection preface
    /// (as far as they go).
    pub(super) fn is_http2(&self) -> bool {
        let n = self.prefix.len().min(H2_PREFACE.len());
        n > 0 && self.prefix[..n] == H2_PREFACE[..n]
    }
}

impl<IO: AsyncRead + Unpin> ParkIo<IO> {
    /// Waits, parked, until the client sends something: `Ok(true)` once
    /// bytes are read ahead (enough of them to tell HTTP/2's preface from
    /// HTTP/1), `Ok(false)` at the end of the stream (the client closed).
    /// Cancel-safe: bytes read are kept before it returns.
    pub(super) fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        loop {
            let mut first = [0u8; H2_PREFACE.len()];
            let have = self.prefix.len();
            if have >= H2_PREFACE.len() || (have > 0 && !self.is_http2()) {
                return Poll::Ready(Ok(true));
            }
            let mut rb = ReadBuf::new(&mut first[..H2_PREFACE.len() - have]);
            std::task::ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(have > 0));
            }
            self.prefix = if have == 0 {
                Bytes::copy_from_slice(rb.filled())
            } else {
                // Rare: the preface's first bytes came alone.
                [&self.prefix[..], rb.filled()].concat().into()
            };
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ParkIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                this.prefix = Bytes::new();
            }
            this.watch.read_pending.store(false, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        this.watch
            .read_pending
            .store(r.is_pending(), Ordering::Relaxed);
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ParkIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.watch.unflushed.store(true, Ordering::Relaxed);
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.watch.unflushed.store(true, Ordering::Relaxed);
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) {
            this.watch.unflushed.store(false, Ordering::Relaxed);
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.watch.parking() {
            // hyper is done with the connection, the stream is not.
            return Pin::new(&mut this.io).poll_flush(cx);
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_read_while_parked_come_first_and_tell_http2_from_http1() {
        let (mut client, server) = tokio::io::duplex(1024);
        let (mut io, _watch) = ParkIo::new(server);
        client.write_all(b"PRI * HTTP/2.0").await.unwrap();
        // Only part of the preface: the wait is not over.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(io.poll_wait(&mut cx).is_pending());
        client.write_all(b"\r\n\r\nSM\r\n\r\nrest").await.unwrap();
        let got = std::future::poll_fn(|cx| io.poll_wait(cx)).await.unwrap();
        assert!(got && io.is_http2());
        let mut all = vec![0u8; 28];
        io.read_exact(&mut all).await.unwrap();
        assert_eq!(&all[..], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nrest");

        let (mut client, server) = tokio::io::duplex(1024);
        let (mut io, _watch) = ParkIo::new(server);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(std::future::poll_fn(|cx| io.poll_wait(cx)).await.unwrap());
        assert!(!io.is_http2());
        drop(client);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(&all[..], b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_shutdown_while_parking_leaves_the_stream_open() {
        let (mut client, server) = tokio::io::duplex(1024);
        let (mut io, watch) = ParkIo::new(server);
        watch.begin_parking();
        io.shutdown().await.unwrap();
        io.parked(Bytes::new());
        io.write_all(b"still here").await.unwrap();
        let mut got = [0u8; 10];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"still here");
        io.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        // The end of the stream while parked.
        let (client, server) = tokio::io::duplex(1024);
        let (mut io, _) = ParkIo::new(server);
        drop(client);
        assert!(!std::future::poll_fn(|cx| io.poll_wait(cx)).await.unwrap());
    }
}
