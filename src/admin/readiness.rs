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
        match k.as_str() {
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
    match reports(ctx, listener.as_deref(), window).await {
        Err(Missing::Off) => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "readiness tracking is off"}),
        ),
        Err(Missing::Listener(e)) => json(StatusCode::NOT_FOUND, serde_json::json!({"error": e})),
        Ok(mut all) if listener.is_some() => json(StatusCode::OK, serde_json::json!(all.pop())),
        Ok(all) => json(StatusCode::OK, serde_json::json!({ "listeners": all })),
    }
}

/// Why there is no report.
pub(super) enum Missing {
    /// Readiness tracking is off.
    Off,
    /// No such listener (the message lists the listeners).
    Listener(String),
}

/// The report of `listener` (or of every listener) over the last `window`
/// seconds, each with the listener's mode now.
pub(super) async fn reports(
    ctx: &AdminContext,
    listener: Option<&str>,
    window: i64,
) -> Result<Vec<crate::readiness::Report>, Missing> {
    let Some(r) = &ctx.readiness else {
        return Err(Missing::Off);
    };
    let modes = ctx.view.load().modes.clone();
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
                    instances: Vec::new(),
                });
        report.mode = mode;
        report
    };
    match listener {
        Some(name) => match modes.iter().find(|(n, _)| n == name) {
            Some((_, mode)) => Ok(vec![one(name.to_string(), mode).await]),
            None => Err(Missing::Listener(format!(
                "no listener \"{name}\"; listeners: {}",
                modes
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        },
        None => {
            let mut all = Vec::new();
            for (name, mode) in &modes {
                all.push(one(name.clone(), mode).await);
            }
            Ok(all)
        }
    }
}
