//! The shared tables and their versioned migrations. Every instance runs
//! them at start (one at a time, under an advisory lock), and
//! `certgate registry migrate` runs them alone.
//!
//! - `certgate_meta`: `version`, the change counter. Every transaction
//!   that writes a device takes the next number while holding the row's
//!   lock, so numbers are committed in order: an instance that has read
//!   every change up to N has missed none below it.
//! - `certgate_devices`: device id → the device (status, label, lineage)
//!   as JSON without its handshake counters, the version that last wrote
//!   it, and a tombstone (so a forget reaches other instances too).
//! - `certgate_observations`: per certificate and instance, what that
//!   instance saw (first/last seen, last peer, connections, refusals).
//!   Each instance writes only its own rows, whole (a retried write after
//!   an outage cannot count twice); readers add them up.
//! - `certgate_readiness_minutes`, `certgate_readiness_entries` (schema
//!   2): each instance's readiness counts per listener and minute, and
//!   its latest view of each client and legacy source, so the report on
//!   any instance covers the fleet.
//! - `certgate_audit`: every admin change, with the instance that made it;
//!   the JSON line exactly as the audit log file has it (`line::jsonb`
//!   to query it), so a copy back to a file is byte for byte.

use super::super::StoreError;

/// The schema this certgate reads and writes.
pub(crate) const LATEST: i32 = 2;

/// Migrations, in order: index N brings schema N to N + 1.
const MIGRATIONS: [&str; LATEST as usize] = [
    r#"
CREATE TABLE certgate_meta (key text PRIMARY KEY, value bigint NOT NULL);
INSERT INTO certgate_meta (key, value) VALUES ('version', 0);
CREATE TABLE certgate_devices (
    id text PRIMARY KEY,
    doc jsonb NOT NULL,
    version bigint NOT NULL,
    deleted boolean NOT NULL DEFAULT false
);
CREATE INDEX certgate_devices_by_version ON certgate_devices (version);
CREATE TABLE certgate_observations (
    fingerprint text NOT NULL,
    instance text NOT NULL,
    first_seen bigint,
    last_seen bigint,
    last_peer text,
    connections bigint NOT NULL DEFAULT 0,
    refusals jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (fingerprint, instance)
);
CREATE TABLE certgate_audit (
    seq bigserial PRIMARY KEY,
    time bigint NOT NULL,
    instance text NOT NULL,
    line text NOT NULL
);
"#,
    r#"
CREATE TABLE certgate_readiness_minutes (
    listener text NOT NULL,
    minute bigint NOT NULL,
    instance text NOT NULL,
    counts text NOT NULL,
    reasons text NOT NULL,
    PRIMARY KEY (listener, minute, instance)
);
CREATE TABLE certgate_readiness_entries (
    listener text NOT NULL,
    kind text NOT NULL,
    key text NOT NULL,
    instance text NOT NULL,
    doc text NOT NULL,
    last_seen bigint NOT NULL,
    PRIMARY KEY (listener, kind, key, instance)
);
CREATE INDEX certgate_readiness_entries_by_time ON certgate_readiness_entries (listener, last_seen);
"#,
];

/// Any number unlikely to be used by another application sharing the
/// database: migrations of several instances starting at once queue on it.
const MIGRATION_LOCK: i64 = 0x6365_7274_6761_7465; // "certgate"

/// Brings the database to [`LATEST`]; returns (from, to). A database of a
/// later schema (a newer certgate migrated it) is refused, not misread.
pub(crate) fn migrate(client: &mut postgres::Client) -> Result<(i32, i32), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS certgate_schema (version integer NOT NULL)")?;
    let from: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM certgate_schema", &[])?
        .get(0);
    if from > LATEST {
        tx.rollback()?;
        return Ok((from, from));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO certgate_schema (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )?;
    }
    tx.commit()?;
    Ok((from, LATEST))
}

/// The error for a database a newer certgate migrated.
pub(crate) fn too_new(found: i32) -> StoreError {
    StoreError::Database {
        message: format!(
            "the database has registry schema {found}, written by a newer certgate (this one \
             reads schema {LATEST}); upgrade this gateway to the version the others run"
        ),
    }
}
