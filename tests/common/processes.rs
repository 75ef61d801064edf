//! The certgate binary as a child process: started, logged, stopped by its
//! PID; the devices CLI; a command that must fail.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Path of the certgate binary built for these tests.
pub fn certgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_certgate")
}

/// Fails loudly when a system tool the test needs is missing: the test
/// command (scripts/test.sh) installs it, so a skip would hide a problem.
pub fn require_tool(name: &str) {
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{name} is not installed; run scripts/test.sh, which installs it"
    );
}

/// A `certgate run` child process; killed on drop if still running.
pub struct Proc {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// The value of `key=` on the first log line containing `needle`.
    pub fn log_value(&self, needle: &str, key: &str) -> Option<String> {
        let log = self.log.lock().unwrap();
        log.lines()
            .find(|l| l.contains(needle))
            .and_then(|l| l.split(&format!("{key}=")).nth(1))
            .and_then(|r| r.split_whitespace().next())
            .map(|v| v.trim_matches('"').to_string())
    }

    /// The admin listener's address, from the log.
    pub fn admin_addr(&self) -> SocketAddr {
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(a) = self
                .log_value("admin listening", "addr")
                .and_then(|a| a.parse().ok())
            {
                return a;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let log = self.log.lock().unwrap().clone();
        panic!("no admin address in log:\n{log}")
    }

    /// Waits (bounded) for the process to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Starts `certgate run --config FILE` and waits (bounded) until it logs the
/// address of its listener "agents".
pub fn spawn_certgate(config: &Path) -> Proc {
    spawn_certgate_with(config, &[])
}

/// [`spawn_certgate`] with extra `run` arguments.
pub fn spawn_certgate_with(config: &Path, extra: &[&str]) -> Proc {
    let mut cmd = std::process::Command::new(certgate_bin());
    cmd.args(["run", "--config"]).arg(config).args(extra);
    let (mut proc, started) = spawn_logged(cmd, "0.0.0.0:0".parse().unwrap());
    let addr = started
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            let log = proc.log.lock().unwrap().clone();
            panic!("certgate did not start; log:\n{log}")
        });
    proc.addr = addr.parse().unwrap();
    proc
}

/// Spawns `cmd` (certgate, or a wrapper that execs it) with its stderr
/// collected into `log`; the receiver gets the address of listener
/// "agents" once it is logged.
pub fn spawn_logged(
    mut cmd: std::process::Command,
    addr: SocketAddr,
) -> (Proc, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log: Arc<Mutex<String>> = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if line.contains("listening")
                && line.contains("listener=agents")
                && let Some(a) = line
                    .split("addr=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
            {
                let _ = tx.send(a.to_string());
            }
            let mut log = log2.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    (Proc { child, addr, log }, rx)
}

/// Runs `certgate devices ...` against an admin address; (success, stdout, stderr).
pub fn devices_cli(admin: SocketAddr, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(certgate_bin())
        .arg("devices")
        .arg("--admin")
        .arg(admin.to_string())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `certgate SUBCOMMAND --config CONFIG`, asserts that it fails, and
/// returns its stderr.
pub fn certgate_fails(subcommand: &str, config: &Path) -> String {
    let out = std::process::Command::new(certgate_bin())
        .args([subcommand, "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(!out.status.success(), "certgate {subcommand} must fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
