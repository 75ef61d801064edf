//! What makes a set of client CAs and CRLs trustworthy before it is used:
//! every `ca` entry is a CA, every CRL is signed by one of them, and (with
//! `require_crl`) every CA has a CRL. Plus what the handshake checks beyond
//! the webpki path validation: the device certificate's key usage, and
//! which certificate of a refused chain a CRL revokes.
//!
//! All of this runs when a config is loaded (`check`, start, reload), so a
//! file that would refuse a whole fleet at handshake time with a vague
//! reason is refused up front, with the file and the CA named.

use std::collections::HashSet;

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate, X509Version};

use crate::admission::Failure;
use crate::identity::serial_hex;
use crate::revocation::Loaded;

use super::rfc4514_subject;

/// Why a configured CA certificate cannot act as one, or `None`.
///
/// A v3 certificate must say `basicConstraints CA:TRUE` (RFC 5280 §4.2.1.9)
/// and, if it has a keyUsage, allow `keyCertSign`. Old v1 roots carry no
/// extensions at all; a self-issued v1 certificate is accepted as a root.
pub(crate) fn not_a_ca(cert: &X509Certificate<'_>) -> Option<String> {
    if cert.version() != X509Version::V3 {
        if cert.subject().as_raw() == cert.issuer().as_raw() {
            return None;
        }
        return Some(
            "it is an X.509 v1/v2 certificate that is not self-signed, so it cannot be a CA".into(),
        );
    }
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(Some(_)) => return Some("its basicConstraints say CA:FALSE".into()),
        Ok(None) => return Some("it has no basicConstraints CA:TRUE extension".into()),
        Err(e) => return Some(format!("its basicConstraints do not parse ({e})")),
    }
    match cert.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => {
            Some("its keyUsage does not allow keyCertSign (signing certificates)".into())
        }
        Err(e) => Some(format!("its keyUsage does not parse ({e})")),
        _ => None,
    }
}

/// The configured CA certificates split into trust anchors and
/// intermediates: a CA whose issuer is also configured is an intermediate
/// (so it is validated, and revocation-checked against its issuer's CRL,
/// like a sub-CA a device sends); the others (self-signed roots, and
/// issuing CAs configured without their root) are anchors.
pub(crate) fn split_anchors(
    cas: &[CertificateDer<'static>],
) -> (Vec<CertificateDer<'static>>, Vec<CertificateDer<'static>>) {
    let subjects: HashSet<Vec<u8>> = cas
        .iter()
        .filter_map(|c| X509Certificate::from_der(c).ok())
        .map(|(_, x)| x.subject().as_raw().to_vec())
        .collect();
    let mut anchors = Vec::new();
    let mut intermediates = Vec::new();
    for c in cas {
        let issued_by_another = X509Certificate::from_der(c).is_ok_and(|(_, x)| {
            x.subject().as_raw() != x.issuer().as_raw() && subjects.contains(x.issuer().as_raw())
        });
        if issued_by_another {
            intermediates.push(c.clone());
        } else {
            anchors.push(c.clone());
        }
    }
    (anchors, intermediates)
}

/// The subjects of configured CAs that no CRL covers (for `require_crl`).
pub(crate) fn without_crl(cas: &[CertificateDer<'static>], crls: &[Loaded]) -> Vec<String> {
    let covered: HashSet<&[u8]> = crls.iter().map(|l| l.crl.issuer_raw.as_slice()).collect();
    cas.iter()
        .filter_map(|c| X509Certificate::from_der(c).ok().map(|(_, x)| x))
        .filter(|x| !covered.contains(x.subject().as_raw()))
        .map(|x| rfc4514_subject(&x))
        .collect()
}

/// A refusal that the webpki path validation does not express: its
/// reason label and the sentence for the log. Carried in
/// [`rustls::CertificateError::Other`], so every path that verifies a
/// chain (handshake, resumed session, reload re-check) reports it alike.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ChainError {
    /// The device certificate has a keyUsage without digitalSignature, so
    /// it may not sign the handshake (RFC 5280 §4.2.1.3; OpenSSL's
    /// client-purpose check refuses it too).
    #[error(
        "the device certificate's keyUsage does not allow digitalSignature, so it may not \
         be used for TLS client authentication; reissue it with digitalSignature"
    )]
    KeyUsage,
    /// A CA certificate of the chain is revoked by its issuer's CRL.
    #[error(
        "certificate #{position} of the chain (\"{subject}\", serial {serial}, a CA that \
         issued the device certificate) is revoked by the CRL of \"{crl_issuer}\" ({crl_source})"
    )]
    CaRevoked {
        /// Position in the chain, 1 = the device certificate.
        position: usize,
        /// Its subject, RFC 4514.
        subject: String,
        /// Its serial, uppercase hex.
        serial: String,
        /// The CRL's issuer, RFC 4514.
        crl_issuer: String,
        /// Where that CRL came from (file or URL).
        crl_source: String,
    },
    /// `ocsp = "require"` and no good answer.
    #[error("OCSP: {detail}")]
    Ocsp {
        /// `ocsp_unavailable` or `ocsp_unknown`.
        failure: Failure,
        /// Why, in words.
        detail: String,
    },
}

impl ChainError {
    /// The reason (logs, metrics, readiness).
    pub(crate) fn reason(&self) -> Failure {
        match self {
            ChainError::KeyUsage => Failure::KeyUsage,
            ChainError::CaRevoked { .. } => Failure::CaRevoked,
            ChainError::Ocsp { failure, .. } => *failure,
        }
    }

    /// As the error rustls reports and sends an alert for.
    pub(crate) fn into_rustls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(self),
        )))
    }
}

/// The [`ChainError::KeyUsage`] refusal, if the device certificate has it.
pub(crate) fn key_usage_refusal(end_entity: &[u8]) -> Option<ChainError> {
    let (_, cert) = X509Certificate::from_der(end_entity).ok()?;
    match cert.key_usage() {
        Ok(Some(ku)) if !ku.value.digital_signature() => Some(ChainError::KeyUsage),
        _ => None,
    }
}

/// The [`ChainError::CaRevoked`] refusal of the CA at `position` (its
/// certificate `der`), revoked by a CRL of `crl_issuer` from `source`.
pub(crate) fn ca_revoked(
    position: usize,
    der: &[u8],
    crl_issuer: String,
    source: &str,
) -> ChainError {
    let (subject, serial) = match X509Certificate::from_der(der) {
        Ok((_, cert)) => (rfc4514_subject(&cert), serial_hex(cert.raw_serial())),
        Err(_) => ("?".into(), "?".into()),
    };
    ChainError::CaRevoked {
        position,
        subject,
        serial,
        crl_issuer,
        crl_source: source.to_string(),
    }
}
