//! The key type of a server certificate. In TLS 1.2 it decides which
//! cipher suites the certificate can serve (ECDHE_ECDSA_* or ECDHE_RSA_*),
//! and legacy stacks differ in which of the two they offer with AES-GCM:
//! Windows 7 and 8.1 SChannel only with ECDSA, some older stacks only with
//! RSA. A name therefore holds one certificate per key type.

use rustls::{SignatureAlgorithm, SignatureScheme};

/// The key type of a server certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum KeyKind {
    /// ECDSA (P-256, P-384): the cheapest handshakes, preferred.
    Ecdsa,
    /// Ed25519: cheap, but few TLS 1.2 clients offer it.
    Ed25519,
    /// RSA: what every stack supports, at the highest signing cost.
    Rsa,
}

impl KeyKind {
    /// Every kind, in the order certgate prefers when a client can use
    /// several: the cheapest signature first.
    pub(crate) const PREFERENCE: [KeyKind; 3] = [KeyKind::Ecdsa, KeyKind::Ed25519, KeyKind::Rsa];

    /// The kind of a loaded signing key; `None` for an algorithm certgate
    /// does not serve (the key provider refuses those at load anyway).
    pub(crate) fn of(algorithm: SignatureAlgorithm) -> Option<KeyKind> {
        match algorithm {
            SignatureAlgorithm::ECDSA => Some(KeyKind::Ecdsa),
            SignatureAlgorithm::ED25519 => Some(KeyKind::Ed25519),
            SignatureAlgorithm::RSA => Some(KeyKind::Rsa),
            _ => None,
        }
    }

    /// Whether a certificate of this kind can sign with `scheme`.
    pub(crate) fn signs(self, scheme: SignatureScheme) -> bool {
        use SignatureScheme as S;
        match self {
            KeyKind::Ecdsa => matches!(
                scheme,
                S::ECDSA_NISTP256_SHA256 | S::ECDSA_NISTP384_SHA384 | S::ECDSA_NISTP521_SHA512
            ),
            KeyKind::Ed25519 => scheme == S::ED25519,
            KeyKind::Rsa => matches!(
                scheme,
                S::RSA_PKCS1_SHA256
                    | S::RSA_PKCS1_SHA384
                    | S::RSA_PKCS1_SHA512
                    | S::RSA_PSS_SHA256
                    | S::RSA_PSS_SHA384
                    | S::RSA_PSS_SHA512
            ),
        }
    }

    /// The name an admin reads in messages: `ECDSA`, `Ed25519`, `RSA`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            KeyKind::Ecdsa => "ECDSA",
            KeyKind::Ed25519 => "Ed25519",
            KeyKind::Rsa => "RSA",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_belong_to_one_kind_each() {
        use SignatureScheme as S;
        for (scheme, kind) in [
            (S::ECDSA_NISTP256_SHA256, KeyKind::Ecdsa),
            (S::ECDSA_NISTP384_SHA384, KeyKind::Ecdsa),
            (S::RSA_PKCS1_SHA256, KeyKind::Rsa),
            (S::RSA_PSS_SHA256, KeyKind::Rsa),
            (S::ED25519, KeyKind::Ed25519),
        ] {
            for k in KeyKind::PREFERENCE {
                assert_eq!(k.signs(scheme), k == kind, "{scheme:?} {k:?}");
            }
        }
        assert!(!KeyKind::Rsa.signs(S::RSA_PKCS1_SHA1));
    }
}
