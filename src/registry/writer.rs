//! The one writer of the store: applies observations and admin changes,
//! commits them, writes the audit log and publishes new snapshots.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, info};

use crate::config::RenewalIdentity;

use super::backend::{blocking, open_store};
use super::device::{device_id, hex32};
use super::requests::{Command, Record, Sort};
use super::shared::Shared;
use super::snapshot::Snapshot;
use super::{
    Certificate, Change, Device, DeviceStatus, DeviceStore, DeviceView, Observation, Page, Query,
    RegistryError, RegistryMetrics, Remote, RemoteChange, StoreError, expiry, parse_fingerprint,
};

/// How often queued handshake updates are written.
pub(super) const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// How often the expiry gauges are recomputed when nothing changes (time
/// alone brings certificates closer to expiry).
const GAUGES_EVERY: u32 = 300;

pub(super) struct Writer {
    pub(super) store: Arc<dyn DeviceStore>,
    /// Device id → device.
    pub(super) records: HashMap<String, Device>,
    /// Certificate fingerprint → device id.
    pub(super) by_fp: HashMap<String, String>,
    /// What the snapshot indexes for the listeners' renewal rules.
    pub(super) identities: Vec<RenewalIdentity>,
    /// Devices changed since the last write.
    pub(super) dirty: HashSet<String>,
    /// Devices removed since the last write (a renewal moved their one
    /// certificate into the device it renews).
    pub(super) removed: HashSet<String>,
    pub(super) shared: std::sync::Weak<Shared>,
    pub(super) metrics: RegistryMetrics,
    pub(super) audit_path: PathBuf,
    pub(super) store_path: PathBuf,
    pub(super) failing: bool,
    /// How the store is opened again after a hand-over that did not happen.
    pub(super) settings: crate::config::RegistrySettings,
    /// Other instances write the store too: sync before admin changes.
    pub(super) shared_store: bool,
    /// Reading other instances' changes failed (reported once).
    pub(super) sync_failing: bool,
    /// Bumped when the store is released or reopened (the change feed is
    /// subscribed again).
    pub(super) generation: u64,
}

/// How many times an admin change is tried again when another gateway
/// changed one of its devices at the same moment.
const CONFLICT_RETRIES: usize = 3;

/// Waits for the shared store's change feed; never for a store of one.
async fn remote_changed(remote: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match remote {
        Some(r) => {
            if r.changed().await.is_err() {
                *remote = None;
            }
        }
        None => std::future::pending().await,
    }
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

/// What applying observations asks of the snapshot.
#[derive(Debug, Default, Clone, Copy)]
struct Publish {
    /// Statuses or the renewal index changed.
    snapshot: bool,
    /// A certificate may have lost admission (open connections re-check).
    revoke: bool,
}

impl std::ops::BitOrAssign for Publish {
    fn bitor_assign(&mut self, o: Publish) {
        self.snapshot |= o.snapshot;
        self.revoke |= o.revoke;
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
        let mut ticks = 0u32;
        let mut remote = self.store.subscribe();
        let mut generation = self.generation;
        loop {
            if generation != self.generation {
                generation = self.generation;
                remote = self.store.subscribe();
            }
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(c) => self.command(c).await,
                    None => break,
                },
                _ = remote_changed(&mut remote) => {
                    let _ = self.sync().await;
                }
                obs = updates.recv() => match obs {
                    Some(o) => {
                        let mut audit = Vec::new();
                        let now = crate::clock::now_unix();
                        let mut publish = self.apply(o, now, &mut audit);
                        // Take what else is queued in the same batch.
                        for _ in 0..4096 {
                            match updates.try_recv() {
                                Ok(o) => publish |= self.apply(o, now, &mut audit),
                                Err(_) => break,
                            }
                        }
                        if publish.snapshot {
                            self.publish(publish.revoke);
                        }
                        self.audit_renewals(&audit);
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    let _ = self.flush().await;
                    ticks = ticks.wrapping_add(1);
                    if ticks.is_multiple_of(GAUGES_EVERY) {
                        self.count();
                    }
                }
            }
        }
        if let Err(e) = self.flush().await {
            // Sightings and counters live in memory until written: say what
            // a stop during an outage costs (statuses are never among them;
            // admin changes are written before they are acknowledged).
            error!(error = %e, unwritten = self.dirty.len() + self.removed.len(),
                "stopping with device sightings not written to the registry; they are lost");
        }
    }

    /// Applies a handshake observation.
    fn apply(&mut self, o: Observation, now: i64, audit: &mut Vec<serde_json::Value>) -> Publish {
        let key = hex32(&o.fingerprint);
        let mut publish = Publish::default();
        let id = match self.by_fp.get(&key).cloned() {
            Some(id) => {
                // A lone undecided certificate the renewal rule now places
                // (the rule or its index changed since it was recorded).
                if let Record::Renewal { of } = o.record
                    && self.undecided(&id)
                    && self
                        .by_fp
                        .get(&hex32(&of))
                        .is_some_and(|other| *other != id)
                    && let Some(mut lone) = self.records.remove(&id)
                    && let Some(cert) = lone.certificates.pop()
                {
                    self.by_fp.remove(&key);
                    self.dirty.remove(&id);
                    self.removed.insert(id);
                    publish |= self.join(cert, of, o.refused.is_none(), now, audit);
                    match self.by_fp.get(&key) {
                        Some(id) => id.clone(),
                        None => return publish,
                    }
                } else {
                    id
                }
            }
            None => {
                // A device is only created by a handshake that passed CA
                // validation (the verifier asks for `record`): a stranger
                // cannot fill the registry.
                let cert = |der: &Option<Vec<u8>>| match der {
                    Some(der) => Certificate::from_der(key.clone(), der),
                    None => Certificate::bare(key.clone()),
                };
                if self.failing && self.dirty.len() >= self.settings.update_queue {
                    // The store has been failing for a while: new devices
                    // wait in memory only up to the queue's size (counted
                    // when dropped); known ones are still admitted.
                    self.metrics.dropped.inc();
                    return publish;
                }
                match o.record {
                    Record::Seen | Record::Fill => return publish,
                    Record::New(status) => self.create(cert(&o.der), status),
                    Record::Ambiguous(status) => {
                        let mut c = cert(&o.der);
                        c.ambiguous_identity = true;
                        self.metrics.renewals[2].inc();
                        self.create(c, status)
                    }
                    Record::Renewal { of } => {
                        publish |= self.join(cert(&o.der), of, o.refused.is_none(), now, audit);
                    }
                }
                publish.snapshot = true;
                match self.by_fp.get(&key) {
                    Some(id) => id.clone(),
                    None => return publish,
                }
            }
        };
        let Some(d) = self.records.get_mut(&id) else {
            return publish;
        };
        if let Record::New(DeviceStatus::Approved) = o.record
            && d.status == DeviceStatus::Pending
        {
            d.status = DeviceStatus::Approved;
            publish.snapshot = true;
        }
        if let Some(c) = d.certificates.iter_mut().find(|c| c.fingerprint == key) {
            if !c.has_details()
                && let Some(der) = &o.der
            {
                c.fill_from_der(der);
                publish.snapshot = true;
            }
            if c.first_seen.is_none() {
                c.first_seen = Some(o.at);
            }
            c.last_seen = Some(o.at);
            c.last_peer = Some(o.peer.ip().to_canonical().to_string());
            match o.refused {
                None => c.connections += 1,
                Some(reason) => *c.refusals.entry(reason.to_string()).or_default() += 1,
            }
        }
        self.dirty.insert(id);
        publish
    }

    /// Whether a device is a lone pending certificate no administrator
    /// has decided on.
    fn undecided(&self, id: &str) -> bool {
        self.records.get(id).is_some_and(|d| {
            d.status == DeviceStatus::Pending && d.certificates.len() == 1 && d.changed_at.is_none()
        })
    }

    /// A new device of one certificate.
    fn create(&mut self, cert: Certificate, status: DeviceStatus) {
        let id = device_id(&cert.fingerprint, |id| self.records.contains_key(id));
        self.by_fp.insert(cert.fingerprint.clone(), id.clone());
        self.dirty.insert(id.clone());
        self.records
            .insert(id.clone(), Device::of(id, cert, status));
    }

    /// A renewal joins the device of `of`: it takes the device's status
    /// and, when it was admitted, supersedes the older certificates.
    fn join(
        &mut self,
        mut cert: Certificate,
        of: [u8; 32],
        admitted: bool,
        now: i64,
        audit: &mut Vec<serde_json::Value>,
    ) -> Publish {
        let of = hex32(&of);
        let Some(id) = self.by_fp.get(&of).cloned() else {
            // The device was forgotten since the handshake decided.
            self.create(cert, DeviceStatus::Pending);
            return Publish {
                snapshot: true,
                revoke: true,
            };
        };
        let Some(d) = self.records.get_mut(&id) else {
            return Publish::default();
        };
        cert.renewal_of = Some(of.clone());
        let fp = cert.fingerprint.clone();
        let subject = cert.subject.clone();
        let dropped = d.renew(cert, admitted, now);
        let status = d.status;
        for f in dropped {
            self.by_fp.remove(&f);
        }
        self.by_fp.insert(fp.clone(), id.clone());
        self.dirty.insert(id.clone());
        self.metrics.renewals[if status == DeviceStatus::Blocked {
            1
        } else {
            0
        }]
        .inc();
        let note = match status {
            DeviceStatus::Approved => format!("approved by renewal of {of}"),
            DeviceStatus::Blocked => format!("blocked by renewal of {of}"),
            DeviceStatus::Pending => format!("pending: joined its device by renewal of {of}"),
        };
        info!(device = %id, fingerprint = %fp, renewal_of = %of, %subject,
            status = status.as_str(), superseded = admitted, "device certificate renewed");
        audit.push(serde_json::json!({
            "time": now,
            "who": "certgate",
            "action": "renewal",
            "device": id,
            "fingerprint": fp,
            "renewal_of": of,
            "subject": subject,
            "status": status.as_str(),
            "note": note,
        }));
        Publish {
            snapshot: true,
            // The device's status did not change; its older certificates'
            // open connections learn when their grace ends.
            revoke: admitted,
        }
    }

    /// Appends the renewals' audit lines. The handshakes were decided
    /// already: a failure is logged, not answered.
    fn audit_renewals(&self, lines: &[serde_json::Value]) {
        if lines.is_empty() {
            return;
        }
        let write = || -> std::io::Result<()> {
            let mut f = self.open_audit_file()?;
            let mut text = String::new();
            for l in lines {
                text.push_str(&l.to_string());
                text.push('\n');
            }
            f.write_all(text.as_bytes())?;
            f.sync_data()
        };
        if let Err(e) = write() {
            error!(path = %self.audit_path.display(), error = %e, lines = lines.len(),
                "audit log write failed; renewals are recorded in the registry but not in the audit log");
        }
    }

    fn publish(&self, revoked: bool) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        shared.snapshot.store(Arc::new(Snapshot::build(
            self.records.values(),
            &self.identities,
        )));
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
        let expiring = expiry::gauge(self.records.values(), crate::clock::now_unix());
        for (g, v) in self.metrics.expiring.iter().zip(expiring) {
            g.set(v);
        }
    }

    async fn flush(&mut self) -> Result<(), RegistryError> {
        if self.dirty.is_empty() && self.removed.is_empty() {
            return Ok(());
        }
        let batch: Vec<Device> = self
            .dirty
            .iter()
            .filter_map(|k| self.records.get(k).cloned())
            .collect();
        let removed: Vec<String> = self.removed.iter().cloned().collect();
        let store = self.store.clone();
        let result = blocking(move || store.write(&batch, &removed)).await;
        match result {
            Ok(()) => {
                if self.failing {
                    info!("registry writes succeed again");
                }
                self.failing = false;
                self.dirty.clear();
                self.removed.clear();
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
                let d = self
                    .resolve(&fingerprint)
                    .map(|id| id.and_then(|id| self.records.get(&id).cloned()));
                let _ = reply.send(d);
            }
            Command::GetMany { keys, reply } => {
                let mut seen = HashSet::new();
                let found = keys
                    .iter()
                    .filter_map(|k| self.resolve(k).ok().flatten())
                    .filter(|id| seen.insert(id.clone()))
                    .filter_map(|id| self.records.get(&id).cloned())
                    .collect();
                let _ = reply.send(found);
            }
            Command::List { query, reply } => {
                let _ = reply.send(self.page(&query));
            }
            Command::Expiry {
                active_within,
                reply,
            } => {
                let _ = reply.send(expiry::forecast(
                    self.records.values(),
                    crate::clock::now_unix(),
                    active_within,
                ));
            }
            Command::Identities { identities } => {
                if identities != self.identities {
                    info!(identities = ?identities.iter().map(RenewalIdentity::name).collect::<Vec<_>>(),
                        "renewal index follows the listeners' renewal rules");
                    self.identities = identities;
                    self.publish(false);
                }
            }
            Command::Flush { reply } => {
                let _ = reply.send(self.flush().await);
            }
            Command::Release { reply } => {
                let r = self.flush().await;
                self.store = Arc::new(Released(self.store_path.clone()));
                self.generation += 1;
                info!("device store closed for the successor process");
                let _ = reply.send(r);
            }
            Command::Reopen { reply } => {
                let settings = self.settings.clone();
                let r = blocking(move || open_store(&settings)).await;
                let _ = reply.send(match r {
                    Ok(s) => {
                        self.store = s;
                        self.generation += 1;
                        info!("device store reopened");
                        Ok(())
                    }
                    Err(e) => Err(e.into()),
                });
            }
            Command::Change {
                fingerprints,
                certificates,
                change,
                who,
                reply,
            } => {
                let mut r = Err(RegistryError::Closed);
                for _ in 0..CONFLICT_RETRIES {
                    r = match self.sync_first().await {
                        Ok(()) => {
                            self.change(fingerprints.clone(), &certificates, &change, &who)
                                .await
                        }
                        Err(e) => Err(e),
                    };
                    if !conflict(&r) {
                        break;
                    }
                }
                let _ = reply.send(r);
            }
            Command::Import {
                devices,
                who,
                reply,
            } => {
                let mut r = Err(RegistryError::Closed);
                for _ in 0..CONFLICT_RETRIES {
                    r = match self.sync_first().await {
                        Ok(()) => self.import(devices.clone(), &who).await,
                        Err(e) => Err(e),
                    };
                    if !conflict(&r) {
                        break;
                    }
                }
                let _ = reply.send(r);
            }
        }
    }

    /// The device id a user's word names: the fingerprint of any of its
    /// certificates, or its id. `Ok(None)`: a well-formed fingerprint the
    /// registry does not know.
    fn resolve(&self, raw: &str) -> Result<Option<String>, RegistryError> {
        if let Some(fp) = parse_fingerprint(raw) {
            return Ok(self.by_fp.get(&fp).cloned());
        }
        let id = raw.trim().to_ascii_lowercase();
        if self.records.contains_key(&id) {
            return Ok(Some(id));
        }
        Err(RegistryError::BadFingerprint(raw.to_string()))
    }

    /// Before an admin change to a shared store: this instance's counters
    /// written and every other instance's changes read, so the change is
    /// made on the current records (and refused while the database
    /// cannot be reached: it would not reach the other gateways).
    async fn sync_first(&mut self) -> Result<(), RegistryError> {
        if self.shared_store {
            self.sync().await
        } else {
            Ok(())
        }
    }

    /// Writes this instance's changes, then reads the other instances'
    /// and publishes them; a device that lost admission closes its open
    /// connections here too.
    async fn sync(&mut self) -> Result<(), RegistryError> {
        // Counters first: the records read next replace the local ones.
        self.flush().await?;
        let store = self.store.clone();
        let remote = match blocking(move || store.changes()).await {
            Ok(r) => {
                if self.sync_failing {
                    info!("changes of the other gateways are read again");
                }
                self.sync_failing = false;
                r
            }
            Err(e) => {
                if !self.sync_failing {
                    error!(error = %e, "cannot read the other gateways' changes; serving the registry as last read");
                }
                self.sync_failing = true;
                return Err(e.into());
            }
        };
        match remote {
            Remote::None => {}
            Remote::Changed(list) => {
                let mut revoke = false;
                for c in list {
                    match c {
                        RemoteChange::Put(d) => {
                            revoke |= self
                                .records
                                .get(&d.id)
                                .is_some_and(|old| loses_admission(old, &d));
                            self.insert(d);
                        }
                        RemoteChange::Gone(id) => {
                            revoke = true;
                            self.remove(&id);
                        }
                    }
                }
                self.publish(revoke);
            }
            Remote::All(devices) => {
                self.by_fp = devices
                    .iter()
                    .flat_map(|d| {
                        d.certificates
                            .iter()
                            .map(|c| (c.fingerprint.clone(), d.id.clone()))
                    })
                    .collect();
                self.records = devices.into_iter().map(|d| (d.id.clone(), d)).collect();
                self.dirty.clear();
                self.removed.clear();
                self.publish(true);
            }
        }
        Ok(())
    }

    async fn change(
        &mut self,
        mut fingerprints: Vec<String>,
        certificates: &[Vec<u8>],
        change: &Change,
        who: &str,
    ) -> Result<Vec<DeviceView>, RegistryError> {
        let now = crate::clock::now_unix();
        let mut updated: Vec<Device> = Vec::new();
        let mut forget: Vec<Device> = Vec::new();
        let mut seen = HashSet::new();
        let ders: HashMap<String, &[u8]> = certificates
            .iter()
            .map(|der| (crate::identity::sha256_hex(der), der.as_slice()))
            .collect();
        fingerprints.extend(ders.keys().cloned());
        for raw in &fingerprints {
            let existing = self.resolve(raw)?;
            let mut d = match (existing, change) {
                (Some(id), _) => match self.records.get(&id) {
                    Some(d) => d.clone(),
                    None => return Err(RegistryError::NotFound(raw.clone())),
                },
                (None, Change::Approve | Change::Block) => {
                    // Pre-approval (or pre-block) of a certificate not seen
                    // yet: a device of one, known by fingerprint.
                    let fp = parse_fingerprint(raw)
                        .ok_or_else(|| RegistryError::BadFingerprint(raw.clone()))?;
                    // `seen` holds this change's devices so far (a set: a
                    // pre-approval of 10,000 certificates stays linear).
                    let taken = |id: &str| self.records.contains_key(id) || seen.contains(id);
                    let id = device_id(&fp, taken);
                    let cert = match ders.get(&fp) {
                        Some(der) => Certificate::from_der(fp, der),
                        None => Certificate::bare(fp),
                    };
                    Device::of(id, cert, DeviceStatus::Pending)
                }
                (None, _) => {
                    return Err(RegistryError::NotFound(
                        parse_fingerprint(raw).unwrap_or_else(|| raw.clone()),
                    ));
                }
            };
            if !seen.insert(d.id.clone()) {
                continue;
            }
            // A certificate given whole fills a record known by fingerprint.
            for c in &mut d.certificates {
                if !c.has_details()
                    && let Some(der) = ders.get(&c.fingerprint)
                {
                    c.fill_from_der(der);
                }
            }
            match change {
                Change::Approve => d.status = DeviceStatus::Approved,
                Change::Block => d.status = DeviceStatus::Blocked,
                Change::Unblock => d.status = DeviceStatus::Pending,
                Change::Label(l) => d.label = l.clone(),
                Change::Forget => {}
            }
            d.changed_at = Some(now);
            d.changed_by = Some(who.to_string());
            if *change == Change::Forget {
                forget.push(d);
            } else {
                updated.push(d);
            }
        }
        let lines: Vec<serde_json::Value> = updated
            .iter()
            .chain(&forget)
            .map(|d| {
                let current = d.current();
                let mut line = serde_json::json!({
                    "time": now,
                    "who": who,
                    "action": change.action(),
                    "device": d.id,
                    "fingerprint": current.map(|c| c.fingerprint.as_str()).unwrap_or(""),
                    "subject": current.map(|c| c.subject.as_str()).unwrap_or(""),
                });
                if d.certificates.len() > 1 {
                    line["certificates"] = serde_json::json!(
                        d.certificates
                            .iter()
                            .map(|c| &c.fingerprint)
                            .collect::<Vec<_>>()
                    );
                }
                if let Change::Label(l) = change {
                    line["label"] = serde_json::json!(l);
                }
                line
            })
            .collect();
        self.commit(
            updated.clone(),
            forget.clone(),
            &lines,
            change.action(),
            who,
        )
        .await?;
        let revoking = matches!(change, Change::Block | Change::Unblock | Change::Forget);
        for d in &updated {
            self.insert(d.clone());
        }
        for d in &forget {
            self.remove(&d.id);
        }
        self.publish(revoking);
        for d in updated.iter().chain(&forget) {
            info!(action = change.action(), %who, device = %d.id,
                fingerprint = %d.current().map(|c| c.fingerprint.as_str()).unwrap_or(""),
                status = d.status.as_str(), "device changed by administrator");
        }
        Ok(updated.iter().chain(&forget).map(Device::view).collect())
    }

    /// Restores exported devices. A device replaces the record with its
    /// id (status, label; certificates merged); a certificate another
    /// device already has stays with that device.
    async fn import(
        &mut self,
        devices: Vec<Device>,
        who: &str,
    ) -> Result<Vec<DeviceView>, RegistryError> {
        let now = crate::clock::now_unix();
        let mut out: Vec<Device> = Vec::new();
        let mut lines = Vec::new();
        for mut incoming in devices {
            if incoming.id.is_empty()
                || !incoming
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err(RegistryError::BadImport(format!(
                    "device id \"{}\" is not lowercase hex (as certgate exports it)",
                    incoming.id
                )));
            }
            let mut kept_elsewhere = Vec::new();
            incoming
                .certificates
                .retain(|c| match self.by_fp.get(&c.fingerprint) {
                    Some(owner) if *owner != incoming.id => {
                        kept_elsewhere.push(c.fingerprint.clone());
                        false
                    }
                    _ => parse_fingerprint(&c.fingerprint).as_deref() == Some(&c.fingerprint),
                });
            let mut d = match self.records.get(&incoming.id) {
                Some(have) => {
                    let mut d = have.clone();
                    for c in incoming.certificates {
                        if d.certificate(&c.fingerprint).is_none() {
                            d.certificates.push(c);
                        }
                    }
                    d.status = incoming.status;
                    d.label = incoming.label;
                    d
                }
                None if incoming.certificates.is_empty() => continue,
                None => incoming,
            };
            d.changed_at = Some(now);
            d.changed_by = Some(who.to_string());
            let mut line = serde_json::json!({
                "time": now,
                "who": who,
                "action": "import",
                "device": d.id,
                "status": d.status.as_str(),
                "certificates": d.certificates.iter().map(|c| &c.fingerprint).collect::<Vec<_>>(),
            });
            if !kept_elsewhere.is_empty() {
                line["kept_by_their_devices"] = serde_json::json!(kept_elsewhere);
            }
            lines.push(line);
            out.push(d);
        }
        self.commit(out.clone(), Vec::new(), &lines, "import", who)
            .await?;
        for d in &out {
            self.insert(d.clone());
        }
        self.publish(true);
        info!(%who, devices = out.len(), "devices imported");
        Ok(out.iter().map(Device::view).collect())
    }

    fn insert(&mut self, d: Device) {
        if let Some(old) = self.records.get(&d.id) {
            for c in &old.certificates {
                self.by_fp.remove(&c.fingerprint);
            }
        }
        for c in &d.certificates {
            self.by_fp.insert(c.fingerprint.clone(), d.id.clone());
        }
        self.dirty.remove(&d.id);
        self.records.insert(d.id.clone(), d);
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.records.remove(id) {
            for c in &old.certificates {
                self.by_fp.remove(&c.fingerprint);
            }
        }
        self.dirty.remove(id);
    }

    /// Makes an administrator's change durable: the audit log must be
    /// able to take it first (an approval without its audit line would be
    /// a silent gap), then the store commits it, then its lines are
    /// written. Only a committed change is applied and answered.
    async fn commit(
        &mut self,
        put: Vec<Device>,
        forget: Vec<Device>,
        lines: &[serde_json::Value],
        action: &str,
        who: &str,
    ) -> Result<(), RegistryError> {
        let audit_log = self.open_audit()?;
        let store = self.store.clone();
        let audit = lines.to_vec();
        let result = blocking(move || store.commit(&put, &forget, &audit)).await;
        if let Err(e) = result {
            self.metrics.write_errors.inc();
            error!(%action, %who, error = %e, "admin change NOT saved");
            return Err(e.into());
        }
        self.audit(audit_log, lines)
    }

    fn open_audit_file(&self) -> std::io::Result<std::fs::File> {
        if let Some(dir) = self.audit_path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.audit_path)
    }

    /// Opens the audit log for appending (creating it and its directory).
    fn open_audit(&self) -> Result<std::fs::File, RegistryError> {
        self.open_audit_file().map_err(|e| {
            error!(path = %self.audit_path.display(), error = %e,
                "audit log cannot be opened; admin change refused");
            RegistryError::AuditUnavailable {
                path: self.audit_path.clone(),
                message: e.to_string(),
            }
        })
    }

    /// Appends and syncs the lines to the opened log.
    fn audit(
        &self,
        mut f: std::fs::File,
        lines: &[serde_json::Value],
    ) -> Result<(), RegistryError> {
        let err = |e: std::io::Error| {
            error!(path = %self.audit_path.display(), error = %e, "audit log write failed");
            RegistryError::Audit {
                path: self.audit_path.clone(),
                message: e.to_string(),
            }
        };
        let mut text = String::new();
        for l in lines {
            text.push_str(&l.to_string());
            text.push('\n');
        }
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_data().map_err(err)
    }

    fn page(&self, q: &Query) -> Page {
        let now = crate::clock::now_unix();
        let text = q.text.as_ref().map(|t| t.to_ascii_lowercase());
        let first_seen = |d: &Device| d.certificates.iter().filter_map(|c| c.first_seen).min();
        // Ids and fingerprints are lowercase hex: only a hex query can
        // match them. Nothing is allocated per device (a search scans all
        // of them).
        let hex = text
            .as_deref()
            .is_some_and(|t| t.bytes().all(|b| b.is_ascii_hexdigit()));
        let matches_text = |d: &Device, t: &str| {
            (hex && d.id.contains(t))
                || d.label.as_ref().is_some_and(|l| contains_ci(l, t))
                || d.certificates.iter().any(|c| {
                    (hex && c.fingerprint.contains(t))
                        || contains_ci(&c.subject, t)
                        || c.sans.iter().any(|s| contains_ci(s, t))
                        || c.last_peer.as_ref().is_some_and(|p| p.contains(t))
                })
        };
        let matching: Vec<&Device> = self
            .records
            .values()
            .filter(|d| q.status.is_none_or(|s| d.status == s))
            .filter(|d| {
                q.expiring_within.is_none_or(|w| {
                    d.current()
                        .is_some_and(|c| c.not_after != 0 && c.not_after <= now + w)
                })
            })
            .filter(|d| {
                q.active_within.is_none_or(|w| {
                    d.certificates
                        .iter()
                        .filter_map(|c| c.last_seen)
                        .max()
                        .is_some_and(|t| t >= now - w)
                })
            })
            .filter(|d| text.as_ref().is_none_or(|t| matches_text(d, t)))
            .collect();
        let last_seen = |d: &Device| d.certificates.iter().filter_map(|c| c.last_seen).max();
        let key = |d: &Device| match q.sort {
            Sort::FirstSeen => first_seen(d),
            Sort::LastSeen => last_seen(d),
            Sort::Expiry => d.current().map(|c| c.not_after).filter(|&t| t != 0),
        };
        // Keys computed once per device: a sort compares O(n log n) times.
        let mut keyed: Vec<(Option<i64>, &Device)> =
            matching.into_iter().map(|d| (key(d), d)).collect();
        keyed.sort_unstable_by(|(ka, a), (kb, b)| ka.cmp(kb).then_with(|| a.id.cmp(&b.id)));
        if q.descending {
            keyed.reverse();
        }
        let matching: Vec<&Device> = keyed.into_iter().map(|(_, d)| d).collect();
        let limit = q.limit.unwrap_or(100).clamp(1, 1000);
        Page {
            total: matching.len(),
            offset: q.offset,
            devices: matching
                .into_iter()
                .skip(q.offset)
                .take(limit)
                .map(Device::view)
                .collect(),
        }
    }
}

/// Whether `hay` contains `needle` (lowercase) in any ASCII case.
fn contains_ci(hay: &str, needle: &str) -> bool {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    let Some(&first) = needle.first() else {
        return true;
    };
    if needle.len() > hay.len() {
        return false;
    }
    let upper = first.to_ascii_uppercase();
    (0..=hay.len() - needle.len()).any(|i| {
        (hay[i] == first || hay[i] == upper)
            && hay[i..i + needle.len()].eq_ignore_ascii_case(needle)
    })
}

/// Whether an admin change met another gateway's change to its device.
fn conflict<T>(r: &Result<T, RegistryError>) -> bool {
    matches!(r, Err(RegistryError::Store(StoreError::Conflict { .. })))
}

/// Whether the change from `old` to `new` (another gateway's) may refuse
/// a connection admitted under `old`: its status changed away from
/// approved, or a certificate left it or was superseded.
fn loses_admission(old: &Device, new: &Device) -> bool {
    (old.status != new.status && new.status != DeviceStatus::Approved)
        || old.certificates.iter().any(|c| {
            new.certificate(&c.fingerprint)
                .is_none_or(|n| n.superseded_at != c.superseded_at)
        })
}

#[cfg(test)]
mod tests {
    use super::contains_ci;

    #[test]
    fn search_text_matches_in_any_ascii_case() {
        assert!(contains_ci("CN=Agent-042,O=Fleet", "agent-04"));
        assert!(contains_ci("CN=Agent-042,O=Fleet", "o=fleet"));
        assert!(contains_ci("x", ""));
        assert!(!contains_ci("CN=Agent", "agent-0"));
        assert!(!contains_ci("ab", "abc"));
    }
}
