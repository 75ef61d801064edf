//! The admin listener: accept, TLS when `[admin.tls]` is set, serve
//! HTTP/1.1 and HTTP/2, stop.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use super::context::{AdminContext, Conn};
use super::route::route;

/// How long an admin client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin API until `shutdown` turns true.
pub(crate) async fn serve(
    listener: Arc<TcpListener>,
    ctx: AdminContext,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let http = Arc::new(http);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        };
        let ctx = ctx.clone();
        let http = http.clone();
        let local = tcp.local_addr().unwrap_or(peer);
        // Read per connection: a reload that renews the certificate (or
        // turns TLS on) applies from the next connection on.
        let tls = ctx.access.load().tls.clone();
        tokio::spawn(async move {
            let conn = Conn {
                local,
                secure: tls.is_some(),
            };
            let svc = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(route(&ctx, conn, req).await) }
            });
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Ok(Err(e)) => {
                            if crate::log_limit::ADMIN_REFUSAL_LOG.should_log() {
                                info!(%peer, error = %e, "admin TLS handshake failed \
                                    (a plain-HTTP client, or no admin certificate; logged at most once a second)");
                            }
                        }
                        Err(_) => {}
                    }
                }
            }
        });
    }
}
