//! One backend server: its pool, its requests in flight, and whether it
//! is in rotation (the health check's verdict, passive ejection after
//! failed connects).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use prometheus_client::metrics::gauge::Gauge;
use tracing::{info, warn};

use crate::config::{HealthCheckSettings, UpstreamSettings};

use super::conns::Conns;

/// One backend server of an upstream: its pool and whether it is in
/// rotation.
pub(crate) struct Server {
    /// Its address.
    pub addr: SocketAddr,
    /// The kept-alive HTTP/1.1 connections to this server.
    pub conns: Arc<Conns>,
    pub(super) upstream: String,
    pub(super) in_flight: AtomicUsize,
    /// The active health check's verdict (true without health checks).
    pub(super) healthy: AtomicBool,
    /// Consecutive connect failures seen by requests.
    pub(super) fails: AtomicU32,
    /// Out of rotation until this many ms after `epoch` (passive ejection).
    pub(super) ejected_until_ms: AtomicU64,
    pub(super) epoch: Instant,
    /// `certgate_upstream_server_up`.
    pub(super) up: Option<Gauge>,
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
    pub(super) fn now_ms(&self) -> u64 {
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

    pub(super) fn set_up(&self, up: bool) {
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
    pub(super) fn back_in(&self, health: Option<&HealthCheckSettings>) -> u64 {
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
    pub(super) fn checked(
        &self,
        h: &HealthCheckSettings,
        streak: &mut (u32, u32),
        problem: Option<String>,
    ) {
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
