//! Connecting to one backend server: the connector hyper-util's pool
//! calls, with the connect timeout, and the typed error a failed connect
//! leaves in the client's error chain.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
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

/// A server did not accept a connection (the connector's error; hyper-util
/// wraps it, the caller finds it in the error's sources).
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

/// Connects to one backend server.
#[derive(Clone)]
pub(crate) struct ServerConnector {
    pub(super) server: SocketAddr,
    pub(super) connect_timeout: Duration,
}

impl tower_service::Service<Uri> for ServerConnector {
    type Response = UpstreamStream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamStream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _dst: Uri) -> Self::Future {
        let ServerConnector {
            server,
            connect_timeout,
        } = *self;
        Box::pin(async move {
            match tokio::time::timeout(connect_timeout, TcpStream::connect(server)).await {
                Ok(Ok(stream)) => {
                    // Small request heads and responses must not wait for
                    // Nagle; hyper already coalesces its writes.
                    let _ = stream.set_nodelay(true);
                    Ok(UpstreamStream {
                        io: TokioIo::new(stream),
                    })
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
        })
    }
}

/// A TCP connection to one backend server.
pub(crate) struct UpstreamStream {
    io: TokioIo<TcpStream>,
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for UpstreamStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamStream {
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

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
