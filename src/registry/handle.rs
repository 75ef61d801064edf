//! The registry handle: open the store, read the snapshot, send
//! observations and changes to the writer.

use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::config::RegistrySettings;

use super::requests::Command;
use super::shared::{Shared, status_map};
use super::writer::Writer;
use super::{
    Change, Device, DeviceStatus, DeviceStore, Observation, Page, Query, RedbStore, RegistryError,
    RegistryMetrics, StoreError,
};

/// A handle to the registry; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("devices", &self.shared.statuses.load().len())
            .finish()
    }
}

impl Registry {
    /// Opens the store, loads every record and starts the writer task.
    /// A store still held by a predecessor that is handing over is
    /// retried for a few seconds.
    pub fn open(
        settings: &RegistrySettings,
        metrics: RegistryMetrics,
    ) -> Result<Registry, StoreError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let store = loop {
            match RedbStore::open(&settings.path.resolved) {
                Err(e) if e.is_locked() && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        Registry::with_store(Arc::new(store), settings, metrics)
    }

    /// Flushes and closes the store so a successor process can open it
    /// (binary hand-over). Handshakes keep using the snapshot; changes fail
    /// until [`Registry::reopen`].
    pub async fn release(&self) -> Result<(), RegistryError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Release { reply })
            .await
            .map_err(|_| RegistryError::Closed)?;
        rx.await.map_err(|_| RegistryError::Closed)?
    }

    /// Opens the store again after a hand-over that did not happen.
    pub async fn reopen(&self) -> Result<(), RegistryError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Reopen { reply })
            .await
            .map_err(|_| RegistryError::Closed)?;
        rx.await.map_err(|_| RegistryError::Closed)?
    }

    /// Like [`Registry::open`] with any store.
    pub fn with_store(
        store: Arc<dyn DeviceStore>,
        settings: &RegistrySettings,
        metrics: RegistryMetrics,
    ) -> Result<Registry, StoreError> {
        let (devices, problems) = store.load()?;
        for p in problems {
            error!(problem = %p, "registry record skipped");
        }
        let records: HashMap<String, Device> = devices
            .into_iter()
            .map(|d| (d.fingerprint.clone(), d))
            .collect();
        let (updates, updates_rx) = mpsc::channel(settings.update_queue.max(1));
        let (commands, commands_rx) = mpsc::channel(64);
        let shared = Arc::new(Shared {
            statuses: ArcSwap::from_pointee(status_map(&records)),
            revocations: watch::Sender::new(0),
            updates,
            commands,
            metrics,
        });
        info!(
            path = %settings.path,
            devices = records.len(),
            approval = ?settings.approval,
            "device registry opened"
        );
        let writer = Writer {
            store,
            records,
            dirty: HashSet::new(),
            shared: Arc::downgrade(&shared),
            metrics: shared.metrics.clone(),
            audit_path: settings.audit_log.resolved.clone(),
            store_path: settings.path.resolved.clone(),
            failing: false,
        };
        writer.count();
        tokio::spawn(writer.run(updates_rx, commands_rx));
        Ok(Registry { shared })
    }

    /// The status of a device, from the snapshot (no I/O, no lock).
    pub fn status(&self, fingerprint: &[u8; 32]) -> Option<DeviceStatus> {
        self.shared.statuses.load().get(fingerprint).copied()
    }

    /// A receiver that changes whenever a device may have lost admission.
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.shared.revocations.subscribe()
    }

    /// Queues a handshake observation; drops it (counted) when the queue is
    /// full. Never waits.
    pub fn observe(&self, obs: Observation) {
        if self.shared.updates.try_send(obs).is_err() {
            self.shared.metrics.dropped.inc();
        }
    }

    /// Applies an administrator change to each fingerprint; durable and
    /// audited when it returns `Ok`. Unknown fingerprints are created for
    /// approve and block (pre-approval), and an error otherwise.
    pub async fn change(
        &self,
        fingerprints: Vec<String>,
        change: Change,
        who: &str,
    ) -> Result<Vec<Device>, RegistryError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Change {
                fingerprints,
                change,
                who: who.to_string(),
                reply,
            })
            .await
            .map_err(|_| RegistryError::Closed)?;
        rx.await.map_err(|_| RegistryError::Closed)?
    }

    /// One device.
    pub async fn get(&self, fingerprint: &str) -> Result<Option<Device>, RegistryError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Get {
                fingerprint: fingerprint.to_string(),
                reply,
            })
            .await
            .map_err(|_| RegistryError::Closed)?;
        rx.await.map_err(|_| RegistryError::Closed)
    }

    /// A page of devices.
    pub async fn list(&self, query: Query) -> Result<Page, RegistryError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .commands
            .send(Command::List { query, reply })
            .await
            .map_err(|_| RegistryError::Closed)?;
        rx.await.map_err(|_| RegistryError::Closed)
    }

    /// Writes every queued update now (used at shutdown and by tests).
    pub async fn flush(&self) -> Result<(), RegistryError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Flush { reply })
            .await
            .map_err(|_| RegistryError::Closed)?;
        rx.await.map_err(|_| RegistryError::Closed)?
    }
}

/// Prints a warning once if `settings` changed in a way that needs a
/// restart.
pub(crate) fn warn_if_changed(old: Option<&RegistrySettings>, new: Option<&RegistrySettings>) {
    if old.map(|r| (&r.path, &r.audit_log, r.update_queue))
        != new.map(|r| (&r.path, &r.audit_log, r.update_queue))
    {
        warn!(
            "[registry] path, audit_log and update_queue changes take effect when certgate is restarted"
        );
    }
}
