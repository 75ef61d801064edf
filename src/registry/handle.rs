//! The registry handle: open the store, read the snapshot, send
//! observations and changes to the writer.

use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::config::{RegistryBackend, RegistrySettings};

use crate::config::RenewalIdentity;

use super::backend::open_store;
use super::requests::Command;
use super::shared::Shared;
use super::snapshot::{CertEntry, Snapshot};
use super::writer::Writer;
use super::{
    Change, Device, DeviceStatus, DeviceStore, DeviceView, Forecast, Observation, Page, Query,
    RegistryError, RegistryMetrics, StoreError,
};

/// A handle to the registry; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("certificates", &self.shared.snapshot.load().len())
            .finish()
    }
}

impl Registry {
    /// Opens the store the settings name, loads every record and starts
    /// the writer task (the store's I/O off the async workers).
    pub async fn open(
        settings: &RegistrySettings,
        metrics: RegistryMetrics,
    ) -> Result<Registry, StoreError> {
        let s = settings.clone();
        let (store, loaded) = super::backend::blocking(move || {
            let store = open_store(&s)?;
            let loaded = store.load()?;
            Ok((store, loaded))
        })
        .await?;
        Ok(Registry::start(store, loaded, settings, metrics))
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
        let loaded = store.load()?;
        Ok(Registry::start(store, loaded, settings, metrics))
    }

    fn start(
        store: Arc<dyn DeviceStore>,
        (devices, problems): (Vec<Device>, Vec<StoreError>),
        settings: &RegistrySettings,
        metrics: RegistryMetrics,
    ) -> Registry {
        for p in problems {
            error!(problem = %p, "registry record skipped");
        }
        let records: HashMap<String, Device> =
            devices.into_iter().map(|d| (d.id.clone(), d)).collect();
        let by_fp: HashMap<String, String> = records
            .values()
            .flat_map(|d| {
                d.certificates
                    .iter()
                    .map(|c| (c.fingerprint.clone(), d.id.clone()))
            })
            .collect();
        let (updates, updates_rx) = mpsc::channel(settings.update_queue.max(1));
        let (commands, commands_rx) = mpsc::channel(64);
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::build(
                records.values(),
                &settings.renewal_identities,
            )),
            revocations: watch::Sender::new(0),
            updates,
            commands,
            metrics,
            audit_path: settings.audit_log.resolved.clone(),
            fleet: match &settings.backend {
                RegistryBackend::Postgres(pg) => Some(Arc::new(
                    super::postgres::readiness::FleetReadiness::new(pg),
                )),
                RegistryBackend::Redb => None,
            },
        });
        info!(
            path = %settings.path,
            devices = records.len(),
            certificates = by_fp.len(),
            approval = ?settings.approval,
            "device registry opened"
        );
        let writer = Writer {
            store,
            records,
            by_fp,
            identities: settings.renewal_identities.clone(),
            dirty: HashSet::new(),
            removed: HashSet::new(),
            shared: Arc::downgrade(&shared),
            metrics: shared.metrics.clone(),
            audit_path: settings.audit_log.resolved.clone(),
            store_path: settings.path.resolved.clone(),
            failing: false,
            settings: settings.clone(),
            shared_store: matches!(settings.backend, RegistryBackend::Postgres(_)),
            sync_failing: false,
            generation: 0,
        };
        writer.count();
        tokio::spawn(writer.run(updates_rx, commands_rx));
        Registry { shared }
    }

    /// The readiness tables every instance of a shared registry writes
    /// (none with the embedded store).
    pub(crate) fn fleet_readiness(
        &self,
    ) -> Option<Arc<super::postgres::readiness::FleetReadiness>> {
        self.shared.fleet.clone()
    }

    /// The audit log's file: one JSON line per admin change.
    pub(crate) fn audit_path(&self) -> &std::path::Path {
        &self.shared.audit_path
    }

    /// The status of the device a certificate belongs to, from the
    /// snapshot (no I/O, no lock).
    pub fn status(&self, fingerprint: &[u8; 32]) -> Option<DeviceStatus> {
        self.cert(fingerprint).map(|c| c.status)
    }

    /// What the snapshot has about a certificate.
    pub fn cert(&self, fingerprint: &[u8; 32]) -> Option<CertEntry> {
        self.shared.snapshot.load().cert(fingerprint)
    }

    /// The current snapshot (the renewal rule's index included).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.shared.snapshot.load()
    }

    /// Indexes the snapshot for these renewal identities (the listeners'
    /// rules, after a reload changed them).
    pub fn set_identities(&self, identities: Vec<RenewalIdentity>) {
        if self
            .shared
            .commands
            .try_send(Command::Identities { identities })
            .is_err()
        {
            warn!(
                "the registry is busy; the renewal index follows the new rules at its next change"
            );
        }
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
    ) -> Result<Vec<DeviceView>, RegistryError> {
        self.change_certificates(fingerprints, Vec::new(), change, who)
            .await
    }

    /// Like [`Registry::change`], for fingerprints and whole certificates
    /// (DER): a record made for a certificate has its details.
    pub async fn change_certificates(
        &self,
        fingerprints: Vec<String>,
        certificates: Vec<Vec<u8>>,
        change: Change,
        who: &str,
    ) -> Result<Vec<DeviceView>, RegistryError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Change {
                certificates,
                fingerprints,
                change,
                who: who.to_string(),
                reply,
            })
            .await
            .map_err(|_| RegistryError::Closed)?;
        rx.await.map_err(|_| RegistryError::Closed)?
    }

    /// Restores devices from an export: each device with its status,
    /// label and certificates. A certificate the registry already has
    /// keeps its device (the import says so in the audit log); durable and
    /// audited when it returns `Ok`.
    pub async fn import(
        &self,
        devices: Vec<Device>,
        who: &str,
    ) -> Result<Vec<DeviceView>, RegistryError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Import {
                devices,
                who: who.to_string(),
                reply,
            })
            .await
            .map_err(|_| RegistryError::Closed)?;
        rx.await.map_err(|_| RegistryError::Closed)?
    }

    /// The fleet's expiry forecast, counting devices seen within
    /// `active_within` seconds.
    pub async fn expiry(&self, active_within: i64) -> Result<Forecast, RegistryError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Expiry {
                active_within,
                reply,
            })
            .await
            .map_err(|_| RegistryError::Closed)?;
        rx.await.map_err(|_| RegistryError::Closed)
    }

    /// One device, by the fingerprint of any of its certificates or by its
    /// id.
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
        rx.await.map_err(|_| RegistryError::Closed)?
    }

    /// The devices these ids or fingerprints name, in one call (unknown
    /// ones left out, each device once).
    pub async fn get_many(&self, keys: Vec<String>) -> Result<Vec<Device>, RegistryError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .commands
            .send(Command::GetMany { keys, reply })
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
    // The renewal index follows the listeners at once (see
    // `Registry::set_identities`); the rest needs a restart.
    if old.map(|r| (&r.path, &r.audit_log, r.update_queue, &r.backend))
        != new.map(|r| (&r.path, &r.audit_log, r.update_queue, &r.backend))
    {
        warn!(
            "[registry] path, audit_log, update_queue and backend changes (url, instance, ...) take effect when certgate is restarted"
        );
    }
}
