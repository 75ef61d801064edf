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

/// A backend that answers every request after `delay` and records how many
/// requests it was serving at once (the peak).
async fn counting_backend(
    delay: Duration,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let peak2 = peak.clone();
    let (addr, _) = raw_backend(move |mut s, _| {
        let (now, peak) = (now.clone(), peak2.clone());
        async move {
            let mut buf = Vec::new();
            // One request head at a time (GETs, no bodies).
            while next_head(&mut s, &mut buf).await.is_some() {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                now.fetch_sub(1, Ordering::SeqCst);
                if !ok_200(&mut s, b"ok").await {
                    return;
                }
            }
        }
    })
    .await;
    (addr, peak)
}

/// `max_connections` on an upstream: a burst of clients is queued in
/// certgate, the backend never serves more than the cap at once, and every
/// request is answered 200; a request that cannot get a slot within
/// `queue_timeout` gets 503 with Retry-After, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_queues_at_the_upstream_cap_and_a_queue_timeout_answers_503() {
    use std::sync::atomic::Ordering;
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let (backend, peak) = counting_backend(Duration::from_millis(150)).await;
    let mut cb = ConfigBuilder::new(&pki, backend);
    cb.extra_upstream = "max_connections = 3\nqueue_timeout = \"5s\"\n".into();
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let client = client_config(&pki, Some(&device), &[]);

    let burst: Vec<_> = (0..12)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { get(addr, client, &format!("/burst/{i}"), &[]).await })
        })
        .collect();
    for r in burst {
        let (status, body) = r.await.unwrap().unwrap();
        assert_eq!(status, 200);
        assert_eq!(&body[..], b"ok");
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "the backend must have served exactly the cap at once"
    );
    gw.shutdown().await;

    // Cap 1, a slow request holds the slot past the queue timeout.
    let (backend, _) = counting_backend(Duration::from_millis(1500)).await;
    let mut cb = ConfigBuilder::new(&pki, backend);
    cb.extra_upstream = "max_connections = 1\nqueue_timeout = \"200ms\"\n".into();
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let holder = {
        let client = client.clone();
        tokio::spawn(async move { get(addr, client, "/holds-the-slot", &[]).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sender = h1_sender(addr, client.clone()).await.unwrap();
    let started = Instant::now();
    let resp = sender
        .send_request(
            http::Request::get("/queued")
                .header("host", "localhost")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "503 after {:?}",
        started.elapsed()
    );
    assert_eq!(
        metric(
            &gw,
            "certgate_upstream_errors_total{upstream=\"core\",kind=\"queue_timeout\"}"
        ),
        1.0
    );
    let (status, _) = holder.await.unwrap().unwrap();
    assert_eq!(status, 200);
}

/// What the backend of the pool test sees: connections accepted and open.
#[derive(Default)]
struct PoolBackend {
    accepted: std::sync::atomic::AtomicUsize,
    open: std::sync::atomic::AtomicUsize,
    /// Close each connection this long after its response (0 = keep it).
    close_after_ms: std::sync::atomic::AtomicU64,
}

/// A loopback backend that counts its connections in a [`PoolBackend`]
/// and serves each one with `conn`.
async fn raw_backend<F, Fut>(conn: F) -> (std::net::SocketAddr, std::sync::Arc<PoolBackend>)
where
    F: Fn(tokio::net::TcpStream, std::sync::Arc<PoolBackend>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use std::sync::atomic::Ordering;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = std::sync::Arc::new(PoolBackend::default());
    let b = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            b.accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(conn(s, b.clone()));
        }
    });
    (addr, seen)
}

/// The next request head from `s` (lower-cased), with what followed it
/// left in `buf`; `None` once the connection ends.
async fn next_head(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
    buf.drain(..end);
    Some(head)
}

/// Writes a 200 response with `body`; whether the write went through.
async fn ok_200(s: &mut tokio::net::TcpStream, body: &[u8]) -> bool {
    use tokio::io::AsyncWriteExt as _;
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
    s.write_all(&[head.as_bytes(), body].concat()).await.is_ok()
}

/// Sends `n` requests one after another, to `{prefix}0` .. `{prefix}{n-1}`;
/// each must be answered 200 with `want`.
async fn get_in_turn(
    addr: std::net::SocketAddr,
    cfg: &std::sync::Arc<rustls::ClientConfig>,
    prefix: &str,
    n: usize,
    want: &[u8],
) {
    for i in 0..n {
        let (s, body) = get(addr, cfg.clone(), &format!("{prefix}{i}"), &[])
            .await
            .unwrap();
        assert_eq!((s.as_u16(), &body[..]), (200, want), "request {prefix}{i}");
    }
}

async fn pool_backend() -> (std::net::SocketAddr, std::sync::Arc<PoolBackend>) {
    use std::sync::atomic::Ordering;
    raw_backend(|mut s, b| async move {
        b.open.fetch_add(1, Ordering::SeqCst);
        let mut buf = Vec::new();
        while next_head(&mut s, &mut buf).await.is_some() {
            if !ok_200(&mut s, b"ok").await {
                break;
            }
            // A server whose keep-alive timeout is shorter than the
            // gateway's pool_idle_timeout: it closes without saying so in
            // the response.
            let ms = b.close_after_ms.load(Ordering::SeqCst);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                break;
            }
        }
        b.open.fetch_sub(1, Ordering::SeqCst);
    })
    .await
}

/// Backend connections are kept alive and reused, closed by the gateway
/// after `pool_idle_timeout`, and one the server closed while it was idle
/// is replaced without the client seeing an error.
#[tokio::test]
async fn backend_connections_are_reused_closed_when_idle_and_replaced_when_the_server_closed_them()
{
    use std::sync::atomic::Ordering;
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let (backend, seen) = pool_backend().await;
    let mut cb = ConfigBuilder::new(&pki, backend);
    cb.extra_upstream = "pool_idle_timeout = \"1s\"\n".into();
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let cfg = client_config(&pki, Some(&device), &[]);

    get_in_turn(addr, &cfg, "/r", 20, b"ok").await;
    assert_eq!(
        seen.accepted.load(Ordering::SeqCst),
        1,
        "20 requests in a row share one kept-alive backend connection"
    );

    let idle_from = Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || seen.open.load(Ordering::SeqCst)
            == 0)
        .await,
        "the idle backend connection is closed after pool_idle_timeout (1s)"
    );
    let closed_after = idle_from.elapsed();
    println!("idle backend connection closed after {closed_after:?}");
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed before pool_idle_timeout: {closed_after:?}"
    );

    // Now the server closes each connection 20 ms after its response:
    // every request finds the kept connection closed and gets a new one.
    seen.close_after_ms.store(20, Ordering::SeqCst);
    let before = seen.accepted.load(Ordering::SeqCst);
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (s, _) = get(addr, cfg.clone(), &format!("/c{i}"), &[])
            .await
            .unwrap();
        assert_eq!(s, 200, "request {i} after the server closed its connection");
    }
    assert_eq!(seen.accepted.load(Ordering::SeqCst) - before, 10);
    assert_eq!(
        metric(
            &gw,
            "certgate_http_requests_total{listener=\"agents\",upstream=\"core\",code=\"2xx\"}"
        ),
        30.0
    );
}

/// A backend that answers `POST /upload` at once, before the body (as a
/// server refusing an upload early does) and then reads the body as it
/// comes; any other request gets `fast`. Counts connections accepted.
async fn early_answer_backend() -> (std::net::SocketAddr, std::sync::Arc<PoolBackend>) {
    use tokio::io::AsyncReadExt as _;
    raw_backend(|mut s, _| async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Some(head) = next_head(&mut s, &mut buf).await {
            if !head.starts_with("post /upload") {
                if !ok_200(&mut s, b"fast").await {
                    return;
                }
                continue;
            }
            ok_200(&mut s, b"early").await;
            // Then the body, for as long as it takes.
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < len {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..len);
        }
    })
    .await
}

/// A backend connection still carrying a slow upload (its response came
/// early) is not handed to the next request: that request gets another
/// connection and its answer at once, and the upload still completes.
#[tokio::test]
async fn a_request_does_not_wait_behind_a_slow_upload_the_backend_answered_early() {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let (backend, seen) = early_answer_backend().await;
    let cb = ConfigBuilder::new(&pki, backend);
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let cfg = client_config(&pki, Some(&device), &[]);

    // The upload: the head and the first 10 of 20,000 bytes.
    let mut up = tls_connect(addr, cfg.clone()).await.unwrap();
    up.write_all(
        b"POST /upload HTTP/1.1\r\nhost: localhost\r\ncontent-length: 20000\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !got.ends_with(b"early") {
            let n = up.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "gateway closed the upload: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("the early answer reaches the uploading client");
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );

    // Another device's request while the upload is still going.
    let started = Instant::now();
    let (s, body) =
        tokio::time::timeout(Duration::from_secs(5), get(addr, cfg.clone(), "/next", &[]))
            .await
            .expect("a request waited behind the slow upload's backend connection")
            .unwrap();
    assert_eq!((s.as_u16(), &body[..]), (200, &b"fast"[..]));
    println!(
        "request during the upload answered in {:?}",
        started.elapsed()
    );
    assert_eq!(
        seen.accepted.load(Ordering::SeqCst),
        2,
        "the request took a second backend connection"
    );

    // The rest of the upload goes through, and its connection is reused
    // once it is done.
    up.write_all(&vec![b'x'; 19_990]).await.unwrap();
    up.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    get_in_turn(addr, &cfg, "/after", 3, b"fast").await;
    assert_eq!(
        seen.accepted.load(Ordering::SeqCst),
        2,
        "no third backend connection"
    );
}
