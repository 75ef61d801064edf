//! Memory of the TLS 1.2 session-ID cache, which is how agents without
//! ticket support resume: Windows 7 SChannel, Java 8, Safari. The bench
//! starts the certgate binary twice with `session_tickets = false`: once
//! with `session_cache = 0` and once with a cache as large as the fleet.
//! Each run makes `SESSIONS` full handshakes of distinct sessions, and the
//! bench reports how much more the process holds with the cache: the cost
//! per cached session. A cached TLS 1.2 session keeps the client's
//! certificate chain, so the device certificate's size matters. Run it with
//! an ECDSA device (the default) and with `SESSION_RSA=1`.
//!
//! Run: `cargo bench --bench session_cache` (SESSIONS=50000 by default,
//! about a minute). Loopback only; every loop is bounded by SESSIONS.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::*;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sessions: usize = std::env::var("SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let rsa = std::env::var("SESSION_RSA").is_ok_and(|v| v == "1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(sessions, rsa));
}

/// Server RSS growth (KiB) over `n` full handshakes with `cache` entries.
async fn growth(
    pki: &Pki,
    device: &ClientCert,
    backend: &Backend,
    cache: usize,
    n: usize,
) -> (u64, f64) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cb = ConfigBuilder::new(pki, backend.addr);
    cb.listen = format!("127.0.0.1:{port}");
    cb.extra_tls = format!("session_tickets = false\nsession_cache = {cache}\n");
    cb.extra_listener = "max_connections = 20000\n".into();
    let dir = tempfile::tempdir().unwrap();
    let proc_ = spawn_certgate(&cb.write(dir.path()));
    let client = no_resumption(&client_config(pki, Some(device), &[]));
    // Warm up allocator and pools before the first reading.
    for _ in 0..200 {
        get(proc_.addr, client.clone(), "/warm", &[]).await.unwrap();
    }
    let before = proc_.rss_kib();
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (next, client, addr) = (next.clone(), client.clone(), proc_.addr);
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                get(addr, client.clone(), "/s", &[]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let after = proc_.rss_kib();
    (after.saturating_sub(before), n as f64 / secs)
}

async fn run(sessions: usize, rsa: bool) {
    let mut pki = Pki::new();
    let device = if rsa {
        pki.client_rsa("device-a")
    } else {
        pki.client("device-a", Kind::Good)
    };
    let backend = Backend::start().await;
    let (without, rate0) = growth(&pki, &device, &backend, 0, sessions).await;
    let (with, rate1) = growth(&pki, &device, &backend, sessions, sessions).await;
    let per = (with as f64 - without as f64) * 1024.0 / sessions as f64;
    println!(
        "device certificate {} ({} bytes DER), {sessions} full handshakes, session_tickets = false",
        if rsa { "RSA-2048" } else { "ECDSA P-256" },
        device.der.len()
    );
    println!("| session_cache | RSS growth, MiB | handshakes/s |");
    println!("|---:|---:|---:|");
    println!("| 0 | {:.1} | {rate0:.0} |", without as f64 / 1024.0);
    println!("| {sessions} | {:.1} | {rate1:.0} |", with as f64 / 1024.0);
    println!(
        "=> about {per:.0} bytes per cached session; {sessions} sessions ≈ {:.0} MiB",
        per * sessions as f64 / 1_048_576.0
    );
}
