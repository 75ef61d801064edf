//! The policy of a listener: what it decides about a certificate that
//! passed CA validation — the registry status of the device, the approval
//! mode and the `allow_*` rules — as one typed [`Verdict`]. The handshake
//! reads only the registry's in-memory snapshot.

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::config::{AllowRules, Approval};
use crate::dn::attribute_text;
use crate::registry::{DeviceStatus, Registry};

use super::reason::{Admitted, Refusal};

/// What the policy decided about a certificate that passed CA validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted; `record` says how a device not yet approved in the
    /// registry is to be recorded.
    Admit {
        /// Why it was admitted.
        why: Admitted,
        /// Record (or re-record) the device as approved.
        record: bool,
    },
    /// Refused.
    Refuse {
        /// Why.
        reason: Refusal,
        /// Record the device as pending (first seen in manual mode).
        record_pending: bool,
    },
}

/// Admission policy of one listener: the registry (if any), the approval
/// mode and the static allow rules.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The registry, when `[registry]` is configured.
    pub registry: Option<Registry>,
    /// First-seen policy (from `[registry] approval`).
    pub approval: Approval,
    /// Static rules.
    pub rules: AllowRules,
}

impl Policy {
    /// True when the policy adds nothing to CA validation.
    pub fn is_open(&self) -> bool {
        self.registry.is_none() && self.rules.is_empty()
    }

    /// Whether a device admitted earlier may keep its connection or resume
    /// its session: not blocked, and approved unless approval is `auto`.
    /// Without a registry the rules were checked at the full handshake.
    pub fn still_admits(&self, fingerprint: &[u8; 32]) -> bool {
        let Some(reg) = &self.registry else {
            return true;
        };
        match reg.status(fingerprint) {
            Some(DeviceStatus::Blocked) => false,
            Some(DeviceStatus::Approved) => true,
            _ => self.approval == Approval::Auto,
        }
    }

    /// Decides about a CA-valid certificate. Reads only the in-memory
    /// snapshot; parses the certificate only when a rule must be checked.
    pub fn decide(&self, fingerprint: &[u8; 32], der: &[u8]) -> Verdict {
        let Some(reg) = &self.registry else {
            if self.rules.is_empty() || rules_match(&self.rules, der) {
                return Verdict::Admit {
                    why: if self.rules.is_empty() {
                        Admitted::Ca
                    } else {
                        Admitted::Rule
                    },
                    record: false,
                };
            }
            return Verdict::Refuse {
                reason: Refusal::NotAllowed,
                record_pending: false,
            };
        };
        match reg.status(fingerprint) {
            Some(DeviceStatus::Blocked) => Verdict::Refuse {
                reason: Refusal::Blocked,
                record_pending: false,
            },
            Some(DeviceStatus::Approved) => Verdict::Admit {
                why: Admitted::Approved,
                record: false,
            },
            status => {
                if !self.rules.is_empty() && rules_match(&self.rules, der) {
                    Verdict::Admit {
                        why: Admitted::Rule,
                        record: true,
                    }
                } else if self.approval == Approval::Auto {
                    Verdict::Admit {
                        why: Admitted::Auto,
                        record: true,
                    }
                } else {
                    Verdict::Refuse {
                        reason: Refusal::Unapproved,
                        record_pending: status.is_none(),
                    }
                }
            }
        }
    }
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
        for r in [Refusal::Blocked, Refusal::Unapproved, Refusal::NotAllowed] {
            assert_eq!(r.by_admin(), r == Refusal::Blocked, "{}", r.as_str());
        }
    }
}
