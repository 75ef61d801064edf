//! Behaviour: large bodies stream through in both directions, intact, with
//! back-pressure instead of buffering.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;

const SIZE: u64 = 64 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_and_download_of_64_mib_pass_intact_with_bounded_memory() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let backend = Backend::start().await;
    let cfg = ConfigBuilder::new(&pki, backend.addr).write(pki.dir.path());
    let gw = spawn_certgate(&cfg);
    let client = client_config(&pki, Some(&device), &[]);

    // Warm up (first connection, pools, lazy statics), then take the baseline.
    let (status, _) = get(gw.addr, client.clone(), "/warmup", &[]).await.unwrap();
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = gw.rss_kib();
    assert!(baseline > 0);

    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = {
        let peak = peak.clone();
        let pid = gw.pid();
        tokio::spawn(async move {
            for _ in 0..6000 {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                if let Some(kib) = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Download: hash as it streams in.
    let mut sender = h1_sender(gw.addr, client.clone()).await.unwrap();
    let req = http::Request::get(format!("/download/{SIZE}"))
        .header("host", "localhost")
        .body(empty())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(120), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut got = 0u64;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), body.frame())
        .await
        .unwrap()
    {
        if let Some(d) = frame.unwrap().data_ref() {
            got += d.len() as u64;
            ctx.update(d);
        }
    }
    assert_eq!(got, SIZE);
    assert_eq!(
        hex(ctx.finish().as_ref()),
        pattern_sha256(SIZE),
        "download corrupted"
    );

    // Upload: a streaming body of unknown length (chunked), hashed by the backend.
    let mut sender = h1_sender(gw.addr, client.clone()).await.unwrap();
    let req = http::Request::post("/upload")
        .header("host", "localhost")
        .body(pattern_body(SIZE))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(120), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&answer),
        format!("{SIZE} {}", pattern_sha256(SIZE)),
        "upload corrupted"
    );

    sampler.abort();
    let growth_kib = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    println!("RSS baseline {baseline} KiB, peak growth {growth_kib} KiB");
    assert!(
        growth_kib < 16 * 1024,
        "gateway RSS grew by {growth_kib} KiB while streaming 64 MiB each way (limit 16 MiB)"
    );
}
