//! The verified identity of a client certificate: fingerprint, subject,
//! serial, and the header values derived from them.

use base64::Engine as _;
use http::HeaderValue;
use std::fmt::Write as _;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::rfc4514_subject;

/// The verified identity of a client certificate, computed once per
/// connection and attached to every request on it.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// Lowercase hex SHA-256 of the certificate DER: the device key.
    pub fingerprint: String,
    /// The same digest as bytes (the registry's key).
    pub fingerprint_bytes: [u8; 32],
    /// Subject DN, RFC 4514, ASCII only (non-ASCII bytes are `\XX` escaped).
    pub subject: String,
    /// Serial number, uppercase hex without leading zero bytes.
    pub serial: String,
    /// Pre-built header values, so requests only clone them.
    pub headers: IdentityHeaders,
}

/// Header values derived from a client certificate.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    /// `X-Client-Cert-Fingerprint`.
    pub fingerprint: HeaderValue,
    /// `X-Client-Cert-Subject`.
    pub subject: HeaderValue,
    /// `X-Client-Cert-Serial`.
    pub serial: HeaderValue,
    /// `Client-Cert` (RFC 9440): `:base64(DER):`.
    pub client_cert: HeaderValue,
}

impl PeerIdentity {
    /// Derives the identity of a (verified) client certificate. `None` only
    /// if the DER does not parse, which the verifier would have refused.
    pub fn from_der(der: &[u8]) -> Option<PeerIdentity> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let fingerprint_bytes = crate::registry::fingerprint(der);
        let fingerprint = sha256_hex_of(&fingerprint_bytes);
        let subject = rfc4514_subject(&cert);
        let serial = serial_hex(cert.raw_serial());
        let client_cert = format!(
            ":{}:",
            base64::engine::general_purpose::STANDARD.encode(der)
        );
        let headers = IdentityHeaders {
            fingerprint: HeaderValue::from_str(&fingerprint).ok()?,
            subject: HeaderValue::from_str(&subject).ok()?,
            serial: HeaderValue::from_str(&serial).ok()?,
            client_cert: HeaderValue::from_str(&client_cert).ok()?,
        };
        Some(PeerIdentity {
            fingerprint,
            fingerprint_bytes,
            subject,
            serial,
            headers,
        })
    }
}

/// The RFC 4514 subject of a certificate, if it parses.
pub fn subject_of(der: &[u8]) -> Option<String> {
    X509Certificate::from_der(der)
        .ok()
        .map(|(_, c)| rfc4514_subject(&c))
}

/// Lowercase hex of a 32-byte digest.
pub fn sha256_hex_of(digest: &[u8; 32]) -> String {
    hex_lower(digest)
}

/// Lowercase hex SHA-256 of `der`: how a device is keyed.
pub fn sha256_hex(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    hex_lower(digest.as_ref())
}

pub(super) fn hex_lower(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A serial number as uppercase hex without leading zeros.
pub fn serial_hex(raw: &[u8]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_drops_sign_byte() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8F01");
        assert_eq!(serial_hex(&[0x00]), "00");
    }
}
