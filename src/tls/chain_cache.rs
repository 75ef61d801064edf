//! Remembering which client chains this verifier generation has already
//! validated, plus the checks webpki does not make (key usage, which CA
//! of a chain is revoked).

use rustls::CertificateError;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use std::collections::HashMap;
use std::sync::Arc;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::delegate::delegate_to_inner;
use super::digest::finish;
use super::trust;

/// Remembers which client chains this verifier generation has already
/// validated (signatures up to a trusted CA, CRLs), so a device that
/// reconnects, resumed or not, costs a digest and a map lookup instead of a
/// signature verification (~65 µs of P-256 per chain, the largest part of a
/// resumed connection's CPU; benches/RESULTS.md).
///
/// Sound because the result depends only on the exact chain bytes (the key
/// is a SHA-256 over all of them), on the trust anchors and CRLs (fixed for
/// the life of this verifier: any change builds a new one with an empty
/// cache) and on time: an entry is used only before the earliest notAfter
/// in the chain and the earliest CRL nextUpdate. Failures are never cached.
/// The registry status and allow rules are decided on every handshake by
/// [`PolicyVerifier`], and possession of the key is proven by the handshake
/// signature, which rustls checks every time.
#[derive(Debug)]
pub(super) struct ChainCache {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    /// Configured CAs issued by another configured CA: offered to path
    /// building after the ones the client sends.
    pub(super) intermediates: Vec<CertificateDer<'static>>,
    /// Which serials the CRLs revoke, to name the revoked certificate.
    pub(super) revoked: trust::RevokedIndex,
    pub(super) crl_deadline: Option<i64>,
    /// Chain digest → usable until (seconds since the epoch).
    pub(super) verified: std::sync::Mutex<HashMap<[u8; 32], i64>>,
}

/// Entries kept at most; when full the cache starts over (one full
/// verification per device then, as without it).
pub(super) const CHAIN_CACHE_MAX: usize = 65_536;

impl ChainCache {
    fn key(end_entity: &[u8], intermediates: &[CertificateDer<'_>]) -> [u8; 32] {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for c in std::iter::once(end_entity).chain(intermediates.iter().map(|c| c.as_ref())) {
            ctx.update(&(c.len() as u64).to_be_bytes());
            ctx.update(c);
        }
        finish(ctx)
    }

    /// Until when a verified chain may be trusted without verifying again.
    fn usable_until(&self, end_entity: &[u8], intermediates: &[CertificateDer<'_>]) -> Option<i64> {
        let mut until = self.crl_deadline.unwrap_or(i64::MAX);
        for c in std::iter::once(end_entity).chain(intermediates.iter().map(|c| c.as_ref())) {
            let (_, x509) = X509Certificate::from_der(c).ok()?;
            until = until.min(x509.validity().not_after.timestamp());
        }
        Some(until)
    }
}

impl ClientCertVerifier for ChainCache {
    delegate_to_inner!();

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let key = Self::key(end_entity, intermediates);
        let now_s = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let hit = self
            .verified
            .lock()
            .map(|m| m.get(&key).is_some_and(|until| now_s < *until))
            .unwrap_or(false);
        if hit {
            return Ok(rustls::server::danger::ClientCertVerified::assertion());
        }
        let verified = if self.intermediates.is_empty() {
            self.inner
                .verify_client_cert(end_entity, intermediates, now)
        } else {
            let mut all = intermediates.to_vec();
            all.extend(self.intermediates.iter().cloned());
            self.inner.verify_client_cert(end_entity, &all, now)
        };
        let verified = match verified {
            Ok(v) => v,
            Err(rustls::Error::InvalidCertificate(CertificateError::Revoked)) => {
                let chain = std::iter::once(end_entity.as_ref())
                    .chain(intermediates.iter().map(|c| c.as_ref()))
                    .chain(self.intermediates.iter().map(|c| c.as_ref()));
                return Err(match self.revoked.revoked_ca(chain) {
                    Some(e) => e.into_rustls(),
                    None => rustls::Error::InvalidCertificate(CertificateError::Revoked),
                });
            }
            Err(e) => return Err(e),
        };
        // webpki checks the extended key usage, not the key usage: a
        // certificate that may not sign is refused here, before it is
        // remembered as verified.
        if let Some(e) = trust::key_usage_refusal(end_entity) {
            return Err(e.into_rustls());
        }
        if let Some(until) = self.usable_until(end_entity, intermediates)
            && now_s < until
            && let Ok(mut m) = self.verified.lock()
        {
            if m.len() >= CHAIN_CACHE_MAX {
                m.clear();
            }
            m.insert(key, until);
        }
        Ok(verified)
    }
}
