//! The snapshot handshakes read: every certificate's device status, and
//! an index of devices by the identity the listeners' renewal rules match
//! on. Built whole by the writer from its records and swapped in; never
//! changed in place.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::Arc;

use crate::config::RenewalIdentity;

use super::device::unhex32;
use super::{Certificate, Device, DeviceStatus};

/// What a handshake needs to know about a certificate the registry has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertEntry {
    /// The status of its device.
    pub status: DeviceStatus,
    /// When a later certificate of the device was first used.
    pub superseded_at: Option<i64>,
    /// A pending device of this one certificate that no administrator has
    /// decided on: the renewal rule may still find the device it renews.
    pub undecided: bool,
    /// The record lacks what only the certificate tells (key, authority
    /// key id): the next handshake sends it to be filled in.
    pub needs_details: bool,
}

/// A device's current certificate, as the renewal rule compares a
/// newcomer with it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The device's status.
    pub status: DeviceStatus,
    /// The current certificate's fingerprint.
    pub fingerprint: [u8; 32],
    /// Its issuer as recorded.
    pub issuer: Arc<str>,
    /// Its authority key id, hex (empty: absent or unknown).
    pub authority_key_id: Arc<str>,
    /// Its serial, uppercase hex.
    pub serial: Arc<str>,
    /// Its validity.
    pub not_before: i64,
    /// Its validity end.
    pub not_after: i64,
}

/// The registry's snapshot.
#[derive(Debug, Default)]
pub struct Snapshot {
    certs: HashMap<[u8; 32], CertEntry>,
    candidates: Vec<Candidate>,
    /// (keyed hash of (identity kind, issuer, identity value), index into
    /// `candidates`), sorted: one allocation for the whole fleet, where a
    /// map of lists would make one per device at every rebuild.
    index: Vec<(u64, u32)>,
    hasher: std::collections::hash_map::RandomState,
}

impl Snapshot {
    /// Builds the snapshot of `records`, indexed for `identities` (the
    /// writer does, at every change it publishes).
    pub fn build<'a>(
        records: impl Iterator<Item = &'a Device>,
        identities: &[RenewalIdentity],
    ) -> Snapshot {
        let mut s = Snapshot::default();
        let (lower, _) = records.size_hint();
        s.certs.reserve(lower);
        // Issuers and key ids repeat across a fleet: one allocation each.
        let mut interned: HashMap<&str, Arc<str>> = HashMap::new();
        let mut intern = |v: &'a str| interned.entry(v).or_insert_with(|| v.into()).clone();
        for d in records {
            let undecided = d.status == DeviceStatus::Pending
                && d.certificates.len() == 1
                && d.changed_at.is_none();
            for c in &d.certificates {
                if let Some(fp) = unhex32(&c.fingerprint) {
                    s.certs.insert(
                        fp,
                        CertEntry {
                            status: d.status,
                            superseded_at: c.superseded_at,
                            undecided,
                            needs_details: !c.has_details(),
                        },
                    );
                }
            }
            let Some(current) = d.current() else { continue };
            let Some(fingerprint) = unhex32(&current.fingerprint) else {
                continue;
            };
            if current.subject.is_empty() && !current.has_details() {
                // Known by fingerprint only: nothing to match a renewal on.
                continue;
            }
            let i = s.candidates.len() as u32;
            let mut indexed = false;
            for id in identities {
                if let Some(value) = identity_value(current, id) {
                    let k = s.key(id, &current.issuer, value.as_ref());
                    s.index.push((k, i));
                    indexed = true;
                }
            }
            if indexed {
                s.candidates.push(Candidate {
                    status: d.status,
                    fingerprint,
                    issuer: intern(&current.issuer),
                    authority_key_id: intern(&current.authority_key_id),
                    serial: current.serial.as_str().into(),
                    not_before: current.not_before,
                    not_after: current.not_after,
                });
            }
        }
        // Within one identity, blocked devices first, then approved, then
        // pending: the renewal rule decides on the first two of a kind, so
        // a fleet whose devices share one subject costs a handshake a few
        // steps, not a walk over all of them.
        let rank = |i: u32| match s.candidates.get(i as usize).map(|c| c.status) {
            Some(DeviceStatus::Blocked) => 0u8,
            Some(DeviceStatus::Approved) => 1,
            _ => 2,
        };
        let mut index = std::mem::take(&mut s.index);
        index.sort_unstable_by_key(|&(h, i)| (h, rank(i), i));
        s.index = index;
        s
    }

    fn key(&self, id: &RenewalIdentity, issuer: &str, value: &str) -> u64 {
        self.hasher.hash_one((id, issuer, value))
    }

    /// What the registry has about one certificate.
    pub fn cert(&self, fingerprint: &[u8; 32]) -> Option<CertEntry> {
        self.certs.get(fingerprint).copied()
    }

    /// How many certificates the registry knows.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether the registry knows no certificate.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The devices whose current certificate has `value` as its `id` and
    /// was issued by `issuer` (as recorded): blocked ones first, then
    /// approved, then pending.
    pub fn candidates<'a>(
        &'a self,
        id: &RenewalIdentity,
        issuer: &'a str,
        value: &str,
    ) -> impl Iterator<Item = &'a Candidate> + 'a {
        let k = self.key(id, issuer, value);
        let start = self.index.partition_point(|(h, _)| *h < k);
        self.index[start..]
            .iter()
            .take_while(move |(h, _)| *h == k)
            .filter_map(|&(_, i)| self.candidates.get(i as usize))
            .filter(move |c| &*c.issuer == issuer)
    }
}

/// A certificate's identity of one kind, as the renewal rule compares it;
/// `None` when the certificate has none of that kind (it then renews
/// nothing). Sets (SANs, repeated attributes) are sorted, so their order
/// in the certificate does not matter.
pub(crate) fn identity_value<'c>(
    c: &'c Certificate,
    id: &RenewalIdentity,
) -> Option<std::borrow::Cow<'c, str>> {
    use std::borrow::Cow;
    let joined = |mut v: Vec<String>| {
        v.sort();
        v.dedup();
        (!v.is_empty()).then(|| Cow::Owned(v.join("\n")))
    };
    match id {
        RenewalIdentity::Subject => (!c.subject.is_empty()).then_some(Cow::Borrowed(&*c.subject)),
        RenewalIdentity::Key => (!c.key.is_empty()).then_some(Cow::Borrowed(&*c.key)),
        RenewalIdentity::Cn => match attribute(c, "2.5.4.3").as_slice() {
            // One common name, as nearly every device certificate has.
            [one] => Some(Cow::Owned(one.clone())),
            _ => joined(attribute(c, "2.5.4.3")),
        },
        RenewalIdentity::Oid(oid) => joined(attribute(c, oid)),
        RenewalIdentity::SanDns => {
            joined(c.sans_of("DNS").map(|s| s.to_ascii_lowercase()).collect())
        }
        RenewalIdentity::SanUri => joined(c.sans_of("URI").map(str::to_string).collect()),
    }
}

fn attribute(c: &Certificate, oid: &str) -> Vec<String> {
    c.subject_attributes
        .iter()
        .filter(|(o, _)| o == oid)
        .map(|(_, v)| v.clone())
        .collect()
}
