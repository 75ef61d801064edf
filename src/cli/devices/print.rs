//! Tables and detail views for people.

use crate::registry::Device;

pub(super) fn when(t: Option<i64>) -> String {
    match t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok()) {
        Some(dt) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        ),
        None => "-".into(),
    }
}

/// The first 16 characters of a fingerprint, as the tables show it (by
/// character: the answer comes from the network).
pub(super) fn short(fp: &str) -> String {
    fp.chars().take(16).collect()
}

pub(super) fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

pub(super) fn print_table(devices: &[Device]) {
    println!(
        "{:<9} {:<16} {:<32} {:<20} {:<15} {:>6} {:>7}  LABEL",
        "STATUS", "FINGERPRINT", "SUBJECT", "LAST SEEN", "LAST PEER", "CONNS", "REFUSED"
    );
    for d in devices {
        println!(
            "{:<9} {:<16} {:<32} {:<20} {:<15} {:>6} {:>7}  {}",
            d.status.as_str(),
            short(&d.fingerprint),
            cut(
                if d.subject.is_empty() {
                    "(not seen yet)"
                } else {
                    &d.subject
                },
                32
            ),
            when(d.last_seen),
            d.last_peer.as_deref().unwrap_or("-"),
            d.connections,
            d.refusals.values().sum::<u64>(),
            d.label.as_deref().unwrap_or("")
        );
    }
}

/// The device's revocation status on each listener: what its issuer's CRL
/// says (and which CRL), and the cached OCSP answer.
pub(super) fn print_device_revocation(rows: &serde_json::Value) {
    for r in rows.as_array().into_iter().flatten() {
        let crl = match r["crl"].as_str().unwrap_or("?") {
            "revoked" => format!(
                "REVOKED by CRL number {} from {}",
                r["crl_number"].as_str().unwrap_or("?"),
                r["crl_source"].as_str().unwrap_or("?")
            ),
            "not_revoked" => format!(
                "not revoked (CRL number {} from {})",
                r["crl_number"].as_str().unwrap_or("?"),
                r["crl_source"].as_str().unwrap_or("?")
            ),
            _ => "no CRL of its issuer loaded".into(),
        };
        let ocsp = match r["ocsp"].as_object() {
            Some(o) => format!(
                "; OCSP {} from {} (asked {})",
                o.get("status").and_then(|s| s.as_str()).unwrap_or("?"),
                o.get("responder").and_then(|s| s.as_str()).unwrap_or("?"),
                when(o.get("asked_at").and_then(|t| t.as_i64()))
            ),
            None => String::new(),
        };
        println!(
            "{:<12} {}: {crl}{ocsp}",
            "revocation",
            r["listener"].as_str().unwrap_or("?")
        );
    }
}

pub(super) fn print_device(d: &Device) {
    let rows: Vec<(&str, String)> = vec![
        ("fingerprint", d.fingerprint.clone()),
        ("status", d.status.as_str().into()),
        ("subject", d.subject.clone()),
        ("issuer", d.issuer.clone()),
        ("serial", d.serial.clone()),
        ("SANs", d.sans.join(", ")),
        (
            "valid from",
            when((d.not_before != 0).then_some(d.not_before)),
        ),
        (
            "valid until",
            when((d.not_after != 0).then_some(d.not_after)),
        ),
        ("first seen", when(d.first_seen)),
        ("last seen", when(d.last_seen)),
        (
            "last peer",
            d.last_peer.clone().unwrap_or_else(|| "-".into()),
        ),
        ("connections", d.connections.to_string()),
        (
            "refusals",
            d.refusals
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("label", d.label.clone().unwrap_or_default()),
        (
            "changed",
            match (&d.changed_by, d.changed_at) {
                (Some(by), at) => format!("{} by {by}", when(at)),
                _ => "-".into(),
            },
        ),
    ];
    for (k, v) in rows {
        println!("{k:<12} {v}");
    }
}
