//! Shared test fixtures: a PKI made with rcgen per test, a real HTTP
//! backend that records what reached it, a gateway started on ephemeral
//! loopback ports, and a rustls client.
#![allow(dead_code, unreachable_pub, missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

// ---------------------------------------------------------------------------
// PKI
// ---------------------------------------------------------------------------

/// A client certificate written to disk.
#[derive(Clone, Debug)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
    pub serial: Vec<u8>,
}

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub server_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_ca: PathBuf,
    client_issuer: CertifiedIssuer<'static, KeyPair>,
    server_issuer: CertifiedIssuer<'static, KeyPair>,
    next_serial: u8,
}

/// A server certificate and its key, as PEM, plus the leaf DER.
pub struct ServerPair {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

/// Parameters of a CA certificate named `cn` (CA:TRUE, keyCertSign, cRLSign).
pub fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// How a client certificate should be made.
pub enum Kind {
    Good,
    Expired,
    NotYetValid,
    SelfSigned,
    ForeignCa,
    /// Signed by a different key under the trusted CA's exact name: a
    /// forged CA.
    ForgedCa,
    /// Valid now, expiring in the given number of seconds.
    ExpiresIn(i64),
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let server_ca =
            CertifiedIssuer::self_signed(ca_params("test server CA"), KeyPair::generate().unwrap())
                .unwrap();
        let mut p =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "localhost");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().unwrap();
        let server = p.signed_by(&server_key, &server_ca).unwrap();
        let client_issuer =
            CertifiedIssuer::self_signed(ca_params("test client CA"), KeyPair::generate().unwrap())
                .unwrap();

        let w = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let server_ca_path = w("server-ca.pem", &server_ca.pem());
        let server_ca = server_ca;
        let server_cert = w("server.pem", &server.pem());
        let server_key = w("server.key", &server_key.serialize_pem());
        let client_ca = w("client-ca.pem", &client_issuer.pem());
        Pki {
            server_ca: server_ca_path,
            server_cert,
            server_key,
            client_ca,
            client_issuer,
            server_issuer: server_ca,
            dir,
            next_serial: 1,
        }
    }

    /// A new server certificate for localhost (its own key) from the server
    /// CA, as PEM; nothing is written.
    pub fn server_pair(&self, cn: &str) -> ServerPair {
        let mut p =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.server_issuer).unwrap();
        ServerPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// Replaces the client CA with a new one (a new key and name) and
    /// returns its PEM; devices issued from now on chain to it. The file
    /// `client_ca` is not touched.
    pub fn new_client_ca(&mut self, cn: &str) -> String {
        self.client_issuer =
            CertifiedIssuer::self_signed(ca_params(cn), KeyPair::generate().unwrap()).unwrap();
        self.client_issuer.pem()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues a client certificate of the given kind, named `cn`.
    pub fn client(&mut self, cn: &str, kind: Kind) -> ClientCert {
        let mut name = rcgen::DistinguishedName::new();
        name.push(DnType::OrganizationName, "Fleet");
        name.push(DnType::CommonName, cn);
        self.client_named(cn, name, kind)
    }

    /// Issues a client certificate with the subject `name`, written to
    /// `file.pem` / `file.key`.
    pub fn client_named(
        &mut self,
        file: &str,
        name: rcgen::DistinguishedName,
        kind: Kind,
    ) -> ClientCert {
        let cn = file;
        let serial = vec![0x10, self.next_serial];
        self.next_serial += 1;
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = name;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        p.not_before = now() - time::Duration::days(1);
        p.not_after = now() + time::Duration::days(30);
        match kind {
            Kind::Expired => {
                p.not_before = now() - time::Duration::days(30);
                p.not_after = now() - time::Duration::days(1);
            }
            Kind::NotYetValid => {
                p.not_before = now() + time::Duration::days(1);
                p.not_after = now() + time::Duration::days(30);
            }
            Kind::ExpiresIn(secs) => {
                p.not_after = now() + time::Duration::seconds(secs);
            }
            _ => {}
        }
        let key = KeyPair::generate().unwrap();
        let cert = match kind {
            Kind::SelfSigned => p.self_signed(&key).unwrap(),
            Kind::ForeignCa | Kind::ForgedCa => {
                let name = if matches!(kind, Kind::ForgedCa) {
                    "test client CA"
                } else {
                    "some other CA"
                };
                let foreign =
                    CertifiedIssuer::self_signed(ca_params(name), KeyPair::generate().unwrap())
                        .unwrap();
                p.signed_by(&key, &foreign).unwrap()
            }
            _ => p.signed_by(&key, &self.client_issuer).unwrap(),
        };
        let cert_path = self.path(&format!("{cn}.pem"));
        let key_path = self.path(&format!("{cn}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        ClientCert {
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
            serial,
        }
    }

    /// `n` distinct device certificates from the client CA (one shared key,
    /// distinct names and serials), as client configs; nothing is written.
    pub fn many_clients(&self, n: usize) -> Vec<Arc<rustls::ClientConfig>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.server_ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let roots = Arc::new(roots);
        let key = KeyPair::generate().unwrap();
        let key_der = key.serialize_der();
        (0..n)
            .map(|i| {
                let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
                p.distinguished_name = rcgen::DistinguishedName::new();
                p.distinguished_name
                    .push(DnType::CommonName, format!("burst-{i}"));
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                p.serial_number = Some(SerialNumber::from((1u64 << 40) + i as u64));
                p.not_before = now() - time::Duration::days(1);
                p.not_after = now() + time::Duration::days(30);
                let cert = p.signed_by(&key, &self.client_issuer).unwrap();
                let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots.clone())
                    .with_client_auth_cert(
                        vec![cert.der().clone()],
                        PrivateKeyDer::try_from(key_der.clone()).unwrap(),
                    )
                    .unwrap();
                cfg.resumption = rustls::client::Resumption::disabled();
                Arc::new(cfg)
            })
            .collect()
    }

    /// Writes a CRL from the client CA whose nextUpdate has passed.
    pub fn stale_crl(&self, name: &str) -> PathBuf {
        let params = CertificateRevocationListParams {
            this_update: now() - time::Duration::days(8),
            next_update: now() - time::Duration::hours(1),
            crl_number: SerialNumber::from(2u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.client_issuer).unwrap();
        let path = self.path(name);
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path
    }

    /// Writes a CRL from the client CA revoking `revoked`; returns its path.
    pub fn crl(&self, name: &str, revoked: &[&ClientCert], pem: bool) -> PathBuf {
        let serials: Vec<&[u8]> = revoked.iter().map(|c| c.serial.as_slice()).collect();
        write_crl(&self.path(name), &self.client_issuer, &serials, pem)
    }
}

/// Writes a CRL signed by `by` revoking `serials` (valid from an hour ago
/// for a week) to `path`, as PEM or DER; returns the path.
pub fn write_crl(
    path: &Path,
    by: &CertifiedIssuer<'static, KeyPair>,
    serials: &[&[u8]],
    pem: bool,
) -> PathBuf {
    let params = CertificateRevocationListParams {
        this_update: now() - time::Duration::hours(1),
        next_update: now() + time::Duration::days(7),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from_slice(s),
                revocation_time: now() - time::Duration::minutes(5),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(by).unwrap();
    if pem {
        std::fs::write(path, crl.pem().unwrap()).unwrap();
    } else {
        std::fs::write(path, crl.der().as_ref()).unwrap();
    }
    path.to_path_buf()
}

// ---------------------------------------------------------------------------
// Backend
// ---------------------------------------------------------------------------

/// What the backend saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub version: http::Version,
    pub headers: HeaderMap,
}

/// A real HTTP/1.1 backend on an ephemeral loopback port.
///
/// Routes: `/download/N` streams N pattern bytes, `/upload` answers the
/// SHA-256 and length of the body, `/slow/MS` answers after MS ms, `/ws`
/// is a WebSocket echo, anything else answers 200 "ok".
pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Backend::serve(listener, Arc::default())
    }

    /// Starts a backend on `addr` again after [`Backend::kill`] (the
    /// listener sets SO_REUSEADDR, so the port is free at once); requests
    /// are recorded in the same `seen` list.
    pub async fn start_on(addr: SocketAddr, seen: Arc<Mutex<Vec<Seen>>>) -> Backend {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot bind {addr} again: {e}"),
            }
        };
        Backend::serve(listener, seen)
    }

    fn serve(listener: TcpListener, seen: Arc<Mutex<Vec<Seen>>>) -> Backend {
        let addr = listener.local_addr().unwrap();
        let seen2 = seen.clone();
        // Connections live in the accept task's JoinSet: aborting the task
        // (drop, kill) closes every one of them, as a killed process would.
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((tcp, _)) = r else { return };
                        let seen = seen2.clone();
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                backend_route(seen.clone(), req)
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tcp), svc)
                                .with_upgrades()
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Backend { addr, seen, task }
    }

    /// Stops accepting and closes every open connection at once, mid-request
    /// or not (a killed backend process).
    pub fn kill(self) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
        self.task.abort();
        (self.addr, self.seen.clone())
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("backend saw no request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

type BackendBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> BackendBody {
    Full::new(b.into()).boxed()
}

/// The deterministic byte pattern `/download/N` serves: byte i is
/// `(i * 31 + i / 4096) mod 251`, so shifted or repeated chunks are caught.
pub fn pattern_chunk(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|j| {
            let i = offset + j;
            ((i.wrapping_mul(31) + i / 4096) % 251) as u8
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of the first `size` pattern bytes.
pub fn pattern_sha256(size: u64) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut off = 0;
    while off < size {
        let n = (size - off).min(256 * 1024) as usize;
        ctx.update(&pattern_chunk(off, n));
        off += n as u64;
    }
    hex(ctx.finish().as_ref())
}

/// A streaming body of `size` pattern bytes, produced chunk by chunk.
pub fn pattern_body(size: u64) -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    let chunk = 64 * 1024u64;
    let stream = futures_util::stream::unfold(0u64, move |off| async move {
        if off >= size {
            return None;
        }
        let n = (size - off).min(chunk);
        let data = Bytes::from(pattern_chunk(off, n as usize));
        Some((Ok::<_, Infallible>(Frame::data(data)), off + n))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

async fn backend_route(
    seen: Arc<Mutex<Vec<Seen>>>,
    mut req: Request<Incoming>,
) -> Result<Response<BackendBody>, Infallible> {
    let path = req.uri().path().to_string();
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: path.clone(),
        version: req.version(),
        headers: req.headers().clone(),
    });
    if let Some(n) = path.strip_prefix("/download/") {
        let size: u64 = n.parse().unwrap_or(0);
        let mut resp = Response::new(pattern_body(size));
        resp.headers_mut()
            .insert(http::header::CONTENT_LENGTH, size.into());
        return Ok(resp);
    }
    if path == "/upload" {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut len = 0u64;
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        len += d.len() as u64;
                        ctx.update(d);
                    }
                }
                Err(_) => {
                    return Ok(Response::builder()
                        .status(400)
                        .body(full("body error"))
                        .unwrap());
                }
            }
        }
        return Ok(Response::new(full(format!(
            "{} {}",
            len,
            hex(ctx.finish().as_ref())
        ))));
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(Response::new(full("slow done")));
    }
    if path == "/ws" {
        let key = req.headers().get("sec-websocket-key").cloned();
        let Some(key) = key else {
            return Ok(Response::builder()
                .status(400)
                .body(full("no key"))
                .unwrap());
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    if ws.send(msg).await.is_err() {
                        return;
                    }
                } else if msg.is_close() {
                    return;
                }
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .body(full(""))
            .unwrap());
    }
    Ok(Response::new(full("ok")))
}

// ---------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------

/// Renders a gateway config with one listener "agents" → upstream "core".
pub struct ConfigBuilder {
    pub listen: String,
    pub servers: Vec<String>,
    pub versions: Option<&'static str>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub mode: &'static str,
    pub ca: Vec<PathBuf>,
    pub crl: Vec<PathBuf>,
    pub extra_listener: String,
    pub extra_upstream: String,
    pub extra_top: String,
    /// Lines added to the [admin] table.
    pub extra_admin: String,
    /// Lines added to [listener.client_auth] (e.g. allow_cn = [...]).
    pub extra_client_auth: String,
    /// Lines added to [listener.tls] (e.g. session_tickets = false).
    pub extra_tls: String,
}

impl ConfigBuilder {
    pub fn new(pki: &Pki, backend: SocketAddr) -> ConfigBuilder {
        ConfigBuilder {
            listen: "127.0.0.1:0".into(),
            servers: vec![backend.to_string()],
            versions: None,
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            mode: "required",
            ca: vec![pki.client_ca.clone()],
            crl: vec![],
            extra_listener: String::new(),
            extra_upstream: String::new(),
            extra_top: String::new(),
            extra_admin: String::new(),
            extra_client_auth: String::new(),
            extra_tls: String::new(),
        }
    }

    pub fn render(&self) -> String {
        let list = |v: &[PathBuf]| {
            v.iter()
                .map(|p| format!("\"{}\"", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let versions = self
            .versions
            .map(|v| format!("versions = {v}\n"))
            .unwrap_or_default();
        let client_auth = if self.mode == "off" {
            "mode = \"off\"\n".to_string()
        } else {
            format!(
                "mode = \"{}\"\nca = [{}]\ncrl = [{}]\n",
                self.mode,
                list(&self.ca),
                list(&self.crl)
            )
        };
        format!(
            r#"{extra_top}
[admin]
listen = "127.0.0.1:0"
{extra_admin}

[[listener]]
name = "agents"
listen = "{listen}"
upstream = "core"
{extra_listener}
[listener.tls]
{versions}{extra_tls}
[[listener.tls.certificate]]
cert = "{cert}"
key = "{key}"

[listener.client_auth]
{client_auth}{extra_client_auth}
[[upstream]]
name = "core"
servers = [{servers}]
{extra_upstream}
"#,
            extra_top = self.extra_top,
            extra_admin = self.extra_admin,
            extra_client_auth = self.extra_client_auth,
            extra_tls = self.extra_tls,
            listen = self.listen,
            extra_listener = self.extra_listener,
            cert = self.cert.display(),
            key = self.key.display(),
            servers = self
                .servers
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", "),
            extra_upstream = self.extra_upstream,
        )
    }

    pub fn write(&self, dir: &Path) -> PathBuf {
        let p = dir.join("certgate.toml");
        std::fs::write(&p, self.render()).unwrap();
        p
    }
}

/// Starts an in-process gateway from a config file.
pub async fn start_gateway(config: &Path) -> certgate::Gateway {
    let settings = certgate::Settings::load(config).unwrap();
    certgate::Gateway::start(settings).await.unwrap()
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

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

/// The current value of a metric line (exact label match) on the admin
/// endpoint, or 0 if absent.
pub fn metric(gw: &certgate::Gateway, line_prefix: &str) -> f64 {
    gw.metrics
        .encode()
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Whether a metric line reaches `min` within 2 s. For counters the
/// gateway bumps just after the client saw the outcome (a refused
/// handshake's alert is read by the client before the gateway counts it).
pub async fn metric_at_least(gw: &certgate::Gateway, line_prefix: &str, min: f64) -> bool {
    eventually(Duration::from_secs(2), || metric(gw, line_prefix) >= min).await
}

/// Path of the certgate binary built for these tests.
pub fn certgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_certgate")
}

/// Fails loudly when a system tool the test needs is missing: the test
/// command (scripts/test.sh) installs it, so a skip would hide a problem.
pub fn require_tool(name: &str) {
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{name} is not installed; run scripts/test.sh, which installs it"
    );
}

// ---------------------------------------------------------------------------
// The certgate binary as a child process
// ---------------------------------------------------------------------------

/// A `certgate run` child process; killed on drop if still running.
pub struct Proc {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// The value of `key=` on the first log line containing `needle`.
    pub fn log_value(&self, needle: &str, key: &str) -> Option<String> {
        let log = self.log.lock().unwrap();
        log.lines()
            .find(|l| l.contains(needle))
            .and_then(|l| l.split(&format!("{key}=")).nth(1))
            .and_then(|r| r.split_whitespace().next())
            .map(|v| v.trim_matches('"').to_string())
    }

    /// The admin listener's address, from the log.
    pub fn admin_addr(&self) -> SocketAddr {
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(a) = self
                .log_value("admin listening", "addr")
                .and_then(|a| a.parse().ok())
            {
                return a;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let log = self.log.lock().unwrap().clone();
        panic!("no admin address in log:\n{log}")
    }

    /// Waits (bounded) for the process to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Starts `certgate run --config FILE` and waits (bounded) until it logs the
/// address of its listener "agents".
pub fn spawn_certgate(config: &Path) -> Proc {
    spawn_certgate_with(config, &[])
}

/// [`spawn_certgate`] with extra `run` arguments.
pub fn spawn_certgate_with(config: &Path, extra: &[&str]) -> Proc {
    let mut cmd = std::process::Command::new(certgate_bin());
    cmd.args(["run", "--config"]).arg(config).args(extra);
    let (mut proc, started) = spawn_logged(cmd, "0.0.0.0:0".parse().unwrap());
    let addr = started
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            let log = proc.log.lock().unwrap().clone();
            panic!("certgate did not start; log:\n{log}")
        });
    proc.addr = addr.parse().unwrap();
    proc
}

/// Spawns `cmd` (certgate, or a wrapper that execs it) with its stderr
/// collected into `log`; the receiver gets the address of listener
/// "agents" once it is logged.
pub fn spawn_logged(
    mut cmd: std::process::Command,
    addr: SocketAddr,
) -> (Proc, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log: Arc<Mutex<String>> = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if line.contains("listening")
                && line.contains("listener=agents")
                && let Some(a) = line
                    .split("addr=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
            {
                let _ = tx.send(a.to_string());
            }
            let mut log = log2.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    (Proc { child, addr, log }, rx)
}

/// The usual test setup: a PKI with one good device "device-a", a backend,
/// and an in-process gateway in front of it.
pub struct Fixture {
    pub pki: Pki,
    pub device: ClientCert,
    pub backend: Backend,
    pub gw: certgate::Gateway,
    pub addr: SocketAddr,
}

impl Fixture {
    pub async fn start() -> Fixture {
        Fixture::with(|_| {}).await
    }

    /// Like [`Fixture::start`], with the config adjusted by `adjust`.
    pub async fn with(adjust: impl FnOnce(&mut ConfigBuilder)) -> Fixture {
        let mut pki = Pki::new();
        let device = pki.client("device-a", Kind::Good);
        let backend = Backend::start().await;
        let mut cb = ConfigBuilder::new(&pki, backend.addr);
        adjust(&mut cb);
        let gw = start_gateway(&cb.write(pki.dir.path())).await;
        let addr = gw.addr("agents").unwrap();
        Fixture {
            pki,
            device,
            backend,
            gw,
            addr,
        }
    }

    /// A client config presenting "device-a".
    pub fn device_client(&self) -> Arc<rustls::ClientConfig> {
        client_config(&self.pki, Some(&self.device), &[])
    }
}

// ---------------------------------------------------------------------------
// Certificate rotation, as real tools write files
// ---------------------------------------------------------------------------

/// How a tool replaces a certificate file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteStyle {
    /// Truncate and rewrite the file where it is (`cp`, `cat >`, many
    /// scripts). Through a symlink, this rewrites the target.
    InPlace,
    /// Write a temp file beside it, then rename it over the old one
    /// (certbot, editors, `install`).
    Rename,
    /// The Kubernetes secret-volume layout: `tls.crt -> ..data/tls.crt`,
    /// `..data -> ..<generation>`; an update writes a new generation
    /// directory and swaps the `..data` symlink.
    K8sSymlink,
}

pub const WRITE_STYLES: [WriteStyle; 3] = [
    WriteStyle::InPlace,
    WriteStyle::Rename,
    WriteStyle::K8sSymlink,
];

/// A directory holding `tls.crt` and `tls.key`, rewritten in any style.
pub struct CertSlot {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    generation: u32,
}

impl CertSlot {
    pub fn new(parent: &Path, pair: &ServerPair) -> CertSlot {
        let dir = parent.join("secret");
        std::fs::create_dir_all(&dir).unwrap();
        let slot = CertSlot {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            dir,
            generation: 0,
        };
        std::fs::write(&slot.cert, &pair.cert_pem).unwrap();
        std::fs::write(&slot.key, &pair.key_pem).unwrap();
        slot
    }

    /// Replaces cert and key in `style`.
    pub fn write(&mut self, style: WriteStyle, pair: &ServerPair) {
        match style {
            WriteStyle::InPlace => {
                std::fs::write(&self.cert, &pair.cert_pem).unwrap();
                std::fs::write(&self.key, &pair.key_pem).unwrap();
            }
            WriteStyle::Rename => {
                for (path, text) in [(&self.cert, &pair.cert_pem), (&self.key, &pair.key_pem)] {
                    let tmp = self.dir.join(format!(
                        ".{}.tmp",
                        path.file_name().unwrap().to_string_lossy()
                    ));
                    std::fs::write(&tmp, text).unwrap();
                    std::fs::rename(&tmp, path).unwrap();
                }
            }
            WriteStyle::K8sSymlink => {
                self.generation += 1;
                let gen_name = format!("..gen_{}", self.generation);
                let gen_dir = self.dir.join(&gen_name);
                std::fs::create_dir_all(&gen_dir).unwrap();
                std::fs::write(gen_dir.join("tls.crt"), &pair.cert_pem).unwrap();
                std::fs::write(gen_dir.join("tls.key"), &pair.key_pem).unwrap();
                let tmp = self.dir.join("..data_tmp");
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(&gen_name, &tmp).unwrap();
                std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
                for name in ["tls.crt", "tls.key"] {
                    let path = self.dir.join(name);
                    let is_link = std::fs::symlink_metadata(&path)
                        .map(|m| m.file_type().is_symlink())
                        .unwrap_or(false);
                    if !is_link {
                        let tmp = self.dir.join(format!(".{name}.link"));
                        let _ = std::fs::remove_file(&tmp);
                        std::os::unix::fs::symlink(format!("..data/{name}"), &tmp).unwrap();
                        std::fs::rename(&tmp, &path).unwrap();
                    }
                }
            }
        }
    }
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

/// Waits (bounded) until `cond` holds; whether it did.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// `cfg` without session resumption: every handshake is full and shows the
/// certificate the server serves now.
pub fn no_resumption(cfg: &Arc<rustls::ClientConfig>) -> Arc<rustls::ClientConfig> {
    let mut c = (**cfg).clone();
    c.resumption = rustls::client::Resumption::disabled();
    Arc::new(c)
}

// ---------------------------------------------------------------------------
// Continuous load
// ---------------------------------------------------------------------------

/// Background load on one gateway address: keep-alive clients that each
/// keep one connection and send requests back to back, plus a client that
/// opens a new mTLS connection every few milliseconds.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    pub ok: Arc<std::sync::atomic::AtomicU64>,
    pub reconnects: Arc<std::sync::atomic::AtomicU64>,
    pub failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the load. With `reconnect`, a keep-alive client whose
    /// connection the server closed (between requests, as a draining server
    /// does) opens a new one and retries its GET once, as device agents and
    /// curl do; without it, any closed connection is a failure.
    pub async fn start(
        addr: SocketAddr,
        cfg: Arc<rustls::ClientConfig>,
        keepalive: usize,
        new_conn_every: Duration,
        reconnect: bool,
    ) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let reconnects = Arc::new(AtomicU64::new(0));
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut tasks = Vec::new();
        for i in 0..keepalive {
            let (stop, ok, reconnects, failures, cfg) = (
                stop.clone(),
                ok.clone(),
                reconnects.clone(),
                failures.clone(),
                cfg.clone(),
            );
            let mut sender = h1_sender(addr, cfg.clone()).await.unwrap();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < 1_000_000 {
                    n += 1;
                    let mut attempts = 0;
                    loop {
                        attempts += 1;
                        if reconnect && (sender.is_closed() || sender.ready().await.is_err()) {
                            reconnects.fetch_add(1, Ordering::Relaxed);
                            match h1_sender(addr, cfg.clone()).await {
                                Ok(s) => sender = s,
                                Err(e) => {
                                    failures
                                        .lock()
                                        .unwrap()
                                        .push(format!("client {i}: reconnect: {e}"));
                                    return;
                                }
                            }
                        }
                        let req = Request::get(format!("/ka/{i}/{n}"))
                            .header("host", "localhost")
                            .body(empty())
                            .unwrap();
                        let r = tokio::time::timeout(Duration::from_secs(20), async {
                            let resp = sender.send_request(req).await?;
                            let status = resp.status();
                            let body = resp.into_body().collect().await?.to_bytes();
                            Ok::<_, BoxError>((status, body))
                        })
                        .await;
                        match r {
                            Ok(Ok((s, b))) if s == 200 && &b[..] == b"ok" => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Ok(Err(e))
                                if reconnect && attempts == 1 && closed_before_response(&e) =>
                            {
                                continue;
                            }
                            other => {
                                let what = match other {
                                    Ok(Ok((s, _))) => format!("status {s}"),
                                    Ok(Err(e)) => format!("error {e}"),
                                    Err(_) => "timed out".into(),
                                };
                                failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("keep-alive client {i}, request {n}: {what}"));
                                return;
                            }
                        }
                    }
                }
            }));
        }
        let (stop2, ok2, failures2) = (stop.clone(), ok.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) && n < 1_000_000 {
                n += 1;
                match tokio::time::timeout(
                    Duration::from_secs(20),
                    get(addr, cfg.clone(), &format!("/new/{n}"), &[]),
                )
                .await
                {
                    Ok(Ok((s, _))) if s == 200 => {
                        ok2.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        let what = match other {
                            Ok(Ok((s, _))) => format!("status {s}"),
                            Ok(Err(e)) => format!("error {e}"),
                            Err(_) => "timed out".into(),
                        };
                        failures2
                            .lock()
                            .unwrap()
                            .push(format!("new connection {n}: {what}"));
                    }
                }
                tokio::time::sleep(new_conn_every).await;
            }
        }));
        Load {
            stop,
            ok,
            reconnects,
            failures,
            tasks,
        }
    }

    pub fn ok(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the load and returns (successful requests, failures).
    pub async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        let f = self.failures.lock().unwrap().clone();
        (self.ok.load(std::sync::atomic::Ordering::Relaxed), f)
    }
}

/// True when a request failed because the server had closed the
/// connection before answering (the keep-alive race every HTTP/1 client
/// handles by retrying an idempotent request on a new connection).
fn closed_before_response(e: &BoxError) -> bool {
    e.downcast_ref::<hyper::Error>()
        .is_some_and(|h| h.is_incomplete_message() || h.is_canceled() || h.is_closed())
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

/// The value of a metric line scraped from a running process's admin API.
pub async fn scraped(admin: SocketAddr, line_prefix: &str) -> f64 {
    let (_, text) = http_plain(admin, "GET", "/metrics").await.unwrap();
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A gateway whose server cert and key live in a [`CertSlot`], with two
/// server certificates to rotate between.
pub struct Rotation {
    pub pki: Pki,
    pub device: ClientCert,
    pub backend: Backend,
    pub pairs: [ServerPair; 2],
    pub slot: CertSlot,
    pub gw: certgate::Gateway,
    pub addr: SocketAddr,
    /// Presents "device-a" (session resumption on).
    pub client: Arc<rustls::ClientConfig>,
    /// Presents "device-a", never resumes: sees the cert served now.
    pub probe: Arc<rustls::ClientConfig>,
}

impl Rotation {
    /// Starts the gateway serving `pairs[0]`.
    pub async fn start() -> Rotation {
        let mut pki = Pki::new();
        let device = pki.client("device-a", Kind::Good);
        let backend = Backend::start().await;
        let pairs = [pki.server_pair("rotation A"), pki.server_pair("rotation B")];
        let slot = CertSlot::new(pki.dir.path(), &pairs[0]);
        let mut cb = ConfigBuilder::new(&pki, backend.addr);
        cb.cert = slot.cert.clone();
        cb.key = slot.key.clone();
        let gw = start_gateway(&cb.write(pki.dir.path())).await;
        let addr = gw.addr("agents").unwrap();
        let client = client_config(&pki, Some(&device), &[]);
        let probe = no_resumption(&client);
        Rotation {
            pki,
            device,
            backend,
            pairs,
            slot,
            gw,
            addr,
            client,
            probe,
        }
    }
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

/// Writes `pair` into `slot` in `style`, then polls with new handshakes
/// until it is served; how long that took, or `None` after `limit`.
pub async fn rotate(
    slot: &mut CertSlot,
    style: WriteStyle,
    pair: &ServerPair,
    addr: SocketAddr,
    probe: &Arc<rustls::ClientConfig>,
    limit: Duration,
) -> Option<Duration> {
    let written = std::time::Instant::now();
    slot.write(style, pair);
    wait_for_cert(addr, probe.clone(), &pair.der, written, limit).await
}

/// `[registry]` lines for a store in `dir`.
pub fn registry_table(dir: &Path, approval: &str) -> String {
    format!(
        "[registry]\npath = \"{}\"\napproval = \"{approval}\"\n",
        dir.join("devices.redb").display()
    )
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

/// Runs `certgate devices ...` against an admin address; (success, stdout, stderr).
pub fn devices_cli(admin: SocketAddr, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(certgate_bin())
        .arg("devices")
        .arg("--admin")
        .arg(admin.to_string())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The TLS alert a refused handshake ended with, if any.
pub fn alert_of(e: &std::io::Error) -> Option<rustls::AlertDescription> {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(a)) => Some(*a),
        _ => None,
    }
}

/// Runs `certgate SUBCOMMAND --config CONFIG`, asserts that it fails, and
/// returns its stderr.
pub fn certgate_fails(subcommand: &str, config: &Path) -> String {
    let out = std::process::Command::new(certgate_bin())
        .args([subcommand, "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(!out.status.success(), "certgate {subcommand} must fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
