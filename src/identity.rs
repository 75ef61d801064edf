//! The device identity of a certificate: its fingerprint (the registry's
//! key), serial and RFC 4514 subject. A leaf module: no HTTP, no TLS
//! state; header values are made from it by the proxy's header rules.

use std::fmt::Write as _;

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::dn::rfc4514_subject;

/// The verified identity of a client certificate, computed once per
/// connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Lowercase hex SHA-256 of the certificate DER: the device key.
    pub fingerprint: String,
    /// The same digest as bytes (the registry's key).
    pub fingerprint_bytes: [u8; 32],
    /// Subject DN, RFC 4514, ASCII only (non-ASCII bytes are `\XX` escaped).
    pub subject: String,
    /// Serial number, uppercase hex without leading zero bytes.
    pub serial: String,
}

impl PeerIdentity {
    /// Derives the identity of a (verified) client certificate. `None` only
    /// if the DER does not parse, which the verifier would have refused.
    pub fn from_der(der: &[u8]) -> Option<PeerIdentity> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let fingerprint_bytes = fingerprint(der);
        Some(PeerIdentity {
            fingerprint: sha256_hex_of(&fingerprint_bytes),
            fingerprint_bytes,
            subject: rfc4514_subject(&cert),
            serial: serial_hex(cert.raw_serial()),
        })
    }
}

/// Fingerprint bytes of a certificate: SHA-256 of its DER.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    sha256(der)
}

/// SHA-256 of any bytes.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The RFC 4514 subject of a certificate, if it parses.
pub(crate) fn subject_of(der: &[u8]) -> Option<String> {
    X509Certificate::from_der(der)
        .ok()
        .map(|(_, c)| rfc4514_subject(&c))
}

/// Lowercase hex of a 32-byte digest.
pub(crate) fn sha256_hex_of(digest: &[u8; 32]) -> String {
    hex_lower(digest)
}

/// Lowercase hex SHA-256 of `der`: how a device is keyed.
pub fn sha256_hex(der: &[u8]) -> String {
    hex_lower(&fingerprint(der))
}

/// Lowercase hex of any bytes.
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A serial number as uppercase hex without leading zeros.
pub(crate) fn serial_hex(raw: &[u8]) -> String {
    // DER INTEGERs carry a leading 0x00 when the high bit is set; OpenSSL
    // (and so nginx's $ssl_client_serial) prints the number without it.
    let mut trimmed = raw;
    while trimmed.len() > 1 && trimmed[0] == 0 {
        trimmed = &trimmed[1..];
    }
    let mut s = String::with_capacity(trimmed.len() * 2);
    for b in trimmed {
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// The bytes of a serial written as hex ([`serial_hex`], or with colons
/// or spaces as other tools print it); non-hex characters are skipped.
pub(crate) fn serial_from_hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .chars()
        .filter_map(|c| c.to_digit(16))
        .filter_map(|d| u8::try_from(d).ok())
        .collect();
    // An odd count: the first digit stands alone (no leading zero written).
    let (head, rest) = digits.split_at(digits.len() % 2);
    head.iter()
        .copied()
        .chain(rest.chunks(2).map(|p| (p[0] << 4) | p[1]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_hex_round_trips() {
        for raw in [
            &[0x8fu8, 0x01][..],
            &[0x10, 0x02],
            &[0x01],
            &[0x0a, 0xbc, 0xde],
        ] {
            assert_eq!(serial_from_hex(&serial_hex(raw)), raw.to_vec());
        }
        assert_eq!(serial_from_hex("8f:01"), vec![0x8f, 0x01]);
    }

    #[test]
    fn serial_drops_sign_byte() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8F01");
        assert_eq!(serial_hex(&[0x00]), "00");
    }

    #[test]
    fn fingerprint_hex_is_lowercase_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
