//! Behaviour: the Debian package, as an admin meets it. Built with
//! `scripts/package.sh` (cargo deb) from the suite's own build; its files
//! listed; then, as root (CI), installed with `dpkg -i`: the user, the
//! modes, `systemd-analyze verify` on the installed units, `certgate check`
//! as the unit's ExecStartPre runs it (naming what to provide), and the
//! installed config serving a device once the admin has put a PKI in
//! /etc/certgate/certs: run as the unit runs it (user certgate, only
//! CAP_NET_BIND_SERVICE, port 443), inside a network namespace of its own so
//! nothing outside the test sees the port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(o.status.success(), "{cmd:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    c
}

/// Builds the package from this suite's binary; its path.
fn build_package() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = ok(Command::new("bash")
        .args(["scripts/package.sh", "--profile", "dev", "--no-build"])
        .current_dir(root));
    let deb = out
        .lines()
        .rev()
        .find(|l| l.ends_with(".deb"))
        .unwrap_or_else(|| panic!("cargo deb printed no package path:\n{out}"));
    PathBuf::from(deb.trim())
}

const FILES: &[&str] = &[
    "./usr/bin/certgate",
    "./lib/systemd/system/certgate.service",
    "./lib/systemd/system/certgate.socket",
    "./etc/certgate/certgate.toml",
    "./etc/certgate/certs/README.md",
    "./usr/share/man/man1/certgate.1.gz",
    "./usr/share/man/man1/certgate-devices-approve.1.gz",
    "./usr/share/bash-completion/completions/certgate",
    "./usr/share/zsh/vendor-completions/_certgate",
    "./usr/share/fish/vendor_completions.d/certgate.fish",
    "./usr/share/doc/certgate/README.md",
    "./usr/share/certgate/grafana/certgate-dashboard.json",
    "./usr/share/certgate/prometheus/alerts.yml",
];

fn is_root() -> bool {
    let uid = run(Command::new("id").arg("-u"));
    String::from_utf8_lossy(&uid.stdout).trim() == "0"
}

/// Serves the installed config the way the unit runs it, inside a new
/// network namespace: the example config's backend (127.0.0.1:8080) and
/// its listener (0.0.0.0:443) exist only in there. Every wait is bounded;
/// everything it starts is stopped by PID when it exits.
const SERVE: &str = r#"
set -eu
ip link set lo up
cd "$WORK"
python3 -m http.server 8080 --bind 127.0.0.1 >/dev/null 2>&1 &
backend=$!
gw=""
trap 'kill $gw $backend 2>/dev/null || true; wait 2>/dev/null || true' EXIT
wait_for() {
  for _ in $(seq 1 100); do
    if curl -sf -o /dev/null "$1"; then return 0; fi
    sleep 0.1
  done
  echo "nothing answers at $1"; cat "$WORK/run.log" 2>/dev/null; exit 1
}
wait_for http://127.0.0.1:8080/
# As the unit runs certgate: User=certgate, AmbientCapabilities=CAP_NET_BIND_SERVICE,
# UMask=0077. Not a function: $! must be certgate's own PID.
as_unit="setpriv --reuid certgate --regid certgate --init-groups --inh-caps +net_bind_service --ambient-caps +net_bind_service"
umask 077
$as_unit /usr/bin/certgate check --config /etc/certgate/certgate.toml
$as_unit /usr/bin/certgate run --config /etc/certgate/certgate.toml >"$WORK/run.log" 2>&1 &
gw=$!
wait_for http://127.0.0.1:9900/healthz
device() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$WORK/server-ca.pem" \
  --cert "$WORK/device.pem" --key "$WORK/device.key" https://127.0.0.1/ || true; }
echo "first check-in: $(device)"
/usr/bin/certgate devices list --config /etc/certgate/certgate.toml
/usr/bin/certgate devices approve --config /etc/certgate/certgate.toml "$DEVICE"
echo "after approval: $(device)"
stat -c 'registry %U:%G %a' /var/lib/certgate/devices.redb
kill $gw
for _ in $(seq 1 100); do kill -0 $gw 2>/dev/null || break; sleep 0.1; done
kill -0 $gw 2>/dev/null && { echo "certgate did not stop on SIGTERM"; exit 1; }
echo "stopped"
"#;

#[test]
fn the_debian_package_installs_a_gateway_that_fits_its_unit() {
    require_tool("dpkg-deb");
    let deb = build_package();
    let listing = ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for f in FILES {
        assert!(
            listing.lines().any(|l| l.ends_with(f)),
            "{f} is not in the package:\n{listing}"
        );
    }
    let line = |f: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(f))
            .unwrap()
            .to_string()
    };
    assert!(
        line("./usr/bin/certgate").starts_with("-rwxr-xr-x 0/0 "),
        "{listing}"
    );
    // The config may come to hold secrets' paths and tokens: not world-readable.
    assert!(
        line("./etc/certgate/certgate.toml").starts_with("-rw-r----- 0/0 "),
        "{listing}"
    );
    let conffiles = ok(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles"));
    assert!(
        conffiles
            .lines()
            .any(|l| l == "/etc/certgate/certgate.toml"),
        "{conffiles}"
    );
    let control = ok(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Depends"));
    assert!(control.contains("adduser"), "{control}");

    if !is_root() {
        eprintln!("SKIPPED: installing the package (dpkg -i) needs root; CI runs it as root");
        return;
    }
    let installed = run(Command::new("dpkg-query").args(["-W", "-f", "${Status}", "certgate"]));
    if String::from_utf8_lossy(&installed.stdout).contains("installed")
        || Path::new("/etc/certgate").exists()
    {
        eprintln!(
            "SKIPPED: certgate is already installed (or /etc/certgate exists) on this machine; \
             the test installs and purges its own"
        );
        return;
    }
    for tool in [
        "dpkg",
        "systemd-analyze",
        "setpriv",
        "unshare",
        "ip",
        "runuser",
        "curl",
        "python3",
    ] {
        require_tool(tool);
    }
    let _cleanup = Purge;
    let out = ok(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(out.contains("certgate is installed, not started"), "{out}");

    // The system user, whose home is the state directory.
    let user = ok(Command::new("getent").args(["passwd", "certgate"]));
    let fields: Vec<&str> = user.trim().split(':').collect();
    assert_eq!(fields[5], "/var/lib/certgate", "{user}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "{user}");
    assert_eq!(
        ok(Command::new("id").args(["-gn", "certgate"])).trim(),
        "certgate"
    );
    let modes = ok(Command::new("stat").args([
        "-c",
        "%n %U:%G %a",
        "/etc/certgate",
        "/etc/certgate/certs",
        "/etc/certgate/certgate.toml",
        "/var/lib/certgate",
    ]));
    for want in [
        "/etc/certgate root:certgate 750",
        "/etc/certgate/certs root:certgate 750",
        "/etc/certgate/certgate.toml root:certgate 640",
        "/var/lib/certgate certgate:certgate 750",
    ] {
        assert!(modes.lines().any(|l| l == want), "want {want}:\n{modes}");
    }

    // The installed units are valid as installed (binary path, user, syntax).
    let verify = run(Command::new("systemd-analyze").args([
        "verify",
        "/lib/systemd/system/certgate.service",
        "/lib/systemd/system/certgate.socket",
    ]));
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(
        !String::from_utf8_lossy(&verify.stderr).contains("certgate"),
        "systemd-analyze has something to say about certgate's units: {}",
        text(&verify)
    );
    let unit = std::fs::read_to_string("/lib/systemd/system/certgate.service").unwrap();
    assert!(
        unit.contains("ExecStartPre=/usr/bin/certgate check --config /etc/certgate/certgate.toml"),
        "{unit}"
    );

    // As installed, before the admin provides anything: ExecStartPre (as
    // the certgate user) refuses, naming every file to provide.
    let check = run(Command::new("runuser").args([
        "-u",
        "certgate",
        "--",
        "/usr/bin/certgate",
        "check",
        "--config",
        "/etc/certgate/certgate.toml",
    ]));
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success(), "{}", text(&check));
    for f in ["server.pem", "server.key", "client-ca.pem", "client-ca.crl"] {
        assert!(
            err.contains(&format!("(/etc/certgate/certs/{f}): file not found")),
            "check must name /etc/certgate/certs/{f}: {err}"
        );
    }
    assert!(!err.contains(".."), "paths are normalised: {err}");

    // The admin puts a PKI where the config names it, readable by the
    // certgate group only, and the installed config serves.
    let mut pki = Pki::new();
    let device = pki.client("installed-device", Kind::Good);
    let crl = pki.crl("client-ca.crl", &[], true);
    for (from, to) in [
        (&pki.server_cert, "server.pem"),
        (&pki.server_key, "server.key"),
        (&pki.client_ca, "client-ca.pem"),
        (&crl, "client-ca.crl"),
    ] {
        let dest = format!("/etc/certgate/certs/{to}");
        std::fs::copy(from, &dest).unwrap();
        ok(Command::new("chown").args(["root:certgate", &dest]));
        ok(Command::new("chmod").args(["0640", &dest]));
    }
    let work = tempfile::tempdir().unwrap();
    std::fs::copy(&pki.server_ca, work.path().join("server-ca.pem")).unwrap();
    std::fs::copy(&device.cert, work.path().join("device.pem")).unwrap();
    std::fs::copy(&device.key, work.path().join("device.key")).unwrap();
    ok(Command::new("chmod").args(["0755"]).arg(work.path()));
    let id = &sha256_hex(&device.der)[..16];
    let served = run(Command::new("timeout")
        .args(["60", "unshare", "--net", "sh", "-c", SERVE])
        .env("WORK", work.path())
        .env("DEVICE", id));
    let out = String::from_utf8_lossy(&served.stdout).to_string();
    assert!(served.status.success(), "{}", text(&served));
    // Manual approval (the example's default): refused, listed pending,
    // then admitted.
    assert!(out.contains("first check-in: 000"), "{out}");
    let row = out
        .lines()
        .find(|l| l.contains("CN=installed-device"))
        .unwrap_or_else(|| panic!("the device is not listed:\n{out}"));
    assert!(row.starts_with("pending"), "{out}");
    assert!(out.contains("after approval: 200"), "{out}");
    assert!(out.contains("registry certgate:certgate 600"), "{out}");
    assert!(out.contains("stopped"), "{out}");
}

/// Removes what the test installed, even when an assertion failed: the
/// package (purged), and what the admin steps added.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = sh("dpkg --purge certgate >/dev/null 2>&1; \
                    rm -rf /etc/certgate /var/lib/certgate; \
                    userdel certgate >/dev/null 2>&1; groupdel certgate >/dev/null 2>&1; true")
        .status();
    }
}
