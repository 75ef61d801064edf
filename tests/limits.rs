//! Behaviour: the safe defaults and limits hold, and session resumption
//! never lets in a certificate that is no longer valid.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn silent_client_is_dropped_at_the_handshake_timeout() {
    let pki = Pki::new();
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_listener = "handshake_timeout = \"500ms\"\n".into();
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();

    let started = Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    // Send nothing; the gateway must close the socket on its own.
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("the gateway kept a silent connection open")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(
        metric(
            &gw,
            "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"timeout\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn oversized_request_head_is_refused_before_the_backend() {
    let Fixture {
        pki,
        device,
        backend,
        gw: _gw,
        addr,
    } = Fixture::start().await;

    let mut tls = tls_connect(addr, client_config(&pki, Some(&device), &[]))
        .await
        .unwrap();
    let big = "a".repeat(70 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n");
    let _ = tls.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "expected 431, got: {text}"
    );
    assert_eq!(backend.count(), 0);

    // A request just under the default 64 KiB limit passes.
    let ok = "a".repeat(60 * 1024);
    let (status, _) = get(
        addr,
        client_config(&pki, Some(&device), &[]),
        "/",
        &[("x-big", &ok)],
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn too_many_request_headers_are_refused() {
    let Fixture {
        pki,
        device,
        backend,
        gw: _gw,
        addr,
    } = Fixture::with(|cb| cb.extra_listener = "max_request_headers = 20\n".into()).await;
    let names: Vec<String> = (0..30).map(|i| format!("x-h{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let r = get(addr, client_config(&pki, Some(&device), &[]), "/", &headers).await;
    let (status, _) = r.unwrap();
    assert_eq!(status, 431);
    assert_eq!(backend.count(), 0);
}

/// `max_uri_bytes` (414) and `max_request_body_bytes` (413): a declared
/// length over the limit is refused before anything goes upstream; a
/// chunked body is cut off when it passes the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_uri_gets_414_and_a_body_over_the_limit_gets_413() {
    use bytes::Bytes;
    use http_body_util::BodyExt;
    let Fixture {
        pki,
        device,
        backend,
        gw: _gw,
        addr,
    } = Fixture::with(|cb| {
        cb.extra_listener = "max_uri_bytes = 1024\nmax_request_body_bytes = 100000\n".into()
    })
    .await;
    let cfg = client_config(&pki, Some(&device), &[]);
    let long = format!("/{}", "a".repeat(2000));
    let (status, _) = get(addr, cfg.clone(), &long, &[]).await.unwrap();
    assert_eq!(status, 414);
    assert_eq!(backend.count(), 0);
    let (status, _) = get(addr, cfg.clone(), &format!("/{}", "a".repeat(1000)), &[])
        .await
        .unwrap();
    assert_eq!(status, 200, "a target under the limit passes");

    let post = |body: http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>| {
        let cfg = cfg.clone();
        async move {
            let mut sender = h1_sender(addr, cfg).await.unwrap();
            let req = http::Request::post("/upload")
                .header("host", "localhost")
                .body(body)
                .unwrap();
            match sender.send_request(req).await {
                Ok(resp) => resp.status().as_u16(),
                Err(e) => panic!("no answer: {e}"),
            }
        }
    };
    let before = backend.count();
    let big = http_body_util::Full::new(Bytes::from(vec![7u8; 200_000])).boxed();
    assert_eq!(post(big).await, 413, "declared length over the limit");
    assert_eq!(backend.count(), before, "refused before the backend");

    // Chunked (no length): cut off as it passes the limit.
    let frames = (0..50).map(|_| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![7u8; 8192])))
    });
    let chunked = http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed();
    assert_eq!(post(chunked).await, 413, "chunked body over the limit");

    let small = http_body_util::Full::new(Bytes::from(vec![7u8; 50_000])).boxed();
    assert_eq!(post(small).await, 200, "a body under the limit passes");
}

#[tokio::test]
async fn resumed_session_is_reverified_and_refused_once_the_cert_expired() {
    let mut pki = Pki::new();
    let device = pki.client("short-lived", Kind::ExpiresIn(2));
    let backend = Backend::start().await;
    let cfg = ConfigBuilder::new(&pki, backend.addr).write(pki.dir.path());
    let gw = start_gateway(&cfg).await;
    let addr = gw.addr("agents").unwrap();
    // One client config = one client session cache, so the second
    // connection offers the first one's session for resumption.
    let client = client_config(&pki, Some(&device), &[]);

    let (status, _) = get(addr, client.clone(), "/", &[]).await.unwrap();
    assert_eq!(status, 200);
    let (status, _) = get(addr, client.clone(), "/", &[]).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        metric(
            &gw,
            "certgate_tls_handshakes_total{listener=\"agents\",version=\"1.2\",cipher=\"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\",resumed=\"true\"}"
        ),
        1.0,
        "the second connection should have been resumed:\n{}",
        gw.metrics.encode()
    );

    // After expiry, the session is still in both caches, but the gateway
    // checks the restored certificate again and refuses it.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let before = backend.count();
    let r = get(addr, client.clone(), "/", &[]).await;
    assert!(
        r.is_err(),
        "an expired certificate got through on a resumed session: {r:?}"
    );
    assert_eq!(backend.count(), before);
    metric_at_least(
        &gw,
        "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"expired\"}",
        1.0,
    )
    .await;
    assert_eq!(
        metric(
            &gw,
            "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"expired\"}"
        ),
        1.0,
        "{}",
        gw.metrics.encode()
    );
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_until_a_slot_frees() {
    const REACHED: &str = "certgate_connections_limit_reached_total{listener=\"agents\"}";
    let Fixture {
        pki,
        device,
        backend: _backend,
        gw,
        addr,
    } = Fixture::with(|cb| cb.extra_listener = "max_connections = 1\n".into()).await;
    assert_eq!(
        metric(&gw, "certgate_connections_limit{listener=\"agents\"}"),
        1.0
    );
    assert_eq!(metric(&gw, REACHED), 0.0);
    let client = client_config(&pki, Some(&device), &[]);

    let first = tls_connect(addr, client.clone()).await.unwrap();
    // The second client is queued in the backlog: no handshake happens.
    let second = tokio::time::timeout(
        Duration::from_millis(500),
        tls_connect(addr, client.clone()),
    )
    .await;
    assert!(
        second.is_err(),
        "a second connection was served beyond max_connections = 1"
    );
    assert!(
        metric(&gw, REACHED) >= 1.0,
        "a full listener is not counted"
    );

    drop(first);
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), get(addr, client, "/", &[]))
        .await
        .expect("no slot freed after the first connection closed")
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_source_limit_are_closed_before_tls() {
    let f = Fixture::with(|cb| cb.extra_listener = "max_connections_per_source = 2\n".into()).await;
    let client = f.device_client();
    let first = h1_sender(f.addr, client.clone()).await.unwrap();
    let second = h1_sender(f.addr, client.clone()).await.unwrap();
    assert!(
        tls_connect(f.addr, client.clone()).await.is_err(),
        "a third connection from 127.0.0.1 must be refused"
    );
    assert_eq!(
        metric(
            &f.gw,
            "certgate_connections_refused_total{listener=\"agents\",reason=\"per_source_limit\"}"
        ),
        1.0
    );
    // Another loopback address is another source.
    assert!(
        handshake_from("127.0.0.2", f.addr, client.clone()).await,
        "127.0.0.2 has its own allowance"
    );
    // Closing one frees a slot.
    drop(first);
    let mut freed = false;
    for _ in 0..50 {
        if get(f.addr, client.clone(), "/again", &[]).await.is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "a slot is released when a connection closes");
    drop(second);
}

/// `handshake_rate_per_source`: a source opening connections faster than
/// the rate is closed before TLS beyond the burst, counted, and admitted
/// again once its bucket refills; another address has its own bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_beyond_the_handshake_rate_per_source_are_closed_before_tls() {
    let f = Fixture::with(|cb| cb.extra_listener = "handshake_rate_per_source = 5\n".into()).await;
    let client = no_resumption(&f.device_client());
    let started = std::time::Instant::now();
    let mut ok = 0;
    for _ in 0..20 {
        if get(f.addr, client.clone(), "/", &[]).await.is_ok() {
            ok += 1;
        }
    }
    let took = started.elapsed().as_secs_f64();
    // Burst 5, plus at most 5 per second of the time the loop took.
    let most = 5 + (took * 5.0).ceil() as usize;
    assert!(
        ok >= 5 && ok <= most,
        "{ok} admitted in {took:.2} s (most {most})"
    );
    let refused = metric(
        &f.gw,
        "certgate_connections_refused_total{listener=\"agents\",reason=\"handshake_rate\"}",
    );
    assert_eq!(refused as usize, 20 - ok);
    // Another loopback address is another source.
    assert!(
        handshake_from("127.0.0.3", f.addr, client.clone()).await,
        "127.0.0.3 has its own bucket"
    );
    // After a second the bucket has refilled.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _) = get(f.addr, client.clone(), "/later", &[]).await.unwrap();
    assert_eq!(status, 200);
}

/// Reads until the gateway closes the stream (EOF or reset); how long that
/// took, or `None` if it was still open after `limit`.
async fn closed_within(
    s: &mut (impl tokio::io::AsyncRead + Unpin),
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let mut response = Vec::new();
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(started.elapsed())
}

/// Slowloris: a client that trickles a request head, one header line every
/// 200 ms, is closed at `request_header_timeout` and never reaches the
/// backend; a keep-alive connection that simply sends no next request is
/// closed too, but counted as idle, not as a slow client. `idle_timeout`
/// closes a connection that sent nothing for that long, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_head_is_cut_at_the_header_timeout_and_idle_ones_are_counted_apart() {
    const SLOW: &str =
        "certgate_connections_timed_out_total{listener=\"agents\",phase=\"request_header\"}";
    const IDLE: &str = "certgate_connections_timed_out_total{listener=\"agents\",phase=\"idle\"}";
    let f = Fixture::with(|cb| {
        cb.extra_listener = "request_header_timeout = \"1s\"\nidle_timeout = \"60s\"\n".into();
    })
    .await;
    let tls = tls_connect(f.addr, f.device_client()).await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(tls);
    // One complete request first: a slow head after it must still count as
    // a slow client, not as an idle keep-alive connection.
    wr.write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickle = async {
        // Bounded: 25 lines at most, 5 s; the gateway should cut it at ~1 s.
        for i in 0..25 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr
                .write_all(format!("X-Drip-{i}: {i}\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let (_, took) = tokio::join!(trickle, closed_within(&mut rd, Duration::from_secs(5)));
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(900) && t < Duration::from_secs(4)),
        "a trickled head was not cut at the 1 s header timeout: {took:?}"
    );
    assert_eq!(f.backend.count(), 1, "the backend saw the slow request");
    assert_eq!(f.backend.last().path, "/first");
    assert!(eventually(Duration::from_secs(2), || metric(&f.gw, SLOW) == 1.0).await);
    assert_eq!(metric(&f.gw, IDLE), 0.0);

    // One request, answered; then nothing: closed as idle at the same timer.
    let mut tls = tls_connect(f.addr, f.device_client()).await.unwrap();
    tls.write_all(b"GET /once HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut tls, Duration::from_secs(5)).await;
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(900)),
        "{took:?}"
    );
    assert_eq!(f.backend.count(), 2);
    assert!(eventually(Duration::from_secs(2), || metric(&f.gw, IDLE) == 1.0).await);
    assert_eq!(
        metric(&f.gw, SLOW),
        1.0,
        "an idle keep-alive is not a slow client"
    );

    // idle_timeout shorter than the header timeout: it closes first.
    let g = Fixture::with(|cb| {
        cb.extra_listener = "request_header_timeout = \"30s\"\nidle_timeout = \"1s\"\n".into();
    })
    .await;
    let mut tls = tls_connect(g.addr, g.device_client()).await.unwrap();
    tls.write_all(b"GET /once HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut tls, Duration::from_secs(10)).await;
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(900) && t < Duration::from_secs(8)),
        "idle_timeout did not close the connection: {took:?}"
    );
    assert!(eventually(Duration::from_secs(2), || metric(&g.gw, IDLE) == 1.0).await);
}

/// Lingering close: a client that sends its whole body before it reads
/// (as most agents do) gets the 413 for a body over the limit, not a broken
/// pipe. certgate answers as soon as it sees the length and closes; a
/// socket closed under a client still sending resets the connection, so
/// certgate keeps reading and discarding for a moment first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_a_refused_body_to_the_end_reads_its_413() {
    const BODY: usize = 16 * 1024 * 1024;
    let f =
        Fixture::with(|cb| cb.extra_listener = "max_request_body_bytes = 100000\n".into()).await;
    let mut tls = tls_connect(f.addr, f.device_client()).await.unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let sent = tokio::time::timeout(Duration::from_secs(20), async {
        tls.write_all(
            format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        // More than any socket buffer holds: certgate has answered and
        // closed long before the client is done.
        for _ in 0..BODY / chunk.len() {
            tls.write_all(&chunk).await?;
        }
        tls.flush().await
    })
    .await
    .expect("sending the body hung");
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => response.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the connection was kept open after the 413");
    let text = String::from_utf8_lossy(&response);
    assert!(
        sent.is_ok() && text.starts_with("HTTP/1.1 413"),
        "the client did not get its 413 (sending: {sent:?}, reading: {read:?}): {text:?}"
    );
    assert_eq!(f.backend.count(), 0);
}
