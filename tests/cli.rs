//! The command line as an admin meets it: `--version` names the commit,
//! completions and the man page come from the same definitions, output
//! into a closed pipe ends quietly, and a cause is said once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};

use common::*;

fn certgate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(certgate_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_names_the_commit() {
    let (ok, out, _) = certgate(&["--version"]);
    assert!(ok);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(h) => assert!(out.contains(&format!("(commit {h})")), "{out}"),
        None => assert!(out.contains("(commit "), "{out}"),
    }
}

#[test]
fn completions_and_the_man_page_cover_every_subcommand() {
    let (ok, bash, err) = certgate(&["completions", "bash"]);
    assert!(ok, "{err}");
    // A script bash accepts, that completes the subcommands.
    let check = Command::new("bash")
        .args(["-n", "/dev/stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(bash.as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(check.success(), "bash -n refused the completion script");
    for sub in ["check", "run", "devices", "readiness", "revocation", "demo"] {
        assert!(bash.contains(sub), "{sub} missing from bash completion");
    }
    for shell in ["zsh", "fish"] {
        let (ok, out, err) = certgate(&["completions", shell]);
        assert!(
            ok && out.contains("certgate") && out.contains("devices"),
            "{shell}: {err}"
        );
    }
    let (ok, man, err) = certgate(&["man"]);
    assert!(ok, "{err}");
    assert!(
        man.starts_with(".ie") && man.contains(".TH certgate 1"),
        "{man}"
    );
    assert!(
        man.contains("devices") && man.contains("readiness"),
        "{man}"
    );
    let (ok, _, err) = certgate(&["completions", "tcsh"]);
    assert!(!ok && err.contains("tcsh"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_ends_quietly() {
    let f = Fixture::start().await;
    let admin = f.gw.admin_addr().unwrap().to_string();
    for _ in 0..20 {
        let mut child = Command::new(certgate_bin())
            .args(["readiness", "--admin", &admin, "--listener", "agents"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before certgate writes its first line, as
        // `| head -0` would.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "exit {:?}: {err}", out.status);
        assert!(!err.contains("panicked"), "{err}");
    }
    f.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_use_is_said_once_with_what_to_do() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pki = Pki::new();
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.listen = taken.local_addr().unwrap().to_string();
    let config = cb.write(pki.dir.path());
    let out = Command::new(certgate_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let line = err
        .lines()
        .find(|l| l.starts_with("certgate: "))
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(
        line.matches("in use").count(),
        1,
        "the cause must be said once: {line}"
    );
    assert!(line.contains("another process listens there"), "{line}");
}
