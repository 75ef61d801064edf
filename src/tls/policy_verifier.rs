//! CA validation followed by the admission policy (registry status, allow
//! rules), inside the handshake.

use rustls::CertificateError;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use std::sync::Arc;

use crate::admission::{Admitted, Policy, Verdict};

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
    pub(super) observe: bool,
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
        let ca = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
        let verdict = match (&ca, &self.policy) {
            (Ok(_), Some(p)) => Some(p.decide(&fp, end_entity)),
            (Ok(_), None) => Some(Verdict::Admit {
                why: Admitted::Ca,
                record: false,
            }),
            (Err(_), _) => None,
        };
        let ca_failure = ca.as_ref().err().map(failure_reason);
        let keep_der = matches!(
            verdict,
            Some(Verdict::Admit { record: true, .. })
                | Some(Verdict::Refuse {
                    record_pending: true,
                    ..
                })
        );
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
