//! The admin HTTP listener: `/metrics` (Prometheus text format),
//! `/healthz` and `POST /api/reload`. It is served on its own address,
//! loopback by default, and never shares a port with device traffic.

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

use crate::metrics::Metrics;
use crate::reload::{Cause, ReloadHandle};

/// What the admin API works on.
#[derive(Debug, Clone)]
pub struct AdminContext {
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// Triggers reloads.
    pub reload: ReloadHandle,
}

/// Serves the admin API until `shutdown` turns true.
pub async fn serve(
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
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = crate::proxy::stopped(&mut shutdown) => return,
        };
        let ctx = ctx.clone();
        let http = http.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(route(&ctx, &req).await) }
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

async fn route(ctx: &AdminContext, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ctx.metrics.encode(),
        ),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::POST, "/api/reload") => reload(ctx).await,
        (_, "/api/reload") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use POST /api/reload\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
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
    text(status, "application/json", format!("{body}\n"))
}
