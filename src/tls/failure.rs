//! Why a handshake failed, as a bounded reason label and a sentence; and
//! re-verification of a resumed session's chain.

use rustls::CertificateError;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;

use crate::admission::Failure;

use super::trust;

/// Checks a resumed session's client chain again against the verifier of
/// the listener state it was accepted under (chain, validity at this
/// moment, CRL). rustls skips the verifier on resumption.
pub(crate) fn reverify(
    verifier: &dyn ClientCertVerifier,
    chain: &[CertificateDer<'_>],
) -> Result<(), rustls::Error> {
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or(rustls::Error::NoCertificatesPresented)?;
    verifier
        .verify_client_cert(leaf, intermediates, UnixTime::now())
        .map(|_| ())
}

/// Why a handshake failed, from rustls's error: a bounded reason (logs,
/// metric labels), never peer data.
pub(crate) fn failure_reason(err: &rustls::Error) -> Failure {
    use rustls::Error as E;
    match err {
        E::NoCertificatesPresented => Failure::NoCertificate,
        E::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Failure::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Failure::NotYetValid
            }
            CertificateError::Revoked => Failure::Revoked,
            CertificateError::UnknownIssuer => Failure::UnknownCa,
            CertificateError::BadSignature => Failure::BadSignature,
            CertificateError::UnknownRevocationStatus => Failure::UnknownRevocationStatus,
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => Failure::CrlExpired,
            CertificateError::BadEncoding => Failure::BadCertificate,
            CertificateError::ApplicationVerificationFailure => Failure::AccessDenied,
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                Failure::InvalidPurpose
            }
            CertificateError::Other(o) => {
                match (o.0.as_ref() as &(dyn std::error::Error + 'static))
                    .downcast_ref::<trust::ChainError>()
                {
                    Some(c) => c.reason(),
                    None => Failure::BadCertificate,
                }
            }
            _ => Failure::BadCertificate,
        },
        E::PeerIncompatible(p) => match p {
            // A TLS 1.2 client that offers no ECDHE group can only use the
            // non-ECDHE suites we refuse: to the admin that is the same
            // problem as no common suite.
            rustls::PeerIncompatible::NoCipherSuitesInCommon
            | rustls::PeerIncompatible::NoKxGroupsInCommon => Failure::NoSharedCipher,
            rustls::PeerIncompatible::NoSignatureSchemesInCommon => Failure::NoSharedSignature,
            rustls::PeerIncompatible::Tls12NotOffered
            | rustls::PeerIncompatible::Tls12NotOfferedOrEnabled
            | rustls::PeerIncompatible::SupportedVersionsExtensionRequired => {
                Failure::ProtocolVersion
            }
            _ => Failure::Incompatible,
        },
        E::InvalidMessage(_) | E::InappropriateHandshakeMessage { .. } => Failure::BadMessage,
        E::AlertReceived(_) => Failure::ClientAlert,
        E::PeerMisbehaved(_) => Failure::PeerMisbehaved,
        _ => Failure::Other,
    }
}

/// The sentence for the log about why a handshake failed: rustls's own
/// text, or certgate's for the checks it adds ([`trust::ChainError`]).
pub(crate) fn failure_detail(err: &rustls::Error) -> String {
    if let rustls::Error::InvalidCertificate(CertificateError::Other(o)) = err
        && let Some(c) =
            (o.0.as_ref() as &(dyn std::error::Error + 'static)).downcast_ref::<trust::ChainError>()
    {
        return c.to_string();
    }
    err.to_string()
}
