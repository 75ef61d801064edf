//! The fleet's readiness rows: every instance writes its own counts per
//! listener and minute and its latest view of each client, and reads
//! everyone's for a report. Rows are whole values (a minute's counts so
//! far, a client's latest state), so a write repeated after a failure
//! cannot count twice.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use postgres::Client;
use tracing::warn;

use crate::config::PostgresSettings;

use super::super::StoreError;
use super::connect;

/// How long rows are kept (the report's longest window).
const KEEP_SECONDS: i64 = 7 * 24 * 3600;
/// How often old rows are removed.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// One instance's counts of one listener and minute.
#[derive(Debug, Clone)]
pub(crate) struct MinuteRow {
    /// The instance that counted them (filled when read).
    pub(crate) instance: String,
    /// Listener.
    pub(crate) listener: String,
    /// Unix minute.
    pub(crate) minute: i64,
    /// JSON array: attempts per status.
    pub(crate) counts: String,
    /// JSON object: failed attempts per reason.
    pub(crate) reasons: String,
}

/// One instance's latest view of a client or source.
#[derive(Debug, Clone)]
pub(crate) struct EntryRow {
    /// The instance that saw it (filled when read).
    pub(crate) instance: String,
    /// Listener.
    pub(crate) listener: String,
    /// `client`, `legacy` or `needs`.
    pub(crate) kind: String,
    /// The client's key (fingerprint or address).
    pub(crate) key: String,
    /// JSON of the entry.
    pub(crate) doc: String,
    /// Unix seconds.
    pub(crate) last_seen: i64,
}

/// The readiness tables of the shared registry, on a connection of
/// their own (a report never waits behind the device writer).
pub(crate) struct FleetReadiness {
    settings: PostgresSettings,
    client: Mutex<Option<Client>>,
    pruned: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for FleetReadiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetReadiness")
            .field("instance", &self.settings.instance)
            .finish_non_exhaustive()
    }
}

impl FleetReadiness {
    /// Connects on first use.
    pub(crate) fn new(settings: &PostgresSettings) -> FleetReadiness {
        FleetReadiness {
            settings: settings.clone(),
            client: Mutex::new(None),
            pruned: Mutex::new(None),
        }
    }

    fn with_client<T>(
        &self,
        op: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(&*guard, Some(c) if !c.is_closed()) {
            *guard = Some(connect::connect(&self.settings)?);
        }
        let Some(c) = guard.as_mut() else {
            return Err(StoreError::Database {
                message: "no connection".into(),
            });
        };
        let r = op(c);
        if c.is_closed() {
            *guard = None;
        }
        r.map_err(|e| connect::unreachable(&self.settings, &e))
    }

    /// Upserts this instance's rows.
    pub(crate) fn write(
        &self,
        minutes: &[MinuteRow],
        entries: &[EntryRow],
    ) -> Result<(), StoreError> {
        if minutes.is_empty() && entries.is_empty() {
            return Ok(());
        }
        let prune = {
            let mut p = self.pruned.lock().unwrap_or_else(|p| p.into_inner());
            let due = p.is_none_or(|t| t.elapsed() >= PRUNE_EVERY);
            if due {
                *p = Some(Instant::now());
            }
            due
        };
        let me = &self.settings.instance;
        self.with_client(|c| {
            let mut tx = c.transaction()?;
            if !minutes.is_empty() {
                let l: Vec<&str> = minutes.iter().map(|m| m.listener.as_str()).collect();
                let m: Vec<i64> = minutes.iter().map(|m| m.minute).collect();
                let n: Vec<&str> = minutes.iter().map(|m| m.counts.as_str()).collect();
                let r: Vec<&str> = minutes.iter().map(|m| m.reasons.as_str()).collect();
                tx.execute(
                    "INSERT INTO certgate_readiness_minutes (listener, minute, instance, counts, reasons) \
                     SELECT l, m, $5, n, r FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[]) AS x(l, m, n, r) \
                     ON CONFLICT (listener, minute, instance) DO UPDATE SET counts = EXCLUDED.counts, reasons = EXCLUDED.reasons",
                    &[&l, &m, &n, &r, me],
                )?;
            }
            for chunk in entries.chunks(5000) {
                let l: Vec<&str> = chunk.iter().map(|e| e.listener.as_str()).collect();
                let k: Vec<&str> = chunk.iter().map(|e| e.kind.as_str()).collect();
                let key: Vec<&str> = chunk.iter().map(|e| e.key.as_str()).collect();
                let d: Vec<&str> = chunk.iter().map(|e| e.doc.as_str()).collect();
                let t: Vec<i64> = chunk.iter().map(|e| e.last_seen).collect();
                tx.execute(
                    "INSERT INTO certgate_readiness_entries (listener, kind, key, instance, doc, last_seen) \
                     SELECT l, k, y, $6, d, t FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[]) AS x(l, k, y, d, t) \
                     ON CONFLICT (listener, kind, key, instance) DO UPDATE SET doc = EXCLUDED.doc, last_seen = EXCLUDED.last_seen",
                    &[&l, &k, &key, &d, &t, me],
                )?;
            }
            if prune {
                let cut = crate::clock::now_unix() - KEEP_SECONDS;
                tx.execute("DELETE FROM certgate_readiness_minutes WHERE minute < $1", &[&cut.div_euclid(60)])?;
                tx.execute("DELETE FROM certgate_readiness_entries WHERE last_seen < $1", &[&cut])?;
            }
            tx.commit()
        })
        .inspect_err(|e| warn!(error = %e, "readiness counts not written to the shared registry; retried"))
    }

    /// Every instance's rows of `listener` since `since` (Unix seconds).
    pub(crate) fn read(
        &self,
        listener: &str,
        since: i64,
    ) -> Result<(Vec<MinuteRow>, Vec<EntryRow>), StoreError> {
        self.with_client(|c| {
            let minutes = c
                .query(
                    "SELECT instance, minute, counts, reasons FROM certgate_readiness_minutes \
                     WHERE listener = $1 AND minute >= $2",
                    &[&listener, &since.div_euclid(60)],
                )?
                .iter()
                .map(|r| MinuteRow {
                    instance: r.get(0),
                    listener: listener.to_string(),
                    minute: r.get(1),
                    counts: r.get(2),
                    reasons: r.get(3),
                })
                .collect();
            let entries = c
                .query(
                    "SELECT instance, kind, key, doc, last_seen FROM certgate_readiness_entries \
                     WHERE listener = $1 AND last_seen >= $2",
                    &[&listener, &since],
                )?
                .iter()
                .map(|r| EntryRow {
                    instance: r.get(0),
                    listener: listener.to_string(),
                    kind: r.get(1),
                    key: r.get(2),
                    doc: r.get(3),
                    last_seen: r.get(4),
                })
                .collect();
            Ok((minutes, entries))
        })
    }
}
