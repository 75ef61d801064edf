//! One listener's TLS state, built whole from [`TlsSettings`] (certificates,
//! verifier, session store, ticketer) and then only read: a connection
//! takes the current [`ListenerTls`] at accept and keeps it.

use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::server::NoServerSessionStorage;
use rustls::server::danger::ClientCertVerifier;
use std::sync::Arc;

use crate::admission::Policy;
use crate::config::{ClientAuthMode, TlsSettings, TlsVersion};
use crate::error::ConfigError;

use super::chain_cache::ChainCache;
use super::crypto_provider;
use super::files::load_certified_key;
use super::key_kind::KeyKind;
use super::policy_verifier::PolicyVerifier;
use super::provider::protocol_versions;
use super::session_cache::SessionCache;
use super::sessions::{GuardedSessions, GuardedTickets, SessionGuard};
use super::sni::{Served, SniResolver};
use super::summary::CertSummary;
use super::trust_files::TrustFiles;
use crate::revocation::{Inputs, Revocation};

/// Everything a TLS listener needs, built once per (re)load and then shared
/// read-only by every connection accepted under it.
#[derive(Clone)]
pub struct ListenerTls {
    /// The rustls server config (certificates, verifier, session cache).
    pub server_config: Arc<ServerConfig>,
    /// The client-certificate verifier, kept so that resumed sessions can be
    /// re-verified: rustls restores a resumed session's client chain without
    /// calling the verifier.
    pub verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// The client-auth policy.
    pub mode: ClientAuthMode,
    /// `not_after` of each served certificate, for expiry reporting.
    pub served: Vec<CertSummary>,
    /// `not_after` of each trusted client CA, for expiry reporting.
    pub trusted: Vec<CertSummary>,
    /// The revocation state the verifier checks against (CRL files and
    /// fetched CRLs); shared with the previous state when the verifier is.
    pub(crate) revocation: Option<Arc<Revocation>>,
    /// What this build read for it (CRL files, URLs, cache): installed
    /// into `revocation` when this state is committed.
    pub(crate) revocation_inputs: Option<Arc<Inputs>>,
    /// The chain verifier, for the session guard (kept with the verifier).
    pub(super) chains: Option<Arc<ChainCache>>,
    /// Digest of everything the verifier and session store depend on
    /// (versions, cache size, mode, CA file bytes, policy; not the CRLs,
    /// which change the revocation state under a running verifier). Two states with
    /// the same digest verify clients identically, so a reload that only
    /// replaces server certificates keeps the verifier and session cache:
    /// a certificate rotation then costs the fleet no full handshakes.
    pub trust_digest: [u8; 32],
    /// Admission beyond CA validation (registry, allow rules); `None` when
    /// a CA-valid certificate is enough.
    pub policy: Option<Arc<Policy>>,
    /// What does not make the config invalid but will leave agents out:
    /// a TLS 1.2 name served with one key type only.
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("mode", &self.mode)
            .field("served", &self.served)
            .finish_non_exhaustive()
    }
}

impl ListenerTls {
    /// The policy's verdict on a connection's chain (device first), as the
    /// handshake would decide it now; `None` without a policy.
    pub(crate) fn decide(
        &self,
        fingerprint: &[u8; 32],
        chain: &[CertificateDer<'_>],
    ) -> Option<crate::admission::Verdict> {
        let policy = self.policy.as_deref()?;
        let (leaf, intermediates) = chain.split_first()?;
        Some(super::policy_verifier::decide(
            policy,
            self.chains.as_deref(),
            fingerprint,
            leaf,
            intermediates,
        ))
    }

    /// Loads every file `settings` names and builds the TLS state for the
    /// listener called `listener`. All file problems are reported together.
    ///
    /// With `previous` (the state being replaced on reload), the verifier
    /// and the session cache are carried over when nothing they depend on
    /// changed; otherwise both are new, so no session outlives the verifier
    /// generation it was created under.
    pub fn build(
        listener: &str,
        settings: &TlsSettings,
        previous: Option<&ListenerTls>,
        policy: Option<Policy>,
    ) -> Result<ListenerTls, ConfigError> {
        let provider = Arc::new(crypto_provider(&settings.versions));
        let mode = settings.client_auth.mode;
        let policy = policy
            .filter(|p| mode != ClientAuthMode::Off && !p.is_open())
            .map(Arc::new);
        let mut errors = Vec::new();

        let mut keys = Vec::new();
        let mut served = Vec::new();
        for (i, c) in settings.certificates.iter().enumerate() {
            match load_certified_key(listener, i, &c.cert, &c.key, &provider) {
                Ok((key, summary, names)) => match KeyKind::of(key.key.algorithm()) {
                    Some(kind) => {
                        keys.push((
                            Served {
                                key,
                                index: i,
                                kind,
                            },
                            names,
                        ));
                        served.push(summary);
                    }
                    None => errors.push(ConfigError::Invalid {
                        context: format!("listener \"{listener}\": tls.certificate[{i}].key"),
                        message: "unsupported key type; use an ECDSA P-256/P-384, RSA (2048+) or \
                                  Ed25519 key"
                            .into(),
                    }),
                },
                Err(e) => errors.push(e),
            }
        }
        let resolver = match SniResolver::new(keys) {
            Ok(r) => r,
            Err(clashes) => {
                for c in clashes {
                    errors.push(ConfigError::Invalid {
                        context: format!("listener \"{listener}\": tls.certificate"),
                        message: format!(
                            "certificates [{}] and [{}] are both {} certificates for \"{}\"; \
                             a name holds one certificate per key type (one ECDSA and one RSA \
                             is what legacy agents need): remove one, or give them different names",
                            c.first,
                            c.second,
                            c.kind.name(),
                            c.name
                        ),
                    });
                }
                None
            }
        };
        let key_warnings = match (&resolver, settings.versions.contains(&TlsVersion::V1_2)) {
            (Some(r), true) => r.key_type_warnings(),
            _ => Vec::new(),
        };

        let trust = match TrustFiles::read(listener, settings, policy.as_deref()) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.extend(e.into_list());
                None
            }
        };
        let reuse = match (&trust, previous) {
            (Some(t), Some(p)) if p.trust_digest == t.digest => Some(p),
            _ => None,
        };
        let verified = match (&trust, reuse) {
            (_, Some(p)) => Some((p.verifier.clone(), p.trusted.clone(), p.chains.clone())),
            (Some(t), None) => match t.verifier(listener, settings, provider.clone()) {
                Ok((v, trusted, chains)) => {
                    let observe = mode == ClientAuthMode::Observe;
                    let v = match v {
                        Some(inner) if policy.is_some() || observe => {
                            Some(Arc::new(PolicyVerifier {
                                inner,
                                policy: policy.clone(),
                                chains: chains.clone(),
                                observe,
                            })
                                as Arc<dyn ClientCertVerifier>)
                        }
                        v => v,
                    };
                    Some((v, trusted, chains))
                }
                Err(e) => {
                    errors.extend(e.into_list());
                    None
                }
            },
            (None, None) => None,
        };
        if let Some(e) = ConfigError::from_list(errors) {
            return Err(e);
        }
        let (Some(trust), Some((verifier, trusted, chains))) = (trust, verified) else {
            // Unreachable: every None above pushed an error.
            return Err(ConfigError::Invalid {
                context: format!("listener \"{listener}\": client_auth"),
                message: "cannot build the client-certificate verifier".into(),
            });
        };

        let resolver = resolver.ok_or_else(|| ConfigError::Invalid {
            context: format!("listener \"{listener}\": tls.certificate"),
            message: "no usable certificate".into(),
        })?;

        let builder = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&protocol_versions(&settings.versions))
            .map_err(|e| ConfigError::Invalid {
                context: format!("listener \"{listener}\": tls.versions"),
                message: e.to_string(),
            })?;
        let builder = match &verifier {
            Some(v) => builder.with_client_cert_verifier(v.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.ignore_client_order = true;
        config.session_storage = match reuse {
            Some(p) => p.server_config.session_storage.clone(),
            None if settings.session_cache == 0 => Arc::new(NoServerSessionStorage {}),
            None => {
                let cache = Arc::new(SessionCache::new(settings.session_cache));
                match SessionGuard::new(policy.clone(), chains.clone()) {
                    Some(guard) => Arc::new(GuardedSessions {
                        inner: cache,
                        guard,
                    }),
                    None => cache,
                }
            }
        };
        // Tickets are sealed with keys that belong to this trust
        // generation: when the client CAs, CRLs or policy change, a new
        // ticketer makes every older ticket undecryptable, so those clients
        // do a full handshake under the new verifier (DESIGN.md). A ticket
        // that does decrypt is still re-verified after the handshake.
        if settings.session_tickets {
            config.ticketer = match reuse {
                Some(p) => p.server_config.ticketer.clone(),
                None => {
                    let inner = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| {
                        ConfigError::Invalid {
                            context: format!("listener \"{listener}\": tls.session_tickets"),
                            message: format!("cannot create the ticket key: {e}"),
                        }
                    })?;
                    match SessionGuard::new(policy.clone(), chains.clone()) {
                        Some(guard) => Arc::new(GuardedTickets { inner, guard }),
                        None => inner,
                    }
                }
            };
        } else {
            config.send_tls13_tickets = 0;
        }

        Ok(ListenerTls {
            server_config: Arc::new(config),
            verifier,
            mode: settings.client_auth.mode,
            served,
            trusted,
            revocation: chains.as_ref().map(|c| c.revocation.clone()),
            revocation_inputs: trust.inputs.clone(),
            chains,
            warnings: key_warnings,
            trust_digest: trust.digest,
            policy: reuse.map_or(policy, |p| p.policy.clone()),
        })
    }
}
