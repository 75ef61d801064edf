//! `check`, `run`, `devices` and `readiness`: each loads what it needs,
//! runs, and returns an error in the admin's words for `main` to print.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::Settings;
use crate::gateway;

use super::devices;

use super::args::DevicesCommand;
use super::logging::init_logging;

pub(super) fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = match threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        // One worker: a current-thread runtime does the same work without
        // the work-stealing scheduler's cross-thread wake-ups and atomics
        // (measured in benches/RESULTS.md). Blocking work (store writes,
        // hand-over) still goes to the blocking pool.
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub(super) fn check(config: &Path) -> ExitCode {
    let errors = match Settings::load(config) {
        Ok(settings) => match gateway::check(&settings) {
            Ok(built) => {
                for w in built.warnings() {
                    eprintln!("certgate: warning: {w}");
                }
                if let Some(w) = shared_registry_warning(&settings) {
                    eprintln!("certgate: warning: {w}");
                }
                outln!(
                    "certgate: {} is valid ({} listener(s), {} upstream(s))",
                    config.display(),
                    settings.listeners.len(),
                    settings.upstreams.len()
                );
                return ExitCode::SUCCESS;
            }
            Err(e) => e.into_list(),
        },
        Err(e) => e.into_list(),
    };
    for e in &errors {
        eprintln!("certgate: {e}");
    }
    eprintln!(
        "certgate: {} is NOT valid ({} problem(s))",
        config.display(),
        errors.len()
    );
    ExitCode::FAILURE
}

/// The shared registry as `check` sees it: a database that cannot be
/// reached is a warning, not an error (a gateway starts on its local copy
/// and connects when it can), and so is one a newer certgate migrated.
fn shared_registry_warning(settings: &Settings) -> Option<String> {
    use crate::registry::postgres::{PgStore, schema};
    let Some(crate::config::RegistryBackend::Postgres(pg)) =
        settings.registry.as_ref().map(|r| &r.backend)
    else {
        return None;
    };
    match PgStore::probe(pg) {
        Ok(v) if v > schema::LATEST => Some(format!(
            "the shared registry has schema {v}, written by a newer certgate (this one reads {}); this gateway will not start until it is upgraded",
            schema::LATEST
        )),
        Ok(_) => None,
        Err(e) => Some(format!(
            "{e}; the gateway would start from its local copy ({}) if it has one, and connect when it can",
            settings
                .registry
                .as_ref()
                .map(|r| r.path.resolved.display().to_string())
                .unwrap_or_default()
        )),
    }
}

pub(super) fn run(config: &Path, threads: Option<usize>, takeover: bool) -> anyhow::Result<()> {
    let settings = Settings::load(config)?;
    init_logging(&settings.log)?;
    runtime(threads)?.block_on(gateway::run(settings, takeover))?;
    Ok(())
}

pub(super) fn run_devices(
    target: &devices::Target,
    json: bool,
    action: DevicesCommand,
) -> anyhow::Result<()> {
    let action = match action {
        DevicesCommand::List {
            status,
            search,
            expiring,
            certificates,
            limit,
            offset,
        } => devices::Action::List {
            status,
            search,
            expiring,
            certificates,
            limit,
            offset,
        },
        DevicesCommand::Show { fingerprint } => devices::Action::Show(fingerprint),
        DevicesCommand::Expiry { active } => devices::Action::Expiry(active),
        DevicesCommand::Approve { fingerprints } => devices::Action::Approve(fingerprints),
        DevicesCommand::Block { fingerprints } => devices::Action::Block(fingerprints),
        DevicesCommand::Unblock { fingerprints } => devices::Action::Unblock(fingerprints),
        DevicesCommand::Forget { fingerprint } => devices::Action::Forget(fingerprint),
        DevicesCommand::Label { fingerprint, label } => devices::Action::Label(fingerprint, label),
        DevicesCommand::Import { file } => devices::Action::Import(file),
        DevicesCommand::Export => devices::Action::Export,
    };
    current_thread()?.block_on(devices::run(target, action, json))
}

pub(super) fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The admin API to talk to: from --config (HTTPS when it has
/// [admin.tls]), or --admin (default 127.0.0.1:9900, plain HTTP), with
/// --token-file overriding the config's token and an admin client
/// certificate when given.
pub(super) fn target(
    config: Option<PathBuf>,
    admin: Option<SocketAddr>,
    token_file: Option<PathBuf>,
    client: Option<(PathBuf, PathBuf)>,
) -> anyhow::Result<devices::Target> {
    let mut target = match (&config, admin) {
        (Some(c), None) => devices::Target::from_config(c, client.as_ref())?,
        (None, a) => devices::Target {
            addr: a.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9900))),
            token: None,
            tls: None,
        },
        (Some(_), Some(_)) => anyhow::bail!("give --config or --admin, not both"),
    };
    if let Some(t) = token_file {
        target.token = Some(devices::first_token(&t)?);
    }
    Ok(target)
}

/// [`target`] for the report commands' arguments.
pub(super) fn api_target(api: &crate::cli::args::ApiArgs) -> anyhow::Result<devices::Target> {
    target(
        api.config.clone(),
        api.admin,
        api.token_file.clone(),
        api.client_cert.clone().zip(api.client_key.clone()),
    )
}
