//! CA validation followed by the admission policy (registry status, allow
//! rules), inside the handshake.

use rustls::CertificateError;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use std::sync::Arc;

use crate::admission::{Admitted, Policy, Verdict};
use crate::registry::Record;

use super::chain_cache::ChainCache;
use super::delegate::delegate_to_inner;
use super::{HANDSHAKE, failure_reason};

/// CA validation (the webpki verifier), then the admission policy: the
/// registry's status of the device and the allow rules. Runs inside the
/// handshake, so a refusal is a TLS alert (`access_denied`).
///
/// In `observe` mode nothing is refused: the verdict is only noted, so the
/// connection is admitted and classified.
#[derive(Debug)]
pub(super) struct PolicyVerifier {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    pub(super) policy: Option<Arc<Policy>>,
    /// The chain cache `inner` verifies with: the renewal rule asks it
    /// whether a device's current certificate is revoked.
    pub(super) chains: Option<Arc<ChainCache>>,
    pub(super) observe: bool,
}

/// The policy's verdict on a CA-valid chain, with the listener's
/// revocation state for the renewal rule.
pub(super) fn decide(
    policy: &Policy,
    chains: Option<&ChainCache>,
    fingerprint: &[u8; 32],
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Verdict {
    policy.decide(fingerprint, end_entity, &|candidate| {
        chains.is_some_and(|c| c.revokes_sibling(end_entity, intermediates, &candidate.serial))
    })
}

impl ClientCertVerifier for PolicyVerifier {
    delegate_to_inner!();

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let fp = crate::identity::fingerprint(end_entity);
        // Noted before the chain cache runs, so it does not hash the
        // certificate a second time.
        let _ = HANDSHAKE.try_with(|n| n.borrow_mut().fingerprint = Some(fp));
        let ca = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
        let verdict = match (&ca, &self.policy) {
            (Ok(_), Some(p)) => Some(decide(
                p,
                self.chains.as_deref(),
                &fp,
                end_entity,
                intermediates,
            )),
            (Ok(_), None) => Some(Verdict::Admit {
                why: Admitted::Ca,
                record: Record::Seen,
            }),
            (Err(_), _) => None,
        };
        let ca_failure = ca.as_ref().err().map(failure_reason);
        // Kept when the registry may need to create a record, and on every
        // refusal, so the readiness report can name the refused device's
        // subject (refusals are the rare case; admits copy nothing).
        let keep_der = match verdict {
            None | Some(Verdict::Refuse { .. }) => true,
            Some(Verdict::Admit { record, .. }) => record != Record::Seen,
        };
        let _ = HANDSHAKE.try_with(|n| {
            let mut n = n.borrow_mut();
            n.fingerprint = Some(fp);
            n.verdict = verdict;
            n.der = keep_der.then(|| end_entity.to_vec());
            n.ca_failure = ca_failure;
        });
        match verdict {
            // Observe softens the automatic verdicts (CA failures,
            // unapproved) into a report; an admin's block is refused in
            // every mode.
            Some(Verdict::Refuse { reason, .. }) if reason.by_admin() || !self.observe => Err(
                rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure),
            ),
            _ if self.observe => Ok(rustls::server::danger::ClientCertVerified::assertion()),
            _ => ca,
        }
    }
}
