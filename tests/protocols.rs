//! Behaviour: WebSocket upgrades pass through; HTTP/2 clients are served
//! and forwarded to the backend as HTTP/1.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn websocket_echo_through_the_gateway() {
    let Fixture {
        pki,
        device,
        backend,
        gw: _gw,
        addr,
    } = Fixture::start().await;

    let tls = tls_connect(addr, client_config(&pki, Some(&device), &[b"http/1.1"]))
        .await
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("wss://localhost/ws", tls)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        ws_echo(&mut ws, Message::text(format!("hello {i}"))).await;
    }
    ws_echo(&mut ws, Message::binary(vec![7u8; 1 << 20])).await;
    ws.close(None).await.unwrap();

    // The backend saw the upgrade handshake with the device identity.
    let seen = backend.last();
    assert_eq!(seen.path, "/ws");
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert_eq!(
        seen.headers["x-client-cert-fingerprint"],
        sha256_hex(&device.der).as_str()
    );
}

#[tokio::test]
async fn http2_client_is_served_and_backend_gets_http11() {
    let Fixture {
        pki,
        device,
        backend,
        gw: _gw,
        addr,
    } = Fixture::start().await;

    let tls = tls_connect(addr, client_config(&pki, Some(&device), &[b"h2"]))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);

    // Several requests multiplexed on one connection.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let req = http::Request::post(format!("https://localhost:{}/upload", addr.port()))
            .body(Full::new(bytes::Bytes::from(vec![b'x'; 1000 + i])))
            .unwrap();
        tasks.push(sender.send_request(req));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let resp = t.await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).starts_with(&format!("{} ", 1000 + i)));
    }
    let seen = backend.last();
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(
        seen.headers["host"],
        format!("localhost:{}", addr.port()).as_str()
    );
    assert_eq!(seen.headers["x-client-verify"], "SUCCESS");
    assert_eq!(
        seen.headers["x-client-cert-fingerprint"],
        sha256_hex(&device.der).as_str()
    );
}
