//! Starting and stopping: build the runtime state from [`Settings`], bind
//! every listener (or take them over from a running predecessor), serve
//! until told to stop, then drain within the grace period. Reloads while
//! running are the `reload` controller's job.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Settings;
use crate::control::{Cause, ReloadHandle, ReloadOutcome, View};
use crate::error::{ConfigError, RunError};
use crate::handover::{self, InheritedSocket, Takeover};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::reload::{Built, Controller};

/// Loads every file the settings name and builds the listeners' TLS state,
/// without binding anything. This is what `certgate check` runs, and what
/// every reload runs before it changes anything.
pub fn check(settings: &Settings) -> Result<Built, ConfigError> {
    Built::new(settings, None, None, None)
}

/// A running gateway. Dropping it signals shutdown.
pub struct Gateway {
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    view: Arc<ArcSwap<View>>,
    reload: ReloadHandle,
    shutdown: watch::Sender<bool>,
    controller: Option<JoinHandle<bool>>,
    handed_over: watch::Receiver<bool>,
    drained: mpsc::Receiver<()>,
    grace: Duration,
    /// Flushed last at shutdown, so what the last handshakes taught it
    /// (first-seen devices, renewals, last-seen times) is not lost.
    registry: Option<Registry>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("view", &self.view.load())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Validates and loads everything, binds every listener, and starts
    /// serving. Nothing is bound unless everything is valid.
    pub async fn start(settings: Settings) -> Result<Gateway, RunError> {
        Gateway::start_with(settings, None, Vec::new()).await
    }

    /// Like [`Gateway::start`], serving the sockets of `takeover` (a running
    /// predecessor's) and `activated` (from systemd) where they match the
    /// config, then telling the predecessor to stop accepting.
    pub async fn start_with(
        settings: Settings,
        takeover: Option<Takeover>,
        activated: Vec<InheritedSocket>,
    ) -> Result<Gateway, RunError> {
        let handover_path = settings.handover_socket.clone();
        // Claim the handover socket first when starting fresh: a second
        // certgate started by mistake must fail before it binds anything.
        let mut handover_socket = match (&handover_path, &takeover) {
            (Some(p), None) => Some(handover::listen(p).map_err(RunError::handover)?),
            _ => None,
        };
        let metrics = Arc::new(Metrics::new());
        let (drain_tx, drained) = mpsc::channel(1);
        let (commands, commands_rx) = mpsc::channel(16);
        let reload = ReloadHandle::new(commands);
        let (takeover, mut inherited) = match takeover {
            Some(mut t) => {
                let sockets = std::mem::take(&mut t.sockets);
                (Some(t), sockets)
            }
            None => (None, Vec::new()),
        };
        inherited.extend(activated);
        let registry = match &settings.registry {
            Some(r) => Some(Registry::open(r, metrics.registry()).await.map_err(|e| {
                RunError::Config(ConfigError::File {
                    context: match &r.backend {
                        crate::config::RegistryBackend::Redb => "registry.path".into(),
                        crate::config::RegistryBackend::Postgres(pg) => pg.url_source.clone(),
                    },
                    message: e.to_string(),
                })
            })?),
            None => None,
        };
        let controller = Controller::start(
            settings.clone(),
            metrics.clone(),
            registry.clone(),
            drain_tx,
            reload.clone(),
            inherited,
        )
        .await?;
        let view = controller.view();
        if let Some(t) = takeover {
            let pid = t.finish().await.map_err(RunError::handover)?;
            info!(
                predecessor = pid,
                "took over the listening sockets; the previous process drains and exits"
            );
            if let Some(p) = &handover_path {
                handover_socket =
                    Some(handover::listen_after_takeover(p).map_err(RunError::handover)?);
            }
        }
        let (handed_tx, handed_over) = watch::channel(false);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let handed = controller
                .run(commands_rx, shutdown_rx, handover_socket)
                .await;
            let _ = handed_tx.send(handed);
            handed
        });
        Ok(Gateway {
            metrics,
            view,
            reload,
            shutdown,
            controller: Some(task),
            handed_over,
            drained,
            grace: settings.shutdown_grace,
            registry,
        })
    }

    /// The bound address of the listener called `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.view
            .load()
            .listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Bound address of each listener, by name, in config order.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.view.load().listeners.clone()
    }

    /// The device registry, when the config has one.
    pub(crate) fn registry(&self) -> Option<&Registry> {
        self.registry.as_ref()
    }

    /// The bound address of the admin listener.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.view.load().admin
    }

    /// A handle that triggers reloads (what SIGHUP and the admin API use).
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// Reloads the config and every file it names now.
    pub async fn reload(&self) -> ReloadOutcome {
        self.reload.reload(Cause::Api).await
    }

    /// Resolves once a successor process has taken over the sockets.
    pub async fn handed_over(&mut self) {
        let _ = self.handed_over.wait_for(|h| *h).await;
        if !*self.handed_over.borrow() {
            std::future::pending::<()>().await;
        }
    }

    /// Stops accepting, asks open connections to finish their current
    /// request, and waits for them up to the grace period. Returns whether
    /// every connection finished in time.
    pub async fn shutdown(mut self) -> bool {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.controller.take() {
            let _ = t.await;
        }
        let grace = self.grace;
        // Connections enforce the grace period themselves; the margin covers
        // their last writes.
        let drained = tokio::time::timeout(grace + Duration::from_secs(1), self.drained.recv())
            .await
            .is_ok();
        if drained {
            info!("all connections drained");
        } else {
            warn!(grace = ?grace, "shutdown grace period over; closing remaining connections");
        }
        // A process that handed over has released the store to its
        // successor; otherwise write what is still queued.
        if let Some(r) = &self.registry
            && !*self.handed_over.borrow()
            && let Err(e) = r.flush().await
        {
            warn!(error = %e, "the last device updates could not be written at shutdown");
        }
        drained
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Runs the gateway until SIGTERM or SIGINT (drain, then return) or until a
/// successor takes the sockets over (drain, then return). SIGHUP reloads.
pub async fn run(settings: Settings, takeover: bool) -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(RunError::Signal)?;
    let predecessor = match (takeover, &settings.handover_socket) {
        (false, _) => None,
        (true, None) => {
            return Err(RunError::Handover(
                "--takeover needs `handover_socket` in the config (the running certgate must have it too)"
                    .into(),
            ));
        }
        (true, Some(p)) => {
            let t = Takeover::connect(p).await.map_err(RunError::handover)?;
            if t.is_none() {
                warn!(socket = %p.display(), "--takeover: no certgate answers on the handover socket; starting fresh");
            }
            t
        }
    };
    let activated = handover::systemd_sockets().map_err(RunError::handover)?;
    if !activated.is_empty() {
        info!(
            sockets = activated.len(),
            "socket activation: serving the listening sockets passed by the service manager"
        );
    }
    let mut gateway = Gateway::start_with(settings, predecessor, activated).await?;
    crate::notify::ready(&format!(
        "serving {} listener(s)",
        gateway.listeners().len()
    ));
    let reload = gateway.reload_handle();
    let why = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = gateway.handed_over() => break "handed over to a successor",
            _ = hup.recv() => {
                // The outcome is logged by the controller.
                let _ = reload.reload(Cause::Signal).await;
            }
        }
    };
    info!(
        reason = why,
        "shutting down: no new connections, finishing in-flight requests"
    );
    crate::notify::stopping(&format!("draining ({why})"));
    gateway.shutdown().await;
    info!("stopped");
    Ok(())
}
