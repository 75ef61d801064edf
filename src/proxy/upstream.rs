//! Backend servers of one `[[upstream]]`: which server a request goes to
//! (strategy), which servers are in rotation (active health checks and
//! passive ejection on connect failures), and one pooled hyper-util
//! HTTP/1.1 client per server.
//!
//! A pool per server, not one for the upstream: the strategy must decide
//! where a request goes, and a shared pool would hand out whichever idle
//! connection it has. Retrying on another server is decided by the caller
//! (`service.rs`), which knows whether any byte of the request was sent.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;
use tracing::{info, warn};

use crate::config::{HealthCheckSettings, Strategy, UpstreamSettings};

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
    server: SocketAddr,
    connect_timeout: Duration,
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

/// One backend server of an upstream: its pool and whether it is in
/// rotation.
pub(crate) struct Server {
    /// Its address.
    pub addr: SocketAddr,
    /// The pooled HTTP/1.1 client to this server only.
    pub client: Client<ServerConnector, super::body::CountedBody>,
    upstream: String,
    in_flight: AtomicUsize,
    /// The active health check's verdict (true without health checks).
    healthy: AtomicBool,
    /// Consecutive connect failures seen by requests.
    fails: AtomicU32,
    /// Out of rotation until this many ms after `epoch` (passive ejection).
    ejected_until_ms: AtomicU64,
    epoch: Instant,
    /// `certgate_upstream_server_up`.
    up: Option<Gauge>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("healthy", &self.healthy.load(Ordering::Relaxed))
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Server {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// In rotation: healthy and not ejected.
    pub(crate) fn available(&self) -> bool {
        if !self.healthy.load(Ordering::Acquire) {
            return false;
        }
        // Never ejected (the usual case): no clock read per request.
        let until = self.ejected_until_ms.load(Ordering::Acquire);
        until == 0 || self.now_ms() >= until
    }

    /// Marks a request in flight to this server until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> ServerGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        ServerGuard(self.clone())
    }

    fn set_up(&self, up: bool) {
        if let Some(g) = &self.up {
            g.set(i64::from(up));
        }
    }

    /// The server answered a request: its failure streak ends.
    pub(crate) fn succeeded(&self) {
        if self.fails.load(Ordering::Relaxed) != 0 {
            self.fails.store(0, Ordering::Relaxed);
        }
        // After an ejection ran out, the first answer puts the gauge back.
        if self.up.as_ref().is_some_and(|g| g.get() == 0) && self.available() {
            self.set_up(true);
        }
    }

    /// A request could not reach the server (connect refused, reset or
    /// timed out, or the connection broke before the response head); at
    /// `max_fails` in a row it goes out of rotation for `fail_timeout`.
    pub(crate) fn failed(&self, settings: &UpstreamSettings, servers: usize) {
        let fails = self.fails.fetch_add(1, Ordering::AcqRel) + 1;
        // A lone server is never ejected (nginx does the same): there is
        // nothing to fail over to, and trying is the only way to see it
        // come back. Its health check can still take it out.
        if servers < 2 || settings.max_fails == 0 || fails < settings.max_fails {
            return;
        }
        let until = self.now_ms()
            + u64::try_from(settings.fail_timeout.as_millis()).unwrap_or(u64::MAX / 2);
        self.ejected_until_ms.store(until, Ordering::Release);
        self.fails.store(0, Ordering::Release);
        self.set_up(false);
        warn!(
            upstream = %self.upstream,
            server = %self.addr,
            consecutive_failures = fails,
            fail_timeout_s = settings.fail_timeout.as_secs_f64(),
            "upstream server taken out of rotation after failed connects; it gets traffic again after fail_timeout"
        );
    }

    /// Seconds until this server may be back in rotation (at least 1).
    fn back_in(&self, health: Option<&HealthCheckSettings>) -> u64 {
        let ejected = self
            .ejected_until_ms
            .load(Ordering::Acquire)
            .saturating_sub(self.now_ms());
        let mut ms = ejected;
        if !self.healthy.load(Ordering::Acquire)
            && let Some(h) = health
        {
            ms = ms.max(u64::try_from(h.interval.as_millis()).unwrap_or(u64::MAX / 2));
        }
        ms.div_ceil(1000).max(1)
    }

    /// Records one health check result; `problem` is `None` when it passed.
    fn checked(&self, h: &HealthCheckSettings, streak: &mut (u32, u32), problem: Option<String>) {
        let (passes, failures) = streak;
        match problem {
            None => {
                *passes = passes.saturating_add(1);
                *failures = 0;
                if !self.healthy.load(Ordering::Acquire) && *passes >= h.healthy_threshold {
                    self.healthy.store(true, Ordering::Release);
                    self.ejected_until_ms.store(0, Ordering::Release);
                    self.fails.store(0, Ordering::Release);
                    self.set_up(true);
                    info!(upstream = %self.upstream, server = %self.addr, path = %h.path,
                        passed = *passes, "upstream server passed its health checks; back in rotation");
                } else if self.ejected_until_ms.load(Ordering::Acquire) > self.now_ms() {
                    // A passive ejection ends early when the health check
                    // shows the server answering again.
                    self.ejected_until_ms.store(0, Ordering::Release);
                    self.fails.store(0, Ordering::Release);
                    self.set_up(true);
                    info!(upstream = %self.upstream, server = %self.addr,
                        "ejected upstream server passed a health check; back in rotation");
                }
            }
            Some(why) => {
                *failures = failures.saturating_add(1);
                *passes = 0;
                if self.healthy.load(Ordering::Acquire) && *failures >= h.unhealthy_threshold {
                    self.healthy.store(false, Ordering::Release);
                    self.set_up(false);
                    warn!(upstream = %self.upstream, server = %self.addr, path = %h.path,
                        failed = *failures, problem = %why,
                        "upstream server failed its health checks; out of rotation until it passes again");
                }
            }
        }
    }
}

/// A request in flight to a server (for `least_conn`); released when the
/// response body is done.
#[derive(Debug)]
pub(crate) struct ServerGuard(Arc<Server>);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Which server a request should try next.
#[derive(Debug)]
pub(crate) enum Pick {
    /// This one (index into [`Upstream::servers`]).
    Server(usize),
    /// Every server is out of rotation; retry after this many seconds.
    AllDown {
        /// Seconds until the first server may be back.
        retry_after: u64,
    },
    /// Every server in rotation was tried for this request.
    Exhausted,
}

/// Aborts the health check tasks when the upstream is dropped (replaced
/// by a reload or shut down).
struct HealthTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for HealthTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// One upstream: its settings, its servers and their pools.
pub(crate) struct Upstream {
    /// Settings it was built from.
    pub settings: UpstreamSettings,
    /// The authority used in outgoing request URIs (the upstream name); it
    /// is never sent as Host.
    pub authority: http::uri::Authority,
    /// Slots for requests in flight (`max_connections`); `None` = no limit.
    /// Kept across reloads with the rest of an unchanged upstream.
    pub slots: Option<Arc<tokio::sync::Semaphore>>,
    servers: Vec<Arc<Server>>,
    next: AtomicUsize,
    _health: Option<HealthTasks>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.settings.name)
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the clients for `settings` and, inside a Tokio runtime,
    /// starts its health checks. `up` are the servers' gauges, in order.
    /// `previous` is the upstream of the same name this one replaces (a
    /// reload that changed its settings): a server it also had keeps its
    /// verdict, so a server known to be down is not put back in rotation
    /// by an unrelated edit (HAProxy keeps it with its server-state file).
    pub(crate) fn new(
        settings: &UpstreamSettings,
        up: Vec<Gauge>,
        previous: Option<&Upstream>,
    ) -> Result<Upstream, http::uri::InvalidUri> {
        let authority = http::uri::Authority::try_from(settings.name.as_str())?;
        let mut up = up.into_iter();
        let epoch = Instant::now();
        let servers: Vec<Arc<Server>> = settings
            .servers
            .iter()
            .map(|&addr| {
                let connector = ServerConnector {
                    server: addr,
                    connect_timeout: settings.connect_timeout,
                };
                let client = Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(settings.pool_idle_timeout)
                    .pool_max_idle_per_host(settings.pool_max_idle)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    // We set Host ourselves from what the client sent.
                    .set_host(false)
                    .build(connector);
                let before = previous.and_then(|p| p.servers.iter().find(|s| s.addr == addr));
                // The health verdict carries over only while there is a
                // health check to revise it; a passive ejection runs out
                // by itself, so it always carries over.
                let healthy = match (before, &settings.health_check) {
                    (Some(b), Some(_)) => b.healthy.load(Ordering::Acquire),
                    _ => true,
                };
                let server = Server {
                    addr,
                    client,
                    upstream: settings.name.clone(),
                    in_flight: AtomicUsize::new(0),
                    healthy: AtomicBool::new(healthy),
                    fails: AtomicU32::new(before.map_or(0, |b| b.fails.load(Ordering::Acquire))),
                    ejected_until_ms: AtomicU64::new(
                        before.map_or(0, |b| b.ejected_until_ms.load(Ordering::Acquire)),
                    ),
                    epoch: before.map_or(epoch, |b| b.epoch),
                    up: up.next(),
                };
                server.set_up(server.available());
                Arc::new(server)
            })
            .collect();
        let health = match (
            &settings.health_check,
            tokio::runtime::Handle::try_current(),
        ) {
            (Some(h), Ok(rt)) => Some(HealthTasks(
                servers
                    .iter()
                    .map(|s| rt.spawn(health_loop(s.clone(), h.clone())))
                    .collect(),
            )),
            _ => None,
        };
        Ok(Upstream {
            settings: settings.clone(),
            authority,
            slots: (settings.max_connections > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(settings.max_connections))),
            servers,
            next: AtomicUsize::new(0),
            _health: health,
        })
    }

    /// The servers, in config order.
    pub(crate) fn servers(&self) -> &[Arc<Server>] {
        &self.servers
    }

    /// Picks a server for the next attempt of a request. `tried` has bit
    /// `i` set for every server this request already tried.
    pub(crate) fn pick(&self, tried: u64) -> Pick {
        let n = self.servers.len();
        let candidate = |i: usize| tried & (1u64 << i) == 0 && self.servers[i].available();
        let found = match self.settings.strategy {
            Strategy::Failover => (0..n).find(|&i| candidate(i)),
            Strategy::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|k| (start + k) % n).find(|&i| candidate(i))
            }
            Strategy::LeastConn => {
                // Ties go round-robin, or an idle upstream would send
                // everything to the first server.
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| (start + k) % n)
                    .filter(|&i| candidate(i))
                    .min_by_key(|&i| self.servers[i].in_flight.load(Ordering::Relaxed))
            }
        };
        match found {
            Some(i) => Pick::Server(i),
            None if tried == 0 => Pick::AllDown {
                retry_after: self
                    .servers
                    .iter()
                    .map(|s| s.back_in(self.settings.health_check.as_ref()))
                    .min()
                    .unwrap_or(1),
            },
            None => Pick::Exhausted,
        }
    }

    /// Which servers are up, for `/readyz`: the health check's verdict
    /// when there is one, else a TCP connect (at most 1 s each) whose
    /// result also sets the server gauge.
    pub(crate) async fn probe(&self) -> Vec<(SocketAddr, bool)> {
        let limit = self.settings.connect_timeout.min(Duration::from_secs(1));
        let mut out = Vec::new();
        for s in &self.servers {
            let ok = if self.settings.health_check.is_some() {
                s.available()
            } else {
                let ok = matches!(
                    tokio::time::timeout(limit, TcpStream::connect(s.addr)).await,
                    Ok(Ok(_))
                );
                s.set_up(ok && s.available());
                ok
            };
            out.push((s.addr, ok));
        }
        out
    }
}

/// Checks one server every `interval` until the upstream is dropped.
async fn health_loop(server: Arc<Server>, h: HealthCheckSettings) {
    let mut tick = tokio::time::interval(h.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut streak = (0u32, 0u32);
    loop {
        tick.tick().await;
        let problem = match tokio::time::timeout(h.timeout, check_once(server.addr, &h)).await {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(_) => Some(format!("no answer within {} ms", h.timeout.as_millis())),
        };
        server.checked(&h, &mut streak, problem);
    }
}

/// One health check: a fresh connection (never a pooled one, which could
/// hide a server that stopped accepting), `GET path`, 2xx or 3xx passes.
async fn check_once(addr: SocketAddr, h: &HealthCheckSettings) -> Result<(), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let conn = tokio::spawn(conn);
    let host = h.host.clone().unwrap_or_else(|| addr.to_string());
    let req = http::Request::get(h.path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "certgate-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let resp = sender.send_request(req).await;
    conn.abort();
    let resp = resp.map_err(|e| format!("HTTP: {e}"))?;
    let status = resp.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}
