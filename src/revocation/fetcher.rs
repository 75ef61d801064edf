//! The task that keeps a listener's fetched CRLs current: each source is
//! fetched at `crl_refresh` and before its nextUpdate (conditional GET),
//! checked (parses, signed by the CA it names, not older than the CRL in
//! force), kept on disk, and merged into a new [`RevocationSet`] that is
//! swapped in whole. Anything wrong with an answer keeps the previous CRL
//! in force: the gateway fails static, and says so in the log and metrics.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::clock::now_unix;
use crate::config::CRL_MAX_BYTES;
use crate::metrics::Metrics;

use super::cache::Meta;
use super::crl::{Crl, decode};
use super::handle::{Inputs, Learned, Revocation};
use super::http::{Answer, Ask, Limits, fetch};
use super::set::{Loaded, RevocationSet};
use super::signer::signer;
use super::status::SourceStatus;

/// Sources learned from device certificates and Freshest CRL extensions at
/// most per listener: a PKI names a handful; a flood of names is ignored.
const MAX_LEARNED: usize = 64;
/// Issuer certificates remembered for verifying learned CRLs, at most.
const MAX_ISSUERS: usize = 64;
/// How long before nextUpdate a CRL is fetched again.
const BEFORE_NEXT_UPDATE: Duration = Duration::from_secs(60);
/// First retry after a failure; doubles up to `crl_refresh`.
const FIRST_RETRY: Duration = Duration::from_secs(5);

/// The bounds on one fetch.
const LIMITS: Limits = Limits {
    timeout: Duration::from_secs(30),
    max_bytes: CRL_MAX_BYTES,
    max_redirects: 5,
};

/// Starts the fetcher of `revocation` if its inputs fetch and it is not
/// running yet. It stops when the last verifier generation using
/// `revocation` is dropped.
pub(crate) fn start(revocation: &Arc<Revocation>, metrics: Arc<Metrics>) {
    revocation.set_metrics(metrics.clone());
    if !revocation.inputs().fetches() || !revocation.claim_start() {
        return;
    }
    let Some(learn) = revocation.learn_rx.lock().ok().and_then(|mut r| r.take()) else {
        return;
    };
    let inputs = revocation.inputs.subscribe();
    tokio::spawn(run(Arc::downgrade(revocation), inputs, learn, metrics));
}

struct Source {
    url: String,
    /// For a learned source, the issuer certificate that signs its CRL.
    issuer: Option<CertificateDer<'static>>,
    loaded: Option<Loaded>,
    etag: Option<String>,
    last_modified: Option<String>,
    due: Instant,
    failures: u32,
    status: SourceStatus,
}

impl Source {
    fn new(
        url: &str,
        found_in: &'static str,
        issuer: Option<CertificateDer<'static>>,
        inputs: &Inputs,
    ) -> Source {
        let mut s = Source {
            url: url.to_string(),
            issuer,
            loaded: inputs.cached.iter().find(|l| &*l.source == url).cloned(),
            etag: None,
            last_modified: None,
            due: Instant::now(),
            failures: 0,
            status: SourceStatus {
                url: url.to_string(),
                found_in,
                result: "pending".into(),
                ..SourceStatus::default()
            },
        };
        if let Some((_, meta)) = inputs.cache.as_ref().and_then(|c| c.load(url)) {
            // Conditional GET only when the CRL it describes is in use.
            if s.loaded.is_some() {
                s.etag = meta.etag;
                s.last_modified = meta.last_modified;
            }
            s.status.last_success = Some(meta.fetched_at);
        }
        s.describe();
        s
    }

    fn describe(&mut self) {
        if let Some(l) = &self.loaded {
            self.status.issuer = Some(l.crl.issuer.clone());
            self.status.number = l.crl.number.as_ref().map(|n| n.to_string());
            self.status.delta = l.crl.is_delta();
            self.status.this_update = Some(l.crl.this_update);
            self.status.next_update = l.crl.next_update;
            self.status.entries = l.crl.revoked.len() + l.crl.removed.len();
        }
    }

    /// When to fetch again after a usable answer.
    fn schedule_ok(&mut self, refresh: Duration) {
        self.failures = 0;
        let mut wait = refresh;
        if let Some(next) = self.loaded.as_ref().and_then(|l| l.crl.next_update) {
            let left = u64::try_from(next - now_unix()).unwrap_or(0);
            let before = Duration::from_secs(left).saturating_sub(BEFORE_NEXT_UPDATE);
            // Past (or nearly past) nextUpdate: the CA has not published
            // yet; ask again every minute at most.
            wait = wait.min(before.max(Duration::from_secs(60).min(refresh)));
        }
        self.due = Instant::now() + wait.max(Duration::from_secs(1));
    }

    fn schedule_retry(&mut self, refresh: Duration) {
        self.failures = self.failures.saturating_add(1);
        let backoff = FIRST_RETRY.saturating_mul(1 << self.failures.min(10).saturating_sub(1));
        self.due = Instant::now() + backoff.min(refresh).max(Duration::from_secs(1));
    }
}

/// Why a fetched answer is not used.
struct Refused {
    label: &'static str,
    detail: String,
}

async fn run(
    revocation: Weak<Revocation>,
    mut inputs_rx: watch::Receiver<Arc<Inputs>>,
    mut learn: mpsc::Receiver<Learned>,
    metrics: Arc<Metrics>,
) {
    let mut sources: Vec<Source> = Vec::new();
    let mut issuers: Vec<CertificateDer<'static>> = Vec::new();
    let mut learned: Vec<LearnedSource> = Vec::new();
    let mut last_inputs: Option<Arc<Inputs>> = None;
    // A change not yet merged into the set (merged once the sources a
    // change names, such as a base's delta, are all known).
    let mut pending = false;
    if let Some(rev) = revocation.upgrade() {
        // What devices named before a restart is fetched again at once
        // (deltas are found again through their bases).
        let inputs = rev.inputs();
        issuers.extend(inputs.cached_issuers.iter().cloned());
        for url in &inputs.cached_device_urls {
            learned.push(LearnedSource {
                url: url.clone(),
                issuer: None,
                found_in: DEVICE,
            });
        }
    }
    loop {
        let Some(rev) = revocation.upgrade() else {
            return;
        };
        let inputs = rev.inputs();
        let inputs_changed = !last_inputs
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(l, &inputs));
        last_inputs = Some(inputs.clone());
        let named = freshest(&sources, &inputs);
        pending |= sync_sources(&mut sources, &metrics, &inputs, &learned, &named);
        pending |= inputs_changed && !sources.is_empty();
        let now = Instant::now();
        for s in sources.iter_mut().filter(|s| s.due <= now) {
            pending |= refresh_one(s, &inputs, &issuers, &metrics).await;
        }
        let mut more = false;
        for url in freshest(&sources, &inputs) {
            if !learned.iter().any(|l| l.url == url)
                && !inputs.urls.contains(&url)
                && learned.len() < MAX_LEARNED
            {
                learned.push(LearnedSource {
                    url,
                    issuer: None,
                    found_in: FRESHEST,
                });
                more = true;
            }
        }
        if let Ok(mut st) = rev.sources.lock() {
            *st = sources.iter().map(|s| s.status.clone()).collect();
        }
        if more {
            continue;
        }
        if pending {
            recompute(&rev, &inputs, &sources, &metrics);
            pending = false;
        }
        drop(rev);
        let next = sources
            .iter()
            .map(|s| s.due)
            .min()
            .unwrap_or_else(|| Instant::now() + inputs.refresh);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            r = inputs_rx.changed() => if r.is_err() { return; },
            l = learn.recv() => match l {
                None => return,
                Some(l) => absorb(l, &mut learned, &mut issuers, &inputs.listener),
            },
        }
    }
}

/// How a source was found: `crl_urls` (or a client CA's distribution
/// point), a device certificate's distribution point, or a base CRL's
/// Freshest CRL (its delta).
const CONFIGURED: &str = "configured";
const DEVICE: &str = "device_certificate";
const FRESHEST: &str = "freshest_crl";

/// A source found at run time.
struct LearnedSource {
    url: String,
    /// The issuer whose key signs its CRL (device-learned sources).
    issuer: Option<CertificateDer<'static>>,
    found_in: &'static str,
}

/// Where the CRLs in force say their deltas are (Freshest CRL).
fn freshest(sources: &[Source], inputs: &Inputs) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for url in sources
        .iter()
        .filter_map(|s| s.loaded.as_ref())
        .chain(inputs.files.iter())
        .flat_map(|l| l.crl.freshest.iter())
    {
        if !out.contains(url) {
            out.push(url.clone());
        }
    }
    out
}

/// Adds what a device chain named (bounded, deduplicated).
fn absorb(
    l: Learned,
    learned: &mut Vec<LearnedSource>,
    issuers: &mut Vec<CertificateDer<'static>>,
    listener: &str,
) {
    let mut added = false;
    for url in l.urls {
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || learned.iter().any(|s| s.url == url)
        {
            continue;
        }
        if learned.len() >= MAX_LEARNED {
            warn!(
                listener,
                url,
                "more than {MAX_LEARNED} CRL distribution points learned from device certificates; not fetching this one (list it in crl_urls if it is needed)"
            );
            continue;
        }
        info!(
            listener,
            url, "CRL distribution point learned from a device certificate; fetching it"
        );
        learned.push(LearnedSource {
            url,
            issuer: Some(l.issuer.clone()),
            found_in: DEVICE,
        });
        added = true;
    }
    if added && !issuers.contains(&l.issuer) && issuers.len() < MAX_ISSUERS {
        issuers.push(l.issuer);
    }
}

/// Makes `sources` the configured URLs plus the learned ones still wanted
/// (device distribution points while `crl_from_certificates` is on, deltas
/// while a CRL in force names them), keeping the state of those that stay.
/// True when a CRL in force came or went with them.
fn sync_sources(
    sources: &mut Vec<Source>,
    metrics: &Metrics,
    inputs: &Inputs,
    learned: &[LearnedSource],
    named: &[String],
) -> bool {
    let mut wanted: Vec<(String, &'static str, Option<CertificateDer<'static>>)> = inputs
        .urls
        .iter()
        .map(|u| (u.clone(), CONFIGURED, None))
        .collect();
    for l in learned {
        let still = match l.found_in {
            DEVICE => inputs.from_certificates,
            _ => named.contains(&l.url),
        };
        if still && !wanted.iter().any(|(w, ..)| *w == l.url) {
            wanted.push((l.url.clone(), l.found_in, l.issuer.clone()));
        }
    }
    let keep: HashSet<&str> = wanted.iter().map(|(u, ..)| u.as_str()).collect();
    let before = sources.len();
    sources.retain(|s| keep.contains(s.url.as_str()));
    let mut changed = sources.len() != before;
    for (url, found_in, issuer) in wanted {
        if !sources.iter().any(|s| s.url == url) {
            // The series exist from the start, so a panel or an alert on
            // them does not read "no data" before the first change.
            metrics.crl_fetched_by(&url, "updated", 0);
            let s = Source::new(&url, found_in, issuer, inputs);
            changed |= s.loaded.is_some();
            sources.push(s);
        }
    }
    changed
}

/// Fetches one source; true when the CRL it holds changed.
async fn refresh_one(
    s: &mut Source,
    inputs: &Inputs,
    issuers: &[CertificateDer<'static>],
    metrics: &Metrics,
) -> bool {
    let now = now_unix();
    s.status.last_attempt = Some(now);
    let ask = Ask {
        etag: s.etag.clone(),
        last_modified: s.last_modified.clone(),
        post: None,
    };
    let outcome = match fetch(&s.url, &ask, LIMITS).await {
        Err(e) => Err(Refused {
            label: e.label(),
            detail: e.to_string(),
        }),
        Ok(Answer::NotModified) => Ok(None),
        Ok(Answer::Body {
            bytes,
            etag,
            last_modified,
        }) => accept(s, &bytes, inputs, issuers).map(|l| Some((l, etag, last_modified))),
    };
    let listener = inputs.listener.as_str();
    match outcome {
        Err(r) => {
            metrics.crl_fetched(&s.url, r.label);
            if s.failures == 0 || s.status.result != r.label {
                warn!(listener, url = %s.url, result = r.label, "CRL fetch refused: {}; the CRL in force stays ({})", r.detail,
                    s.loaded.as_ref().map_or_else(|| "none yet".to_string(), |l| format!("number {}", l.crl.number_text())));
            }
            s.status.result = r.label.into();
            s.status.detail = Some(r.detail);
            s.schedule_retry(inputs.refresh);
            false
        }
        Ok(None) => {
            metrics.crl_fetched(&s.url, "not_modified");
            metrics.crl_success(&s.url, now);
            s.status.result = "not_modified".into();
            s.status.detail = None;
            s.status.last_success = Some(now);
            s.schedule_ok(inputs.refresh);
            false
        }
        Ok(Some((loaded, etag, last_modified))) => {
            let same = s
                .loaded
                .as_ref()
                .is_some_and(|l| *l.crl.der == *loaded.crl.der);
            let label = if same { "unchanged" } else { "updated" };
            metrics.crl_fetched(&s.url, label);
            metrics.crl_success(&s.url, now);
            if let Some(cache) = &inputs.cache {
                let meta = Meta {
                    url: s.url.clone(),
                    etag: etag.clone(),
                    last_modified: last_modified.clone(),
                    fetched_at: now,
                    issuer: s.issuer.as_ref().map(|i| {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD.encode(i)
                    }),
                    learned: (s.status.found_in != CONFIGURED)
                        .then(|| s.status.found_in.to_string()),
                };
                if let Err(e) = cache.store(&s.url, &loaded.crl.der, &meta) {
                    warn!(listener, url = %s.url, dir = %cache.dir().display(), "cannot keep the fetched CRL on disk ({e}); it is used, but a restart while the CA is unreachable would not have it; make crl_cache_dir writable for certgate");
                }
            }
            if !same {
                info!(listener, url = %s.url, issuer = %loaded.crl.issuer, number = %loaded.crl.number_text(),
                    entries = loaded.crl.revoked.len(), "fetched a new CRL");
            }
            s.etag = etag;
            s.last_modified = last_modified;
            s.status.result = label.into();
            s.status.detail = None;
            s.status.last_success = Some(now);
            s.loaded = Some(loaded);
            s.describe();
            s.schedule_ok(inputs.refresh);
            !same
        }
    }
}

/// Checks a fetched body: one CRL, signed by a CA this listener trusts (or
/// the issuer a device chain named for it), not older than the one held.
fn accept(
    s: &Source,
    body: &[u8],
    inputs: &Inputs,
    issuers: &[CertificateDer<'static>],
) -> Result<Loaded, Refused> {
    let der = match decode(body) {
        Ok(mut list) if list.len() == 1 => list.remove(0),
        Ok(list) => {
            return Err(Refused {
                label: "bad_crl",
                detail: format!("the answer holds {} CRLs; a CRL URL serves one", list.len()),
            });
        }
        Err(e) => {
            return Err(Refused {
                label: "bad_crl",
                detail: format!("the answer {e}"),
            });
        }
    };
    let crl = Crl::parse(&der).map_err(|e| Refused {
        label: "bad_crl",
        detail: e.to_string(),
    })?;
    let mut cas: Vec<CertificateDer<'_>> = inputs.cas.clone();
    cas.extend(issuers.iter().cloned());
    let key = signer(&crl, &cas).map_err(|e| Refused {
        label: "bad_signature",
        detail: e,
    })?;
    if let Some(held) = &s.loaded
        && let (Some(have), Some(got)) = (&held.crl.number, &crl.number)
        && got < have
    {
        return Err(Refused {
            label: "older",
            detail: format!(
                "the answer is CRL number {got}, older than number {have} in force (a stale \
                 mirror or a replayed CRL)"
            ),
        });
    }
    Ok(Loaded {
        crl: Arc::new(crl),
        signer: key,
        source: Arc::from(s.url.as_str()),
    })
}

/// Merges files and fetched CRLs into a new set and swaps it in.
fn recompute(rev: &Revocation, inputs: &Inputs, sources: &[Source], metrics: &Metrics) {
    let mut loaded: Vec<Loaded> = inputs.files.clone();
    loaded.extend(sources.iter().filter_map(|s| s.loaded.clone()));
    let (set, problems) = RevocationSet::build(&loaded, inputs.require, inputs.stale);
    for p in problems {
        warn!(listener = %inputs.listener, "{p}");
    }
    metrics.set_listener_crls(&inputs.listener, &super::gauges(&set));
    rev.publish(set);
}
