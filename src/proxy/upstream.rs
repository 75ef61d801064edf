//! Backend servers of one `[[upstream]]`: a pooled hyper-util HTTP/1.1
//! client whose connector fails over between the configured servers.
//!
//! The pool is keyed by the upstream's name (the URI authority we give the
//! client), so all servers of an upstream share one pool. The connector
//! tries the servers in order; a connect failure is retried on the next
//! server, which is always safe because no byte of the request was sent.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use prometheus_client::metrics::gauge::Gauge;

use crate::config::UpstreamSettings;

/// The backend server a response came from, attached to the response's
/// extensions by the connector (for the access log and per-server metrics).
#[derive(Debug, Clone, Copy)]
pub struct ServerAddr(pub SocketAddr);

/// Why one connect attempt failed.
#[derive(Debug)]
pub enum AttemptError {
    /// The server refused or reset the connection, or the host is unreachable.
    Failed(std::io::Error),
    /// The connect timeout passed.
    TimedOut,
}

/// No server of an upstream accepted a connection.
#[derive(Debug)]
pub struct ConnectError {
    /// The upstream name.
    pub upstream: String,
    /// Every server tried and why it failed, in order.
    pub attempts: Vec<(SocketAddr, AttemptError)>,
}

impl ConnectError {
    /// True when every attempt timed out (a gateway timeout rather than a
    /// refusal).
    pub fn all_timed_out(&self) -> bool {
        !self.attempts.is_empty()
            && self
                .attempts
                .iter()
                .all(|(_, e)| matches!(e, AttemptError::TimedOut))
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream \"{}\": no server reachable:", self.upstream)?;
        for (i, (addr, e)) in self.attempts.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            match e {
                AttemptError::Failed(io) => write!(f, "{sep}{addr}: {io}")?,
                AttemptError::TimedOut => write!(f, "{sep}{addr}: connect timed out")?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConnectError {}

/// Connects to the first reachable server of an upstream.
#[derive(Clone)]
pub struct FailoverConnector {
    inner: Arc<ConnectorInner>,
}

struct ConnectorInner {
    upstream: String,
    servers: Vec<SocketAddr>,
    connect_timeout: Duration,
    /// `certgate_upstream_server_up` of each server: 1 after a successful
    /// connect, 0 after a failed one.
    up: Vec<Gauge>,
}

impl tower_service::Service<Uri> for FailoverConnector {
    type Response = UpstreamStream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamStream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _dst: Uri) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut attempts = Vec::new();
            for (i, &server) in inner.servers.iter().enumerate() {
                let r =
                    tokio::time::timeout(inner.connect_timeout, TcpStream::connect(server)).await;
                if let Some(g) = inner.up.get(i) {
                    g.set(i64::from(matches!(r, Ok(Ok(_)))));
                }
                match r {
                    Ok(Ok(stream)) => {
                        // Small request heads and responses must not wait for
                        // Nagle; hyper already coalesces its writes.
                        let _ = stream.set_nodelay(true);
                        return Ok(UpstreamStream {
                            io: TokioIo::new(stream),
                            server,
                        });
                    }
                    Ok(Err(e)) => attempts.push((server, AttemptError::Failed(e))),
                    Err(_) => attempts.push((server, AttemptError::TimedOut)),
                }
            }
            Err(ConnectError {
                upstream: inner.upstream.clone(),
                attempts,
            })
        })
    }
}

/// A TCP connection to one backend server, remembering which.
pub struct UpstreamStream {
    io: TokioIo<TcpStream>,
    server: SocketAddr,
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        Connected::new().extra(ServerAddr(self.server))
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

/// One upstream: its settings and its pooled client.
pub struct Upstream {
    /// Settings it was built from.
    pub settings: UpstreamSettings,
    /// The authority used in outgoing request URIs (the upstream name); it
    /// keys the connection pool and is never sent as Host.
    pub authority: http::uri::Authority,
    /// The pooled HTTP/1.1 client.
    pub client: Client<FailoverConnector, super::service::CountedBody>,
    /// Slots for requests in flight (`max_connections`); `None` = no limit.
    /// Kept across reloads with the rest of an unchanged upstream.
    pub slots: Option<Arc<tokio::sync::Semaphore>>,
    connector: Arc<ConnectorInner>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.settings.name)
            .field("servers", &self.settings.servers)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the client for `settings`. Names were validated to be legal
    /// URI authorities.
    pub fn new(
        settings: &UpstreamSettings,
        up: Vec<Gauge>,
    ) -> Result<Upstream, http::uri::InvalidUri> {
        let authority = http::uri::Authority::try_from(settings.name.as_str())?;
        let inner = Arc::new(ConnectorInner {
            upstream: settings.name.clone(),
            servers: settings.servers.clone(),
            connect_timeout: settings.connect_timeout,
            up,
        });
        let connector = FailoverConnector {
            inner: inner.clone(),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            // We set Host ourselves from what the client sent.
            .set_host(false)
            .build(connector);
        Ok(Upstream {
            settings: settings.clone(),
            authority,
            client,
            slots: (settings.max_connections > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(settings.max_connections))),
            connector: inner,
        })
    }

    /// Tries a TCP connection to every server (at most 1 s each) and
    /// records the result in the server gauges; which are up.
    pub async fn probe(&self) -> Vec<(SocketAddr, bool)> {
        let limit = self.settings.connect_timeout.min(Duration::from_secs(1));
        let mut out = Vec::new();
        for (i, &server) in self.settings.servers.iter().enumerate() {
            let ok = matches!(
                tokio::time::timeout(limit, TcpStream::connect(server)).await,
                Ok(Ok(_))
            );
            if let Some(g) = self.connector.up.get(i) {
                g.set(i64::from(ok));
            }
            out.push((server, ok));
        }
        out
    }

    /// The server a response would have come from when it cannot be known
    /// (e.g. a timeout on a pooled connection): exact for one server.
    pub fn servers_display(&self) -> String {
        match self.settings.servers.as_slice() {
            [one] => one.to_string(),
            many => format!(
                "one of {}",
                many.iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}
