//! The one writer of the store: applies observations and admin changes,
//! commits them, writes the audit log and publishes new snapshots.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, info};

use super::device::hex32;
use super::requests::Command;
use super::shared::{Shared, status_map};
use super::{
    Change, Device, DeviceStatus, DeviceStore, Observation, Page, Query, RedbStore, RegistryError,
    RegistryMetrics, StoreError, parse_fingerprint,
};

/// How often queued handshake updates are written.
pub(super) const FLUSH_EVERY: Duration = Duration::from_millis(200);

pub(super) struct Writer {
    pub(super) store: Arc<dyn DeviceStore>,
    pub(super) records: HashMap<String, Device>,
    pub(super) dirty: HashSet<String>,
    pub(super) shared: std::sync::Weak<Shared>,
    pub(super) metrics: RegistryMetrics,
    pub(super) audit_path: PathBuf,
    pub(super) store_path: PathBuf,
    pub(super) failing: bool,
}

/// The store of a process that handed its registry to a successor.
pub(super) struct Released(PathBuf);

impl DeviceStore for Released {
    fn load(&self) -> Result<(Vec<Device>, Vec<StoreError>), StoreError> {
        Err(self.err())
    }
    fn put(&self, _: &[Device]) -> Result<(), StoreError> {
        Err(self.err())
    }
    fn delete(&self, _: &str) -> Result<bool, StoreError> {
        Err(self.err())
    }
}

impl Released {
    fn err(&self) -> StoreError {
        StoreError::Io {
            path: self.0.clone(),
            message: "this process handed the device store to its successor; make changes there"
                .into(),
        }
    }
}

impl Writer {
    pub(super) async fn run(
        mut self,
        mut updates: mpsc::Receiver<Observation>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(c) => self.command(c).await,
                    None => break,
                },
                obs = updates.recv() => match obs {
                    Some(o) => {
                        let mut new_status = self.apply(o);
                        // Take what else is queued in the same batch.
                        for _ in 0..4096 {
                            match updates.try_recv() {
                                Ok(o) => new_status |= self.apply(o),
                                Err(_) => break,
                            }
                        }
                        if new_status {
                            self.publish(false);
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    let _ = self.flush().await;
                }
            }
        }
        let _ = self.flush().await;
    }

    /// Applies a handshake observation; true when a status was created or
    /// changed (the snapshot must be republished).
    fn apply(&mut self, o: Observation) -> bool {
        let key = hex32(&o.fingerprint);
        let mut changed = false;
        let d = match self.records.get_mut(&key) {
            Some(d) => d,
            None => {
                // A device is only created by a handshake that passed CA
                // validation (the verifier asks for `record`): a stranger
                // cannot fill the registry.
                let Some(status) = o.record else {
                    return false;
                };
                let d = match &o.der {
                    Some(der) => Device::from_der(key.clone(), der, status),
                    None => Device::bare(key.clone(), status),
                };
                changed = true;
                self.records.entry(key.clone()).or_insert(d)
            }
        };
        if let Some(DeviceStatus::Approved) = o.record
            && d.status == DeviceStatus::Pending
        {
            d.status = DeviceStatus::Approved;
            changed = true;
        }
        if d.first_seen.is_none() {
            d.first_seen = Some(o.at);
        }
        d.last_seen = Some(o.at);
        d.last_peer = Some(o.peer.ip().to_canonical().to_string());
        match o.refused {
            None => d.connections += 1,
            Some(reason) => *d.refusals.entry(reason.to_string()).or_default() += 1,
        }
        self.dirty.insert(key);
        changed
    }

    fn publish(&self, revoked: bool) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        shared.statuses.store(Arc::new(status_map(&self.records)));
        if revoked {
            shared.revocations.send_modify(|g| *g += 1);
        }
        self.count();
    }

    pub(super) fn count(&self) {
        let mut n = [0i64; 3];
        for d in self.records.values() {
            n[d.status as usize] += 1;
        }
        for (g, v) in self.metrics.devices.iter().zip(n) {
            g.set(v);
        }
    }

    async fn flush(&mut self) -> Result<(), RegistryError> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        let batch: Vec<Device> = self
            .dirty
            .iter()
            .filter_map(|k| self.records.get(k).cloned())
            .collect();
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || store.put(&batch))
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Io {
                    path: PathBuf::new(),
                    message: format!("writer task failed: {e}"),
                })
            });
        match result {
            Ok(()) => {
                if self.failing {
                    info!("registry writes succeed again");
                }
                self.failing = false;
                self.dirty.clear();
                Ok(())
            }
            Err(e) => {
                self.metrics.write_errors.inc();
                if !self.failing {
                    error!(error = %e, pending = self.dirty.len(),
                        "registry write failed; handshakes go on from memory, the write is retried");
                }
                self.failing = true;
                Err(e.into())
            }
        }
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::Get { fingerprint, reply } => {
                let _ = reply.send(self.records.get(&fingerprint).cloned());
            }
            Command::List { query, reply } => {
                let _ = reply.send(self.page(&query));
            }
            Command::Flush { reply } => {
                let _ = reply.send(self.flush().await);
            }
            Command::Release { reply } => {
                let r = self.flush().await;
                self.store = Arc::new(Released(self.store_path.clone()));
                info!("device store closed for the successor process");
                let _ = reply.send(r);
            }
            Command::Reopen { reply } => {
                let path = self.store_path.clone();
                let r = tokio::task::spawn_blocking(move || RedbStore::open(&path))
                    .await
                    .unwrap_or_else(|e| {
                        Err(StoreError::Io {
                            path: PathBuf::new(),
                            message: format!("writer task failed: {e}"),
                        })
                    });
                let _ = reply.send(match r {
                    Ok(s) => {
                        self.store = Arc::new(s);
                        info!("device store reopened");
                        Ok(())
                    }
                    Err(e) => Err(e.into()),
                });
            }
            Command::Change {
                fingerprints,
                change,
                who,
                reply,
            } => {
                let _ = reply.send(self.change(fingerprints, change, &who).await);
            }
        }
    }

    async fn change(
        &mut self,
        fingerprints: Vec<String>,
        change: Change,
        who: &str,
    ) -> Result<Vec<Device>, RegistryError> {
        let now = crate::clock::now_unix();
        let mut updated = Vec::new();
        let mut forget = Vec::new();
        for raw in &fingerprints {
            let fp =
                parse_fingerprint(raw).ok_or_else(|| RegistryError::BadFingerprint(raw.clone()))?;
            let existing = self.records.get(&fp).cloned();
            let mut d = match (existing, &change) {
                (Some(d), _) => d,
                (None, Change::Approve) => Device::bare(fp.clone(), DeviceStatus::Approved),
                (None, Change::Block) => Device::bare(fp.clone(), DeviceStatus::Blocked),
                (None, _) => return Err(RegistryError::NotFound(fp)),
            };
            match &change {
                Change::Approve => d.status = DeviceStatus::Approved,
                Change::Block => d.status = DeviceStatus::Blocked,
                Change::Unblock => d.status = DeviceStatus::Pending,
                Change::Label(l) => d.label = l.clone(),
                Change::Forget => {}
            }
            d.changed_at = Some(now);
            d.changed_by = Some(who.to_string());
            if change == Change::Forget {
                forget.push(d);
            } else {
                updated.push(d);
            }
        }
        // The audit log must be able to take the change before it is made:
        // an approval without its audit line would be a silent gap.
        let audit_log = self.open_audit()?;
        // Durable first: only a committed change is applied and answered.
        let store = self.store.clone();
        let to_put = updated.clone();
        let to_forget: Vec<String> = forget.iter().map(|d| d.fingerprint.clone()).collect();
        let result = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            if !to_put.is_empty() {
                store.put(&to_put)?;
            }
            for fp in &to_forget {
                store.delete(fp)?;
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Io {
                path: PathBuf::new(),
                message: format!("writer task failed: {e}"),
            })
        });
        if let Err(e) = result {
            self.metrics.write_errors.inc();
            error!(action = change.action(), %who, error = %e, "admin change NOT saved");
            return Err(e.into());
        }
        let revoking = matches!(change, Change::Block | Change::Unblock | Change::Forget);
        for d in &updated {
            self.dirty.remove(&d.fingerprint);
            self.records.insert(d.fingerprint.clone(), d.clone());
        }
        for d in &forget {
            self.dirty.remove(&d.fingerprint);
            self.records.remove(&d.fingerprint);
        }
        self.publish(revoking);
        let all: Vec<Device> = updated.into_iter().chain(forget).collect();
        for d in &all {
            info!(action = change.action(), %who, fingerprint = %d.fingerprint,
                subject = %d.subject, status = d.status.as_str(), "device changed by administrator");
        }
        self.audit(audit_log, &change, who, now, &all)?;
        Ok(all)
    }

    /// Opens the audit log for appending (creating it and its directory).
    fn open_audit(&self) -> Result<std::fs::File, RegistryError> {
        let err = |e: std::io::Error| {
            error!(path = %self.audit_path.display(), error = %e,
                "audit log cannot be opened; admin change refused");
            RegistryError::AuditUnavailable {
                path: self.audit_path.clone(),
                message: e.to_string(),
            }
        };
        if let Some(dir) = self.audit_path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.audit_path)
            .map_err(err)
    }

    /// Appends and syncs one line per changed device to the opened log.
    fn audit(
        &self,
        mut f: std::fs::File,
        change: &Change,
        who: &str,
        at: i64,
        devices: &[Device],
    ) -> Result<(), RegistryError> {
        let err = |e: std::io::Error| {
            error!(path = %self.audit_path.display(), error = %e, "audit log write failed");
            RegistryError::Audit {
                path: self.audit_path.clone(),
                message: e.to_string(),
            }
        };
        let mut text = String::new();
        for d in devices {
            let mut line = serde_json::json!({
                "time": at,
                "who": who,
                "action": change.action(),
                "fingerprint": d.fingerprint,
                "subject": d.subject,
            });
            if let Change::Label(l) = change {
                line["label"] = serde_json::json!(l);
            }
            text.push_str(&line.to_string());
            text.push('\n');
        }
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_data().map_err(err)
    }

    fn page(&self, q: &Query) -> Page {
        let now = crate::clock::now_unix();
        let text = q.text.as_ref().map(|t| t.to_ascii_lowercase());
        let mut matching: Vec<&Device> = self
            .records
            .values()
            .filter(|d| q.status.is_none_or(|s| d.status == s))
            .filter(|d| {
                q.expiring_within
                    .is_none_or(|w| d.not_after != 0 && d.not_after <= now + w)
            })
            .filter(|d| {
                text.as_ref().is_none_or(|t| {
                    d.fingerprint.contains(t.as_str())
                        || d.subject.to_ascii_lowercase().contains(t.as_str())
                        || d.sans
                            .iter()
                            .any(|s| s.to_ascii_lowercase().contains(t.as_str()))
                        || d.label
                            .as_ref()
                            .is_some_and(|l| l.to_ascii_lowercase().contains(t.as_str()))
                        || d.last_peer.as_ref().is_some_and(|p| p.contains(t.as_str()))
                })
            })
            .collect();
        matching.sort_by(|a, b| {
            a.first_seen
                .cmp(&b.first_seen)
                .then_with(|| a.fingerprint.cmp(&b.fingerprint))
        });
        let limit = q.limit.unwrap_or(100).clamp(1, 1000);
        Page {
            total: matching.len(),
            offset: q.offset,
            devices: matching
                .into_iter()
                .skip(q.offset)
                .take(limit)
                .cloned()
                .collect(),
        }
    }
}
