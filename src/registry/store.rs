//! Where device records are kept. The [`DeviceStore`] trait is small;
//! [`RedbStore`] is the embedded default, `PgStore` (`registry::postgres`)
//! the registry several gateways share.
//!
//! Why redb: pure Rust (no C toolchain, no system library), ACID with
//! fsync'd commits by default (an approval acknowledged by the API survives
//! `kill -9` and power loss), one file, builds in seconds, and fast batched
//! upserts. SQLite would add a C build and SQL we do not need; sled is
//! unmaintained.

use std::path::{Path, PathBuf};

use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use thiserror::Error;

use super::Device;

/// Schema 1: fingerprint → JSON certificate record (before lineages).
const V1_DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
/// Schema 2: device id → JSON device (its lineage of certificates).
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("device_lineages");
/// `schema` → the schema version of the file.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The schema this certgate reads and writes.
const SCHEMA: u64 = 2;

/// A store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error("registry {path}: cannot open the device store: {message}")]
    Open {
        /// The store file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A read or write failed.
    #[error("registry {path}: {message}")]
    Io {
        /// The store file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The shared database cannot be used (unreachable, refused, failed).
    #[error("shared registry: {message}")]
    Database {
        /// What went wrong, naming the database (never its password).
        message: String,
    },
    /// Another gateway changed the device since this one read it.
    #[error(
        "device {id} was changed on another gateway at the same moment; nothing was saved, try again"
    )]
    Conflict {
        /// The device.
        id: String,
    },
    /// A stored record cannot be decoded.
    #[error("registry {path}: record {key} is corrupt ({message}); it was skipped")]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// The record's key.
        key: String,
        /// Why.
        message: String,
    },
}

impl StoreError {
    /// True when another process holds the store open.
    pub fn is_locked(&self) -> bool {
        matches!(self, StoreError::Open { message, .. } if message.contains("another certgate process"))
    }
}

/// Page cache of the device store (see [`RedbStore`]).
const STORE_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// Persistent device records, keyed by device id.
pub trait DeviceStore: Send + Sync + 'static {
    /// Every record, plus the problems met with records that could not be
    /// decoded (those are skipped, never fatal).
    fn load(&self) -> Result<(Vec<Device>, Vec<StoreError>), StoreError>;
    /// Inserts or replaces `devices` in one durable transaction.
    fn put(&self, devices: &[Device]) -> Result<(), StoreError>;
    /// Removes a device; whether it existed. Durable when it returns.
    fn delete(&self, id: &str) -> Result<bool, StoreError>;
    /// What handshakes changed: `put` written and `removed` deleted (a
    /// renewal moved their one certificate), in one transaction where the
    /// store has them. A shared store leaves a record another instance
    /// changed as it is, and reads it at the next [`DeviceStore::changes`].
    fn write(&self, put: &[Device], removed: &[String]) -> Result<(), StoreError> {
        if !put.is_empty() {
            self.put(put)?;
        }
        for id in removed {
            self.delete(id)?;
        }
        Ok(())
    }
    /// An administrator's change: all of it or nothing. A shared store
    /// keeps the audit lines with it and refuses ([`StoreError::Conflict`])
    /// when a record changed elsewhere since it was read.
    fn commit(
        &self,
        put: &[Device],
        forget: &[Device],
        _audit: &[serde_json::Value],
    ) -> Result<(), StoreError> {
        if !put.is_empty() {
            self.put(put)?;
        }
        for d in forget {
            self.delete(&d.id)?;
        }
        Ok(())
    }
    /// Changes other instances made since the last call (a store of one
    /// gateway has none).
    fn changes(&self) -> Result<Remote, StoreError> {
        Ok(Remote::None)
    }
    /// Wakes when [`DeviceStore::changes`] may have something; `None` for a
    /// store nobody else writes.
    fn subscribe(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// What other instances changed.
#[derive(Debug)]
pub enum Remote {
    /// Nothing.
    None,
    /// These devices.
    Changed(Vec<RemoteChange>),
    /// Everything was read again: the registry is exactly these devices.
    All(Vec<Device>),
}

/// One device another instance changed.
#[derive(Debug)]
pub enum RemoteChange {
    /// Added or changed (handshake counters: the fleet's).
    Put(Device),
    /// Forgotten (or merged into another device by a renewal).
    Gone(String),
}

/// The embedded redb store: device id → JSON device, and the schema
/// version; a schema-1 file (fingerprint → certificate) is migrated when
/// it is opened, after a copy of it is kept beside it.
pub(crate) struct RedbStore {
    /// `None` only between dropping a failed handle and opening the next.
    db: std::sync::Mutex<Option<redb::Database>>,
    path: PathBuf,
    /// A write failed. redb then refuses every later transaction ("previous
    /// I/O error, close and re-open") even once the disk has room again, so
    /// the next operation reopens the file first (redb repairs it on open).
    broken: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Not there (or below a file, which the walk up then finds).
fn missing(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

/// Whether certgate will be able to create or write the file at `path`
/// (the store, the audit log): what `check` and every reload tell the
/// admin before `run` would fail on it. Nothing is left behind: missing
/// directories are not created, and the probe file that tests the nearest
/// existing one is removed at once. The error says what is wrong and what
/// to do.
pub(crate) fn check_writable(path: &Path) -> Result<(), String> {
    use rustix::fs::{Access, access};
    let why = |e: rustix::io::Errno| match e {
        rustix::io::Errno::ROFS => "it is on a read-only file system".to_string(),
        rustix::io::Errno::ACCESS | rustix::io::Errno::PERM => {
            "permission denied for the user certgate runs as".to_string()
        }
        other => other.to_string(),
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(format!(
                "{} is a directory; give a file path inside it",
                path.display()
            ));
        }
        Ok(_) => {
            access(path, Access::READ_OK | Access::WRITE_OK).map_err(|e| {
                format!(
                    "{} exists but cannot be written ({}); fix its owner or mode, or choose another path",
                    path.display(),
                    why(e)
                )
            })?;
            // Opening for writing changes nothing, and catches what the
            // mode bits do not say (read-only mounts, file systems that
            // refuse writes).
            return std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map(drop)
                .map_err(|e| {
                    format!(
                        "{} cannot be written ({e}); choose another path",
                        path.display()
                    )
                });
        }
        Err(e) if missing(&e) => {}
        Err(e) => return Err(format!("{} cannot be checked ({e})", path.display())),
    }
    // The file will be created: the nearest existing ancestor must be a
    // directory we may write (directories below it are created at start).
    let mut dir = path.parent();
    while let Some(d) = dir {
        let d = if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        };
        match std::fs::metadata(d) {
            Ok(m) if m.is_dir() => {
                let refused = |what: String| {
                    format!(
                        "{} cannot be created: the directory {} cannot be written ({what}); \
                         create it writable for the certgate user, or choose another path",
                        path.display(),
                        d.display(),
                    )
                };
                access(d, Access::WRITE_OK | Access::EXEC_OK).map_err(|e| refused(why(e)))?;
                // A probe file, removed at once: the mode bits do not tell
                // about read-only mounts or file systems that refuse files.
                let probe = d.join(format!(".certgate-check-{}", std::process::id()));
                return match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&probe)
                {
                    Ok(_) => {
                        let _ = std::fs::remove_file(&probe);
                        Ok(())
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                    Err(e) => Err(refused(e.to_string())),
                };
            }
            Ok(_) => {
                return Err(format!(
                    "{} cannot be created: {} is a file, not a directory; choose another path",
                    path.display(),
                    d.display()
                ));
            }
            Err(e) if missing(&e) => dir = d.parent(),
            Err(e) => {
                return Err(format!(
                    "{} cannot be created: {} cannot be read ({e})",
                    path.display(),
                    d.display()
                ));
            }
        }
    }
    Ok(())
}

impl RedbStore {
    /// Opens (or creates) the store at `path`; its directory is created.
    pub(crate) fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let open_err = |message: String| StoreError::Open {
            path: path.to_path_buf(),
            message,
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| open_err(format!("cannot create directory {}: {e}", dir.display())))?;
        }
        let db = Self::migrate(path, Self::create(path).map_err(open_err)?)?;
        let store = RedbStore {
            db: std::sync::Mutex::new(Some(db)),
            path: path.to_path_buf(),
            broken: std::sync::atomic::AtomicBool::new(false),
        };
        // Create the table so that reads never meet a missing one.
        store.put(&[])?;
        Ok(store)
    }

    /// Brings a file of an earlier schema to [`SCHEMA`]; refuses one of a
    /// later schema (a newer certgate wrote it) rather than misread it.
    fn migrate(path: &Path, db: redb::Database) -> Result<redb::Database, StoreError> {
        let io = |e: &dyn std::fmt::Display| StoreError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let (schema, v1) = {
            let tx = db.begin_read().map_err(|e| io(&e))?;
            let schema = match tx.open_table(META) {
                Ok(t) => t.get("schema").map_err(|e| io(&e))?.map(|v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(io(&e)),
            };
            let v1 = match tx.open_table(V1_DEVICES) {
                Ok(t) => {
                    let mut out = Vec::new();
                    for item in t.iter().map_err(|e| io(&e))? {
                        let (k, v) = item.map_err(|e| io(&e))?;
                        out.push((k.value().to_string(), v.value().to_vec()));
                    }
                    out
                }
                Err(redb::TableError::TableDoesNotExist(_)) => Vec::new(),
                Err(e) => return Err(io(&e)),
            };
            (schema, v1)
        };
        match schema {
            Some(SCHEMA) => return Ok(db),
            Some(newer) if newer > SCHEMA => {
                return Err(io(&format!(
                    "it was written by a newer certgate (device store schema {newer}; this \
                     certgate reads schema {SCHEMA}); run that version, or restore the file \
                     it kept when it migrated this one (*.schema{SCHEMA}-backup)"
                )));
            }
            _ => {}
        }
        let db = if v1.is_empty() {
            db
        } else {
            // A copy of the file as it was, for a downgrade: the earlier
            // certgate cannot read the new schema.
            drop(db);
            let mut backup = path.as_os_str().to_owned();
            backup.push(".schema1-backup");
            let backup = std::path::PathBuf::from(backup);
            if !backup.exists() {
                std::fs::copy(path, &backup).map_err(|e| {
                    io(&format!(
                        "cannot keep a copy at {} before migrating the device store: {e}",
                        backup.display()
                    ))
                })?;
            }
            tracing::info!(backup = %backup.display(), "device store of schema 1 kept before migration");
            Self::create(path).map_err(|m| io(&m))?
        };
        let n = v1.len();
        let (devices, problems) = super::migrate::from_v1(v1);
        for (key, why) in &problems {
            tracing::error!(path = %path.display(), record = %key, error = %why,
                "schema-1 device record is corrupt; it was not migrated");
        }
        let tx = db.begin_write().map_err(|e| io(&e))?;
        {
            let mut table = tx.open_table(DEVICES).map_err(|e| io(&e))?;
            for d in &devices {
                table
                    .insert(d.id.as_str(), d.encode().as_slice())
                    .map_err(|e| io(&e))?;
            }
            let mut meta = tx.open_table(META).map_err(|e| io(&e))?;
            meta.insert("schema", SCHEMA).map_err(|e| io(&e))?;
        }
        if n > 0 {
            tx.delete_table(V1_DEVICES).map_err(|e| io(&e))?;
        }
        tx.commit().map_err(|e| io(&e))?;
        if n > 0 {
            tracing::info!(path = %path.display(), certificates = n, devices = devices.len(),
                "device store migrated to lineages: each certificate is a device of one, with its status");
        }
        Ok(db)
    }

    /// Makes the store exactly `devices` (the local copy of a shared
    /// registry after a full read), in one transaction.
    pub(crate) fn replace(&self, devices: &[Device]) -> Result<(), StoreError> {
        self.with_db(|db| {
            let tx = db.begin_write().map_err(|e| self.io(e))?;
            tx.delete_table(DEVICES).map_err(|e| self.io(e))?;
            {
                let mut table = tx.open_table(DEVICES).map_err(|e| self.io(e))?;
                for d in devices {
                    table
                        .insert(d.id.as_str(), d.encode().as_slice())
                        .map_err(|e| self.io(e))?;
                }
            }
            tx.commit().map_err(|e| self.io(e))
        })
    }

    fn create(path: &Path) -> Result<redb::Database, String> {
        // redb's default page cache is 1 GiB; a gateway's memory must not
        // be able to grow toward that. Every record also lives in the
        // registry's in-memory snapshot (the store is read once, at start),
        // so a small cache for the write path is enough.
        redb::Builder::new()
            .set_cache_size(STORE_CACHE_BYTES)
            .create(path)
            .map_err(|e| {
                let hint = match e {
                    redb::DatabaseError::DatabaseAlreadyOpen => {
                        "; another certgate process has it open"
                    }
                    _ => "",
                };
                format!("{e}{hint}")
            })
    }

    /// Runs `op` on the database, reopening it first after a failed write,
    /// and marks it for reopening when `op` fails.
    fn with_db<T>(
        &self,
        op: impl FnOnce(&redb::Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        use std::sync::atomic::Ordering;
        let mut guard = self.db.lock().unwrap_or_else(|p| p.into_inner());
        if self.broken.load(Ordering::Acquire) || guard.is_none() {
            // Drop the failed handle first: it holds the file lock.
            *guard = None;
            let db = Self::create(&self.path)
                .map_err(|m| self.io(format!("reopening after a failed write: {m}")))?;
            *guard = Some(db);
            self.broken.store(false, Ordering::Release);
        }
        let Some(db) = guard.as_ref() else {
            return Err(self.io("store not open"));
        };
        let r = op(db);
        if r.is_err() {
            self.broken.store(true, Ordering::Release);
        }
        r
    }

    fn io(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}

impl DeviceStore for RedbStore {
    fn load(&self) -> Result<(Vec<Device>, Vec<StoreError>), StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(|e| self.io(e))?;
            let table = tx.open_table(DEVICES).map_err(|e| self.io(e))?;
            let mut out = Vec::new();
            let mut problems = Vec::new();
            for item in table.iter().map_err(|e| self.io(e))? {
                let (k, v) = item.map_err(|e| self.io(e))?;
                match Device::decode(v.value()) {
                    Ok(d) => out.push(d),
                    Err(e) => problems.push(StoreError::Corrupt {
                        path: self.path.clone(),
                        key: k.value().to_string(),
                        message: e.to_string(),
                    }),
                }
            }
            Ok((out, problems))
        })
    }

    fn put(&self, devices: &[Device]) -> Result<(), StoreError> {
        self.write(devices, &[])
    }

    fn write(&self, put: &[Device], removed: &[String]) -> Result<(), StoreError> {
        self.with_db(|db| {
            let tx = db.begin_write().map_err(|e| self.io(e))?;
            {
                let mut table = tx.open_table(DEVICES).map_err(|e| self.io(e))?;
                for d in put {
                    table
                        .insert(d.id.as_str(), d.encode().as_slice())
                        .map_err(|e| self.io(e))?;
                }
                for id in removed {
                    table.remove(id.as_str()).map_err(|e| self.io(e))?;
                }
            }
            tx.commit().map_err(|e| self.io(e))
        })
    }

    fn commit(
        &self,
        put: &[Device],
        forget: &[Device],
        _audit: &[serde_json::Value],
    ) -> Result<(), StoreError> {
        let ids: Vec<String> = forget.iter().map(|d| d.id.clone()).collect();
        self.write(put, &ids)
    }

    fn delete(&self, id: &str) -> Result<bool, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_write().map_err(|e| self.io(e))?;
            let existed = {
                let mut table = tx.open_table(DEVICES).map_err(|e| self.io(e))?;
                table.remove(id).map_err(|e| self.io(e))?.is_some()
            };
            tx.commit().map_err(|e| self.io(e))?;
            Ok(existed)
        })
    }
}
