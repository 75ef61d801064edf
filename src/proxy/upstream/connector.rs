//! Connecting to one backend server: the connect timeout, and the typed
//! error a failed connect leaves.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// The backend server a response came from, attached to the response's
/// extensions (for the access log).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerAddr(pub SocketAddr);

/// Why one connect attempt failed.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// The server refused or reset the connection, or the host is unreachable.
    Failed(std::io::Error),
    /// The connect timeout passed.
    TimedOut,
}

/// A server did not accept a connection.
#[derive(Debug)]
pub(crate) struct ConnectError {
    /// The server.
    pub server: SocketAddr,
    /// Why.
    pub error: AttemptError,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            AttemptError::Failed(io) => write!(f, "{}: {io}", self.server),
            AttemptError::TimedOut => write!(f, "{}: connect timed out", self.server),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Connects to one backend server within `connect_timeout`.
pub(super) async fn connect(
    server: SocketAddr,
    connect_timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    match tokio::time::timeout(connect_timeout, TcpStream::connect(server)).await {
        Ok(Ok(stream)) => {
            // Small request heads and responses must not wait for Nagle;
            // hyper already coalesces its writes.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(ConnectError {
            server,
            error: AttemptError::Failed(e),
        }),
        Err(_) => Err(ConnectError {
            server,
            error: AttemptError::TimedOut,
        }),
    }
}
