//! A device record as stored and listed: status, certificate fields,
//! first/last seen, counters; and fingerprints as text.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::dn::rfc4514_subject;

/// A device's approval state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// Seen, not yet approved: refused in `manual` mode.
    Pending,
    /// Admitted.
    Approved,
    /// Refused everywhere.
    Blocked,
}

impl DeviceStatus {
    /// The lowercase name used in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Approved => "approved",
            DeviceStatus::Blocked => "blocked",
        }
    }

    /// Parses `pending`, `approved` or `blocked`.
    pub fn parse(s: &str) -> Option<DeviceStatus> {
        match s {
            "pending" => Some(DeviceStatus::Pending),
            "approved" => Some(DeviceStatus::Approved),
            "blocked" => Some(DeviceStatus::Blocked),
            _ => None,
        }
    }
}

/// One device certificate and what is known about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Lowercase hex SHA-256 of the certificate DER: the key.
    pub fingerprint: String,
    /// Subject, RFC 4514 (empty when only the fingerprint is known).
    #[serde(default)]
    pub subject: String,
    /// Issuer, RFC 4514.
    #[serde(default)]
    pub issuer: String,
    /// Serial, uppercase hex.
    #[serde(default)]
    pub serial: String,
    /// Subject alternative names (`DNS:...`, `URI:...`, `IP:...`, `email:...`).
    #[serde(default)]
    pub sans: Vec<String>,
    /// Validity start, Unix seconds (0 when unknown).
    #[serde(default)]
    pub not_before: i64,
    /// Validity end, Unix seconds (0 when unknown).
    #[serde(default)]
    pub not_after: i64,
    /// Approval state.
    pub status: DeviceStatus,
    /// First handshake seen, Unix seconds.
    #[serde(default)]
    pub first_seen: Option<i64>,
    /// Latest handshake seen, Unix seconds.
    #[serde(default)]
    pub last_seen: Option<i64>,
    /// Source address of the latest handshake.
    #[serde(default)]
    pub last_peer: Option<String>,
    /// Connections admitted.
    #[serde(default)]
    pub connections: u64,
    /// Refused handshakes by reason.
    #[serde(default)]
    pub refusals: BTreeMap<String, u64>,
    /// Administrator's label or note.
    #[serde(default)]
    pub label: Option<String>,
    /// Last administrator change: when, by whom.
    #[serde(default)]
    pub changed_at: Option<i64>,
    /// Who made the last administrator change (the token name).
    #[serde(default)]
    pub changed_by: Option<String>,
}

impl Device {
    /// A record for a certificate seen for the first time.
    pub fn from_der(fingerprint: String, der: &[u8], status: DeviceStatus) -> Device {
        let mut d = Device::bare(fingerprint, status);
        if let Ok((_, cert)) = X509Certificate::from_der(der) {
            d.subject = rfc4514_subject(&cert);
            d.issuer = crate::dn::rfc4514(cert.issuer());
            d.serial = crate::identity::serial_hex(cert.raw_serial());
            d.not_before = cert.validity().not_before.timestamp();
            d.not_after = cert.validity().not_after.timestamp();
            if let Ok(Some(san)) = cert.subject_alternative_name() {
                for n in &san.value.general_names {
                    match n {
                        GeneralName::DNSName(v) => d.sans.push(format!("DNS:{v}")),
                        GeneralName::URI(v) => d.sans.push(format!("URI:{v}")),
                        GeneralName::RFC822Name(v) => d.sans.push(format!("email:{v}")),
                        GeneralName::IPAddress(b) => {
                            let ip = match b.len() {
                                4 => <[u8; 4]>::try_from(*b)
                                    .map(|a| std::net::IpAddr::from(a).to_string())
                                    .ok(),
                                16 => <[u8; 16]>::try_from(*b)
                                    .map(|a| std::net::IpAddr::from(a).to_string())
                                    .ok(),
                                _ => None,
                            };
                            if let Some(ip) = ip {
                                d.sans.push(format!("IP:{ip}"));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        d
    }

    /// A record known only by fingerprint (pre-approved, imported).
    pub fn bare(fingerprint: String, status: DeviceStatus) -> Device {
        Device {
            fingerprint,
            subject: String::new(),
            issuer: String::new(),
            serial: String::new(),
            sans: Vec::new(),
            not_before: 0,
            not_after: 0,
            status,
            first_seen: None,
            last_seen: None,
            last_peer: None,
            connections: 0,
            refusals: BTreeMap::new(),
            label: None,
            changed_at: None,
            changed_by: None,
        }
    }

    /// The stored form (JSON: readable with any tool, tolerant of added
    /// fields).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes the stored form.
    pub fn decode(bytes: &[u8]) -> Result<Device, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Parses a fingerprint given by a user: 64 hex digits, any case, colons
/// allowed (as `openssl x509 -fingerprint -sha256` prints them).
pub(crate) fn parse_fingerprint(s: &str) -> Option<String> {
    let hex: String = s
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

pub(super) fn hex32(fp: &[u8; 32]) -> String {
    let mut s = String::with_capacity(64);
    for b in fp {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

pub(super) fn unhex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let t = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(t, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_normalised() {
        let colons = "AB:".repeat(31) + "AB";
        assert_eq!(parse_fingerprint(&colons), Some("ab".repeat(32)));
        assert_eq!(parse_fingerprint("xyz"), None);
        let fp = [7u8; 32];
        assert_eq!(unhex32(&hex32(&fp)), Some(fp));
    }

    #[test]
    fn records_decode_with_missing_fields() {
        let d = Device::decode(br#"{"fingerprint":"ab","status":"blocked"}"#)
            .unwrap_or_else(|_| Device::bare("x".into(), DeviceStatus::Pending));
        assert_eq!(d.status, DeviceStatus::Blocked);
        assert!(Device::decode(b"garbage").is_err());
    }
}
