//! Applying a [`Built`] state: bind what the [`plan`](super::plan) says is
//! new, then commit — swap state into the listeners that stay, start the
//! new ones, stop the ones that went — and publish metrics and the view.
//! Binding comes first and is the only step that can fail, so a failure
//! changes nothing (the "bind before commit" invariant).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::admin;
use crate::config::Settings;
use crate::control::{ReloadReport, View};
use crate::error::RunError;
use crate::metrics::CertExpiry;
use crate::proxy::{self, ListenerShared, ListenerState};

use super::bind::{Inherited, take_or_bind};
use super::build::{Built, BuiltListener};
use super::changes::{describe_change, describe_stop};
use super::controller::{Controller, Running, RunningAdmin};
use super::expiry::{admin_expiries, expiries, warn_expiring};
use super::plan::{AdminSocket, Plan, Slot, Socket, plan};

/// Whether `apply` starts the gateway or replaces running state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// The first state: nothing runs yet, nothing to report as changed.
    Start,
    /// A reload: report what changed, stop what was removed.
    Reload,
}

/// The sockets bound for a plan, before anything is committed.
struct Bound {
    /// One per planned listener: `Some` where the plan says bind.
    listeners: Vec<Option<TcpListener>>,
    /// The new admin socket, where the plan says bind.
    admin: Option<TcpListener>,
}

impl Controller {
    /// Makes `built` the running state: binds what is new, swaps state into
    /// listeners that stay, stops listeners that went away. Binding happens
    /// first, so a failure changes nothing.
    pub(super) async fn apply(
        &mut self,
        settings: Settings,
        built: Built,
        inherited: &mut Inherited,
        phase: Phase,
    ) -> Result<ReloadReport, RunError> {
        let running: Vec<Slot<'_>> = self
            .listeners
            .iter()
            .map(|r| Slot {
                name: &r.name,
                listen: r.configured,
            })
            .collect();
        let next: Vec<Slot<'_>> = built
            .listeners
            .iter()
            .map(|l| Slot {
                name: &l.settings.name,
                listen: l.settings.listen,
            })
            .collect();
        let plan = plan(
            &running,
            &next,
            self.admin.as_ref().map(|a| a.configured),
            settings.admin.as_ref().map(|a| a.listen),
        );
        let bound = bind_planned(&plan, &built.listeners, inherited).await?;

        // Commit: nothing below can fail. Admin access first: the admin
        // listener may start serving below, and must never serve a request
        // under the empty (loopback, no token) rules of a controller that
        // has not been configured yet.
        let mut report = ReloadReport::default();
        self.access.store(Arc::new(built.access));
        let mut expiry = self.commit_listeners(
            &settings,
            &plan,
            bound.listeners,
            built.listeners,
            phase,
            &mut report,
        );
        self.commit_admin(&settings, plan.admin, bound.admin, &mut report);
        if let Some(t) = &self.access.load().tls {
            expiry.extend(admin_expiries(t));
        }
        self.report_upstreams(&settings, phase, &mut report);
        if phase == Phase::Reload {
            crate::registry::warn_if_changed(
                self.settings.registry.as_ref(),
                settings.registry.as_ref(),
            );
            if let (Some(reg), Some(new)) = (&self.registry, &settings.registry)
                && self
                    .settings
                    .registry
                    .as_ref()
                    .is_none_or(|old| old.renewal_identities != new.renewal_identities)
            {
                reg.set_identities(new.renewal_identities.clone());
            }
        }
        if settings.log != self.settings.log {
            warn!("[log] changes take effect when certgate is restarted");
        }
        self.upstreams = built.upstreams;
        self.publish(&expiry);
        self.settings = settings;
        Ok(report)
    }

    /// Starts, updates and stops listeners as planned; returns the expiry
    /// rows of the certificates now served and trusted.
    fn commit_listeners(
        &mut self,
        settings: &Settings,
        plan: &Plan,
        sockets: Vec<Option<TcpListener>>,
        next: Vec<BuiltListener>,
        phase: Phase,
        report: &mut ReloadReport,
    ) -> Vec<CertExpiry> {
        let mut old: Vec<Option<Running>> = std::mem::take(&mut self.listeners)
            .into_iter()
            .map(Some)
            .collect();
        let mut running = Vec::new();
        let mut expiry = Vec::new();
        for ((socket, fresh), l) in plan.listeners.iter().zip(sockets).zip(next) {
            let BuiltListener {
                settings: ls,
                tls,
                upstream,
            } = l;
            if let Some(t) = &tls {
                expiry.extend(expiries(&ls.name, t));
                for w in &t.warnings {
                    warn!(listener = %ls.name, "{w}");
                }
                // The CRLs this reload read take effect (on a kept
                // verifier too), and the fetcher follows its inputs.
                if let (Some(r), Some(i)) = (&t.revocation, &t.revocation_inputs) {
                    r.install(i);
                    crate::revocation::fetcher::start(r, self.metrics.clone());
                }
            }
            let state = ListenerState::new(
                &ls,
                tls.clone(),
                upstream,
                self.readiness.clone(),
                self.metrics.listener(&ls.name, &ls.upstream),
                settings.shutdown_grace,
            );
            let kept = match socket {
                Socket::Keep(i) => old.get_mut(*i).and_then(Option::take),
                Socket::Bind => None,
            };
            match (kept, fresh) {
                (Some(mut r), _) => {
                    let before = r.shared.current();
                    describe_change(report, &ls, &before, &tls, &r.name);
                    r.name = ls.name.clone();
                    r.shared.replace(state);
                    running.push(r);
                }
                (None, Some(socket)) => {
                    let addr = socket.local_addr().unwrap_or(ls.listen);
                    info!(listener = %ls.name, %addr, upstream = %ls.upstream, "listening");
                    if phase == Phase::Reload {
                        report
                            .changes
                            .push(format!("listener \"{}\" added on {addr}", ls.name));
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
                        name: ls.name.clone(),
                        configured: ls.listen,
                        addr,
                        socket,
                        shared,
                        stop,
                    });
                }
                // The plan binds every listener it does not keep.
                (None, None) => {}
            }
        }
        for &(i, why) in &plan.stop {
            if let Some(r) = old.get_mut(i).and_then(Option::take) {
                report.changes.push(describe_stop(&r.name, r.addr, why));
                let _ = r.stop.send(true);
            }
        }
        self.listeners = running;
        expiry
    }

    /// Closes the old admin socket and serves the new one, as planned.
    fn commit_admin(
        &mut self,
        settings: &Settings,
        planned: AdminSocket,
        fresh: Option<TcpListener>,
        report: &mut ReloadReport,
    ) {
        if planned == AdminSocket::Unchanged {
            return;
        }
        if let Some(old) = self.admin.take() {
            let _ = old.stop.send(true);
            report
                .changes
                .push(format!("admin listener on {} closed", old.addr));
        }
        let (Some(socket), Some(a)) = (fresh, &settings.admin) else {
            return;
        };
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
                sessions: self.console_sessions.clone(),
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

    /// Drops the up gauges of servers that left their upstream (a stale 0
    /// would page someone forever) and reports upstreams that changed.
    fn report_upstreams(&self, settings: &Settings, phase: Phase, report: &mut ReloadReport) {
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
    }

    /// Publishes what now runs: certificate and CRL gauges, expiry
    /// warnings, and the [`View`] the admin API and tests read.
    fn publish(&self, expiry: &[CertExpiry]) {
        self.metrics.set_certificates(expiry);
        let crls: Vec<(String, String, Option<i64>, Option<i64>)> = self
            .listeners
            .iter()
            .filter_map(|r| {
                let revocation = r.shared.current().tls.as_ref()?.revocation.clone()?;
                Some((r.name.clone(), revocation))
            })
            .flat_map(|(name, revocation)| {
                crate::revocation::gauges(&revocation.current())
                    .into_iter()
                    .map(|(issuer, next, number)| (name.clone(), issuer, next, number))
                    .collect::<Vec<_>>()
            })
            .collect();
        self.metrics.set_crls(&crls);
        warn_expiring(expiry);
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
            revocation: self
                .listeners
                .iter()
                .filter_map(|r| {
                    let revocation = r.shared.current().tls.as_ref()?.revocation.clone()?;
                    Some((r.name.clone(), revocation))
                })
                .collect(),
            modes: self
                .listeners
                .iter()
                .map(|r| {
                    let mode = match r.shared.current().tls.as_ref().map(|t| t.mode) {
                        None => "plain",
                        Some(crate::config::ClientAuthMode::Required) => "required",
                        Some(crate::config::ClientAuthMode::Observe) => "observe",
                        Some(crate::config::ClientAuthMode::Off) => "off",
                    };
                    (r.name.clone(), mode)
                })
                .collect(),
        }));
    }
}

/// Binds (or takes over) every socket the plan needs. The first failure
/// returns; sockets bound before it close as they drop.
async fn bind_planned(
    plan: &Plan,
    next: &[BuiltListener],
    inherited: &mut Inherited,
) -> Result<Bound, RunError> {
    let mut listeners = Vec::with_capacity(next.len());
    for (socket, l) in plan.listeners.iter().zip(next) {
        let l = &l.settings;
        listeners.push(match socket {
            Socket::Keep(_) => None,
            Socket::Bind => Some(
                take_or_bind(
                    inherited,
                    &format!("listener:{}", l.name),
                    &l.name,
                    l.listen,
                )
                .await?,
            ),
        });
    }
    let admin = match plan.admin {
        AdminSocket::Bind(listen) => Some(take_or_bind(inherited, "admin", "admin", listen).await?),
        AdminSocket::Unchanged | AdminSocket::Close => None,
    };
    Ok(Bound { listeners, admin })
}
