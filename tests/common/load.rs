//! Continuous load: clients that keep requesting through a reload or a
//! handover and count what failed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;

use super::*;

/// Background load on one gateway address: keep-alive clients that each
/// keep one connection and send requests back to back, plus a client that
/// opens a new mTLS connection every few milliseconds.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    pub ok: Arc<std::sync::atomic::AtomicU64>,
    pub reconnects: Arc<std::sync::atomic::AtomicU64>,
    pub failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the load. With `reconnect`, a keep-alive client whose
    /// connection the server closed (between requests, as a draining server
    /// does) opens a new one and retries its GET once, as device agents and
    /// curl do; without it, any closed connection is a failure.
    pub async fn start(
        addr: SocketAddr,
        cfg: Arc<rustls::ClientConfig>,
        keepalive: usize,
        new_conn_every: Duration,
        reconnect: bool,
    ) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let reconnects = Arc::new(AtomicU64::new(0));
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut tasks = Vec::new();
        for i in 0..keepalive {
            let (stop, ok, reconnects, failures, cfg) = (
                stop.clone(),
                ok.clone(),
                reconnects.clone(),
                failures.clone(),
                cfg.clone(),
            );
            let mut sender = h1_sender(addr, cfg.clone()).await.unwrap();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < 1_000_000 {
                    n += 1;
                    let mut attempts = 0;
                    loop {
                        attempts += 1;
                        if reconnect && (sender.is_closed() || sender.ready().await.is_err()) {
                            reconnects.fetch_add(1, Ordering::Relaxed);
                            match h1_sender(addr, cfg.clone()).await {
                                Ok(s) => sender = s,
                                Err(e) => {
                                    failures
                                        .lock()
                                        .unwrap()
                                        .push(format!("client {i}: reconnect: {e}"));
                                    return;
                                }
                            }
                        }
                        let req = Request::get(format!("/ka/{i}/{n}"))
                            .header("host", "localhost")
                            .body(empty())
                            .unwrap();
                        let r = tokio::time::timeout(Duration::from_secs(20), async {
                            let resp = sender.send_request(req).await?;
                            let status = resp.status();
                            let body = resp.into_body().collect().await?.to_bytes();
                            Ok::<_, BoxError>((status, body))
                        })
                        .await;
                        match r {
                            Ok(Ok((s, b))) if s == 200 && &b[..] == b"ok" => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Ok(Err(e))
                                if reconnect && attempts == 1 && closed_before_response(&e) =>
                            {
                                continue;
                            }
                            other => {
                                let what = match other {
                                    Ok(Ok((s, _))) => format!("status {s}"),
                                    Ok(Err(e)) => format!("error {e}"),
                                    Err(_) => "timed out".into(),
                                };
                                failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("keep-alive client {i}, request {n}: {what}"));
                                return;
                            }
                        }
                    }
                }
            }));
        }
        let (stop2, ok2, failures2) = (stop.clone(), ok.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) && n < 1_000_000 {
                n += 1;
                match tokio::time::timeout(
                    Duration::from_secs(20),
                    get(addr, cfg.clone(), &format!("/new/{n}"), &[]),
                )
                .await
                {
                    Ok(Ok((s, _))) if s == 200 => {
                        ok2.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        let what = match other {
                            Ok(Ok((s, _))) => format!("status {s}"),
                            Ok(Err(e)) => format!("error {e}"),
                            Err(_) => "timed out".into(),
                        };
                        failures2
                            .lock()
                            .unwrap()
                            .push(format!("new connection {n}: {what}"));
                    }
                }
                tokio::time::sleep(new_conn_every).await;
            }
        }));
        Load {
            stop,
            ok,
            reconnects,
            failures,
            tasks,
        }
    }

    pub fn ok(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the load and returns (successful requests, failures).
    pub async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        let f = self.failures.lock().unwrap().clone();
        (self.ok.load(std::sync::atomic::Ordering::Relaxed), f)
    }
}

/// True when a request failed because the server had closed the
/// connection before answering (the keep-alive race every HTTP/1 client
/// handles by retrying an idempotent request on a new connection).
pub fn closed_before_response(e: &BoxError) -> bool {
    e.downcast_ref::<hyper::Error>()
        .is_some_and(|h| h.is_incomplete_message() || h.is_canceled() || h.is_closed())
}
