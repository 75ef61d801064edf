//! Behaviour: `certgate demo`, tried as a newcomer would: run it from an
//! empty directory and paste every command it prints, in its order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::BufRead;
use std::process::Output;
use std::time::Duration;

use common::*;

/// The numbered steps the demo printed: (number, the command under it).
fn steps(printed: &[String]) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut number = None;
    for line in printed {
        if let Some((n, _)) = line.split_once(". ")
            && let Ok(n) = n.parse::<u32>()
        {
            number = Some(n);
        } else if let (Some(n), Some(cmd)) = (number, line.strip_prefix("  ")) {
            out.push((n, cmd.to_string()));
            number = None;
        }
    }
    out
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn demo_prints_commands_that_work_as_described() {
    require_tool("curl");
    let cwd = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(certgate_bin())
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
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
    let all = printed.join("\n");
    // The console the demo points to answers.
    let console = printed
        .iter()
        .find_map(|l| l.strip_prefix("Web console: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no console URL:\n{}", printed.join("\n")))
        .to_string();
    let steps = steps(&printed);
    let numbers: Vec<u32> = steps.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (1..=10).collect::<Vec<_>>(), "{all}");
    let cmd = |n: u32| steps[n as usize - 1].1.clone();
    // Never a bare `certgate` that the shell cannot find: this binary is
    // not on PATH, so the demo names it by its path.
    assert!(cmd(5).starts_with(certgate_bin()), "{all}");

    let run = |cmd: &str| {
        std::process::Command::new("timeout")
            .args(["20", "sh", "-c", cmd])
            .current_dir(cwd.path())
            .output()
            .unwrap()
    };
    let ok = |n: u32| {
        let o = run(&cmd(n));
        assert!(o.status.success(), "step {n}: {}\n{}", cmd(n), text(&o));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let refused = |n: u32| {
        let o = run(&cmd(n));
        assert!(
            !o.status.success(),
            "step {n} must be refused: {}\n{}",
            cmd(n),
            text(&o)
        );
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("x-client-verify"),
            "step {n} reached the backend: {}",
            text(&o)
        );
    };

    // 1. The approved device reaches the backend with its identity.
    let out = ok(1);
    assert!(out.contains("x-client-verify: SUCCESS"), "{out}");
    assert!(
        out.contains("x-client-cert-subject: CN=demo-device"),
        "{out}"
    );
    // 2. The pending device and 3. a client without a certificate are
    // refused.
    refused(2);
    refused(3);
    // 4. A forged identity header is replaced by the real one.
    let out = ok(4);
    assert!(!out.contains("forged"), "{out}");
    assert!(out.contains("x-client-cert-fingerprint: "), "{out}");
    // 5. The registry lists both devices with the status the demo said.
    let out = ok(5);
    let row = |cn: &str| {
        out.lines()
            .find(|l| l.contains(cn))
            .unwrap_or_else(|| panic!("no row for {cn}:\n{out}"))
            .to_string()
    };
    assert!(row("demo-device").contains("approved"), "{out}");
    assert!(row("demo-pending").contains("pending"), "{out}");
    // Durations in days and weeks, as the README shows them: the demo's
    // certificates expire in 30 days.
    let expiring = |within: &str| {
        let o = run(&format!("{} --expiring {within}", cmd(5)));
        assert!(o.status.success(), "--expiring {within}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let soon = expiring("2w");
    assert!(
        !soon.contains("demo-device") && !soon.contains("demo-pending"),
        "{soon}"
    );
    let later = expiring("5w");
    assert!(
        later.contains("demo-device") && later.contains("demo-pending"),
        "{later}"
    );
    // 6. Approving the pending device lets command 2 through.
    ok(6);
    let o = run(&cmd(2));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "after approval: {}", text(&o));
    assert!(
        out.contains("x-client-cert-subject: CN=demo-pending"),
        "{out}"
    );
    // 7. Blocking the approved device refuses command 1.
    ok(7);
    refused(1);
    // 8. The readiness report counts what happened above.
    // 8. The readiness report counts what happened above, and names the
    // device that is refused now (the one just blocked) by its subject.
    let out = ok(8);
    assert!(out.contains("Listener \"demo\""), "{out}");
    let refused_row = out
        .lines()
        .find(|l| l.starts_with("blocked") && l.contains("CN=demo-device"))
        .unwrap_or_else(|| panic!("no refused row for the blocked device:\n{out}"));
    assert!(refused_row.contains("from 127.0.0.1"), "{out}");
    // 9. Metrics answer, with the registry's families.
    let out = ok(9);
    assert!(out.contains("certgate_devices{"), "{out}");
    // 10. The demo's own config passes `check`.
    ok(10);
    let page = run(&format!("curl -sf {console}devices"));
    let html = String::from_utf8_lossy(&page.stdout);
    assert!(
        page.status.success() && html.contains("demo-pending"),
        "{}",
        text(&page)
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
