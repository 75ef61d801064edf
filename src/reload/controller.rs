//! The controller's state: the one owner of the running listeners and
//! the only writer of their state. Its work is spread over the files of
//! this folder, one concern each (`run`, `attempt`, `apply`, ...).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};

use crate::admin;
use crate::config::Settings;
use crate::control::{ReloadHandle, View};
use crate::metrics::Metrics;
use crate::proxy::ListenerShared;
use crate::proxy::upstream::Upstream;
use crate::readiness::Readiness;
use crate::registry::Registry;

use super::build::Reuse;
use super::watch::FileWatcher;

/// One bound listener socket and the state it serves.
pub(super) struct Running {
    pub(super) name: String,
    pub(super) configured: SocketAddr,
    pub(super) addr: SocketAddr,
    pub(super) socket: Arc<TcpListener>,
    pub(super) shared: Arc<ListenerShared>,
    pub(super) stop: watch::Sender<bool>,
}

/// The bound admin socket.
pub(super) struct RunningAdmin {
    pub(super) configured: SocketAddr,
    pub(super) addr: SocketAddr,
    pub(super) socket: Arc<TcpListener>,
    pub(super) stop: watch::Sender<bool>,
}

/// The single owner of the running listeners; applies reloads.
pub(crate) struct Controller {
    pub(super) settings: Settings,
    pub(super) listeners: Vec<Running>,
    pub(super) admin: Option<RunningAdmin>,
    pub(super) upstreams: Vec<Arc<Upstream>>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) registry: Option<Registry>,
    pub(super) readiness: Option<Readiness>,
    pub(super) drain: mpsc::Sender<()>,
    pub(super) view: Arc<ArcSwap<View>>,
    pub(super) handle: ReloadHandle,
    pub(super) access: Arc<ArcSwap<admin::Access>>,
    /// Console sessions: kept when the admin listener is rebound.
    pub(super) console_sessions: Arc<admin::sessions::Sessions>,
    /// Digest of the config text and every file it names, as in force.
    pub(super) digest: [u8; 32],
    /// Digest of the last refused attempt: the same bytes are not retried
    /// until something changes.
    pub(super) refused: Option<[u8; 32]>,
    pub(super) watcher: FileWatcher,
    pub(super) changed: Arc<Notify>,
    /// CRLs already reported as stale: (listener, issuer).
    pub(super) stale_crls: HashSet<(String, String)>,
}

impl Controller {
    /// What the next build may carry over from the state in force.
    pub(super) fn reuse(&self) -> Reuse {
        Reuse {
            upstreams: self.upstreams.clone(),
            tls: self
                .listeners
                .iter()
                .filter_map(|r| r.shared.current().tls.clone().map(|t| (r.name.clone(), t)))
                .collect(),
        }
    }

    /// The addresses as bound now (updated on every reload).
    pub(crate) fn view(&self) -> Arc<ArcSwap<View>> {
        self.view.clone()
    }

    pub(super) fn stop_all(&mut self) {
        for l in &self.listeners {
            let _ = l.stop.send(true);
        }
        if let Some(a) = &self.admin {
            let _ = a.stop.send(true);
        }
    }
}
