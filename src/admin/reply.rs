//! The admin API's answers: JSON, text, registry errors; reading a JSON body.

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use http_body_util::BodyExt as _;

use crate::registry::RegistryError;

pub(super) fn text(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

pub(super) fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    text(status, "application/json", format!("{body}\n"))
}

pub(super) fn registry_error(e: RegistryError) -> Response<Full<Bytes>> {
    let status = match &e {
        RegistryError::NotFound(_) => StatusCode::NOT_FOUND,
        RegistryError::BadFingerprint(_) | RegistryError::BadImport(_) => StatusCode::BAD_REQUEST,
        RegistryError::Store(_)
        | RegistryError::AuditUnavailable { .. }
        | RegistryError::Closed => StatusCode::SERVICE_UNAVAILABLE,
        RegistryError::Audit { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json(status, serde_json::json!({"error": e.to_string()}))
}

/// Reads a JSON request body (at most 4 MiB: an import of many
/// fingerprints fits).
pub(super) async fn body_json(
    req: Request<Incoming>,
) -> Result<serde_json::Value, Response<Full<Bytes>>> {
    let limited = http_body_util::Limited::new(req.into_body(), 4 << 20);
    let bytes = match limited.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Err(json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": format!("cannot read the request body: {e}")}),
            ));
        }
    };
    if bytes.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": format!("the body is not JSON: {e}")}),
        )
    })
}
