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
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
}

impl Default for Framing {
    fn default() -> Self {
        Framing {
            first_ambiguous: AtomicU64::new(u64::MAX),
            why: std::sync::OnceLock::new(),
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
            },
            found,
        )
    }

    fn off(&mut self) {
        self.state = State::Off;
        self.buf = Vec::new();
    }

    fn feed(&mut self, mut data: &[u8]) {
        // Bounded: every pass consumes input or changes state towards it.
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
                    let from = self.buf.len().saturating_sub(3);
                    self.buf.extend_from_slice(data);
                    data = &[];
                    // Parse only once the blank line is in: a client
                    // sending a byte at a time costs one search per byte,
                    // not one parse.
                    if !blank_line(&self.buf, from) {
                        if self.buf.len() > self.max_head {
                            self.off();
                        }
                        continue;
                    }
                    let buf = std::mem::take(&mut self.buf);
                    match self.head(&buf) {
                        Head::Partial => {
                            // A blank line inside something else (httparse
                            // wants more): keep collecting.
                            self.buf = buf;
                            if self.buf.len() > self.max_head {
                                self.off();
                            }
                        }
                        Head::Complete(used) => {
                            let rest = &buf[used..];
                            if !rest.is_empty() {
                                self.feed(rest);
                            }
                            if matches!(self.state, State::Head) && self.buf.is_empty() {
                                self.buf = buf;
                                self.buf.clear();
                            }
                        }
                        Head::Stop => self.off(),
                    }
                }
                State::ChunkSize => {
                    self.buf.extend_from_slice(data);
                    data = &[];
                    match httparse::parse_chunk_size(&self.buf) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            let rest = self.buf.split_off(used);
                            self.buf.clear();
                            self.state = if size == 0 {
                                State::Trailers
                            } else {
                                State::ChunkData(size.saturating_add(2))
                            };
                            if !rest.is_empty() {
                                self.feed(&rest);
                            }
                        }
                        Ok(httparse::Status::Partial) if self.buf.len() <= MAX_LINE => {}
                        _ => self.off(),
                    }
                }
                State::Trailers => {
                    self.buf.extend_from_slice(data);
                    data = &[];
                    let end = if self.buf.starts_with(b"\r\n") {
                        Some(2)
                    } else {
                        self.buf
                            .windows(4)
                            .position(|w| w == b"\r\n\r\n")
                            .map(|p| p + 4)
                    };
                    match end {
                        Some(end) => {
                            let rest = self.buf.split_off(end);
                            self.buf.clear();
                            self.state = State::Head;
                            if !rest.is_empty() {
                                self.feed(&rest);
                            }
                        }
                        None if self.buf.len() > MAX_LINE => self.off(),
                        None => {}
                    }
                }
            }
        }
    }

    /// Looks at one complete head and sets the state for what follows it.
    fn head(&mut self, buf: &[u8]) -> Head {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(used)) => match self.framing(&req) {
                Some(()) => Head::Complete(used),
                None => Head::Stop,
            },
            Ok(httparse::Status::Partial) => Head::Partial,
            Err(_) => Head::Stop,
        }
    }

    /// Checks a parsed head's framing; `None` to stop following.
    fn framing(&mut self, req: &httparse::Request<'_, '_>) -> Option<()> {
        let index = self.index;
        self.index += 1;
        if req.method == Some("CONNECT") {
            return None;
        }
        let (mut lengths, mut codings, mut upgrade) = (Vec::new(), Vec::new(), false);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                lengths.push(h.value);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                codings.push(h.value);
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        let why = match (lengths.as_slice(), codings.as_slice()) {
            ([_, _, ..], _) => Some("several Content-Length headers"),
            ([_], [_, ..]) => Some("both Content-Length and Transfer-Encoding"),
            ([v], []) if v.contains(&b',') => Some("a Content-Length list"),
            _ => None,
        };
        if let Some(why) = why {
            let _ = self.found.why.set(why);
            self.found
                .first_ambiguous
                .fetch_min(index, Ordering::AcqRel);
            return None;
        }
        if upgrade {
            // The bytes after an accepted upgrade are not HTTP.
            return None;
        }
        self.state = match (lengths.first(), codings.as_slice()) {
            (None, []) => State::Head,
            (None, [te]) if te.trim_ascii().eq_ignore_ascii_case(b"chunked") => State::ChunkSize,
            // Other codings are refused by the service; hyper checks the
            // rest.
            (None, _) => return None,
            (Some(v), _) => {
                let n = std::str::from_utf8(v.trim_ascii())
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())?;
                if n == 0 { State::Head } else { State::Body(n) }
            }
        };
        Some(())
    }
}

enum Head {
    Complete(usize),
    Partial,
    Stop,
}

/// Whether `buf` holds an empty line at or after `from`: `\n\n` or
/// `\n\r\n` (httparse, like hyper, also takes bare LF line ends, so a
/// search for CRLF CRLF alone could be dodged).
fn blank_line(buf: &[u8], from: usize) -> bool {
    buf[from..].iter().enumerate().any(|(i, &b)| {
        let at = from + i;
        b == b'\n'
            && (buf.get(at + 1) == Some(&b'\n')
                || (buf.get(at + 1) == Some(&b'\r') && buf.get(at + 2) == Some(&b'\n')))
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
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FramingScan<IO> {
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

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
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
        assert_eq!((found.ambiguous(1), index), (None, 1));
        let (found, index) = scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 4096);
        assert_eq!((found.ambiguous(0), index), (None, 0));
    }
}
