//! A gateway in the test process, and what a test reads from one (metrics,
//! conditions that become true).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::*;

/// Starts an in-process gateway from a config file.
pub async fn start_gateway(config: &Path) -> certgate::Gateway {
    let settings = certgate::Settings::load(config).unwrap();
    certgate::Gateway::start(settings).await.unwrap()
}

/// The current value of a metric line (exact label match) on the admin
/// endpoint, or 0 if absent.
pub fn metric(gw: &certgate::Gateway, line_prefix: &str) -> f64 {
    gw.metrics
        .encode()
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Whether a metric line reaches `min` within 2 s. For counters the
/// gateway bumps just after the client saw the outcome (a refused
/// handshake's alert is read by the client before the gateway counts it).
pub async fn metric_at_least(gw: &certgate::Gateway, line_prefix: &str, min: f64) -> bool {
    eventually(Duration::from_secs(2), || metric(gw, line_prefix) >= min).await
}

/// Waits (bounded) until `cond` holds; whether it did.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// The value of a metric line scraped from a running process's admin API.
pub async fn scraped(admin: SocketAddr, line_prefix: &str) -> f64 {
    let (_, text) = http_plain(admin, "GET", "/metrics").await.unwrap();
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
