//! Readiness (observe) mode, refusal reasons including legacy protocols,
//! and the plain-HTTP port for legacy devices.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_mode_admits_everyone_tells_the_backend_and_reports_who_would_be_refused() {
    let mut pki = Pki::new();
    let good = pki.client("good-approved", Kind::Good);
    let unapproved = pki.client("new-unapproved", Kind::Good);
    let expired = pki.client("old-expired", Kind::Expired);
    let foreign = pki.client("foreign-ca", Kind::ForeignCa);
    let revoked = pki.client("stolen-revoked", Kind::Good);
    let crl = pki.crl("client-ca.crl", &[&revoked], true);
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.mode = "observe";
    cb.crl = vec![crl];
    cb.extra_top = registry_table(pki.dir.path(), "manual");
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let admin = gw.admin_addr().unwrap();
    let (s, _) = admin_call(
        admin,
        "POST",
        &format!("/api/devices/{}/approve", sha256_hex(&good.der)),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    let cases: [(&str, Option<&ClientCert>, &str); 6] = [
        ("good", Some(&good), "SUCCESS"),
        ("unapproved", Some(&unapproved), "FAILED:unapproved"),
        ("none", None, "NONE"),
        ("expired", Some(&expired), "FAILED:expired"),
        ("foreign", Some(&foreign), "FAILED:unknown_ca"),
        ("revoked", Some(&revoked), "FAILED:revoked"),
    ];
    for (what, cert, verify) in cases {
        let (s, _) = get(
            addr,
            client_config(&pki, cert, &[]),
            &format!("/{what}"),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: observe mode must admit: {e}"));
        assert_eq!(s, 200, "{what}");
        let seen = backend.last();
        assert_eq!(seen.path, format!("/{what}"));
        assert_eq!(seen.headers["x-client-verify"], verify, "{what}");
        // Identity headers only for a certificate that passed CA validation.
        let has_identity = seen.headers.contains_key("x-client-cert-fingerprint");
        assert_eq!(
            has_identity,
            matches!(what, "good" | "unapproved"),
            "{what}: identity headers"
        );
    }

    // The readiness report counts each class and lists exactly the five
    // clients that enforcement would refuse.
    let mut report = serde_json::Value::Null;
    for _ in 0..100 {
        let (s, v) = admin_call(
            admin,
            "GET",
            "/api/readiness?listener=agents&window=1h",
            None,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if v["total"] == 6 {
            report = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(report["total"], 6, "{report}");
    let count = |status: &str| {
        report["by_status"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["status"] == status)
            .map(|s| s["count"].as_u64().unwrap())
            .unwrap()
    };
    assert_eq!(count("authenticated"), 1);
    assert_eq!(count("unapproved"), 1);
    assert_eq!(count("no_credentials"), 1);
    assert_eq!(count("failed"), 3);
    assert_eq!(count("blocked"), 0);
    let refused = report["would_refuse"].as_array().unwrap();
    assert_eq!(refused.len(), 5, "{report}");
    let mut reasons: Vec<String> = refused
        .iter()
        .map(|c| {
            format!(
                "{}:{}",
                c["status"].as_str().unwrap(),
                c["reason"].as_str().unwrap()
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "failed:expired",
            "failed:revoked",
            "failed:unknown_ca",
            "no_credentials:none",
            "unapproved:unapproved"
        ]
    );
    assert!(
        refused
            .iter()
            .all(|c| c["fingerprint"] != sha256_hex(&good.der).as_str()),
        "the approved device is not listed"
    );
    assert_eq!(
        metric(
            &gw,
            "certgate_client_auth_total{listener=\"agents\",status=\"failed\",reason=\"revoked\"}"
        ),
        1.0
    );
    // The registry recorded the unapproved device as pending, as it would
    // in enforcing mode.
    let (_, d) = admin_call(
        admin,
        "GET",
        &format!("/api/devices/{}", sha256_hex(&unapproved.der)),
        None,
        None,
    )
    .await;
    assert_eq!(d["status"], "pending", "{d}");

    // The CLI table, as an admin reads it.
    let out = std::process::Command::new(certgate_bin())
        .args([
            "readiness",
            "--listener",
            "agents",
            "--window",
            "1h",
            "--admin",
        ])
        .arg(admin.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("would refuse 5 client(s)"), "{text}");
    assert!(text.contains("CN=new-unapproved"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_1_0_client_is_reported_as_legacy_protocol_with_its_version() {
    require_tool("openssl");
    let mut pki = Pki::new();
    let _device = pki.client("device-a", Kind::Good);
    let backend = Backend::start().await;
    let cb = ConfigBuilder::new(&pki, backend.addr);
    let config = cb.write(pki.dir.path());
    let gw = spawn_certgate(&config);
    let admin = gw.admin_addr();
    let port = gw.addr.port().to_string();
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("Cipher is ECDHE")
    );
    let mut seen = false;
    for _ in 0..100 {
        if scraped(
            admin,
            "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"legacy_protocol\"}",
        )
        .await
            == 1.0
        {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let log = gw.log.lock().unwrap().clone();
    assert!(seen, "legacy_protocol not counted; log:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("legacy_protocol"))
        .unwrap_or_else(|| panic!("no log line; log:\n{log}"));
    assert!(
        line.contains("127.0.0.1") && line.contains("offered at most TLS 1.0"),
        "{line}"
    );
    let (_, r) = admin_call(admin, "GET", "/api/readiness?listener=agents", None, None).await;
    assert_eq!(r["legacy_sources"][0]["peer"], "127.0.0.1", "{r}");
    assert_eq!(r["legacy_sources"][0]["version"], "TLS 1.0");
    assert_eq!(
        scraped(admin, "certgate_client_auth_total{listener=\"agents\",status=\"upgrade_required\",reason=\"legacy_protocol\"}").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_http_port_admits_allowed_sources_only() {
    let pki = Pki::new();
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_upstream = "\n[[listener]]\nname = \"legacy\"\nlisten = \"127.0.0.1:0\"\nupstream = \"core\"\nallow_from = [\"127.0.0.1/32\"]\n".into();
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let plain = gw.addr("legacy").unwrap();

    let ask = |from: &'static str| async move {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let tcp = sock.connect(plain).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let resp = sender
            .send_request(
                http::Request::get("/checkin")
                    .header("host", "core.example")
                    .header("x-client-verify", "SUCCESS")
                    .body(empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        resp.status()
    };
    assert_eq!(ask("127.0.0.1").await, 200);
    let seen = backend.last();
    assert_eq!(
        seen.headers["x-client-verify"], "NONE",
        "a client cannot claim a certificate"
    );
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    let before = backend.count();
    assert_eq!(ask("127.0.0.2").await, 403);
    assert_eq!(
        backend.count(),
        before,
        "a refused source never reaches the backend"
    );
    assert_eq!(
        metric(
            &gw,
            "certgate_plain_http_sources_refused_total{listener=\"legacy\"}"
        ),
        1.0
    );
}

#[test]
fn a_plain_listener_without_allow_from_is_a_config_error() {
    let pki = Pki::new();
    let mut cb = ConfigBuilder::new(&pki, "127.0.0.1:9".parse().unwrap());
    cb.extra_upstream =
        "\n[[listener]]\nname = \"legacy\"\nlisten = \"127.0.0.1:0\"\nupstream = \"core\"\n".into();
    let config = cb.write(pki.dir.path());
    let err = certgate_fails("check", &config);
    assert!(
        err.contains("allow_from") && err.contains("legacy"),
        "{err}"
    );
}

/// Two authenticated attempts (one of them resumed) and two without a
/// certificate, all from 127.0.0.1, on a listener in `mode`: the report
/// counts each client's own attempts.
async fn mixed_attempts_from_one_address(mode: &'static str) {
    let mut pki = Pki::new();
    let device = pki.client("mixed-device", Kind::Good);
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.mode = mode;
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let admin = gw.admin_addr().unwrap();
    // The same client config twice: the second handshake resumes.
    let with_cert = client_config(&pki, Some(&device), &[]);
    for _ in 0..2 {
        let (s, _) = get(addr, with_cert.clone(), "/with", &[]).await.unwrap();
        assert_eq!(s, 200);
    }
    for _ in 0..2 {
        let r = get(addr, client_config(&pki, None, &[]), "/without", &[]).await;
        assert_eq!(r.is_ok(), mode == "observe", "{mode}: {r:?}");
    }
    let mut report = serde_json::Value::Null;
    for _ in 0..50 {
        let (s, v) = admin_call(admin, "GET", "/api/readiness?listener=agents", None, None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if v["total"] == 4 {
            report = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(report["total"], 4, "{mode}: {report}");
    assert_eq!(report["mode"], mode);
    let count = |status: &str| {
        report["by_status"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["status"] == status)
            .map(|s| s["count"].as_u64().unwrap())
    };
    assert_eq!(count("authenticated"), Some(2), "{report}");
    assert_eq!(count("no_credentials"), Some(2), "{report}");
    let refuse = report["would_refuse"].as_array().unwrap();
    assert_eq!(refuse.len(), 1, "{report}");
    assert_eq!(refuse[0]["attempts"], 2, "only its own attempts: {report}");
    assert!(
        refuse[0]["subject"].is_null(),
        "a source borrows no subject: {report}"
    );
    assert!(refuse[0]["fingerprint"].is_null());

    // Without ?listener, every listener.
    let (s, all) = admin_call(admin, "GET", "/api/readiness", None, None).await;
    assert_eq!(s, StatusCode::OK, "{all}");
    assert_eq!(all["listeners"][0]["listener"], "agents", "{all}");
    assert_eq!(all["listeners"][0]["total"], 4, "{all}");

    // The words fit the mode; 7d is a window.
    let out = std::process::Command::new(certgate_bin())
        .args(["readiness", "--admin", &admin.to_string(), "--window", "7d"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if mode == "required" {
        assert!(
            text.contains("Refused now (mode = \"required\"): 1 client(s)"),
            "{text}"
        );
        assert!(!text.contains("would refuse"), "{text}");
    } else {
        assert!(
            text.contains("Enforcing (mode = \"required\") would refuse 1 client(s)"),
            "{text}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_counts_each_clients_own_attempts_when_enforcing() {
    mixed_attempts_from_one_address("required").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_counts_each_clients_own_attempts_in_observe_mode() {
    mixed_attempts_from_one_address("observe").await;
}
