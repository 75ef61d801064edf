//! A device as stored: a lineage of certificates (the device's first
//! certificate and every renewal that inherited its status), one status
//! for all of them, and the view the API and the CLI show; fingerprints
//! as text.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::dn::{attribute_text, rfc4514_subject};

/// A device's approval state: it applies to every certificate of the
/// device, present and future.
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

/// One certificate of a device and what is known about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    /// Lowercase hex SHA-256 of the certificate DER.
    pub fingerprint: String,
    /// Subject, RFC 4514 (empty when only the fingerprint is known).
    #[serde(default)]
    pub subject: String,
    /// Issuer, RFC 4514 (records made before certgate 0.2 may hold
    /// x509-parser's display form until the certificate is seen again).
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
    /// Lowercase hex SHA-256 of the SubjectPublicKeyInfo (empty when the
    /// certificate itself has not been seen: known by fingerprint only, or
    /// recorded by a certgate before lineages).
    #[serde(default)]
    pub key: String,
    /// The authority key identifier, lowercase hex (empty when absent or
    /// unknown).
    #[serde(default)]
    pub authority_key_id: String,
    /// Subject attributes as (dotted OID, text), for `renewal_identity`.
    #[serde(default)]
    pub subject_attributes: Vec<(String, String)>,
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
    /// When a later certificate of the device was first used: from then
    /// on this one is refused after the listener's `supersede_grace`.
    #[serde(default)]
    pub superseded_at: Option<i64>,
    /// The certificate this one renewed (it joined the device by the
    /// listener's renewal rule), by fingerprint.
    #[serde(default)]
    pub renewal_of: Option<String>,
    /// The renewal rule found several approved devices with this
    /// certificate's identity: nothing was inherited.
    #[serde(default)]
    pub ambiguous_identity: bool,
}

impl Certificate {
    /// The record of a certificate, from its DER. A certificate that does
    /// not parse is recorded by fingerprint only.
    pub fn from_der(fingerprint: String, der: &[u8]) -> Certificate {
        let mut c = Certificate::bare(fingerprint);
        c.fill_from_der(der);
        c
    }

    /// A record known only by fingerprint (pre-approved, imported).
    pub fn bare(fingerprint: String) -> Certificate {
        Certificate {
            fingerprint,
            subject: String::new(),
            issuer: String::new(),
            serial: String::new(),
            sans: Vec::new(),
            not_before: 0,
            not_after: 0,
            key: String::new(),
            authority_key_id: String::new(),
            subject_attributes: Vec::new(),
            first_seen: None,
            last_seen: None,
            last_peer: None,
            connections: 0,
            refusals: BTreeMap::new(),
            superseded_at: None,
            renewal_of: None,
            ambiguous_identity: false,
        }
    }

    /// Whether the record was made from the certificate itself (the
    /// renewal rule needs its key and authority key id).
    pub fn has_details(&self) -> bool {
        !self.key.is_empty()
    }

    /// Fills the fields that come from the certificate.
    pub(crate) fn fill_from_der(&mut self, der: &[u8]) {
        if let Ok((_, cert)) = X509Certificate::from_der(der) {
            self.fill_from(&cert);
        }
    }

    /// Fills the fields that come from the (parsed) certificate.
    pub(crate) fn fill_from(&mut self, cert: &X509Certificate<'_>) {
        self.subject = rfc4514_subject(cert);
        self.issuer = crate::dn::rfc4514(cert.issuer());
        self.serial = crate::identity::serial_hex(cert.raw_serial());
        self.not_before = cert.validity().not_before.timestamp();
        self.not_after = cert.validity().not_after.timestamp();
        self.key = crate::identity::hex_lower(&crate::identity::sha256(cert.public_key().raw));
        self.authority_key_id = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => aki
                    .key_identifier
                    .as_ref()
                    .map(|k| crate::identity::hex_lower(k.0)),
                _ => None,
            })
            .unwrap_or_default();
        self.subject_attributes = cert
            .subject()
            .iter_attributes()
            .filter_map(|a| Some((a.attr_type().to_id_string(), attribute_text(a)?)))
            .collect();
        self.sans.clear();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(v) => self.sans.push(format!("DNS:{v}")),
                    GeneralName::URI(v) => self.sans.push(format!("URI:{v}")),
                    GeneralName::RFC822Name(v) => self.sans.push(format!("email:{v}")),
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
                            self.sans.push(format!("IP:{ip}"));
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The values of one kind of subject alternative name (`DNS`, `URI`).
    pub(crate) fn sans_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.sans
            .iter()
            .filter_map(move |s| s.strip_prefix(kind).and_then(|rest| rest.strip_prefix(':')))
    }
}

/// A device: one status for a lineage of certificates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// The stable device id (16 hex digits, from the first certificate's
    /// fingerprint); it stays when the device's certificates change.
    pub id: String,
    /// Approval state of the device and all its certificates.
    pub status: DeviceStatus,
    /// Administrator's label or note.
    #[serde(default)]
    pub label: Option<String>,
    /// Last administrator change: when.
    #[serde(default)]
    pub changed_at: Option<i64>,
    /// Who made the last administrator change (the token name).
    #[serde(default)]
    pub changed_by: Option<String>,
    /// The device's certificates, in the order they joined it.
    pub certificates: Vec<Certificate>,
}

/// At most this many certificates are kept per device: a device that
/// renews daily must not grow without end. The oldest superseded ones go
/// first; a certificate dropped from its device is unknown again, and a
/// renewal rule never lets an older certificate inherit.
pub(crate) const MAX_CERTIFICATES: usize = 16;

impl Device {
    /// A device of one certificate.
    pub fn of(id: String, certificate: Certificate, status: DeviceStatus) -> Device {
        Device {
            id,
            status,
            label: None,
            changed_at: None,
            changed_by: None,
            certificates: vec![certificate],
        }
    }

    /// The certificate the device uses now: the newest (by notBefore)
    /// that is not superseded, else the newest.
    pub fn current(&self) -> Option<&Certificate> {
        let newest = |a: &&Certificate, b: &&Certificate| a.not_before.cmp(&b.not_before);
        self.certificates
            .iter()
            .filter(|c| c.superseded_at.is_none())
            .max_by(newest)
            .or_else(|| self.certificates.iter().max_by(newest))
    }

    /// The certificate with this fingerprint.
    pub fn certificate(&self, fingerprint: &str) -> Option<&Certificate> {
        self.certificates
            .iter()
            .find(|c| c.fingerprint == fingerprint)
    }

    /// Adds a renewal: `new` becomes current and, when `supersede`, every
    /// other certificate not yet superseded is superseded at `at`. The
    /// oldest superseded certificates beyond [`MAX_CERTIFICATES`] are
    /// dropped; their fingerprints are returned.
    pub(crate) fn renew(&mut self, new: Certificate, supersede: bool, at: i64) -> Vec<String> {
        if supersede {
            for c in &mut self.certificates {
                if c.superseded_at.is_none() && c.not_before <= new.not_before {
                    c.superseded_at = Some(at);
                }
            }
        }
        self.certificates.push(new);
        let mut dropped = Vec::new();
        while self.certificates.len() > MAX_CERTIFICATES {
            let Some(i) = self
                .certificates
                .iter()
                .position(|c| c.superseded_at.is_some())
            else {
                break;
            };
            dropped.push(self.certificates.remove(i).fingerprint);
        }
        dropped
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

    /// The view the API answers with.
    pub fn view(&self) -> DeviceView {
        DeviceView::of(self)
    }
}

/// The device id a first certificate gives: the first 16 hex digits of
/// its fingerprint, longer when that is taken by another device.
pub(crate) fn device_id(fingerprint: &str, taken: impl Fn(&str) -> bool) -> String {
    // By character: a record read from disk may hold anything.
    let chars: Vec<char> = fingerprint.chars().collect();
    let mut n = 16.min(chars.len());
    loop {
        let id: String = chars[..n].iter().collect();
        if !taken(&id) || n >= chars.len() {
            return id;
        }
        n = (n + 8).min(chars.len());
    }
}

/// A device as the API and the CLI show it: the device, the fields of its
/// current certificate at the top (so one row per device reads like one
/// certificate did before lineages), the counters summed over its
/// certificates, and every certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    /// The stable device id.
    pub id: String,
    /// The current certificate's fingerprint.
    pub fingerprint: String,
    /// The current certificate's subject.
    #[serde(default)]
    pub subject: String,
    /// The current certificate's issuer.
    #[serde(default)]
    pub issuer: String,
    /// The current certificate's serial.
    #[serde(default)]
    pub serial: String,
    /// The current certificate's SANs.
    #[serde(default)]
    pub sans: Vec<String>,
    /// The current certificate's validity start (0 when unknown).
    #[serde(default)]
    pub not_before: i64,
    /// The current certificate's validity end (0 when unknown).
    #[serde(default)]
    pub not_after: i64,
    /// The device's status.
    pub status: DeviceStatus,
    /// First handshake of any of its certificates.
    #[serde(default)]
    pub first_seen: Option<i64>,
    /// Latest handshake of any of its certificates.
    #[serde(default)]
    pub last_seen: Option<i64>,
    /// Source address of the latest handshake.
    #[serde(default)]
    pub last_peer: Option<String>,
    /// Connections admitted, all certificates.
    #[serde(default)]
    pub connections: u64,
    /// Refusals by reason, all certificates.
    #[serde(default)]
    pub refusals: BTreeMap<String, u64>,
    /// Administrator's label.
    #[serde(default)]
    pub label: Option<String>,
    /// Last administrator change.
    #[serde(default)]
    pub changed_at: Option<i64>,
    /// Who made it.
    #[serde(default)]
    pub changed_by: Option<String>,
    /// The current certificate was not inherited because its identity is
    /// shared by several approved devices.
    #[serde(default)]
    pub ambiguous_identity: bool,
    /// Every certificate, in the order they joined the device.
    #[serde(default)]
    pub certificates: Vec<CertificateView>,
}

/// One certificate of a [`DeviceView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateView {
    /// The certificate.
    #[serde(flatten)]
    pub certificate: Certificate,
    /// `current`, `superseded` or `previous` (older, not yet superseded).
    pub state: String,
}

impl DeviceView {
    /// The device an export holds (`certgate devices import`).
    pub fn into_device(self) -> Device {
        Device {
            id: self.id,
            status: self.status,
            label: self.label,
            changed_at: self.changed_at,
            changed_by: self.changed_by,
            certificates: self
                .certificates
                .into_iter()
                .map(|c| c.certificate)
                .collect(),
        }
    }

    fn of(d: &Device) -> DeviceView {
        let empty = Certificate::bare(String::new());
        let current = d.current().unwrap_or(&empty);
        let mut refusals = BTreeMap::new();
        for c in &d.certificates {
            for (k, v) in &c.refusals {
                *refusals.entry(k.clone()).or_insert(0) += v;
            }
        }
        let latest = d
            .certificates
            .iter()
            .filter(|c| c.last_seen.is_some())
            .max_by_key(|c| c.last_seen);
        DeviceView {
            id: d.id.clone(),
            fingerprint: current.fingerprint.clone(),
            subject: current.subject.clone(),
            issuer: current.issuer.clone(),
            serial: current.serial.clone(),
            sans: current.sans.clone(),
            not_before: current.not_before,
            not_after: current.not_after,
            status: d.status,
            first_seen: d.certificates.iter().filter_map(|c| c.first_seen).min(),
            last_seen: latest.and_then(|c| c.last_seen),
            last_peer: latest.and_then(|c| c.last_peer.clone()),
            connections: d.certificates.iter().map(|c| c.connections).sum(),
            refusals,
            label: d.label.clone(),
            changed_at: d.changed_at,
            changed_by: d.changed_by.clone(),
            ambiguous_identity: current.ambiguous_identity,
            certificates: d
                .certificates
                .iter()
                .map(|c| CertificateView {
                    state: if c.fingerprint == current.fingerprint {
                        "current"
                    } else if c.superseded_at.is_some() {
                        "superseded"
                    } else {
                        "previous"
                    }
                    .into(),
                    certificate: c.clone(),
                })
                .collect(),
        }
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
    crate::identity::hex_lower(fp)
}

pub(super) fn unhex32(s: &str) -> Option<[u8; 32]> {
    // Runs for every certificate at every snapshot rebuild: no parsing
    // machinery, one table-free nibble step per digit.
    fn nibble(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
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
        let d = Device::decode(
            br#"{"id":"ab","status":"blocked","certificates":[{"fingerprint":"ab"}]}"#,
        )
        .unwrap_or_else(|_| {
            Device::of(
                "x".into(),
                Certificate::bare("x".into()),
                DeviceStatus::Pending,
            )
        });
        assert_eq!(d.status, DeviceStatus::Blocked);
        assert!(Device::decode(b"garbage").is_err());
    }

    fn cert(fp: &str, not_before: i64) -> Certificate {
        let mut c = Certificate::bare(fp.into());
        c.not_before = not_before;
        c
    }

    #[test]
    fn a_renewal_becomes_current_and_supersedes_the_older_ones() {
        let mut d = Device::of("a".into(), cert("a", 10), DeviceStatus::Approved);
        assert!(d.renew(cert("b", 20), true, 99).is_empty());
        assert_eq!(d.current().map(|c| c.fingerprint.as_str()), Some("b"));
        assert_eq!(d.certificate("a").and_then(|c| c.superseded_at), Some(99));
        let v = d.view();
        assert_eq!(v.fingerprint, "b");
        assert_eq!(v.certificates[0].state, "superseded");
        assert_eq!(v.certificates[1].state, "current");
    }

    #[test]
    fn a_device_keeps_at_most_max_certificates() {
        let mut d = Device::of("x".into(), cert("c0", 0), DeviceStatus::Approved);
        let mut dropped = Vec::new();
        for i in 1..=(MAX_CERTIFICATES as i64 + 3) {
            dropped.extend(d.renew(cert(&format!("c{i}"), i), true, i));
        }
        assert_eq!(d.certificates.len(), MAX_CERTIFICATES);
        assert_eq!(dropped, vec!["c0", "c1", "c2", "c3"]);
    }

    #[test]
    fn ids_grow_on_a_clash() {
        let fp = "0123456789abcdef".repeat(4);
        assert_eq!(device_id(&fp, |_| false), "0123456789abcdef");
        assert_eq!(
            device_id(&fp, |id| id.len() == 16),
            "0123456789abcdef01234567"
        );
        // A corrupt record's "fingerprint" does not panic the migration.
        assert_eq!(
            device_id("ééééééééééééééééé", |_| false).chars().count(),
            16
        );
    }
}
