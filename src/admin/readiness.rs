//! `GET /api/readiness`: how devices authenticate on a listener, before enforcement.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::context::AdminContext;
use super::query::query_pairs;
use super::reply::json;

/// `GET /api/readiness?listener=NAME&window=24h`: how the listener's
/// clients authenticate and who enforcement would refuse.
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
    let Some(listener) = listener else {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "give ?listener=NAME"}),
        );
    };
    let Some(r) = &ctx.readiness else {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "readiness tracking is off"}),
        );
    };
    match r.report(&listener, window).await {
        Some(report) => json(StatusCode::OK, serde_json::json!(report)),
        None => json(
            StatusCode::OK,
            serde_json::json!(crate::readiness::Report {
                listener,
                window_seconds: window,
                total: 0,
                by_status: Vec::new(),
                failed_reasons: Vec::new(),
                would_refuse: Vec::new(),
                legacy_sources: Vec::new(),
                needs_certificate: Vec::new(),
                would_admit: Vec::new(),
            }),
        ),
    }
}
