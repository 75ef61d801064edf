//! Session-ID cache and tickets that never resume a device the policy no
//! longer admits.

use std::sync::Arc;

use crate::admission::Policy;

use super::HANDSHAKE;
use super::chain_cache::ChainCache;

/// Tags a stored session (cache entry or ticket plaintext) with the
/// fingerprint of its client, and refuses to hand back a session whose
/// device is no longer admitted (blocked, un-approved): the client then
/// falls back to a full handshake, which the verifier refuses with an alert.
/// (Every resumed connection is also re-verified after the handshake, for
/// expiry and CRLs.)
#[derive(Debug)]
pub(super) struct SessionGuard {
    policy: Option<Arc<Policy>>,
    chains: Option<Arc<ChainCache>>,
}

impl SessionGuard {
    /// A guard for a listener with a policy or a client-chain verifier.
    pub(super) fn new(
        policy: Option<Arc<Policy>>,
        chains: Option<Arc<ChainCache>>,
    ) -> Option<SessionGuard> {
        (policy.is_some() || chains.is_some()).then_some(SessionGuard { policy, chains })
    }

    fn tag(&self, value: &[u8]) -> Vec<u8> {
        // A resumed handshake never reaches the verifier; the fingerprint
        // of the session it resumed tags the ticket rustls issues then.
        let fp = HANDSHAKE
            .try_with(|n| {
                let n = n.borrow();
                n.fingerprint.or(n.resumed)
            })
            .ok()
            .flatten();
        let mut tagged = Vec::with_capacity(value.len() + 33);
        match fp {
            Some(fp) => {
                tagged.push(1);
                tagged.extend_from_slice(&fp);
            }
            None => tagged.push(0),
        }
        tagged.extend_from_slice(value);
        tagged
    }

    fn untag(&self, v: &[u8]) -> Option<Vec<u8>> {
        match v.split_first() {
            Some((1, rest)) if rest.len() >= 32 => {
                let mut fp = [0u8; 32];
                fp.copy_from_slice(&rest[..32]);
                if self.policy.as_ref().is_some_and(|p| !p.still_admits(&fp)) {
                    return None;
                }
                // Revoked by a CRL (or an OCSP answer) that arrived after
                // the session was made: a full handshake, which the
                // verifier refuses with an alert.
                if self.chains.as_ref().is_some_and(|c| c.refuses(&fp)) {
                    return None;
                }
                let _ = HANDSHAKE.try_with(|n| n.borrow_mut().resumed = Some(fp));
                Some(rest[32..].to_vec())
            }
            Some((0, rest)) => Some(rest.to_vec()),
            _ => None,
        }
    }
}

/// The session-ID cache of a listener with an admission policy; see
/// [`SessionGuard`].
#[derive(Debug)]
pub(super) struct GuardedSessions {
    pub(super) inner: Arc<dyn rustls::server::StoresServerSessions>,
    pub(super) guard: SessionGuard,
}

impl rustls::server::StoresServerSessions for GuardedSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, self.guard.tag(&value))
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.get(key).and_then(|v| self.guard.untag(&v))
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.take(key).and_then(|v| self.guard.untag(&v))
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

/// The ticketer of a listener with an admission policy: the ticket's
/// plaintext carries the same tag as a cache entry; see [`SessionGuard`].
#[derive(Debug)]
pub(super) struct GuardedTickets {
    pub(super) inner: Arc<dyn rustls::server::ProducesTickets>,
    pub(super) guard: SessionGuard,
}

impl rustls::server::ProducesTickets for GuardedTickets {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(&self.guard.tag(plain))
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.inner
            .decrypt(cipher)
            .and_then(|v| self.guard.untag(&v))
    }
}
