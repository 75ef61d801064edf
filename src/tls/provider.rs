//! The crypto policy in one place: the aws-lc-rs provider restricted to the
//! configured TLS versions and the suite order fleets negotiate first.

use rustls::SupportedCipherSuite;
use rustls::crypto::CryptoProvider;

use crate::config::TlsVersion;

/// The crypto policy in one place (after linkerd2-proxy's `crypto.rs`): the
/// aws-lc-rs provider restricted to the configured versions. rustls has no
/// CBC, RC4, 3DES or static-RSA suites at all, so every remaining TLS 1.2
/// suite is ECDHE + AEAD; we only drop the versions that are not enabled.
pub(crate) fn crypto_provider(versions: &[TlsVersion]) -> CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    let v12 = versions.contains(&TlsVersion::V1_2);
    let v13 = versions.contains(&TlsVersion::V1_3);
    provider.cipher_suites.retain(|s| match s {
        SupportedCipherSuite::Tls12(_) => v12,
        SupportedCipherSuite::Tls13(_) => v13,
    });
    provider
        .cipher_suites
        .sort_by_key(|s| suite_rank(s.suite()));
    provider
}

/// Server order (enforced: `ignore_client_order`): within each key type
/// AES-128-GCM, then AES-256-GCM, then ChaCha20-Poly1305. AES-128-GCM is
/// what every legacy stack with an AEAD suite accepts (Windows 7 / 8.1
/// enable ECDSA AES-256-GCM by default only on P-384) and the cheapest on
/// AES-NI hardware; ChaCha20 last, for clients without AES at all. The key
/// type is decided first, by the certificate chosen for the client.
fn suite_rank(s: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as C;
    match s {
        C::TLS13_AES_128_GCM_SHA256 => 0,
        C::TLS13_AES_256_GCM_SHA384 => 1,
        C::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => 10,
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 11,
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => 12,
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 13,
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => 14,
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => 15,
        _ => 20,
    }
}

pub(super) fn protocol_versions(
    versions: &[TlsVersion],
) -> Vec<&'static rustls::SupportedProtocolVersion> {
    versions
        .iter()
        .map(|v| match v {
            TlsVersion::V1_2 => &rustls::version::TLS12,
            TlsVersion::V1_3 => &rustls::version::TLS13,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls12_suites_go_aes128_then_aes256_then_chacha_within_each_key_type() {
        let p = crypto_provider(&[TlsVersion::V1_2]);
        let names: Vec<String> = p
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        for kind in ["ECDSA", "RSA"] {
            let order: Vec<&str> = names
                .iter()
                .filter(|n| n.contains(&format!("ECDHE_{kind}_")))
                .map(|n| {
                    if n.contains("AES_128") {
                        "aes128"
                    } else if n.contains("AES_256") {
                        "aes256"
                    } else {
                        "chacha"
                    }
                })
                .collect();
            assert_eq!(order, ["aes128", "aes256", "chacha"], "{kind}: {names:?}");
        }
    }

    #[test]
    fn tls12_only_provider_has_only_ecdhe_aead_tls12_suites() {
        let p = crypto_provider(&[TlsVersion::V1_2]);
        assert!(!p.cipher_suites.is_empty());
        for s in &p.cipher_suites {
            assert_eq!(s.version(), &rustls::version::TLS12);
            let name = format!("{:?}", s.suite());
            assert!(name.contains("ECDHE") && (name.contains("GCM") || name.contains("CHACHA20")));
        }
    }
}
