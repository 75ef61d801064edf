//! What makes a set of client CAs and CRLs trustworthy before it is used:
//! every `ca` entry is a CA, every CRL is signed by one of them, and (with
//! `require_crl`) every CA has a CRL. Plus what the handshake checks beyond
//! the webpki path validation: the device certificate's key usage, and
//! which certificate of a refused chain a CRL revokes.
//!
//! All of this runs when a config is loaded (`check`, start, reload), so a
//! file that would refuse a whole fleet at handshake time with a vague
//! reason is refused up front, with the file and the CA named.

use std::collections::{HashMap, HashSet};

use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::prelude::{FromDer, X509Certificate, X509Version};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::admission::Failure;
use crate::identity::serial_hex;

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

/// Checks that `crl` is signed by one of the configured CAs. The error
/// says which CA the CRL claims and why it does not verify.
pub(crate) fn verify_crl(
    crl: &CertificateRevocationListDer<'_>,
    cas: &[CertificateDer<'static>],
) -> Result<(), String> {
    let (_, parsed) =
        CertificateRevocationList::from_der(crl).map_err(|e| format!("not a valid CRL ({e})"))?;
    let issuer_raw = parsed.issuer().as_raw();
    let issuer = crate::dn::rfc4514(parsed.issuer());
    let named: Vec<X509Certificate<'_>> = cas
        .iter()
        .filter_map(|c| X509Certificate::from_der(c).ok().map(|(_, x)| x))
        .filter(|x| x.subject().as_raw() == issuer_raw)
        .collect();
    if named.is_empty() {
        return Err(format!(
            "this CRL is issued by \"{issuer}\", which is not one of the client CAs \
             (client_auth.ca); add that CA's certificate to a ca bundle, or remove the CRL"
        ));
    }
    let mut why = String::new();
    for ca in &named {
        match parsed.verify_signature(ca.public_key()) {
            Ok(()) => return Ok(()),
            Err(e) => why = e.to_string(),
        }
    }
    Err(format!(
        "this CRL claims to be issued by \"{issuer}\", but its signature does not verify \
         against that CA's key ({why}); it was signed by another key (a renewed or a \
         different CA of the same name?). Get the CRL that CA publishes"
    ))
}

/// The subjects of configured CAs that no CRL covers (for `require_crl`).
pub(crate) fn without_crl(
    cas: &[CertificateDer<'static>],
    crls: &[CertificateRevocationListDer<'static>],
) -> Vec<String> {
    let covered: HashSet<Vec<u8>> = crls
        .iter()
        .filter_map(|c| CertificateRevocationList::from_der(c).ok())
        .map(|(_, c)| c.issuer().as_raw().to_vec())
        .collect();
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
         issued the device certificate) is revoked by the CRL of \"{crl_issuer}\""
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
    },
}

impl ChainError {
    /// The reason (logs, metrics, readiness).
    pub(crate) fn reason(&self) -> Failure {
        match self {
            ChainError::KeyUsage => Failure::KeyUsage,
            ChainError::CaRevoked { .. } => Failure::CaRevoked,
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

/// The serials each loaded CRL revokes, by issuer name: used only after
/// webpki has said "revoked", to say which certificate of the chain it was.
#[derive(Debug, Default)]
pub(crate) struct RevokedIndex {
    by_issuer: HashMap<Vec<u8>, (String, HashSet<String>)>,
}

impl RevokedIndex {
    /// Indexes the CRLs (ones that do not parse were refused at load).
    pub(crate) fn new(crls: &[CertificateRevocationListDer<'static>]) -> RevokedIndex {
        let mut by_issuer: HashMap<Vec<u8>, (String, HashSet<String>)> = HashMap::new();
        for c in crls {
            if let Ok((_, crl)) = CertificateRevocationList::from_der(c) {
                let entry = by_issuer
                    .entry(crl.issuer().as_raw().to_vec())
                    .or_insert_with(|| (crate::dn::rfc4514(crl.issuer()), HashSet::new()));
                for r in crl.iter_revoked_certificates() {
                    entry.1.insert(serial_hex(r.raw_serial()));
                }
            }
        }
        RevokedIndex { by_issuer }
    }

    /// The first CA certificate in `chain` (device first, then the CAs
    /// above it) that a CRL revokes; `None` if it is the device itself or
    /// none is found.
    pub(crate) fn revoked_ca<'a>(
        &self,
        chain: impl Iterator<Item = &'a [u8]>,
    ) -> Option<ChainError> {
        for (i, der) in chain.enumerate() {
            let Ok((_, cert)) = X509Certificate::from_der(der) else {
                continue;
            };
            let Some((crl_issuer, serials)) = self.by_issuer.get(cert.issuer().as_raw()) else {
                continue;
            };
            let serial = serial_hex(cert.raw_serial());
            if serials.contains(&serial) {
                if i == 0 {
                    return None;
                }
                return Some(ChainError::CaRevoked {
                    position: i + 1,
                    subject: rfc4514_subject(&cert),
                    serial,
                    crl_issuer: crl_issuer.clone(),
                });
            }
        }
        None
    }
}
