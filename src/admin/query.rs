//! The query string of `GET /api/devices` and `GET /api/readiness`.

use http::Request;
use hyper::body::Incoming;

use crate::registry::{DeviceStatus, Query, Sort};

/// The query string as (key, decoded value) pairs.
pub(super) fn query_pairs(req: &Request<Incoming>) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(super) fn query(req: &Request<Incoming>) -> Result<Query, String> {
    let mut q = Query::default();
    for (k, v) in query_pairs(req) {
        match k.as_str() {
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
            "sort" => {
                q.sort = Sort::parse(&v)
                    .ok_or_else(|| format!("sort \"{v}\": use first_seen, last_seen or expiry"))?
            }
            "order" => {
                q.descending = match v.as_str() {
                    "asc" => false,
                    "desc" => true,
                    _ => return Err(format!("order \"{v}\": use asc or desc")),
                }
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
