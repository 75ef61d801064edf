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

/// What the cache holds for a listener, as [`Inputs`] carries it.
#[derive(Debug, Default)]
pub(crate) struct Cached {
    /// The CRLs that still verify.
    pub(crate) loaded: Vec<Loaded>,
    /// The issuers device chains named for them.
    pub(crate) issuers: Vec<CertificateDer<'static>>,
    /// The sources device certificates named.
    pub(crate) device_urls: Vec<String>,
}

/// What the cache holds for a listener: the CRLs fetched before that are
/// still wanted and still verify (against `cas`, or the issuer a device
/// chain named). Wanted are the configured `urls`, with
/// `from_certificates` the sources device certificates named, and the
/// deltas those name (Freshest CRL): what was learned before a restart is
/// in force again at once, and a URL removed from the config is not. A
/// configured entry that does not verify is logged and fetched again;
/// entries of other listeners sharing the folder are skipped quietly.
pub(crate) fn cached(
    listener: &str,
    cache: &Cache,
    urls: &[String],
    from_certificates: bool,
    cas: &[CertificateDer<'static>],
) -> Cached {
    use base64::Engine as _;
    let mut out = Cached::default();
    let mut deltas = Vec::new();
    for (der, meta) in cache.entries() {
        let configured = urls.contains(&meta.url);
        let device = meta.learned.as_deref() == Some("device_certificate");
        if meta.learned.as_deref() == Some("freshest_crl") && !configured {
            deltas.push((der, meta));
            continue;
        }
        if !(configured || (device && from_certificates)) {
            continue;
        }
        let issuer = meta
            .issuer
            .as_deref()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(CertificateDer::from);
        match verified(&der, cas, issuer.as_ref(), &meta.url) {
            Ok(l) => {
                if let Some(i) = issuer
                    && !out.issuers.contains(&i)
                {
                    out.issuers.push(i);
                }
                if device && !configured {
                    out.device_urls.push(meta.url.clone());
                }
                out.loaded.push(l);
            }
            Err(e) if configured => {
                warn!(listener, url = %meta.url, dir = %cache.dir().display(), "the cached CRL of this source is not usable ({e}); it is fetched again")
            }
            Err(_) => {}
        }
    }
    let named: Vec<String> = out
        .loaded
        .iter()
        .flat_map(|l| l.crl.freshest.iter().cloned())
        .collect();
    for (der, meta) in deltas {
        if named.contains(&meta.url)
            && let Ok(l) = verified(&der, &[cas, &out.issuers].concat(), None, &meta.url)
        {
            out.loaded.push(l);
        }
    }
    out
}

fn verified(
    der: &[u8],
    cas: &[CertificateDer<'static>],
    issuer: Option<&CertificateDer<'static>>,
    url: &str,
) -> Result<Loaded, String> {
    let mut with = cas.to_vec();
    with.extend(issuer.cloned());
    let crl = Crl::parse(der).map_err(|e| e.to_string())?;
    let signer = signer::signer(&crl, &with)?;
    Ok(Loaded {
        crl: std::sync::Arc::new(crl),
        signer,
        source: std::sync::Arc::from(url),
    })
}
