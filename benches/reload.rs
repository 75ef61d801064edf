//! Reload latency: how long after a certificate file is written does the
//! first new handshake present the new certificate? 50 rotations in each
//! way tools write files, under 16 keep-alive clients of background load,
//! plus the cost of an explicit reload (`POST /api/reload` path) without
//! the file-watch debounce.
//!
//! Run: `cargo bench --bench reload` (about half a minute). Prints a table.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

const ROTATIONS: usize = 50;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn row(name: &str, mut v: Vec<f64>) {
    v.sort_by(|a, b| a.total_cmp(b));
    println!(
        "| {name:<34} | {:>4} | {:>8.1} | {:>8.1} | {:>8.1} |",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v[v.len() - 1]
    );
}

fn main() {
    // `cargo test --all-targets` and nextest list or run bench binaries
    // without `--bench`; only a real `cargo bench` measures.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    // Bind every field: `..` would drop the backend and the PKI directory.
    let Rotation {
        pki: _pki,
        backend: _backend,
        device: _device,
        pairs,
        mut slot,
        gw,
        addr,
        client,
        probe,
    } = Rotation::start().await;
    let load = Load::start(addr, client.clone(), 16, Duration::from_millis(5), false).await;

    println!();
    println!(
        "certgate reload latency, {ROTATIONS} rotations per row, 16 keep-alive clients + a new connection every 5 ms"
    );
    println!();
    println!(
        "| {:<34} | {:>4} | {:>8} | {:>8} | {:>8} |",
        "file write -> new cert served", "n", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "|{:-<36}|{:-<6}|{:-<10}|{:-<10}|{:-<10}|",
        "", "", "", "", ""
    );
    let mut current = 0;
    for style in WRITE_STYLES {
        let mut v = Vec::new();
        for _ in 0..ROTATIONS {
            current = 1 - current;
            let took = rotate(
                &mut slot,
                style,
                &pairs[current],
                addr,
                &probe,
                Duration::from_secs(5),
            )
            .await
            .expect("new certificate not served within 5 s");
            v.push(took.as_secs_f64() * 1000.0);
        }
        row(&format!("{style:?}"), v);
    }
    let mut v = Vec::new();
    for _ in 0..ROTATIONS {
        let t = Instant::now();
        gw.reload().await.unwrap();
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    row("explicit reload (build + swap)", v);
    let (ok, failures) = load.finish().await;
    println!();
    println!(
        "background requests served: {ok}, failed: {}; file-triggered reloads wait for {} ms of quiet first",
        failures.len(),
        certgate::internals::QUIET.as_millis()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
