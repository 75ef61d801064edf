//! Behaviour: a device with a valid certificate is forwarded with its
//! identity, and identity headers a client sends never reach the backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[tokio::test]
async fn valid_client_cert_gets_200_and_backend_sees_identity() {
    let Fixture {
        pki,
        device,
        backend,
        gw,
        addr,
    } = Fixture::start().await;

    let (status, body) = get(
        addr,
        client_config(&pki, Some(&device), &[]),
        "/hello?x=1",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"ok");

    let seen = backend.last();
    assert_eq!(seen.path, "/hello");
    assert_eq!(seen.version, http::Version::HTTP_11);
    let h = |n: &str| seen.headers.get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(h("x-client-verify").as_deref(), Some("SUCCESS"));
    assert_eq!(
        h("x-client-cert-fingerprint"),
        Some(sha256_hex(&device.der))
    );
    assert_eq!(
        h("x-client-cert-subject").as_deref(),
        Some("CN=device-a,O=Fleet")
    );
    assert_eq!(h("x-client-cert-serial").as_deref(), Some("1001"));
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(device.der.as_ref());
    assert_eq!(h("client-cert"), Some(format!(":{b64}:")));
    assert_eq!(h("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(h("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(h("x-forwarded-host").as_deref(), Some("localhost"));
    assert_eq!(h("host").as_deref(), Some("localhost"));

    assert_eq!(
        metric(
            &gw,
            "certgate_http_requests_total{listener=\"agents\",upstream=\"core\",code=\"2xx\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_backend() {
    let Fixture {
        pki,
        device,
        backend,
        gw: _gw,
        addr,
    } = Fixture::start().await;

    let spoofed = [
        ("X-Client-Verify", "SUCCESS-FORGED"),
        ("X-Client-Cert-Fingerprint", "forged"),
        ("x_client_cert_fingerprint", "forged"),
        ("X-CLIENT-CERT-SUBJECT", "CN=admin"),
        ("X-Client-Cert-Serial", "forged"),
        ("X-Client-Cert-Chain", "forged"),
        ("Client-Cert", ":Zm9yZ2Vk:"),
        ("client_cert", "forged"),
        ("Client-Cert-Chain", ":Zm9yZ2Vk:"),
        ("X-Forwarded-For", "10.66.66.66"),
        ("x_forwarded_for", "10.66.66.66"),
        ("X-Forwarded-Proto", "forged"),
        ("X-Forwarded-Host", "forged.example"),
        ("X-Forwarded-Client-Cert", "By=spiffe://forged"),
        ("X-SSL-Client-Verify", "SUCCESS"),
        ("X_SSL_CLIENT_S_DN", "CN=admin"),
        ("X-ARR-ClientCert", "forged"),
        ("X-Real-IP", "10.66.66.66"),
        ("Forwarded", "for=10.66.66.66"),
        ("X-Agent-Version", "9.1"),
    ];
    let (status, _) = get(addr, client_config(&pki, Some(&device), &[]), "/", &spoofed)
        .await
        .unwrap();
    assert_eq!(status, 200);

    let seen = backend.last();
    for (name, value) in spoofed.iter().take(spoofed.len() - 1) {
        for v in seen.headers.get_all(name.to_ascii_lowercase().as_str()) {
            assert_ne!(v.to_str().unwrap(), *value, "{name} reached the backend");
        }
        let lower = name.to_ascii_lowercase();
        if lower.contains('_')
            || lower.starts_with("x-ssl")
            || lower.starts_with("x-arr")
            || lower == "x-real-ip"
            || lower == "forwarded"
            || lower.contains("chain")
            || lower == "x-forwarded-client-cert"
        {
            assert!(
                !seen.headers.contains_key(lower.as_str()),
                "{name} reached the backend"
            );
        }
    }
    // Ours are present exactly once and true.
    assert_eq!(seen.headers.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-client-verify"], "SUCCESS");
    assert_eq!(
        seen.headers["x-client-cert-fingerprint"],
        sha256_hex(&device.der).as_str()
    );
    assert_eq!(seen.headers["x-client-cert-subject"], "CN=device-a,O=Fleet");
    // Unrelated custom headers pass.
    assert_eq!(seen.headers["x-agent-version"], "9.1");
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let Fixture {
        pki,
        device,
        backend,
        gw: _gw,
        addr,
    } = Fixture::start().await;
    let (status, _) = get(
        addr,
        client_config(&pki, Some(&device), &[]),
        "/",
        &[
            ("Connection", "keep-alive, X-Private"),
            ("X-Private", "secret"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Proxy-Connection", "keep-alive"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let seen = backend.last();
    for h in ["x-private", "keep-alive", "te", "proxy-connection"] {
        assert!(!seen.headers.contains_key(h), "{h} was forwarded");
    }
}

#[tokio::test]
async fn curl_with_client_cert_gets_200_and_without_is_refused() {
    require_tool("curl");
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let backend = Backend::start().await;
    let cfg = ConfigBuilder::new(&pki, backend.addr).write(pki.dir.path());
    let gw = start_gateway(&cfg).await;
    let port = gw.addr("agents").unwrap().port();
    let url = format!("https://localhost:{port}/curl");
    let resolve = format!("localhost:{port}:127.0.0.1");

    let with = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(&pki.server_ca)
        .arg("--cert")
        .arg(&device.cert)
        .arg("--key")
        .arg(&device.key)
        .arg(&url)
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&with.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert_eq!(
        backend.last().headers["x-client-cert-fingerprint"],
        sha256_hex(&device.der).as_str()
    );

    let count = backend.count();
    let without = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
        ])
        .arg("--cacert")
        .arg(&pki.server_ca)
        .arg(&url)
        .output()
        .await
        .unwrap();
    assert!(!without.status.success(), "curl without a cert succeeded");
    let err = String::from_utf8_lossy(&without.stderr);
    assert!(err.contains("alert"), "expected a TLS alert, got: {err}");
    assert_eq!(
        backend.count(),
        count,
        "a request without a cert reached the backend"
    );
}
