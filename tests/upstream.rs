//! Behaviour: backend failures become 502/504 quickly, and a dead server
//! is skipped in favour of the next one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A loopback address where nothing listens: bound, then closed.
async fn dead_addr() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

#[tokio::test]
async fn backend_down_gives_502_within_connect_timeout() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let dead = dead_addr().await;
    let mut cb = ConfigBuilder::new(&pki, dead);
    cb.extra_upstream = "connect_timeout = \"2s\"\n".into();
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();

    let started = Instant::now();
    let (status, body) = get(addr, client_config(&pki, Some(&device), &[]), "/", &[])
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(status, 502);
    assert!(body.len() < 64, "502 body should be short: {body:?}");
    assert!(elapsed < Duration::from_secs(2), "502 took {elapsed:?}");
    assert_eq!(
        metric(
            &gw,
            "certgate_upstream_errors_total{upstream=\"core\",kind=\"connect_failed\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &gw,
            "certgate_http_requests_total{listener=\"agents\",upstream=\"core\",code=\"5xx\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn slow_backend_gives_504_at_the_response_timeout() {
    let Fixture {
        pki,
        device,
        backend: _backend,
        gw,
        addr,
    } = Fixture::with(|cb| cb.extra_upstream = "response_timeout = \"300ms\"\n".into()).await;
    let client = client_config(&pki, Some(&device), &[]);

    let started = Instant::now();
    let (status, _) = get(addr, client.clone(), "/slow/3000", &[]).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(status, 504);
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "504 after {elapsed:?}"
    );
    assert_eq!(
        metric(
            &gw,
            "certgate_upstream_errors_total{upstream=\"core\",kind=\"response_timeout\"}"
        ),
        1.0
    );
    // A fast request right after still works.
    let (status, _) = get(addr, client, "/slow/10", &[]).await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn dead_first_server_fails_over_to_the_next() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let backend = Backend::start().await;
    let dead = dead_addr().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.servers = vec![dead.to_string(), backend.addr.to_string()];
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    for _ in 0..3 {
        let (status, _) = get(addr, client_config(&pki, Some(&device), &[]), "/", &[])
            .await
            .unwrap();
        assert_eq!(status, 200);
    }
    assert_eq!(backend.count(), 3);
}
