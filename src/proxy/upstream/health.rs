//! Active health checks: one task per server, a fresh connection and
//! `GET path` each interval.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::HealthCheckSettings;

use super::server::Server;

/// Checks one server every `interval` until the upstream is dropped.
pub(super) async fn health_loop(server: Arc<Server>, h: HealthCheckSettings) {
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
