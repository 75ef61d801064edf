//! Behaviour: what is refused during the TLS handshake. Every bad client
//! certificate, every protocol version other than the configured ones, and
//! every client that offers only CBC or non-ECDHE suites.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;

use common::*;
use tokio::io::AsyncWriteExt;

/// Connects with `client` and expects the handshake (or the first request)
/// to fail, the backend to see nothing, and the failure to be counted under
/// `reason`.
async fn assert_refused(
    pki: &Pki,
    client: Option<&ClientCert>,
    reason: &str,
    extra_crl: Vec<std::path::PathBuf>,
) {
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(pki, backend.addr);
    cb.crl = extra_crl;
    let dir = tempfile::tempdir().unwrap();
    let cfg = cb.write(dir.path());
    let gw = start_gateway(&cfg).await;
    let addr = gw.addr("agents").unwrap();

    let result = get(addr, client_config(pki, client, &[]), "/", &[]).await;
    let err = result.expect_err("the gateway admitted a client it must refuse");
    let msg = err.to_string();
    assert!(
        msg.contains("alert") || msg.contains("Alert"),
        "expected a TLS alert for {reason}, got: {msg}"
    );
    assert_eq!(backend.count(), 0, "a refused client reached the backend");
    let line =
        format!("certgate_tls_handshake_failures_total{{listener=\"agents\",reason=\"{reason}\"}}");
    // Counted just after the client read its alert.
    eventually(std::time::Duration::from_secs(2), || {
        metric(&gw, &line) >= 1.0
    })
    .await;
    assert_eq!(
        metric(&gw, &line),
        1.0,
        "{line} not counted; metrics:\n{}",
        gw.metrics.encode()
    );
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let pki = Pki::new();
    assert_refused(&pki, None, "no_certificate", vec![]).await;
}

#[tokio::test]
async fn certificate_from_unknown_ca_is_refused() {
    let mut pki = Pki::new();
    let c = pki.client("foreign", Kind::ForeignCa);
    assert_refused(&pki, Some(&c), "unknown_ca", vec![]).await;
}

#[tokio::test]
async fn certificate_from_forged_ca_with_trusted_name_is_refused() {
    let mut pki = Pki::new();
    let c = pki.client("forged", Kind::ForgedCa);
    assert_refused(&pki, Some(&c), "bad_signature", vec![]).await;
}

#[tokio::test]
async fn self_signed_certificate_is_refused() {
    let mut pki = Pki::new();
    let c = pki.client("selfie", Kind::SelfSigned);
    assert_refused(&pki, Some(&c), "unknown_ca", vec![]).await;
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let mut pki = Pki::new();
    let c = pki.client("old", Kind::Expired);
    assert_refused(&pki, Some(&c), "expired", vec![]).await;
}

#[tokio::test]
async fn not_yet_valid_certificate_is_refused() {
    let mut pki = Pki::new();
    let c = pki.client("future", Kind::NotYetValid);
    assert_refused(&pki, Some(&c), "not_yet_valid", vec![]).await;
}

#[tokio::test]
async fn certificate_revoked_by_pem_crl_is_refused() {
    let mut pki = Pki::new();
    let c = pki.client("stolen", Kind::Good);
    let crl = pki.crl("client-ca.crl.pem", &[&c], true);
    assert_refused(&pki, Some(&c), "revoked", vec![crl]).await;
}

#[tokio::test]
async fn certificate_revoked_by_der_crl_is_refused_and_others_pass() {
    let mut pki = Pki::new();
    let stolen = pki.client("stolen", Kind::Good);
    let fine = pki.client("fine", Kind::Good);
    let crl = pki.crl("client-ca.crl", &[&stolen], false);
    assert_refused(&pki, Some(&stolen), "revoked", vec![crl.clone()]).await;

    // The same CRL does not lock out a device it does not list.
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.crl = vec![crl];
    let dir = tempfile::tempdir().unwrap();
    let gw = start_gateway(&cb.write(dir.path())).await;
    let (status, _) = get(
        gw.addr("agents").unwrap(),
        client_config(&pki, Some(&fine), &[]),
        "/",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
}

// ---------------------------------------------------------------------------
// Protocol versions and cipher suites, checked with OpenSSL's own client.
// ---------------------------------------------------------------------------

struct SClient {
    ok: bool,
    output: String,
}

/// Runs `openssl s_client` against the gateway with the device cert, sends
/// a small HTTP request, and returns whether a 200 came back. OPENSSL_CONF
/// is cleared and the security level lowered so that OpenSSL really offers
/// the old protocol or suite instead of refusing on the client side.
async fn s_client(pki: &Pki, device: &ClientCert, port: u16, args: &[&str]) -> SClient {
    let mut all: Vec<std::ffi::OsString> = ["-servername", "localhost", "-ign_eof", "-CAfile"]
        .into_iter()
        .map(Into::into)
        .collect();
    all.push(pki.server_ca.clone().into());
    all.push("-cert".into());
    all.push(device.cert.clone().into());
    all.push("-key".into());
    all.push(device.key.clone().into());
    all.extend(args.iter().map(Into::into));
    let output = openssl_s_client(
        port,
        &all,
        b"GET /s_client HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    SClient {
        ok: output.contains("HTTP/1.1 200"),
        output,
    }
}

async fn gateway_with_versions(
    pki: &Pki,
    backend: &Backend,
    versions: Option<&'static str>,
) -> (tempfile::TempDir, certgate::Gateway) {
    let mut cb = ConfigBuilder::new(pki, backend.addr);
    cb.versions = versions;
    let dir = tempfile::tempdir().unwrap();
    let gw = start_gateway(&cb.write(dir.path())).await;
    (dir, gw)
}

#[tokio::test]
async fn default_listener_speaks_tls12_only() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let backend = Backend::start().await;
    let (_dir, gw) = gateway_with_versions(&pki, &backend, None).await;
    let port = gw.addr("agents").unwrap().port();

    let r = s_client(&pki, &device, port, &["-tls1_2"]).await;
    assert!(r.ok, "TLS 1.2 with a valid cert must work:\n{}", r.output);
    assert!(
        r.output.contains("ECDHE"),
        "expected an ECDHE suite:\n{}",
        r.output
    );

    for (flag, name) in [
        ("-tls1_1", "TLS 1.1"),
        ("-tls1", "TLS 1.0"),
        ("-tls1_3", "TLS 1.3"),
    ] {
        let before = backend.count();
        let r = s_client(
            &pki,
            &device,
            port,
            &[flag, "-cipher", "DEFAULT:@SECLEVEL=0"],
        )
        .await;
        assert!(!r.ok, "{name} must be refused by default:\n{}", r.output);
        assert!(
            r.output.contains("alert") || r.output.contains("error"),
            "{name}: {}",
            r.output
        );
        assert_eq!(backend.count(), before, "{name} reached the backend");
    }
    // The server saw and refused them (not just the client giving up).
    let failures: f64 = gw
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("certgate_tls_handshake_failures_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(failures, 3.0, "{}", gw.metrics.encode());
}

#[tokio::test]
async fn tls13_works_when_enabled() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let backend = Backend::start().await;
    let (_dir, gw) = gateway_with_versions(&pki, &backend, Some(r#"["1.2", "1.3"]"#)).await;
    let port = gw.addr("agents").unwrap().port();
    let r = s_client(&pki, &device, port, &["-tls1_3"]).await;
    assert!(r.ok, "TLS 1.3 must work when enabled:\n{}", r.output);
    assert!(r.output.contains("TLSv1.3"), "{}", r.output);
    let r = s_client(&pki, &device, port, &["-tls1_2"]).await;
    assert!(r.ok, "TLS 1.2 must still work:\n{}", r.output);
    let r = s_client(
        &pki,
        &device,
        port,
        &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
    )
    .await;
    assert!(!r.ok, "TLS 1.1 must stay refused:\n{}", r.output);
}

#[tokio::test]
async fn cbc_and_non_ecdhe_suites_are_refused() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let backend = Backend::start().await;
    let (_dir, gw) = gateway_with_versions(&pki, &backend, None).await;
    let port = gw.addr("agents").unwrap().port();
    for suites in [
        "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA", // ECDHE but CBC
        "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384",                // ECDHE, CBC-SHA2
        "AES128-GCM-SHA256:AES256-GCM-SHA384", // RSA key exchange, AEAD
        "AES128-SHA:AES256-SHA:DES-CBC3-SHA",  // RSA key exchange, CBC
        "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384", // finite-field DHE
    ] {
        let r = s_client(
            &pki,
            &device,
            port,
            &["-tls1_2", "-cipher", &format!("{suites}:@SECLEVEL=0")],
        )
        .await;
        assert!(!r.ok, "{suites} must be refused:\n{}", r.output);
    }
    assert_eq!(backend.count(), 0);
    // The three CBC-only offers are told apart: no AEAD-only gateway can
    // serve them (an agent upgrade). The AEAD offers without ECDHE share no
    // suite with certgate.
    let cbc =
        "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"legacy_cbc_only\"}";
    let none =
        "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"no_shared_cipher\"}";
    metric_at_least(&gw, cbc, 3.0).await;
    metric_at_least(&gw, none, 2.0).await;
    assert_eq!(metric(&gw, cbc), 3.0, "{}", gw.metrics.encode());
    assert_eq!(metric(&gw, none), 2.0, "{}", gw.metrics.encode());
    // The readiness report files them under "agent upgrade required".
    let admin = gw.admin_addr().unwrap();
    let mut r = serde_json::Value::Null;
    for _ in 0..40 {
        r = admin_call(admin, "GET", "/api/readiness?listener=agents", None, None)
            .await
            .1;
        if r["legacy_sources"][0]["version"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(r["legacy_sources"][0]["peer"], "127.0.0.1", "{r}");
    assert_eq!(
        r["legacy_sources"][0]["version"], "TLS 1.2 with CBC suites only",
        "{r}"
    );
    let upgrade = r["by_status"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["status"] == "upgrade_required")
        .cloned()
        .unwrap_or_default();
    assert_eq!(upgrade["count"], 3, "{r}");
}

// ---------------------------------------------------------------------------
// The alert for a missing client certificate.
// ---------------------------------------------------------------------------

/// A stream that keeps a copy of every byte the server sent.
#[derive(Debug)]
struct Tap {
    inner: tokio::net::TcpStream,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl tokio::io::AsyncRead for Tap {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = buf.filled()[before..].to_vec();
        self.seen.lock().unwrap().extend_from_slice(&new);
        r
    }
}

impl tokio::io::AsyncWrite for Tap {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The TLS records in `bytes`, as (content type, version, payload).
fn records(bytes: &[u8]) -> Vec<(u8, [u8; 2], Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 5 <= bytes.len() {
        let len = usize::from(u16::from_be_bytes([bytes[i + 3], bytes[i + 4]]));
        let end = (i + 5 + len).min(bytes.len());
        out.push((
            bytes[i],
            [bytes[i + 1], bytes[i + 2]],
            bytes[i + 5..end].to_vec(),
        ));
        i += 5 + len;
    }
    out
}

#[tokio::test]
async fn a_tls12_client_without_a_certificate_gets_handshake_failure_not_a_tls13_alert() {
    let pki = Pki::new();
    let backend = Backend::start().await;
    let (_dir, gw) = gateway_with_versions(&pki, &backend, None).await;
    let addr = gw.addr("agents").unwrap();

    // A TLS 1.2 client that reads the raw records the server sends.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let tap = Tap {
        inner: tokio::net::TcpStream::connect(addr).await.unwrap(),
        seen: seen.clone(),
    };
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&pki.server_ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    use rustls::pki_types::pem::PemObject as _;
    let err = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tap,
        )
        .await
        .expect_err("a client without a certificate must be refused");
    assert_eq!(
        alert_of(&err),
        Some(rustls::AlertDescription::HandshakeFailure),
        "{err}"
    );
    let recs = records(&seen.lock().unwrap());
    let (ty, version, payload) = recs.last().expect("the server sent records").clone();
    assert_eq!(
        (ty, version, payload),
        (21, [3, 3], vec![2, 40]),
        "the last record is a plaintext TLS 1.2 fatal handshake_failure alert: {recs:?}"
    );
    assert!(
        !recs
            .iter()
            .any(|(t, _, p)| *t == 21 && p.get(1) == Some(&116)),
        "no certificate_required alert on TLS 1.2: {recs:?}"
    );
    let counted =
        "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"no_certificate\"}";
    // Counted just after the client read its alert.
    eventually(std::time::Duration::from_secs(2), || {
        metric(&gw, counted) >= 1.0
    })
    .await;
    assert_eq!(metric(&gw, counted), 1.0);

    // OpenSSL's client says what it got.
    require_tool("openssl");
    let out = tokio::process::Command::new("timeout")
        .args(["10", "openssl", "s_client", "-tls1_2", "-connect"])
        .arg(addr.to_string())
        .args(["-servername", "localhost", "-CAfile"])
        .arg(&pki.server_ca)
        .env("OPENSSL_CONF", "/dev/null")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("alert handshake failure"), "{text}");
    assert!(!text.contains("certificate required"), "{text}");
}

#[tokio::test]
async fn a_tls13_client_without_a_certificate_still_gets_certificate_required() {
    let pki = Pki::new();
    let backend = Backend::start().await;
    let (_dir, gw) = gateway_with_versions(&pki, &backend, Some("[\"1.2\", \"1.3\"]")).await;
    let addr = gw.addr("agents").unwrap();
    let cfg = client_config(&pki, None, &[]);
    let err = match tls_connect(addr, cfg).await {
        Err(e) => e,
        Ok(mut s) => {
            use tokio::io::AsyncReadExt as _;
            let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
            let mut buf = [0u8; 64];
            match tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Err(e)) => e,
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
    };
    assert_eq!(
        alert_of(&err),
        Some(rustls::AlertDescription::CertificateRequired),
        "{err}"
    );
}
