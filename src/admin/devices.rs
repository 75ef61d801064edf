//! `/api/devices`: list, show, approve, block, unblock, forget, label,
//! import, and the expiry forecast.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::registry::{Change, DeviceView, Registry, RegistryError};
use crate::revocation::status::DeviceRevocation;

use super::query::{query, query_pairs, seconds};
use super::reply::{body_json, json, registry_error, text};

pub(super) async fn devices(
    registry: &Registry,
    view: &arc_swap::ArcSwap<crate::control::View>,
    method: Method,
    parts: &[&str],
    req: Request<Incoming>,
    who: &str,
) -> Response<Full<Bytes>> {
    let action = |a: &str| match a {
        "approve" => Some(Change::Approve),
        "block" => Some(Change::Block),
        "unblock" => Some(Change::Unblock),
        _ => None,
    };
    let changed = |r: Result<Vec<DeviceView>, RegistryError>| match r {
        Ok(d) => json(StatusCode::OK, serde_json::json!({"devices": d})),
        Err(e) => registry_error(e),
    };
    match (method, parts) {
        (Method::GET, []) => match query(&req) {
            Ok(q) => match registry.list(q).await {
                Ok(page) => json(StatusCode::OK, serde_json::json!(page)),
                Err(e) => registry_error(e),
            },
            Err(e) => json(StatusCode::BAD_REQUEST, serde_json::json!({"error": e})),
        },
        // Bulk: POST /api/devices/approve {"fingerprints": [...]} and/or
        // {"certificates": ["<base64 DER>", ...]} (a record made for a
        // certificate has its subject, issuer, serial and validity).
        (Method::POST, [a]) if action(a).is_some() => {
            let body = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let fps = body.get("fingerprints").and_then(|f| f.as_array());
            let certs = body.get("certificates").and_then(|f| f.as_array());
            if fps.is_none() && certs.is_none() {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "expected {\"fingerprints\": [\"<sha256 hex>\", ...]} or {\"certificates\": [\"<base64 DER>\", ...]}"}),
                );
            }
            let fps = fps
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            let mut ders = Vec::new();
            for (i, c) in certs.into_iter().flatten().enumerate() {
                use base64::Engine as _;
                match c
                    .as_str()
                    .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                {
                    Some(der) => ders.push(der),
                    None => {
                        return json(
                            StatusCode::BAD_REQUEST,
                            serde_json::json!({"error": format!("certificates[{i}] is not base64 DER")}),
                        );
                    }
                }
            }
            let Some(change) = action(a) else {
                return text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into());
            };
            changed(registry.change_certificates(fps, ders, change, who).await)
        }
        (Method::GET, ["expiry"]) => {
            let mut active = 30 * 86_400;
            for (k, v) in query_pairs(&req) {
                match k.as_str() {
                    "active" => match seconds("active", &v) {
                        Ok(s) => active = s,
                        Err(e) => {
                            return json(StatusCode::BAD_REQUEST, serde_json::json!({"error": e}));
                        }
                    },
                    other => {
                        return json(
                            StatusCode::BAD_REQUEST,
                            serde_json::json!({"error": format!("unknown query parameter \"{other}\"; use active=30d")}),
                        );
                    }
                }
            }
            match registry.expiry(active).await {
                Ok(f) => json(StatusCode::OK, serde_json::json!(f)),
                Err(e) => registry_error(e),
            }
        }
        // Restore an export: POST /api/devices/import {"devices": [...]}.
        (Method::POST, ["import"]) => {
            let body = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let devices = match body
                .get("devices")
                .cloned()
                .map(serde_json::from_value::<Vec<DeviceView>>)
            {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": format!("devices: {e} (give what `certgate devices export` wrote)")}),
                    );
                }
                None => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": "expected {\"devices\": [...]} as `certgate devices export` writes it"}),
                    );
                }
            };
            changed(
                registry
                    .import(
                        devices.into_iter().map(DeviceView::into_device).collect(),
                        who,
                    )
                    .await,
            )
        }
        (Method::GET, [fp]) => match registry.get(fp).await {
            Ok(Some(d)) => {
                let d = d.view();
                let mut v = serde_json::json!(d);
                let view = view.load();
                let revocation: Vec<DeviceRevocation> = view
                    .revocation
                    .iter()
                    .map(|(name, r)| DeviceRevocation::of(name, r, &d.issuer, &d.serial))
                    .collect();
                v["revocation"] = serde_json::json!(revocation);
                json(StatusCode::OK, v)
            }
            Ok(None) => registry_error(RegistryError::NotFound(fp.to_string())),
            Err(e) => registry_error(e),
        },
        (Method::DELETE, [fp]) => changed(
            registry
                .change(vec![fp.to_string()], Change::Forget, who)
                .await,
        ),
        (Method::POST, [fp, a]) if action(a).is_some() => {
            let Some(change) = action(a) else {
                return text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into());
            };
            changed(registry.change(vec![fp.to_string()], change, who).await)
        }
        (Method::POST | Method::PUT, [fp, "label"]) => {
            let body = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let label = match body.get("label") {
                Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(serde_json::Value::String(_)) | Some(serde_json::Value::Null) => None,
                _ => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": "expected {\"label\": \"text\"} (or null to clear)"}),
                    );
                }
            };
            changed(
                registry
                    .change(vec![fp.to_string()], Change::Label(label), who)
                    .await,
            )
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
