//! Hot reload: certificates, client CAs, CRLs and the config are replaced
//! on a running gateway under load, and nobody notices except new
//! handshakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use http_body_util::BodyExt;
use tokio_tungstenite::tungstenite::Message;

const FAILURES: &str = "certgate_reloads_total{result=\"failure\"}";
const SUCCESSES: &str = "certgate_reloads_total{result=\"success\"}";

/// A 64 MiB download read slowly (so that it spans the whole test) until
/// `fast` is set; checks every byte.
fn slow_download(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    fast: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<(), String>> {
    const SIZE: u64 = 64 * 1024 * 1024;
    tokio::spawn(async move {
        let mut sender = h1_sender(addr, cfg).await.map_err(|e| e.to_string())?;
        let req = http::Request::get(format!("/download/{SIZE}"))
            .header("host", "localhost")
            .body(empty())
            .unwrap();
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status() != 200 {
            return Err(format!("download status {}", resp.status()));
        }
        let mut body = resp.into_body();
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        // Paced by bytes, not by frames: a release build reads frames of
        // several hundred KiB, and a pause per frame would let the download
        // finish before the rotations do. 5 MiB/s: at least 12.8 s.
        const RATE: u64 = 5 * 1024 * 1024;
        let started = tokio::time::Instant::now();
        let mut got = 0u64;
        while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), body.frame())
            .await
            .map_err(|_| "download stalled".to_string())?
        {
            let frame = frame.map_err(|e| format!("download broken after {got} bytes: {e}"))?;
            if let Some(d) = frame.data_ref() {
                got += d.len() as u64;
                ctx.update(d);
            }
            if !fast.load(Ordering::Relaxed) {
                let due = started + Duration::from_millis(got * 1000 / RATE);
                tokio::time::sleep_until(due).await;
            }
        }
        if got != SIZE || hex(ctx.finish().as_ref()) != pattern_sha256(SIZE) {
            return Err(format!("download corrupted ({got} bytes)"));
        }
        Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_cert_rotates_50_times_under_load_without_a_failed_request() {
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
    assert_eq!(
        presented_cert(addr, probe.clone()).await.unwrap(),
        pairs[0].der
    );

    let load = Load::start(addr, client.clone(), 16, Duration::from_millis(5), false).await;
    let fast = Arc::new(AtomicBool::new(false));
    let download = slow_download(addr, client.clone(), fast.clone());
    // A WebSocket opened before the first rotation, used across all of them.
    let tls = tls_connect(addr, client.clone()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/ws", tls)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut latencies = Vec::new();
    for i in 0..50 {
        let style = WRITE_STYLES[i % 3];
        let pair = &pairs[(i + 1) % 2];
        let took = rotate(&mut slot, style, pair, addr, &probe, Duration::from_secs(2))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "rotation {i} ({style:?}): new cert not served within 2 s; metrics:\n{}",
                    gw.metrics.encode()
                )
            });
        latencies.push((style, took));
        // Let the load run on the new cert for a moment; the WebSocket
        // opened under the first cert keeps echoing.
        tokio::time::sleep(Duration::from_millis(30)).await;
        if i % 10 == 9 {
            ws_echo(&mut ws, Message::text(format!("after rotation {i}"))).await;
        }
    }
    ws.close(None).await.unwrap();
    let download_running = !download.is_finished();
    fast.store(true, Ordering::Relaxed);
    let requests_during = load.ok();
    let (ok, failures) = load.finish().await;
    download.await.unwrap().unwrap();

    for style in WRITE_STYLES {
        let mut v: Vec<_> = latencies
            .iter()
            .filter(|(s, _)| *s == style)
            .map(|(_, d)| d.as_millis())
            .collect();
        v.sort();
        println!(
            "{style:?}: write -> new cert served: min {} ms, median {} ms, max {} ms",
            v[0],
            v[v.len() / 2],
            v[v.len() - 1]
        );
    }
    println!("requests served during the rotations: {ok}");
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(
        download_running,
        "the 64 MiB download must still be in progress when the last rotation is done"
    );
    assert!(
        requests_during > 500,
        "too little load: {requests_during} requests"
    );
    assert_eq!(metric(&gw, FAILURES), 0.0, "{}", gw.metrics.encode());
    assert!(metric(&gw, SUCCESSES) >= 50.0, "{}", gw.metrics.encode());
    assert_eq!(metric(&gw, "certgate_config_last_reload_successful"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_cert_or_key_keeps_the_old_cert_and_the_next_good_write_wins() {
    let Rotation {
        pki,
        backend: _backend,
        device: _device,
        pairs: good,
        mut slot,
        gw,
        addr,
        probe,
        client: _client,
    } = Rotation::start().await;
    let other = pki.server_pair("someone else");

    let half = &good[1].cert_pem[..good[1].cert_pem.len() / 2];
    let bad: [(&str, ServerPair); 4] = [
        (
            "truncated cert",
            ServerPair {
                cert_pem: half.to_string(),
                key_pem: good[1].key_pem.clone(),
                der: good[1].der.clone(),
            },
        ),
        (
            "garbage cert",
            ServerPair {
                cert_pem:
                    "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n"
                        .into(),
                key_pem: good[1].key_pem.clone(),
                der: good[1].der.clone(),
            },
        ),
        (
            "garbage key",
            ServerPair {
                cert_pem: good[1].cert_pem.clone(),
                key_pem: "this is not a key\n".into(),
                der: good[1].der.clone(),
            },
        ),
        (
            "key of another cert",
            ServerPair {
                cert_pem: good[1].cert_pem.clone(),
                key_pem: other.key_pem.clone(),
                der: good[1].der.clone(),
            },
        ),
    ];
    let mut serving = 0;
    for (i, (what, pair)) in bad.iter().enumerate() {
        let style = WRITE_STYLES[i % 3];
        let before = metric(&gw, FAILURES);
        slot.write(style, pair);
        assert!(
            eventually(Duration::from_secs(3), || metric(&gw, FAILURES) > before).await,
            "{what} ({style:?}): no failed reload counted; metrics:\n{}",
            gw.metrics.encode()
        );
        assert_eq!(metric(&gw, FAILURES), before + 1.0, "{what}: counted once");
        assert_eq!(metric(&gw, "certgate_config_last_reload_successful"), 0.0);
        assert_eq!(
            presented_cert(addr, probe.clone()).await.unwrap(),
            good[serving].der,
            "{what}: the old cert must still be served"
        );
        let (status, _) = get(addr, probe.clone(), "/still-fine", &[]).await.unwrap();
        assert_eq!(status, 200);

        // The next good write is picked up.
        serving = 1 - serving;
        rotate(
            &mut slot,
            style,
            &good[serving],
            addr,
            &probe,
            Duration::from_secs(2),
        )
        .await
        .unwrap_or_else(|| panic!("{what}: the good cert written after it was not picked up"));
        assert!(
            eventually(Duration::from_secs(2), || metric(
                &gw,
                "certgate_config_last_reload_successful"
            ) == 1.0)
            .await
        );
    }
}

/// cert-manager, certbot hooks and admins copy the cert and then the key;
/// on a loaded machine the two writes can land further apart than the
/// watcher's quiet time. The half-done pair must not count as a refused
/// reload (that fires the admin's alert) and the whole pair must win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cert_and_its_key_written_400_ms_apart_load_without_a_refused_reload() {
    let Rotation {
        pki: _pki,
        backend: _backend,
        device: _device,
        pairs: good,
        slot,
        gw,
        addr,
        probe,
        client: _client,
    } = Rotation::start().await;
    let written = std::time::Instant::now();
    std::fs::write(&slot.cert, &good[1].cert_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    std::fs::write(&slot.key, &good[1].key_pem).unwrap();
    let took = wait_for_cert(
        addr,
        probe.clone(),
        &good[1].der,
        written,
        Duration::from_secs(5),
    )
    .await;
    assert!(took.is_some(), "the new pair was not picked up");
    assert_eq!(metric(&gw, FAILURES), 0.0, "{}", gw.metrics.encode());
    assert_eq!(metric(&gw, "certgate_config_last_reload_successful"), 1.0);
    let (status, _) = get(addr, probe.clone(), "/after", &[]).await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_or_ca_change_refuses_the_next_handshake_and_closes_open_connections() {
    let mut pki = Pki::new();
    let device_a = pki.client("device-a", Kind::Good);
    let device_b = pki.client("device-b", Kind::Good);
    let backend = Backend::start().await;
    let crl = pki.crl("client-ca.crl", &[], true);
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.crl = vec![crl.clone()];
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let client_a = no_resumption(&client_config(&pki, Some(&device_a), &[]));
    let client_b = client_config(&pki, Some(&device_b), &[]);

    // device-b has a keep-alive connection open, and a cached session.
    let mut open_b = h1_sender(addr, client_b.clone()).await.unwrap();
    let (status, _) = get(addr, client_b.clone(), "/b", &[]).await.unwrap();
    assert_eq!(status, 200);

    // Revoke device-b: rewrite the CRL (rename, as a CA tool would).
    let tmp = pki.crl("client-ca.crl.new", &[&device_b], true);
    std::fs::rename(&tmp, &crl).unwrap();
    assert!(
        eventually(Duration::from_secs(2), || open_b.is_closed()).await,
        "device-b's open connection must be closed once its cert is revoked"
    );
    assert_eq!(
        metric(
            &gw,
            "certgate_connections_closed_by_policy_total{listener=\"agents\",reason=\"revoked\"}"
        ),
        1.0,
        "{}",
        gw.metrics.encode()
    );
    // Full handshake and resumed session alike are refused now.
    assert!(
        get(addr, no_resumption(&client_b), "/b", &[])
            .await
            .is_err()
    );
    assert!(get(addr, client_b.clone(), "/b", &[]).await.is_err());
    assert!(
        open_b
            .send_request(
                http::Request::get("/b")
                    .header("host", "localhost")
                    .body(empty())
                    .unwrap()
            )
            .await
            .is_err()
    );
    let revoked = metric(
        &gw,
        "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"revoked\"}",
    );
    assert!(revoked >= 2.0, "{}", gw.metrics.encode());
    // device-a is not affected.
    let (status, _) = get(addr, client_a.clone(), "/a", &[]).await.unwrap();
    assert_eq!(status, 200);

    // Replace the client CA bundle with a new CA: device-a (old CA) is
    // refused, a device of the new CA admitted.
    let new_ca = pki.new_client_ca("next client CA");
    let device_c = pki.client("device-c", Kind::Good);
    let new_crl = pki.crl("client-ca.crl.next", &[], true);
    let mut cb2 = cb;
    cb2.crl = vec![new_crl];
    std::fs::write(&pki.client_ca, new_ca).unwrap();
    cb2.write(pki.dir.path());
    let client_c = no_resumption(&client_config(&pki, Some(&device_c), &[]));
    assert!(
        wait_ok(addr, client_c.clone()).await,
        "a device of the new CA must be admitted within 2 s; metrics:\n{}",
        gw.metrics.encode()
    );
    let err = get(addr, client_a.clone(), "/a", &[]).await;
    assert!(err.is_err(), "device-a of the replaced CA must be refused");
    assert!(
        metric_at_least(
            &gw,
            "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"unknown_ca\"}",
            1.0
        )
        .await
    );
    let expiry = gw.metrics.encode();
    assert!(
        expiry.contains("role=\"client_ca\",subject=\"CN=next client CA\""),
        "{expiry}"
    );
    assert!(
        !expiry.contains("CN=test client CA"),
        "old CA series gone: {expiry}"
    );
}

/// Polls with new connections until a GET succeeds (2 s).
async fn wait_ok(addr: std::net::SocketAddr, cfg: Arc<rustls::ClientConfig>) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        if let Ok((s, _)) = get(addr, cfg.clone(), "/probe", &[]).await
            && s == 200
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reload_adds_and_removes_listeners_and_switches_the_upstream() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let backend1 = Backend::start().await;
    let backend2 = Backend::start().await;
    let tls_tables = format!(
        "[listener.tls]\n[[listener.tls.certificate]]\ncert = \"{}\"\nkey = \"{}\"\n\
         [listener.client_auth]\nmode = \"required\"\nca = [\"{}\"]\n",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.client_ca.display()
    );
    let listener = |name: &str| {
        format!(
            "\n[[listener]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nupstream = \"core\"\n{tls_tables}"
        )
    };
    let mut cb = ConfigBuilder::new(&pki, backend1.addr);
    // The "old" listener is appended after the upstream table.
    cb.extra_upstream = listener("old");
    let config = cb.write(pki.dir.path());
    let gw = start_gateway(&config).await;
    let agents = gw.addr("agents").unwrap();
    let old = gw.addr("old").unwrap();
    let client = client_config(&pki, Some(&device), &[]);

    let load = Load::start(agents, client.clone(), 16, Duration::from_millis(5), false).await;
    // An in-flight request on the listener about to be removed.
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { get(old, client, "/slow/1500", &[]).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before2 = backend2.count();

    cb.servers = vec![backend2.addr.to_string()];
    cb.extra_upstream = listener("new");
    cb.write(pki.dir.path());
    // The file watcher applies it (an explicit reload may find it done).
    assert!(
        eventually(Duration::from_secs(2), || gw.addr("new").is_some()).await,
        "the config change was not applied"
    );
    let new = gw.addr("new").expect("listener \"new\" is bound");
    assert!(gw.addr("old").is_none());
    let (status, body) = slow.await.unwrap().unwrap();
    assert_eq!(
        (status, &body[..]),
        (http::StatusCode::OK, &b"slow done"[..]),
        "in-flight request on the removed listener completes"
    );
    assert!(
        tokio::net::TcpStream::connect(old).await.is_err(),
        "the removed listener no longer accepts"
    );
    let (status, _) = get(new, client.clone(), "/on-new", &[]).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        backend2
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.path == "/on-new"),
        "the new listener forwards to the new upstream"
    );
    // Keep-alive connections on "agents" now reach the new upstream.
    assert!(
        eventually(Duration::from_secs(2), || backend2.count() > before2 + 50).await,
        "requests on existing keep-alive connections must follow the upstream change"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failures) = load.finish().await;
    println!("requests during the config reload: {ok}");
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert_eq!(metric(&gw, FAILURES), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_whose_address_cannot_be_bound_changes_nothing() {
    let f = Fixture::start().await;
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap();
    let other = Backend::start().await;
    let mut cb = ConfigBuilder::new(&f.pki, other.addr);
    cb.extra_upstream = format!(
        "\n[[listener]]\nname = \"second\"\nlisten = \"{busy_addr}\"\nupstream = \"core\"\n\
         [listener.tls]\n[[listener.tls.certificate]]\ncert = \"{}\"\nkey = \"{}\"\n\
         [listener.client_auth]\nmode = \"off\"\n",
        f.pki.server_cert.display(),
        f.pki.server_key.display()
    );
    cb.write(f.pki.dir.path());
    let err = f.gw.reload().await.unwrap_err().to_string();
    assert!(
        err.contains("second") && err.contains(&busy_addr.to_string()),
        "the error names the listener and address: {err}"
    );
    // The file watcher may have tried the same file first: one or two
    // refused attempts, never a success.
    assert!(metric(&f.gw, FAILURES) >= 1.0);
    assert_eq!(metric(&f.gw, SUCCESSES), 0.0);
    assert_eq!(metric(&f.gw, "certgate_config_last_reload_successful"), 0.0);
    assert!(f.gw.addr("second").is_none());
    // The upstream change in the same file was not applied either.
    let (status, _) = get(f.addr, f.device_client(), "/where", &[]).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(f.backend.last().path, "/where");
    assert_eq!(other.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_gauges_cover_served_certs_and_trusted_cas() {
    let f = Fixture::start().await;
    let text = f.gw.metrics.encode();
    let server = text
        .lines()
        .find(|l| {
            l.starts_with("certgate_certificate_not_after_timestamp_seconds{")
                && l.contains("role=\"server\"")
        })
        .unwrap_or_else(|| panic!("no server cert gauge:\n{text}"));
    assert!(server.contains("listener=\"agents\"") && server.contains("subject=\"CN=localhost\""));
    let value: f64 = server.rsplit(' ').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(value > now, "not_after {value} lies in the future");
    assert!(
        text.contains("role=\"client_ca\",subject=\"CN=test client CA\""),
        "{text}"
    );
    assert!(
        metric(
            &f.gw,
            "certgate_config_last_reload_success_timestamp_seconds"
        ) > now - 60.0
    );
    assert_eq!(metric(&f.gw, "certgate_config_last_reload_successful"), 1.0);
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_listen_address_rebinds_and_tightened_client_auth_closes_anonymous_connections() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let backend = Backend::start().await;
    let first = free_port();
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.listen = first.to_string();
    cb.mode = "off";
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    assert_eq!(gw.addr("agents"), Some(first));
    let anonymous = client_config(&pki, None, &[]);
    let open = h1_sender(first, anonymous.clone()).await.unwrap();
    let (status, _) = get(first, anonymous.clone(), "/anon", &[]).await.unwrap();
    assert_eq!(status, 200);

    // Same address, client certificates now required: the anonymous
    // connection is closed, new anonymous handshakes are refused.
    cb.mode = "required";
    cb.write(pki.dir.path());
    gw.reload().await.unwrap();
    assert!(
        eventually(Duration::from_secs(2), || open.is_closed()).await,
        "an open connection without a certificate must be closed once certificates are required"
    );
    assert!(get(first, anonymous.clone(), "/anon", &[]).await.is_err());
    let with_cert = client_config(&pki, Some(&device), &[]);
    let (status, _) = get(first, with_cert.clone(), "/cert", &[]).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        metric(
            &gw,
            "certgate_connections_closed_by_policy_total{listener=\"agents\",reason=\"no_certificate\"}"
        ) >= 1.0,
        "{}",
        gw.metrics.encode()
    );

    // A new listen address: bound, and the old one released.
    let second = free_port();
    cb.listen = second.to_string();
    cb.write(pki.dir.path());
    gw.reload().await.unwrap();
    assert!(
        eventually(Duration::from_secs(2), || gw.addr("agents") == Some(second)).await,
        "listener must move to {second}"
    );
    let (status, _) = get(second, with_cert.clone(), "/moved", &[]).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        eventually(Duration::from_secs(2), || std::net::TcpStream::connect(
            first
        )
        .is_err())
        .await,
        "the old address must be released"
    );
    assert!(
        std::net::TcpListener::bind(first).is_ok(),
        "the old port is free for others"
    );
}
