//! Real clients: rustls (HTTP/1.1, HTTP/2, WebSocket), the admin API over
//! HTTP, what a handshake presents or refuses with.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use super::*;

pub fn client_config(
    pki: &Pki,
    client: Option<&ClientCert>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&pki.server_ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some(c) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(&c.cert)
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_file(&c.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

pub async fn tls_connect(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(cfg);
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// Whether a TLS handshake from source address `from` (another loopback
/// address, so another source for per-source limits) succeeds.
pub async fn handshake_from(from: &str, addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> bool {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let tcp = sock.connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .is_ok()
}

/// An HTTP/1.1 sender over a fresh mTLS connection.
pub async fn h1_sender(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<
    hyper::client::conn::http1::SendRequest<
        http_body_util::combinators::BoxBody<Bytes, Infallible>,
    >,
    BoxError,
> {
    let tls = tls_connect(addr, cfg).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

pub fn empty() -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    Empty::new().boxed()
}

/// One GET over a fresh connection; the status and the whole body.
pub async fn get(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, Bytes), BoxError> {
    let mut sender = h1_sender(addr, cfg).await?;
    let mut req = Request::get(path).header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender.send_request(req.body(empty())?).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// The leaf certificate a new handshake is given.
pub async fn presented_cert(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<CertificateDer<'static>, BoxError> {
    let tls = tls_connect(addr, cfg).await?;
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .ok_or("no server cert")?;
    Ok(certs[0].clone().into_owned())
}

/// Polls with new handshakes until one presents `want`; how long it took,
/// or `None` after `limit`.
pub async fn wait_for_cert(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    want: &CertificateDer<'static>,
    since: std::time::Instant,
    limit: Duration,
) -> Option<Duration> {
    while since.elapsed() < limit {
        if let Ok(c) = presented_cert(addr, cfg.clone()).await
            && c == *want
        {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// `cfg` without session resumption: every handshake is full and shows the
/// certificate the server serves now.
pub fn no_resumption(cfg: &Arc<rustls::ClientConfig>) -> Arc<rustls::ClientConfig> {
    let mut c = (**cfg).clone();
    c.resumption = rustls::client::Resumption::disabled();
    Arc::new(c)
}

/// One plain-HTTP request (admin API); status and body.
pub async fn http_plain(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> Result<(StatusCode, String), BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(empty())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Sends `msg` on a WebSocket and asserts it comes back (5 s).
pub async fn ws_echo<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    msg: tokio_tungstenite::tungstenite::Message,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(msg.clone()).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(back, msg);
}

/// `POST /api/devices/{fp}/{action}` (approve, block, unblock) without a token.
pub async fn device_action(
    addr: SocketAddr,
    fp: &str,
    action: &str,
) -> (StatusCode, serde_json::Value) {
    admin_call(
        addr,
        "POST",
        &format!("/api/devices/{fp}/{action}"),
        None,
        None,
    )
    .await
}

/// A JSON admin API call with an optional bearer token and body.
pub async fn admin_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body)).boxed()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::json!({"raw": String::from_utf8_lossy(&bytes)}));
    (status, v)
}

/// The TLS alert a refused handshake ended with, if any.
pub fn alert_of(e: &std::io::Error) -> Option<rustls::AlertDescription> {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(a)) => Some(*a),
        _ => None,
    }
}

/// Runs `openssl s_client -connect 127.0.0.1:PORT ARGS` (bounded by
/// `timeout 10`, with `OPENSSL_CONF` cleared so that OpenSSL offers what it
/// is told instead of its distribution's policy), writes `request` and
/// returns everything it printed.
pub async fn openssl_s_client(port: u16, args: &[std::ffi::OsString], request: &[u8]) -> String {
    use tokio::io::AsyncWriteExt as _;
    require_tool("openssl");
    let mut child = tokio::process::Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .env("OPENSSL_CONF", "/dev/null")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(request).await;
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The error a full handshake ends with (the server's alert, read on the
/// client's first read after a TLS 1.2 handshake).
pub async fn tls_handshake_error(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Error {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    match tls_connect(addr, cfg).await {
        Err(e) => e,
        Ok(mut s) => {
            let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Err(e)) => e,
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
    }
}

/// Whether a new full handshake with `cfg` is admitted (a request gets an
/// answer) or refused (the alert, if the server sent one).
pub async fn admitted(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<(), Option<rustls::AlertDescription>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = match tls_connect(addr, cfg).await {
        Err(e) => return Err(alert_of(&e)),
        Ok(s) => s,
    };
    let _ = s
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(Ok(_)) => Err(None),
        Ok(Err(e)) => Err(alert_of(&e)),
        Err(_) => panic!("no answer and no refusal within 5 s"),
    }
}
