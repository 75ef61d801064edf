//! The revocation state handshakes read: every verified CRL of a listener
//! (files and fetched), each base CRL merged with its newest applicable
//! delta (RFC 5280 §5.2.4, §6.3.3), indexed by issuer. Built whole and
//! swapped in; never changed in place.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::config::CrlStale;

use super::crl::{Crl, Scope};
use super::signer::KeyId;

/// A CRL whose signature verified, with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// The CRL.
    pub(crate) crl: Arc<Crl>,
    /// The key that signed it.
    pub(crate) signer: KeyId,
    /// A file path or a URL, as the admin wrote or certgate found it.
    pub(crate) source: Arc<str>,
}

/// One certificate of a verified path, as revocation needs it.
#[derive(Debug, Clone)]
pub(crate) struct PathCert {
    /// 1 = the device certificate, 2 = its issuer, ...
    pub(crate) position: usize,
    /// Whether this is a CA certificate (not the device's).
    pub(crate) is_ca: bool,
    /// Its issuer's name, DER.
    pub(crate) issuer: Vec<u8>,
    /// Its issuer's key.
    pub(crate) issuer_key: KeyId,
    /// Its serial ([`super::crl::normalize_serial`]).
    pub(crate) serial: Vec<u8>,
    /// Its CRL distribution point URIs.
    pub(crate) crl_uris: Vec<String>,
}

/// Why a path is not admitted by the revocation state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A certificate of the path is revoked.
    Revoked {
        /// Which (1 = the device).
        position: usize,
        /// The CRL's issuer, RFC 4514.
        crl_issuer: String,
        /// Where that CRL came from.
        source: Arc<str>,
    },
    /// `require_crl` and no CRL speaks for a certificate of the path.
    Unknown {
        /// Which (1 = the device).
        position: usize,
    },
    /// The CRL that speaks for a certificate is past its nextUpdate and
    /// `crl_stale = "fail_closed"`.
    Stale {
        /// nextUpdate, Unix seconds.
        next_update: i64,
    },
}

/// What one issuer's CRLs say, merged: a base CRL and the delta applied to
/// it.
#[derive(Debug)]
pub(crate) struct Authority {
    /// The key that signed base and delta.
    pub(crate) signer: KeyId,
    /// The base CRL's scope.
    pub(crate) scope: Scope,
    /// Revoked serials after the delta.
    pub(crate) revoked: HashSet<Vec<u8>>,
    /// The earlier nextUpdate of base and delta.
    pub(crate) next_update: Option<i64>,
    /// The base CRL.
    pub(crate) base: Loaded,
    /// The delta applied, if any.
    pub(crate) delta: Option<Loaded>,
}

impl Authority {
    /// Whether this CRL speaks for `cert` (same issuer key, scope covers its
    /// role, and a distribution point name in common when both name one:
    /// RFC 5280 §6.3.3 (b)).
    fn covers(&self, cert: &PathCert) -> bool {
        if self.signer != cert.issuer_key {
            return false;
        }
        if (self.scope.only_ca && !cert.is_ca) || (self.scope.only_user && cert.is_ca) {
            return false;
        }
        if self.scope.uris.is_empty() || cert.crl_uris.is_empty() {
            return true;
        }
        let names: &[String] = &self.scope.uris;
        let delta_names: &[String] = self
            .delta
            .as_ref()
            .map_or(&[], |d| d.crl.scope.uris.as_slice());
        cert.crl_uris
            .iter()
            .any(|u| names.contains(u) || delta_names.contains(u))
    }
}

/// A problem found while merging, named for the log and `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeltaWithoutBase {
    /// The delta's source.
    pub(crate) delta: Arc<str>,
    /// Its issuer.
    pub(crate) issuer: String,
    /// Its BaseCRLNumber.
    pub(crate) base_number: String,
    /// The base CRLs of that issuer that are loaded: (source, number).
    pub(crate) bases: Vec<(Arc<str>, String)>,
}

impl std::fmt::Display for DeltaWithoutBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the delta CRL from {} (issuer \"{}\") applies to base CRL number {} or later, ",
            self.delta, self.issuer, self.base_number
        )?;
        if self.bases.is_empty() {
            write!(f, "but no base CRL of that issuer is loaded")?;
        } else {
            let list: Vec<String> = self
                .bases
                .iter()
                .map(|(s, n)| format!("{s} (number {n})"))
                .collect();
            write!(f, "but the base CRLs loaded are older: {}", list.join(", "))?;
        }
        write!(
            f,
            "; add the base CRL it belongs to (crl = [...] or crl_urls), or remove the delta"
        )
    }
}

/// The revocation state of one listener.
#[derive(Debug, Default)]
pub(crate) struct RevocationSet {
    by_issuer: HashMap<Vec<u8>, Vec<Authority>>,
    require: bool,
    fail_open: bool,
}

/// Newest first: the higher CRL number, then the later thisUpdate.
fn newer(a: &Crl, b: &Crl) -> bool {
    match (&a.number, &b.number) {
        (Some(x), Some(y)) if x != y => x > y,
        _ => a.this_update > b.this_update,
    }
}

impl RevocationSet {
    /// Merges `loaded` into the set handshakes read. Per issuer, key and
    /// scope the newest base CRL is used, with the newest delta whose
    /// BaseCRLNumber it satisfies (a delta older than the base is
    /// obsolete and ignored). A delta with no base it applies to is
    /// returned as a problem and not used.
    pub(crate) fn build(
        loaded: &[Loaded],
        require: bool,
        stale: CrlStale,
    ) -> (RevocationSet, Vec<DeltaWithoutBase>) {
        let mut bases: HashMap<(Vec<u8>, KeyId, Scope), Loaded> = HashMap::new();
        let mut deltas: Vec<&Loaded> = Vec::new();
        for l in loaded {
            if l.crl.is_delta() {
                deltas.push(l);
                continue;
            }
            let key = (l.crl.issuer_raw.clone(), l.signer, l.crl.scope.clone());
            match bases.get(&key) {
                Some(have) if !newer(&l.crl, &have.crl) => {}
                _ => {
                    bases.insert(key, l.clone());
                }
            }
        }
        let mut problems = Vec::new();
        let mut by_issuer: HashMap<Vec<u8>, Vec<Authority>> = HashMap::new();
        let mut used: HashSet<*const Crl> = HashSet::new();
        for ((issuer, signer, scope), base) in bases {
            // The delta for this base: same issuer and key, the same scope
            // (or the same role flags: AD CS names the delta's own location
            // in its distribution point), a BaseCRLNumber the base meets,
            // and newer than the base.
            let delta = deltas
                .iter()
                .filter(|d| d.crl.issuer_raw == issuer && d.signer == signer)
                .filter(|d| {
                    d.crl.scope == scope
                        || (d.crl.scope.only_ca == scope.only_ca
                            && d.crl.scope.only_user == scope.only_user)
                })
                .filter(
                    |d| match (&base.crl.number, &d.crl.delta_base, &d.crl.number) {
                        (Some(b), Some(want), Some(dn)) => b >= want && dn > b,
                        _ => false,
                    },
                )
                .fold(None::<&Loaded>, |best, d| match best {
                    Some(b) if !newer(&d.crl, &b.crl) => Some(b),
                    _ => Some(d),
                });
            // Deltas this base has outgrown are obsolete, not missing a base.
            for d in &deltas {
                if d.crl.issuer_raw == issuer
                    && d.signer == signer
                    && let (Some(b), Some(dn)) = (&base.crl.number, &d.crl.number)
                    && dn <= b
                {
                    used.insert(Arc::as_ptr(&d.crl));
                }
            }
            let mut revoked = base.crl.revoked.clone();
            let mut next_update = base.crl.next_update;
            if let Some(d) = delta {
                used.insert(Arc::as_ptr(&d.crl));
                for s in &d.crl.removed {
                    revoked.remove(s);
                }
                revoked.extend(d.crl.revoked.iter().cloned());
                next_update = match (next_update, d.crl.next_update) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            by_issuer.entry(issuer).or_default().push(Authority {
                signer,
                scope,
                revoked,
                next_update,
                base,
                delta: delta.cloned(),
            });
        }
        for d in deltas {
            if used.contains(&Arc::as_ptr(&d.crl)) {
                continue;
            }
            let bases_of_issuer: Vec<(Arc<str>, String)> = by_issuer
                .get(&d.crl.issuer_raw)
                .map(|list| {
                    list.iter()
                        .map(|a| (a.base.source.clone(), a.base.crl.number_text()))
                        .collect()
                })
                .unwrap_or_default();
            problems.push(DeltaWithoutBase {
                delta: d.source.clone(),
                issuer: d.crl.issuer.clone(),
                base_number: d
                    .crl
                    .delta_base
                    .as_ref()
                    .map_or_else(|| "?".into(), |n| n.to_string()),
                bases: bases_of_issuer,
            });
        }
        (
            RevocationSet {
                by_issuer,
                require,
                fail_open: stale == CrlStale::FailOpen,
            },
            problems,
        )
    }

    /// Checks every certificate of a verified path (device first) at
    /// `now`. Revoked wins over everything, then a certificate no CRL
    /// speaks for (refused only with `require_crl`), then a stale CRL.
    pub(crate) fn check(&self, path: &[PathCert], now: i64) -> Result<(), Verdict> {
        // Runs on every handshake: no allocation, one map lookup per
        // certificate of the path.
        let mut unknown = None;
        let mut stale = None;
        for cert in path {
            let mut covered = false;
            let list = self
                .by_issuer
                .get(&cert.issuer)
                .map_or(&[][..], Vec::as_slice);
            for a in list.iter().filter(|a| a.covers(cert)) {
                covered = true;
                if a.revoked.contains(&cert.serial) {
                    let source = a
                        .delta
                        .as_ref()
                        .filter(|d| d.crl.revoked.contains(&cert.serial))
                        .map_or_else(|| a.base.source.clone(), |d| d.source.clone());
                    return Err(Verdict::Revoked {
                        position: cert.position,
                        crl_issuer: a.base.crl.issuer.clone(),
                        source,
                    });
                }
                if let Some(n) = a.next_update
                    && n <= now
                    && !self.fail_open
                {
                    stale.get_or_insert(n);
                }
            }
            if !covered && self.require {
                unknown.get_or_insert(cert.position);
            }
        }
        if let Some(position) = unknown {
            return Err(Verdict::Unknown { position });
        }
        match stale {
            Some(next_update) => Err(Verdict::Stale { next_update }),
            None => Ok(()),
        }
    }

    /// Every merged CRL, for metrics, the admin API and the log.
    pub(crate) fn authorities(&self) -> impl Iterator<Item = &Authority> {
        self.by_issuer.values().flatten()
    }
}
