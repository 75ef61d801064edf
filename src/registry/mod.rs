//! The device registry: who has tried to connect, and whether each device is
//! pending, approved or blocked.
//!
//! Handshakes never touch the store or wait on a writer: they read an
//! immutable status snapshot ([`Registry::status`], one `ArcSwap` load and a
//! hash lookup). What a handshake learns (a first-seen device, a connection,
//! a refusal) goes to the writer task through a bounded queue; a full queue
//! drops the update (counted), never the handshake. Administrator changes
//! go through the same writer, are committed durably before they are
//! acknowledged, written to the audit log, and published in a new snapshot.

pub mod store;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::config::RegistrySettings;
use crate::dn::rfc4514_subject;
pub use crate::identity::fingerprint;
pub use store::{DeviceStore, RedbStore, StoreError};

/// A device's approval state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// Seen, not yet approved: refused in `manual` mode.
    Pending,
    /// Admitted.
    Approved,
    /// Refused everywhere.
    Blocked,
}

impl DeviceStatus {
    /// The lowercase name used in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Approved => "approved",
            DeviceStatus::Blocked => "blocked",
        }
    }

    /// Parses `pending`, `approved` or `blocked`.
    pub fn parse(s: &str) -> Option<DeviceStatus> {
        match s {
            "pending" => Some(DeviceStatus::Pending),
            "approved" => Some(DeviceStatus::Approved),
            "blocked" => Some(DeviceStatus::Blocked),
            _ => None,
        }
    }
}

/// One device certificate and what is known about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Lowercase hex SHA-256 of the certificate DER: the key.
    pub fingerprint: String,
    /// Subject, RFC 4514 (empty when only the fingerprint is known).
    #[serde(default)]
    pub subject: String,
    /// Issuer, RFC 4514.
    #[serde(default)]
    pub issuer: String,
    /// Serial, uppercase hex.
    #[serde(default)]
    pub serial: String,
    /// Subject alternative names (`DNS:...`, `URI:...`, `IP:...`, `email:...`).
    #[serde(default)]
    pub sans: Vec<String>,
    /// Validity start, Unix seconds (0 when unknown).
    #[serde(default)]
    pub not_before: i64,
    /// Validity end, Unix seconds (0 when unknown).
    #[serde(default)]
    pub not_after: i64,
    /// Approval state.
    pub status: DeviceStatus,
    /// First handshake seen, Unix seconds.
    #[serde(default)]
    pub first_seen: Option<i64>,
    /// Latest handshake seen, Unix seconds.
    #[serde(default)]
    pub last_seen: Option<i64>,
    /// Source address of the latest handshake.
    #[serde(default)]
    pub last_peer: Option<String>,
    /// Connections admitted.
    #[serde(default)]
    pub connections: u64,
    /// Refused handshakes by reason.
    #[serde(default)]
    pub refusals: BTreeMap<String, u64>,
    /// Administrator's label or note.
    #[serde(default)]
    pub label: Option<String>,
    /// Last administrator change: when, by whom.
    #[serde(default)]
    pub changed_at: Option<i64>,
    /// Who made the last administrator change (the token name).
    #[serde(default)]
    pub changed_by: Option<String>,
}

impl Device {
    /// A record for a certificate seen for the first time.
    pub fn from_der(fingerprint: String, der: &[u8], status: DeviceStatus) -> Device {
        let mut d = Device::bare(fingerprint, status);
        if let Ok((_, cert)) = X509Certificate::from_der(der) {
            d.subject = rfc4514_subject(&cert);
            d.issuer = cert.issuer().to_string();
            d.serial = crate::identity::serial_hex(cert.raw_serial());
            d.not_before = cert.validity().not_before.timestamp();
            d.not_after = cert.validity().not_after.timestamp();
            if let Ok(Some(san)) = cert.subject_alternative_name() {
                for n in &san.value.general_names {
                    match n {
                        GeneralName::DNSName(v) => d.sans.push(format!("DNS:{v}")),
                        GeneralName::URI(v) => d.sans.push(format!("URI:{v}")),
                        GeneralName::RFC822Name(v) => d.sans.push(format!("email:{v}")),
                        GeneralName::IPAddress(b) => {
                            let ip = match b.len() {
                                4 => <[u8; 4]>::try_from(*b)
                                    .map(|a| std::net::IpAddr::from(a).to_string())
                                    .ok(),
                                16 => <[u8; 16]>::try_from(*b)
                                    .map(|a| std::net::IpAddr::from(a).to_string())
                                    .ok(),
                                _ => None,
                            };
                            if let Some(ip) = ip {
                                d.sans.push(format!("IP:{ip}"));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        d
    }

    /// A record known only by fingerprint (pre-approved, imported).
    pub fn bare(fingerprint: String, status: DeviceStatus) -> Device {
        Device {
            fingerprint,
            subject: String::new(),
            issuer: String::new(),
            serial: String::new(),
            sans: Vec::new(),
            not_before: 0,
            not_after: 0,
            status,
            first_seen: None,
            last_seen: None,
            last_peer: None,
            connections: 0,
            refusals: BTreeMap::new(),
            label: None,
            changed_at: None,
            changed_by: None,
        }
    }

    /// The stored form (JSON: readable with any tool, tolerant of added
    /// fields).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes the stored form.
    pub fn decode(bytes: &[u8]) -> Result<Device, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Parses a fingerprint given by a user: 64 hex digits, any case, colons
/// allowed (as `openssl x509 -fingerprint -sha256` prints them).
pub fn parse_fingerprint(s: &str) -> Option<String> {
    let hex: String = s
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

fn hex32(fp: &[u8; 32]) -> String {
    let mut s = String::with_capacity(64);
    for b in fp {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let t = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(t, 16).ok()?;
    }
    Some(out)
}

/// The handshake's view: fingerprint → status.
pub type StatusMap = HashMap<[u8; 32], DeviceStatus>;

/// What a handshake reports to the registry.
#[derive(Debug)]
pub struct Observation {
    /// Certificate fingerprint.
    pub fingerprint: [u8; 32],
    /// The certificate, when the device may be new (to fill the record).
    pub der: Option<Vec<u8>>,
    /// Source address.
    pub peer: SocketAddr,
    /// When, Unix seconds.
    pub at: i64,
    /// Admitted, or refused with a reason.
    pub refused: Option<&'static str>,
    /// Status to record for a device not yet approved (or unknown).
    pub record: Option<DeviceStatus>,
}

/// An administrator's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Set status approved.
    Approve,
    /// Set status blocked.
    Block,
    /// Set status back to pending.
    Unblock,
    /// Delete the record.
    Forget,
    /// Set (or clear, with `None`) the label.
    Label(Option<String>),
}

impl Change {
    fn action(&self) -> &'static str {
        match self {
            Change::Approve => "approve",
            Change::Block => "block",
            Change::Unblock => "unblock",
            Change::Forget => "forget",
            Change::Label(_) => "label",
        }
    }
}

/// A registry operation failed.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// No such device.
    #[error("no device with fingerprint {0}")]
    NotFound(String),
    /// Not a fingerprint.
    #[error("\"{0}\" is not a fingerprint; give the 64 hex digits of the certificate's SHA-256")]
    BadFingerprint(String),
    /// The store refused the write: nothing changed.
    #[error("the change was NOT saved: {0}")]
    Store(#[from] StoreError),
    /// The audit log cannot be opened for appending: nothing changed (a
    /// change that could not be audited is not made).
    #[error(
        "the change was NOT saved: the audit log {path} cannot be opened for appending: {message} \
         (check the directory's permissions and free space)"
    )]
    AuditUnavailable {
        /// The audit log.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The change is saved but the audit log could not be written.
    #[error("the change was saved, but the audit log {path} could not be written: {message}")]
    Audit {
        /// The audit log.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The registry task is gone (shutting down).
    #[error("the registry is shutting down")]
    Closed,
}

/// A query for the device list.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only this status.
    pub status: Option<DeviceStatus>,
    /// Case-insensitive substring of fingerprint, subject, SANs, label or
    /// last peer.
    pub text: Option<String>,
    /// Only certificates expiring within this many seconds from now.
    pub expiring_within: Option<i64>,
    /// Skip this many results.
    pub offset: usize,
    /// At most this many results (default 100, max 1000).
    pub limit: Option<usize>,
}

/// One page of devices.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// Matching devices in total.
    pub total: usize,
    /// Offset of the first device returned.
    pub offset: usize,
    /// The devices, by first seen (then fingerprint).
    pub devices: Vec<Device>,
}

enum Command {
    Change {
        fingerprints: Vec<String>,
        change: Change,
        who: String,
        reply: oneshot::Sender<Result<Vec<Device>, RegistryError>>,
    },
    Get {
        fingerprint: String,
        reply: oneshot::Sender<Option<Device>>,
    },
    List {
        query: Query,
        reply: oneshot::Sender<Page>,
    },
    Flush {
        reply: oneshot::Sender<Result<(), RegistryError>>,
    },
    Release {
        reply: oneshot::Sender<Result<(), RegistryError>>,
    },
    Reopen {
        reply: oneshot::Sender<Result<(), RegistryError>>,
    },
}

/// Registry metrics.
#[derive(Debug, Clone, Default)]
pub struct RegistryMetrics {
    /// Devices by status (gauge values set by the writer).
    pub devices: [prometheus_client::metrics::gauge::Gauge; 3],
    /// Handshake updates dropped because the queue was full.
    pub dropped: Counter,
    /// Store writes that failed.
    pub write_errors: Counter,
}

struct Shared {
    statuses: ArcSwap<StatusMap>,
    /// Bumped when a device loses admission (blocked, unblocked back to
    /// pending, forgotten): open connections re-check themselves.
    revocations: watch::Sender<u64>,
    updates: mpsc::Sender<Observation>,
    commands: mpsc::Sender<Command>,
    metrics: RegistryMetrics,
}

/// A handle to the registry; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
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

fn status_map(records: &HashMap<String, Device>) -> StatusMap {
    records
        .values()
        .filter_map(|d| unhex32(&d.fingerprint).map(|k| (k, d.status)))
        .collect()
}

/// How often queued handshake updates are written.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

struct Writer {
    store: Arc<dyn DeviceStore>,
    records: HashMap<String, Device>,
    dirty: HashSet<String>,
    shared: std::sync::Weak<Shared>,
    metrics: RegistryMetrics,
    audit_path: PathBuf,
    store_path: PathBuf,
    failing: bool,
}

/// The store of a process that handed its registry to a successor.
struct Released(PathBuf);

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
    async fn run(
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

    fn count(&self) {
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

/// Prints a warning once if `settings` changed in a way that needs a
/// restart.
pub fn warn_if_changed(old: Option<&RegistrySettings>, new: Option<&RegistrySettings>) {
    if old.map(|r| (&r.path, &r.audit_log, r.update_queue))
        != new.map(|r| (&r.path, &r.audit_log, r.update_queue))
    {
        warn!(
            "[registry] path, audit_log and update_queue changes take effect when certgate is restarted"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_normalised() {
        let colons = "AB:".repeat(31) + "AB";
        assert_eq!(parse_fingerprint(&colons), Some("ab".repeat(32)));
        assert_eq!(parse_fingerprint("xyz"), None);
        let fp = [7u8; 32];
        assert_eq!(unhex32(&hex32(&fp)), Some(fp));
    }

    #[test]
    fn records_decode_with_missing_fields() {
        let d = Device::decode(br#"{"fingerprint":"ab","status":"blocked"}"#)
            .unwrap_or_else(|_| Device::bare("x".into(), DeviceStatus::Pending));
        assert_eq!(d.status, DeviceStatus::Blocked);
        assert!(Device::decode(b"garbage").is_err());
    }
}
