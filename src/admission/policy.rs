//! The policy of a listener: what it decides about a certificate that
//! passed CA validation — the registry status of the device, the approval
//! mode and the `allow_*` rules — as one typed [`Verdict`]. The handshake
//! reads only the registry's in-memory snapshot.

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::config::{AllowRules, Approval, RenewalSettings};
use crate::dn::attribute_text;
use crate::registry::{Candidate, DeviceStatus, Record, Registry};

use super::reason::{Admitted, Refusal};
use super::renewal::{Found, find};

/// What the policy decided about a certificate that passed CA validation,
/// and what the registry is to record about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted.
    Admit {
        /// Why it was admitted.
        why: Admitted,
        /// What to record once the connection is admitted.
        record: Record,
    },
    /// Refused.
    Refuse {
        /// Why.
        reason: Refusal,
        /// What to record about the refused certificate.
        record: Record,
    },
}

/// Admission policy of one listener: the registry (if any), the approval
/// mode, the static allow rules and the renewal rule.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The registry, when `[registry]` is configured.
    pub registry: Option<Registry>,
    /// First-seen policy (from `[registry] approval`).
    pub approval: Approval,
    /// Static rules.
    pub rules: AllowRules,
    /// How renewed certificates keep their device's status.
    pub renewal: RenewalSettings,
}

impl Policy {
    /// True when the policy adds nothing to CA validation.
    pub fn is_open(&self) -> bool {
        self.registry.is_none() && self.rules.is_empty()
    }

    /// Whether a device admitted earlier may keep its connection or resume
    /// its session: not blocked, not superseded past its grace, and
    /// approved unless approval is `auto`. Without a registry the rules
    /// were checked at the full handshake.
    pub fn still_admits(&self, fingerprint: &[u8; 32]) -> bool {
        let Some(reg) = &self.registry else {
            return true;
        };
        match reg.cert(fingerprint) {
            Some(c) if c.status == DeviceStatus::Blocked => false,
            Some(c) if self.superseded(c.superseded_at) => false,
            Some(c) if c.status == DeviceStatus::Approved => true,
            _ => self.approval == Approval::Auto,
        }
    }

    /// When a certificate its device has renewed stops being admitted
    /// (Unix seconds); `None` if it is not superseded.
    pub fn superseded_until(&self, fingerprint: &[u8; 32]) -> Option<i64> {
        let at = self.registry.as_ref()?.cert(fingerprint)?.superseded_at?;
        let grace = i64::try_from(self.renewal.supersede_grace.as_secs()).unwrap_or(i64::MAX);
        Some(at.saturating_add(grace))
    }

    /// Whether a certificate superseded at `at` is past its grace.
    fn superseded(&self, at: Option<i64>) -> bool {
        let grace = i64::try_from(self.renewal.supersede_grace.as_secs()).unwrap_or(i64::MAX);
        at.is_some_and(|at| crate::clock::now_unix() >= at.saturating_add(grace))
    }

    /// Decides about a CA-valid certificate. Reads only the in-memory
    /// snapshot; parses the certificate only when a rule must be checked
    /// or the renewal rule must look for its device. `revoked` says
    /// whether a device's current certificate (of the same CA) is revoked:
    /// a renewal never inherits from one.
    pub fn decide(
        &self,
        fingerprint: &[u8; 32],
        der: &[u8],
        revoked: &dyn Fn(&Candidate) -> bool,
    ) -> Verdict {
        let Some(reg) = &self.registry else {
            if self.rules.is_empty() || rules_match(&self.rules, der) {
                return Verdict::Admit {
                    why: if self.rules.is_empty() {
                        Admitted::Ca
                    } else {
                        Admitted::Rule
                    },
                    record: Record::Seen,
                };
            }
            return Verdict::Refuse {
                reason: Refusal::NotAllowed,
                record: Record::Seen,
            };
        };
        let snapshot = reg.snapshot();
        let known = snapshot.cert(fingerprint);
        let seen = match known {
            Some(c) if c.needs_details => Record::Fill,
            _ => Record::Seen,
        };
        match known {
            Some(c) if c.status == DeviceStatus::Blocked => {
                return Verdict::Refuse {
                    reason: Refusal::Blocked,
                    record: seen,
                };
            }
            Some(c) if self.superseded(c.superseded_at) => {
                return Verdict::Refuse {
                    reason: Refusal::Superseded,
                    record: seen,
                };
            }
            Some(c) if c.status == DeviceStatus::Approved => {
                return Verdict::Admit {
                    why: Admitted::Approved,
                    record: seen,
                };
            }
            _ => {}
        }
        // Not seen before, or a lone pending certificate no one decided on
        // (the renewal rule, or what it knows, may have changed since).
        let parsed = X509Certificate::from_der(der).ok().map(|(_, c)| c);
        let found = match (&parsed, known) {
            (Some(p), None) => find(&snapshot, &self.renewal, fingerprint, p, now(), revoked),
            (Some(p), Some(c)) if c.undecided => {
                find(&snapshot, &self.renewal, fingerprint, p, now(), revoked)
            }
            _ => Found::Nothing,
        };
        let (record, admit_record) = match (found, known) {
            (Found::Device { of, status }, _) => {
                let record = Record::Renewal { of };
                match status {
                    DeviceStatus::Blocked => {
                        return Verdict::Refuse {
                            reason: Refusal::Blocked,
                            record,
                        };
                    }
                    DeviceStatus::Approved => {
                        return Verdict::Admit {
                            why: Admitted::Renewal,
                            record,
                        };
                    }
                    DeviceStatus::Pending => (record, record),
                }
            }
            (Found::Ambiguous, None) => (
                Record::Ambiguous(DeviceStatus::Pending),
                Record::Ambiguous(DeviceStatus::Approved),
            ),
            (_, None) => (
                Record::New(DeviceStatus::Pending),
                Record::New(DeviceStatus::Approved),
            ),
            // A pending certificate admitted by a rule or `auto` is
            // recorded as approved.
            (_, Some(_)) => (seen, Record::New(DeviceStatus::Approved)),
        };
        if !self.rules.is_empty() && rules_match(&self.rules, der) {
            Verdict::Admit {
                why: Admitted::Rule,
                record: admit_record,
            }
        } else if self.approval == Approval::Auto {
            Verdict::Admit {
                why: Admitted::Auto,
                record: admit_record,
            }
        } else {
            Verdict::Refuse {
                reason: Refusal::Unapproved,
                record,
            }
        }
    }
}

fn now() -> i64 {
    crate::clock::now_unix()
}

/// Whether a certificate matches any allow rule.
pub(crate) fn rules_match(rules: &AllowRules, der: &[u8]) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return false;
    };
    let subject = cert.subject();
    let any = |patterns: &[String], value: &str, fold: bool| {
        patterns.iter().any(|p| {
            if fold {
                glob(&p.to_ascii_lowercase(), &value.to_ascii_lowercase())
            } else {
                glob(p, value)
            }
        })
    };
    if !rules.cn.is_empty()
        && subject
            .iter_common_name()
            .filter_map(attribute_text)
            .any(|v| any(&rules.cn, &v, false))
    {
        return true;
    }
    if !rules.ou.is_empty()
        && subject
            .iter_organizational_unit()
            .filter_map(attribute_text)
            .any(|v| any(&rules.ou, &v, false))
    {
        return true;
    }
    if (!rules.dns.is_empty() || !rules.uri.is_empty())
        && let Ok(Some(san)) = cert.subject_alternative_name()
    {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(v) if any(&rules.dns, v, true) => return true,
                GeneralName::URI(v) if any(&rules.uri, v, false) => return true,
                _ => {}
            }
        }
    }
    false
}

/// `*` matches any run of characters (including none); everything else is
/// literal. Written here because a glob crate's path semantics (`/`, `**`,
/// character classes) are not what certificate names need.
pub(crate) fn glob(pattern: &str, value: &str) -> bool {
    let p = pattern.as_bytes();
    let v = value.as_bytes();
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, vi));
            pi += 1;
        } else if pi < p.len() && p[pi] == v[vi] {
            pi += 1;
            vi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell_star() {
        assert!(glob("agent-*", "agent-17"));
        assert!(glob("*", ""));
        assert!(glob("*.corp.example", "a.b.corp.example"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("agent-*", "Agent-17"));
        assert!(!glob("a*b", "a"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }

    #[test]
    fn only_a_block_is_an_admin_decision() {
        for r in [
            Refusal::Blocked,
            Refusal::Unapproved,
            Refusal::NotAllowed,
            Refusal::Superseded,
        ] {
            assert_eq!(r.by_admin(), r == Refusal::Blocked, "{}", r.as_str());
        }
    }
}
