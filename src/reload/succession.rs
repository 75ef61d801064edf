//! Handing the sockets to a successor process (binary upgrade without a
//! dropped connection): the controller's side of [`crate::handover`].

use tracing::{error, info, warn};

use crate::handover;

use super::controller::Controller;

impl Controller {
    /// Gives every bound socket to a successor process; true once it has
    /// taken them and this process should drain and exit.
    pub(super) async fn hand_over(
        &mut self,
        conn: std::io::Result<tokio::net::UnixStream>,
    ) -> bool {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "handover socket accept failed");
                return false;
            }
        };
        let mut sockets = Vec::new();
        for l in &self.listeners {
            sockets.push(handover::OfferedSocket {
                name: format!("listener:{}", l.name),
                configured: l.configured,
                local: l.addr,
                socket: l.socket.clone(),
            });
        }
        if let Some(a) = &self.admin {
            sockets.push(handover::OfferedSocket {
                name: "admin".into(),
                configured: a.configured,
                local: a.addr,
                socket: a.socket.clone(),
            });
        }
        info!(
            sockets = sockets.len(),
            "a successor asked for the listening sockets; handing them over"
        );
        // The device store is a single-writer file: close it so the
        // successor can open it. Handshakes go on from the snapshot.
        if let Some(r) = &self.registry
            && let Err(e) = r.release().await
        {
            warn!(error = %e, "could not flush the device store before the handover");
        }
        match handover::offer(conn, sockets, || self.stop_all()).await {
            Ok(()) => {
                info!("successor is serving; this process stops accepting and drains");
                true
            }
            Err(e) => {
                // stop_all runs only after the successor said it is ready, so
                // on any failure before that we are still serving.
                warn!(error = %e, "handover failed; this process keeps serving");
                if let Some(r) = &self.registry
                    && let Err(e) = r.reopen().await
                {
                    error!(error = %e, "cannot reopen the device store; registry changes fail until restart");
                }
                false
            }
        }
    }
}
