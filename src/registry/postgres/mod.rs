//! The PostgreSQL device store: one registry shared by several gateways.
//!
//! Handshakes still read only the in-memory snapshot; this store is what
//! the writer commits to and reads other instances' changes from.
//!
//! Why the synchronous `postgres` client (tokio-postgres underneath): the
//! store trait is synchronous (redb is) and the writer already runs every
//! store call off the async workers, one at a time; a pool (sqlx,
//! deadpool) would buy nothing for one writer and one listener per
//! instance, and the migrations are a short list of SQL in `schema`.
//!
//! Consistency: a device's record (status, label, lineage) is written
//! only if its version is the one this instance last read, so a flush of
//! handshake counters or an admin change made on stale state can never
//! overwrite another instance's block; a conflicting admin change is
//! refused (the writer reads the newer state and tries again), a
//! conflicting handshake change gives way to the stored one.
//!
//! Fail static: when the database cannot be reached the writer keeps its
//! changes and retries; `registry.path` keeps a local copy of what was
//! last read or written, which an instance that starts during an outage
//! serves from.
//!
//! # Layout
//! - `connect`: connection string, timeouts, TLS.
//! - `schema`: the tables and their migrations.
//! - `observed`: handshake counters, per instance, added up.
//! - `listen`: the LISTEN thread that wakes the writer.
//! - `readiness`: the fleet's readiness rows.

mod connect;
mod listen;
mod observed;
pub(crate) mod readiness;
pub(crate) mod schema;

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use postgres::Client;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::PostgresSettings;

use super::store::{DeviceStore, Remote, RemoteChange, StoreError};
use super::{Device, RedbStore};
use observed::{Observed, without_counters};

/// The channel other instances' changes are announced on.
pub(crate) const CHANNEL: &str = "certgate_devices";

/// What this instance knows of the shared tables.
#[derive(Default)]
struct Known {
    /// The highest change version read.
    seen: i64,
    /// Device id → (version, hash of its record without counters).
    devices: HashMap<String, (i64, u64)>,
    /// Fingerprint → the counters the writer held when they were last
    /// written or read (what it counted since is the difference).
    base: HashMap<String, Observed>,
    /// Fingerprint → this instance's own row.
    mine: HashMap<String, Observed>,
}

/// The PostgreSQL store.
pub(crate) struct PgStore {
    settings: PostgresSettings,
    client: Mutex<Option<Client>>,
    known: Mutex<Known>,
    /// Read everything again at the next sync (a reconnect: changes sent
    /// while disconnected were not announced).
    needs_full: Arc<AtomicBool>,
    last_full: Mutex<Instant>,
    /// The local copy at `registry.path`.
    cache: Mutex<Option<RedbStore>>,
    /// Bumped when the writer should sync (a notification, the periodic
    /// poll, a write that met a newer record).
    wake: Arc<watch::Sender<u64>>,
    listening: AtomicBool,
    /// A database error was reported; the next success says so.
    failing: AtomicBool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A transaction failed, or met a record newer than the one it changes.
enum TxError {
    Db(postgres::Error),
    Conflict(String),
}

impl From<postgres::Error> for TxError {
    fn from(e: postgres::Error) -> TxError {
        TxError::Db(e)
    }
}

/// What a committed write changes in [`Known`].
#[derive(Default)]
struct Written {
    devices: Vec<(String, Option<(i64, u64)>)>,
    base: Vec<(String, Observed)>,
    mine: Vec<(String, Observed)>,
    conflicts: usize,
}

fn doc_hash(doc: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    doc.hash(&mut h);
    h.finish()
}

impl PgStore {
    /// Connects, runs the migrations and opens the local copy. When the
    /// database cannot be reached and a local copy exists, the store opens
    /// on it (the gateway serves what it last knew) and connects later.
    /// `cache_path`: the local copy (`None` for a one-off command such as
    /// `registry copy`, which must reach the database).
    pub(crate) fn open(
        settings: &PostgresSettings,
        cache_path: Option<&std::path::Path>,
    ) -> Result<PgStore, StoreError> {
        let had_cache = cache_path.is_some_and(std::path::Path::exists);
        let store = PgStore {
            settings: settings.clone(),
            client: Mutex::new(None),
            known: Mutex::new(Known::default()),
            needs_full: Arc::new(AtomicBool::new(true)),
            last_full: Mutex::new(Instant::now()),
            cache: Mutex::new(None),
            wake: Arc::new(watch::Sender::new(0)),
            listening: AtomicBool::new(false),
            failing: AtomicBool::new(false),
        };
        match PgStore::migrate(settings) {
            Ok(_) => {}
            Err(e @ StoreError::Database { .. }) if had_cache && !is_schema(&e) => {
                warn!(error = %e, cache = %cache_path.map(|p| p.display().to_string()).unwrap_or_default(),
                    "the shared registry cannot be reached: serving the devices of the local copy until it can");
                store.failing.store(true, Ordering::Release);
            }
            Err(StoreError::Database { message }) if !had_cache => {
                return Err(StoreError::Database {
                    message: format!(
                        "{message}; there is no local copy{} to start from (a gateway's first start needs the database)",
                        cache_path
                            .map(|p| format!(" at {}", p.display()))
                            .unwrap_or_default()
                    ),
                });
            }
            Err(e) => return Err(e),
        }
        if let Some(path) = cache_path {
            *store.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(RedbStore::open(path)?);
        }
        Ok(store)
    }

    /// Runs the schema migrations on a connection of their own; returns
    /// (from, to).
    pub(crate) fn migrate(settings: &PostgresSettings) -> Result<(i32, i32), StoreError> {
        let mut client = connect::connect(settings)?;
        let (from, to) =
            schema::migrate(&mut client).map_err(|e| connect::unreachable(settings, &e))?;
        if from > schema::LATEST {
            return Err(schema::too_new(from));
        }
        if from != to {
            info!(from, to, "shared registry schema migrated");
        }
        Ok((from, to))
    }

    /// For `certgate check`: whether the database answers, and its schema
    /// (0: not migrated yet). Changes nothing.
    pub(crate) fn probe(settings: &PostgresSettings) -> Result<i32, StoreError> {
        let mut c = connect::connect(settings)?;
        let row = c
            .query_one(
                "SELECT CASE WHEN to_regclass('certgate_schema') IS NULL THEN 0 \
                 ELSE (SELECT coalesce(max(version), 0) FROM certgate_schema) END",
                &[],
            )
            .map_err(|e| connect::unreachable(settings, &e))?;
        Ok(row.get(0))
    }

    fn db(&self, e: &postgres::Error) -> StoreError {
        connect::unreachable(&self.settings, e)
    }

    /// Runs `op` on the connection, connecting first when there is none
    /// (then reading this instance's own rows again: they are the totals
    /// its next writes add to). A connection that broke is dropped.
    fn with_client<T>(
        &self,
        op: impl FnOnce(&mut Client, &mut Known) -> Result<T, TxError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = !matches!(&*guard, Some(c) if !c.is_closed());
        if fresh {
            *guard = None;
            let mut c = connect::connect(&self.settings).inspect_err(|_| self.note_failure())?;
            known.mine = self
                .own_rows(&mut c)
                .map_err(|e| self.db(&e))
                .inspect_err(|_| self.note_failure())?;
            self.needs_full.store(true, Ordering::Release);
            *guard = Some(c);
        }
        let Some(client) = guard.as_mut() else {
            return Err(StoreError::Database {
                message: "no connection".into(),
            });
        };
        let r = op(client, &mut known);
        if client.is_closed() {
            *guard = None;
        }
        match r {
            Ok(v) => {
                if self.failing.swap(false, Ordering::AcqRel) {
                    info!("the shared registry can be reached again");
                }
                Ok(v)
            }
            Err(TxError::Db(e)) => {
                self.note_failure();
                Err(self.db(&e))
            }
            Err(TxError::Conflict(id)) => Err(StoreError::Conflict { id }),
        }
    }

    fn note_failure(&self) {
        self.failing.store(true, Ordering::Release);
    }

    fn own_rows(&self, c: &mut Client) -> Result<HashMap<String, Observed>, postgres::Error> {
        let rows = c.query(
            "SELECT fingerprint, first_seen, last_seen, last_peer, connections, refusals::text \
             FROM certgate_observations WHERE instance = $1",
            &[&self.settings.instance],
        )?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), observed_row(r, 1)))
            .collect())
    }

    /// Everything, in one consistent read: the devices with every
    /// instance's counters added up.
    fn read_all(
        &self,
        c: &mut Client,
        known: &mut Known,
    ) -> Result<(Vec<Device>, Vec<StoreError>), TxError> {
        let mut tx = c
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let seen: i64 = tx
            .query_one("SELECT value FROM certgate_meta WHERE key = 'version'", &[])?
            .get(0);
        let docs = tx.query(
            "SELECT id, doc::text, version FROM certgate_devices WHERE NOT deleted",
            &[],
        )?;
        let rows = tx.query(
            "SELECT fingerprint, instance, first_seen, last_seen, last_peer, connections, \
             refusals::text FROM certgate_observations",
            &[],
        )?;
        tx.commit()?;
        let mut fleet: HashMap<String, Observed> = HashMap::new();
        let mut mine = HashMap::new();
        for r in &rows {
            let fp: String = r.get(0);
            let instance: String = r.get(1);
            let o = observed_row(r, 2);
            fleet.entry(fp.clone()).or_default().merge(&o);
            if instance == self.settings.instance {
                mine.insert(fp, o);
            }
        }
        let mut fresh = Known {
            seen,
            mine,
            ..Known::default()
        };
        let mut devices = Vec::with_capacity(docs.len());
        let mut problems = Vec::new();
        for r in &docs {
            let id: String = r.get(0);
            match self.decode_row(r, &fleet, &mut fresh) {
                Ok(d) => devices.push(d),
                Err(message) => problems.push(StoreError::Corrupt {
                    path: self.settings.url_source.clone().into(),
                    key: id,
                    message,
                }),
            }
        }
        *known = fresh;
        Ok((devices, problems))
    }

    /// A device row (id, doc, version) with the fleet's counters, noted
    /// in `known`.
    fn decode_row(
        &self,
        r: &postgres::Row,
        fleet: &HashMap<String, Observed>,
        known: &mut Known,
    ) -> Result<Device, String> {
        let id: String = r.get(0);
        let doc: String = r.get(1);
        let version: i64 = r.get(2);
        let mut d = Device::decode(doc.as_bytes()).map_err(|e| e.to_string())?;
        if d.id != id {
            return Err(format!("its record names device {}", d.id));
        }
        known
            .devices
            .insert(id, (version, doc_hash(&without_counters(&d).encode())));
        for c in &mut d.certificates {
            let o = fleet.get(&c.fingerprint).cloned().unwrap_or_default();
            o.set_on(c);
            known.base.insert(c.fingerprint.clone(), o);
        }
        Ok(d)
    }

    /// Writes devices (and removals) in one transaction. `strict`: a
    /// record changed elsewhere since it was read fails the whole write
    /// (an admin change); otherwise that record is left as stored and the
    /// writer is woken to read it. Audit lines go in the same transaction.
    fn write_tx(
        &self,
        c: &mut Client,
        known: &Known,
        put: &[Device],
        gone: &[(String, Vec<String>)],
        audit: &[serde_json::Value],
        strict: bool,
    ) -> Result<Written, TxError> {
        let mut tx = c.transaction()?;
        let mut out = Written::default();
        let mut version: Option<i64> = None;
        let mut next_version = |tx: &mut postgres::Transaction<'_>| -> Result<i64, TxError> {
            if let Some(v) = version {
                return Ok(v);
            }
            let v: i64 = tx
                .query_one(
                    "UPDATE certgate_meta SET value = value + 1 WHERE key = 'version' RETURNING value",
                    &[],
                )?
                .get(0);
            version = Some(v);
            Ok(v)
        };
        let mut obs = ObservationRows::default();
        for d in put {
            let doc = without_counters(d).encode();
            let hash = doc_hash(&doc);
            let text = String::from_utf8_lossy(&doc);
            let stored = match known.devices.get(&d.id) {
                Some((_, h)) if *h == hash => None,
                Some((v, _)) => {
                    let nv = next_version(&mut tx)?;
                    let n = tx.execute(
                        "UPDATE certgate_devices SET doc = $2::text::jsonb, version = $3, deleted = false \
                         WHERE id = $1 AND version = $4",
                        &[&d.id, &text, &nv, v],
                    )?;
                    Some((n, nv))
                }
                None => {
                    let nv = next_version(&mut tx)?;
                    let n = tx.execute(
                        "INSERT INTO certgate_devices (id, doc, version) VALUES ($1, $2::text::jsonb, $3) \
                         ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc, version = EXCLUDED.version, \
                         deleted = false WHERE certgate_devices.deleted",
                        &[&d.id, &text, &nv],
                    )?;
                    Some((n, nv))
                }
            };
            match stored {
                Some((0, _)) if strict => return Err(TxError::Conflict(d.id.clone())),
                Some((0, _)) => out.conflicts += 1,
                Some((_, nv)) => out.devices.push((d.id.clone(), Some((nv, hash)))),
                None => {}
            }
            for cert in &d.certificates {
                let now = Observed::of(cert);
                let base = known
                    .base
                    .get(&cert.fingerprint)
                    .cloned()
                    .unwrap_or_default();
                if now == base {
                    continue;
                }
                let mut mine = known
                    .mine
                    .get(&cert.fingerprint)
                    .cloned()
                    .unwrap_or_default();
                mine.add_since(&now, &base);
                obs.push(&cert.fingerprint, &mine);
                out.mine.push((cert.fingerprint.clone(), mine));
                out.base.push((cert.fingerprint.clone(), now));
            }
        }
        for (id, fingerprints) in gone {
            let Some((v, _)) = known.devices.get(id) else {
                if strict {
                    return Err(TxError::Conflict(id.clone()));
                }
                continue;
            };
            let nv = next_version(&mut tx)?;
            let n = tx.execute(
                "UPDATE certgate_devices SET deleted = true, version = $2 WHERE id = $1 AND version = $3",
                &[id, &nv, v],
            )?;
            match n {
                0 if strict => return Err(TxError::Conflict(id.clone())),
                0 => out.conflicts += 1,
                _ => out.devices.push((id.clone(), None)),
            }
            if strict {
                // Forgotten: its counters go with it, on every instance.
                tx.execute(
                    "DELETE FROM certgate_observations WHERE fingerprint = ANY($1)",
                    &[fingerprints],
                )?;
            }
        }
        obs.write(&mut tx, &self.settings.instance)?;
        if !audit.is_empty() {
            let times: Vec<i64> = audit
                .iter()
                .map(|l| l["time"].as_i64().unwrap_or(0))
                .collect();
            let lines: Vec<String> = audit.iter().map(|l| l.to_string()).collect();
            tx.execute(
                "INSERT INTO certgate_audit (time, instance, line) \
                 SELECT t, $2, l FROM unnest($1::int8[], $3::text[]) AS a(t, l)",
                &[&times, &self.settings.instance, &lines],
            )?;
        }
        if let Some(v) = version {
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &v.to_string()])?;
        }
        tx.commit()?;
        Ok(out)
    }

    fn apply_written(&self, known: &mut Known, w: Written) {
        for (id, v) in w.devices {
            match v {
                Some(v) => {
                    known.devices.insert(id, v);
                }
                None => {
                    known.devices.remove(&id);
                }
            }
        }
        known.base.extend(w.base);
        known.mine.extend(w.mine);
        if w.conflicts > 0 {
            // Another instance changed these records: read them.
            self.wake.send_modify(|n| *n += 1);
        }
    }

    /// Runs `f` on the local copy; a failure is logged (the database
    /// holds the truth, the copy is for starts during an outage).
    fn cached(&self, f: impl FnOnce(&RedbStore) -> Result<(), StoreError>) {
        let guard = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = guard.as_ref()
            && let Err(e) = f(c)
        {
            warn!(error = %e, "the local copy of the shared registry was not updated");
        }
    }

    /// Every device and audit line, for `registry copy`.
    pub(crate) fn export(&self) -> Result<(Vec<Device>, Vec<String>), StoreError> {
        self.with_client(|c, known| {
            let (devices, _) = self.read_all(c, known)?;
            let lines = c
                .query("SELECT line FROM certgate_audit ORDER BY seq", &[])?
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect();
            Ok((devices, lines))
        })
    }

    /// Replaces the shared registry's contents with `devices` and appends
    /// `audit` lines, in one transaction (`registry copy`): each device's
    /// counters become this instance's row.
    pub(crate) fn import(&self, devices: &[Device], audit: &[String]) -> Result<(), StoreError> {
        self.with_client(|c, known| {
            let mut tx = c.transaction()?;
            tx.batch_execute(
                "DELETE FROM certgate_devices; DELETE FROM certgate_observations; DELETE FROM certgate_audit",
            )?;
            let v: i64 = tx
                .query_one(
                    "UPDATE certgate_meta SET value = value + 1 WHERE key = 'version' RETURNING value",
                    &[],
                )?
                .get(0);
            let mut obs = ObservationRows::default();
            for chunk in devices.chunks(1000) {
                let ids: Vec<&str> = chunk.iter().map(|d| d.id.as_str()).collect();
                let docs: Vec<String> = chunk
                    .iter()
                    .map(|d| String::from_utf8_lossy(&without_counters(d).encode()).into_owned())
                    .collect();
                tx.execute(
                    "INSERT INTO certgate_devices (id, doc, version) \
                     SELECT i, d::jsonb, $3 FROM unnest($1::text[], $2::text[]) AS x(i, d)",
                    &[&ids, &docs, &v],
                )?;
                for d in chunk {
                    for cert in &d.certificates {
                        let o = Observed::of(cert);
                        if o != Observed::default() {
                            obs.push(&cert.fingerprint, &o);
                        }
                    }
                }
            }
            obs.write(&mut tx, &self.settings.instance)?;
            let times: Vec<i64> = audit
                .iter()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v["time"].as_i64())
                        .unwrap_or(0)
                })
                .collect();
            for (t, l) in times.chunks(1000).zip(audit.chunks(1000)) {
                tx.execute(
                    "INSERT INTO certgate_audit (time, instance, line) \
                     SELECT t, $2, l FROM unnest($1::int8[], $3::text[]) AS a(t, l)",
                    &[&t, &self.settings.instance, &l],
                )?;
            }
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &v.to_string()])?;
            tx.commit()?;
            *known = Known::default();
            self.needs_full.store(true, Ordering::Release);
            Ok(())
        })
    }
}

fn is_schema(e: &StoreError) -> bool {
    matches!(e, StoreError::Database { message } if message.contains("registry schema"))
}

/// A counters row from column `at` on: first_seen, last_seen, last_peer,
/// connections, refusals (JSON text).
fn observed_row(r: &postgres::Row, at: usize) -> Observed {
    let refusals: String = r.get(at + 4);
    Observed {
        first_seen: r.get(at),
        last_seen: r.get(at + 1),
        last_peer: r.get(at + 2),
        connections: u64::try_from(r.get::<_, i64>(at + 3)).unwrap_or(0),
        refusals: serde_json::from_str(&refusals).unwrap_or_default(),
    }
}

/// This instance's counter rows to write, as columns (one statement).
#[derive(Default)]
struct ObservationRows {
    fingerprint: Vec<String>,
    first_seen: Vec<Option<i64>>,
    last_seen: Vec<Option<i64>>,
    last_peer: Vec<Option<String>>,
    connections: Vec<i64>,
    refusals: Vec<String>,
}

impl ObservationRows {
    fn push(&mut self, fingerprint: &str, o: &Observed) {
        self.fingerprint.push(fingerprint.to_string());
        self.first_seen.push(o.first_seen);
        self.last_seen.push(o.last_seen);
        self.last_peer.push(o.last_peer.clone());
        self.connections
            .push(i64::try_from(o.connections).unwrap_or(i64::MAX));
        self.refusals
            .push(serde_json::to_string(&o.refusals).unwrap_or_else(|_| "{}".into()));
    }

    fn write(
        &self,
        tx: &mut postgres::Transaction<'_>,
        instance: &str,
    ) -> Result<(), postgres::Error> {
        if self.fingerprint.is_empty() {
            return Ok(());
        }
        tx.execute(
            "INSERT INTO certgate_observations \
             (fingerprint, instance, first_seen, last_seen, last_peer, connections, refusals) \
             SELECT f, $2, fs, ls, lp, n, r::jsonb \
             FROM unnest($1::text[], $3::int8[], $4::int8[], $5::text[], $6::int8[], $7::text[]) \
             AS o(f, fs, ls, lp, n, r) \
             ON CONFLICT (fingerprint, instance) DO UPDATE SET first_seen = EXCLUDED.first_seen, \
             last_seen = EXCLUDED.last_seen, last_peer = EXCLUDED.last_peer, \
             connections = EXCLUDED.connections, refusals = EXCLUDED.refusals",
            &[
                &self.fingerprint,
                &instance,
                &self.first_seen,
                &self.last_seen,
                &self.last_peer,
                &self.connections,
                &self.refusals,
            ],
        )?;
        Ok(())
    }
}

impl DeviceStore for PgStore {
    fn load(&self) -> Result<(Vec<Device>, Vec<StoreError>), StoreError> {
        match self.with_client(|c, known| self.read_all(c, known)) {
            Ok((devices, problems)) => {
                self.needs_full.store(false, Ordering::Release);
                *self.last_full.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                self.cached(|c| c.replace(&devices));
                Ok((devices, problems))
            }
            Err(e) => {
                let guard = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                match guard.as_ref() {
                    // At start, during an outage: what this instance last
                    // knew (statuses included), until the database is back.
                    Some(cache)
                        if self.known.lock().unwrap_or_else(|p| p.into_inner()).seen == 0 =>
                    {
                        warn!(error = %e, "serving the local copy of the shared registry");
                        cache.load()
                    }
                    _ => Err(e),
                }
            }
        }
    }

    fn put(&self, devices: &[Device]) -> Result<(), StoreError> {
        self.write(devices, &[])
    }

    fn delete(&self, id: &str) -> Result<bool, StoreError> {
        self.write(&[], &[id.to_string()])?;
        Ok(true)
    }

    fn write(&self, put: &[Device], removed: &[String]) -> Result<(), StoreError> {
        let gone: Vec<(String, Vec<String>)> =
            removed.iter().map(|id| (id.clone(), Vec::new())).collect();
        self.with_client(|c, known| {
            let w = self.write_tx(c, known, put, &gone, &[], false)?;
            self.apply_written(known, w);
            Ok(())
        })?;
        self.cached(|c| c.write(put, removed));
        Ok(())
    }

    fn commit(
        &self,
        put: &[Device],
        forget: &[Device],
        audit: &[serde_json::Value],
    ) -> Result<(), StoreError> {
        let gone: Vec<(String, Vec<String>)> = forget
            .iter()
            .map(|d| {
                (
                    d.id.clone(),
                    d.certificates
                        .iter()
                        .map(|c| c.fingerprint.clone())
                        .collect(),
                )
            })
            .collect();
        self.with_client(|c, known| {
            let w = self.write_tx(c, known, put, &gone, audit, true)?;
            self.apply_written(known, w);
            Ok(())
        })?;
        let ids: Vec<String> = forget.iter().map(|d| d.id.clone()).collect();
        self.cached(|c| c.write(put, &ids));
        Ok(())
    }

    fn changes(&self) -> Result<Remote, StoreError> {
        let due = self
            .last_full
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
            >= self.settings.resync_every;
        if due || self.needs_full.load(Ordering::Acquire) {
            // Connect first: a new connection asks for the full read too.
            let (devices, problems) = self.with_client(|c, known| self.read_all(c, known))?;
            for p in problems {
                warn!(problem = %p, "shared registry record skipped");
            }
            self.needs_full.store(false, Ordering::Release);
            *self.last_full.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            self.cached(|c| c.replace(&devices));
            return Ok(Remote::All(devices));
        }
        let changes = self.with_client(|c, known| {
            let rows = c.query(
                "SELECT id, doc::text, version, deleted FROM certgate_devices WHERE version > $1 \
                 ORDER BY version",
                &[&known.seen],
            )?;
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            let mut fps: Vec<String> = Vec::new();
            let mut docs = Vec::new();
            for r in &rows {
                let id: String = r.get(0);
                let version: i64 = r.get(2);
                known.seen = known.seen.max(version);
                if known.devices.get(&id).is_some_and(|(v, _)| *v >= version) {
                    // This instance's own write.
                    continue;
                }
                docs.push(r);
                if !r.get::<_, bool>(3) {
                    let doc: String = r.get(1);
                    if let Ok(d) = Device::decode(doc.as_bytes()) {
                        fps.extend(d.certificates.into_iter().map(|c| c.fingerprint));
                    }
                }
            }
            let mut fleet: HashMap<String, Observed> = HashMap::new();
            if !fps.is_empty() {
                for r in c.query(
                    "SELECT fingerprint, first_seen, last_seen, last_peer, connections, refusals::text \
                     FROM certgate_observations WHERE fingerprint = ANY($1)",
                    &[&fps],
                )? {
                    fleet
                        .entry(r.get(0))
                        .or_default()
                        .merge(&observed_row(&r, 1));
                }
            }
            let mut out = Vec::new();
            for r in docs {
                let id: String = r.get(0);
                if r.get::<_, bool>(3) {
                    known.devices.remove(&id);
                    out.push(RemoteChange::Gone(id));
                    continue;
                }
                match self.decode_row(r, &fleet, known) {
                    Ok(d) => out.push(RemoteChange::Put(d)),
                    Err(why) => warn!(device = %id, error = %why, "shared registry record skipped"),
                }
            }
            Ok(out)
        })?;
        if changes.is_empty() {
            return Ok(Remote::None);
        }
        self.cached(|c| {
            let put: Vec<Device> = changes
                .iter()
                .filter_map(|c| match c {
                    RemoteChange::Put(d) => Some(d.clone()),
                    RemoteChange::Gone(_) => None,
                })
                .collect();
            let gone: Vec<String> = changes
                .iter()
                .filter_map(|c| match c {
                    RemoteChange::Gone(id) => Some(id.clone()),
                    RemoteChange::Put(_) => None,
                })
                .collect();
            c.write(&put, &gone)
        });
        Ok(Remote::Changed(changes))
    }

    fn subscribe(&self) -> Option<watch::Receiver<u64>> {
        let rx = self.wake.subscribe();
        if !self.listening.swap(true, Ordering::AcqRel) {
            listen::spawn(
                self.settings.clone(),
                self.wake.clone(),
                self.needs_full.clone(),
            );
        }
        Some(rx)
    }
}
