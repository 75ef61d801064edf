//! One upstream: its servers built from the settings (carrying verdicts
//! over a reload), its slots, the pick of a server per attempt, the
//! readiness probe.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;

use crate::config::{Strategy, UpstreamSettings};

use super::conns::{Conns, reap_loop};
use super::health::health_loop;
use super::pick::{Pick, choose};
use super::server::Server;

/// Aborts the health check and idle-connection tasks when the upstream is
/// dropped (replaced by a reload or shut down).
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
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
    /// Slots for requests in flight (`max_connections`); `None` = no limit.
    /// Kept across reloads with the rest of an unchanged upstream.
    pub slots: Option<Arc<tokio::sync::Semaphore>>,
    servers: Vec<Arc<Server>>,
    next: AtomicUsize,
    _tasks: Option<Tasks>,
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
        // The name once went into request URIs; it is still held to what
        // an authority may be, so a config valid before stays valid and
        // one refused stays refused.
        http::uri::Authority::try_from(settings.name.as_str())?;
        let mut up = up.into_iter();
        let epoch = Instant::now();
        let servers: Vec<Arc<Server>> = settings
            .servers
            .iter()
            .map(|&addr| {
                let conns = Arc::new(Conns::new(
                    addr,
                    settings.connect_timeout,
                    settings.pool_idle_timeout,
                    settings.pool_max_idle,
                ));
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
                    conns,
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
        let tasks = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let reapers = servers.iter().map(|s| {
                rt.spawn(reap_loop(
                    Arc::downgrade(&s.conns),
                    settings.pool_idle_timeout / 2,
                ))
            });
            let health = settings.health_check.iter().flat_map(|h| {
                servers
                    .iter()
                    .map(|s| rt.spawn(health_loop(s.clone(), h.clone())))
            });
            Tasks(reapers.chain(health).collect())
        });
        Ok(Upstream {
            settings: settings.clone(),
            slots: (settings.max_connections > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(settings.max_connections))),
            servers,
            next: AtomicUsize::new(0),
            _tasks: tasks,
        })
    }

    /// The servers, in config order.
    pub(crate) fn servers(&self) -> &[Arc<Server>] {
        &self.servers
    }

    /// Picks a server for the next attempt of a request. `tried` has bit
    /// `i` set for every server this request already tried.
    pub(crate) fn pick(&self, tried: u64) -> Pick {
        // Only the strategies that rotate advance the position.
        let start = match self.settings.strategy {
            Strategy::Failover => 0,
            Strategy::RoundRobin | Strategy::LeastConn => self.next.fetch_add(1, Ordering::Relaxed),
        };
        let found = choose(
            self.settings.strategy,
            self.servers.len(),
            start,
            tried,
            |i| self.servers[i].available(),
            |i| self.servers[i].in_flight.load(Ordering::Relaxed),
        );
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
