//! The command line's words: subcommands, flags and their help text.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// TLS-terminating gateway that admits only devices with approved client
/// certificates.
/// `certgate --version`: the crate version and the commit it was built
/// from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CERTGATE_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(name = "certgate", version = VERSION, about)]
pub(super) struct Cli {
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
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
        /// Admin client certificate (PEM), when [admin.client_auth] asks for one.
        #[arg(long, global = true, requires = "client_key")]
        client_cert: Option<PathBuf>,
        /// Its private key (PEM).
        #[arg(long, global = true, requires = "client_cert")]
        client_key: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: DevicesCommand,
    },
    /// How a listener's clients authenticate, and who enforcing client
    /// certificates would refuse (from a running gateway).
    Readiness {
        /// The listener (default: every listener).
        #[arg(long, short)]
        listener: Option<String>,
        /// Look back this far, e.g. 1h, 24h, 7d.
        #[arg(long, default_value = "24h")]
        window: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The CRLs in force on each listener, where they came from, and each
    /// fetched source's last result (from a running gateway).
    Revocation {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The device store itself: migrations of the shared registry, and
    /// copies between a redb file and PostgreSQL.
    Registry {
        #[command(subcommand)]
        action: RegistryCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell), e.g. `certgate completions bash >
    /// /usr/share/bash-completion/completions/certgate`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `certgate man | man -l -`; with
    /// --dir, write it and one page per subcommand (certgate-run.1, ...)
    /// there, as the package installs them.
    Man {
        /// Write every page into this directory instead of printing one.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Try certgate out: a real gateway with a throwaway PKI, a built-in
    /// echo backend and a device registry in manual mode (one approved, one
    /// pending device), and the commands to try against it.
    Demo {
        /// Where the demo PKI and config are written.
        #[arg(long, default_value = "certs/demo")]
        dir: PathBuf,
        /// Address of the demo gateway; port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Address of the demo admin API (devices, readiness, metrics);
        /// port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:9900")]
        admin: SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum RegistryCommand {
    /// Run the shared registry's schema migrations and exit (certgate
    /// also runs them at start).
    Migrate {
        /// The gateway's config file ([registry] backend = "postgres").
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Copy every device (statuses, labels, certificates, counters) and
    /// the audit log from one registry to another: a redb file to
    /// PostgreSQL or back. Stop the gateways that use the target first.
    Copy {
        /// A redb file (registry.path) or a postgres:// URL.
        #[arg(long)]
        from: String,
        /// A redb file or a postgres:// URL.
        #[arg(long)]
        to: String,
        /// The redb side's audit log (default: audit.log next to the file).
        #[arg(long)]
        audit_log: Option<PathBuf>,
        /// The CA (PEM) that signed the database server's certificate.
        #[arg(long)]
        database_ca: Option<PathBuf>,
        /// Overwrite a target that already holds devices or audit lines.
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum DevicesCommand {
    /// List devices (newest last).
    List {
        /// Only pending, approved or blocked devices.
        #[arg(long)]
        status: Option<String>,
        /// Text to look for in fingerprint, subject, SANs, label, peer.
        #[arg(long)]
        search: Option<String>,
        /// Only devices whose current certificate expires within this
        /// time, e.g. 30d.
        #[arg(long)]
        expiring: Option<String>,
        /// One row per certificate (a device that renewed has several).
        #[arg(long)]
        certificates: bool,
        /// At most this many (max 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Skip this many.
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Show one device in full, with all its certificates.
    Show {
        /// Device id, a certificate's fingerprint, or a unique prefix of
        /// at least 6 hex digits.
        fingerprint: String,
    },
    /// The fleet's certificate expiry forecast: active devices by when
    /// their current certificate expires, and those at risk (expiring
    /// within 30 days with no renewal yet).
    Expiry {
        /// Count devices seen within this time.
        #[arg(long, default_value = "30d")]
        active: String,
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
    /// Pre-approve devices from a file of fingerprints or PEM
    /// certificates, or restore devices from what `export` wrote.
    Import {
        /// The file.
        file: PathBuf,
    },
    /// Print every device, with its certificates, as JSON (`import`
    /// restores it).
    Export,
}

/// Which running gateway's admin API a report command asks, and how it
/// prints.
#[derive(Debug, clap::Args)]
pub(crate) struct ApiArgs {
    /// The gateway's config file (admin address and token).
    #[arg(long, short)]
    pub(crate) config: Option<PathBuf>,
    /// Admin API address instead of --config.
    #[arg(long)]
    pub(crate) admin: Option<SocketAddr>,
    /// Token file instead of the one in --config.
    #[arg(long)]
    pub(crate) token_file: Option<PathBuf>,
    /// Admin client certificate (PEM), when [admin.client_auth] asks for one.
    #[arg(long, requires = "client_key")]
    pub(crate) client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "client_cert")]
    pub(crate) client_key: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}
