//! Noticing that the files changed: a watcher on the directories that
//! hold them, a digest of their bytes (an event that changed nothing is not
//! a reload), and the timings that turn a burst of writes into one reload.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::Notify;
use tracing::warn;

/// How long the files must be quiet before a change is loaded: tools write
/// a cert and its key, or truncate then write, in quick succession.
pub const QUIET: Duration = Duration::from_millis(100);
/// A file that keeps changing is still loaded this long after the first
/// change.
pub(super) const MAX_DELAY: Duration = Duration::from_secs(1);
/// A change seen by the watcher that does not load (a cert whose new key
/// is not written yet, a half-written file on a loaded machine) gets this
/// long for the rest of the write to arrive before it counts as a refused
/// reload: a tool writing the cert and then the key must not fire the
/// admin's "reload failed" alert.
pub(super) const SETTLE: Duration = Duration::from_secs(1);
/// A backstop for changes the watcher cannot see (a watched directory
/// replaced, network file systems): files are compared this often.
pub(super) const POLL: Duration = Duration::from_secs(30);

/// Digest of the config text and the bytes of every file it names: a
/// watcher event or poll tick that changed nothing is not a reload.
pub(super) fn files_digest(files: &[PathBuf]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for f in files {
        ctx.update(f.as_os_str().as_encoded_bytes());
        match std::fs::read(f) {
            Ok(bytes) => {
                ctx.update(&(bytes.len() as u64).to_le_bytes());
                ctx.update(&bytes);
            }
            Err(e) => ctx.update(format!("error:{e}").as_bytes()),
        }
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Watches the directories that hold the config's files. Directories, not
/// files: an editor or certbot writes a temp file and renames it over the
/// old one, and Kubernetes swaps a `..data` symlink; a watch on the old
/// file would see neither.
pub(super) struct FileWatcher {
    watcher: Option<notify::RecommendedWatcher>,
    names: Arc<Mutex<HashSet<OsString>>>,
    dirs: BTreeSet<PathBuf>,
}

impl FileWatcher {
    pub(super) fn new(changed: Arc<Notify>) -> FileWatcher {
        let names: Arc<Mutex<HashSet<OsString>>> = Arc::default();
        let filter = names.clone();
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let Ok(ev) = ev else {
                // Overflow or watcher error: a reload check is the safe answer.
                changed.notify_one();
                return;
            };
            if ev.kind.is_access() {
                return;
            }
            let relevant = match filter.lock() {
                Ok(names) => ev.paths.iter().any(|p| {
                    p.file_name().is_some_and(|n| {
                        names.contains(n) || n.as_encoded_bytes().starts_with(b"..")
                    })
                }),
                Err(_) => true,
            };
            if relevant {
                changed.notify_one();
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "cannot watch files; changes are picked up by the {}s check, SIGHUP or POST /api/reload", POLL.as_secs());
                None
            }
        };
        FileWatcher {
            watcher,
            names,
            dirs: BTreeSet::new(),
        }
    }

    /// Watches the directories of `files` (and of their symlink targets)
    /// and no others.
    pub(super) fn update(&mut self, files: &[PathBuf]) {
        let mut dirs = BTreeSet::new();
        let mut names = HashSet::new();
        for f in files {
            let mut add = |p: &Path| {
                if let Some(n) = p.file_name() {
                    names.insert(n.to_os_string());
                }
                let dir = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                dirs.insert(dir);
            };
            add(f);
            if let Ok(real) = std::fs::canonicalize(f)
                && real != *f
            {
                add(&real);
            }
        }
        if let Ok(mut n) = self.names.lock() {
            *n = names;
        }
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        for gone in self.dirs.difference(&dirs) {
            let _ = w.unwatch(gone);
        }
        for new in dirs.difference(&self.dirs) {
            if let Err(e) = w.watch(new, RecursiveMode::NonRecursive) {
                warn!(dir = %new.display(), error = %e,
                    "cannot watch directory; changes there are picked up by the periodic check, SIGHUP or POST /api/reload");
            }
        }
        self.dirs = dirs;
    }
}
