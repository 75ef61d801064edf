//! Registries written before lineages (schema 1: one record per
//! certificate, keyed by fingerprint) become schema 2 (one record per
//! device, keyed by device id): each certificate becomes a device of one
//! with its status, label, counters and last change.

use serde::Deserialize;
use std::collections::BTreeMap;

use super::device::device_id;
use super::{Certificate, Device, DeviceStatus};

/// A schema-1 record, as certgate wrote it until lineages.
#[derive(Debug, Deserialize)]
struct V1 {
    fingerprint: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    serial: String,
    #[serde(default)]
    sans: Vec<String>,
    #[serde(default)]
    not_before: i64,
    #[serde(default)]
    not_after: i64,
    status: DeviceStatus,
    #[serde(default)]
    first_seen: Option<i64>,
    #[serde(default)]
    last_seen: Option<i64>,
    #[serde(default)]
    last_peer: Option<String>,
    #[serde(default)]
    connections: u64,
    #[serde(default)]
    refusals: BTreeMap<String, u64>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    changed_at: Option<i64>,
    #[serde(default)]
    changed_by: Option<String>,
}

/// Converts schema-1 records (key, JSON) into devices of one; records that
/// do not decode are returned with why, by key.
pub(crate) fn from_v1(records: Vec<(String, Vec<u8>)>) -> (Vec<Device>, Vec<(String, String)>) {
    let mut ids = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (key, bytes) in records {
        let v: V1 = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                problems.push((key, e.to_string()));
                continue;
            }
        };
        let id = device_id(&v.fingerprint, |id| ids.contains(id));
        ids.insert(id.clone());
        let mut c = Certificate::bare(v.fingerprint);
        c.subject = v.subject;
        c.issuer = v.issuer;
        c.serial = v.serial;
        c.sans = v.sans;
        c.not_before = v.not_before;
        c.not_after = v.not_after;
        c.first_seen = v.first_seen;
        c.last_seen = v.last_seen;
        c.last_peer = v.last_peer;
        c.connections = v.connections;
        c.refusals = v.refusals;
        let mut d = Device::of(id, c, v.status);
        d.label = v.label;
        d.changed_at = v.changed_at;
        d.changed_by = v.changed_by;
        out.push(d);
    }
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_v1_record_becomes_a_device_of_one() {
        let fp = "ab".repeat(32);
        let rec = format!(
            r#"{{"fingerprint":"{fp}","subject":"CN=a","status":"blocked","label":"x","connections":3,"changed_by":"admin"}}"#
        );
        let (devices, problems) = from_v1(vec![
            (fp.clone(), rec.into_bytes()),
            ("bad".into(), b"{".to_vec()),
        ]);
        assert_eq!(problems.len(), 1);
        let d = &devices[0];
        assert_eq!(d.id, &fp[..16]);
        assert_eq!(d.status, DeviceStatus::Blocked);
        assert_eq!(d.label.as_deref(), Some("x"));
        assert_eq!(d.changed_by.as_deref(), Some("admin"));
        assert_eq!(d.certificates.len(), 1);
        assert_eq!(d.certificates[0].connections, 3);
        assert_eq!(d.certificates[0].subject, "CN=a");
        assert!(!d.certificates[0].has_details());
    }
}
