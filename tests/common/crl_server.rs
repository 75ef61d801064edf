//! A CRL publication point on loopback: serves whatever the test publishes
//! at any path, with an ETag (conditional GET answered 304), and can be
//! told to misbehave (huge answers) or go away.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[derive(Default)]
struct State {
    /// Path → body.
    bodies: std::collections::HashMap<String, Vec<u8>>,
    /// Answer with a body this large instead (Content-Length declared).
    huge: Option<usize>,
    /// Path → Location: answered 302.
    redirects: std::collections::HashMap<String, String>,
    hits: usize,
    not_modified: usize,
}

pub struct CrlServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

fn etag(body: &[u8]) -> String {
    format!("\"{}\"", &super::sha256_hex(body)[..16])
}

impl CrlServer {
    pub async fn start() -> CrlServer {
        Self::start_with(None).await
    }

    /// The same over HTTPS with this server certificate and key (PEM files).
    pub async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> CrlServer {
        use rustls::pki_types::pem::PemObject;
        let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> CrlServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<Mutex<State>> = Arc::default();
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let st = st.clone();
                        async move {
                            let mut s = st.lock().unwrap();
                            s.hits += 1;
                            if let Some(n) = s.huge {
                                return Ok::<_, Infallible>(
                                    http::Response::builder()
                                        .header("content-length", n.to_string())
                                        .body(Full::new(Bytes::from(vec![0u8; n])))
                                        .unwrap(),
                                );
                            }
                            if let Some(to) = s.redirects.get(req.uri().path()) {
                                return Ok(http::Response::builder()
                                    .status(302)
                                    .header("location", to.as_str())
                                    .body(Full::new(Bytes::new()))
                                    .unwrap());
                            }
                            let Some(body) = s.bodies.get(req.uri().path()).cloned() else {
                                return Ok(http::Response::builder()
                                    .status(404)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap());
                            };
                            let tag = etag(&body);
                            let matches = req
                                .headers()
                                .get("if-none-match")
                                .is_some_and(|v| v.as_bytes() == tag.as_bytes());
                            if matches {
                                s.not_modified += 1;
                                return Ok(http::Response::builder()
                                    .status(304)
                                    .header("etag", tag)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap());
                            }
                            Ok(http::Response::builder()
                                .header("etag", tag)
                                .header("content-type", "application/pkix-crl")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap())
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                    }
                });
            }
        });
        CrlServer { addr, state, task }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The https:// URL of `path` (a server started with `start_tls`).
    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// Serves `body` at `path` from now on.
    pub fn publish(&self, path: &str, body: Vec<u8>) {
        self.state
            .lock()
            .unwrap()
            .bodies
            .insert(path.to_string(), body);
    }

    /// Answers `path` with a redirect to `to` (or stops, with `None`).
    pub fn redirect(&self, path: &str, to: Option<&str>) {
        let mut s = self.state.lock().unwrap();
        match to {
            Some(t) => s.redirects.insert(path.to_string(), t.to_string()),
            None => s.redirects.remove(path),
        };
    }

    /// Answers every request with `n` zero bytes (or stops doing so).
    pub fn huge(&self, n: Option<usize>) {
        self.state.lock().unwrap().huge = n;
    }

    /// Requests answered, and of those 304s.
    pub fn hits(&self) -> (usize, usize) {
        let s = self.state.lock().unwrap();
        (s.hits, s.not_modified)
    }

    /// Stops accepting: the port refuses connections from now on.
    pub fn go_away(self) {
        self.task.abort();
    }
}
