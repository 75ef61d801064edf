//! Verifying client chains: path validation (remembered per verifier
//! generation), then, on every handshake, revocation against the
//! listener's current CRL set and the checks webpki does not make (key
//! usage).

use rustls::CertificateError;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use std::collections::HashMap;
use std::sync::Arc;

use crate::admission::Failure;
use crate::config::OcspMode;
use crate::revocation::crl::normalize_serial;
use crate::revocation::ocsp::{self, Decision};
use crate::revocation::{Learned, PathCert, Revocation, Verdict};

use super::note::OcspWait;

use super::delegate::delegate_to_inner;
use super::digest::finish;
use super::path::{Path, PathVerifier};
use super::trust;

/// Verifies client chains. The path a chain validates to is remembered for
/// this verifier generation, so a device that reconnects, resumed or not,
/// costs a digest and a map lookup instead of signature verifications
/// (~65 µs of P-256 per chain, the largest part of a resumed connection's
/// CPU; benches/RESULTS.md).
///
/// Sound because path validation depends only on the exact chain bytes
/// (the key is a SHA-256 over all of them), on the trust anchors (fixed
/// for the life of this verifier: a change builds a new one with an empty
/// cache) and on time: an entry is used only before the earliest notAfter
/// of its path. Failures are never cached. Revocation is not part of the
/// cached result: every handshake checks the remembered path against the
/// current [`Revocation`] set, which CRL fetches and reloads replace. The
/// registry status and allow rules are decided on every handshake by
/// `PolicyVerifier`, and possession of the key is proven by the handshake
/// signature, which rustls checks every time.
#[derive(Debug)]
pub(super) struct ChainCache {
    /// rustls's verifier (without CRLs), for everything but the chain:
    /// CA names, signature schemes, the handshake signatures.
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    pub(super) paths: PathVerifier,
    /// Configured CAs issued by another configured CA: offered to path
    /// building after the ones the client sends.
    pub(super) intermediates: Vec<CertificateDer<'static>>,
    pub(super) revocation: Arc<Revocation>,
    /// Chain digest → (usable until, the path it validated to).
    pub(super) verified: std::sync::Mutex<Remembered>,
    /// Device fingerprint → the path its chain validated to, so the session
    /// guard can refuse to resume a device a CRL now revokes.
    pub(super) by_device: std::sync::Mutex<HashMap<[u8; 32], Arc<Path>>>,
}

/// Chain digest → (usable until, the path it validated to).
pub(super) type Remembered = HashMap<[u8; 32], (i64, Arc<Path>)>;

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

    /// The validated path of a chain: remembered, or validated now.
    fn path(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        now_s: i64,
    ) -> Result<Arc<Path>, rustls::Error> {
        let key = Self::key(end_entity, intermediates);
        let hit = self.verified.lock().ok().and_then(|m| {
            m.get(&key)
                .filter(|(until, _)| now_s < *until)
                .map(|(_, p)| p.clone())
        });
        if let Some(p) = hit {
            return Ok(p);
        }
        let path = if self.intermediates.is_empty() {
            self.paths.verify(end_entity, intermediates, now)?
        } else {
            let mut all = intermediates.to_vec();
            all.extend(self.intermediates.iter().cloned());
            self.paths.verify(end_entity, &all, now)?
        };
        // webpki checks the extended key usage, not the key usage: a
        // certificate that may not sign is refused here, before it is
        // remembered as verified.
        if let Some(e) = trust::key_usage_refusal(end_entity) {
            return Err(e.into_rustls());
        }
        let path = Arc::new(path);
        if self.revocation.learns() {
            // First time this generation sees the chain: the distribution
            // points it names are fetched from now on.
            for (cert, issuer) in path.certs.iter().zip(&path.issuers) {
                if !cert.crl_uris.is_empty() && !issuer.is_empty() {
                    self.revocation.learn(Learned {
                        urls: cert.crl_uris.clone(),
                        issuer: issuer.clone(),
                    });
                }
            }
        }
        if now_s < path.not_after
            && let Ok(mut m) = self.verified.lock()
        {
            if m.len() >= CHAIN_CACHE_MAX {
                m.clear();
            }
            m.insert(key, (path.not_after, path.clone()));
        }
        if let Ok(mut m) = self.by_device.lock() {
            if m.len() >= CHAIN_CACHE_MAX {
                m.clear();
            }
            m.insert(crate::identity::fingerprint(end_entity), path.clone());
        }
        Ok(path)
    }
}

impl ChainCache {
    /// The OCSP decision about the device certificate (`ocsp` on): from the
    /// cache, or, for a device not seen before, a lookup the connection
    /// task waits for after the handshake.
    fn ocsp(
        &self,
        end_entity: &CertificateDer<'_>,
        path: &Path,
        now_s: i64,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let ok = Ok(rustls::server::danger::ClientCertVerified::assertion());
        let inputs = self.revocation.inputs();
        if inputs.ocsp == OcspMode::Off {
            return ok;
        }
        let (Some(cert), Some(issuer)) = (path.certs.first(), path.issuers.first()) else {
            return ok;
        };
        let key = (cert.issuer_key, cert.serial.clone());
        let decision = self.revocation.ocsp.decide(
            &key,
            inputs.ocsp,
            || ocsp::query(end_entity, issuer, inputs.ocsp_url.as_deref()),
            now_s,
        );
        match decision {
            Decision::Admit => ok,
            Decision::Revoked => Err(rustls::Error::InvalidCertificate(CertificateError::Revoked)),
            Decision::Unknown => Err(trust::ChainError::Ocsp {
                failure: Failure::OcspUnknown,
                detail: "the OCSP responder does not know the device certificate".into(),
            }
            .into_rustls()),
            Decision::Unavailable(detail) => Err(trust::ChainError::Ocsp {
                failure: Failure::OcspUnavailable,
                detail,
            }
            .into_rustls()),
            Decision::Wait(pending) => {
                let wait = OcspWait {
                    pending,
                    mode: inputs.ocsp,
                    timeout: inputs.ocsp_timeout,
                };
                // Outside a handshake (an open connection re-checked) the
                // lookup still fills the cache; an answer that revokes
                // closes the connection then.
                let _ = super::HANDSHAKE.try_with(|n| n.borrow_mut().ocsp_wait = Some(wait));
                ok
            }
        }
    }

    /// Whether the current revocation state (the CRLs, or a cached OCSP
    /// answer) revokes the certificate with serial `serial_hex` issued by
    /// the same CA as the verified `end_entity`: a device's current
    /// certificate that `end_entity` would renew.
    pub(super) fn revokes_sibling(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        serial_hex: &str,
    ) -> bool {
        let now = UnixTime::now();
        let now_s = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let Ok(path) = self.path(end_entity, intermediates, now, now_s) else {
            return false;
        };
        let Some(leaf) = path.certs.first() else {
            return false;
        };
        let sibling = PathCert {
            position: 1,
            is_ca: false,
            issuer: leaf.issuer.clone(),
            issuer_key: leaf.issuer_key,
            serial: normalize_serial(&crate::identity::serial_from_hex(serial_hex)),
            crl_uris: leaf.crl_uris.clone(),
        };
        let by_crl = matches!(
            self.revocation
                .current()
                .check(std::slice::from_ref(&sibling), now_s),
            Err(Verdict::Revoked { .. })
        );
        by_crl
            || self
                .revocation
                .ocsp
                .revoked(&(sibling.issuer_key, sibling.serial.clone()))
    }

    /// Whether the current revocation state (its CRLs, or a cached OCSP
    /// answer) refuses the device with this fingerprint, as far as this
    /// generation has seen its chain.
    pub(super) fn refuses(&self, fingerprint: &[u8; 32]) -> bool {
        let path = self
            .by_device
            .lock()
            .ok()
            .and_then(|m| m.get(fingerprint).cloned());
        path.is_some_and(|p| {
            let by_ocsp = p.certs.first().is_some_and(|c| {
                self.revocation
                    .ocsp
                    .revoked(&(c.issuer_key, c.serial.clone()))
            });
            by_ocsp
                || self
                    .revocation
                    .current()
                    .check(&p.certs, crate::clock::now_unix())
                    .is_err()
        })
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
        let now_s = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        // The device is known by its certificate whatever the verdict and
        // whether or not a policy runs after this (the readiness report
        // keys its clients by it).
        let _ = super::HANDSHAKE.try_with(|n| {
            let mut n = n.borrow_mut();
            if n.fingerprint.is_none() {
                n.fingerprint = Some(crate::identity::fingerprint(end_entity));
            }
        });
        let path = self.path(end_entity, intermediates, now, now_s)?;
        match self.revocation.current().check(&path.certs, now_s) {
            Ok(()) => self.ocsp(end_entity, &path, now_s),
            Err(Verdict::Revoked { position: 1, .. }) => {
                Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
            }
            Err(Verdict::Revoked {
                position,
                crl_issuer,
                source,
            }) => {
                let der = path
                    .issuers
                    .get(position.saturating_sub(2))
                    .cloned()
                    .unwrap_or_else(|| CertificateDer::from(Vec::new()));
                Err(trust::ca_revoked(position, &der, crl_issuer, &source).into_rustls())
            }
            Err(Verdict::Unknown { .. }) => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownRevocationStatus,
            )),
            Err(Verdict::Stale { .. }) => Err(rustls::Error::InvalidCertificate(
                CertificateError::ExpiredRevocationList,
            )),
        }
    }
}
