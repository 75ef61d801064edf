//! Building the runtime state from [`Settings`] and running it: bind every
//! listener, serve until told to stop, then drain within the grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin;
use crate::config::Settings;
use crate::error::{ConfigError, RunError};
use crate::metrics::Metrics;
use crate::proxy::{self, ListenerShared, upstream::Upstream};
use crate::tls::ListenerTls;

/// Loads every file the settings name and builds the listeners' TLS state,
/// without binding anything. This is what `certgate check` runs.
pub fn check(settings: &Settings) -> Result<Vec<(String, ListenerTls)>, ConfigError> {
    let mut errors = Vec::new();
    let mut built = Vec::new();
    for l in &settings.listeners {
        match ListenerTls::build(&l.name, &l.tls) {
            Ok(t) => built.push((l.name.clone(), t)),
            Err(e) => errors.extend(e.into_list()),
        }
    }
    match ConfigError::from_list(errors) {
        Some(e) => Err(e),
        None => Ok(built),
    }
}

/// A running gateway. Dropping it signals shutdown.
pub struct Gateway {
    /// Bound address of each listener, by name, in config order.
    pub listeners: Vec<(String, SocketAddr)>,
    /// Bound address of the admin listener.
    pub admin: Option<SocketAddr>,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    drained: mpsc::Receiver<()>,
    tasks: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listeners", &self.listeners)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Validates and loads everything, binds every listener, and starts
    /// serving. Nothing is bound unless everything is valid.
    pub async fn start(settings: Settings) -> Result<Gateway, RunError> {
        let tls = check(&settings)?;
        let metrics = Arc::new(Metrics::new());

        let mut upstreams = Vec::new();
        for u in &settings.upstreams {
            let up = Upstream::new(u).map_err(|e| ConfigError::Invalid {
                context: format!("upstream \"{}\": name", u.name),
                message: e.to_string(),
            })?;
            upstreams.push(Arc::new(up));
        }

        // Bind everything before serving anything, so a busy port fails the
        // start as a whole.
        let mut bound = Vec::new();
        for (l, (_, tls)) in settings.listeners.iter().zip(tls) {
            let sock = TcpListener::bind(l.listen)
                .await
                .map_err(|source| RunError::Bind {
                    listener: l.name.clone(),
                    addr: l.listen,
                    source,
                })?;
            let upstream = upstreams
                .iter()
                .find(|u| u.settings.name == l.upstream)
                .cloned()
                .ok_or_else(|| ConfigError::Invalid {
                    context: format!("listener \"{}\": upstream", l.name),
                    message: format!("no [[upstream]] named \"{}\"", l.upstream),
                })?;
            let shared = ListenerShared::new(
                &l.name,
                tls,
                upstream,
                l.limits.clone(),
                metrics.listener(&l.name, &l.upstream),
            );
            bound.push((sock, Arc::new(shared)));
        }
        let admin_sock = match &settings.admin {
            Some(a) => {
                Some(
                    TcpListener::bind(a.listen)
                        .await
                        .map_err(|source| RunError::Bind {
                            listener: "admin".into(),
                            addr: a.listen,
                            source,
                        })?,
                )
            }
            None => None,
        };

        let (shutdown, shutdown_rx) = watch::channel(false);
        let (drain_tx, drained) = mpsc::channel(1);
        let mut tasks = Vec::new();
        let mut listeners = Vec::new();
        for (sock, shared) in bound {
            let addr = sock.local_addr().map_err(|source| RunError::Bind {
                listener: shared.name.to_string(),
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
            info!(listener = %shared.name, %addr, upstream = %shared.upstream.settings.name, "listening");
            for c in &shared.tls.load().served {
                let days = (c.not_after - now_unix()) / 86_400;
                if days < 14 {
                    warn!(listener = %shared.name, subject = %c.subject, days_left = days,
                        "server certificate expires soon (or has expired); replace it");
                }
            }
            listeners.push((shared.name.to_string(), addr));
            tasks.push(tokio::spawn(proxy::serve(
                sock,
                shared,
                shutdown_rx.clone(),
                drain_tx.clone(),
            )));
        }
        let admin = match admin_sock {
            Some(sock) => {
                let addr = sock.local_addr().ok();
                if let Some(a) = addr {
                    info!(addr = %a, "admin listening");
                }
                tasks.push(tokio::spawn(admin::serve(
                    sock,
                    metrics.clone(),
                    shutdown_rx.clone(),
                )));
                addr
            }
            None => None,
        };
        drop(drain_tx);

        Ok(Gateway {
            listeners,
            admin,
            metrics,
            shutdown,
            drained,
            tasks,
            grace: settings.shutdown_grace,
        })
    }

    /// The bound address of the listener called `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Stops accepting, asks open connections to finish their current
    /// request, and waits for them up to the grace period. Returns whether
    /// every connection finished in time.
    pub async fn shutdown(mut self) -> bool {
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        let grace = self.grace;
        let drained = tokio::time::timeout(grace, self.drained.recv())
            .await
            .is_ok();
        if drained {
            info!("all connections drained");
        } else {
            warn!(grace = ?grace, "shutdown grace period over; closing remaining connections");
        }
        drained
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs the gateway until SIGTERM or SIGINT, then drains and returns.
pub async fn run(settings: Settings) -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    let gateway = Gateway::start(settings).await?;
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!(
        signal = which,
        "shutting down: no new connections, finishing in-flight requests"
    );
    gateway.shutdown().await;
    info!("stopped");
    Ok(())
}
