//! The controller's task: start everything, then wait for reload
//! commands, file changes, the periodic check and a successor's handover
//! request, and act on one at a time until shutdown.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::UnixListener;
use tokio::sync::{Notify, mpsc, watch};
use tracing::warn;

use crate::admin;
use crate::clock::now_unix;
use crate::config::Settings;
use crate::control::{Cause, Command, ReloadHandle, View};
use crate::error::RunError;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::registry::Registry;

use super::apply::Phase;
use super::attempt::{OnFailure, Rebuild};
use super::bind::Inherited;
use super::build::Built;
use super::controller::Controller;
use super::watch::{FileWatcher, MAX_DELAY, POLL, QUIET, SETTLE, files_digest};

impl Controller {
    /// Builds and binds everything `settings` describes (taking sockets
    /// from `inherited` where they match) and starts serving. Nothing is
    /// served unless everything is valid and bound.
    pub(crate) async fn start(
        settings: Settings,
        metrics: Arc<Metrics>,
        registry: Option<Registry>,
        drain: mpsc::Sender<()>,
        handle: ReloadHandle,
        mut inherited: Inherited,
    ) -> Result<Controller, RunError> {
        let built = Built::new(&settings, None, registry.as_ref(), Some(&metrics))?;
        let digest = files_digest(&settings.files());
        // Watch before anything is served, so that no change made after
        // start returns can be missed.
        let changed = Arc::new(Notify::new());
        let mut watcher = FileWatcher::new(changed.clone());
        watcher.update(&settings.files());
        let mut controller = Controller {
            settings: settings.clone(),
            listeners: Vec::new(),
            admin: None,
            upstreams: Vec::new(),
            readiness: Some(Readiness::start(
                metrics.readiness_dropped(),
                registry.as_ref().and_then(Registry::fleet_readiness),
            )),
            metrics,
            registry,
            drain,
            view: Arc::new(ArcSwap::from_pointee(View::default())),
            handle,
            access: Arc::new(ArcSwap::from_pointee(admin::Access::default())),
            console_sessions: Arc::default(),
            digest,
            refused: None,
            watcher,
            changed,
            stale_crls: HashSet::new(),
        };
        controller
            .apply(settings, built, &mut inherited, Phase::Start)
            .await?;
        for s in inherited {
            // Warned: with socket activation, connections to it would
            // queue in systemd's copy and never be served.
            warn!(name = %s.name, addr = %s.local, "inherited socket no listener names (add a [[listener]] with this listen address, or remove it from the socket unit); closed");
        }
        controller.metrics.loaded(now_unix());
        controller.check_crls();
        Ok(controller)
    }

    /// Runs until `shutdown` turns true or a successor took the sockets over.
    /// Returns true when handed over.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
        handover_socket: Option<UnixListener>,
    ) -> bool {
        let changed = self.changed.clone();
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.reset();
        let mut handed_over = false;
        loop {
            tokio::select! {
                _ = crate::shutdown::stopped(&mut shutdown) => break,
                cmd = commands.recv() => match cmd {
                    Some(Command::Reload { cause, reply }) => {
                        let out = self.reload(cause, Rebuild::Always, OnFailure::Report).await;
                        let _ = reply.send(out);
                    }
                    None => break,
                },
                _ = changed.notified() => {
                    // Debounce: wait for the files to go quiet, but not forever.
                    let deadline = tokio::time::Instant::now() + MAX_DELAY;
                    loop {
                        tokio::select! {
                            _ = changed.notified() => {}
                            _ = tokio::time::sleep(QUIET) => break,
                            _ = tokio::time::sleep_until(deadline) => break,
                        }
                    }
                    if self.reload(Cause::Files, Rebuild::IfChanged, OnFailure::Settle).await.is_err() {
                        tokio::select! {
                            _ = changed.notified() => {
                                tokio::time::sleep(QUIET).await;
                            }
                            _ = tokio::time::sleep(SETTLE) => {}
                        }
                        let _ = self.reload(Cause::Files, Rebuild::IfChanged, OnFailure::Report).await;
                    }
                }
                _ = poll.tick() => {
                    let _ = self.reload(Cause::Poll, Rebuild::IfChanged, OnFailure::Report).await;
                    self.check_crls();
                }
                conn = accept_unix(handover_socket.as_ref()) => {
                    if self.hand_over(conn).await {
                        handed_over = true;
                        break;
                    }
                }
            }
        }
        self.stop_all();
        handed_over
    }
}

async fn accept_unix(l: Option<&UnixListener>) -> std::io::Result<tokio::net::UnixStream> {
    match l {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}
