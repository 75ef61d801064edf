//! Why a handshake failed, as a bounded reason label and a sentence; and
//! re-verification of a resumed session's chain.

use rustls::CertificateError;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;

use super::trust;

/// Checks a resumed session's client chain again against the verifier of
/// the listener state it was accepted under (chain, validity at this
/// moment, CRL). rustls skips the verifier on resumption.
pub fn reverify(
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

/// A short, bounded label for why a handshake failed: used in logs and as
/// a metric label value, so it never contains peer data.
pub fn failure_reason(err: &rustls::Error) -> &'static str {
    use rustls::Error as E;
    match err {
        E::NoCertificatesPresented => "no_certificate",
        E::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::Revoked => "revoked",
            CertificateError::UnknownIssuer => "unknown_ca",
            CertificateError::BadSignature => "bad_signature",
            CertificateError::UnknownRevocationStatus => "unknown_revocation_status",
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => "crl_expired",
            CertificateError::BadEncoding => "bad_certificate",
            CertificateError::ApplicationVerificationFailure => "access_denied",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "invalid_purpose"
            }
            CertificateError::Other(o) => {
                match (o.0.as_ref() as &(dyn std::error::Error + 'static))
                    .downcast_ref::<trust::ChainError>()
                {
                    Some(c) => c.reason(),
                    None => "bad_certificate",
                }
            }
            _ => "bad_certificate",
        },
        E::PeerIncompatible(p) => match p {
            // A TLS 1.2 client that offers no ECDHE group can only use the
            // non-ECDHE suites we refuse: to the admin that is the same
            // problem as no common suite.
            rustls::PeerIncompatible::NoCipherSuitesInCommon
            | rustls::PeerIncompatible::NoKxGroupsInCommon => "no_shared_cipher",
            rustls::PeerIncompatible::NoSignatureSchemesInCommon => "no_shared_signature",
            rustls::PeerIncompatible::Tls12NotOffered
            | rustls::PeerIncompatible::Tls12NotOfferedOrEnabled
            | rustls::PeerIncompatible::SupportedVersionsExtensionRequired => "protocol_version",
            _ => "incompatible",
        },
        E::InvalidMessage(_) | E::InappropriateHandshakeMessage { .. } => "bad_message",
        E::AlertReceived(_) => "client_alert",
        E::PeerMisbehaved(_) => "peer_misbehaved",
        _ => "other",
    }
}

/// The sentence for the log about why a handshake failed: rustls's own
/// text, or certgate's for the checks it adds ([`trust::ChainError`]).
pub fn failure_detail(err: &rustls::Error) -> String {
    if let rustls::Error::InvalidCertificate(CertificateError::Other(o)) = err
        && let Some(c) =
            (o.0.as_ref() as &(dyn std::error::Error + 'static)).downcast_ref::<trust::ChainError>()
    {
        return c.to_string();
    }
    err.to_string()
}
