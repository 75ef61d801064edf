//! The TLS layer of a listener connection, over rustls's unbuffered API.
//!
//! A connection spends almost all its life waiting for its agent's next
//! check-in, and the buffered `rustls::ServerConnection` keeps a 4 KiB
//! receive buffer (and its queues) for the whole of it: no API frees them.
//! Here the connection owns only the bytes that are actually in flight: a
//! partial record received, plaintext not yet read, ciphertext not yet
//! written. Each is freed the moment it is empty, so a connection waiting
//! between requests holds rustls's session state and nothing else. Records
//! are read into a per-thread scratch buffer (one socket read takes a whole
//! record), and only a partial record is copied out of it.
//!
//! Behaves as `tokio_rustls::server::TlsStream` does where hyper and the
//! handshake can tell: a fatal alert goes out before the handshake's error
//! is returned, `close_notify` ends the read side, a TCP end without it is
//! `UnexpectedEof`, and a shutdown sends `close_notify` before the TCP FIN.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest TLS record on the wire: header, 2^14 bytes of plaintext and
/// the most a cipher may add (RFC 5246, section 6.2.3).
const MAX_RECORD: usize = 5 + (1 << 14) + 2048;

/// The most received bytes kept unprocessed: a handshake message may span
/// records up to rustls's 64 KiB limit, and rustls joins it in place.
const MAX_PENDING: usize = 0x1_0000 + MAX_RECORD;

/// The most plaintext one write takes (four full records): hyper hands
/// over whole bodies, and the socket, not certgate's memory, is the limit.
const MAX_WRITE: usize = 4 << 14;

/// What encryption adds to a record at most (header, explicit nonce, tag,
/// TLS 1.3 content type), to size the output before rustls is asked.
const RECORD_OVERHEAD: usize = 64;

thread_local! {
    /// Receive buffer shared by the connections a worker thread polls: a
    /// socket read lands here, and only what rustls cannot process yet (a
    /// partial record) is copied to the connection.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with the thread's scratch buffer, at least `len` bytes long
/// (a fresh one if it is in use: a poll never nests another, but a
/// fallback costs only an allocation).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0);
            }
            let r = f(&mut v[..len]);
            // A big handshake message grew it; a worker keeps one record's worth.
            if v.len() > 2 * MAX_RECORD {
                *v = vec![0; MAX_RECORD];
            }
            r
        }
        Err(_) => f(&mut vec![0; len]),
    })
}

/// A server-side TLS connection over `IO`, once its handshake is done.
pub(crate) struct TlsStream<IO> {
    io: IO,
    conn: UnbufferedServerConnection,
    /// Received bytes rustls has not processed yet: a partial record (or
    /// a handshake message still being joined). Usually empty.
    incoming: Vec<u8>,
    /// Plaintext received and not read yet, from `plain_at` on.
    plain: Vec<u8>,
    plain_at: usize,
    /// Ciphertext (and alerts) not written yet, from `out_at` on.
    outgoing: Vec<u8>,
    out_at: usize,
    /// The client sent close_notify: the read side has ended.
    peer_closed: bool,
    /// certgate queued its close_notify.
    close_sent: bool,
    /// rustls refused what the client sent; nothing more is asked of it
    /// (it would read the refused bytes again).
    failed: bool,
}

impl<IO> std::fmt::Debug for TlsStream<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("incoming", &self.incoming.len())
            .field("plain", &(self.plain.len() - self.plain_at))
            .field("outgoing", &(self.outgoing.len() - self.out_at))
            .field("peer_closed", &self.peer_closed)
            .field("close_sent", &self.close_sent)
            .finish_non_exhaustive()
    }
}

/// Why a run of rustls over received bytes stopped.
enum Stop {
    /// It needs more bytes from the client.
    NeedData,
    /// The client sent close_notify; what follows it is ignored.
    PeerClosed,
}

/// An error of rustls as the stream reports it, with the `rustls::Error`
/// inside (the handshake classifies refusals by it).
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The error of a stream used after rustls refused its client.
fn failed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the TLS connection failed earlier (the client's data was refused)",
    )
}

/// Appends what `write` puts into a buffer to `out`, growing the buffer
/// to what rustls asks for when the first guess is too small.
fn append<E>(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    too_small: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let start = out.len();
    let mut room = guess;
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(e) => match too_small(&e) {
                Some(need) if need > room => room = need,
                _ => {
                    out.truncate(start);
                    return Err(e);
                }
            },
        }
    }
}

fn encode_too_small(e: &EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    }
}

fn encrypt_too_small(e: &EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    }
}

fn encode_failed(e: EncodeError) -> rustls::Error {
    rustls::Error::General(format!("encoding a TLS record: {e}"))
}

/// Runs rustls over `data` (received bytes, none processed yet): what it
/// sends is appended to `outgoing`, the plaintext it decrypts goes to
/// `plain`. Returns how many bytes of `data` are done with (the rest is
/// to be given again, with more after it) and why it stopped. On an error
/// the fatal alert rustls queued is in `outgoing`.
fn drive(
    conn: &mut UnbufferedServerConnection,
    outgoing: &mut Vec<u8>,
    data: &mut [u8],
    plain: &mut dyn FnMut(&[u8]),
) -> Result<(usize, Stop), rustls::Error> {
    let mut done = 0;
    loop {
        let UnbufferedStatus { mut discard, state } = conn.process_tls_records(&mut data[done..]);
        let state = match state {
            Ok(s) => s,
            Err(e) => {
                done += discard;
                queue_alerts(conn, outgoing, &mut data[done..], &e);
                return Err(e);
            }
        };
        let stop = match state {
            ConnectionState::ReadTraffic(mut r) => {
                while let Some(record) = r.next_record() {
                    let record = record?;
                    discard += record.discard;
                    plain(record.payload);
                }
                None
            }
            // certgate accepts no early data; read it so that rustls moves on.
            ConnectionState::ReadEarlyData(mut r) => {
                while let Some(record) = r.next_record() {
                    discard += record?.discard;
                }
                None
            }
            ConnectionState::EncodeTlsData(mut e) => {
                append(outgoing, 1024, |b| e.encode(b), encode_too_small).map_err(encode_failed)?;
                None
            }
            // The bytes wait in `outgoing`; the caller writes them before
            // it waits for the client.
            ConnectionState::TransmitTlsData(t) => {
                t.done();
                None
            }
            ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => {
                Some(Stop::NeedData)
            }
            ConnectionState::PeerClosed | ConnectionState::Closed => Some(Stop::PeerClosed),
            other => {
                return Err(rustls::Error::General(format!(
                    "unexpected TLS connection state {other:?}"
                )));
            }
        };
        done += discard;
        match stop {
            None => {}
            Some(Stop::PeerClosed) => return Ok((data.len(), Stop::PeerClosed)),
            Some(s) => return Ok((done, s)),
        }
    }
}

/// After an error: the alert rustls queued for it, encoded into `outgoing`.
///
/// rustls keeps a record-layer error (a bad MAC, a malformed record) only
/// by the alert it queued, not in its state: asked again, it would read
/// the same record and fail again (queuing a second fatal alert, which a
/// debug build asserts against). So the loop stops after the fatal alert:
/// the first alert record, the only message of a record-layer error, or
/// after the handshake (when nothing else is ever queued with an error).
fn queue_alerts(
    conn: &mut UnbufferedServerConnection,
    outgoing: &mut Vec<u8>,
    data: &mut [u8],
    error: &rustls::Error,
) {
    let record_layer = matches!(
        error,
        rustls::Error::InvalidMessage(_)
            | rustls::Error::PeerSentOversizedRecord
            | rustls::Error::DecryptError
            | rustls::Error::PeerMisbehaved(_)
    );
    let mut done = 0;
    // Bounded: each pass encodes one queued message or stops.
    for _ in 0..8 {
        let handshaking = conn.is_handshaking();
        let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut data[done..]);
        match state {
            Ok(ConnectionState::EncodeTlsData(mut e)) => {
                let start = outgoing.len();
                if append(outgoing, 64, |b| e.encode(b), encode_too_small).is_err() {
                    return;
                }
                if record_layer || !handshaking || outgoing.get(start) == Some(&ALERT) {
                    return;
                }
            }
            Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
            _ => return,
        }
        done += discard;
    }
}

/// The content type of an alert record.
const ALERT: u8 = 21;

/// Starts a server connection under `config` on `io` and runs its
/// handshake. On failure the error (a `rustls::Error` inside an
/// `InvalidData` one when TLS refused, `UnexpectedEof` when the client
/// went away) comes back with the stream, after the alert was sent.
pub(crate) async fn accept<IO>(
    config: Arc<ServerConfig>,
    io: IO,
) -> Result<TlsStream<IO>, (io::Error, IO)>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = match UnbufferedServerConnection::new(config) {
        Ok(c) => c,
        Err(e) => return Err((tls_error(e), io)),
    };
    let mut stream = TlsStream {
        io,
        conn,
        incoming: Vec::new(),
        plain: Vec::new(),
        plain_at: 0,
        outgoing: Vec::new(),
        out_at: 0,
        peer_closed: false,
        close_sent: false,
        failed: false,
    };
    match std::future::poll_fn(|cx| stream.poll_handshake(cx)).await {
        Ok(()) => Ok(stream),
        Err(e) => Err((e, stream.io)),
    }
}

/// What one socket read brought.
enum Got {
    /// Bytes, processed.
    Bytes,
    /// The end of the TCP stream.
    End,
}

impl<IO> TlsStream<IO> {
    /// The stream it runs on and the rustls connection (for what the
    /// handshake negotiated).
    pub(crate) fn get_ref(&self) -> (&IO, &UnbufferedServerConnection) {
        (&self.io, &self.conn)
    }

    /// The stream it runs on, mutably, and the rustls connection.
    pub(crate) fn get_mut(&mut self) -> (&mut IO, &UnbufferedServerConnection) {
        (&mut self.io, &self.conn)
    }

    /// Hands out decrypted bytes not read yet; false if there are none.
    fn take_plain(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.plain_at >= self.plain.len() {
            return false;
        }
        let n = (self.plain.len() - self.plain_at).min(buf.remaining());
        buf.put_slice(&self.plain[self.plain_at..self.plain_at + n]);
        self.plain_at += n;
        if self.plain_at == self.plain.len() {
            self.plain = Vec::new();
            self.plain_at = 0;
        }
        true
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Bounded by the client: each pass reads from it or returns.
        loop {
            // What rustls wrote goes out before it waits for the client.
            ready!(self.poll_write_out(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.poll_records(cx, None)) {
                Ok(Got::Bytes) => {}
                Ok(Got::End) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "tls handshake eof",
                    )));
                }
                Err(e) => {
                    // One last try to send the alert; the error is the
                    // handshake's, not the write's.
                    let _ = self.poll_write_out(cx);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }

    /// Reads once from the socket and runs rustls over what came (with
    /// the partial record kept from before). Decrypted bytes go to `dst`
    /// as far as it has room, the rest is kept for the next read.
    fn poll_records(
        &mut self,
        cx: &mut Context<'_>,
        mut dst: Option<&mut ReadBuf<'_>>,
    ) -> Poll<io::Result<Got>> {
        if self.failed {
            return Poll::Ready(Err(failed()));
        }
        let have = self.incoming.len();
        if have > MAX_PENDING {
            return Poll::Ready(Err(tls_error(rustls::Error::General(
                "the client sent a TLS message larger than 64 KiB".into(),
            ))));
        }
        with_scratch(have + MAX_RECORD, |scratch| {
            let (kept, room) = scratch.split_at_mut(have);
            let mut rb = ReadBuf::new(room);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(Got::End));
            }
            kept.copy_from_slice(&self.incoming);
            let data = &mut scratch[..have + n];
            let (plain, plain_at) = (&mut self.plain, self.plain_at);
            let mut sink = |p: &[u8]| {
                let mut p = p;
                if plain.len() == plain_at
                    && let Some(d) = dst.as_deref_mut()
                {
                    let n = p.len().min(d.remaining());
                    d.put_slice(&p[..n]);
                    p = &p[n..];
                }
                plain.extend_from_slice(p);
            };
            let r = drive(&mut self.conn, &mut self.outgoing, data, &mut sink);
            let done = match r {
                Ok((done, stop)) => {
                    if let Stop::PeerClosed = stop {
                        self.peer_closed = true;
                    }
                    done
                }
                Err(e) => {
                    self.failed = true;
                    self.incoming = Vec::new();
                    return Poll::Ready(Err(tls_error(e)));
                }
            };
            let rest = &data[done..];
            if rest.is_empty() {
                self.incoming = Vec::new();
            } else {
                self.incoming.clear();
                self.incoming.extend_from_slice(rest);
            }
            Poll::Ready(Ok(Got::Bytes))
        })
    }

    /// Writes what is queued in `outgoing`; `Ready(Ok)` once all of it is
    /// out (and the buffer freed).
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.out_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_at += n;
        }
        if !self.outgoing.is_empty() {
            self.outgoing = Vec::new();
            self.out_at = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Encrypts `data` (or, with `close`, a close_notify) into `outgoing`.
    fn encrypt(&mut self, data: &[u8], close: bool) -> io::Result<()> {
        if self.failed {
            return Err(failed());
        }
        // Bounded: each pass handles one state; rustls gives WriteTraffic
        // once nothing else is queued.
        for _ in 0..16 {
            // The partial record kept is given again: rustls's view of the
            // received bytes stays whole. It holds no complete record.
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let state = match state {
                Ok(s) => s,
                Err(e) => {
                    queue_alerts(
                        &mut self.conn,
                        &mut self.outgoing,
                        &mut self.incoming[discard..],
                        &e,
                    );
                    self.failed = true;
                    self.incoming = Vec::new();
                    return Err(tls_error(e));
                }
            };
            match state {
                ConnectionState::WriteTraffic(mut w) => {
                    let guess = data.len() + RECORD_OVERHEAD * (1 + data.len() / (1 << 14));
                    let r = if close {
                        append(
                            &mut self.outgoing,
                            guess,
                            |b| w.queue_close_notify(b),
                            encrypt_too_small,
                        )
                    } else {
                        append(
                            &mut self.outgoing,
                            guess,
                            |b| w.encrypt(data, b),
                            encrypt_too_small,
                        )
                    };
                    if discard > 0 {
                        self.incoming.drain(..discard);
                    }
                    return r
                        .map_err(|e| io::Error::other(format!("encrypting a TLS record: {e}")));
                }
                ConnectionState::EncodeTlsData(mut e) => {
                    append(&mut self.outgoing, 1024, |b| e.encode(b), encode_too_small)
                        .map_err(|e| tls_error(encode_failed(e)))?;
                }
                ConnectionState::TransmitTlsData(t) => t.done(),
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(record) = r.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        self.plain.extend_from_slice(record.payload);
                    }
                }
                ConnectionState::PeerClosed => self.peer_closed = true,
                ConnectionState::Closed => return Err(io::ErrorKind::BrokenPipe.into()),
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        format!("TLS connection cannot send in state {other:?}"),
                    ));
                }
            }
            if discard > 0 {
                self.incoming.drain(..discard);
            }
        }
        Err(io::Error::other("TLS connection did not become writable"))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Bounded by the client: each pass reads from it or returns.
        loop {
            if this.take_plain(buf) || this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            // What rustls answered on its own (an alert) goes out; a full
            // socket does not stop reading.
            if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
                return Poll::Ready(Err(e));
            }
            let before = buf.filled().len();
            match ready!(this.poll_records(cx, Some(buf)))? {
                Got::Bytes if buf.filled().len() > before => return Poll::Ready(Ok(())),
                Got::Bytes => {}
                Got::End => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed connection without sending TLS close_notify",
                    )));
                }
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Bytes not yet written go first: the socket sets the pace.
        ready!(this.poll_write_out(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(MAX_WRITE);
        this.encrypt(&buf[..n], false)?;
        // The bytes are taken: a full socket only delays them.
        if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper hands a response as head, body and chunk framing: one
        // record for all of it up to a record's size, not one each.
        let Some(first) = bufs.iter().position(|b| !b.is_empty()) else {
            return Poll::Ready(Ok(0));
        };
        let bufs = &bufs[first..];
        if bufs.len() == 1 || bufs[0].len() >= 1 << 14 {
            return self.poll_write(cx, &bufs[0]);
        }
        let len = bufs.iter().map(|b| b.len()).sum::<usize>().min(1 << 14);
        with_scratch(len, |joined| {
            let mut at = 0;
            for b in bufs {
                let take = b.len().min(len - at);
                joined[at..at + take].copy_from_slice(&b[..take]);
                at += take;
            }
            self.poll_write(cx, joined)
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.close_sent = true;
            // As rustls's send_close_notify: nothing to do on a connection
            // that cannot send any more.
            let _ = this.encrypt(&[], true);
        }
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// A client's stream that sends one byte per write: every record,
    /// the ClientHello included, reaches the server in pieces.
    struct Trickle(DuplexStream);

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let one = &buf[..buf.len().min(1)];
            Pin::new(&mut self.0).poll_write(cx, one)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    fn configs() -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["gw.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![der.clone()],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    #[tokio::test]
    async fn records_in_pieces_and_bodies_larger_than_a_record_pass_and_close_cleanly() {
        let (server_cfg, client_cfg) = configs();
        let (c, s) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            let Ok(mut tls) = accept(server_cfg, s).await else {
                panic!("handshake failed");
            };
            let mut got = Vec::new();
            tls.read_to_end(&mut got).await.unwrap();
            // Answered with a head and a body in one vectored write, then
            // the body again in one write larger than a record.
            let head = format!("{}\r\n", got.len());
            let bufs = [
                io::IoSlice::new(head.as_bytes()),
                io::IoSlice::new(&got[..100]),
            ];
            let n = tls.write_vectored(&bufs).await.unwrap();
            assert_eq!(n, head.len() + 100, "one record for both slices");
            tls.write_all(&got).await.unwrap();
            tls.shutdown().await.unwrap();
            // Nothing is kept once everything is read and written.
            assert!(tls.incoming.is_empty() && tls.outgoing.capacity() == 0);
            assert_eq!(tls.plain.capacity(), 0);
        });
        let connector = tokio_rustls::TlsConnector::from(client_cfg);
        let name = ServerName::try_from("gw.test").unwrap();
        let mut client = connector.connect(name, Trickle(c)).await.unwrap();
        let body: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&body).await.unwrap();
        client.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        let head = b"40000\r\n";
        assert_eq!(&back[..head.len()], head);
        assert_eq!(&back[head.len()..head.len() + 100], &body[..100]);
        assert_eq!(&back[head.len() + 100..], &body[..]);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_tcp_end_without_close_notify_is_an_unexpected_eof_and_a_refusal_sends_its_alert() {
        let (server_cfg, client_cfg) = configs();
        let (c, s) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            let Ok(mut tls) = accept(server_cfg.clone(), s).await else {
                panic!("handshake failed");
            };
            let mut buf = [0u8; 16];
            let n = tls.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"hi");
            let e = tls.read(&mut buf).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        });
        let connector = tokio_rustls::TlsConnector::from(client_cfg);
        let name = ServerName::try_from("gw.test").unwrap();
        let mut client = connector.connect(name, c).await.unwrap();
        client.write_all(b"hi").await.unwrap();
        client.flush().await.unwrap();
        drop(client.into_inner().0);
        server.await.unwrap();

        // Not TLS at all: rustls's refusal comes back as a rustls::Error,
        // after its alert went out.
        let (mut c, s) = tokio::io::duplex(4096);
        let (server_cfg, _) = configs();
        let server = tokio::spawn(async move { accept(server_cfg, s).await.map(|_| ()) });
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let Err((e, _)) = server.await.unwrap() else {
            panic!("plain HTTP was accepted");
        };
        assert!(
            e.get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .is_some()
        );
        let mut alert = Vec::new();
        c.read_to_end(&mut alert).await.unwrap();
        assert_eq!(alert.first(), Some(&21), "an alert record: {alert:?}");

        // A record that does not decrypt: one bad_record_mac alert (rustls
        // is not asked again about the same record), then the end.
        let (server_cfg, client_cfg) = configs();
        let (c, s) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            let Ok(mut tls) = accept(server_cfg, s).await else {
                panic!("handshake failed");
            };
            let mut buf = [0u8; 16];
            let e = tls.read(&mut buf).await.unwrap_err();
            let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
            assert_eq!(inner, Some(&rustls::Error::DecryptError));
            assert_eq!(
                tls.read(&mut buf).await.unwrap_err().kind(),
                io::ErrorKind::BrokenPipe
            );
            tls.shutdown().await.unwrap();
        });
        let connector = tokio_rustls::TlsConnector::from(client_cfg);
        let name = ServerName::try_from("gw.test").unwrap();
        let client = connector.connect(name, c).await.unwrap();
        let mut raw = client.into_inner().0;
        let mut forged = vec![23, 3, 3, 0, 40];
        forged.extend_from_slice(&[0x5a; 40]);
        raw.write_all(&forged).await.unwrap();
        server.await.unwrap();
        let mut back = Vec::new();
        raw.read_to_end(&mut back).await.unwrap();
        // One encrypted alert record: header, explicit nonce, 2 bytes, tag.
        assert_eq!(back.len(), 5 + 8 + 2 + 16, "{back:?}");
        assert_eq!(back[0], 21);
    }
}
