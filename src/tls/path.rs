//! Path validation of a device chain with rustls-webpki, returning the
//! path it found, so that revocation is checked by certgate against the
//! listener's current [`RevocationSet`](crate::revocation::RevocationSet)
//! (files, fetched CRLs, deltas) rather than by webpki against CRLs fixed
//! when the verifier was built. webpki refuses delta CRLs and cannot take
//! a CRL set that changes under a running verifier.

use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use rustls::{CertificateError, OtherError};
use std::sync::Arc;
use webpki::EndEntityCert;
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use crate::identity::sha256;
use crate::revocation::PathCert;
use crate::revocation::crl::{distribution_point_uris, normalize_serial};

/// The trust anchors and the signature algorithms a listener verifies with.
#[derive(Debug)]
pub(super) struct PathVerifier {
    pub(super) anchors: Vec<TrustAnchor<'static>>,
    /// The certificate of each anchor, in the same order.
    pub(super) anchor_certs: Vec<CertificateDer<'static>>,
    pub(super) algs: &'static [&'static dyn rustls::pki_types::SignatureVerificationAlgorithm],
}

/// A verified path: each certificate below the anchor, device first, and
/// the DER of each one's issuer (what signs its CRL).
#[derive(Debug)]
pub(crate) struct Path {
    pub(crate) certs: Vec<PathCert>,
    pub(crate) issuers: Vec<CertificateDer<'static>>,
    /// The earliest notAfter in the path, Unix seconds.
    pub(crate) not_after: i64,
}

impl PathVerifier {
    /// Validates `end_entity` up to a trust anchor (signatures, validity,
    /// CA constraints, client-auth EKU), with `intermediates` (the
    /// client's, then the configured sub-CAs) for path building.
    pub(super) fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Path, rustls::Error> {
        let ee = EndEntityCert::try_from(end_entity).map_err(pki_error)?;
        let path = ee
            .verify_for_usage(
                self.algs,
                &self.anchors,
                intermediates,
                now,
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(pki_error)?;
        // Device first, then each CA up to (not including) the anchor.
        let mut ders: Vec<CertificateDer<'static>> = vec![end_entity.clone().into_owned()];
        ders.extend(
            path.intermediate_certificates()
                .map(|c| c.der().into_owned()),
        );
        let anchor_spki = webpki::spki_for_anchor(path.anchor());
        let parsed: Vec<X509Certificate<'_>> = ders
            .iter()
            .map(|d| X509Certificate::from_der(d).map(|(_, x)| x))
            .collect::<Result<_, _>>()
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let anchor = self
            .anchors
            .iter()
            .position(|a| std::ptr::eq(a, path.anchor()))
            .and_then(|i| self.anchor_certs.get(i).cloned())
            .unwrap_or_else(|| CertificateDer::from(Vec::new()));
        let mut certs = Vec::with_capacity(ders.len());
        let mut issuers = Vec::with_capacity(ders.len());
        let mut not_after = i64::MAX;
        for (i, x) in parsed.iter().enumerate() {
            not_after = not_after.min(x.validity().not_after.timestamp());
            // Each certificate's issuer is the next one of the path; the
            // last one's is the anchor.
            let issuer_key = match parsed.get(i + 1) {
                Some(next) => {
                    issuers.push(ders[i + 1].clone());
                    sha256(next.public_key().raw)
                }
                None => {
                    issuers.push(anchor.clone());
                    sha256(anchor_spki.as_ref())
                }
            };
            let crl_uris = x
                .extensions()
                .iter()
                .find_map(|e| match e.parsed_extension() {
                    ParsedExtension::CRLDistributionPoints(p) => Some(distribution_point_uris(p)),
                    _ => None,
                })
                .unwrap_or_default();
            certs.push(PathCert {
                position: i + 1,
                is_ca: i > 0,
                issuer: x.issuer().as_raw().to_vec(),
                issuer_key,
                serial: normalize_serial(x.raw_serial()),
                crl_uris,
            });
        }
        Ok(Path {
            certs,
            issuers,
            not_after,
        })
    }
}

/// webpki's error as the rustls error a verifier returns (the mapping
/// rustls's own WebPkiClientVerifier uses), so reasons and alerts stay as
/// they were.
pub(super) fn pki_error(error: webpki::Error) -> rustls::Error {
    use webpki::Error as W;
    let e = match error {
        W::BadDer | W::BadDerTime | W::TrailingData(_) => CertificateError::BadEncoding,
        W::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        W::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        W::InvalidCertValidity => CertificateError::Expired,
        W::UnknownIssuer => CertificateError::UnknownIssuer,
        W::CertRevoked => CertificateError::Revoked,
        W::UnknownRevocationStatus => CertificateError::UnknownRevocationStatus,
        W::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        #[allow(deprecated)]
        W::UnsupportedSignatureAlgorithm | W::UnsupportedSignatureAlgorithmForPublicKey =>
        {
            #[allow(deprecated)]
            CertificateError::UnsupportedSignatureAlgorithm
        }
        W::UnsupportedSignatureAlgorithmContext(cx) => {
            CertificateError::UnsupportedSignatureAlgorithmContext {
                signature_algorithm_id: cx.signature_algorithm_id,
                supported_algorithms: cx.supported_algorithms,
            }
        }
        W::UnsupportedSignatureAlgorithmForPublicKeyContext(cx) => {
            CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext {
                signature_algorithm_id: cx.signature_algorithm_id,
                public_key_algorithm_id: cx.public_key_algorithm_id,
            }
        }
        #[allow(deprecated)]
        W::RequiredEkuNotFound | W::RequiredEkuNotFoundContext(_) => {
            CertificateError::InvalidPurpose
        }
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(e)
}
