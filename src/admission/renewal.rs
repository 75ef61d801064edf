//! The renewal rule: whether a CA-valid certificate the registry has not
//! placed yet renews a device it knows, from the snapshot alone.
//!
//! A newcomer renews a device when the device's current certificate was
//! issued by the same CA (same issuer; the same authority key id where
//! both name one), has the same identity (the listener's
//! `renewal`/`renewal_identity`), an earlier notBefore, is still valid or
//! expired less than `renewal_grace` ago, and is not revoked. Safety
//! first: a blocked device with the identity blocks the newcomer (a block
//! is the device's, present and future); several approved devices with
//! the identity make it ambiguous, and nothing is inherited.

use x509_parser::prelude::X509Certificate;

use crate::config::RenewalSettings;
use crate::registry::{Candidate, Certificate, DeviceStatus, Snapshot, snapshot::identity_value};

/// What the renewal rule found for a newcomer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// No device it renews.
    Nothing,
    /// It renews the device whose current certificate has this
    /// fingerprint, and takes its status.
    Device {
        /// The device's current certificate.
        of: [u8; 32],
        /// The device's status.
        status: DeviceStatus,
    },
    /// Several approved devices share its identity.
    Ambiguous,
}

/// Looks the newcomer up. `revoked` says whether a candidate's current
/// certificate is revoked (by the listener's CRLs or a cached OCSP
/// answer).
pub(crate) fn find(
    snapshot: &Snapshot,
    rule: &RenewalSettings,
    fingerprint: &[u8; 32],
    parsed: &X509Certificate<'_>,
    now: i64,
    revoked: &dyn Fn(&Candidate) -> bool,
) -> Found {
    let Some(identity) = &rule.identity else {
        return Found::Nothing;
    };
    let mut new = Certificate::bare(String::new());
    new.fill_from(parsed);
    let Some(value) = identity_value(&new, identity) else {
        return Found::Nothing;
    };
    // Records made before lineages may hold the issuer in x509-parser's
    // display form; both forms name the same CA.
    let display = parsed.issuer().to_string();
    let issuers = [new.issuer.as_str(), display.as_str()];
    let mut candidates: Vec<&Candidate> = Vec::new();
    for issuer in issuers {
        for c in snapshot.candidates(identity, issuer, &value) {
            let same_key_id = c.authority_key_id.is_empty()
                || new.authority_key_id.is_empty()
                || *c.authority_key_id == *new.authority_key_id;
            if c.fingerprint != *fingerprint
                && same_key_id
                && !candidates.iter().any(|h| h.fingerprint == c.fingerprint)
            {
                candidates.push(c);
            }
        }
    }
    if let Some(blocked) = candidates
        .iter()
        .find(|c| c.status == DeviceStatus::Blocked)
    {
        return Found::Device {
            of: blocked.fingerprint,
            status: DeviceStatus::Blocked,
        };
    }
    let grace = i64::try_from(rule.grace.as_secs()).unwrap_or(i64::MAX);
    let eligible = |c: &&&Candidate| {
        new.not_before > c.not_before
            && (c.not_after == 0 || now < c.not_after.saturating_add(grace))
            && !revoked(c)
    };
    let approved: Vec<&&Candidate> = candidates
        .iter()
        .filter(|c| c.status == DeviceStatus::Approved)
        .collect();
    match approved.as_slice() {
        [] => {}
        [one] => {
            return match eligible(one) {
                true => Found::Device {
                    of: one.fingerprint,
                    status: DeviceStatus::Approved,
                },
                false => Found::Nothing,
            };
        }
        _ => return Found::Ambiguous,
    }
    let pending: Vec<&&Candidate> = candidates
        .iter()
        .filter(|c| c.status == DeviceStatus::Pending)
        .filter(eligible)
        .collect();
    match pending.as_slice() {
        [one] => Found::Device {
            of: one.fingerprint,
            status: DeviceStatus::Pending,
        },
        _ => Found::Nothing,
    }
}
