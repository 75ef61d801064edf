//! A real HAProxy in TCP mode with `send-proxy-v2` in front of certgate
//! listeners, and clients that connect through it from a chosen loopback
//! address.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;

use super::*;

/// HAProxy in the foreground (`-db`) on a free loopback port, one server
/// with `send-proxy-v2` and health checks every 200 ms; stopped (by PID)
/// when dropped.
pub struct Haproxy {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    pub fn start(server: SocketAddr) -> Haproxy {
        Haproxy::start_many(&[server])
    }

    /// Round robin over `servers`, each with `send-proxy-v2` and checks.
    pub fn start_many(servers: &[SocketAddr]) -> Haproxy {
        require_tool("haproxy");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("haproxy.cfg");
        let lines: String = servers
            .iter()
            .enumerate()
            .map(|(i, s)| format!("    server gw{i} {s} send-proxy-v2 check inter 200ms\n"))
            .collect();
        std::fs::write(
            &conf,
            format!(
                "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
                 frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n\
                 backend be\n    balance roundrobin\n{lines}"
            ),
        )
        .unwrap();
        let check = std::process::Command::new("haproxy")
            .args(["-c", "-q", "-f"])
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "haproxy -c: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = std::process::Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Haproxy {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection to `to` from the loopback address `from`.
pub async fn tcp_from(from: &str, to: SocketAddr) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

/// One GET over TLS on an already connected stream (after whatever the
/// caller wrote on it).
pub async fn get_over(
    tcp: tokio::net::TcpStream,
    cfg: std::sync::Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<StatusCode, BoxError> {
    use http_body_util::BodyExt as _;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            http::Request::get(path)
                .header("host", "localhost")
                .body(empty())?,
        )
        .await?;
    let status = resp.status();
    resp.into_body().collect().await?;
    Ok(status)
}
