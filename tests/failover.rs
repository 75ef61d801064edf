//! Several servers per upstream: strategies, active health checks, passive
//! ejection, retries on another server, and 503 when every server is down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn up_metric(server: SocketAddr) -> String {
    format!("certgate_upstream_server_up{{upstream=\"core\",server=\"{server}\"}}")
}

/// Health checks every 100 ms, two failures take a server out, two
/// passes bring it back.
const FAST_HEALTH: &str = r#"
[upstream.health_check]
path = "/healthz"
interval = "100ms"
timeout = "80ms"
healthy_threshold = 2
unhealthy_threshold = 2
"#;

/// Must-show 1: two servers under load, one is killed. Requests keep
/// succeeding (GETs caught in flight on the dead server are retried on the
/// other one), the health check marks it down, and when it comes back it
/// is marked up and gets traffic again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_servers_under_load_loses_nothing_and_the_health_check_tracks_it() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let a = Backend::start().await;
    let b = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, a.addr);
    cb.servers = vec![a.addr.to_string(), b.addr.to_string()];
    // max_fails = 0: no passive ejection, so "down" below is the health
    // check's verdict (ejection has its own test).
    cb.extra_upstream = format!("strategy = \"round_robin\"\nmax_fails = 0\n{FAST_HEALTH}");
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let client = client_config(&pki, Some(&device), &[]);

    let load = Load::start(addr, client.clone(), 16, Duration::from_millis(5), false).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(a.count() > 0 && b.count() > 0, "round robin uses both");
    assert_eq!(metric(&gw, &up_metric(a.addr)), 1.0);

    let (a_addr, a_seen) = a.kill();
    let killed = Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || metric(&gw, &up_metric(a_addr))
            == 0.0)
        .await,
        "the killed server is not marked down; metrics:\n{}",
        gw.metrics.encode()
    );
    let marked_down = killed.elapsed();
    assert_eq!(metric(&gw, &up_metric(b.addr)), 1.0);
    // Load goes on against the survivor alone.
    let before = b.count();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.count() > before + 20, "the survivor takes the load");

    let seen_before_return = a_seen.lock().unwrap().len();
    let a = Backend::start_on(a_addr, a_seen).await;
    let returned = Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || metric(&gw, &up_metric(a_addr))
            == 1.0)
        .await,
        "the returned server is not marked up"
    );
    let marked_up = returned.elapsed();
    assert!(
        eventually(Duration::from_secs(3), || a.count()
            > seen_before_return + 20)
        .await,
        "the returned server gets traffic again"
    );
    let (ok, failures) = load.finish().await;
    println!(
        "requests ok: {ok}, failed: {}; marked down after {marked_down:?}, up after {marked_up:?}",
        failures.len()
    );
    // Bodiless GETs are retried on the other server, so nothing is lost;
    // the issue allows at most the in-flight ones (16 clients).
    assert!(failures.len() <= 16, "failures: {failures:#?}");
    assert!(
        failures.is_empty(),
        "GETs in flight are retried: {failures:#?}"
    );
    assert!(ok > 500, "too little load: {ok}");
}

/// A backend whose every response names it, so a test can see where each
/// request went; `/slow` answers after 500 ms.
async fn named_backend(name: &'static str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<_>| async move {
                    if req.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(Bytes::from(name)),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

async fn gateway_over(
    pki: &Pki,
    servers: &[SocketAddr],
    extra: &str,
) -> (certgate::Gateway, SocketAddr) {
    let mut cb = ConfigBuilder::new(pki, servers[0]);
    cb.servers = servers.iter().map(|s| s.to_string()).collect();
    cb.extra_upstream = extra.to_string();
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    (gw, addr)
}

/// Sends `n` GETs one after another on one keep-alive connection; the
/// backend names, in order.
async fn names(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>, n: usize) -> Vec<String> {
    let mut sender = h1_sender(addr, cfg).await.unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        sender.ready().await.unwrap();
        let req = http::Request::get("/")
            .header("host", "localhost")
            .body(empty())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        out.push(String::from_utf8_lossy(&body).into_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_strategy_spreads_requests_as_configured() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let client = client_config(&pki, Some(&device), &[]);
    let (a, b) = (named_backend("a").await, named_backend("b").await);

    // failover: the first server takes everything while it is up.
    let (_gw, addr) = gateway_over(&pki, &[a, b], "strategy = \"failover\"").await;
    assert_eq!(names(addr, client.clone(), 6).await, ["a"; 6]);

    // round_robin: alternates, also on one keep-alive client connection.
    let (_gw, addr) = gateway_over(&pki, &[a, b], "strategy = \"round_robin\"").await;
    let got = names(addr, client.clone(), 6).await;
    let on_a = got.iter().filter(|n| *n == "a").count();
    assert_eq!(on_a, 3, "{got:?}");
    assert!(got.windows(2).all(|w| w[0] != w[1]), "{got:?}");

    // least_conn: while one server holds a slow request, new requests go
    // to the other one.
    let (_gw, addr) = gateway_over(&pki, &[a, b], "strategy = \"least_conn\"").await;
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { get(addr, client, "/slow", &[]).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let got = names(addr, client.clone(), 4).await;
    let (status, busy) = slow.await.unwrap();
    assert_eq!(status, 200);
    let busy = String::from_utf8_lossy(&busy).into_owned();
    assert!(
        got.iter().all(|n| *n != busy),
        "requests went to the busy server {busy}: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_server_is_down_the_answer_is_503_with_retry_after_at_once() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let client = client_config(&pki, Some(&device), &[]);
    let a = Backend::start().await;
    let b = Backend::start().await;
    let (gw, addr) = gateway_over(
        &pki,
        &[a.addr, b.addr],
        &format!("max_fails = 0\n{FAST_HEALTH}"),
    )
    .await;
    let (status, _) = get(addr, client.clone(), "/", &[]).await.unwrap();
    assert_eq!(status, 200);
    let (a_addr, a_seen) = a.kill();
    let (b_addr, b_seen) = b.kill();
    assert!(
        eventually(Duration::from_secs(3), || {
            metric(&gw, &up_metric(a_addr)) == 0.0 && metric(&gw, &up_metric(b_addr)) == 0.0
        })
        .await
    );
    let mut sender = h1_sender(addr, client.clone()).await.unwrap();
    let started = Instant::now();
    let resp = sender
        .send_request(
            http::Request::get("/")
                .header("host", "localhost")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status(), 503);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    // Fast = no connect attempts and no timeouts (those take seconds); the
    // bound leaves room for a loaded CI machine.
    assert!(took < Duration::from_secs(1), "not fast: {took:?}");
    assert!(
        metric(
            &gw,
            "certgate_upstream_errors_total{upstream=\"core\",kind=\"all_down\"}"
        ) >= 1.0
    );
    // One comes back: served again without a restart.
    let _a = Backend::start_on(a_addr, a_seen).await;
    assert!(
        eventually(Duration::from_secs(3), || metric(&gw, &up_metric(a_addr))
            == 1.0)
        .await
    );
    let (status, _) = get(addr, client.clone(), "/", &[]).await.unwrap();
    assert_eq!(status, 200);
    drop(b_seen);
}

/// Without health checks, a server that refuses connections is taken out
/// of rotation by the first failure (max_fails = 1) for fail_timeout, and
/// a POST sent to it is retried on the next server with its body intact:
/// nothing had been sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_server_is_ejected_and_a_post_to_it_is_retried_with_its_body() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let client = client_config(&pki, Some(&device), &[]);
    let live = Backend::start().await;
    let dead = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let (gw, addr) = gateway_over(
        &pki,
        &[dead, live.addr],
        "strategy = \"round_robin\"\nfail_timeout = \"30s\"",
    )
    .await;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let want = format!("{} {}", body.len(), sha256_hex(&body));
    for i in 0..4 {
        let mut sender = h1_sender(addr, client.clone()).await.unwrap();
        let req = http::Request::post("/upload")
            .header("host", "localhost")
            .body(http_body_util::Full::new(Bytes::from(body.clone())).boxed())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "upload {i}");
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(String::from_utf8_lossy(&got), want, "upload {i}");
    }
    assert_eq!(metric(&gw, &up_metric(dead)), 0.0);
    assert_eq!(
        metric(
            &gw,
            "certgate_upstream_errors_total{upstream=\"core\",kind=\"connect_failed\"}"
        ),
        1.0,
        "ejected after one failure, not tried again"
    );
}

/// A backend that reads a request head (and whatever body came with it)
/// and then drops the connection without answering: the request reached
/// it, so a POST must not be sent anywhere else.
async fn swallowing_backend() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let heads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let h = h.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, heads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_reached_a_server_is_not_repeated_but_a_bodiless_get_is() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let client = client_config(&pki, Some(&device), &[]);
    let (swallow, heads) = swallowing_backend().await;
    let live = Backend::start().await;
    // failover: the swallowing server is always tried first; max_fails = 0
    // keeps it in rotation so every request meets it.
    let (_gw, addr) = gateway_over(&pki, &[swallow, live.addr], "max_fails = 0").await;

    let mut sender = h1_sender(addr, client.clone()).await.unwrap();
    let req = http::Request::post("/upload")
        .header("host", "localhost")
        .body(http_body_util::Full::new(Bytes::from_static(b"charge the card")).boxed())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(heads.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(live.count(), 0, "the POST must not be repeated elsewhere");

    let (status, body) = get(addr, client.clone(), "/again", &[]).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"ok");
    assert_eq!(heads.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(
        live.last().path,
        "/again",
        "the GET was retried on the live server"
    );
}

/// A reload that edits an upstream keeps what the health check knows: a
/// server found down stays down (its gauge never flips back to 1 while the
/// new health check starts over), and a server removed from the upstream
/// loses its gauge instead of reporting a stale 0 forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_edits_an_upstream_keeps_a_down_verdict_and_drops_removed_servers() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let client = client_config(&pki, Some(&device), &[]);
    let a = Backend::start().await;
    let dead = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, a.addr);
    cb.servers = vec![a.addr.to_string(), dead.addr.to_string()];
    let health =
        |timeout: &str| format!("max_fails = 0\nconnect_timeout = \"{timeout}\"\n{FAST_HEALTH}");
    cb.extra_upstream = health("1s");
    let config = cb.write(pki.dir.path());
    let gw = start_gateway(&config).await;
    let addr = gw.addr("agents").unwrap();
    let (dead_addr, _) = dead.kill();
    assert!(
        eventually(Duration::from_secs(3), || metric(
            &gw,
            &up_metric(dead_addr)
        ) == 0.0)
        .await,
        "the dead server is not marked down"
    );

    cb.extra_upstream = health("2s");
    cb.write(pki.dir.path());
    gw.reload().await.unwrap();
    // The new health check needs unhealthy_threshold (2) failures, 100 ms
    // apart, to find the server down on its own; watch well past that.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_millis(500) {
        assert_eq!(
            metric(&gw, &up_metric(dead_addr)),
            0.0,
            "the reload put a server known to be down back in rotation ({:?} after)",
            watch.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metric(&gw, &up_metric(a.addr)), 1.0);
    assert_eq!(get(addr, client.clone(), "/", &[]).await.unwrap().0, 200);

    cb.servers = vec![a.addr.to_string()];
    cb.write(pki.dir.path());
    gw.reload().await.unwrap();
    let exposition = gw.metrics.encode();
    assert!(
        !exposition.contains(&dead_addr.to_string()),
        "the removed server still has a gauge:\n{exposition}"
    );
    assert_eq!(metric(&gw, &up_metric(a.addr)), 1.0);
    assert_eq!(get(addr, client, "/", &[]).await.unwrap().0, 200);
}
