//! `POST /api/reload`.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::control::Cause;

use super::context::AdminContext;
use super::reply::json;

/// `POST /api/reload`: 200 with the changes, or 422 with every problem
/// found (the old state stays in force).
pub(super) async fn reload(ctx: &AdminContext) -> Response<Full<Bytes>> {
    let (status, body) = match ctx.reload.reload(Cause::Api).await {
        Ok(report) => (
            StatusCode::OK,
            serde_json::json!({"result": "success", "changes": report.changes}),
        ),
        Err(e) => {
            let problems: Vec<String> = match e {
                crate::RunError::Config(c) => c.into_list().iter().map(|p| p.to_string()).collect(),
                other => vec![other.to_string()],
            };
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({"result": "failure", "errors": problems}),
            )
        }
    };
    json(status, body)
}
