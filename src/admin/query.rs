//! The query string of `GET /api/devices` and `GET /api/readiness`.

use http::Request;
use hyper::body::Incoming;

use crate::registry::{DeviceStatus, Query};

/// The query string as (key, decoded value) pairs.
pub(super) fn query_pairs(req: &Request<Incoming>) -> impl Iterator<Item = (&str, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k, percent_decode(v))
        })
}

pub(super) fn query(req: &Request<Incoming>) -> Result<Query, String> {
    let mut q = Query::default();
    for (k, v) in query_pairs(req) {
        match k {
            "status" => {
                q.status =
                    Some(DeviceStatus::parse(&v).ok_or_else(|| {
                        format!("status \"{v}\": use pending, approved or blocked")
                    })?);
            }
            "q" => q.text = Some(v),
            "expiring" => q.expiring_within = Some(seconds("expiring", &v)?),
            "active" => q.active_within = Some(seconds("active", &v)?),
            "offset" => {
                q.offset = v
                    .parse()
                    .map_err(|_| format!("offset \"{v}\" is not a number"))?
            }
            "limit" => {
                q.limit = Some(
                    v.parse()
                        .map_err(|_| format!("limit \"{v}\" is not a number"))?,
                )
            }
            other => return Err(format!("unknown query parameter \"{other}\"")),
        }
    }
    Ok(q)
}

/// A window given as a duration (`30d`, `12h`) or a number of days.
pub(super) fn seconds(key: &str, v: &str) -> Result<i64, String> {
    let v = v.trim();
    let with_unit = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        format!("{v}d")
    } else {
        v.to_string()
    };
    let d = crate::config::parse_duration(&with_unit).map_err(|e| format!("{key}: {e}"))?;
    Ok(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Decodes `%XX` and `+` in a query value. Hand-written: a URL crate for
/// one query string of a loopback admin API is not worth a dependency.
pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 3 <= b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
