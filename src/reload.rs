//! Reload: file watching, SIGHUP and `POST /api/reload` all lead here. A
//! reload loads the config file again, builds the complete new runtime
//! state (every certificate, key, CA and CRL read and validated, every new
//! listen address bound), and only then swaps it in. Any error leaves the
//! old state in force.
//!
//! One task, the [`Controller`], owns the running listeners and is the only
//! writer of their state; everything else sends it [`Command`]s.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher as _};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Notify, mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::admin;
use crate::admission::Policy;
use crate::clock::now_unix;
use crate::config::{Approval, ListenerSettings, Settings};
use crate::control::{Cause, Command, ReloadHandle, ReloadOutcome, ReloadReport, View};
use crate::error::{ConfigError, RunError};
use crate::handover;
use crate::metrics::{CertExpiry, Metrics};
use crate::proxy::upstream::Upstream;
use crate::proxy::{self, ListenerShared, ListenerState};
use crate::readiness::Readiness;
use crate::registry::Registry;
use crate::tls::ListenerTls;

/// How long the files must be quiet before a change is loaded: tools write
/// a cert and its key, or truncate then write, in quick succession.
pub const QUIET: Duration = Duration::from_millis(100);
/// A file that keeps changing is still loaded this long after the first
/// change.
const MAX_DELAY: Duration = Duration::from_secs(1);
/// A change seen by the watcher that does not load (a cert whose new key
/// is not written yet, a half-written file on a loaded machine) gets this
/// long for the rest of the write to arrive before it counts as a refused
/// reload: a tool writing the cert and then the key must not fire the
/// admin's "reload failed" alert.
const SETTLE: Duration = Duration::from_secs(1);
/// A backstop for changes the watcher cannot see (a watched directory
/// replaced, network file systems): files are compared this often.
const POLL: Duration = Duration::from_secs(30);
/// Certificates closer than this to expiry are logged as warnings.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// The listener and upstream state built from one [`Settings`], nothing
/// bound yet.
pub struct Built {
    listeners: Vec<(ListenerSettings, Option<Arc<ListenerTls>>, Arc<Upstream>)>,
    upstreams: Vec<Arc<Upstream>>,
    access: admin::Access,
}

/// Whether a reload runs when the watched files are unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rebuild {
    /// Always (SIGHUP, the admin API: the admin asked).
    Always,
    /// Only when some watched file's bytes changed.
    IfChanged,
}

/// What a reload that fails means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnFailure {
    /// Report it: log, `certgate_reloads_total{result="failure"}`, alert.
    Report,
    /// A write may still be in progress (a cert whose key follows): wait
    /// quietly, the settle time decides.
    Settle,
}

/// Whether `apply` starts the gateway or replaces running state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The first state: nothing runs yet, nothing to report as changed.
    Start,
    /// A reload: report what changed, stop what was removed.
    Reload,
}

/// What a rebuild may carry over from the state in force: the upstreams
/// (an unchanged one keeps its connection pool and server verdicts) and
/// each listener's TLS state (unchanged trust keeps its verifier and
/// session cache, so a certificate rotation costs no full handshakes).
#[derive(Default)]
pub struct Reuse {
    upstreams: Vec<Arc<Upstream>>,
    tls: Vec<(String, Arc<ListenerTls>)>,
}

impl Built {
    /// Loads every file `settings` names and builds TLS and upstream state,
    /// carrying over from `previous` what did not change. All problems are
    /// reported together.
    pub fn new(
        settings: &Settings,
        previous: Option<&Reuse>,
        registry: Option<&Registry>,
        metrics: Option<&Metrics>,
    ) -> Result<Built, ConfigError> {
        let mut errors = Vec::new();
        let mut upstreams = Vec::new();
        for u in &settings.upstreams {
            let old = previous.and_then(|p| p.upstreams.iter().find(|o| o.settings.name == u.name));
            match old {
                Some(up) if up.settings == *u => upstreams.push(up.clone()),
                _ => match Upstream::new(
                    u,
                    metrics.map_or_else(Vec::new, |m| m.server_up(&u.name, &u.servers)),
                    old.map(|o| &**o),
                ) {
                    Ok(up) => upstreams.push(Arc::new(up)),
                    Err(e) => errors.push(ConfigError::Invalid {
                        context: format!("upstream \"{}\": name", u.name),
                        message: e.to_string(),
                    }),
                },
            }
        }
        let tokens = match settings.admin.as_ref().and_then(|a| a.token_file.as_ref()) {
            Some(path) => match admin::Tokens::load(path) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(e);
                    admin::Tokens::default()
                }
            },
            None => admin::Tokens::default(),
        };
        if let Some(r) = &settings.registry {
            let store = crate::registry::store::check_writable(&r.path.resolved);
            // The audit log usually lives beside the store: one problem with
            // their directory is reported once.
            let same_dir = r.audit_log.resolved.parent() == r.path.resolved.parent();
            let audit = if store.is_err() && same_dir {
                Ok(())
            } else {
                crate::registry::store::check_writable(&r.audit_log.resolved)
            };
            for (key, result) in [("registry.path", store), ("registry.audit_log", audit)] {
                if let Err(message) = result {
                    errors.push(ConfigError::File {
                        context: key.into(),
                        message,
                    });
                }
            }
        }
        let mut listeners = Vec::new();
        for l in &settings.listeners {
            let old = previous.and_then(|p| {
                p.tls
                    .iter()
                    .find(|(name, _)| *name == l.name)
                    .map(|(_, t)| t.clone())
            });
            let tls = match &l.tls {
                None => None,
                Some(t) => {
                    let policy = Policy {
                        registry: registry.cloned(),
                        approval: settings
                            .registry
                            .as_ref()
                            .map_or(Approval::Manual, |r| r.approval),
                        rules: t.client_auth.allow.clone(),
                    };
                    match ListenerTls::build(&l.name, t, old.as_deref(), Some(policy)) {
                        Ok(t) => Some(Arc::new(t)),
                        Err(e) => {
                            errors.extend(e.into_list());
                            continue;
                        }
                    }
                }
            };
            match upstreams.iter().find(|u| u.settings.name == l.upstream) {
                Some(u) => listeners.push((l.clone(), tls, u.clone())),
                None => errors.push(ConfigError::Invalid {
                    context: format!("listener \"{}\": upstream", l.name),
                    message: format!("no [[upstream]] named \"{}\"", l.upstream),
                }),
            }
        }
        match ConfigError::from_list(errors) {
            Some(e) => Err(e),
            None => Ok(Built {
                listeners,
                upstreams,
                access: admin::Access {
                    tokens,
                    hosts: admin::guard::HostRules {
                        listen: settings.admin.as_ref().map(|a| a.listen),
                        allowed: settings
                            .admin
                            .as_ref()
                            .map(|a| a.allowed_hosts.clone())
                            .unwrap_or_default(),
                    },
                },
            }),
        }
    }

    /// Warnings that do not make the config invalid: certificates that
    /// expire within 14 days (what `run` logs at start and on reload).
    pub fn warnings(&self) -> Vec<String> {
        let now = now_unix();
        self.listeners
            .iter()
            .filter_map(|(l, t, _)| t.as_deref().map(|t| expiries(&l.name, t)))
            .flatten()
            .filter_map(|c| {
                expiry_warning(&c, now).map(|w| format!("listener \"{}\": {w}", c.listener))
            })
            .collect()
    }

    /// The built TLS state of each listener, by name.
    pub fn tls(&self) -> impl Iterator<Item = (&str, &ListenerTls)> {
        self.listeners
            .iter()
            .filter_map(|(l, t, _)| t.as_deref().map(|t| (l.name.as_str(), t)))
    }
}

/// One bound listener socket and the state it serves.
pub(crate) struct Running {
    pub(crate) name: String,
    pub(crate) configured: SocketAddr,
    pub(crate) addr: SocketAddr,
    pub(crate) socket: Arc<TcpListener>,
    shared: Arc<ListenerShared>,
    stop: watch::Sender<bool>,
}

/// The bound admin socket.
pub(crate) struct RunningAdmin {
    pub(crate) configured: SocketAddr,
    pub(crate) addr: SocketAddr,
    pub(crate) socket: Arc<TcpListener>,
    stop: watch::Sender<bool>,
}

/// Sockets to serve instead of binding: inherited from a predecessor.
pub(crate) type Inherited = Vec<handover::InheritedSocket>;

/// The single owner of the running listeners; applies reloads.
pub struct Controller {
    settings: Settings,
    listeners: Vec<Running>,
    admin: Option<RunningAdmin>,
    upstreams: Vec<Arc<Upstream>>,
    metrics: Arc<Metrics>,
    registry: Option<Registry>,
    readiness: Option<Readiness>,
    drain: mpsc::Sender<()>,
    view: Arc<ArcSwap<View>>,
    handle: ReloadHandle,
    access: Arc<ArcSwap<admin::Access>>,
    /// Digest of the config text and every file it names, as in force.
    digest: [u8; 32],
    /// Digest of the last refused attempt: the same bytes are not retried
    /// until something changes.
    refused: Option<[u8; 32]>,
    watcher: FileWatcher,
    changed: Arc<Notify>,
    /// CRLs already reported as stale: (listener, issuer).
    stale_crls: HashSet<(String, String)>,
}

impl Controller {
    /// What the next build may carry over from the state in force.
    fn reuse(&self) -> Reuse {
        Reuse {
            upstreams: self.upstreams.clone(),
            tls: self
                .listeners
                .iter()
                .filter_map(|r| r.shared.current().tls.clone().map(|t| (r.name.clone(), t)))
                .collect(),
        }
    }

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
            readiness: Some(Readiness::start(metrics.readiness_dropped())),
            metrics,
            registry,
            drain,
            view: Arc::new(ArcSwap::from_pointee(View::default())),
            handle,
            access: Arc::new(ArcSwap::from_pointee(admin::Access::default())),
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
            info!(name = %s.name, addr = %s.local, "inherited socket not in the config; closed");
        }
        controller.metrics.loaded(now_unix());
        controller.check_crls();
        Ok(controller)
    }

    /// The addresses as bound now (updated on every reload).
    pub fn view(&self) -> Arc<ArcSwap<View>> {
        self.view.clone()
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

    /// Logs a CRL going past its nextUpdate (once), with what that means
    /// under the listener's `crl_stale` policy.
    fn check_crls(&mut self) {
        let now = now_unix();
        for r in &self.listeners {
            let state = r.shared.current();
            let Some(tls) = &state.tls else { continue };
            let policy = self
                .settings
                .listeners
                .iter()
                .find(|l| l.name == r.name)
                .and_then(|l| l.tls.as_ref())
                .map(|t| t.client_auth.crl_stale);
            for c in &tls.crls {
                let key = (r.name.clone(), c.issuer.clone());
                let stale = c.next_update.is_some_and(|n| n < now);
                if stale && self.stale_crls.insert(key) {
                    match policy {
                        Some(crate::config::CrlStale::FailOpen) => warn!(
                            listener = %r.name, issuer = %c.issuer, next_update = c.next_update.unwrap_or(0),
                            "CRL is past its nextUpdate; crl_stale = \"fail_open\": devices of this CA are still admitted on the stale CRL; publish a fresh CRL"
                        ),
                        _ => warn!(
                            listener = %r.name, issuer = %c.issuer, next_update = c.next_update.unwrap_or(0),
                            "CRL is past its nextUpdate; crl_stale = \"fail_closed\": devices of this CA are REFUSED (reason crl_expired) until a fresh CRL is loaded"
                        ),
                    }
                } else if !stale {
                    self.stale_crls.remove(&(r.name.clone(), c.issuer.clone()));
                }
            }
        }
    }

    fn stop_all(&mut self) {
        for l in &self.listeners {
            let _ = l.stop.send(true);
        }
        if let Some(a) = &self.admin {
            let _ = a.stop.send(true);
        }
    }

    /// Gives every bound socket to a successor process; true once it has
    /// taken them and this process should drain and exit.
    async fn hand_over(&mut self, conn: std::io::Result<tokio::net::UnixStream>) -> bool {
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

    /// Loads the configuration and its files and makes them the running
    /// state, unless `force` is false and no watched file changed since the
    /// state in force (or since the last refused attempt). `settling` is a first attempt right after a file event: a failure is
    /// returned without being recorded, logged as refused or remembered, so
    /// the caller can give the writer [`SETTLE`] to finish and try again.
    async fn reload(
        &mut self,
        cause: Cause,
        rebuild: Rebuild,
        failure: OnFailure,
    ) -> ReloadOutcome {
        let force = rebuild == Rebuild::Always;
        let settling = failure == OnFailure::Settle;
        let started = std::time::Instant::now();
        let source = self.settings.source.clone();
        let result = match Settings::load(&source) {
            Ok(settings) => {
                let digest = files_digest(&settings.files());
                if !force && digest == self.digest && self.refused.is_some() {
                    // A refused change was undone (files restored, a deleted
                    // cert put back): what is on disk is again what runs, so
                    // the "last reload failed" signal must clear, or the
                    // admin's alert would keep firing for a fixed problem.
                    self.refused = None;
                    self.metrics.reload(true, now_unix());
                    info!(
                        cause = cause.as_str(),
                        "watched files are back to the configuration in force; reload state is successful again"
                    );
                    return Ok(ReloadReport::default());
                }
                if !force && (digest == self.digest || Some(digest) == self.refused) {
                    debug!(
                        cause = cause.as_str(),
                        "watched files unchanged; nothing to reload"
                    );
                    return Ok(ReloadReport::default());
                }
                crate::notify::reloading();
                let reuse = self.reuse();
                let built = Built::new(
                    &settings,
                    Some(&reuse),
                    self.registry.as_ref(),
                    Some(&self.metrics),
                );
                let result = match built {
                    Ok(built) => self
                        .apply(settings, built, &mut Vec::new(), Phase::Reload)
                        .await
                        .map(|r| (r, digest))
                        .map_err(|e| (e, Some(digest))),
                    Err(e) => Err((RunError::Config(e), Some(digest))),
                };
                crate::notify::ready(match &result {
                    Ok(_) => "serving; last reload succeeded",
                    Err(_) if settling => {
                        "serving; waiting for changed files to be written completely"
                    }
                    Err(_) => "serving; last reload FAILED, previous configuration in force",
                });
                result
            }
            Err(e) => {
                let digest = files_digest(std::slice::from_ref(&source));
                if !force && Some(digest) == self.refused {
                    return Err(RunError::Config(e));
                }
                Err((RunError::Config(e), Some(digest)))
            }
        };
        match result {
            Ok((report, digest)) => {
                self.check_crls();
                self.digest = digest;
                self.refused = None;
                // The files may have moved (config change, new symlink
                // targets): watch where they are now.
                self.watcher.update(&self.settings.files());
                self.metrics.reload(true, now_unix());
                info!(
                    cause = cause.as_str(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    changes = %if report.changes.is_empty() { "none".to_string() } else { report.changes.join("; ") },
                    "reloaded {}", source.display()
                );
                Ok(report)
            }
            Err((e, _)) if settling => {
                debug!(cause = cause.as_str(), problem = %e,
                    "changed files do not load yet; waiting for the rest of the write");
                Err(e)
            }
            Err((e, digest)) => {
                // (Unchanged refused bytes returned early above.)
                self.refused = digest;
                self.metrics.reload(false, now_unix());
                let problems = match e {
                    RunError::Config(c) => {
                        let list = c.into_list();
                        for p in &list {
                            error!(cause = cause.as_str(), problem = %p, "reload refused");
                        }
                        RunError::Config(ConfigError::from_list(list).unwrap_or(
                            ConfigError::Invalid {
                                context: source.display().to_string(),
                                message: "unknown problem".into(),
                            },
                        ))
                    }
                    other => {
                        error!(cause = cause.as_str(), problem = %other, "reload refused");
                        other
                    }
                };
                warn!(
                    "the previous configuration and certificates stay in force; fix the file(s) named above \
                     (a corrected file is picked up on its next write, or run `kill -HUP` / POST /api/reload)"
                );
                Err(problems)
            }
        }
    }

    /// Makes `built` the running state: binds what is new, swaps state into
    /// listeners that stay, stops listeners that went away. Binding happens
    /// first, so a failure changes nothing.
    async fn apply(
        &mut self,
        settings: Settings,
        built: Built,
        inherited: &mut Inherited,
        phase: Phase,
    ) -> Result<ReloadReport, RunError> {
        let mut report = ReloadReport::default();
        // Which running socket each new listener keeps: same name and same
        // configured address, or failing that a listener that is going away
        // at the same (fixed) address, so a rename does not need a rebind.
        let mut keep: Vec<Option<usize>> = Vec::new();
        let mut claimed = HashSet::new();
        for (l, _, _) in &built.listeners {
            let same = self
                .listeners
                .iter()
                .position(|r| r.name == l.name && r.configured == l.listen);
            keep.push(same);
            if let Some(i) = same {
                claimed.insert(i);
            }
        }
        for (k, (l, _, _)) in keep.iter_mut().zip(&built.listeners) {
            if k.is_none() && l.listen.port() != 0 {
                let gone = self.listeners.iter().enumerate().position(|(i, r)| {
                    !claimed.contains(&i)
                        && r.configured == l.listen
                        && !built.listeners.iter().any(|(n, _, _)| n.name == r.name)
                });
                if let Some(i) = gone {
                    claimed.insert(i);
                    *k = Some(i);
                }
            }
        }

        // Bind every new address before changing anything.
        let mut fresh = Vec::new();
        for (k, (l, _, _)) in keep.iter().zip(&built.listeners) {
            if k.is_some() {
                fresh.push(None);
                continue;
            }
            let socket = take_or_bind(
                inherited,
                &format!("listener:{}", l.name),
                &l.name,
                l.listen,
            )
            .await?;
            fresh.push(Some(socket));
        }
        let admin_change = match (&settings.admin, &self.admin) {
            (Some(a), Some(r)) if a.listen == r.configured => None,
            (Some(a), _) => Some(Some(
                take_or_bind(inherited, "admin", "admin", a.listen).await?,
            )),
            (None, Some(_)) => Some(None),
            (None, None) => None,
        };

        // Commit: nothing below can fail. Admin access first: the admin
        // listener may start serving below, and must never serve a request
        // under the empty (loopback, no token) rules of a controller that
        // has not been configured yet.
        self.access.store(Arc::new(built.access));
        let mut old: Vec<Option<Running>> = std::mem::take(&mut self.listeners)
            .into_iter()
            .map(Some)
            .collect();
        let mut running = Vec::new();
        let mut expiry = Vec::new();
        for ((k, socket), (l, tls, upstream)) in keep.into_iter().zip(fresh).zip(built.listeners) {
            if let Some(t) = &tls {
                expiry.extend(expiries(&l.name, t));
            }
            let state = ListenerState::new(
                &l.name,
                tls.clone(),
                l.allow_from.clone(),
                self.readiness.clone(),
                upstream,
                l.limits.clone(),
                self.metrics.listener(&l.name, &l.upstream),
                settings.shutdown_grace,
            );
            match (
                k.and_then(|i| old.get_mut(i).and_then(Option::take)),
                socket,
            ) {
                (Some(mut r), _) => {
                    let before = r.shared.current();
                    describe_change(&mut report, &l, &before, &tls, &r.name);
                    r.name = l.name.clone();
                    r.shared.replace(state);
                    running.push(r);
                }
                (None, Some(socket)) => {
                    let addr = socket.local_addr().unwrap_or(l.listen);
                    info!(listener = %l.name, %addr, upstream = %l.upstream, "listening");
                    if phase == Phase::Reload {
                        report
                            .changes
                            .push(format!("listener \"{}\" added on {addr}", l.name));
                    }
                    let socket = Arc::new(socket);
                    let shared = Arc::new(ListenerShared::new(state));
                    let (stop, stop_rx) = watch::channel(false);
                    tokio::spawn(proxy::serve(
                        socket.clone(),
                        shared.clone(),
                        stop_rx,
                        self.drain.clone(),
                    ));
                    running.push(Running {
                        name: l.name.clone(),
                        configured: l.listen,
                        addr,
                        socket,
                        shared,
                        stop,
                    });
                }
                (None, None) => {}
            }
        }
        for r in old.into_iter().flatten() {
            let moved = running.iter().any(|n| n.name == r.name);
            report.changes.push(if moved {
                format!(
                    "listener \"{}\" moved from {} (that socket stops accepting and drains)",
                    r.name, r.addr
                )
            } else {
                format!(
                    "listener \"{}\" on {} removed (stops accepting; open connections finish and close)",
                    r.name, r.addr
                )
            });
            let _ = r.stop.send(true);
        }
        self.listeners = running;

        if let Some(change) = admin_change {
            if let Some(old) = self.admin.take() {
                let _ = old.stop.send(true);
                report
                    .changes
                    .push(format!("admin listener on {} closed", old.addr));
            }
            if let (Some(socket), Some(a)) = (change, &settings.admin) {
                let addr = socket.local_addr().unwrap_or(a.listen);
                info!(%addr, "admin listening");
                let socket = Arc::new(socket);
                let (stop, stop_rx) = watch::channel(false);
                tokio::spawn(admin::serve(
                    socket.clone(),
                    admin::AdminContext {
                        metrics: self.metrics.clone(),
                        reload: self.handle.clone(),
                        registry: self.registry.clone(),
                        readiness: self.readiness.clone(),
                        access: self.access.clone(),
                        view: self.view.clone(),
                    },
                    stop_rx,
                ));
                self.admin = Some(RunningAdmin {
                    configured: a.listen,
                    addr,
                    socket,
                    stop,
                });
            }
        }

        // A server no longer in its upstream (or whose upstream is gone)
        // loses its up gauge; a stale 0 would page someone forever.
        for old in &self.settings.upstreams {
            let now = settings.upstreams.iter().find(|u| u.name == old.name);
            for server in &old.servers {
                if !now.is_some_and(|u| u.servers.contains(server)) {
                    self.metrics.forget_server(&old.name, *server);
                }
            }
        }
        for u in &settings.upstreams {
            let before = self.settings.upstreams.iter().find(|o| o.name == u.name);
            if phase == Phase::Reload && before != Some(u) {
                report
                    .changes
                    .push(format!("upstream \"{}\": servers {:?}", u.name, u.servers));
            }
        }
        if phase == Phase::Reload {
            crate::registry::warn_if_changed(
                self.settings.registry.as_ref(),
                settings.registry.as_ref(),
            );
        }
        if settings.log != self.settings.log {
            warn!("[log] changes take effect when certgate is restarted");
        }
        self.upstreams = built.upstreams;
        self.metrics.set_certificates(&expiry);
        let crls: Vec<(String, String, Option<i64>)> = self
            .listeners
            .iter()
            .filter_map(|r| {
                let st = r.shared.current();
                st.tls.clone().map(|t| (r.name.clone(), t))
            })
            .flat_map(|(name, t)| {
                t.crls
                    .iter()
                    .map(|c| (name.clone(), c.issuer.clone(), c.next_update))
                    .collect::<Vec<_>>()
            })
            .collect();
        self.metrics.set_crls(&crls);
        warn_expiring(&expiry);
        self.view.store(Arc::new(View {
            listeners: self
                .listeners
                .iter()
                .map(|r| (r.name.clone(), r.addr))
                .collect(),
            admin: self.admin.as_ref().map(|a| a.addr),
            upstreams: self
                .listeners
                .iter()
                .map(|r| (r.name.clone(), r.shared.current().upstream.clone()))
                .collect(),
        }));
        self.settings = settings;
        Ok(report)
    }
}

fn describe_change(
    report: &mut ReloadReport,
    l: &ListenerSettings,
    before: &ListenerState,
    tls: &Option<Arc<ListenerTls>>,
    old_name: &str,
) {
    if old_name != l.name {
        report
            .changes
            .push(format!("listener \"{old_name}\" renamed to \"{}\"", l.name));
    }
    let served = |t: &ListenerTls| {
        t.served
            .iter()
            .map(|c| c.fingerprint.clone())
            .collect::<Vec<_>>()
    };
    match (&before.tls, tls) {
        (Some(a), Some(b)) => {
            if served(a) != served(b) {
                report.changes.push(format!(
                    "listener \"{}\": server certificate(s) replaced",
                    l.name
                ));
            }
            if a.trust_digest != b.trust_digest {
                report.changes.push(format!(
                    "listener \"{}\": client CA / CRL / TLS policy changed (open connections re-checked)",
                    l.name
                ));
            }
        }
        (None, None) => {}
        _ => report.changes.push(format!(
            "listener \"{}\": switched between TLS and plain HTTP",
            l.name
        )),
    }
    if before.upstream.settings.name != l.upstream {
        report.changes.push(format!(
            "listener \"{}\": upstream \"{}\" -> \"{}\"",
            l.name, before.upstream.settings.name, l.upstream
        ));
    }
    if before.limits != l.limits {
        report
            .changes
            .push(format!("listener \"{}\": limits changed", l.name));
    }
}

fn expiries(listener: &str, tls: &ListenerTls) -> Vec<CertExpiry> {
    let served = tls.served.iter().map(|c| (c, "server"));
    let trusted = tls.trusted.iter().map(|c| (c, "client_ca"));
    served
        .chain(trusted)
        .map(|(c, role)| CertExpiry {
            listener: listener.to_string(),
            role,
            subject: c.subject.clone(),
            not_after: c.not_after,
        })
        .collect()
}

/// The warning about a certificate that has expired or expires within
/// [`EXPIRY_WARNING_DAYS`], if it does: what `run` logs and `check` prints.
fn expiry_warning(c: &CertExpiry, now: i64) -> Option<String> {
    let what = if c.role == "server" {
        "server"
    } else {
        "client CA"
    };
    let days = (c.not_after - now).div_euclid(86_400);
    if c.not_after <= now {
        Some(format!(
            "the {what} certificate \"{}\" has EXPIRED; replace it",
            c.subject
        ))
    } else if days < EXPIRY_WARNING_DAYS {
        Some(format!(
            "the {what} certificate \"{}\" expires in {days} day(s); replace it",
            c.subject
        ))
    } else {
        None
    }
}

fn warn_expiring(certs: &[CertExpiry]) {
    let now = now_unix();
    for c in certs {
        if let Some(w) = expiry_warning(c, now) {
            warn!(listener = %c.listener, role = c.role, subject = %c.subject, "{w}");
        }
    }
}

async fn take_or_bind(
    inherited: &mut Inherited,
    key: &str,
    name: &str,
    listen: SocketAddr,
) -> Result<TcpListener, RunError> {
    let found = inherited
        .iter()
        .position(|s| s.name == key && s.configured == listen)
        .or_else(|| {
            inherited
                .iter()
                .position(|s| s.configured == listen && listen.port() != 0)
        });
    if let Some(i) = found {
        let s = inherited.swap_remove(i);
        info!(listener = %name, addr = %s.local, "serving a socket inherited from the previous process");
        return s.into_tokio().map_err(|source| RunError::Bind {
            listener: name.to_string(),
            addr: listen,
            source,
        });
    }
    bind(name, listen)
}

/// Binds a listening socket the way every certgate listener is bound:
/// SO_REUSEADDR (restart while old connections sit in TIME_WAIT) and a
/// deep backlog for fleet reconnect storms.
pub(crate) fn bind(name: &str, listen: SocketAddr) -> Result<TcpListener, RunError> {
    let err = |source| RunError::Bind {
        listener: name.to_string(),
        addr: listen,
        source,
    };
    let socket = if listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(listen).map_err(err)?;
    socket.listen(4096).map_err(err)
}

async fn accept_unix(l: Option<&UnixListener>) -> std::io::Result<tokio::net::UnixStream> {
    match l {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// Digest of the config text and the bytes of every file it names: a
/// watcher event or poll tick that changed nothing is not a reload.
fn files_digest(files: &[PathBuf]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for f in files {
        ctx.update(f.as_os_str().as_encoded_bytes());
        match std::fs::read(f) {
            Ok(bytes) => {
                ctx.update(&(bytes.len() as u64).to_le_bytes());
                ctx.update(&bytes);
            }
            Err(e) => ctx.update(format!("error:{e}").as_bytes()),
        }
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Watches the directories that hold the config's files. Directories, not
/// files: an editor or certbot writes a temp file and renames it over the
/// old one, and Kubernetes swaps a `..data` symlink; a watch on the old
/// file would see neither.
struct FileWatcher {
    watcher: Option<notify::RecommendedWatcher>,
    names: Arc<Mutex<HashSet<OsString>>>,
    dirs: BTreeSet<PathBuf>,
}

impl FileWatcher {
    fn new(changed: Arc<Notify>) -> FileWatcher {
        let names: Arc<Mutex<HashSet<OsString>>> = Arc::default();
        let filter = names.clone();
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let Ok(ev) = ev else {
                // Overflow or watcher error: a reload check is the safe answer.
                changed.notify_one();
                return;
            };
            if ev.kind.is_access() {
                return;
            }
            let relevant = match filter.lock() {
                Ok(names) => ev.paths.iter().any(|p| {
                    p.file_name().is_some_and(|n| {
                        names.contains(n) || n.as_encoded_bytes().starts_with(b"..")
                    })
                }),
                Err(_) => true,
            };
            if relevant {
                changed.notify_one();
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "cannot watch files; changes are picked up by the {}s check, SIGHUP or POST /api/reload", POLL.as_secs());
                None
            }
        };
        FileWatcher {
            watcher,
            names,
            dirs: BTreeSet::new(),
        }
    }

    /// Watches the directories of `files` (and of their symlink targets)
    /// and no others.
    fn update(&mut self, files: &[PathBuf]) {
        let mut dirs = BTreeSet::new();
        let mut names = HashSet::new();
        for f in files {
            let mut add = |p: &Path| {
                if let Some(n) = p.file_name() {
                    names.insert(n.to_os_string());
                }
                let dir = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                dirs.insert(dir);
            };
            add(f);
            if let Ok(real) = std::fs::canonicalize(f)
                && real != *f
            {
                add(&real);
            }
        }
        if let Ok(mut n) = self.names.lock() {
            *n = names;
        }
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        for gone in self.dirs.difference(&dirs) {
            let _ = w.unwatch(gone);
        }
        for new in dirs.difference(&self.dirs) {
            if let Err(e) = w.watch(new, RecursiveMode::NonRecursive) {
                warn!(dir = %new.display(), error = %e,
                    "cannot watch directory; changes there are picked up by the periodic check, SIGHUP or POST /api/reload");
            }
        }
        self.dirs = dirs;
    }
}
