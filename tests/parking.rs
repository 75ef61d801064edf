//! Behaviour: a keep-alive connection idle for a moment is parked outside
//! HTTP (no HTTP buffers held) and comes back for whatever the client
//! sends next: pipelined requests, a WebSocket upgrade, its close_notify;
//! a block still closes it at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const PARKED: &str = "certgate_connections_parked{listener=\"agents\"}";
const ACTIVE: &str = "certgate_connections_active{listener=\"agents\"}";

/// Reads `n` responses (each framed by Content-Length) from `s` and gives
/// their statuses and bodies, within 5 s.
async fn responses(s: &mut (impl AsyncRead + Unpin), n: usize) -> Vec<(u16, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.len() < n {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = resp.parse(&buf) {
            let len: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .expect("a response with Content-Length");
            if buf.len() >= head + len {
                out.push((resp.code.unwrap(), buf[head..head + len].to_vec()));
                buf.drain(..head + len);
                continue;
            }
        }
        let mut chunk = [0u8; 16384];
        let left = deadline.saturating_duration_since(Instant::now());
        let got = tokio::time::timeout(left, s.read(&mut chunk))
            .await
            .expect("responses within 5 s")
            .unwrap();
        assert!(got > 0, "connection closed after {} responses", out.len());
        buf.extend_from_slice(&chunk[..got]);
    }
    assert!(buf.is_empty(), "bytes after the last response");
    out
}

async fn parked_is(gw: &certgate::Gateway, n: f64) -> bool {
    eventually(Duration::from_secs(3), || metric(gw, PARKED) == n).await
}

#[tokio::test]
async fn pipelined_requests_that_arrive_while_parked_are_all_answered_in_order() {
    let f = Fixture::start().await;
    // Without ALPN (as legacy agents) and with http/1.1.
    for (round, alpn) in [&[][..], &[&b"http/1.1"[..]][..]].into_iter().enumerate() {
        let mut tls = tls_connect(f.addr, client_config(&f.pki, Some(&f.device), alpn))
            .await
            .unwrap();
        tls.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(responses(&mut tls, 1).await[0].0, 200);
        assert!(
            parked_is(&f.gw, 1.0).await,
            "round {round}: parked when idle"
        );

        // Three requests in one write, the last with a body.
        tls.write_all(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /b HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await
        .unwrap();
        let got = responses(&mut tls, 3).await;
        assert!(got.iter().all(|(s, _)| *s == 200), "{got:?}");
        // The upload route answers with the body's length first.
        assert!(
            String::from_utf8_lossy(&got[2].1).starts_with("5 "),
            "{got:?}"
        );
        let paths: Vec<String> = f
            .backend
            .seen()
            .iter()
            .rev()
            .take(4)
            .map(|s| s.path.clone())
            .collect();
        assert_eq!(paths, ["/upload", "/b", "/a", "/one"], "round {round}");
        // Idle again: parked again, and it still serves.
        assert!(parked_is(&f.gw, 1.0).await);
        tls.write_all(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(responses(&mut tls, 1).await[0].0, 200);
        drop(tls);
        assert!(parked_is(&f.gw, 0.0).await);
    }
}

/// A device's connection that has served one request for `path` and is
/// now parked.
async fn parked_after(
    f: &Fixture,
    path: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tls = tls_connect(f.addr, f.device_client()).await.unwrap();
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(responses(&mut tls, 1).await[0].0, 200);
    assert!(parked_is(&f.gw, 1.0).await);
    tls
}

#[tokio::test]
async fn a_websocket_upgrade_after_parking_works() {
    let f = Fixture::start().await;
    let tls = parked_after(&f, "/before").await;

    let (mut ws, resp) = tokio_tungstenite::client_async("wss://localhost/ws", tls)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    assert!(parked_is(&f.gw, 0.0).await);
    for i in 0..5 {
        ws_echo(&mut ws, Message::text(format!("after parking {i}"))).await;
    }
    // A tunnel is not an idle HTTP connection: never parked.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(metric(&f.gw, PARKED), 0.0);
    ws_echo(&mut ws, Message::binary(vec![9u8; 100_000])).await;
    ws.close(None).await.unwrap();
    assert_eq!(f.backend.last().path, "/ws");
}

#[tokio::test]
async fn close_notify_on_a_parked_connection_is_answered_with_close_notify() {
    let f = Fixture::start().await;
    let mut tls = parked_after(&f, "/x").await;
    assert_eq!(metric(&f.gw, ACTIVE), 1.0);

    // close_notify, then the write side's end.
    tls.shutdown().await.unwrap();
    let mut rest = Vec::new();
    // A clean end: the gateway's close_notify (without it, rustls reports
    // an unexpected end of file).
    let r = tokio::time::timeout(Duration::from_secs(2), tls.read_to_end(&mut rest))
        .await
        .expect("closed within 2 s");
    assert!(r.is_ok(), "no close_notify from the gateway: {r:?}");
    assert!(rest.is_empty());
    assert!(parked_is(&f.gw, 0.0).await);
    assert!(eventually(Duration::from_secs(2), || metric(&f.gw, ACTIVE) == 0.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_closes_a_parked_connection_at_once() {
    let f = Fixture::with(|cb| {
        let dir = cb.cert.parent().unwrap().to_path_buf();
        cb.extra_top = registry_table(&dir, "auto");
    })
    .await;
    let admin = f.gw.admin_addr().unwrap();
    let mut tls = parked_after(&f, "/x").await;

    let fp = sha256_hex(&f.device.der);
    let blocked_at = Instant::now();
    let (s, v) = device_action(admin, &fp, "block").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(1), tls.read_to_end(&mut rest)).await;
    assert!(
        r.is_ok(),
        "the parked connection of a blocked device must close within 1 s"
    );
    println!(
        "parked connection closed {:?} after the block",
        blocked_at.elapsed()
    );
    assert!(parked_is(&f.gw, 0.0).await);
    assert!(
        metric(
            &f.gw,
            "certgate_connections_closed_by_policy_total{listener=\"agents\",reason=\"blocked\"}"
        ) >= 1.0
    );
}

#[tokio::test]
async fn an_http2_client_without_alpn_is_told_apart_by_its_preface() {
    let f = Fixture::start().await;
    let tls = tls_connect(f.addr, f.device_client()).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("https://localhost:{}/h2", f.addr.port()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    resp.into_body().collect().await.unwrap();
    assert_eq!(f.backend.last().path, "/h2");
    // HTTP/2 connections are not parked (hyper's HTTP/2 server keeps its
    // own state and pings).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(metric(&f.gw, PARKED), 0.0);
}
