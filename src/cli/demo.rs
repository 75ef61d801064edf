//! `certgate demo`: a real gateway with a throwaway PKI and an echo
//! backend, and what to try against it.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;

use crate::config::{AccessTarget, LogFormat, LogSettings, Settings};
use crate::demo;

use super::commands::runtime;
use super::logging::init_logging;

pub(super) fn run_demo(dir: &Path, listen: SocketAddr, admin: SocketAddr) -> anyhow::Result<()> {
    init_logging(&LogSettings {
        format: LogFormat::Text,
        level: "info".into(),
        access: AccessTarget::Stdout,
        access_json: false,
    })?;
    runtime(None)?.block_on(async {
        let pki = demo::write_pki(dir)?;
        let backend = demo::start_echo_backend().await?;
        let config = demo::write_config(dir, listen, admin, backend)?;
        let settings = Settings::load(&config)?;
        let gw = crate::Gateway::start(settings).await.with_context(|| {
            format!("cannot start the demo gateway on {listen}; if the port is taken, pass --listen 127.0.0.1:0")
        })?;
        let addr = gw.addr("demo").context("demo listener missing")?;
        let url = format!("https://localhost:{}/hello", addr.port());
        outln!();
        outln!("certgate demo is running: gateway https://{addr} -> echo backend http://{backend}");
        outln!("PKI and config in {}/ (config: {})", dir.display(), config.display());
        outln!();
        outln!("With the device certificate (200, the backend echoes the headers it got, identity included):");
        outln!(
            "  curl --cacert {} --cert {} --key {} {url}",
            pki.server_ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        );
        outln!();
        outln!("Without a client certificate (refused in the TLS handshake):");
        outln!("  curl --cacert {} {url}", pki.server_ca.display());
        outln!();
        outln!("Spoofing identity headers does not work (they are replaced):");
        outln!(
            "  curl --cacert {} --cert {} --key {} -H 'X-Client-Cert-Fingerprint: forged' {url}",
            pki.server_ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        );
        if let Some(a) = gw.admin_addr() {
            outln!();
            outln!("Metrics:");
            outln!("  curl http://{a}/metrics");
        }
        outln!();
        outln!("Validate the demo config like a real one:  certgate check --config {}", config.display());
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
