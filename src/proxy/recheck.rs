//! Re-checking open connections when the trust or the registry changes:
//! a device revoked or blocked is cut off on its open connections too.

use super::ListenerShared;
use crate::admission::{Failure, Verdict};
use crate::config::ClientAuthMode;
use crate::tls::{self, ListenerTls};
use rustls::pki_types::CertificateDer;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;

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

/// What may have changed for the open connections of a listener, as
/// counters: a connection compares them with the ones it last saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Reloads and registry changes (approvals, blocks).
    pub(super) any: u64,
    /// CRLs fetched or reloaded: the chains are verified again.
    pub(super) crls: u64,
}

impl ListenerShared {
    /// The merged changes of this listener, starting the task that merges
    /// them the first time it is asked (inside the runtime, by the first
    /// connection). One task for the listener, not three watchers per
    /// connection: a connection lives for hours, and what it waits on is
    /// kept for all of that time.
    fn changes(self: &Arc<Self>) -> watch::Receiver<Changes> {
        self.changes
            .get_or_init(|| {
                let (tx, _) = watch::channel(Changes::default());
                // Subscribed here, before any connection checks its client:
                // a change from now on is counted, none falls in between.
                let reloads = self.subscribe();
                let sources = Sources::of(self);
                tokio::spawn(watch_changes(
                    Arc::downgrade(self),
                    tx.clone(),
                    reloads,
                    sources,
                ));
                tx
            })
            .subscribe()
    }
}

/// The registry and CRLs of the listener state in force, watched.
struct Sources {
    registry: Option<watch::Receiver<u64>>,
    crls: Option<watch::Receiver<u64>>,
    /// Which revocation state `crls` watches (weakly: a reload may drop it).
    revocation: Option<Weak<crate::revocation::Revocation>>,
}

impl Sources {
    fn of(shared: &ListenerShared) -> Sources {
        let state = shared.current();
        let tls = state.tls.as_ref();
        let revocation = tls.and_then(|t| t.revocation.as_ref());
        Sources {
            registry: tls
                .and_then(|t| t.policy.as_ref())
                .and_then(|p| p.registry.as_ref().map(|r| r.revocations())),
            crls: revocation.map(|r| r.subscribe()),
            revocation: revocation.map(Arc::downgrade),
        }
    }

    /// Whether `other` watches another revocation state than this.
    fn other_crls(&self, other: &Sources) -> bool {
        match (&self.revocation, &other.revocation) {
            (Some(a), Some(b)) => !Weak::ptr_eq(a, b),
            (None, None) => false,
            _ => true,
        }
    }
}

/// Merges a listener's reloads, registry changes and CRL changes into its
/// [`Changes`]. It follows the registry and CRLs of the state in force, and
/// ends with the listener (it holds it weakly).
async fn watch_changes(
    shared: Weak<ListenerShared>,
    tx: watch::Sender<Changes>,
    mut reloads: watch::Receiver<u64>,
    mut sources: Sources,
) {
    // Bounded by the listener's life: every pass waits for a change.
    loop {
        tokio::select! {
            r = reloads.changed() => {
                let (Ok(()), Some(s)) = (r, shared.upgrade()) else {
                    return;
                };
                // The new sources are watched before connections are told:
                // a change after the reload is then counted. A reload that
                // brought another revocation state (other CAs) re-verifies
                // every chain: what that state published before it was
                // watched here was never counted.
                let new = Sources::of(&s);
                let crls = sources.other_crls(&new);
                sources = new;
                tx.send_modify(|c| {
                    c.any += 1;
                    c.crls += u64::from(crls);
                });
            }
            r = changed(sources.registry.as_mut()) => match r {
                Ok(()) => tx.send_modify(|c| c.any += 1),
                Err(_) => sources.registry = None,
            },
            r = changed(sources.crls.as_mut()) => match r {
                Ok(()) => tx.send_modify(|c| c.crls += 1),
                Err(_) => sources.crls = None,
            },
        }
    }
}

/// Waits for a change of `rx`, if there is one to watch (else never).
async fn changed<T>(rx: Option<&mut watch::Receiver<T>>) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

impl Admission {
    /// Resolves, with a reason label, once the listener's current state no
    /// longer admits this client; never resolves otherwise.
    pub(crate) async fn revoked(&self) -> Failure {
        let mut changes = self.shared.changes();
        let mut seen = *changes.borrow_and_update();
        let mut digest = self.digest;
        loop {
            let state = self.shared.current();
            let Some(tls) = &state.tls else {
                // Plain HTTP: nothing to re-check.
                return std::future::pending().await;
            };
            let now = *changes.borrow_and_update();
            // A CRL fetched or reloaded that revokes this device (or a CA
            // of its chain) closes the connection, as a block does.
            if tls.trust_digest != digest || now.crls != seen.crls {
                digest = tls.trust_digest;
                if let Err(reason) = admits(tls, self.chain.as_deref()) {
                    return reason;
                }
            }
            seen = now;
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
            // Boxed: only such a connection keeps room for a timer.
            let mut superseded: Option<Pin<Box<tokio::time::Sleep>>> = self
                .fingerprint
                .as_ref()
                .and_then(|fp| tls.policy.as_ref().and_then(|p| p.superseded_until(fp)))
                .map(|at| {
                    let left = at.saturating_sub(crate::clock::now_unix()).max(0);
                    Box::pin(tokio::time::sleep(Duration::from_secs(
                        u64::try_from(left).unwrap_or(0) + 1,
                    )))
                });
            drop(state);
            tokio::select! {
                () = async {
                    match superseded.as_mut() {
                        Some(s) => s.await,
                        None => std::future::pending().await,
                    }
                } => {}
                r = changes.changed() => if r.is_err() {
                    return std::future::pending().await;
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
