//! Which handler a request goes to, after the guard and the token check.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use super::context::{AdminContext, Conn};
use super::devices::devices;
use super::guard;
use super::readiness::readiness;
use super::readyz::readyz;
use super::reload::reload;
use super::reply::{json, text};

pub(super) async fn route(
    ctx: &AdminContext,
    conn: Conn,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/metrics") => {
            // OpenMetrics for scrapers that ask for it (Prometheus does), the
            // classic text format for everything else.
            let openmetrics = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("application/openmetrics-text"));
            return if openmetrics {
                text(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ctx.metrics.encode(),
                )
            } else {
                text(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    ctx.metrics.encode_text(),
                )
            };
        }
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, "/readyz") => return readyz(ctx).await,
        _ => {}
    }
    if !path.starts_with("/api/") {
        return super::console::handle(ctx, conn, req).await;
    }
    let access = ctx.access.load();
    if let Err(refused) = guard::screen(
        &ctx.metrics,
        "admin",
        &access.hosts,
        conn.local,
        &req,
        guard::Body::Json,
    ) {
        return json(
            StatusCode::FORBIDDEN,
            serde_json::json!({"error": refused.message, "reason": refused.reason.as_str()}),
        );
    }
    let who = match access.tokens.authorize(req.headers()) {
        Ok(who) => who,
        Err(status) => {
            ctx.metrics.admin_refused("token");
            let mut r = json(
                status,
                serde_json::json!({"error": "missing or wrong bearer token (Authorization: Bearer <token> from the admin token_file)"}),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    };
    match (req.method().clone(), path.as_str()) {
        (Method::POST, "/api/reload") => reload(ctx).await,
        (_, "/api/reload") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use POST /api/reload\n".into(),
        ),
        (Method::GET, "/api/readiness") => readiness(ctx, &req).await,
        (Method::GET, "/api/revocation") => super::revocation::revocation(ctx).await,
        (method, p) if p == "/api/devices" || p.starts_with("/api/devices/") => {
            let Some(registry) = &ctx.registry else {
                return json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error": "no device registry: add a [registry] table to the config"}),
                );
            };
            let rest = p.trim_start_matches("/api/devices").trim_start_matches('/');
            let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
            devices(registry, &ctx.view, method, &parts, req, &who).await
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
