//! The words of admission: why a certificate was admitted, why the policy
//! refused it, and why a handshake failed. Metrics, logs, the readiness
//! report and `X-Client-Verify` take their strings from here, and every
//! match on them is exhaustive: a new reason without a label, a log line
//! or a readiness class does not compile. A leaf: it imports nothing of
//! the crate, so the metrics and the readiness report can use it.

/// Why the policy admitted a CA-valid certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// No registry and no rules: a CA-valid certificate is enough.
    Ca,
    /// Approved in the registry.
    Approved,
    /// Matches an `allow_*` rule.
    Rule,
    /// `approval = "auto"`.
    Auto,
    /// A renewal of an approved device (the listener's renewal rule).
    Renewal,
}

impl Admitted {
    /// The label (`certgate_admission_decisions_total{decision}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Admitted::Ca => "ca",
            Admitted::Approved => "approved",
            Admitted::Rule => "rule",
            Admitted::Auto => "auto",
            Admitted::Renewal => "renewal",
        }
    }
}

/// Why the policy refused a CA-valid certificate. Metrics, logs, the
/// readiness report and `X-Client-Verify` take their words from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Blocked by an administrator.
    Blocked,
    /// Not approved (yet) under `approval = "manual"`.
    Unapproved,
    /// Without a registry: matches no `allow_*` rule.
    NotAllowed,
    /// An old certificate of a device that has renewed, past the
    /// listener's `supersede_grace`.
    Superseded,
}

impl Refusal {
    /// The reason label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Blocked => "blocked",
            Refusal::Unapproved => "unapproved",
            Refusal::NotAllowed => "not_allowed",
            Refusal::Superseded => "superseded",
        }
    }

    /// What the log says about it, and what to do.
    pub fn detail(self) -> &'static str {
        match self {
            Refusal::Blocked => "device is blocked in the registry",
            Refusal::Unapproved => {
                "device is not approved yet; approve it with `certgate devices approve`"
            }
            Refusal::NotAllowed => "certificate matches no allow_* rule of this listener",
            Refusal::Superseded => {
                "the device has renewed this certificate and supersede_grace has passed; the \
                 device must use its new certificate"
            }
        }
    }

    /// An administrator's decision, enforced in every mode, observe
    /// included. The other refusals are automatic verdicts, which observe
    /// mode only reports.
    pub fn by_admin(self) -> bool {
        match self {
            Refusal::Blocked => true,
            Refusal::Unapproved | Refusal::NotAllowed | Refusal::Superseded => false,
        }
    }
}
/// Why a TLS handshake (or the re-verification of a resumed session)
/// failed: the label of `certgate_handshake_failures_total{reason}`, the
/// access log's refusals, the readiness report and `X-Client-Verify:
/// FAILED:<reason>`. Bounded: it never carries peer data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The policy refused a CA-valid certificate.
    Refused(Refusal),
    /// No client certificate where one is required.
    NoCertificate,
    /// The certificate (or one of its chain) has expired.
    Expired,
    /// The certificate is not valid yet.
    NotYetValid,
    /// The device certificate is revoked by its CA's CRL.
    Revoked,
    /// A CA certificate of the chain is revoked by its issuer's CRL.
    CaRevoked,
    /// Not issued by a trusted client CA.
    UnknownCa,
    /// A signature of the chain does not verify.
    BadSignature,
    /// No CRL for the issuer where one is required.
    UnknownRevocationStatus,
    /// The issuer's CRL is past its nextUpdate (`crl_stale = "fail_closed"`).
    CrlExpired,
    /// `ocsp = "require"` and no valid OCSP answer for the device (the
    /// responder is down, slow, or its answer does not verify).
    OcspUnavailable,
    /// `ocsp = "require"` and the responder does not know the certificate.
    OcspUnknown,
    /// The certificate does not parse, or fails another certificate check.
    BadCertificate,
    /// The extendedKeyUsage does not allow TLS client authentication.
    InvalidPurpose,
    /// The keyUsage does not allow digitalSignature.
    KeyUsage,
    /// The verifier refused for an application reason.
    AccessDenied,
    /// No TLS 1.2 cipher suite (or ECDHE group) in common.
    NoSharedCipher,
    /// No signature scheme in common.
    NoSharedSignature,
    /// The client does not offer TLS 1.2.
    ProtocolVersion,
    /// The client offered at most SSL 3.0 / TLS 1.0 / TLS 1.1.
    LegacyProtocol,
    /// The client offers TLS 1.2 but only CBC suites: no AEAD-only gateway
    /// can serve it (an agent upgrade, or the plain-HTTP legacy port).
    LegacyCbcOnly,
    /// The client can use only ECDSA certificates with the suites both
    /// sides support (Windows 7 / 8.1 SChannel) and the name has none.
    NeedsEcdsaCertificate,
    /// The client can use only RSA certificates and the name has none.
    NeedsRsaCertificate,
    /// The client can use only Ed25519 certificates and the name has none.
    NeedsEd25519Certificate,
    /// Another incompatibility of the client's offer.
    Incompatible,
    /// A malformed or unexpected handshake message.
    BadMessage,
    /// The client sent an alert.
    ClientAlert,
    /// The client broke the protocol.
    PeerMisbehaved,
    /// The handshake did not complete within `handshake_timeout`.
    Timeout,
    /// The connection failed below TLS (reset, closed).
    Io,
    /// Anything else rustls reports.
    Other,
}

impl Failure {
    /// The reason label.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Refused(r) => r.as_str(),
            Failure::NoCertificate => "no_certificate",
            Failure::Expired => "expired",
            Failure::NotYetValid => "not_yet_valid",
            Failure::Revoked => "revoked",
            Failure::CaRevoked => "ca_revoked",
            Failure::UnknownCa => "unknown_ca",
            Failure::BadSignature => "bad_signature",
            Failure::UnknownRevocationStatus => "unknown_revocation_status",
            Failure::CrlExpired => "crl_expired",
            Failure::OcspUnavailable => "ocsp_unavailable",
            Failure::OcspUnknown => "ocsp_unknown",
            Failure::BadCertificate => "bad_certificate",
            Failure::InvalidPurpose => "invalid_purpose",
            Failure::KeyUsage => "key_usage",
            Failure::AccessDenied => "access_denied",
            Failure::NoSharedCipher => "no_shared_cipher",
            Failure::NoSharedSignature => "no_shared_signature",
            Failure::ProtocolVersion => "protocol_version",
            Failure::LegacyProtocol => "legacy_protocol",
            Failure::LegacyCbcOnly => "legacy_cbc_only",
            Failure::NeedsEcdsaCertificate => "needs_ecdsa_certificate",
            Failure::NeedsRsaCertificate => "needs_rsa_certificate",
            Failure::NeedsEd25519Certificate => "needs_ed25519_certificate",
            Failure::Incompatible => "incompatible",
            Failure::BadMessage => "bad_message",
            Failure::ClientAlert => "client_alert",
            Failure::PeerMisbehaved => "peer_misbehaved",
            Failure::Timeout => "timeout",
            Failure::Io => "io",
            Failure::Other => "other",
        }
    }

    /// What the log says, beyond the label, for the failures certgate
    /// explains itself (rustls's own text says "no cipher suites in common").
    pub fn advice(self) -> Option<&'static str> {
        match self {
            Failure::NeedsEcdsaCertificate => Some(
                "the client can use only an ECDSA certificate with the suites it shares with \
                 this listener (Windows 7 / 8.1 SChannel does this) and the name it asked for has \
                 none: add an ECDSA P-256 [[listener.tls.certificate]] for the same names",
            ),
            Failure::NeedsRsaCertificate => Some(
                "the client can use only an RSA certificate with the suites it shares with this \
                 listener and the name it asked for has none: add an RSA \
                 [[listener.tls.certificate]] for the same names",
            ),
            Failure::NeedsEd25519Certificate => Some(
                "the client can use only an Ed25519 certificate with the suites it shares with \
                 this listener and the name it asked for has none",
            ),
            Failure::LegacyCbcOnly => Some(
                "the client offers TLS 1.2 with CBC suites only; no AEAD-only gateway can serve \
                 it: upgrade the agent's TLS stack, or serve it on a plain-HTTP legacy listener",
            ),
            _ => None,
        }
    }

    /// The server key type a `needs_*_certificate` refusal asks for:
    /// `ECDSA`, `RSA` or `Ed25519`.
    pub fn missing_key_type(self) -> Option<&'static str> {
        match self {
            Failure::NeedsEcdsaCertificate => Some("ECDSA"),
            Failure::NeedsRsaCertificate => Some("RSA"),
            Failure::NeedsEd25519Certificate => Some("Ed25519"),
            _ => None,
        }
    }

    /// How the readiness report counts a device that failed this way:
    /// without credentials, refused by the policy, or failed.
    pub fn class(self) -> FailureClass {
        match self {
            Failure::NoCertificate => FailureClass::NoCredentials,
            Failure::Refused(r) => FailureClass::Refused(r),
            Failure::LegacyProtocol | Failure::LegacyCbcOnly => FailureClass::UpgradeRequired,
            Failure::Expired
            | Failure::NotYetValid
            | Failure::Revoked
            | Failure::CaRevoked
            | Failure::UnknownCa
            | Failure::BadSignature
            | Failure::UnknownRevocationStatus
            | Failure::CrlExpired
            | Failure::OcspUnavailable
            | Failure::OcspUnknown
            | Failure::BadCertificate
            | Failure::InvalidPurpose
            | Failure::KeyUsage
            | Failure::AccessDenied
            | Failure::NoSharedCipher
            | Failure::NoSharedSignature
            | Failure::ProtocolVersion
            | Failure::NeedsEcdsaCertificate
            | Failure::NeedsRsaCertificate
            | Failure::NeedsEd25519Certificate
            | Failure::Incompatible
            | Failure::BadMessage
            | Failure::ClientAlert
            | Failure::PeerMisbehaved
            | Failure::Timeout
            | Failure::Io
            | Failure::Other => FailureClass::Failed,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The readiness class of a [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The client sent no certificate.
    NoCredentials,
    /// The policy refused it.
    Refused(Refusal),
    /// The certificate or the handshake failed.
    Failed,
    /// The client's TLS stack is too old for any TLS 1.2 AEAD gateway.
    UpgradeRequired,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_snake_case_words() {
        let all = [
            Failure::Refused(Refusal::Blocked),
            Failure::Refused(Refusal::Unapproved),
            Failure::Refused(Refusal::NotAllowed),
            Failure::NoCertificate,
            Failure::Expired,
            Failure::NotYetValid,
            Failure::Revoked,
            Failure::CaRevoked,
            Failure::UnknownCa,
            Failure::BadSignature,
            Failure::UnknownRevocationStatus,
            Failure::CrlExpired,
            Failure::OcspUnavailable,
            Failure::OcspUnknown,
            Failure::BadCertificate,
            Failure::InvalidPurpose,
            Failure::KeyUsage,
            Failure::AccessDenied,
            Failure::NoSharedCipher,
            Failure::NoSharedSignature,
            Failure::ProtocolVersion,
            Failure::LegacyProtocol,
            Failure::LegacyCbcOnly,
            Failure::NeedsEcdsaCertificate,
            Failure::NeedsRsaCertificate,
            Failure::NeedsEd25519Certificate,
            Failure::Incompatible,
            Failure::BadMessage,
            Failure::ClientAlert,
            Failure::PeerMisbehaved,
            Failure::Timeout,
            Failure::Io,
            Failure::Other,
        ];
        let labels: std::collections::HashSet<&str> = all.iter().map(|f| f.as_str()).collect();
        assert_eq!(labels.len(), all.len(), "two reasons share a label");
        for l in &labels {
            assert!(
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{l}"
            );
            assert_ne!(
                *l, "none",
                "\"none\" means no failure in metrics and readiness"
            );
        }
    }

    #[test]
    fn only_a_missing_certificate_counts_as_no_credentials() {
        assert_eq!(Failure::NoCertificate.class(), FailureClass::NoCredentials);
        assert_eq!(
            Failure::Refused(Refusal::Blocked).class(),
            FailureClass::Refused(Refusal::Blocked)
        );
        assert_eq!(Failure::UnknownCa.class(), FailureClass::Failed);
        assert_eq!(Failure::Timeout.class(), FailureClass::Failed);
        assert_eq!(
            Failure::LegacyCbcOnly.class(),
            FailureClass::UpgradeRequired
        );
        assert_eq!(
            Failure::LegacyProtocol.class(),
            FailureClass::UpgradeRequired
        );
        assert_eq!(Failure::NeedsEcdsaCertificate.class(), FailureClass::Failed);
    }
}
