//! Behaviour: `certgate check` names every problem precisely, and SIGTERM
//! lets in-flight requests finish before a clean exit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

fn check(config: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new(certgate_bin())
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A config with relative paths, as an admin writes it.
fn config_text(key: &str, ca: &str, extra: &str) -> String {
    format!(
        r#"
[[listener]]
name = "agents"
listen = "127.0.0.1:0"
upstream = "core"
{extra}
[listener.tls]
[[listener.tls.certificate]]
cert = "server.pem"
key = "{key}"

[listener.client_auth]
mode = "required"
ca = ["{ca}"]

[[upstream]]
name = "core"
servers = ["127.0.0.1:9"]
"#
    )
}

#[test]
fn check_accepts_a_good_config() {
    let pki = Pki::new();
    let cfg = pki.path("good.toml");
    std::fs::write(&cfg, config_text("server.key", "client-ca.pem", "")).unwrap();
    let (code, out) = check(&cfg);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("is valid"), "{out}");
}

#[test]
fn check_names_a_key_that_does_not_match_its_cert() {
    let mut pki = Pki::new();
    pki.client("device-a", Kind::Good);
    let cfg = pki.path("mismatch.toml");
    std::fs::write(&cfg, config_text("device-a.key", "client-ca.pem", "")).unwrap();
    let (code, out) = check(&cfg);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(
            "listener \"agents\": tls.certificate[0].key: device-a.key does not match server.pem"
        ),
        "{out}"
    );
}

#[test]
fn check_names_a_missing_file() {
    let pki = Pki::new();
    let cfg = pki.path("missing.toml");
    std::fs::write(&cfg, config_text("server.key", "no-such-ca.pem", "")).unwrap();
    let (code, out) = check(&cfg);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("listener \"agents\": client_auth.ca[0]: no-such-ca.pem"),
        "{out}"
    );
    assert!(out.contains("file not found"), "{out}");
}

#[test]
fn check_names_an_unknown_key_with_its_line() {
    let pki = Pki::new();
    let cfg = pki.path("unknown.toml");
    std::fs::write(
        &cfg,
        config_text("server.key", "client-ca.pem", "max_conections = 10"),
    )
    .unwrap();
    let (code, out) = check(&cfg);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("unknown field `max_conections`"), "{out}");
    assert!(out.contains("line 6"), "{out}");
}

#[test]
fn check_reports_every_file_problem_at_once() {
    let mut pki = Pki::new();
    pki.client("device-a", Kind::Good);
    let cfg = pki.path("both.toml");
    std::fs::write(&cfg, config_text("device-a.key", "no-such-ca.pem", "")).unwrap();
    let (code, out) = check(&cfg);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("does not match"), "{out}");
    assert!(out.contains("no-such-ca.pem"), "{out}");
    assert!(out.contains("2 problem(s)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_request_finish_then_exits_zero() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let backend = Backend::start().await;
    let cfg = ConfigBuilder::new(&pki, backend.addr).write(pki.dir.path());
    let mut gw = spawn_certgate(&cfg);
    let addr = gw.addr;
    let client = client_config(&pki, Some(&device), &[]);

    let slow = tokio::spawn(get(addr, client.clone(), "/slow/1500", &[]));
    // Let the request reach the backend before the signal.
    let deadline = Instant::now() + Duration::from_secs(5);
    while backend.count() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(backend.count(), 1);
    gw.signal("TERM");

    // New connections are no longer accepted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        get(addr, client.clone(), "/late", &[]).await.is_err(),
        "a new connection was served after SIGTERM"
    );

    let (status, body) = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"slow done");
    let code = tokio::task::spawn_blocking(move || {
        let c = gw.wait_exit(Duration::from_secs(10));
        (c, gw.log.lock().unwrap().clone())
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "exit code; log:\n{}", code.1);
    assert!(code.1.contains("SIGTERM"), "{}", code.1);
}
