//! A protocol upgrade (101) relayed both ways until either side closes,
//! the client is no longer admitted, or the listener stops and the grace
//! period ends.

use hyper_util::rt::TokioIo;
use tracing::{debug, info};

use super::context::ConnContext;
use super::lifeline::Lifeline;
use super::state::ListenerState;
use super::upstream::ServerGuard;

/// Relays an upgraded connection in its own task. The tunnel holds
/// `hold` (its upstream slot and the server's in-flight mark) and the
/// connection's drain guard for as long as it is open.
pub(super) fn tunnel(
    ctx: &ConnContext,
    state: &ListenerState,
    client_upgrade: hyper::upgrade::OnUpgrade,
    server_upgrade: hyper::upgrade::OnUpgrade,
    hold: (Option<tokio::sync::OwnedSemaphorePermit>, ServerGuard),
) {
    let listener = state.name.clone();
    let peer = ctx.peer;
    let admission = ctx.admission.clone();
    let Lifeline { mut stop, drain } = ctx.lifeline.clone();
    let grace = state.grace;
    tokio::spawn(async move {
        // The tunnel holds its backend connection, and so its slot
        // and its place in the server's in-flight count.
        let _hold = hold;
        let tunnel = async {
            let (c, s) = tokio::try_join!(client_upgrade, server_upgrade)?;
            let mut c = TokioIo::new(c);
            let mut s = TokioIo::new(s);
            tokio::io::copy_bidirectional(&mut c, &mut s).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        let stopped = async {
            // A tunnel has no request boundary to stop at: on shutdown
            // or listener removal it gets the grace period, then closes.
            if stop.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            r = tunnel => if let Err(e) = r {
                debug!(%listener, %peer, error = %e, "upgraded connection ended");
            },
            reason = admission.revoked() => {
                admission.count_closed(reason);
                info!(%listener, %peer, reason = reason.as_str(),
                    "client no longer admitted after reload; upgraded connection closed");
            }
            _ = stopped => {
                info!(%listener, %peer, "upgraded connection still open when the grace period ended; closed");
            }
        }
        drop(drain);
    });
}
