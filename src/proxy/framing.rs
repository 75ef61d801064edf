//! Sees the raw HTTP/1.1 request heads of a connection before hyper parses
//! them, to catch framing that hyper resolves silently.
//!
//! hyper accepts a request with both `Content-Length` and
//! `Transfer-Encoding` (the coding wins, the length is dropped) and folds
//! repeated identical `Content-Length` headers into one; by the time the
//! service sees the request, neither is visible. A legacy backend, or a
//! proxy in front of it, may frame such a request the other way (request
//! smuggling), so certgate refuses them with 400 and closes. This reader
//! passes every byte through unchanged and parses each head with
//! `httparse` (hyper's own parser), skipping bodies by their framing
//! (`Content-Length`, or chunk sizes via `httparse::parse_chunk_size`) to
//! find the next head. No crate offers this as a stream filter, hence the
//! small state machine here.
//!
//! Anything it cannot follow (an upgrade, CONNECT, HTTP/2, a head hyper
//! will refuse anyway) turns it off for the rest of the connection; hyper's
//! own checks and [`super::headers::ambiguous_framing`] still apply then.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a connection closed with request bytes still unread keeps
/// reading (and discarding) them before it is closed: closing a socket with
/// unread data makes the kernel send a reset, which can destroy the
/// response (a 400, 413 or 431) in the client's receive buffer before the
/// client reads it. nginx calls this lingering close.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// Bytes read per poll while lingering before yielding to other tasks.
const LINGER_READ_BUDGET: usize = 256 * 1024;

/// The longest chunk-size line or trailer section followed; longer ones
/// turn the scan off (hyper refuses them).
const MAX_LINE: usize = 4096;
/// Header slots for `httparse`; more headers turn the scan off (hyper's
/// `max_request_headers` refuses such a head).
const MAX_HEADERS: usize = 256;

/// What the scan found, shared with the connection's service.
#[derive(Debug)]
pub struct Framing {
    /// Index (0-based, in order on the connection) of the first request
    /// whose framing is ambiguous; `u64::MAX` while none is.
    first_ambiguous: AtomicU64,
    why: std::sync::OnceLock<&'static str>,
    /// Where the stream is: [`BETWEEN`], [`IN_HEAD`] or [`ELSEWHERE`].
    position: AtomicU8,
}

/// Between requests: the last one ended, nothing of the next has arrived.
const BETWEEN: u8 = 0;
/// Part of a request head has arrived and its end has not.
const IN_HEAD: u8 = 1;
/// Inside a body, or the scan is off (an upgrade, HTTP/2, a refused head).
const ELSEWHERE: u8 = 2;

impl Default for Framing {
    fn default() -> Self {
        Framing {
            first_ambiguous: AtomicU64::new(u64::MAX),
            why: std::sync::OnceLock::new(),
            position: AtomicU8::new(BETWEEN),
        }
    }
}

impl Framing {
    /// Why request number `index` (0-based) must be refused, if it must:
    /// it, or a request before it on the connection, had ambiguous framing.
    pub fn ambiguous(&self, index: u64) -> Option<&'static str> {
        if index >= self.first_ambiguous.load(Ordering::Acquire) {
            Some(self.why.get().copied().unwrap_or("ambiguous framing"))
        } else {
            None
        }
    }

    /// Whether the client has sent part of a request head and not its end
    /// (a slow or stalled client, as opposed to an idle keep-alive one).
    pub fn head_started(&self) -> bool {
        self.position.load(Ordering::Relaxed) == IN_HEAD
    }

    /// Whether the stream is between requests, as far as the scan can
    /// tell: every request so far ended (head and body), nothing of the
    /// next one has arrived, and the scan still follows the stream (not
    /// after an upgrade or a head it could not follow).
    pub fn between_requests(&self) -> bool {
        self.position.load(Ordering::Relaxed) == BETWEEN
    }
}

#[derive(Debug)]
enum State {
    /// Collecting a request head (in `FramingScan::buf`).
    Head,
    /// Skipping this many body bytes.
    Body(u64),
    /// Collecting a chunk-size line.
    ChunkSize,
    /// Skipping this many chunk bytes, then the CRLF after them.
    ChunkData(u64),
    /// Collecting the trailer section after the last chunk.
    Trailers,
    /// Not following this connection any more.
    Off,
}

/// A reader that watches request framing on its way to hyper.
#[derive(Debug)]
pub struct FramingScan<IO> {
    io: IO,
    state: State,
    buf: Vec<u8>,
    max_head: usize,
    index: u64,
    found: Arc<Framing>,
    /// Turned off where request bytes may remain unread (a refused head,
    /// an unfollowable body), as opposed to a protocol switch.
    off_unread: bool,
    /// Set once the write side is shut down and lingering began.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> FramingScan<IO> {
    /// Wraps `io`; heads longer than `max_head` bytes are left to hyper
    /// (which refuses them).
    pub fn new(io: IO, max_head: usize) -> (FramingScan<IO>, Arc<Framing>) {
        let found = Arc::new(Framing::default());
        (
            FramingScan {
                io,
                state: State::Head,
                buf: Vec::new(),
                max_head,
                index: 0,
                found: found.clone(),
                off_unread: false,
                linger: None,
            },
            found,
        )
    }

    /// Gives back the head buffer's memory while the stream is between
    /// requests (a parked connection keeps no buffers).
    pub fn release_buffers(&mut self) {
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
    }

    /// The stream it wraps.
    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.io
    }

    /// Stops following: at a request hyper will refuse (its bytes, or
    /// the rest of its body, may still be arriving).
    fn off(&mut self) {
        self.stop(true);
    }

    fn stop(&mut self, unread: bool) {
        self.state = State::Off;
        self.buf = Vec::new();
        self.off_unread = unread;
    }

    /// Whether the client may still be sending bytes of a request hyper did
    /// not read: the stream stopped inside a head or a body, or at a
    /// request the scan could not follow because it is refused.
    fn unread_expected(&self) -> bool {
        match self.state {
            State::Head => !self.buf.is_empty(),
            State::Off => self.off_unread,
            State::Body(_) | State::ChunkSize | State::ChunkData(_) | State::Trailers => true,
        }
    }

    /// Follows `data`, the next bytes of the stream. Iterative: a read full
    /// of pipelined requests must not cost a stack frame per request.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Body(rest) | State::ChunkData(rest) => {
                    // ChunkData's count includes the CRLF after the chunk.
                    let k = usize::try_from(*rest).unwrap_or(usize::MAX).min(data.len());
                    *rest -= k as u64;
                    data = &data[k..];
                    if *rest == 0 {
                        self.state = match self.state {
                            State::ChunkData(_) => State::ChunkSize,
                            _ => State::Head,
                        };
                    }
                }
                State::Head => {
                    let old = self.buf.len();
                    self.buf.extend_from_slice(data);
                    // Parse only at a blank line: a client sending a byte
                    // at a time costs one short search per byte, not a parse.
                    let mut from = old.saturating_sub(3);
                    let used = loop {
                        // Limits are checked on what the head needs, not on
                        // how much arrived, so the verdict does not depend on
                        // how the stream was cut into reads.
                        let Some(end) = blank_line_end(&self.buf, from) else {
                            if self.buf.len() > self.max_head {
                                self.off();
                            }
                            return;
                        };
                        if end > self.max_head {
                            return self.off();
                        }
                        match inspect(&self.buf[..end]) {
                            // A blank line httparse skips (leading CRLFs):
                            // look for the next one.
                            Inspect::Partial => from = end - 1,
                            Inspect::Stop => return self.off(),
                            Inspect::NotHttp1 => return self.stop(false),
                            Inspect::Ambiguous(why) => {
                                let _ = self.found.why.set(why);
                                self.found
                                    .first_ambiguous
                                    .fetch_min(self.index, Ordering::AcqRel);
                                self.index += 1;
                                return self.off();
                            }
                            Inspect::Complete { used, next } => {
                                self.index += 1;
                                self.state = next;
                                break used;
                            }
                        }
                    };
                    data = self.consumed(data, used);
                }
                State::ChunkSize => {
                    self.buf.extend_from_slice(data);
                    match httparse::parse_chunk_size(&self.buf) {
                        Ok(httparse::Status::Complete((used, _))) if used > MAX_LINE => {
                            return self.off();
                        }
                        Ok(httparse::Status::Complete((used, size))) => {
                            self.state = if size == 0 {
                                State::Trailers
                            } else {
                                State::ChunkData(size.saturating_add(2))
                            };
                            data = self.consumed(data, used);
                        }
                        Ok(httparse::Status::Partial) if self.buf.len() <= MAX_LINE => return,
                        _ => return self.off(),
                    }
                }
                State::Trailers => {
                    self.buf.extend_from_slice(data);
                    let end = if self.buf.starts_with(b"\r\n") {
                        Some(2)
                    } else {
                        self.buf
                            .windows(4)
                            .position(|w| w == b"\r\n\r\n")
                            .map(|p| p + 4)
                    };
                    match end {
                        Some(end) if end > MAX_LINE => return self.off(),
                        Some(end) => {
                            self.state = State::Head;
                            data = self.consumed(data, end);
                        }
                        None if self.buf.len() > MAX_LINE => return self.off(),
                        None => return,
                    }
                }
            }
        }
    }

    /// `data` was appended to `buf`, and the first `used` bytes of `buf`
    /// made up what was collected: empties `buf` and returns the part of
    /// `data` that follows it. The collected part always ends inside
    /// `data` (it was incomplete before), so the rest is a suffix of it.
    fn consumed<'d>(&mut self, data: &'d [u8], used: usize) -> &'d [u8] {
        let after = self.buf.len().saturating_sub(used);
        self.buf.clear();
        if after > data.len() {
            self.off();
            return &[];
        }
        &data[data.len() - after..]
    }
}

/// What one complete-looking head says about the bytes after it.
enum Inspect {
    /// A request head of `used` bytes; its body is framed as `next` says.
    Complete { used: usize, next: State },
    /// Its framing could be read two ways.
    Ambiguous(&'static str),
    /// httparse wants more bytes.
    Partial,
    /// Not something to follow: hyper refuses it.
    Stop,
    /// The bytes after it are not HTTP/1 requests (an upgrade, CONNECT,
    /// the HTTP/2 preface).
    NotHttp1,
}

/// Parses the head at the start of `buf` and checks its framing.
fn inspect(buf: &[u8]) -> Inspect {
    if buf.starts_with(b"PRI * HTTP/2.0\r\n") {
        return Inspect::NotHttp1;
    }
    // Left uninitialised: httparse fills only what the head has, instead
    // of 256 empty headers (8 KiB) being written per request.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let used = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Inspect::Partial,
        Err(_) => return Inspect::Stop,
    };
    if req.method == Some("CONNECT") {
        return Inspect::NotHttp1;
    }
    // Counts and the first value of each: no allocation per request.
    let (mut lengths, mut codings, mut upgrade) = (0usize, 0usize, false);
    let (mut length, mut coding): (&[u8], &[u8]) = (b"", b"");
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            length = h.value;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            codings += 1;
            coding = h.value;
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    match (lengths, codings) {
        (2.., _) => return Inspect::Ambiguous("several Content-Length headers"),
        (1, 1..) => return Inspect::Ambiguous("both Content-Length and Transfer-Encoding"),
        (1, 0) if length.contains(&b',') => return Inspect::Ambiguous("a Content-Length list"),
        _ => {}
    }
    if upgrade {
        // The bytes after an accepted upgrade are not HTTP.
        return Inspect::NotHttp1;
    }
    let next = match (lengths, codings) {
        (0, 0) => State::Head,
        (0, 1) if coding.trim_ascii().eq_ignore_ascii_case(b"chunked") => State::ChunkSize,
        // Other codings are refused by the service; hyper checks the rest.
        (0, _) => return Inspect::Stop,
        _ => match std::str::from_utf8(length.trim_ascii())
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(0) => State::Head,
            Some(n) => State::Body(n),
            None => return Inspect::Stop,
        },
    };
    Inspect::Complete { used, next }
}

/// The end (index after it) of the first empty line at or after `from`:
/// `\n\n` or `\n\r\n`. httparse, like hyper, also takes bare LF line
/// ends, so a search for CRLF CRLF alone could be dodged.
fn blank_line_end(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find_map(|at| {
        if buf[at] != b'\n' {
            return None;
        }
        match (buf.get(at + 1), buf.get(at + 2)) {
            (Some(b'\n'), _) => Some(at + 2),
            (Some(b'\r'), Some(b'\n')) => Some(at + 3),
            _ => None,
        }
    })
}

impl<IO: AsyncRead + Unpin> AsyncRead for FramingScan<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && !matches!(this.state, State::Off) {
            this.feed(&buf.filled()[before..]);
            let position = match this.state {
                State::Head if this.buf.is_empty() => BETWEEN,
                State::Head => IN_HEAD,
                _ => ELSEWHERE,
            };
            if this.found.position.load(Ordering::Relaxed) != position {
                this.found.position.store(position, Ordering::Relaxed);
            }
        }
        r
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for FramingScan<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() {
            // The response is complete: the client gets its end (TLS
            // close_notify, then FIN) before anything else happens.
            std::task::ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            if !this.unread_expected() {
                return Poll::Ready(Ok(()));
            }
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut scratch = [0u8; 8192];
        let mut read = 0;
        while read < LINGER_READ_BUDGET {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                // The client closed too, or gave up: done.
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => read += rb.filled().len(),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => break,
            }
        }
        if read >= LINGER_READ_BUDGET {
            cx.waker().wake_by_ref();
        }
        match this.linger.as_mut().map(|t| t.as_mut().poll(cx)) {
            Some(Poll::Pending) => Poll::Pending,
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn scan(input: &[u8], step: usize) -> (Arc<Framing>, u64) {
        let (mut s, found) = FramingScan::new((), 65536);
        for piece in input.chunks(step.max(1)) {
            s.feed(piece);
        }
        (found, s.index)
    }

    #[test]
    fn pipelined_requests_with_bodies_are_followed_in_any_read_size() {
        let input = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab\r\n\r\
            GET /b HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
            3;ext=1\r\nabc\r\n4\r\n\r\n\r\n\r\n0\r\nX-Trailer: 1\r\n\r\n\
            POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab";
        for step in [1, 2, 3, 7, 64, 4096] {
            let (found, index) = scan(input, step);
            assert_eq!(index, 4, "step {step}: every head seen");
            assert_eq!(found.ambiguous(2), None, "step {step}");
            assert_eq!(
                found.ambiguous(3),
                Some("several Content-Length headers"),
                "step {step}"
            );
        }
    }

    /// A client pipelining thousands of tiny requests in one read must not
    /// cost a stack frame per request (a worker thread's stack is 2 MiB).
    #[test]
    fn thousands_of_pipelined_heads_in_one_read_are_followed_without_recursion() {
        let one =
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /u HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let input: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * 20_000)
            .collect();
        let (mut s, found) = FramingScan::new((), 65536);
        // A thread with a small stack makes a frame per request fail loudly.
        let index = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                s.feed(&input);
                s.index
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(index, 40_000);
        assert_eq!(found.ambiguous(39_999), None);
    }

    #[test]
    fn cl_and_te_together_and_length_lists_are_ambiguous() {
        let (found, _) = scan(
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            4096,
        );
        assert_eq!(
            found.ambiguous(0),
            Some("both Content-Length and Transfer-Encoding")
        );
        let (found, _) = scan(b"POST / HTTP/1.1\r\nContent-Length: 4, 4\r\n\r\nabcd", 4096);
        assert_eq!(found.ambiguous(0), Some("a Content-Length list"));
        // Bare LF line ends, as httparse and hyper accept them.
        let (found, _) = scan(
            b"POST / HTTP/1.1\nContent-Length: 2\nContent-Length: 2\n\nab",
            1,
        );
        assert_eq!(found.ambiguous(0), Some("several Content-Length headers"));
    }

    #[test]
    fn an_upgrade_or_http2_turns_the_scan_off() {
        let (found, index) = scan(
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\
              POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na",
            4096,
        );
        // The upgrade head ends the scan; nothing after it is judged.
        assert_eq!((found.ambiguous(1), index), (None, 0));
        let (found, index) = scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 4096);
        assert_eq!((found.ambiguous(0), index), (None, 0));
    }
}
