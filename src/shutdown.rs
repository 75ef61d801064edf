//! The stop signal every long-running task listens to: a `watch` channel
//! that turns `true` once. A leaf module.

use tokio::sync::watch;

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
