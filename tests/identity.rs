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

/// Parses each DN with Java's `javax.naming.ldap.LdapName` (a strict
/// RFC 2253/4514 parser) and prints, left to right, each attribute's type
/// and value: `S:` + hex of the UTF-8 of a string value, `B:` + hex of a
/// `#`-encoded value's BER bytes.
const LDAP_PARSE: &str = r#"
import javax.naming.ldap.LdapName;
import javax.naming.ldap.Rdn;
import java.nio.charset.StandardCharsets;
public class Parse {
    static String hex(byte[] b) {
        StringBuilder s = new StringBuilder();
        for (byte x : b) s.append(String.format("%02x", x));
        return s.toString();
    }
    public static void main(String[] args) throws Exception {
        LdapName name = new LdapName(args[0]);
        for (int i = name.size() - 1; i >= 0; i--) {
            Rdn rdn = name.getRdns().get(i);
            Object v = rdn.getValue();
            String value = v instanceof byte[]
                ? "B:" + hex((byte[]) v)
                : "S:" + hex(((String) v).getBytes(StandardCharsets.UTF_8));
            System.out.println(rdn.getType() + "\t" + value);
        }
    }
}
"#;

#[tokio::test]
async fn subjects_in_every_string_type_round_trip_through_a_strict_rfc4514_parser() {
    use rcgen::string::{BmpString, Ia5String, TeletexString, UniversalString};
    use rcgen::{DnType, DnValue};
    let mut pki = Pki::new();
    let mut name = rcgen::DistinguishedName::new();
    name.push(
        DnType::CountryName,
        DnValue::PrintableString("DE".try_into().unwrap()),
    );
    // Older Microsoft CAs write names as BMPString.
    name.push(
        DnType::OrganizationName,
        DnValue::BmpString(BmpString::try_from("Müller & Söhne, GmbH").unwrap()),
    );
    name.push(
        DnType::OrganizationalUnitName,
        DnValue::TeletexString(TeletexString::try_from("Zentrale+Nord").unwrap()),
    );
    name.push(
        DnType::LocalityName,
        DnValue::UniversalString(UniversalString::try_from("Zürich 東京").unwrap()),
    );
    // A type known only by its OID (a PKI's own device-id attribute).
    name.push(
        DnType::CustomDnType(vec![1, 3, 6, 1, 4, 1, 55555, 1]),
        "dev-42",
    );
    name.push(
        DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
        DnValue::Ia5String(Ia5String::try_from("agent@example.com").unwrap()),
    );
    name.push(DnType::CommonName, "#laptop, \"7\" <a+b>;c=d\\e ");
    let device = pki.client_named("oddly-named", name, Kind::Good);
    let backend = Backend::start().await;
    let cb = ConfigBuilder::new(&pki, backend.addr);
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let (s, _) = get(addr, client_config(&pki, Some(&device), &[]), "/", &[])
        .await
        .unwrap();
    assert_eq!(s, 200);
    let subject = backend.last().headers["x-client-cert-subject"]
        .to_str()
        .expect("the subject header is ASCII")
        .to_string();

    let hex = |s: &str| common::hex(s.as_bytes());
    let expected = [
        (
            "CN".to_string(),
            format!("S:{}", hex("#laptop, \"7\" <a+b>;c=d\\e ")),
        ),
        (
            "emailAddress".to_string(),
            format!("S:{}", hex("agent@example.com")),
        ),
        // UTF8String "dev-42", BER: tag 0x0c, length 6.
        (
            "1.3.6.1.4.1.55555.1".to_string(),
            format!("B:0c06{}", hex("dev-42")),
        ),
        ("L".to_string(), format!("S:{}", hex("Zürich 東京"))),
        ("OU".to_string(), format!("S:{}", hex("Zentrale+Nord"))),
        (
            "O".to_string(),
            format!("S:{}", hex("Müller & Söhne, GmbH")),
        ),
        ("C".to_string(), format!("S:{}", hex("DE"))),
    ];

    require_tool("java");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("Parse.java");
    std::fs::write(&src, LDAP_PARSE).unwrap();
    let out = std::process::Command::new("java")
        .arg(&src)
        .arg(&subject)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "LdapName refused {subject:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(t, v)| (t.to_string(), v.to_string()))
        .collect();
    assert_eq!(parsed, expected, "subject header: {subject}");
}

#[tokio::test]
async fn allow_rules_match_names_written_as_bmpstring() {
    use rcgen::string::BmpString;
    use rcgen::{DnType, DnValue};
    let mut pki = Pki::new();
    let mut name = rcgen::DistinguishedName::new();
    name.push(
        DnType::OrganizationalUnitName,
        DnValue::BmpString(BmpString::try_from("Kassen").unwrap()),
    );
    name.push(
        DnType::CommonName,
        DnValue::BmpString(BmpString::try_from("kiosk-Süd-7").unwrap()),
    );
    let kiosk = pki.client_named("kiosk", name, Kind::Good);
    let other = pki.client("laptop-1", Kind::Good);
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_client_auth = "allow_cn = [\"kiosk-*\"]\n".into();
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let (s, _) = get(addr, client_config(&pki, Some(&kiosk), &[]), "/", &[])
        .await
        .expect("a BMPString CN matching allow_cn is admitted");
    assert_eq!(s, 200);
    assert_eq!(
        backend.last().headers["x-client-cert-subject"],
        "CN=kiosk-S\\C3\\BCd-7,OU=Kassen"
    );
    assert!(
        get(addr, client_config(&pki, Some(&other), &[]), "/", &[])
            .await
            .is_err()
    );
    drop(gw);
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_client_auth = "allow_ou = [\"Kassen\"]\n".into();
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    assert!(
        get(addr, client_config(&pki, Some(&kiosk), &[]), "/", &[])
            .await
            .is_ok()
    );
}
