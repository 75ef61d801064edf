//! Behaviour: a listener behind an L4 balancer (`proxy_protocol`,
//! `proxy_from`). A real HAProxy in TCP mode with `send-proxy-v2` (and its
//! LOCAL health checks) in front of certgate: the backend, the registry and
//! the per-source limits see the client's address, not the balancer's; a
//! connection from outside `proxy_from` is closed before TLS, and so is one
//! from a balancer address without a valid header. v1 headers too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use tokio::io::AsyncWriteExt as _;

/// The failed-handshake counters with a count.
fn failures(gw: &certgate::Gateway) -> Vec<String> {
    gw.metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("certgate_tls_handshake_failures_total{") && !l.ends_with(" 0"))
        .map(str::to_string)
        .collect()
}

fn refused(gw: &certgate::Gateway, reason: &str) -> f64 {
    metric(
        gw,
        &format!("certgate_connections_refused_total{{listener=\"agents\",reason=\"{reason}\"}}"),
    )
}

/// Must-show 4 of the scale-out issue: through HAProxy (send-proxy-v2),
/// the backend's X-Forwarded-For, the registry's last address and the
/// per-source limit are the client's (127.0.0.2), not HAProxy's
/// (127.0.0.1); HAProxy's LOCAL health checks are neither refused nor
/// counted as clients; a direct connection from 127.0.0.3 (not in
/// proxy_from) and one from 127.0.0.1 without a header, or with a
/// malformed one, are closed before TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_the_client_address_comes_from_the_proxy_header_and_only_the_balancer_may_send_one()
 {
    let mut pki = Pki::new();
    let device = pki.client("behind-balancer", Kind::Good);
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_listener =
        "proxy_protocol = \"v2\"\nproxy_from = [\"127.0.0.1\"]\nmax_connections_per_source = 2\n"
            .into();
    cb.extra_top = registry_table(pki.dir.path(), "auto");
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let admin = gw.admin_addr().unwrap();
    let lb = Haproxy::start(addr);
    let cfg = no_resumption(&client_config(&pki, Some(&device), &[]));
    // Haproxy::start's own probe connected through to certgate and closed:
    // one failed handshake (io) that is the test's, counted before the
    // checks run.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before_checks = failures(&gw);

    // Through the balancer, from 127.0.0.2.
    let status = get_over(tcp_from("127.0.0.2", lb.addr).await, cfg.clone(), "/via-lb")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let seen = backend.last();
    assert_eq!(seen.path, "/via-lb");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.2");
    let (s, v) = admin_call(
        admin,
        "GET",
        &format!("/api/devices/{}", sha256_hex(&device.der)),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["last_peer"], "127.0.0.2", "{v}");

    // The per-source limit (2) counts 127.0.0.2's connections, not
    // HAProxy's: two held through the balancer, a third is refused, while
    // 127.0.0.4 still gets in through the same balancer.
    let mut held = Vec::new();
    for _ in 0..2 {
        let tls = tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp_from("127.0.0.2", lb.addr).await,
            )
            .await
            .unwrap();
        held.push(tls);
    }
    let third = get_over(tcp_from("127.0.0.2", lb.addr).await, cfg.clone(), "/third").await;
    assert!(
        third.is_err(),
        "a third connection from 127.0.0.2 was served"
    );
    assert!(
        eventually(Duration::from_secs(2), || refused(&gw, "per_source_limit")
            >= 1.0)
        .await
    );
    let other = get_over(tcp_from("127.0.0.4", lb.addr).await, cfg.clone(), "/other")
        .await
        .unwrap();
    assert_eq!(other, 200);
    assert_eq!(backend.last().headers["x-forwarded-for"], "127.0.0.4");
    drop(held);

    // Directly from 127.0.0.3, not a balancer: closed before TLS.
    assert!(
        get_over(tcp_from("127.0.0.3", addr).await, cfg.clone(), "/direct")
            .await
            .is_err()
    );
    assert!(eventually(Duration::from_secs(2), || refused(&gw, "proxy_from") >= 1.0).await);

    // HAProxy checks every 200 ms with LOCAL headers and closes: none was
    // refused, none counted as a failed handshake.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        refused(&gw, "proxy_header"),
        0.0,
        "a health check was refused"
    );
    assert_eq!(
        failures(&gw),
        before_checks,
        "health checks counted as handshake failures"
    );

    // From the balancer's address but without a header, or with a
    // malformed one: closed, counted.
    assert!(
        get_over(tcp_from("127.0.0.1", addr).await, cfg.clone(), "/no-header")
            .await
            .is_err()
    );
    let mut bad = tcp_from("127.0.0.1", addr).await;
    // The v2 signature, then version 1 in the version nibble.
    bad.write_all(b"\r\n\r\n\0\r\nQUIT\n\x11\x11\x00\x0c")
        .await
        .unwrap();
    bad.write_all(&[0; 12]).await.unwrap();
    assert!(get_over(bad, cfg.clone(), "/bad-header").await.is_err());
    assert!(
        eventually(Duration::from_secs(2), || refused(&gw, "proxy_header")
            >= 2.0)
        .await
    );
    assert_eq!(
        backend.last().path,
        "/other",
        "a refused connection reached the backend"
    );
    drop(lb);
    gw.shutdown().await;
}

/// `proxy_protocol = "v1"`: the text header names the client; `UNKNOWN`
/// keeps the balancer's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_header_names_the_client_and_unknown_keeps_the_balancer() {
    let mut pki = Pki::new();
    let device = pki.client("v1-device", Kind::Good);
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_listener = "proxy_protocol = \"v1\"\nproxy_from = [\"127.0.0.0/30\"]\n".into();
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let cfg = no_resumption(&client_config(&pki, Some(&device), &[]));

    let mut tcp = tcp_from("127.0.0.1", addr).await;
    tcp.write_all(b"PROXY TCP4 192.0.2.44 127.0.0.1 40000 443\r\n")
        .await
        .unwrap();
    assert_eq!(get_over(tcp, cfg.clone(), "/v1").await.unwrap(), 200);
    assert_eq!(backend.last().headers["x-forwarded-for"], "192.0.2.44");

    let mut tcp = tcp_from("127.0.0.2", addr).await;
    tcp.write_all(b"PROXY UNKNOWN\r\n").await.unwrap();
    assert_eq!(get_over(tcp, cfg.clone(), "/unknown").await.unwrap(), 200);
    assert_eq!(backend.last().headers["x-forwarded-for"], "127.0.0.2");

    let mut tcp = tcp_from("127.0.0.1", addr).await;
    tcp.write_all(b"PROXY TCP4 not-an-address 127.0.0.1 1 443\r\n")
        .await
        .unwrap();
    assert!(get_over(tcp, cfg, "/bad").await.is_err());
    assert!(
        eventually(Duration::from_secs(2), || refused(&gw, "proxy_header")
            >= 1.0)
        .await
    );
    gw.shutdown().await;
}

/// Config: proxy_protocol needs proxy_from and the other way round, and a
/// version certgate knows.
#[test]
fn proxy_protocol_and_proxy_from_come_together() {
    let pki = Pki::new();
    for (lines, want) in [
        ("proxy_protocol = \"v2\"\n", "proxy_from"),
        ("proxy_from = [\"10.0.0.5\"]\n", "set proxy_protocol"),
        (
            "proxy_protocol = \"v3\"\nproxy_from = [\"10.0.0.5\"]\n",
            "not a PROXY protocol version",
        ),
        (
            "proxy_protocol = \"v2\"\nproxy_from = [\"10.0.0.300\"]\n",
            "proxy_from[0]",
        ),
    ] {
        let mut cb = ConfigBuilder::new(&pki, "127.0.0.1:9".parse().unwrap());
        cb.extra_listener = lines.into();
        let err = certgate_fails("check", &cb.write(pki.dir.path()));
        assert!(err.contains(want), "{lines}: {err}");
    }
}
