//! Building the next running state from [`Settings`]: every certificate,
//! key, CA, CRL and token file read and checked, upstreams created, all
//! problems collected — and nothing bound. `certgate check` stops here;
//! a reload goes on to [`super::apply`] only when this succeeds.

use std::sync::Arc;

use crate::admin;
use crate::admission::Policy;
use crate::clock::now_unix;
use crate::config::{Approval, ListenerSettings, Settings};
use crate::error::ConfigError;
use crate::metrics::Metrics;
use crate::proxy::upstream::Upstream;
use crate::registry::Registry;
use crate::tls::ListenerTls;

use super::expiry::{admin_expiries, expiries, expiry_warning};

/// The listener and upstream state built from one [`Settings`], nothing
/// bound yet.
pub struct Built {
    pub(super) listeners: Vec<BuiltListener>,
    pub(super) upstreams: Vec<Arc<Upstream>>,
    pub(super) access: admin::Access,
}

/// One listener of the next state: its settings, its TLS state (none for
/// a plain-HTTP listener) and the upstream it forwards to.
pub(super) struct BuiltListener {
    pub(super) settings: ListenerSettings,
    pub(super) tls: Option<Arc<ListenerTls>>,
    pub(super) upstream: Arc<Upstream>,
}

/// What a rebuild may carry over from the state in force: the upstreams
/// (an unchanged one keeps its connection pool and server verdicts) and
/// each listener's TLS state (unchanged trust keeps its verifier and
/// session cache, so a certificate rotation costs no full handshakes).
#[derive(Default)]
pub struct Reuse {
    pub(super) upstreams: Vec<Arc<Upstream>>,
    pub(super) tls: Vec<(String, Arc<ListenerTls>)>,
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
        let admin_tls = match settings
            .admin
            .as_ref()
            .map(crate::tls::admin::AdminTls::build)
        {
            Some(Ok(t)) => t.map(Arc::new),
            Some(Err(e)) => {
                errors.extend(e.into_list());
                None
            }
            None => None,
        };
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
                        renewal: t.client_auth.renewal.clone(),
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
                Some(u) => listeners.push(BuiltListener {
                    settings: l.clone(),
                    tls,
                    upstream: u.clone(),
                }),
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
                    tls: admin_tls,
                },
            }),
        }
    }

    /// Warnings that do not make the config invalid: certificates that
    /// expire within 14 days (what `run` logs at start and on reload), and
    /// TLS 1.2 names served with one key type only (agents left out).
    pub fn warnings(&self) -> Vec<String> {
        let now = now_unix();
        let expiring = self
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_deref().map(|t| expiries(&l.settings.name, t)))
            .flatten()
            .filter_map(|c| {
                expiry_warning(&c, now).map(|w| format!("listener \"{}\": {w}", c.listener))
            });
        let admin = self
            .access
            .tls
            .iter()
            .flat_map(|t| admin_expiries(t))
            .filter_map(|c| expiry_warning(&c, now).map(|w| format!("[admin.tls]: {w}")));
        let expiring = expiring.chain(admin);
        let key_types = self.listeners.iter().flat_map(|l| {
            l.tls
                .iter()
                .flat_map(|t| t.warnings.iter())
                .map(|w| format!("listener \"{}\": {w}", l.settings.name))
        });
        expiring.chain(key_types).collect()
    }

    /// The built TLS state of each listener, by name.
    pub fn tls(&self) -> impl Iterator<Item = (&str, &ListenerTls)> {
        self.listeners
            .iter()
            .filter_map(|l| l.tls.as_deref().map(|t| (l.settings.name.as_str(), t)))
    }
}
