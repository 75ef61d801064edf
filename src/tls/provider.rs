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
    // Prefer AES-128-GCM with ECDSA: it is what fleet agents and the peer
    // gateways negotiate first, and the cheapest on AES-NI hardware.
    provider.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 1,
        _ => 2,
    });
    provider
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
