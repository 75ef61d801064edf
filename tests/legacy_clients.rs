//! Legacy agents against a listener with an ECDSA and an RSA certificate
//! for the same name (in either order), and against RSA-only and
//! ECDSA-only listeners.
//!
//! Each stack is emulated with `openssl s_client` offering the TLS 1.2
//! suites, signature algorithms and groups that stack sends, from:
//! - Microsoft, "TLS Cipher Suites in Windows 7" / "... Windows 8.1" /
//!   "... Windows 10 v1607" (learn.microsoft.com, Schannel cipher-suite
//!   lists, default order after KB3042058): Windows 7 and 8.1 offer
//!   AES-GCM with ECDHE only as TLS_ECDHE_ECDSA_*; their ECDHE_RSA suites
//!   are CBC. Groups P-256 and P-384, no X25519. Windows 10 adds
//!   TLS_ECDHE_RSA_WITH_AES_*_GCM and X25519.
//! - Oracle, "Java Cryptography Architecture Oracle Providers", SunJSSE
//!   suites for JDK 8: before 8u161 the unlimited-strength policy is off
//!   by default, so only AES-128 suites are enabled; from 8u161 AES-256 too.
//!   No X25519 before JDK 11.
//! - OpenSSL 1.0.1 `DEFAULT` list (both ECDHE key types with GCM, no X25519),
//!   and SSL Labs' handshake simulation for Android 4.4.2 (TLS 1.2,
//!   ECDHE_ECDSA/RSA AES-128-GCM first, then CBC).
//! - An agent whose TLS library is built without ECDSA: RSA suites and RSA
//!   signatures only.
//!
//! Windows and Java agents present RSA machine certificates (AD CS
//! templates); the others ECDSA ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// One emulated stack.
struct Stack {
    name: &'static str,
    ciphers: &'static str,
    sigalgs: &'static str,
    groups: &'static str,
    /// Sends SNI (agents configured with an IP address do not).
    sni: bool,
    /// Presents an RSA client certificate.
    rsa_client: bool,
}

const WIN_SIGALGS: &str =
    "RSA+SHA256:RSA+SHA384:RSA+SHA1:ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA1:RSA+SHA512:ECDSA+SHA512";
const JAVA8_SIGALGS: &str = "ECDSA+SHA512:RSA+SHA512:ECDSA+SHA384:RSA+SHA384:ECDSA+SHA256:RSA+SHA256:ECDSA+SHA224:RSA+SHA224:ECDSA+SHA1:RSA+SHA1";

const STACKS: &[Stack] = &[
    Stack {
        name: "Windows 7 / Server 2008 R2 SChannel",
        ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA:ECDHE-RSA-AES128-SHA:AES256-GCM-SHA384:AES128-GCM-SHA256:AES256-SHA256:AES128-SHA256:AES256-SHA:AES128-SHA:DES-CBC3-SHA",
        sigalgs: WIN_SIGALGS,
        groups: "P-256:P-384",
        sni: true,
        rsa_client: true,
    },
    Stack {
        name: "Windows 7 agent by IP address (no SNI)",
        ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA:ECDHE-RSA-AES128-SHA:AES256-GCM-SHA384:AES128-GCM-SHA256:AES256-SHA:AES128-SHA",
        sigalgs: WIN_SIGALGS,
        groups: "P-256:P-384",
        sni: false,
        rsa_client: true,
    },
    Stack {
        name: "Windows 8.1 / Server 2012 R2 SChannel",
        ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA:ECDHE-RSA-AES128-SHA:AES256-GCM-SHA384:AES128-GCM-SHA256:AES256-SHA256:AES128-SHA256:AES256-SHA:AES128-SHA",
        sigalgs: WIN_SIGALGS,
        groups: "P-256:P-384",
        sni: true,
        rsa_client: true,
    },
    Stack {
        name: "Windows 10 / Server 2016+ SChannel",
        ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA256:AES256-GCM-SHA384:AES128-GCM-SHA256",
        sigalgs: "RSA-PSS+SHA256:RSA-PSS+SHA384:RSA-PSS+SHA512:RSA+SHA256:RSA+SHA384:RSA+SHA512:ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512:RSA+SHA1:ECDSA+SHA1",
        groups: "X25519:P-256:P-384",
        sni: true,
        rsa_client: true,
    },
    Stack {
        name: "Java 8 before 8u161 (AES-128 only)",
        ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-GCM-SHA256:AES128-SHA256:AES128-SHA",
        sigalgs: JAVA8_SIGALGS,
        groups: "P-256:P-384:P-521",
        sni: true,
        rsa_client: true,
    },
    Stack {
        name: "Java 8u161 and later",
        ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:AES256-GCM-SHA384:AES128-GCM-SHA256",
        sigalgs: JAVA8_SIGALGS,
        groups: "P-256:P-384:P-521",
        sni: true,
        rsa_client: true,
    },
    Stack {
        name: "OpenSSL 1.0.1",
        ciphers: "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-SHA384:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA256:AES256-GCM-SHA384:AES128-GCM-SHA256:AES256-SHA:AES128-SHA",
        sigalgs: "RSA+SHA512:ECDSA+SHA512:RSA+SHA384:ECDSA+SHA384:RSA+SHA256:ECDSA+SHA256:RSA+SHA224:ECDSA+SHA224:RSA+SHA1:ECDSA+SHA1",
        groups: "P-256:P-384:P-521",
        sni: true,
        rsa_client: false,
    },
    Stack {
        name: "Android 4.4",
        ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:AES128-GCM-SHA256:AES128-SHA:AES256-SHA",
        sigalgs: "RSA+SHA512:ECDSA+SHA512:RSA+SHA384:ECDSA+SHA384:RSA+SHA256:ECDSA+SHA256:RSA+SHA1:ECDSA+SHA1",
        groups: "P-256:P-384:P-521",
        sni: true,
        rsa_client: false,
    },
    Stack {
        name: "agent without ECDSA (RSA only)",
        ciphers: "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-SHA:AES128-SHA",
        sigalgs: "RSA+SHA256:RSA+SHA384:RSA+SHA512:RSA+SHA1",
        groups: "P-256:P-384",
        sni: true,
        rsa_client: true,
    },
];

/// What one emulated handshake and request gave.
struct Outcome {
    status_200: bool,
    cipher: Option<String>,
    output: String,
}

async fn connect(pki: &Pki, ecdsa: &ClientCert, rsa: &ClientCert, port: u16, s: &Stack) -> Outcome {
    let client = if s.rsa_client { rsa } else { ecdsa };
    let mut args: Vec<std::ffi::OsString> = vec![
        "-tls1_2".into(),
        "-ign_eof".into(),
        "-cipher".into(),
        format!("{}:@SECLEVEL=0", s.ciphers).into(),
        "-sigalgs".into(),
        s.sigalgs.into(),
        "-groups".into(),
        s.groups.into(),
        "-CAfile".into(),
        pki.server_ca.clone().into(),
        "-cert".into(),
        client.cert.clone().into(),
        "-key".into(),
        client.key.clone().into(),
    ];
    if s.sni {
        args.extend(["-servername".into(), "localhost".into()]);
    } else {
        args.push("-noservername".into());
    }
    let output = openssl_s_client(
        port,
        &args,
        b"GET /legacy HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    let cipher = output
        .lines()
        .find_map(|l| {
            l.split_once("Cipher is ")
                .map(|(_, c)| c.trim().to_string())
        })
        .filter(|c| c != "(NONE)");
    Outcome {
        status_200: output.contains("HTTP/1.1 200"),
        cipher,
        output,
    }
}

/// Which server certificates the listener gets, in config order.
#[derive(Clone, Copy, Debug)]
enum Certs {
    EcdsaThenRsa,
    RsaThenEcdsa,
    RsaOnly,
    EcdsaOnly,
}

struct Fixture {
    pki: Pki,
    ecdsa_client: ClientCert,
    rsa_client: ClientCert,
    backend: Backend,
    gw: certgate::Gateway,
}

async fn gateway(certs: Certs) -> Fixture {
    let mut pki = Pki::new();
    let ecdsa_client = pki.client("agent-ecdsa", Kind::Good);
    let rsa_client = pki.client_rsa("agent-rsa");
    let backend = Backend::start().await;
    let rsa = pki.server_pair_rsa("localhost");
    let rsa_cert = pki.path("server-rsa.pem");
    let rsa_key = pki.path("server-rsa.key");
    std::fs::write(&rsa_cert, &rsa.cert_pem).unwrap();
    std::fs::write(&rsa_key, &rsa.key_pem).unwrap();
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    let entry = |cert: &std::path::Path, key: &std::path::Path| {
        format!(
            "[[listener.tls.certificate]]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        )
    };
    match certs {
        // The builder's own entry comes after extra_tls.
        Certs::RsaThenEcdsa => cb.extra_tls = entry(&rsa_cert, &rsa_key),
        Certs::EcdsaThenRsa => {
            cb.extra_tls = entry(&pki.server_cert, &pki.server_key);
            cb.cert = rsa_cert.clone();
            cb.key = rsa_key.clone();
        }
        Certs::RsaOnly => {
            cb.cert = rsa_cert.clone();
            cb.key = rsa_key.clone();
        }
        Certs::EcdsaOnly => {}
    }
    let config = cb.write(pki.dir.path());
    let gw = start_gateway(&config).await;
    Fixture {
        pki,
        ecdsa_client,
        rsa_client,
        backend,
        gw,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_legacy_stack_gets_200_from_a_dual_certificate_listener_in_either_order() {
    for order in [Certs::EcdsaThenRsa, Certs::RsaThenEcdsa] {
        let f = gateway(order).await;
        let port = f.gw.addr("agents").unwrap().port();
        println!("{order:?}:");
        for s in STACKS {
            let o = connect(&f.pki, &f.ecdsa_client, &f.rsa_client, port, s).await;
            println!(
                "  {:<42} -> {}",
                s.name,
                o.cipher.as_deref().unwrap_or("(no handshake)")
            );
            assert!(
                o.status_200,
                "{order:?}: {} must get 200:\n{}",
                s.name, o.output
            );
            let cipher = o.cipher.unwrap_or_default();
            assert!(
                cipher.contains("GCM"),
                "{}: an AEAD suite, got {cipher}",
                s.name
            );
            // ECDSA whenever the stack can use it (every one here but the
            // RSA-only agent): the cheaper handshake.
            let ecdsa = s.sigalgs.contains("ECDSA") && s.ciphers.contains("ECDHE-ECDSA-AES");
            assert_eq!(
                cipher.starts_with("ECDHE-ECDSA"),
                ecdsa,
                "{}: key type chosen, got {cipher}",
                s.name
            );
        }
        assert_eq!(f.backend.count(), STACKS.len(), "{order:?}");
        f.gw.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rsa_only_listener_refuses_windows_7_and_8_1_with_needs_ecdsa_certificate() {
    let f = gateway(Certs::RsaOnly).await;
    let port = f.gw.addr("agents").unwrap().port();
    let admin = f.gw.admin_addr().unwrap();
    let mut refused = 0;
    for s in STACKS {
        let o = connect(&f.pki, &f.ecdsa_client, &f.rsa_client, port, s).await;
        let windows_old = s.name.starts_with("Windows 7") || s.name.starts_with("Windows 8.1");
        println!(
            "RSA only: {:<42} -> {}",
            s.name,
            o.cipher.as_deref().unwrap_or("refused")
        );
        if windows_old {
            assert!(!o.status_200, "{} must be refused:\n{}", s.name, o.output);
            refused += 1;
        } else {
            assert!(o.status_200, "{} must get 200:\n{}", s.name, o.output);
        }
    }
    let line = "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"needs_ecdsa_certificate\"}";
    assert!(metric_at_least(&f.gw, line, refused as f64).await);
    assert_eq!(
        metric(&f.gw, line),
        refused as f64,
        "{}",
        f.gw.metrics.encode()
    );
    assert_eq!(
        f.backend.count(),
        STACKS.len() - refused,
        "a refused agent reached the backend"
    );
    // The readiness report names the sources and what adding ECDSA would do.
    let (_, r) = admin_call(admin, "GET", "/api/readiness?listener=agents", None, None).await;
    assert_eq!(r["needs_certificate"][0]["peer"], "127.0.0.1", "{r}");
    assert_eq!(r["needs_certificate"][0]["needs"], "ECDSA", "{r}");
    assert_eq!(r["would_admit"][0]["key_type"], "ECDSA", "{r}");
    assert_eq!(r["would_admit"][0]["sources"], 1, "{r}");
    let out = std::process::Command::new(certgate_bin())
        .args(["readiness", "--listener", "agents", "--admin"])
        .arg(admin.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("127.0.0.1 needs an ECDSA certificate")
            && text
                .contains("Adding an ECDSA certificate for the same names would admit 1 of them."),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    f.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecdsa_only_listener_refuses_the_rsa_only_agent_with_needs_rsa_certificate() {
    let f = gateway(Certs::EcdsaOnly).await;
    let port = f.gw.addr("agents").unwrap().port();
    let rsa_only = STACKS.last().unwrap();
    let o = connect(&f.pki, &f.ecdsa_client, &f.rsa_client, port, rsa_only).await;
    assert!(!o.status_200, "{}", o.output);
    let line = "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"needs_rsa_certificate\"}";
    assert!(
        metric_at_least(&f.gw, line, 1.0).await,
        "{}",
        f.gw.metrics.encode()
    );
    assert_eq!(f.backend.count(), 0);
    f.gw.shutdown().await;
}

/// `certgate check` on `config`, which must pass; its stderr (warnings).
fn check_passes(config: &std::path::Path) -> String {
    let out = std::process::Command::new(certgate_bin())
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

#[test]
fn check_warns_about_single_key_type_names_and_refuses_two_of_one_type() {
    let pki = Pki::new();
    let backend: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    // ECDSA only (the builder's default): a warning, still valid.
    let cb = ConfigBuilder::new(&pki, backend);
    let config = cb.write(pki.dir.path());
    let err = check_passes(&config);
    assert!(err.contains("ECDSA certificate only"), "{err}");

    // RSA only: the Windows 7 / 8.1 warning.
    let rsa = pki.server_pair_rsa("localhost");
    let rsa_cert = pki.path("only-rsa.pem");
    let rsa_key = pki.path("only-rsa.key");
    std::fs::write(&rsa_cert, &rsa.cert_pem).unwrap();
    std::fs::write(&rsa_key, &rsa.key_pem).unwrap();
    let mut cb = ConfigBuilder::new(&pki, backend);
    cb.cert = rsa_cert.clone();
    cb.key = rsa_key.clone();
    let dir = tempfile::tempdir().unwrap();
    let config = cb.write(dir.path());
    let err = check_passes(&config);
    assert!(
        err.contains("Windows 7 / 8.1") && err.contains("add an ECDSA P-256 certificate"),
        "{err}"
    );

    // Two ECDSA certificates for localhost: an error naming both.
    let other = pki.server_pair("localhost");
    let other_cert = pki.path("second-ecdsa.pem");
    let other_key = pki.path("second-ecdsa.key");
    std::fs::write(&other_cert, &other.cert_pem).unwrap();
    std::fs::write(&other_key, &other.key_pem).unwrap();
    let mut cb = ConfigBuilder::new(&pki, backend);
    cb.extra_tls = format!(
        "[[listener.tls.certificate]]\ncert = \"{}\"\nkey = \"{}\"\n",
        other_cert.display(),
        other_key.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let msg = certgate_fails("check", &cb.write(dir.path()));
    assert!(
        msg.contains("certificates [0] and [1] are both ECDSA certificates for \"localhost\""),
        "{msg}"
    );

    // ECDSA + RSA: no key-type warning.
    let mut cb = ConfigBuilder::new(&pki, backend);
    cb.extra_tls = format!(
        "[[listener.tls.certificate]]\ncert = \"{}\"\nkey = \"{}\"\n",
        rsa_cert.display(),
        rsa_key.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let err = check_passes(&cb.write(dir.path()));
    assert!(!err.contains("certificate only"), "{err}");
}

/// A Java 17 `HttpsURLConnection` client: trusts `ca`, presents the
/// PKCS#12 keystore `p12` when given. Prints the status code, or the
/// exception that ended the handshake.
const JAVA_CLIENT: &str = r#"
import java.io.*;
import java.net.URL;
import java.security.KeyStore;
import java.security.cert.*;
import javax.net.ssl.*;

public class Client {
    public static void main(String[] a) throws Exception {
        KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        try (InputStream in = new FileInputStream(a[1])) {
            trust.setCertificateEntry("ca", CertificateFactory.getInstance("X.509").generateCertificate(in));
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        KeyManager[] kms = null;
        if (a.length > 2) {
            KeyStore ks = KeyStore.getInstance("PKCS12");
            try (InputStream in = new FileInputStream(a[2])) { ks.load(in, a[3].toCharArray()); }
            KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
            kmf.init(ks, a[3].toCharArray());
            kms = kmf.getKeyManagers();
        }
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(kms, tmf.getTrustManagers(), null);
        HttpsURLConnection c = (HttpsURLConnection) new URL(a[0]).openConnection();
        c.setSSLSocketFactory(ctx.getSocketFactory());
        try {
            int code = c.getResponseCode();
            System.out.println("status " + code + " " + c.getCipherSuite());
        } catch (IOException e) {
            System.out.println("refused " + e);
        }
    }
}
"#;

const PYTHON_CLIENT: &str = r#"
import http.client, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
if len(sys.argv) > 3:
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
try:
    c = http.client.HTTPSConnection("localhost", int(sys.argv[1]), context=ctx, timeout=10)
    c.request("GET", "/python")
    r = c.getresponse()
    print("status", r.status, c.sock.cipher()[0])
except (ssl.SSLError, OSError) as e:
    print("refused", e)
"#;

fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_get_200_through_a_dual_certificate_listener_and_are_refused_without_a_certificate()
 {
    for tool in ["curl", "openssl", "python3", "java"] {
        require_tool(tool);
    }
    let f = gateway(Certs::RsaThenEcdsa).await;
    let port = f.gw.addr("agents").unwrap().port();
    let url = format!("https://localhost:{port}/real");
    let ca = &f.pki.server_ca;
    let device = &f.rsa_client;
    let dir = tempfile::tempdir().unwrap();
    let p12 = dir.path().join("agent.p12");
    let out = run(std::process::Command::new("openssl")
        .args(["pkcs12", "-export", "-passout", "pass:changeit", "-in"])
        .arg(&device.cert)
        .arg("-inkey")
        .arg(&device.key)
        .arg("-out")
        .arg(&p12));
    assert!(p12.exists(), "{out}");
    let java = dir.path().join("Client.java");
    std::fs::write(&java, JAVA_CLIENT).unwrap();
    let python = dir.path().join("client.py");
    std::fs::write(&python, PYTHON_CLIENT).unwrap();

    // (name, with certificate, without certificate)
    let curl = |with: bool| {
        let mut c = std::process::Command::new("curl");
        c.args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "status %{http_code}\n",
            "--cacert",
        ])
        .arg(ca);
        if with {
            c.arg("--cert")
                .arg(&device.cert)
                .arg("--key")
                .arg(&device.key);
        }
        run(c.arg(&url))
    };
    let python_run = |with: bool| {
        let mut c = std::process::Command::new("python3");
        c.arg(&python).arg(port.to_string()).arg(ca);
        if with {
            c.arg(&device.cert).arg(&device.key);
        }
        run(&mut c)
    };
    let java_run = |with: bool| {
        let mut c = std::process::Command::new("java");
        c.arg(&java).arg(&url).arg(ca);
        if with {
            c.arg(&p12).arg("changeit");
        }
        run(&mut c)
    };
    let before = f.backend.count();
    for (name, with, without) in [
        ("curl", curl(true), curl(false)),
        ("python ssl", python_run(true), python_run(false)),
        (
            "java 17 HttpsURLConnection",
            java_run(true),
            java_run(false),
        ),
    ] {
        println!("{name}: with certificate: {}", with.trim());
        assert!(
            with.contains("status 200"),
            "{name} with a certificate:\n{with}"
        );
        assert!(
            !without.contains("status 200"),
            "{name} without a certificate:\n{without}"
        );
    }
    let with = connect(&f.pki, &f.ecdsa_client, &f.rsa_client, port, &STACKS[3]).await;
    assert!(with.status_200, "openssl s_client:\n{}", with.output);
    let without = run(std::process::Command::new("sh").arg("-c").arg(format!(
        "printf 'GET / HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n' | timeout 10 openssl s_client -connect 127.0.0.1:{port} -servername localhost -CAfile {} -ign_eof 2>&1",
        ca.display()
    )));
    assert!(
        !without.contains("HTTP/1.1 200"),
        "openssl without a certificate:\n{without}"
    );
    assert_eq!(
        f.backend.count(),
        before + 4,
        "only the four clients with a certificate reached the backend"
    );
    f.gw.shutdown().await;
}
