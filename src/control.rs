//! How the rest of the process talks to the reload controller: the
//! commands it takes, what a reload reports, and the addresses as bound
//! now. Kept apart from [`crate::reload`] so the admin API can ask for a
//! reload without depending on the controller that serves it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::error::RunError;
use crate::proxy::upstream::Upstream;

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A watched file changed.
    Files,
    /// The periodic comparison of watched files.
    Poll,
    /// SIGHUP.
    Signal,
    /// `POST /api/reload`.
    Api,
}

impl Cause {
    /// How the log names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Files => "file change",
            Cause::Poll => "periodic file check",
            Cause::Signal => "SIGHUP",
            Cause::Api => "admin API",
        }
    }
}

/// What a successful reload changed, one line per change.
#[derive(Debug, Clone, Default)]
pub struct ReloadReport {
    /// Human-readable changes, e.g. `listener "agents": certificates reloaded`.
    pub changes: Vec<String>,
}

/// A reload's result.
pub(crate) type ReloadOutcome = Result<ReloadReport, RunError>;

/// Requests to the controller.
#[derive(Debug)]
pub enum Command {
    /// Reload now and report the outcome.
    Reload {
        /// Who asked.
        cause: Cause,
        /// Where to send the outcome.
        reply: oneshot::Sender<ReloadOutcome>,
    },
}

/// A cheap handle that asks the controller to reload.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<Command>,
}

impl ReloadHandle {
    /// A handle that sends to the controller's command channel.
    pub fn new(tx: mpsc::Sender<Command>) -> ReloadHandle {
        ReloadHandle { tx }
    }

    /// Reloads everything and waits for the outcome. Explicit reloads always
    /// rebuild, even when no file changed.
    pub async fn reload(&self, cause: Cause) -> ReloadOutcome {
        let (reply, rx) = oneshot::channel();
        let stopped =
            || RunError::Handover("the gateway is shutting down; nothing reloaded".into());
        self.tx
            .send(Command::Reload { cause, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Addresses as bound now, for callers outside the controller.
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    /// Bound address of each listener, by name, in config order.
    pub listeners: Vec<(String, SocketAddr)>,
    /// Bound address of the admin listener.
    pub admin: Option<SocketAddr>,
    /// The upstream each listener forwards to.
    pub upstreams: Vec<(String, Arc<Upstream>)>,
    /// The revocation state of each listener with client certificates.
    pub revocation: Vec<(String, Arc<crate::revocation::Revocation>)>,
    /// The client-auth mode of each listener (`required`, `observe`,
    /// `off`; `plain` for a listener without TLS).
    pub modes: Vec<(String, &'static str)>,
}
