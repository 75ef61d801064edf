//! The highest TLS version a client offered, read from the first bytes of
//! its ClientHello. rustls refuses a TLS 1.0/1.1 client without saying what
//! it offered; admins planning the switch to TLS 1.2 need exactly that
//! ("192.0.2.7 offered at most TLS 1.0").
//!
//! Hand-written: only a few fixed fields are read, with bounds checks on
//! every step; a TLS parsing crate would bring far more than this needs.
//! The handshake path only calls it after rustls has already refused.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// A TLS (or SSL 3.0) ClientHello; the highest version offered, as the
    /// 16-bit wire value (0x0300 SSL 3.0, 0x0301 TLS 1.0 ... 0x0304 TLS 1.3).
    Version(u16),
    /// An SSL 2.0-format ClientHello (very old clients); its version field.
    Ssl2Hello(u16),
    /// Not enough bytes to tell.
    Incomplete,
    /// Not a TLS ClientHello at all (plain HTTP, a port scanner, ...).
    NotTls,
}

impl Offered {
    /// The highest version offered, if known.
    pub fn version(self) -> Option<u16> {
        match self {
            Offered::Version(v) | Offered::Ssl2Hello(v) => Some(v),
            _ => None,
        }
    }

    /// True when the client offered nothing newer than TLS 1.1.
    pub fn is_legacy(self) -> bool {
        self.version().is_some_and(|v| v < 0x0303)
    }
}

/// A readable name for a wire version: `TLS 1.0`, `SSL 3.0`, ...
pub(crate) fn version_name(v: u16) -> String {
    match v {
        0x0002 => "SSL 2.0".into(),
        0x0300 => "SSL 3.0".into(),
        0x0301 => "TLS 1.0".into(),
        0x0302 => "TLS 1.1".into(),
        0x0303 => "TLS 1.2".into(),
        0x0304 => "TLS 1.3".into(),
        other => format!("0x{other:04x}"),
    }
}

/// GREASE values (RFC 8701) are never real versions.
pub(crate) fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// Reads the highest offered version from the start of a connection.
pub fn offered(b: &[u8]) -> Offered {
    let Some(&first) = b.first() else {
        return Offered::Incomplete;
    };
    if first & 0x80 != 0 {
        // SSL 2.0 record: 2-byte length, msg type 1 (client hello), version.
        return match (b.get(2), u16_at(b, 3)) {
            (Some(1), Some(v)) => Offered::Ssl2Hello(v),
            // A client hello whose version has not arrived yet (found by
            // the client_hello fuzz target: this said "not TLS").
            (Some(1), None) | (None, _) => Offered::Incomplete,
            (Some(_), _) => Offered::NotTls,
        };
    }
    if first != 0x16 {
        return Offered::NotTls;
    }
    // Record header (5) + handshake header (4) + client_version (2).
    match (b.get(1), b.get(5)) {
        (Some(3), Some(1)) => {}
        (Some(_), Some(_)) => return Offered::NotTls,
        _ => return Offered::Incomplete,
    }
    let Some(legacy) = u16_at(b, 9) else {
        return Offered::Incomplete;
    };
    // random (32) then session id.
    let mut i = 11 + 32;
    let Some(&sid) = b.get(i) else {
        return Offered::Version(legacy);
    };
    i += 1 + usize::from(sid);
    let Some(suites) = u16_at(b, i) else {
        return Offered::Version(legacy);
    };
    i += 2 + usize::from(suites);
    let Some(&comp) = b.get(i) else {
        return Offered::Version(legacy);
    };
    i += 1 + usize::from(comp);
    let Some(ext_len) = u16_at(b, i) else {
        // No extensions: the legacy field is the offer.
        return Offered::Version(legacy);
    };
    i += 2;
    let end = (i + usize::from(ext_len)).min(b.len());
    while i + 4 <= end {
        let (Some(ty), Some(len)) = (u16_at(b, i), u16_at(b, i + 2)) else {
            break;
        };
        let body = i + 4;
        if ty == 0x002b {
            // supported_versions: 1-byte list length, then versions.
            let Some(&n) = b.get(body) else { break };
            let best = (0..usize::from(n) / 2)
                .filter_map(|k| u16_at(b, body + 1 + 2 * k))
                .filter(|v| !is_grease(*v))
                .max();
            if let Some(v) = best {
                return Offered::Version(v.max(legacy.min(0x0303)));
            }
        }
        i = body + usize::from(len);
    }
    Offered::Version(legacy)
}

/// The cipher suites a TLS ClientHello offers, in its order, from the start
/// of a connection; `None` when the bytes are not (yet) a ClientHello whose
/// suite list is complete. Used after rustls refused a handshake for "no
/// cipher suites in common" before it got as far as choosing a certificate
/// (no ECDHE group offered), to tell a CBC-only legacy stack apart.
pub(crate) fn offered_suites(b: &[u8]) -> Option<Vec<u16>> {
    if b.first() != Some(&0x16) || b.get(5) != Some(&1) {
        return None;
    }
    // Record header (5) + handshake header (4) + version (2) + random (32).
    let sid = usize::from(*b.get(43)?);
    let at = 44 + sid;
    let len = usize::from(u16_at(b, at)?);
    let list = b.get(at + 2..at + 2 + len)?;
    Some(
        list.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .filter(|v| !is_grease(*v))
            .collect(),
    )
}

/// A stream that keeps a copy of the first bytes read from it (the
/// ClientHello), so a refused handshake can be explained. The copy is
/// bounded and dropped once the handshake is done.
#[derive(Debug)]
pub(crate) struct Recorded<S> {
    inner: S,
    head: Option<Vec<u8>>,
    /// Rewrites TLS 1.2's `certificate_required` alert until the
    /// handshake is done.
    alerts: Option<super::alert::AlertRewrite>,
}

/// How much of the ClientHello is kept: enough for the version fields and
/// the supported_versions extension of any real client.
const KEEP: usize = 2048;

impl<S> Recorded<S> {
    /// Wraps `inner`, recording what is read from it.
    pub(crate) fn new(inner: S) -> Recorded<S> {
        Recorded {
            inner,
            head: Some(Vec::new()),
            alerts: Some(super::alert::AlertRewrite::default()),
        }
    }

    /// What the client offered, from the recorded bytes.
    pub(crate) fn offered(&self) -> Offered {
        self.head.as_deref().map_or(Offered::Incomplete, offered)
    }

    /// The cipher suites the client offered, from the recorded bytes.
    pub(crate) fn offered_suites(&self) -> Option<Vec<u16>> {
        self.head.as_deref().and_then(offered_suites)
    }

    /// Stops recording and frees the copy; the handshake is done, so the
    /// output is no longer watched for alerts either.
    pub(crate) fn forget(&mut self) {
        self.head = None;
        self.alerts = None;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Some(head) = self.head.as_mut()
            && head.len() < KEEP
        {
            let new = &buf.filled()[before..];
            let take = new.len().min(KEEP - head.len());
            head.extend_from_slice(&new[..take]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let Some(alerts) = this.alerts.as_mut() else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        // One pass over the bytes; only a short or failed write (rare)
        // goes back and advances by what actually went out.
        let before = alerts.clone();
        let patched = alerts.rewrite(buf);
        let out = patched.as_deref().unwrap_or(buf);
        let r = Pin::new(&mut this.inner).poll_write(cx, out);
        match &r {
            Poll::Ready(Ok(n)) if *n == out.len() => {}
            Poll::Ready(Ok(n)) => {
                *alerts = before;
                alerts.advance(&out[..(*n).min(out.len())]);
            }
            _ => *alerts = before,
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.alerts.is_some() {
            // During the handshake, one slice at a time through the alert
            // rewrite (a short write is always allowed).
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return self.poll_write(cx, first);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(legacy: u16, versions: Option<&[u16]>) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&legacy.to_be_bytes());
        body.extend_from_slice(&[0u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        if let Some(vs) = versions {
            let mut ext = vec![0x00, 0x2b];
            let list: Vec<u8> = vs.iter().flat_map(|v| v.to_be_bytes()).collect();
            ext.extend_from_slice(&((list.len() + 1) as u16).to_be_bytes());
            ext.push(list.len() as u8);
            ext.extend_from_slice(&list);
            body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
            body.extend_from_slice(&ext);
        }
        let mut hs = vec![1, 0, 0, body.len() as u8];
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn an_ssl2_hello_cut_before_its_version_is_incomplete_not_foreign() {
        // Regression from `fuzz/` (client_hello): "af 01 01" said NotTls.
        assert_eq!(offered(&[0xaf, 0x01, 0x01]), Offered::Incomplete);
        assert_eq!(offered(&[0xaf, 0x01]), Offered::Incomplete);
        assert_eq!(
            offered(&[0xaf, 0x01, 0x01, 0x00, 0x02]),
            Offered::Ssl2Hello(0x0002)
        );
        assert_eq!(offered(&[0xaf, 0x01, 0x07]), Offered::NotTls);
    }

    #[test]
    fn reads_the_highest_offered_version() {
        assert_eq!(offered(&hello(0x0301, None)), Offered::Version(0x0301));
        assert!(offered(&hello(0x0302, None)).is_legacy());
        assert_eq!(offered(&hello(0x0303, None)), Offered::Version(0x0303));
        assert_eq!(
            offered(&hello(0x0303, Some(&[0x0a0a, 0x0304, 0x0303]))),
            Offered::Version(0x0304)
        );
        assert_eq!(offered(b"GET / HTTP/1.1\r\n"), Offered::NotTls);
        assert_eq!(offered(&[0x16, 3]), Offered::Incomplete);
        assert_eq!(offered(&[0x80, 0x2e, 1, 0, 2]), Offered::Ssl2Hello(0x0002));
        assert_eq!(version_name(0x0301), "TLS 1.0");
    }

    #[test]
    fn never_panics_on_truncation() {
        let full = hello(0x0303, Some(&[0x0304, 0x0303]));
        for n in 0..full.len() {
            let _ = offered(&full[..n]);
            let _ = offered_suites(&full[..n]);
        }
    }

    #[test]
    fn reads_the_offered_suites() {
        assert_eq!(offered_suites(&hello(0x0303, None)), Some(vec![0x1301]));
        assert_eq!(offered_suites(b"GET / HTTP/1.1\r\n"), None);
        let full = hello(0x0303, None);
        assert_eq!(offered_suites(&full[..46]), None, "suite list cut off");
    }
}
