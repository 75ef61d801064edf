//! HTTP strictness toward the legacy backend: a request whose framing two
//! parsers could read differently never reaches it (request smuggling).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Sends raw bytes over a fresh mTLS connection; the status code of the
/// answer (0 if the connection closed without one) and whether the
/// connection was closed afterwards.
async fn raw(f: &Fixture, request: &[u8]) -> (u16, bool) {
    let mut tls = tls_connect(f.addr, f.device_client()).await.unwrap();
    tls.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut closed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match tokio::time::timeout_at(deadline, tls.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_requests_get_400_close_and_never_reach_the_backend() {
    let f = Fixture::start().await;
    let cases: [(&str, &[u8]); 10] = [
        (
            "Content-Length and Transfer-Encoding",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "two identical Content-Length",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        (
            "two identical Content-Length, bare LF line ends",
            b"POST /a HTTP/1.1\nHost: x\nContent-Length: 4\nContent-Length: 4\n\nabcd",
        ),
        (
            "a Content-Length list",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\nabcd",
        ),
        (
            "several Transfer-Encoding headers",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "two different Content-Length",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        ),
        (
            "unknown transfer coding",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "obs-fold",
            b"GET /a HTTP/1.1\r\nHost: x\r\nX-Long: a\r\n b\r\n\r\n",
        ),
        (
            "whitespace before the colon",
            b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length : 0\r\n\r\n",
        ),
        // The head is forwarded before the body is read (streaming); the
        // backend connection is dropped at the bad chunk, so the backend
        // never gets a complete request, and nothing after it.
        (
            "invalid chunk size",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        ),
    ];
    for (i, (what, request)) in cases.into_iter().enumerate() {
        let before = f.backend.count();
        // A second, valid request pipelined behind the bad one: what a
        // smuggler would hide there must not reach the backend either.
        let mut bytes = request.to_vec();
        bytes.extend_from_slice(format!("GET /after-{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let (status, closed) = raw(&f, &bytes).await;
        println!("{what}: {status}, closed={closed}");
        assert_eq!(status, 400, "{what}");
        assert!(closed, "{what}: the connection must be closed");
        let seen: Vec<String> = f.backend.seen.lock().unwrap()[before..]
            .iter()
            .map(|s| s.path.clone())
            .collect();
        if what == "invalid chunk size" {
            // At most the head of the cut-off request (depending on how far
            // the upstream request got before the bad chunk), never more.
            assert!(seen.is_empty() || seen == ["/a"], "{what}: {seen:?}");
        } else {
            assert!(seen.is_empty(), "{what}: the backend received {seen:?}");
        }
    }
    // A clean request on the same kind of connection still works.
    let (status, _) = raw(
        &f,
        b"GET /fine HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
}

/// A backend that answers every request with the raw `response` bytes
/// (reading one request head first) and closes.
async fn raw_backend(response: &'static [u8]) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let _ = s.write_all(response).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_response_with_content_length_and_chunked_arrives_whole() {
    // Content-Length says 5, the chunked body is 26 bytes: Transfer-Encoding
    // wins (RFC 9112 §6.3), and the client must get all 26.
    let backend = raw_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\
          Content-Type: text/plain\r\n\r\n\
          d\r\nabcdefghijklm\r\nd\r\nnopqrstuvwxyz\r\n0\r\n\r\n",
    )
    .await;
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let cb = ConfigBuilder::new(&pki, backend);
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    for http2 in [false, true] {
        let alpn: &[&[u8]] = if http2 { &[b"h2"] } else { &[b"http/1.1"] };
        let cfg = client_config(&pki, Some(&device), alpn);
        let (status, body) = if http2 {
            let tls = tls_connect(addr, cfg).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tls),
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            let req = http::Request::get("https://localhost/both")
                .body(empty())
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let status = resp.status();
            use http_body_util::BodyExt as _;
            (status, resp.into_body().collect().await.unwrap().to_bytes())
        } else {
            get(addr, cfg, "/both", &[]).await.unwrap()
        };
        assert_eq!(status, 200, "http2={http2}");
        assert_eq!(
            &body[..],
            b"abcdefghijklmnopqrstuvwxyz",
            "http2={http2}: the body must arrive whole, not cut to the Content-Length"
        );
    }
}
