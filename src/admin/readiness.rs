//! `GET /api/readiness`: how devices authenticate on a listener, before enforcement.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::context::AdminContext;
use super::query::query_pairs;
use super::reply::json;

/// `GET /api/readiness?listener=NAME&window=24h`: how the listener's
/// clients authenticate and who enforcement would refuse; without
/// `listener`, `{"listeners": [report, ...]}` for every listener.
pub(super) async fn readiness(
    ctx: &AdminContext,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let mut listener = None;
    let mut window = 24 * 3600;
    for (k, v) in query_pairs(req) {
        match k {
            "listener" => listener = Some(v),
            "window" => match crate::config::parse_duration(&v) {
                Ok(d) => window = i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(60),
                Err(e) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": format!("window \"{v}\": {e}")}),
                    );
                }
            },
            other => {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": format!("unknown query parameter \"{other}\"")}),
                );
            }
        }
    }
    let Some(r) = &ctx.readiness else {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "readiness tracking is off"}),
        );
    };
    let modes = ctx.view.load().modes.clone();
    let mode_of = |name: &str| modes.iter().find(|(n, _)| n == name).map(|(_, m)| *m);
    let one = |name: String, mode: &'static str| async move {
        let mut report =
            r.report(&name, window)
                .await
                .unwrap_or_else(|| crate::readiness::Report {
                    listener: name,
                    mode,
                    window_seconds: window,
                    total: 0,
                    by_status: Vec::new(),
                    failed_reasons: Vec::new(),
                    would_refuse: Vec::new(),
                    legacy_sources: Vec::new(),
                    needs_certificate: Vec::new(),
                    would_admit: Vec::new(),
                });
        report.mode = mode;
        report
    };
    match listener {
        Some(name) => match mode_of(&name) {
            Some(mode) => json(StatusCode::OK, serde_json::json!(one(name, mode).await)),
            None => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": format!(
                    "no listener \"{name}\"; listeners: {}",
                    modes.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                )}),
            ),
        },
        None => {
            let mut all = Vec::new();
            for (name, mode) in &modes {
                all.push(one(name.clone(), mode).await);
            }
            json(StatusCode::OK, serde_json::json!({ "listeners": all }))
        }
    }
}
