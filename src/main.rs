//! The `certgate` command line. Everything of substance lives in the
//! library; this file parses arguments, sets up logging and maps errors to
//! exit codes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use certgate::config::{AccessTarget, LogFormat, LogSettings, Settings};
use certgate::{demo, devices, gateway};
use clap::{Parser, Subcommand};

/// TLS-terminating gateway that admits only devices with approved client
/// certificates.
#[derive(Debug, Parser)]
#[command(name = "certgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Worker threads (default: one per CPU core).
        #[arg(long)]
        threads: Option<usize>,
        /// Take the listening sockets over from the certgate running with
        /// the same `handover_socket` (zero-downtime binary upgrade); it
        /// then stops accepting, drains and exits.
        #[arg(long)]
        takeover: bool,
    },
    /// Validate the config and every file it names, then exit (like `nginx -t`).
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Manage devices of a running gateway through its admin API.
    Devices {
        /// The gateway's config file: the admin address and token come from it.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// Admin API address instead of --config (default 127.0.0.1:9900).
        #[arg(long, global = true)]
        admin: Option<SocketAddr>,
        /// Token file (name:token lines) instead of the one in --config.
        #[arg(long, global = true)]
        token_file: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: DevicesCommand,
    },
    /// How a listener's clients authenticate, and who enforcing client
    /// certificates would refuse (from a running gateway).
    Readiness {
        /// The listener.
        #[arg(long, short)]
        listener: String,
        /// Look back this far, e.g. 1h, 24h, 7d.
        #[arg(long, default_value = "24h")]
        window: String,
        /// The gateway's config file (admin address and token).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Admin API address instead of --config.
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Token file instead of the one in --config.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Try certgate out: throwaway PKI, built-in echo backend, real gateway.
    Demo {
        /// Where the demo PKI and config are written.
        #[arg(long, default_value = "certs/demo")]
        dir: PathBuf,
        /// Address of the demo gateway.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Address of the demo admin listener (metrics).
        #[arg(long, default_value = "127.0.0.1:0")]
        admin: SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    /// List devices (newest last).
    List {
        /// Only pending, approved or blocked devices.
        #[arg(long)]
        status: Option<String>,
        /// Text to look for in fingerprint, subject, SANs, label, peer.
        #[arg(long)]
        search: Option<String>,
        /// Only certificates expiring within this time, e.g. 30d.
        #[arg(long)]
        expiring: Option<String>,
        /// At most this many (max 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Skip this many.
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Show one device in full.
    Show {
        /// Fingerprint, or a unique prefix of at least 6 hex digits.
        fingerprint: String,
    },
    /// Approve devices (admitted on their next handshake).
    Approve {
        /// Fingerprints or unique prefixes.
        #[arg(required = true)]
        fingerprints: Vec<String>,
    },
    /// Block devices (refused everywhere; open connections closed).
    Block {
        /// Fingerprints or unique prefixes.
        #[arg(required = true)]
        fingerprints: Vec<String>,
    },
    /// Unblock devices (back to pending).
    Unblock {
        /// Fingerprints or unique prefixes.
        #[arg(required = true)]
        fingerprints: Vec<String>,
    },
    /// Delete a device record.
    Forget {
        /// Fingerprint or unique prefix.
        fingerprint: String,
    },
    /// Set a device's label ("" clears it).
    Label {
        /// Fingerprint or unique prefix.
        fingerprint: String,
        /// The label.
        label: String,
    },
    /// Pre-approve devices from a file of fingerprints or PEM certificates.
    Import {
        /// The file.
        file: PathBuf,
    },
    /// Print every device as JSON.
    Export,
}

/// Diagnostics go to stderr (text or JSON, filtered by `[log] level` or
/// `RUST_LOG`); access-log lines (target `certgate::access`) go to their
/// own writer, unfiltered by level, as bare lines (logfmt or JSON).
fn init_logging(log: &LogSettings) -> anyhow::Result<()> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let not_access = tracing_subscriber::filter::filter_fn(|m| m.target() != "certgate::access");
    let diag = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let diag = match log.format {
        LogFormat::Json => diag
            .json()
            .with_filter(filter)
            .with_filter(not_access)
            .boxed(),
        LogFormat::Text => diag.with_filter(filter).with_filter(not_access).boxed(),
    };
    certgate::access::set_format(if log.access_json {
        certgate::access::Format::Json
    } else {
        certgate::access::Format::Logfmt
    });
    let only_access =
        || tracing_subscriber::filter::filter_fn(|m| m.target() == "certgate::access");
    let bare = || {
        tracing_subscriber::fmt::layer()
            .without_time()
            .with_level(false)
            .with_target(false)
            .with_ansi(false)
    };
    certgate::access::set_off(matches!(log.access, AccessTarget::Off));
    let access = match &log.access {
        AccessTarget::Off => None,
        AccessTarget::Stdout => Some(
            bare()
                .with_writer(std::io::stdout)
                .with_filter(only_access())
                .boxed(),
        ),
        AccessTarget::Stderr => Some(
            bare()
                .with_writer(std::io::stderr)
                .with_filter(only_access())
                .boxed(),
        ),
        AccessTarget::File(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| {
                    format!("log.access: cannot open {} for appending", path.display())
                })?;
            Some(
                bare()
                    .with_writer(std::sync::Mutex::new(file))
                    .with_filter(only_access())
                    .boxed(),
            )
        }
    };
    let _ = tracing_subscriber::registry()
        .with(diag)
        .with(access)
        .try_init();
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => return check(&config),
        Command::Run {
            config,
            threads,
            takeover,
        } => run(&config, threads, takeover),
        Command::Demo { dir, listen, admin } => run_demo(&dir, listen, admin),
        Command::Devices {
            config,
            admin,
            token_file,
            json,
            action,
        } => run_devices(config, admin, token_file, json, action),
        Command::Readiness {
            listener,
            window,
            config,
            admin,
            token_file,
            json,
        } => target(config, admin, token_file).and_then(|t| {
            current_thread()?.block_on(devices::readiness(&t, &listener, &window, json))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
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

fn check(config: &Path) -> ExitCode {
    let errors = match Settings::load(config) {
        Ok(settings) => match gateway::check(&settings) {
            Ok(built) => {
                for w in built.warnings() {
                    eprintln!("certgate: warning: {w}");
                }
                println!(
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

fn run(config: &Path, threads: Option<usize>, takeover: bool) -> anyhow::Result<()> {
    let settings = Settings::load(config)?;
    init_logging(&settings.log)?;
    runtime(threads)?.block_on(gateway::run(settings, takeover))?;
    Ok(())
}

fn run_devices(
    config: Option<PathBuf>,
    admin: Option<SocketAddr>,
    token_file: Option<PathBuf>,
    json: bool,
    action: DevicesCommand,
) -> anyhow::Result<()> {
    let target = target(config, admin, token_file)?;
    let action = match action {
        DevicesCommand::List {
            status,
            search,
            expiring,
            limit,
            offset,
        } => devices::Action::List {
            status,
            search,
            expiring,
            limit,
            offset,
        },
        DevicesCommand::Show { fingerprint } => devices::Action::Show(fingerprint),
        DevicesCommand::Approve { fingerprints } => devices::Action::Approve(fingerprints),
        DevicesCommand::Block { fingerprints } => devices::Action::Block(fingerprints),
        DevicesCommand::Unblock { fingerprints } => devices::Action::Unblock(fingerprints),
        DevicesCommand::Forget { fingerprint } => devices::Action::Forget(fingerprint),
        DevicesCommand::Label { fingerprint, label } => devices::Action::Label(fingerprint, label),
        DevicesCommand::Import { file } => devices::Action::Import(file),
        DevicesCommand::Export => devices::Action::Export,
    };
    current_thread()?.block_on(devices::run(&target, action, json))
}

fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The admin API to talk to: from --config, or --admin (default
/// 127.0.0.1:9900), with --token-file overriding the config's token.
fn target(
    config: Option<PathBuf>,
    admin: Option<SocketAddr>,
    token_file: Option<PathBuf>,
) -> anyhow::Result<devices::Target> {
    let mut target = match (&config, admin) {
        (Some(c), None) => devices::Target::from_config(c)?,
        (None, a) => devices::Target {
            addr: a.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9900))),
            token: None,
        },
        (Some(_), Some(_)) => anyhow::bail!("give --config or --admin, not both"),
    };
    if let Some(t) = token_file {
        target.token = Some(devices::first_token(&t)?);
    }
    Ok(target)
}

fn run_demo(dir: &Path, listen: SocketAddr, admin: SocketAddr) -> anyhow::Result<()> {
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
        let gw = certgate::Gateway::start(settings).await.with_context(|| {
            format!("cannot start the demo gateway on {listen}; if the port is taken, pass --listen 127.0.0.1:0")
        })?;
        let addr = gw.addr("demo").context("demo listener missing")?;
        let url = format!("https://localhost:{}/hello", addr.port());
        println!();
        println!("certgate demo is running: gateway https://{addr} -> echo backend http://{backend}");
        println!("PKI and config in {}/ (config: {})", dir.display(), config.display());
        println!();
        println!("With the device certificate (200, the backend echoes the headers it got, identity included):");
        println!(
            "  curl --cacert {} --cert {} --key {} {url}",
            pki.server_ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        );
        println!();
        println!("Without a client certificate (refused in the TLS handshake):");
        println!("  curl --cacert {} {url}", pki.server_ca.display());
        println!();
        println!("Spoofing identity headers does not work (they are replaced):");
        println!(
            "  curl --cacert {} --cert {} --key {} -H 'X-Client-Cert-Fingerprint: forged' {url}",
            pki.server_ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        );
        if let Some(a) = gw.admin_addr() {
            println!();
            println!("Metrics:");
            println!("  curl http://{a}/metrics");
        }
        println!();
        println!("Validate the demo config like a real one:  certgate check --config {}", config.display());
        println!("Press Ctrl-C to stop.");
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
