//! Which store the settings name, opened; and running store calls off
//! the async workers (every store call blocks: a file or a database).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{RegistryBackend, RegistrySettings};

use super::{DeviceStore, RedbStore, StoreError};

/// The store `settings` name: the redb file (a predecessor that is handing
/// it over is waited for a few seconds) or the shared database.
pub(super) fn open_store(settings: &RegistrySettings) -> Result<Arc<dyn DeviceStore>, StoreError> {
    match &settings.backend {
        RegistryBackend::Redb => {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                match RedbStore::open(&settings.path.resolved) {
                    Err(e) if e.is_locked() && std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    other => break Ok(Arc::new(other?)),
                }
            }
        }
        RegistryBackend::Postgres(pg) => {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                match super::postgres::PgStore::open(pg, Some(&settings.path.resolved)) {
                    Err(e) if e.is_locked() && std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    other => break Ok(Arc::new(other?)),
                }
            }
        }
    }
}

/// Runs store I/O off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError::Io {
            path: PathBuf::new(),
            message: format!("writer task failed: {e}"),
        })
    })
}
