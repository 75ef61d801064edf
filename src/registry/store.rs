//! Where device records are kept. The [`DeviceStore`] trait is small so a
//! shared database can back it later; [`RedbStore`] is the embedded
//! default.
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

const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");

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

/// Persistent device records, keyed by fingerprint.
pub trait DeviceStore: Send + Sync + 'static {
    /// Every record, plus the problems met with records that could not be
    /// decoded (those are skipped, never fatal).
    fn load(&self) -> Result<(Vec<Device>, Vec<StoreError>), StoreError>;
    /// Inserts or replaces `devices` in one durable transaction.
    fn put(&self, devices: &[Device]) -> Result<(), StoreError>;
    /// Removes a record; whether it existed. Durable when it returns.
    fn delete(&self, fingerprint: &str) -> Result<bool, StoreError>;
}

/// The embedded redb store: one table, fingerprint → JSON record.
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
        let db = Self::create(path).map_err(open_err)?;
        let store = RedbStore {
            db: std::sync::Mutex::new(Some(db)),
            path: path.to_path_buf(),
            broken: std::sync::atomic::AtomicBool::new(false),
        };
        // Create the table so that reads never meet a missing one.
        store.put(&[])?;
        Ok(store)
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
        self.with_db(|db| {
            let tx = db.begin_write().map_err(|e| self.io(e))?;
            {
                let mut table = tx.open_table(DEVICES).map_err(|e| self.io(e))?;
                for d in devices {
                    let bytes = d.encode();
                    table
                        .insert(d.fingerprint.as_str(), bytes.as_slice())
                        .map_err(|e| self.io(e))?;
                }
            }
            tx.commit().map_err(|e| self.io(e))
        })
    }

    fn delete(&self, fingerprint: &str) -> Result<bool, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_write().map_err(|e| self.io(e))?;
            let existed = {
                let mut table = tx.open_table(DEVICES).map_err(|e| self.io(e))?;
                table.remove(fingerprint).map_err(|e| self.io(e))?.is_some()
            };
            tx.commit().map_err(|e| self.io(e))?;
            Ok(existed)
        })
    }
}
