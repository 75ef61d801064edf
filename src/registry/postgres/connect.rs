//! Connecting to the database: the admin's connection string, certgate's
//! timeouts and keepalives, and TLS verified against `database_ca`.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::config::PostgresSettings;

use super::super::StoreError;

/// How long a connection attempt may take when the connection string
/// does not say (`connect_timeout`): a database that does not answer must
/// not hold the writer for the operating system's default of minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one statement may run: the writer waits on it.
const STATEMENT_TIMEOUT_MS: u32 = 10_000;

/// A new connection, with the statement timeout set.
pub(super) fn connect(s: &PostgresSettings) -> Result<postgres::Client, StoreError> {
    let mut config: postgres::Config = s.url.parse().map_err(|e| StoreError::Database {
        message: format!("{} is not a connection string ({e})", s.url_source),
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    // A database host that vanished (power, network) is noticed within a
    // minute rather than the kernel's two hours.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(20));
    config.keepalives_interval(Duration::from_secs(5));
    config.keepalives_retries(3);
    if config.get_application_name().is_none() {
        config.application_name(&format!("certgate {}", s.instance));
    }
    let connected = match &s.database_ca {
        Some(ca) => config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls(
            &ca.resolved
        )?)),
        None => config.connect(postgres::NoTls),
    };
    let mut client = connected.map_err(|e| unreachable(s, &e))?;
    client
        .batch_execute(&format!(
            "SET statement_timeout = {STATEMENT_TIMEOUT_MS}; SET lock_timeout = {STATEMENT_TIMEOUT_MS}"
        ))
        .map_err(|e| unreachable(s, &e))?;
    Ok(client)
}

/// The database could not be reached or refused us, in the admin's words
/// (the connection string is not repeated: it may hold a password).
pub(super) fn unreachable(s: &PostgresSettings, e: &postgres::Error) -> StoreError {
    let hosts = s
        .url
        .parse::<postgres::Config>()
        .map(|c| {
            c.get_hosts()
                .iter()
                .zip(c.get_ports().iter().chain(std::iter::repeat(&5432)))
                .map(|(h, p)| match h {
                    postgres::config::Host::Tcp(h) => format!("{h}:{p}"),
                    postgres::config::Host::Unix(d) => format!("{}:{p}", d.display()),
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let cause = match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    };
    StoreError::Database {
        message: format!(
            "the database at {hosts} ({}) cannot be used: {cause}",
            s.url_source
        ),
    }
}

/// TLS to the database, trusting exactly the CA in `ca`.
fn tls(ca: &std::path::Path) -> Result<rustls::ClientConfig, StoreError> {
    let bad = |why: String| StoreError::Database {
        message: format!("registry.database_ca {}: {why}", ca.display()),
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(ca).map_err(|e| bad(format!("cannot be read ({e})")))?;
    for c in certs {
        let c = c.map_err(|e| bad(format!("is not PEM ({e})")))?;
        roots
            .add(c)
            .map_err(|e| bad(format!("holds a certificate that cannot be a root ({e})")))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
