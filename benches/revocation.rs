//! What revocation costs and how fast it acts, against the certgate binary:
//!
//! 1. Handshake CPU per connection with `ocsp = "prefer"` and a warm cache
//!    (the device's answer cached, as for every returning device) vs OCSP
//!    off. Two gateways run side by side, measured in interleaved rounds of
//!    full handshakes (no resumption) plus one request each; CPU is the
//!    process's user + system time from /proc. The responder is a real
//!    `openssl ocsp` behind a loopback front.
//! 2. The time from a CRL publication to the first refused handshake of the
//!    device it revokes (`crl_refresh = "1s"`), over 20 revocations: what an
//!    admin waits after revoking a lost laptop at the CA. It is bounded by
//!    `crl_refresh` (default 1 h); the bench shows the machinery adds
//!    little to it.
//!
//! Run: `cargo bench --bench revocation` (HANDSHAKES=1500 per round, 3
//! rounds). Loopback only; every loop is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("HANDSHAKES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        ocsp_cost(n).await;
        crl_latency().await;
    });
}

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    ticks / hz
}

fn gateway(pki: &Pki, backend: &Backend, extra: &str, dir: &std::path::Path) -> Proc {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cb = ConfigBuilder::new(pki, backend.addr);
    cb.listen = format!("127.0.0.1:{port}");
    cb.extra_client_auth = extra.to_string();
    spawn_certgate(&cb.write(dir))
}

/// `n` full handshakes + one request each, 16 at a time; the CPU the
/// gateway spent, in µs per handshake.
async fn round(p: &Proc, client: Arc<rustls::ClientConfig>, n: usize) -> f64 {
    let before = cpu_seconds(p.pid());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (next, client, addr) = (next.clone(), client.clone(), p.addr);
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let (s, _) = get(addr, client.clone(), "/h", &[]).await.unwrap();
                assert_eq!(s, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (cpu_seconds(p.pid()) - before) * 1e6 / n as f64
}

async fn ocsp_cost(n: usize) {
    let backend = Backend::start().await;
    let mut pki = Pki::new();
    let device = pki.client("agent", Kind::Good);
    let responder = OcspResponder::start(&pki, &[Known::Good(&device)]).await;
    let off_dir = tempfile::tempdir().unwrap();
    let on_dir = tempfile::tempdir().unwrap();
    let off = gateway(&pki, &backend, "", off_dir.path());
    let on = gateway(
        &pki,
        &backend,
        &format!("ocsp = \"prefer\"\nocsp_url = \"{}\"\n", responder.url()),
        on_dir.path(),
    );
    let client = no_resumption(&client_config(&pki, Some(&device), &[]));
    // Warm up: chain caches, pools, and the device's OCSP answer.
    round(&off, client.clone(), 200).await;
    round(&on, client.clone(), 200).await;
    let asked = responder.hits();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        a.push(round(&off, client.clone(), n).await);
        b.push(round(&on, client.clone(), n).await);
    }
    assert_eq!(
        responder.hits(),
        asked,
        "a warm cache must not ask the responder"
    );
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.partial_cmp(y).unwrap());
        v[v.len() / 2]
    };
    let (ma, mb) = (med(&mut a), med(&mut b));
    println!(
        "Handshake CPU per connection (full handshake + 1 request, {n} per round, 3 interleaved rounds, medians)"
    );
    println!("| OCSP | certgate CPU µs/handshake | ratio |");
    println!("|---|---:|---:|");
    println!("| off | {ma:.0} | 1.00 |");
    println!("| prefer, warm cache | {mb:.0} | {:.3} |", mb / ma);
    println!();
}

async fn crl_latency() {
    let backend = Backend::start().await;
    let mut pki = Pki::new();
    let devices: Vec<ClientCert> = (0..20)
        .map(|i| pki.client(&format!("laptop-{i}"), Kind::Good))
        .collect();
    let server = CrlServer::start().await;
    server.publish(
        "/ca.crl",
        build_crl(&CrlSpec::base(1, &[]), pki.client_issuer()),
    );
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "crl_urls = [\"{}\"]\ncrl_refresh = \"1s\"\ncrl_cache_dir = \"{}\"\n",
        server.url("/ca.crl"),
        dir.path().join("cache").display()
    );
    let p = gateway(&pki, &backend, &extra, dir.path());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut took = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let cfg = no_resumption(&client_config(&pki, Some(d), &[b"http/1.1"]));
        assert_eq!(admitted(p.addr, cfg.clone()).await, Ok(()));
        let revoked: Vec<&[u8]> = devices[..=i].iter().map(|d| d.serial.as_slice()).collect();
        let start = Instant::now();
        server.publish(
            "/ca.crl",
            build_crl(&CrlSpec::base(2 + i as u64, &revoked), pki.client_issuer()),
        );
        loop {
            if admitted(p.addr, cfg.clone()).await.is_err() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "revocation never took effect"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        took.push(start.elapsed().as_secs_f64() * 1000.0);
        // Desynchronise the next publication from the refresh tick.
        tokio::time::sleep(Duration::from_millis(137 * (i as u64 % 7))).await;
    }
    took.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let pct = |q: f64| took[((took.len() as f64 - 1.0) * q).round() as usize];
    println!("CRL publication to the first refused handshake (crl_refresh = 1s, 20 revocations)");
    println!("| p50 ms | p99 ms | max ms |");
    println!("|---:|---:|---:|");
    println!("| {:.0} | {:.0} | {:.0} |", pct(0.5), pct(0.99), pct(1.0));
}
