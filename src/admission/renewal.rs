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
    // display form; both forms name the same CA. The snapshot matches the
    // issuer exactly, so two different forms never yield the same device.
    let display = parsed.issuer().to_string();
    let second = (display != new.issuer).then_some(display.as_str());
    let candidates = std::iter::once(new.issuer.as_str())
        .chain(second)
        .flat_map(|issuer| snapshot.candidates(identity, issuer, value.as_ref()))
        .filter(|c| {
            c.fingerprint != *fingerprint
                && (c.authority_key_id.is_empty()
                    || new.authority_key_id.is_empty()
                    || *c.authority_key_id == *new.authority_key_id)
        });
    let grace = i64::try_from(rule.grace.as_secs()).unwrap_or(i64::MAX);
    let eligible = |c: &Candidate| {
        new.not_before > c.not_before
            && (c.not_after == 0 || now < c.not_after.saturating_add(grace))
            && !revoked(c)
    };
    // One pass, stopping as soon as the answer is settled: a fleet whose
    // devices all share one subject must not make every first-seen
    // handshake walk the whole fleet (a reconnect storm of 10,000 such
    // devices was quadratic). Each issuer form lists blocked devices
    // first, then approved, then pending; with two forms a later one can
    // still bring a block, so the block check looks at all of them.
    let mut approved: Option<&Candidate> = None;
    let mut approved_more = false;
    let mut pending: Option<&Candidate> = None;
    let mut pending_more = false;
    for c in candidates {
        match c.status {
            DeviceStatus::Blocked => {
                return Found::Device {
                    of: c.fingerprint,
                    status: DeviceStatus::Blocked,
                };
            }
            DeviceStatus::Approved if approved.is_none() => approved = Some(c),
            DeviceStatus::Approved => approved_more = true,
            DeviceStatus::Pending if !eligible(c) => {}
            DeviceStatus::Pending if pending.is_none() => pending = Some(c),
            DeviceStatus::Pending => pending_more = true,
        }
        if (approved_more || pending_more) && second.is_none() {
            // Nothing blocked can follow in a single issuer form.
            break;
        }
    }
    match (approved, approved_more, pending, pending_more) {
        (Some(_), true, _, _) => Found::Ambiguous,
        (Some(one), false, _, _) => match eligible(one) {
            true => Found::Device {
                of: one.fingerprint,
                status: DeviceStatus::Approved,
            },
            false => Found::Nothing,
        },
        (None, _, Some(one), false) => Found::Device {
            of: one.fingerprint,
            status: DeviceStatus::Pending,
        },
        _ => Found::Nothing,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::RenewalIdentity;
    use crate::registry::Device;
    use rcgen::{CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use x509_parser::prelude::FromDer as _;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_796_169_600;

    fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    }

    /// A device certificate valid from `from` to `until` (Unix seconds).
    fn cert(by: &CertifiedIssuer<'static, KeyPair>, cn: &str, from: i64, until: i64) -> Vec<u8> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        // As CAs issue them: with the issuing key's identifier.
        p.use_authority_key_identifier_extension = true;
        p.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(until).unwrap();
        p.signed_by(&KeyPair::generate().unwrap(), by)
            .unwrap()
            .der()
            .to_vec()
    }

    fn device(der: &[u8], status: DeviceStatus) -> Device {
        let fp = crate::identity::sha256_hex(der);
        Device::of(fp[..16].into(), Certificate::from_der(fp, der), status)
    }

    fn find_for(devices: &[Device], new: &[u8], revoked: bool) -> Found {
        let snapshot = Snapshot::build(devices.iter(), &[RenewalIdentity::Subject]);
        let (_, parsed) = X509Certificate::from_der(new).unwrap();
        find(
            &snapshot,
            &RenewalSettings::default(),
            &crate::identity::fingerprint(new),
            &parsed,
            NOW,
            &|_| revoked,
        )
    }

    #[test]
    fn a_later_certificate_of_the_same_ca_and_subject_renews_the_device() {
        let ca = ca("Fleet CA");
        let old = cert(&ca, "a", NOW - 300 * DAY, NOW + 60 * DAY);
        let new = cert(&ca, "a", NOW - DAY, NOW + 365 * DAY);
        let d = device(&old, DeviceStatus::Approved);
        let of = crate::identity::fingerprint(&old);
        assert_eq!(
            find_for(std::slice::from_ref(&d), &new, false),
            Found::Device {
                of,
                status: DeviceStatus::Approved
            }
        );
        // Revoked: nothing inherited.
        assert_eq!(
            find_for(std::slice::from_ref(&d), &new, true),
            Found::Nothing
        );
        // An older certificate never inherits from a newer one.
        assert_eq!(
            find_for(&[device(&new, DeviceStatus::Approved)], &old, false),
            Found::Nothing
        );
        // Another subject: nothing.
        let other = cert(&ca, "b", NOW - DAY, NOW + 365 * DAY);
        assert_eq!(find_for(&[d], &other, false), Found::Nothing);
    }

    #[test]
    fn an_expired_device_renews_only_within_the_grace() {
        let ca = ca("Fleet CA");
        let new = cert(&ca, "a", NOW - DAY, NOW + 365 * DAY);
        let lately = cert(&ca, "a", NOW - 400 * DAY, NOW - 29 * DAY);
        let long_ago = cert(&ca, "a", NOW - 400 * DAY, NOW - 31 * DAY);
        assert!(matches!(
            find_for(&[device(&lately, DeviceStatus::Approved)], &new, false),
            Found::Device { .. }
        ));
        assert_eq!(
            find_for(&[device(&long_ago, DeviceStatus::Approved)], &new, false),
            Found::Nothing
        );
        // A blocked device blocks its renewals whatever the dates.
        assert!(matches!(
            find_for(&[device(&long_ago, DeviceStatus::Blocked)], &new, false),
            Found::Device {
                status: DeviceStatus::Blocked,
                ..
            }
        ));
    }

    #[test]
    fn a_ca_of_the_same_name_with_another_key_is_another_ca() {
        let real = ca("Fleet CA");
        let impostor = ca("Fleet CA");
        let old = cert(&real, "a", NOW - 300 * DAY, NOW + 60 * DAY);
        let forged = cert(&impostor, "a", NOW - DAY, NOW + 365 * DAY);
        assert_eq!(
            find_for(&[device(&old, DeviceStatus::Approved)], &forged, false),
            Found::Nothing
        );
    }

    #[test]
    fn two_approved_devices_with_the_identity_are_ambiguous() {
        let ca = ca("Fleet CA");
        let a = cert(&ca, "a", NOW - 300 * DAY, NOW + 60 * DAY);
        let b = cert(&ca, "a", NOW - 200 * DAY, NOW + 60 * DAY);
        let new = cert(&ca, "a", NOW - DAY, NOW + 365 * DAY);
        let devices = [
            device(&a, DeviceStatus::Approved),
            device(&b, DeviceStatus::Approved),
        ];
        assert_eq!(find_for(&devices, &new, false), Found::Ambiguous);
    }

    #[test]
    fn a_record_from_before_lineages_is_found_by_its_display_form_issuer() {
        let ca = ca("Fleet CA");
        let old = cert(&ca, "a", NOW - 300 * DAY, NOW + 60 * DAY);
        let new = cert(&ca, "a", NOW - DAY, NOW + 365 * DAY);
        let mut d = device(&old, DeviceStatus::Approved);
        let (_, parsed) = X509Certificate::from_der(&old).unwrap();
        let c = &mut d.certificates[0];
        // What a schema-1 record kept: no key, no key id, the issuer as
        // x509-parser displays it.
        c.key.clear();
        c.authority_key_id.clear();
        c.subject_attributes.clear();
        c.issuer = parsed.issuer().to_string();
        assert!(matches!(
            find_for(&[d], &new, false),
            Found::Device {
                status: DeviceStatus::Approved,
                ..
            }
        ));
    }

    /// A fleet whose devices all share one subject (agents enrolled with
    /// one fixed CN): the answer does not depend on where in the fleet the
    /// deciding device sits, whichever order the devices were recorded in.
    #[test]
    fn a_fleet_sharing_one_subject_gets_the_same_answers_in_any_order() {
        let ca = ca("Fleet CA");
        let new = cert(&ca, "agent", NOW - DAY, NOW + 365 * DAY);
        let many = |n: usize, status: DeviceStatus| -> Vec<Device> {
            (0..n)
                .map(|i| {
                    let from = NOW - 300 * DAY + i as i64;
                    device(&cert(&ca, "agent", from, NOW + 60 * DAY), status)
                })
                .collect()
        };
        let pending = many(40, DeviceStatus::Pending);
        let approved = many(2, DeviceStatus::Approved);
        let blocked = many(1, DeviceStatus::Blocked);
        let both =
            |a: &[Device], b: &[Device]| -> [Vec<Device>; 2] { [[a, b].concat(), [b, a].concat()] };
        // One blocked device among many pending and approved: blocked.
        for order in both(&[pending.clone(), approved.clone()].concat(), &blocked) {
            assert!(matches!(
                find_for(&order, &new, false),
                Found::Device {
                    status: DeviceStatus::Blocked,
                    ..
                }
            ));
        }
        // One approved device among many pending: it is renewed.
        for order in both(&pending, &approved[..1]) {
            assert!(matches!(
                find_for(&order, &new, false),
                Found::Device {
                    status: DeviceStatus::Approved,
                    ..
                }
            ));
        }
        // Two approved: ambiguous; many pending alone: nothing; one
        // pending: it is renewed.
        for order in both(&pending, &approved) {
            assert_eq!(find_for(&order, &new, false), Found::Ambiguous);
        }
        assert_eq!(find_for(&pending, &new, false), Found::Nothing);
        assert!(matches!(
            find_for(&pending[..1], &new, false),
            Found::Device {
                status: DeviceStatus::Pending,
                ..
            }
        ));
    }
}
