//! Re-checking open connections when the trust or the registry changes:
//! a device revoked or blocked is cut off on its open connections too.

use super::ListenerShared;
use crate::admission::{Failure, Verdict};
use crate::config::ClientAuthMode;
use crate::tls::{self, ListenerTls};
use rustls::pki_types::CertificateDer;
use std::sync::Arc;

/// What a connection was admitted with, so that a reload that changes the
/// client CAs, CRLs or policy can re-check it: a device revoked or no longer
/// trusted is cut off on its open connections too, not only on its next
/// handshake (DESIGN.md, "refused on every path").
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    pub(super) shared: Arc<ListenerShared>,
    pub(super) fingerprint: Option<[u8; 32]>,
    pub(super) chain: Option<Arc<[CertificateDer<'static>]>>,
    pub(super) digest: [u8; 32],
}

impl Admission {
    /// Resolves, with a reason label, once the listener's current state no
    /// longer admits this client; never resolves otherwise.
    pub(crate) async fn revoked(&self) -> Failure {
        let mut changes = self.shared.subscribe();
        let mut digest = self.digest;
        let mut registry = self
            .shared
            .current()
            .tls
            .as_ref()
            .and_then(|t| t.policy.as_ref())
            .and_then(|p| p.registry.as_ref().map(|r| r.revocations()));
        // A CRL fetched or reloaded that revokes this device (or a CA of
        // its chain) closes the connection, as a block does.
        let mut crls = self
            .shared
            .current()
            .tls
            .as_ref()
            .and_then(|t| t.revocation.as_ref().map(|r| r.subscribe()));
        let mut crl_changed = false;
        loop {
            let state = self.shared.current();
            let Some(tls) = &state.tls else {
                // Plain HTTP: nothing to re-check.
                return std::future::pending().await;
            };
            if tls.trust_digest != digest || crl_changed {
                digest = tls.trust_digest;
                crl_changed = false;
                if let Err(reason) = admits(tls, self.chain.as_deref()) {
                    return reason;
                }
            }
            // Blocked (or no longer approved) in the registry: a status
            // lookup, no chain verification. A block closes connections in
            // observe mode too.
            if let (Some(fp), Some(chain)) = (&self.fingerprint, self.chain.as_deref())
                && let Some(Verdict::Refuse { reason, .. }) = tls.decide(fp, chain)
                && (reason.by_admin() || tls.mode == ClientAuthMode::Required)
            {
                return Failure::Refused(reason);
            }
            // A certificate its device has renewed is refused once its
            // supersede_grace is over: wake then, even if nothing changes.
            let superseded_until = self
                .fingerprint
                .as_ref()
                .and_then(|fp| tls.policy.as_ref().and_then(|p| p.superseded_until(fp)));
            tokio::select! {
                () = async {
                    match superseded_until {
                        Some(at) => {
                            let left = at.saturating_sub(crate::clock::now_unix()).max(0);
                            tokio::time::sleep(std::time::Duration::from_secs(
                                u64::try_from(left).unwrap_or(0) + 1,
                            ))
                            .await;
                        }
                        None => std::future::pending().await,
                    }
                } => {}
                r = changes.changed() => if r.is_err() {
                    return std::future::pending().await;
                },
                r = async {
                    match registry.as_mut() {
                        Some(rx) => rx.changed().await,
                        None => std::future::pending().await,
                    }
                } => if r.is_err() {
                    registry = None;
                },
                r = async {
                    match crls.as_mut() {
                        Some(rx) => rx.changed().await,
                        None => std::future::pending().await,
                    }
                } => match r {
                    Ok(()) => crl_changed = true,
                    Err(_) => crls = None,
                },
            }
        }
    }
}

impl Admission {
    /// Counts a connection closed because it is no longer admitted.
    pub(crate) fn count_closed(&self, reason: Failure) {
        self.shared
            .current()
            .metrics
            .closed_by_policy(reason.as_str());
    }

    /// An admission for a connection without TLS.
    pub(super) fn plain(shared: Arc<ListenerShared>) -> Admission {
        Admission {
            shared,
            fingerprint: None,
            chain: None,
            digest: [0; 32],
        }
    }
}

pub(super) fn admits(
    tls: &ListenerTls,
    chain: Option<&[CertificateDer<'static>]>,
) -> Result<(), Failure> {
    match (tls.mode, &tls.verifier, chain) {
        (ClientAuthMode::Off | ClientAuthMode::Observe, _, _) => Ok(()),
        (ClientAuthMode::Required, _, None) | (ClientAuthMode::Required, None, _) => {
            Err(Failure::NoCertificate)
        }
        (ClientAuthMode::Required, Some(v), Some(chain)) => {
            tls::reverify(v.as_ref(), chain).map_err(|e| tls::failure_reason(&e))
        }
    }
}
