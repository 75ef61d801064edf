//! `certgate demo`: a throwaway PKI, a built-in echo backend and a real
//! gateway in front of it, all on loopback, so a newcomer can see the
//! product work in one command.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use thiserror::Error;
use tokio::net::TcpListener;
use tracing::debug;

/// A demo PKI could not be written.
#[derive(Debug, Error)]
pub(crate) enum DemoError {
    /// Certificate generation failed.
    #[error("generating the demo PKI: {0}")]
    Pki(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The demo's own first check-in as the pending device went wrong.
    #[error("demo: the pending device's first check-in: {0}")]
    Handshake(String),
    /// The echo backend could not bind.
    #[error("demo backend: cannot listen on 127.0.0.1: {0}")]
    Backend(std::io::Error),
}

/// Files written by [`write_pki`].
#[derive(Debug, Clone)]
pub(crate) struct DemoPki {
    /// CA that signed the server certificate (for `curl --cacert`).
    pub server_ca: PathBuf,
    /// Server certificate for `localhost` / `127.0.0.1` / `::1`.
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// The RSA server certificate for the same names.
    pub server_rsa_cert: PathBuf,
    /// Its key.
    pub server_rsa_key: PathBuf,
    /// CA that signs device certificates.
    pub client_ca: PathBuf,
    /// The approved demo device's certificate.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// The approved device's certificate (DER), to approve it with.
    pub client_der: Vec<u8>,
    /// The pending demo device's certificate.
    pub pending_cert: PathBuf,
    /// Its key.
    pub pending_key: PathBuf,
    /// The pending device's certificate (DER).
    pub pending_der: Vec<u8>,
    /// Its key (PKCS#8 DER), for the demo's own first handshake.
    pending_key_der: Vec<u8>,
    /// The server CA (DER), for the demo's own first handshake.
    server_ca_der: Vec<u8>,
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), DemoError> {
    let err = |source| DemoError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(path, contents).map_err(err)?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(())
}

fn ca_params(cn: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "certgate demo");
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

fn validity(p: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(days);
}

fn device(cn: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "certgate demo");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut p, 30);
    Ok(p)
}

/// Generates a fresh demo PKI into `dir` (created if needed): a server CA
/// and an ECDSA and an RSA server certificate for localhost, a client CA
/// and two device certificates (`CN=demo-device`, `CN=demo-pending`).
pub(crate) fn write_pki(dir: &Path) -> Result<DemoPki, DemoError> {
    std::fs::create_dir_all(dir).map_err(|source| DemoError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let f = |n: &str| dir.join(n);

    let mut p = ca_params("certgate demo server CA")?;
    validity(&mut p, 30);
    let server_ca = CertifiedIssuer::self_signed(p, KeyPair::generate()?)?;
    let mut p = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, "localhost");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut p, 30);
    let server_key = KeyPair::generate()?;
    let server = p.signed_by(&server_key, &server_ca)?;
    // The same names with an RSA key: what a real gateway serves beside
    // ECDSA so that agents of either kind connect (README, Legacy agents).
    let server_rsa_key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
    let server_rsa = p.signed_by(&server_rsa_key, &server_ca)?;

    let mut p = ca_params("certgate demo client CA")?;
    validity(&mut p, 30);
    let client_ca = CertifiedIssuer::self_signed(p, KeyPair::generate()?)?;
    let client_key = KeyPair::generate()?;
    let client = device("demo-device")?.signed_by(&client_key, &client_ca)?;
    let pending_key = KeyPair::generate()?;
    let pending = device("demo-pending")?.signed_by(&pending_key, &client_ca)?;

    let pki = DemoPki {
        server_ca: f("server-ca.pem"),
        server_cert: f("server.pem"),
        server_key: f("server.key"),
        server_rsa_cert: f("server-rsa.pem"),
        server_rsa_key: f("server-rsa.key"),
        client_ca: f("client-ca.pem"),
        client_cert: f("client.pem"),
        client_key: f("client.key"),
        client_der: client.der().to_vec(),
        pending_cert: f("pending.pem"),
        pending_key: f("pending.key"),
        pending_der: pending.der().to_vec(),
        pending_key_der: pending_key.serialize_der(),
        server_ca_der: server_ca.der().to_vec(),
    };
    write(&pki.server_ca, &server_ca.pem(), false)?;
    write(&pki.server_cert, &server.pem(), false)?;
    write(&pki.server_key, &server_key.serialize_pem(), true)?;
    write(&pki.server_rsa_cert, &server_rsa.pem(), false)?;
    write(&pki.server_rsa_key, &server_rsa_key.serialize_pem(), true)?;
    write(&pki.client_ca, &client_ca.pem(), false)?;
    write(&pki.client_cert, &client.pem(), false)?;
    write(&pki.client_key, &client_key.serialize_pem(), true)?;
    write(&pki.pending_cert, &pending.pem(), false)?;
    write(&pki.pending_key, &pending_key.serialize_pem(), true)?;
    Ok(pki)
}

/// The demo device registry's files in `dir`: removed before each run, so
/// the registry holds this run's devices only.
pub(crate) fn registry_files(dir: &Path) -> [PathBuf; 2] {
    [dir.join("devices.redb"), dir.join("audit.log")]
}

/// Writes a certgate config for the demo gateway into `dir` and returns
/// its path. Paths inside are relative to `dir`, as in a real deployment.
pub(crate) fn write_config(
    dir: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
    backend: SocketAddr,
) -> Result<PathBuf, DemoError> {
    let path = dir.join("certgate.toml");
    let text = format!(
        r#"# Written by `certgate demo`; regenerated on every run.
[admin]
listen = "{admin}"

[[listener]]
name = "demo"
listen = "{listen}"
upstream = "echo"

[listener.tls]
versions = ["1.2"]
# ECDSA for most agents, RSA for stacks without ECDSA: each client gets
# the one it can use.
[[listener.tls.certificate]]
cert = "server.pem"
key = "server.key"
[[listener.tls.certificate]]
cert = "server-rsa.pem"
key = "server-rsa.key"

[listener.client_auth]
mode = "required"
ca = ["client-ca.pem"]

# Every device with a certificate from client-ca.pem is recorded; a new one
# is refused and listed as pending until an admin approves it.
[registry]
path = "devices.redb"
approval = "manual"

[[upstream]]
name = "echo"
servers = ["{backend}"]
"#
    );
    write(&path, &text, false)?;
    Ok(path)
}

/// Connects to the demo gateway at `addr` as the pending demo device, the
/// way a new agent's first check-in would: the handshake is refused
/// (access_denied) and the registry lists the device as pending, with its
/// certificate's details and the address it came from.
pub(crate) async fn first_check_in(pki: &DemoPki, addr: SocketAddr) -> Result<(), DemoError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    let handshake = |e: String| DemoError::Handshake(e);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.server_ca_der.clone()))
        .map_err(|e| handshake(e.to_string()))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .map_err(|e| handshake(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(pki.pending_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.pending_key_der.clone())),
        )
        .map_err(|e| handshake(e.to_string()))?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| handshake(e.to_string()))?;
    let name = ServerName::try_from("localhost").map_err(|e| handshake(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    // TLS 1.2: the client's last flight is sent before the server decides,
    // so the refusal shows up on the first read.
    let attempt = async {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut buf = [0u8; 64];
        tls.read(&mut buf).await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), attempt).await {
        Ok(Ok(n)) if n > 0 => Err(handshake(
            "the gateway admitted the pending demo device".into(),
        )),
        Ok(Ok(_)) => Err(handshake("the gateway closed without a TLS alert".into())),
        Ok(Err(e)) => {
            let alert = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>());
            match alert {
                Some(rustls::Error::AlertReceived(rustls::AlertDescription::AccessDenied)) => {
                    Ok(())
                }
                _ => Err(handshake(e.to_string())),
            }
        }
        Err(_) => Err(handshake("no answer within 5 s".into())),
    }
}

/// Starts the built-in echo backend on an ephemeral loopback port: it
/// answers every request with the request line and the headers it got.
pub(crate) async fn start_echo_backend() -> Result<SocketAddr, DemoError> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(DemoError::Backend)?;
    let addr = listener.local_addr().map_err(DemoError::Backend)?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(echo);
                if let Err(e) = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await
                {
                    debug!(error = %e, "echo backend connection error");
                }
            });
        }
    });
    Ok(addr)
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut out = format!(
        "certgate demo backend: this is what reached me\n\n{} {} {:?}\n",
        req.method(),
        req.uri(),
        req.version()
    );
    for (name, value) in req.headers() {
        let _ = writeln!(
            out,
            "{}: {}",
            name,
            String::from_utf8_lossy(value.as_bytes())
        );
    }
    let mut resp = Response::new(Full::new(Bytes::from(out)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}
