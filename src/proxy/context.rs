//! What every request of a connection reads: the listener, the client's
//! address and admitted identity, idle tracking, the stop and drain
//! signals, the TLS session for the access log.

use std::net::SocketAddr;
use std::sync::Arc;

use super::activity::Activity;
use super::headers::ClientFacts;
use super::lifeline::Lifeline;
use super::recheck::Admission;
use super::state::ListenerShared;

/// Per-connection state the service reads on every request.
#[derive(Debug)]
pub(super) struct ConnContext {
    /// The listener; each request reads its current state (upstream,
    /// metrics), so a reload that changes the upstream applies to the next
    /// request on a keep-alive connection.
    pub shared: Arc<ListenerShared>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Client facts turned into headers.
    pub facts: ClientFacts,
    /// Idle tracking shared with the connection task.
    pub activity: Arc<Activity>,
    /// What the client was admitted with; upgraded tunnels watch it too.
    pub admission: Admission,
    /// The listener's stop signal and drain guard; tunnels take a copy.
    pub lifeline: Lifeline,
    /// The TLS session, for the access log; `None` on plain HTTP.
    pub tls: Option<TlsInfo>,
    /// Framing problems seen in the raw request heads.
    pub framing: Arc<super::framing::Framing>,
}

/// What the access log says about a connection's TLS session.
#[derive(Debug, Clone, Copy)]
pub(super) struct TlsInfo {
    /// `1.2` or `1.3`.
    pub version: &'static str,
    /// Cipher suite name.
    pub cipher: &'static str,
    /// Handshake duration, ms.
    pub handshake_ms: f64,
    /// The HTTP version the client chose by ALPN.
    pub alpn: Alpn,
}

/// The HTTP version a client chose in its TLS handshake (ALPN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alpn {
    /// `http/1.1`.
    Http1,
    /// `h2`.
    Http2,
    /// No ALPN (or a protocol certgate does not offer): the first bytes tell.
    None,
}
