//! The admin listener: accept, serve HTTP/1.1 and HTTP/2, stop.

use std::convert::Infallible;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use super::context::AdminContext;
use super::route::route;

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
