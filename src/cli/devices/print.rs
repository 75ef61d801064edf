//! Tables and detail views for people.

use crate::registry::{DeviceView, Forecast};

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

/// A subject as a table shows it: the common name first (it names the
/// device; cut off at the end of a column it would be lost), then the rest.
fn subject_or_unseen(s: &str) -> String {
    if s.is_empty() {
        return "(not seen yet)".into();
    }
    cn_first(s)
}

/// Moves the `CN=` RDN of an RFC 4514 string to the front (commas escaped
/// with `\` are not separators).
pub(super) fn cn_first(s: &str) -> String {
    let mut rdns = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, ch) in s.char_indices() {
        match ch {
            '\\' if !escaped => escaped = true,
            ',' if !escaped => {
                rdns.push(&s[start..i]);
                start = i + 1;
            }
            _ => escaped = false,
        }
    }
    rdns.push(&s[start..]);
    match rdns.iter().position(|r| r.starts_with("CN=")) {
        Some(0) | None => s.to_string(),
        Some(i) => {
            let cn = rdns.remove(i);
            std::iter::once(cn)
                .chain(rdns)
                .collect::<Vec<_>>()
                .join(",")
        }
    }
}

pub(super) fn print_table(devices: &[DeviceView]) {
    outln!(
        "{:<9} {:<16} {:<40} {:<10} {:<20} {:<15} {:>6} {:>7}  LABEL",
        "STATUS",
        "DEVICE",
        "SUBJECT",
        "EXPIRES",
        "LAST SEEN",
        "LAST PEER",
        "CONNS",
        "REFUSED"
    );
    for d in devices {
        let certs = if d.certificates.len() > 1 {
            format!(" ({} certs)", d.certificates.len())
        } else {
            String::new()
        };
        outln!(
            "{:<9} {:<16} {:<40} {:<10} {:<20} {:<15} {:>6} {:>7}  {}{certs}",
            d.status.as_str(),
            short(&d.id),
            cut(&subject_or_unseen(&d.subject), 40),
            day((d.not_after != 0).then_some(d.not_after)),
            when(d.last_seen),
            d.last_peer.as_deref().unwrap_or("-"),
            d.connections,
            d.refusals.values().sum::<u64>(),
            d.label.as_deref().unwrap_or("")
        );
    }
}

/// One row per certificate (`devices list --certificates`).
pub(super) fn print_certificates(devices: &[DeviceView]) {
    outln!(
        "{:<9} {:<16} {:<16} {:<10} {:<40} {:<10} {:<20} {:>6}",
        "STATUS",
        "DEVICE",
        "FINGERPRINT",
        "STATE",
        "SUBJECT",
        "EXPIRES",
        "LAST SEEN",
        "CONNS"
    );
    for d in devices {
        for c in &d.certificates {
            let c_ = &c.certificate;
            outln!(
                "{:<9} {:<16} {:<16} {:<10} {:<40} {:<10} {:<20} {:>6}",
                d.status.as_str(),
                short(&d.id),
                short(&c_.fingerprint),
                c.state,
                cut(&subject_or_unseen(&c_.subject), 40),
                day((c_.not_after != 0).then_some(c_.not_after)),
                when(c_.last_seen),
                c_.connections,
            );
        }
    }
}

/// A date without the time.
pub(super) fn day(t: Option<i64>) -> String {
    when(t).chars().take(10).collect()
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
        outln!(
            "{:<12} {}: {crl}{ocsp}",
            "revocation",
            r["listener"].as_str().unwrap_or("?")
        );
    }
}

pub(super) fn print_device(d: &DeviceView) {
    let rows: Vec<(&str, String)> = vec![
        ("device", d.id.clone()),
        ("status", d.status.as_str().into()),
        ("fingerprint", d.fingerprint.clone()),
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
        outln!("{k:<12} {v}");
    }
    if d.ambiguous_identity {
        outln!(
            "{:<12} ambiguous identity: several approved devices share it, so nothing was \
             inherited; approve this device, or block or forget the others",
            "note"
        );
    }
    outln!("certificates ({}):", d.certificates.len());
    for c in &d.certificates {
        let x = &c.certificate;
        let mut extra = Vec::new();
        if let Some(at) = x.superseded_at {
            extra.push(format!("superseded {}", when(Some(at))));
        }
        if let Some(of) = &x.renewal_of {
            extra.push(format!("renewal of {}", short(of)));
        }
        if x.ambiguous_identity {
            extra.push("ambiguous identity".into());
        }
        outln!(
            "  {:<10} {} serial {} valid until {} last seen {} conns {}{}",
            c.state,
            x.fingerprint,
            if x.serial.is_empty() { "-" } else { &x.serial },
            day((x.not_after != 0).then_some(x.not_after)),
            when(x.last_seen),
            x.connections,
            if extra.is_empty() {
                String::new()
            } else {
                format!(" ({})", extra.join("; "))
            }
        );
    }
}

/// `certgate devices expiry`.
pub(super) fn print_forecast(f: &Forecast) {
    outln!(
        "{} active device(s) (seen in the last {} days, not blocked); current certificate:",
        f.active,
        f.active_days
    );
    outln!("  {:<24} {:>7}", "already expired", f.expired);
    outln!("  {:<24} {:>7}", "expires within 7 days", f.within_7_days);
    outln!("  {:<24} {:>7}", "expires within 30 days", f.within_30_days);
    outln!("by month of expiry:");
    for m in &f.months {
        outln!("  {:<24} {:>7}", m.month, m.devices);
    }
    outln!("  {:<24} {:>7}", "later", f.later);
    if f.at_risk.is_empty() {
        outln!("at risk: none (no active device expires within 30 days without a renewal)");
        return;
    }
    outln!(
        "at risk: {} device(s) expire within 30 days and have not renewed yet:",
        f.at_risk.len()
    );
    outln!(
        "  {:<16} {:<9} {:<20} {:<20} {:<40}  LABEL",
        "DEVICE",
        "STATUS",
        "EXPIRES",
        "LAST SEEN",
        "SUBJECT"
    );
    for r in &f.at_risk {
        let row = format!(
            "  {:<16} {:<9} {:<20} {:<20} {:<40}  {}",
            short(&r.id),
            r.status.as_str(),
            when(Some(r.not_after)),
            when(r.last_seen),
            cut(&cn_first(&r.subject), 40),
            r.label.as_deref().unwrap_or("")
        );
        outln!("{}", row.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::cn_first;

    #[test]
    fn the_common_name_comes_first() {
        assert_eq!(cn_first("CN=a,O=Fleet"), "CN=a,O=Fleet");
        assert_eq!(
            cn_first("O=Fleet,OU=Lab\\,3,CN=ws-17"),
            "CN=ws-17,O=Fleet,OU=Lab\\,3"
        );
        assert_eq!(cn_first("O=Fleet"), "O=Fleet");
    }
}
