//! Revocation: which certificates the CAs have revoked, from CRL files and
//! from CRLs fetched where the CA publishes them (with their delta CRLs),
//! merged into one [`RevocationSet`] per listener that handshakes check
//! every certificate of a verified path against.
//!
//! # Layout
//! - `crl`: one CRL parsed (number, scope, delta indicator, entries).
//! - `signer`: which configured CA's key signed a CRL.
//! - `set`: the merged set (base + delta, RFC 5280 §5.2.4) and the check.
//! - `handle`: a listener's current set, its version and inputs.
//! - `http`, `cache`, `fetcher`: fetching CRLs, keeping the last good one
//!   on disk, and the task that keeps them current.
//! - `status`: what the admin surfaces show of each fetched source.
//!
//! This module knows nothing of TLS: `tls` builds the verified path and
//! asks [`RevocationSet::check`].

mod cache;
pub(crate) mod crl;
pub(crate) mod fetcher;
mod handle;
mod http;
pub(crate) mod ocsp;
pub(crate) mod set;
pub(crate) mod signer;
pub(crate) mod status;

pub(crate) use cache::Cache;
pub(crate) use crl::Crl;
pub(crate) use handle::{Inputs, Learned, Revocation};
pub(crate) use set::{Loaded, PathCert, RevocationSet, Verdict};

use rustls::pki_types::CertificateDer;
use tracing::warn;

/// The gauge rows of a set: (issuer, nextUpdate, cRLNumber).
pub(crate) fn gauges(set: &RevocationSet) -> Vec<(String, Option<i64>, Option<i64>)> {
    set.authorities()
        .map(|a| {
            let number = a
                .delta
                .as_ref()
                .unwrap_or(&a.base)
                .crl
                .number
                .as_ref()
                .and_then(|n| i64::try_from(n.clone()).ok());
            (a.base.crl.issuer.clone(), a.next_update, number)
        })
        .collect()
}

/// What the cache holds for a listener: the CRLs fetched before that
/// still verify (against `cas`, or the issuer a device chain named), with
/// the learned issuers. Sources learned before a restart (from device
/// certificates, Freshest CRL) are in force again at once. An entry of a configured URL that does not verify
/// is logged and fetched again; entries of other listeners sharing the
/// folder are skipped quietly.
pub(crate) fn cached(
    listener: &str,
    cache: &Cache,
    urls: &[String],
    cas: &[CertificateDer<'static>],
) -> (Vec<Loaded>, Vec<CertificateDer<'static>>) {
    use base64::Engine as _;
    let mut out = Vec::new();
    let mut issuers = Vec::new();
    for (der, meta) in cache.entries() {
        let configured = urls.contains(&meta.url);
        let issuer = meta
            .issuer
            .as_deref()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(CertificateDer::from);
        let mut with = cas.to_vec();
        with.extend(issuer.iter().cloned());
        let loaded = Crl::parse(&der)
            .map_err(|e| e.to_string())
            .and_then(|crl| signer::signer(&crl, &with).map(|k| (crl, k)));
        match loaded {
            Ok((crl, signer)) => {
                if let Some(i) = issuer
                    && !issuers.contains(&i)
                {
                    issuers.push(i);
                }
                out.push(Loaded {
                    crl: std::sync::Arc::new(crl),
                    signer,
                    source: std::sync::Arc::from(meta.url.as_str()),
                });
            }
            Err(e) if configured => {
                warn!(listener, url = %meta.url, dir = %cache.dir().display(), "the cached CRL of this source is not usable ({e}); it is fetched again")
            }
            Err(_) => {}
        }
    }
    (out, issuers)
}
