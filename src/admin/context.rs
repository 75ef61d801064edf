//! What every admin handler works on.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::control::ReloadHandle;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::registry::Registry;

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
    /// Console sessions.
    pub sessions: Arc<super::sessions::Sessions>,
}

/// What a request's connection is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conn {
    /// The address the client connected to: a Host naming it is this
    /// listener, whatever the configured address (0.0.0.0, a socket from
    /// systemd).
    pub local: std::net::SocketAddr,
    /// Whether it came over TLS (console cookies are then `Secure`).
    pub secure: bool,
}
