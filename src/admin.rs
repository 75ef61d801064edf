//! The admin HTTP listener: `/metrics` (Prometheus text format),
//! `/healthz`, `POST /api/reload` and the device API under
//! `/api/devices`. It is served on its own address, loopback by default,
//! and never shares a port with device traffic. With a token file, every
//! `/api/` call needs `Authorization: Bearer <token>`; with or without one,
//! [`guard`] refuses what a browser sends on behalf of another site.

pub(crate) mod guard;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use arc_swap::ArcSwap;
use http_body_util::BodyExt as _;

use crate::config::ConfigPath;
use crate::control::{Cause, ReloadHandle};
use crate::error::ConfigError;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::registry::{
    Change, Device, DeviceStatus, Query, Registry, RegistryError, parse_fingerprint,
};

/// What the admin API works on.
#[derive(Debug, Clone)]
pub(crate) struct AdminContext {
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// Triggers reloads.
    pub reload: ReloadHandle,
    /// The device registry, when configured.
    pub registry: Option<Registry>,
    /// Connection classifications.
    pub readiness: Option<Readiness>,
    /// Bearer tokens and allowed host names (swapped on reload).
    pub access: Arc<ArcSwap<Access>>,
    /// Listeners and their upstreams as running now.
    pub view: Arc<ArcSwap<crate::control::View>>,
}

/// Serves the admin API until `shutdown` turns true.
pub(crate) async fn serve(
    listener: Arc<TcpListener>,
    ctx: AdminContext,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10));
    let http = Arc::new(http);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        };
        let ctx = ctx.clone();
        let http = http.clone();
        // The address the client connected to: a Host naming it is this
        // listener, whatever the configured address (0.0.0.0, a socket from
        // systemd).
        let local = tcp.local_addr().unwrap_or(peer);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(route(&ctx, local, req).await) }
            });
            let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

async fn route(
    ctx: &AdminContext,
    local: std::net::SocketAddr,
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
        return text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into());
    }
    let access = ctx.access.load();
    let has_body = !hyper::body::Body::is_end_stream(req.body());
    if let Err(refused) = guard::check(
        &access.hosts,
        local,
        req.method(),
        req.uri(),
        req.headers(),
        has_body,
    ) {
        let reason = refused.reason.as_str();
        ctx.metrics.admin_refused(reason);
        if crate::log_limit::ADMIN_REFUSAL_LOG.should_log() {
            warn!(method = %req.method(), path = %path, reason,
                "admin request refused: {} (further refusals are counted in \
                 certgate_admin_requests_refused_total, logged at most once a second)",
                refused.message);
        }
        return json(
            StatusCode::FORBIDDEN,
            serde_json::json!({"error": refused.message, "reason": reason}),
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
        (method, p) if p == "/api/devices" || p.starts_with("/api/devices/") => {
            let Some(registry) = &ctx.registry else {
                return json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error": "no device registry: add a [registry] table to the config"}),
                );
            };
            let rest = p.trim_start_matches("/api/devices").trim_start_matches('/');
            let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
            devices(registry, method, &parts, req, &who).await
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    text(status, "application/json", format!("{body}\n"))
}

fn registry_error(e: RegistryError) -> Response<Full<Bytes>> {
    let status = match &e {
        RegistryError::NotFound(_) => StatusCode::NOT_FOUND,
        RegistryError::BadFingerprint(_) => StatusCode::BAD_REQUEST,
        RegistryError::Store(_)
        | RegistryError::AuditUnavailable { .. }
        | RegistryError::Closed => StatusCode::SERVICE_UNAVAILABLE,
        RegistryError::Audit { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json(status, serde_json::json!({"error": e.to_string()}))
}

/// Reads a JSON request body (at most 4 MiB: an import of many
/// fingerprints fits).
async fn body_json(req: Request<Incoming>) -> Result<serde_json::Value, Response<Full<Bytes>>> {
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

/// The query string as (key, decoded value) pairs.
fn query_pairs(req: &Request<Incoming>) -> impl Iterator<Item = (&str, String)> {
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

fn query(req: &Request<Incoming>) -> Result<Query, String> {
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
            "expiring" => {
                let d = crate::config::parse_duration(&v)
                    .or_else(|_| {
                        crate::config::parse_duration(&format!("{}d", v.trim_end_matches('d')))
                    })
                    .map_err(|e| format!("expiring \"{v}\": {e}"))?;
                q.expiring_within = Some(i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            }
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

/// Decodes `%XX` and `+` in a query value. Hand-written: a URL crate for
/// one query string of a loopback admin API is not worth a dependency.
fn percent_decode(s: &str) -> String {
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

async fn devices(
    registry: &Registry,
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
    let changed = |r: Result<Vec<Device>, RegistryError>| match r {
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
        // Bulk: POST /api/devices/approve {"fingerprints": [...]}.
        (Method::POST, [a]) if action(a).is_some() => {
            let body = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let Some(list) = body.get("fingerprints").and_then(|f| f.as_array()) else {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "expected {\"fingerprints\": [\"<sha256 hex>\", ...]}"}),
                );
            };
            let fps = list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            let Some(change) = action(a) else {
                return text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into());
            };
            changed(registry.change(fps, change, who).await)
        }
        (Method::GET, [fp]) => {
            let Some(fp) = parse_fingerprint(fp) else {
                return registry_error(RegistryError::BadFingerprint(fp.to_string()));
            };
            match registry.get(&fp).await {
                Ok(Some(d)) => json(StatusCode::OK, serde_json::json!(d)),
                Ok(None) => registry_error(RegistryError::NotFound(fp)),
                Err(e) => registry_error(e),
            }
        }
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

/// `GET /readyz`: 200 when every listener is bound and reaches at least
/// one server of its upstream (a TCP connect, at most 1 s each), else 503;
/// the body says which.
async fn readyz(ctx: &AdminContext) -> Response<Full<Bytes>> {
    let view = ctx.view.load_full();
    let mut ready = !view.listeners.is_empty();
    let mut listeners = Vec::new();
    let mut probed: std::collections::HashMap<String, Vec<(std::net::SocketAddr, bool)>> =
        std::collections::HashMap::new();
    for (name, up) in &view.upstreams {
        let servers = match probed.get(&up.settings.name) {
            Some(s) => s.clone(),
            None => {
                let s = up.probe().await;
                probed.insert(up.settings.name.clone(), s.clone());
                s
            }
        };
        let ok = servers.iter().any(|(_, up)| *up);
        ready &= ok;
        listeners.push(serde_json::json!({
            "listener": name,
            "addr": view.listeners.iter().find(|(n, _)| n == name).map(|(_, a)| a.to_string()),
            "upstream": up.settings.name,
            "ready": ok,
            "servers": servers.iter().map(|(s, up)| serde_json::json!({"server": s.to_string(), "up": up})).collect::<Vec<_>>(),
        }));
    }
    json(
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        serde_json::json!({"ready": ready, "listeners": listeners}),
    )
}

/// `GET /api/readiness?listener=NAME&window=24h`: how the listener's
/// clients authenticate and who enforcement would refuse.
async fn readiness(ctx: &AdminContext, req: &Request<Incoming>) -> Response<Full<Bytes>> {
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
            }),
        ),
    }
}

/// `POST /api/reload`: 200 with the changes, or 422 with every problem
/// found (the old state stays in force).
async fn reload(ctx: &AdminContext) -> Response<Full<Bytes>> {
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

/// What the admin API admits, built from `[admin]` on every (re)load.
#[derive(Debug, Clone, Default)]
pub(crate) struct Access {
    /// Bearer tokens (none: loopback only, everyone is `local`).
    pub tokens: Tokens,
    /// The names `Host` may carry.
    pub hosts: guard::HostRules,
}

/// The admin API's bearer tokens, from `[admin] token_file`: lines of
/// `name:token` (a line without `name:` is named `admin`); `#` comments.
/// The name is what the audit log records as "who".
#[derive(Debug, Clone, Default)]
pub(crate) struct Tokens {
    /// (name, SHA-256 of the token): compared digest to digest, so every
    /// comparison has the same length whatever the caller sends.
    tokens: Vec<(String, [u8; 32])>,
}

fn token_digest(token: &str) -> [u8; 32] {
    crate::identity::sha256(token.as_bytes())
}

impl Tokens {
    /// Reads and checks a token file.
    pub(crate) fn load(path: &ConfigPath) -> Result<Tokens, ConfigError> {
        let err = |message: String| ConfigError::File {
            context: "admin.token_file".into(),
            message: format!("{path}: {message}"),
        };
        let text = std::fs::read_to_string(&path.resolved)
            .map_err(|e| err(format!("cannot be read ({e})")))?;
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, token) = match line.split_once(':') {
                Some((n, t)) => (n.trim().to_string(), t.trim().to_string()),
                None => ("admin".to_string(), line.to_string()),
            };
            if token.len() < 16 {
                return Err(err(format!(
                    "line {}: the token for \"{name}\" is shorter than 16 characters; use e.g. `openssl rand -hex 32`",
                    i + 1
                )));
            }
            tokens.push((name, token_digest(&token)));
        }
        if tokens.is_empty() {
            return Err(err("contains no token; add a line name:token".into()));
        }
        Ok(Tokens { tokens })
    }

    /// The caller's name, or the status to answer. Without configured
    /// tokens (only allowed on a loopback admin listener) everyone is
    /// `local`.
    fn authorize(&self, headers: &http::HeaderMap) -> Result<String, StatusCode> {
        if self.tokens.is_empty() {
            return Ok("local".into());
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(StatusCode::UNAUTHORIZED)?;
        // Every token is compared, in constant time each, so the time taken
        // says neither which token nor how much of one matched.
        let given = token_digest(given);
        let mut who = None;
        for (name, digest) in &self.tokens {
            let equal = aws_lc_rs::constant_time::verify_slices_are_equal(digest, &given).is_ok();
            if equal && who.is_none() {
                who = Some(name);
            }
        }
        who.cloned().ok_or(StatusCode::UNAUTHORIZED)
    }
}
