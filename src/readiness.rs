//! The readiness report: how each listener's clients authenticate, per
//! status and reason over a chosen window, which devices and sources would
//! be refused if client certificates were enforced, and which clients
//! still speak TLS 1.0/1.1.
//!
//! Handshakes send events through a bounded queue to one task (they never
//! wait; a full queue drops the event and counts it); the task keeps
//! per-minute counts for a week and the latest state of each client.
//!
//! With a shared registry (PostgreSQL) the task also writes what changed
//! to the database every [`FLEET_EVERY`], per instance, and a report is
//! made from every instance's rows: the readiness of the fleet behind the
//! balancer, whichever gateway is asked.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::admission::Failure;
use crate::registry::postgres::readiness::{EntryRow, FleetReadiness, MinuteRow};
use tokio::sync::{mpsc, oneshot};

/// How often an instance writes its readiness rows to the shared registry.
pub(crate) const FLEET_EVERY: Duration = Duration::from_secs(2);

/// How a client authenticated (or failed to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    /// A valid, approved certificate.
    Authenticated,
    /// A CA-valid certificate of a device not approved (manual approval).
    Unapproved,
    /// A CA-valid certificate of a blocked device.
    Blocked,
    /// No certificate.
    NoCredentials,
    /// A certificate that failed validation, or a failed handshake.
    Failed,
    /// A TLS stack too old for any TLS 1.2 AEAD gateway (TLS 1.0/1.1, or
    /// TLS 1.2 with CBC suites only): the agent needs an upgrade.
    UpgradeRequired,
}

impl Status {
    /// All statuses, in report order.
    pub(crate) const ALL: [Status; 6] = [
        Status::Authenticated,
        Status::Unapproved,
        Status::Blocked,
        Status::NoCredentials,
        Status::Failed,
        Status::UpgradeRequired,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Authenticated => "authenticated",
            Status::Unapproved => "unapproved",
            Status::Blocked => "blocked",
            Status::NoCredentials => "no_credentials",
            Status::Failed => "failed",
            Status::UpgradeRequired => "upgrade_required",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One classified connection attempt.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    /// Listener name.
    pub listener: Arc<str>,
    /// Classification.
    pub status: Status,
    /// Why it failed or was refused; `None` for authenticated / no
    /// credentials (reported as `none`).
    pub reason: Option<Failure>,
    /// Source address.
    pub peer: IpAddr,
    /// Certificate fingerprint, when a certificate was presented.
    pub fingerprint: Option<String>,
    /// Certificate subject, when known.
    pub subject: Option<String>,
    /// Highest version offered by a legacy (TLS 1.0/1.1) client.
    pub legacy_version: Option<String>,
    /// Unix seconds.
    pub at: i64,
}

/// A client as last seen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Client {
    /// Certificate fingerprint, when a certificate was presented.
    pub fingerprint: Option<String>,
    /// Certificate subject.
    pub subject: Option<String>,
    /// Latest source address.
    pub peer: String,
    /// Latest classification.
    pub status: Status,
    /// Latest reason.
    pub reason: Cow<'static, str>,
    /// Connection attempts seen.
    pub attempts: u64,
    /// Unix seconds.
    pub last_seen: i64,
    /// Refused already, whatever the mode: an admin blocked the device,
    /// and a block is enforced in observe mode too. The other entries
    /// are admitted in observe mode and would be refused by enforcing.
    pub refused_now: bool,
    /// The gateway that saw the latest attempt (with a shared registry).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
}

/// A source whose TLS stack needs an upgrade: it offered only TLS 1.0/1.1
/// (or SSL), or TLS 1.2 with CBC suites only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LegacySource {
    /// Source address.
    pub peer: String,
    /// Highest version it offered, e.g. `TLS 1.0`, or `TLS 1.2 with CBC
    /// suites only`.
    pub version: String,
    /// Attempts seen.
    pub attempts: u64,
    /// Unix seconds.
    pub last_seen: i64,
}

/// A source whose TLS stack needs a server certificate of a key type the
/// listener does not serve for the name it asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NeedsSource {
    /// Source address.
    pub peer: String,
    /// The key type it needs: `ECDSA`, `RSA` or `Ed25519`.
    pub needs: Cow<'static, str>,
    /// Attempts seen.
    pub attempts: u64,
    /// Unix seconds.
    pub last_seen: i64,
}

/// How many sources a certificate of one more key type would admit.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WouldAdmit {
    /// The key type to add.
    pub key_type: &'static str,
    /// Distinct sources in the window that needed it.
    pub sources: u64,
}

/// Count and share of one status.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Share {
    /// Status.
    pub status: Status,
    /// Connection attempts in the window.
    pub count: u64,
    /// Percentage of all attempts in the window.
    pub percent: f64,
}

/// The readiness report of one listener.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// Listener.
    pub listener: String,
    /// Its client-auth mode now: in `required` the clients listed are
    /// refused now; in `observe` they would be refused by enforcing.
    pub mode: &'static str,
    /// Window, seconds.
    pub window_seconds: i64,
    /// Connection attempts in the window.
    pub total: u64,
    /// Per status.
    pub by_status: Vec<Share>,
    /// Failed attempts by reason.
    pub failed_reasons: Vec<(String, u64)>,
    /// Clients (devices by fingerprint, or sources without a certificate)
    /// that `mode = "required"` with the current approval setting would
    /// refuse, by their latest attempt in the window.
    pub would_refuse: Vec<Client>,
    /// Sources that offered nothing newer than TLS 1.1.
    pub legacy_sources: Vec<LegacySource>,
    /// Sources refused because the name has no certificate of the key type
    /// their TLS stack needs.
    pub needs_certificate: Vec<NeedsSource>,
    /// Per missing key type: how many of those sources adding it would admit.
    pub would_admit: Vec<WouldAdmit>,
    /// The gateways whose attempts are counted (with a shared registry;
    /// empty: this one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<String>,
}

const MINUTES_KEPT: usize = 7 * 24 * 60;
const MAX_CLIENTS: usize = 100_000;

/// Counts per status.
type Counts = [u64; Status::ALL.len()];

#[derive(Default)]
struct ListenerData {
    /// (minute, counts per status, failed reasons)
    minutes: VecDeque<(i64, Counts, HashMap<Cow<'static, str>, u64>)>,
    clients: HashMap<String, Client>,
    legacy: HashMap<IpAddr, LegacySource>,
    needs: HashMap<IpAddr, NeedsSource>,
    /// What changed since the last write to the shared registry (only
    /// kept when there is one).
    dirty: Option<Dirty>,
}

#[derive(Default)]
struct Dirty {
    minutes: HashSet<i64>,
    clients: HashSet<String>,
    legacy: HashSet<IpAddr>,
    needs: HashSet<IpAddr>,
}

enum Command {
    Report {
        listener: String,
        window: i64,
        reply: oneshot::Sender<Option<Report>>,
    },
}

/// Work for the task that talks to the shared registry, in order: a
/// report's read comes after the writes queued before it.
enum FleetJob {
    Write(Vec<MinuteRow>, Vec<EntryRow>),
    Report {
        listener: String,
        window: i64,
        /// This instance's own report, answered if the database cannot be
        /// read.
        local: Option<Box<Report>>,
        reply: oneshot::Sender<Option<Report>>,
    },
}

/// Handle to the readiness tracker; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Readiness {
    events: mpsc::Sender<Event>,
    commands: mpsc::Sender<Command>,
    dropped: Counter,
}

impl Readiness {
    /// Starts the tracker task; with `fleet`, the counts are shared with
    /// the other instances of the registry.
    pub(crate) fn start(dropped: Counter, fleet: Option<Arc<FleetReadiness>>) -> Readiness {
        let (events, mut events_rx) = mpsc::channel::<Event>(16_384);
        let (commands, mut commands_rx) = mpsc::channel::<Command>(16);
        let jobs = fleet.map(|f| {
            let (tx, rx) = mpsc::channel::<FleetJob>(8);
            tokio::spawn(fleet_task(f, rx));
            tx
        });
        tokio::spawn(async move {
            let mut data: HashMap<Arc<str>, ListenerData> = HashMap::new();
            let mut tick = tokio::time::interval(FLEET_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    c = commands_rx.recv() => match c {
                        Some(Command::Report { listener, window, reply }) => {
                            let local = data
                                .iter()
                                .find(|(k, _)| k.as_ref() == listener)
                                .map(|(_, d)| report(&listener, d, window));
                            match &jobs {
                                None => {
                                    let _ = reply.send(local);
                                }
                                Some(jobs) => {
                                    flush(&mut data, jobs);
                                    let job = FleetJob::Report { listener, window, local: local.map(Box::new), reply };
                                    if let Err(mpsc::error::TrySendError::Full(FleetJob::Report { local, reply, .. })) = jobs.try_send(job) {
                                        let _ = reply.send(local.map(|b| *b));
                                    }
                                }
                            }
                        }
                        None => return,
                    },
                    e = events_rx.recv() => match e {
                        Some(e) => {
                            let d = data.entry(e.listener.clone()).or_insert_with(|| ListenerData {
                                dirty: jobs.as_ref().map(|_| Dirty::default()),
                                ..ListenerData::default()
                            });
                            add(d, e);
                        }
                        None => return,
                    },
                    _ = tick.tick(), if jobs.is_some() => {
                        if let Some(jobs) = &jobs {
                            flush(&mut data, jobs);
                        }
                    }
                }
            }
        });
        Readiness {
            events,
            commands,
            dropped,
        }
    }

    /// Records an event; never waits (a full queue drops it, counted).
    pub(crate) fn record(&self, e: Event) {
        if self.events.try_send(e).is_err() {
            self.dropped.inc();
        }
    }

    /// The report of `listener` over the last `window` seconds; `None` when
    /// the listener has seen no client.
    pub(crate) async fn report(&self, listener: &str, window: i64) -> Option<Report> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Report {
                listener: listener.to_string(),
                window,
                reply,
            })
            .await
            .ok()?;
        rx.await.ok().flatten()
    }
}

/// Queues what changed on every listener for the shared registry; kept
/// for the next flush when the queue is full (the database is slow).
fn flush(data: &mut HashMap<Arc<str>, ListenerData>, jobs: &mpsc::Sender<FleetJob>) {
    let Ok(permit) = jobs.try_reserve() else {
        return;
    };
    let mut minutes = Vec::new();
    let mut entries = Vec::new();
    for (name, d) in data.iter_mut() {
        let Some(dirty) = d.dirty.take() else {
            continue;
        };
        for (m, counts, reasons) in d
            .minutes
            .iter()
            .filter(|(m, _, _)| dirty.minutes.contains(m))
        {
            minutes.push(MinuteRow {
                instance: String::new(),
                listener: name.to_string(),
                minute: *m,
                counts: serde_json::to_string(counts).unwrap_or_else(|_| "[]".into()),
                reasons: serde_json::to_string(reasons).unwrap_or_else(|_| "{}".into()),
            });
        }
        let entry =
            |kind: &str, key: String, doc: serde_json::Result<String>, last_seen: i64| EntryRow {
                instance: String::new(),
                listener: name.to_string(),
                kind: kind.into(),
                key,
                doc: doc.unwrap_or_else(|_| "{}".into()),
                last_seen,
            };
        for k in dirty.clients {
            if let Some(c) = d.clients.get(&k) {
                entries.push(entry("client", k, serde_json::to_string(c), c.last_seen));
            }
        }
        for ip in dirty.legacy {
            if let Some(l) = d.legacy.get(&ip) {
                entries.push(entry(
                    "legacy",
                    ip.to_string(),
                    serde_json::to_string(l),
                    l.last_seen,
                ));
            }
        }
        for ip in dirty.needs {
            if let Some(n) = d.needs.get(&ip) {
                entries.push(entry(
                    "needs",
                    ip.to_string(),
                    serde_json::to_string(n),
                    n.last_seen,
                ));
            }
        }
        d.dirty = Some(Dirty::default());
    }
    if minutes.is_empty() && entries.is_empty() {
        return;
    }
    permit.send(FleetJob::Write(minutes, entries));
}

/// Writes this instance's rows and makes reports from every instance's.
async fn fleet_task(fleet: Arc<FleetReadiness>, mut jobs: mpsc::Receiver<FleetJob>) {
    while let Some(job) = jobs.recv().await {
        let f = fleet.clone();
        match job {
            FleetJob::Write(minutes, entries) => {
                // A failed write is logged; the next change of the same
                // minute or client writes its whole value again.
                let _ = tokio::task::spawn_blocking(move || f.write(&minutes, &entries)).await;
            }
            FleetJob::Report {
                listener,
                window,
                local,
                reply,
            } => {
                let since = crate::clock::now_unix() - window;
                let l = listener.clone();
                let read = tokio::task::spawn_blocking(move || f.read(&l, since)).await;
                let r = match read {
                    Ok(Ok((minutes, entries))) if !minutes.is_empty() || !entries.is_empty() => {
                        let (d, instances) = merged(minutes, entries);
                        let mut r = report(&listener, &d, window);
                        r.instances = instances;
                        Some(r)
                    }
                    Ok(Ok(_)) => local.map(|b| *b),
                    Ok(Err(e)) => {
                        warn!(error = %e, listener = %listener,
                            "readiness of the other gateways cannot be read; this gateway's own report is answered");
                        local.map(|b| *b)
                    }
                    Err(_) => local.map(|b| *b),
                };
                let _ = reply.send(r);
            }
        }
    }
}

/// Every instance's rows as one listener's data: counts added per
/// minute, each client's attempts added and its latest state kept.
fn merged(minutes: Vec<MinuteRow>, entries: Vec<EntryRow>) -> (ListenerData, Vec<String>) {
    let mut instances: Vec<String> = Vec::new();
    let mut note = |i: &str| {
        if !instances.iter().any(|x| x == i) {
            instances.push(i.to_string());
        }
    };
    let mut by_minute: BTreeMap<i64, (Counts, HashMap<Cow<'static, str>, u64>)> = BTreeMap::new();
    for m in minutes {
        note(&m.instance);
        let counts: Vec<u64> = serde_json::from_str(&m.counts).unwrap_or_default();
        let reasons: HashMap<String, u64> = serde_json::from_str(&m.reasons).unwrap_or_default();
        let (c, r) = by_minute.entry(m.minute).or_default();
        for (a, b) in c.iter_mut().zip(counts) {
            *a += b;
        }
        for (k, v) in reasons {
            *r.entry(Cow::Owned(k)).or_default() += v;
        }
    }
    let mut d = ListenerData {
        minutes: by_minute.into_iter().map(|(m, (c, r))| (m, c, r)).collect(),
        ..ListenerData::default()
    };
    for e in entries {
        note(&e.instance);
        match e.kind.as_str() {
            "client" => {
                let Ok(mut c) = serde_json::from_str::<Client>(&e.doc) else {
                    continue;
                };
                c.instance = e.instance;
                match d.clients.entry(e.key) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(c);
                    }
                    std::collections::hash_map::Entry::Occupied(mut o) => {
                        let have = o.get_mut();
                        let attempts = have.attempts + c.attempts;
                        let subject = have.subject.clone();
                        if c.last_seen > have.last_seen {
                            *have = c;
                        }
                        have.attempts = attempts;
                        if have.subject.is_none() {
                            have.subject = subject;
                        }
                    }
                }
            }
            "legacy" => {
                let (Ok(ip), Ok(l)) = (
                    e.key.parse::<IpAddr>(),
                    serde_json::from_str::<LegacySource>(&e.doc),
                ) else {
                    continue;
                };
                d.legacy
                    .entry(ip)
                    .and_modify(|have| {
                        have.attempts += l.attempts;
                        if l.last_seen > have.last_seen {
                            have.last_seen = l.last_seen;
                            have.version = l.version.clone();
                        }
                    })
                    .or_insert(l);
            }
            "needs" => {
                let (Ok(ip), Ok(n)) = (
                    e.key.parse::<IpAddr>(),
                    serde_json::from_str::<NeedsSource>(&e.doc),
                ) else {
                    continue;
                };
                d.needs
                    .entry(ip)
                    .and_modify(|have| {
                        have.attempts += n.attempts;
                        if n.last_seen > have.last_seen {
                            have.last_seen = n.last_seen;
                            have.needs = n.needs.clone();
                        }
                    })
                    .or_insert(n);
            }
            _ => {}
        }
    }
    instances.sort();
    (d, instances)
}

/// The reason as reported: its label, `none` without one.
fn label(reason: Option<Failure>) -> &'static str {
    reason.map_or("none", Failure::as_str)
}

fn add(d: &mut ListenerData, e: Event) {
    let minute = e.at.div_euclid(60);
    if d.minutes.back().is_none_or(|(m, _, _)| *m != minute) {
        d.minutes
            .push_back((minute, [0; Status::ALL.len()], HashMap::new()));
        while d.minutes.len() > MINUTES_KEPT {
            d.minutes.pop_front();
        }
    }
    if let Some((_, counts, reasons)) = d.minutes.back_mut() {
        counts[e.status.index()] += 1;
        if matches!(e.status, Status::Failed | Status::UpgradeRequired) {
            *reasons.entry(Cow::Borrowed(label(e.reason))).or_default() += 1;
        }
    }
    if let Some(dirty) = &mut d.dirty {
        dirty.minutes.insert(minute);
    }
    if let Some(kind) = e.reason.and_then(Failure::missing_key_type) {
        let n = d.needs.entry(e.peer).or_insert_with(|| NeedsSource {
            peer: e.peer.to_string(),
            needs: Cow::Borrowed(kind),
            attempts: 0,
            last_seen: e.at,
        });
        n.needs = Cow::Borrowed(kind);
        n.attempts += 1;
        n.last_seen = e.at;
        if let Some(dirty) = &mut d.dirty {
            dirty.needs.insert(e.peer);
        }
    }
    // A TLS 1.2 offer of CBC suites only needs an agent upgrade just as a
    // TLS 1.0 one does: listed with the legacy sources.
    let legacy_version = e.legacy_version.clone().or_else(|| {
        (e.reason == Some(Failure::LegacyCbcOnly))
            .then(|| "TLS 1.2 with CBC suites only".to_string())
    });
    if let Some(v) = &legacy_version {
        let l = d.legacy.entry(e.peer).or_insert_with(|| LegacySource {
            peer: e.peer.to_string(),
            version: v.clone(),
            attempts: 0,
            last_seen: e.at,
        });
        l.version = v.clone();
        l.attempts += 1;
        l.last_seen = e.at;
        if let Some(dirty) = &mut d.dirty {
            dirty.legacy.insert(e.peer);
        }
    }
    // A device is one client whatever address it comes from; without a
    // certificate the source address is all we have.
    let key = e
        .fingerprint
        .clone()
        .unwrap_or_else(|| format!("addr:{}", e.peer));
    if let Some(dirty) = &mut d.dirty {
        dirty.clients.insert(key.clone());
    }
    let c = d.clients.entry(key).or_insert_with(|| Client {
        fingerprint: e.fingerprint.clone(),
        subject: None,
        peer: String::new(),
        status: e.status,
        reason: Cow::Borrowed(label(e.reason)),
        attempts: 0,
        last_seen: e.at,
        refused_now: false,
        instance: String::new(),
    });
    c.peer = e.peer.to_string();
    c.status = e.status;
    c.refused_now = e.status == Status::Blocked;
    c.reason = Cow::Borrowed(label(e.reason));
    // A source address is not a device: it never takes a certificate's
    // subject (several devices may share it, behind NAT).
    if e.fingerprint.is_some() && e.subject.is_some() {
        c.subject = e.subject;
    }
    c.attempts += 1;
    c.last_seen = e.at;
    if d.clients.len() > MAX_CLIENTS {
        // Forget the tenth seen longest ago.
        let mut seen: Vec<i64> = d.clients.values().map(|c| c.last_seen).collect();
        seen.sort_unstable();
        let cut = seen[MAX_CLIENTS / 10];
        d.clients.retain(|_, c| c.last_seen > cut);
        d.legacy.retain(|_, l| l.last_seen > cut);
        d.needs.retain(|_, n| n.last_seen > cut);
    }
}

fn report(listener: &str, d: &ListenerData, window: i64) -> Report {
    let now = crate::clock::now_unix();
    let since = now - window;
    let first_minute = since.div_euclid(60);
    let mut counts = [0u64; Status::ALL.len()];
    let mut reasons: HashMap<&str, u64> = HashMap::new();
    for (_, c, r) in d.minutes.iter().filter(|(m, _, _)| *m >= first_minute) {
        for (i, v) in c.iter().enumerate() {
            counts[i] += v;
        }
        for (k, v) in r {
            *reasons.entry(k.as_ref()).or_default() += v;
        }
    }
    let total: u64 = counts.iter().sum();
    let by_status = Status::ALL
        .iter()
        .map(|s| Share {
            status: *s,
            count: counts[s.index()],
            percent: if total == 0 {
                0.0
            } else {
                (counts[s.index()] as f64 * 1000.0 / total as f64).round() / 10.0
            },
        })
        .collect();
    let mut failed_reasons: Vec<(String, u64)> = reasons
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    failed_reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut would_refuse: Vec<Client> = d
        .clients
        .values()
        .filter(|c| c.last_seen >= since && c.status != Status::Authenticated)
        .cloned()
        .collect();
    would_refuse.sort_by(|a, b| {
        (a.status as u8, &a.peer, &a.fingerprint).cmp(&(b.status as u8, &b.peer, &b.fingerprint))
    });
    let mut legacy_sources: Vec<LegacySource> = d
        .legacy
        .values()
        .filter(|l| l.last_seen >= since)
        .cloned()
        .collect();
    legacy_sources.sort_by(|a, b| a.peer.cmp(&b.peer));
    let mut needs_certificate: Vec<NeedsSource> = d
        .needs
        .values()
        .filter(|n| n.last_seen >= since)
        .cloned()
        .collect();
    needs_certificate.sort_by(|a, b| a.peer.cmp(&b.peer));
    let would_admit = ["ECDSA", "RSA", "Ed25519"]
        .into_iter()
        .filter_map(|k| {
            let n = needs_certificate.iter().filter(|s| s.needs == k).count() as u64;
            (n > 0).then_some(WouldAdmit {
                key_type: k,
                sources: n,
            })
        })
        .collect();
    Report {
        listener: listener.to_string(),
        mode: "",
        window_seconds: window,
        total,
        by_status,
        failed_reasons,
        would_refuse,
        legacy_sources,
        needs_certificate,
        would_admit,
        instances: Vec::new(),
    }
}
