//! A listener's revocation state as handshakes see it: an `ArcSwap` of the
//! current [`RevocationSet`], a version that open connections watch (a
//! device a new CRL revokes is cut off, as a block does), and what the
//! fetcher follows (the inputs of the last reload, the distribution
//! points learned from devices).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, watch};

use crate::config::{CrlStale, OcspMode};
use crate::metrics::Metrics;

use super::cache::Cache;
use super::ocsp::Ocsp;
use super::set::{Loaded, RevocationSet};
use super::status::SourceStatus;

/// What a listener's revocation state is built from, read at (re)load.
#[derive(Debug)]
pub(crate) struct Inputs {
    /// The listener, for logs and metrics.
    pub(crate) listener: String,
    /// The configured client CAs: who may sign a CRL.
    pub(crate) cas: Vec<CertificateDer<'static>>,
    /// CRLs from `crl` files, verified.
    pub(crate) files: Vec<Loaded>,
    /// URLs to fetch: `crl_urls`, plus the CA certificates' distribution
    /// points with `crl_from_certificates`.
    pub(crate) urls: Vec<String>,
    /// CRLs already fetched, from the cache, verified (a restart while the
    /// CA is unreachable serves from these).
    pub(crate) cached: Vec<Loaded>,
    /// Issuer certificates of cached sources that device chains named.
    pub(crate) cached_issuers: Vec<CertificateDer<'static>>,
    /// Cached sources that device certificates named (fetched again at
    /// start, with `crl_from_certificates`).
    pub(crate) cached_device_urls: Vec<String>,
    /// `crl_from_certificates`.
    pub(crate) from_certificates: bool,
    /// `crl_refresh`.
    pub(crate) refresh: Duration,
    /// `crl_cache_dir`, when the listener fetches.
    pub(crate) cache: Option<Cache>,
    /// `require_crl`.
    pub(crate) require: bool,
    /// `crl_stale`.
    pub(crate) stale: CrlStale,
    /// `ocsp`.
    pub(crate) ocsp: OcspMode,
    /// `ocsp_url`.
    pub(crate) ocsp_url: Option<String>,
    /// `ocsp_timeout`.
    pub(crate) ocsp_timeout: Duration,
}

impl Inputs {
    /// The set from the CRL files and the cached fetched CRLs: what is in
    /// force before (and whenever) the fetcher has nothing newer.
    pub(crate) fn initial_set(&self) -> RevocationSet {
        let mut loaded = self.files.clone();
        loaded.extend(self.cached.iter().cloned());
        let (set, problems) = RevocationSet::build(&loaded, self.require, self.stale);
        for p in problems {
            tracing::warn!(listener = %self.listener, "{p}");
        }
        set
    }

    /// Whether anything is fetched over the network.
    pub(crate) fn fetches(&self) -> bool {
        (!self.urls.is_empty() || self.from_certificates) && self.cache.is_some()
    }
}

/// Distribution points a verified device chain names, sent from the
/// handshake to the fetcher (`crl_from_certificates`).
#[derive(Debug)]
pub(crate) struct Learned {
    /// The CRL URLs of one certificate of the chain.
    pub(crate) urls: Vec<String>,
    /// That certificate's issuer, whose key signs the CRL.
    pub(crate) issuer: CertificateDer<'static>,
}

/// The revocation state of one listener (shared by every verifier
/// generation that keeps the same CAs).
#[derive(Debug)]
pub(crate) struct Revocation {
    set: ArcSwap<RevocationSet>,
    version: Arc<watch::Sender<u64>>,
    pub(super) inputs: watch::Sender<Arc<Inputs>>,
    learn: mpsc::Sender<Learned>,
    pub(super) learn_rx: std::sync::Mutex<Option<mpsc::Receiver<Learned>>>,
    pub(super) started: AtomicBool,
    /// Each fetched source's last result, for the admin API.
    pub(super) sources: std::sync::Mutex<Vec<SourceStatus>>,
    /// OCSP answers about device certificates.
    pub(crate) ocsp: Arc<Ocsp>,
}

/// Learned distribution points waiting for the fetcher at most; beyond
/// that the handshake drops them (the next first-seen device sends again).
const LEARN_QUEUE: usize = 256;

impl Revocation {
    /// A new state built from `inputs`.
    pub(crate) fn new(inputs: Arc<Inputs>, set: RevocationSet) -> Arc<Revocation> {
        let (learn, learn_rx) = mpsc::channel(LEARN_QUEUE);
        let version = Arc::new(watch::Sender::new(0));
        let ocsp = Ocsp::new(&inputs.listener, version.clone());
        Arc::new(Revocation {
            set: ArcSwap::from_pointee(set),
            version,
            inputs: watch::Sender::new(inputs),
            learn,
            learn_rx: std::sync::Mutex::new(Some(learn_rx)),
            started: AtomicBool::new(false),
            sources: std::sync::Mutex::new(Vec::new()),
            ocsp,
        })
    }

    /// The set handshakes check against now.
    pub(crate) fn current(&self) -> Arc<RevocationSet> {
        self.set.load_full()
    }

    /// Resolves at the next change of the set.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Swaps in a new set and tells open connections to re-check.
    pub(super) fn publish(&self, set: RevocationSet) {
        self.set.store(Arc::new(set));
        self.bump();
    }

    /// Tells open connections to re-check (a CRL changed).
    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Gives the running gateway's metrics (first call wins).
    pub(super) fn set_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.ocsp.metrics.set(metrics);
    }

    /// Installs the inputs of a committed reload (files re-read, URLs
    /// changed) with the set built from them; the fetcher follows. The
    /// same inputs again change nothing.
    pub(crate) fn install(&self, inputs: &Arc<Inputs>) {
        if Arc::ptr_eq(&self.inputs(), inputs) {
            return;
        }
        self.publish(inputs.initial_set());
        self.inputs.send_replace(inputs.clone());
    }

    /// The inputs in force.
    pub(crate) fn inputs(&self) -> Arc<Inputs> {
        self.inputs.borrow().clone()
    }

    /// Whether the fetcher wants distribution points from device chains.
    pub(crate) fn learns(&self) -> bool {
        let i = self.inputs.borrow();
        i.from_certificates && i.cache.is_some()
    }

    /// Hands a chain's distribution points to the fetcher without waiting
    /// (called from the handshake; dropped when the queue is full).
    pub(crate) fn learn(&self, learned: Learned) {
        let _ = self.learn.try_send(learned);
    }

    /// Each fetched source's last result.
    pub(crate) fn sources(&self) -> Vec<SourceStatus> {
        self.sources.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Marks the fetcher as started; true the first time.
    pub(super) fn claim_start(&self) -> bool {
        !self.started.swap(true, Ordering::SeqCst)
    }
}
