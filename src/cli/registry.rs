//! `certgate registry`: the shared registry's schema migrations, and
//! copying a registry between a redb file and PostgreSQL (both ways),
//! every device and audit line.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::config::{PostgresSettings, RegistryBackend, Settings};
use crate::registry::postgres::PgStore;
use crate::registry::{Device, DeviceStore as _, RedbStore};

/// One end of a copy.
enum End {
    File { store: PathBuf, audit: PathBuf },
    Database(PostgresSettings),
}

impl End {
    fn parse(word: &str, audit: Option<&Path>, database_ca: Option<&Path>, flag: &str) -> End {
        if word.starts_with("postgres://")
            || word.starts_with("postgresql://")
            || word.contains("host=")
        {
            End::Database(PostgresSettings {
                url: word.to_string(),
                url_source: flag.to_string(),
                database_ca: database_ca.map(|p| crate::config::ConfigPath {
                    written: p.display().to_string(),
                    resolved: p.to_path_buf(),
                }),
                instance: "registry-copy".into(),
                resync_every: crate::config::DEFAULT_RESYNC_EVERY,
            })
        } else {
            let store = PathBuf::from(word);
            let audit = audit.map(Path::to_path_buf).unwrap_or_else(|| {
                store
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(crate::config::AUDIT_LOG_NAME)
            });
            End::File { store, audit }
        }
    }

    fn describe(&self) -> String {
        match self {
            End::File { store, .. } => store.display().to_string(),
            End::Database(s) => format!("the database given by {}", s.url_source),
        }
    }

    /// Every device and audit line.
    fn read(&self) -> anyhow::Result<(Vec<Device>, Vec<String>)> {
        match self {
            End::File { store, audit } => {
                if !store.exists() {
                    bail!(
                        "{} does not exist; give the registry.path of the gateway to copy from",
                        store.display()
                    );
                }
                let s = RedbStore::open(store)?;
                let (devices, problems) = s.load()?;
                if let Some(p) = problems.first() {
                    bail!(
                        "{p}; nothing was copied ({} record(s) cannot be read)",
                        problems.len()
                    );
                }
                let lines = match std::fs::File::open(audit) {
                    Ok(f) => std::io::BufReader::new(f)
                        .lines()
                        .collect::<Result<Vec<_>, _>>()
                        .with_context(|| format!("cannot read the audit log {}", audit.display()))?
                        .into_iter()
                        .filter(|l| !l.trim().is_empty())
                        .collect(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => bail!("cannot read the audit log {}: {e}", audit.display()),
                };
                Ok((devices, lines))
            }
            End::Database(s) => {
                let store = open_database(s)?;
                Ok(store.export()?)
            }
        }
    }

    /// Writes them into an empty registry (or replaces it).
    fn write(&self, devices: &[Device], lines: &[String], replace: bool) -> anyhow::Result<()> {
        match self {
            End::File { store, audit } => {
                let s = RedbStore::open(store)?;
                let (have, _) = s.load()?;
                let audit_len = std::fs::metadata(audit).map(|m| m.len()).unwrap_or(0);
                if !replace && (!have.is_empty() || audit_len > 0) {
                    bail!(
                        "{} already holds {} device(s) and {} bytes of audit log ({}); pass --replace to overwrite them",
                        store.display(),
                        have.len(),
                        audit_len,
                        audit.display()
                    );
                }
                s.replace(devices)?;
                let mut f = std::fs::File::create(audit)
                    .with_context(|| format!("cannot write the audit log {}", audit.display()))?;
                let mut text = String::new();
                for l in lines {
                    text.push_str(l);
                    text.push('\n');
                }
                f.write_all(text.as_bytes())
                    .and_then(|()| f.sync_all())
                    .with_context(|| format!("cannot write the audit log {}", audit.display()))?;
                Ok(())
            }
            End::Database(s) => {
                let store = open_database(s)?;
                let (have, have_lines) = store.export()?;
                if !replace && (!have.is_empty() || !have_lines.is_empty()) {
                    bail!(
                        "{} already holds {} device(s) and {} audit line(s); pass --replace to overwrite them",
                        self.describe(),
                        have.len(),
                        have_lines.len()
                    );
                }
                Ok(store.import(devices, lines)?)
            }
        }
    }
}

/// The database, migrated; no local copy (a copy needs the database).
fn open_database(s: &PostgresSettings) -> anyhow::Result<PgStore> {
    Ok(PgStore::open(s, None)?)
}

/// `certgate registry migrate --config FILE`.
pub(super) fn migrate(config: &Path) -> anyhow::Result<()> {
    let settings = Settings::load(config)?;
    let Some(RegistryBackend::Postgres(pg)) = settings.registry.as_ref().map(|r| &r.backend) else {
        bail!(
            "{}: [registry] does not use backend = \"postgres\"; the redb file migrates itself when certgate opens it",
            config.display()
        );
    };
    let (from, to) = PgStore::migrate(pg)?;
    if from == to {
        outln!("certgate: the shared registry is at schema {to}; nothing to do");
    } else {
        outln!("certgate: the shared registry migrated from schema {from} to {to}");
    }
    Ok(())
}

/// `certgate registry copy --from A --to B`.
pub(super) fn copy(
    from: &str,
    to: &str,
    audit_log: Option<&Path>,
    database_ca: Option<&Path>,
    replace: bool,
) -> anyhow::Result<()> {
    let from = End::parse(from, audit_log, database_ca, "--from");
    let to = End::parse(to, audit_log, database_ca, "--to");
    if matches!((&from, &to), (End::File { .. }, End::File { .. })) {
        bail!(
            "one end of a copy must be a database (postgres://...); to copy a redb file, copy the file while certgate is stopped"
        );
    }
    let (devices, lines) = from
        .read()
        .with_context(|| format!("cannot read {}", from.describe()))?;
    to.write(&devices, &lines, replace)
        .with_context(|| format!("nothing was copied to {}", to.describe()))?;
    let (back, back_lines) = to.read()?;
    if back.len() != devices.len() || back_lines.len() != lines.len() {
        bail!(
            "{} holds {} device(s) and {} audit line(s) after the copy, not {} and {}",
            to.describe(),
            back.len(),
            back_lines.len(),
            devices.len(),
            lines.len()
        );
    }
    let certificates: usize = devices.iter().map(|d| d.certificates.len()).sum();
    outln!(
        "certgate: copied {} device(s) ({} certificate(s)) and {} audit line(s) from {} to {}",
        devices.len(),
        certificates,
        lines.len(),
        from.describe(),
        to.describe()
    );
    Ok(())
}
