//! Behaviour: `certgate demo`, tried as a newcomer would: run it from an
//! empty directory, paste the printed curl commands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::BufRead;
use std::time::Duration;

use common::*;

#[test]
fn demo_prints_curl_commands_that_work_as_described() {
    require_tool("curl");
    let cwd = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(certgate_bin())
        .args(["demo", "--listen", "127.0.0.1:0"])
        .current_dir(cwd.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut printed = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "demo did not become ready; printed:\n{}",
                    printed.join("\n")
                )
            });
        let done = line.contains("Press Ctrl-C");
        printed.push(line);
        if done {
            break;
        }
    }
    let curls: Vec<&String> = printed
        .iter()
        .filter(|l| l.trim_start().starts_with("curl --cacert"))
        .collect();
    assert!(
        curls.len() >= 2,
        "expected curl commands, got:\n{}",
        printed.join("\n")
    );

    let run = |cmd: &str| {
        std::process::Command::new("timeout")
            .args(["20", "sh", "-c", cmd])
            .current_dir(cwd.path())
            .output()
            .unwrap()
    };
    let with_cert = run(curls[0].trim());
    let out = String::from_utf8_lossy(&with_cert.stdout);
    assert!(
        with_cert.status.success(),
        "{}",
        String::from_utf8_lossy(&with_cert.stderr)
    );
    assert!(out.contains("x-client-verify: SUCCESS"), "{out}");
    assert!(
        out.contains("x-client-cert-subject: CN=demo-device"),
        "{out}"
    );
    assert!(out.contains("x-client-cert-fingerprint: "), "{out}");

    let without = run(curls[1].trim());
    assert!(
        !without.status.success(),
        "the request without a cert must be refused"
    );
    assert!(!String::from_utf8_lossy(&without.stdout).contains("x-client-verify"));

    // The demo's own config passes `certgate check`.
    let check = std::process::Command::new(certgate_bin())
        .args(["check", "--config", "certs/demo/certgate.toml"])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // Ctrl-C stops it cleanly.
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "demo did not exit cleanly on SIGINT"
    );
}
