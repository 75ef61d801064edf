//! The admin listener: accept, serve HTTP/1.1 and HTTP/2, stop.

use std::convert::Infallible;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use arc_swap::ArcSwap;

use crate::control::ReloadHandle;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::registry::Registry;

use super::route::route;
use super::tokens::Access;

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
