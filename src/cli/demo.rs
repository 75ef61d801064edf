//! `certgate demo`: a real gateway with a throwaway PKI, an echo backend
//! and a device registry in manual mode, and the commands to try against
//! it, each printed so that it works when pasted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{AccessTarget, LogFormat, LogSettings, Settings};
use crate::demo;
use crate::registry::{Change, DeviceStatus, fingerprint};

use super::commands::runtime;
use super::logging::init_logging;

/// `addr` itself, or with port 0 a free port on its address: the config
/// the demo writes must name the port the printed commands reach.
fn concrete(addr: SocketAddr, what: &str) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.local_addr())
        .with_context(|| {
            format!(
                "cannot find a free port on {} for the demo {what}",
                addr.ip()
            )
        })
}

/// How to run this very binary from a shell: `certgate` when that is what
/// PATH finds, else its full path (a `cargo build` that was never
/// installed).
fn self_command() -> String {
    let me = std::env::current_exe().and_then(std::fs::canonicalize).ok();
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("certgate"))
            .find(|p| p.is_file())
            .and_then(|p| std::fs::canonicalize(p).ok())
    });
    match me {
        Some(me) if on_path.as_ref() != Some(&me) => shell_word(&me),
        _ => "certgate".into(),
    }
}

/// `p` as one shell word.
fn shell_word(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn remove_stale(path: &PathBuf) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| {
            format!(
                "{}: cannot remove the previous demo's registry",
                path.display()
            )
        }),
    }
}

pub(super) fn run_demo(dir: &Path, listen: SocketAddr, admin: SocketAddr) -> anyhow::Result<()> {
    init_logging(&LogSettings {
        format: LogFormat::Text,
        level: "info".into(),
        access: AccessTarget::Stdout,
        access_json: false,
    })?;
    runtime(None)?.block_on(async {
        let pki = demo::write_pki(dir)?;
        for f in demo::registry_files(dir) {
            remove_stale(&f)?;
        }
        let backend = demo::start_echo_backend().await?;
        let listen = concrete(listen, "gateway")?;
        let admin = concrete(admin, "admin API")?;
        let config = demo::write_config(dir, listen, admin, backend)?;
        let settings = Settings::load(&config)?;
        let gw = crate::Gateway::start(settings).await.with_context(|| {
            format!(
                "cannot start the demo gateway on {listen} with its admin API on {admin}; \
                 if a port is taken, pass --listen or --admin with another one (port 0: any free port)"
            )
        })?;
        let addr = gw.addr("demo").context("demo listener missing")?;
        let registry = gw.registry().context("demo registry missing")?;
        registry
            .change_certificates(Vec::new(), vec![pki.client_der.clone()], Change::Approve, "demo")
            .await
            .context("approving the demo device")?;
        demo::first_check_in(&pki, addr).await?;
        let pending = fingerprint(&pki.pending_der);
        for _ in 0..100 {
            if registry.status(&pending) == Some(DeviceStatus::Pending) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        registry.flush().await.context("writing the demo registry")?;
        let id = |der: &[u8]| crate::identity::sha256_hex(der)[..16].to_string();
        let (approved_id, pending_id) = (id(&pki.client_der), id(&pki.pending_der));

        let certgate = self_command();
        let cfg = shell_word(&config);
        let url = format!("https://localhost:{}/hello", addr.port());
        let ca = shell_word(&pki.server_ca);
        let as_device = |cert: &Path, key: &Path| {
            format!("curl --cacert {ca} --cert {} --key {} {url}", shell_word(cert), shell_word(key))
        };
        outln!();
        outln!("certgate demo is running: gateway https://{addr} -> echo backend http://{backend}");
        outln!("Admin API: http://{admin} (device registry in manual mode)");
        outln!("Web console: http://{admin}/ (open it in a browser on this machine: approve, block, readiness)");
        outln!("PKI, config and registry in {}/ (config: {})", dir.display(), config.display());
        outln!("Run these from this directory, in this order.");
        outln!();
        outln!("Devices: demo-device ({approved_id}) is approved; demo-pending ({pending_id}) just");
        outln!("tried to connect, was refused, and waits for approval.");
        outln!();
        outln!("1. The approved device (200, the backend echoes the headers it got, identity included):");
        outln!("  {}", as_device(&pki.client_cert, &pki.client_key));
        outln!();
        outln!("2. The pending device (refused in the TLS handshake until it is approved):");
        outln!("  {}", as_device(&pki.pending_cert, &pki.pending_key));
        outln!();
        outln!("3. No client certificate (refused in the TLS handshake):");
        outln!("  curl --cacert {ca} {url}");
        outln!();
        outln!("4. Spoofed identity headers do not work (they are replaced):");
        outln!(
            "  curl --cacert {ca} --cert {} --key {} -H 'X-Client-Cert-Fingerprint: forged' {url}",
            shell_word(&pki.client_cert),
            shell_word(&pki.client_key)
        );
        outln!();
        outln!("5. The devices the gateway knows, with their status:");
        outln!("  {certgate} devices list --config {cfg}");
        outln!();
        outln!("6. Approve the pending device; command 2 then gets a 200:");
        outln!("  {certgate} devices approve --config {cfg} {pending_id}");
        outln!();
        outln!("7. Block the approved device; command 1 is then refused:");
        outln!("  {certgate} devices block --config {cfg} {approved_id}");
        outln!();
        outln!("8. How clients authenticated, and who enforcing client certificates refuses:");
        outln!("  {certgate} readiness --config {cfg}");
        outln!();
        outln!("9. Metrics (Prometheus):");
        outln!("  curl http://{admin}/metrics");
        outln!();
        outln!("10. Validate the demo config like a real one:");
        outln!("  {certgate} check --config {cfg}");
        outln!();
        outln!("Press Ctrl-C to stop.");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();

        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("signal handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        gw.shutdown().await;
        Ok(())
    })
}
