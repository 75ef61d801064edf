//! OCSP for device certificates (`ocsp = "prefer" | "require"`): answers
//! cached per (issuer key, serial) until their nextUpdate and refreshed in
//! the background, so a handshake never waits on the network for a device
//! seen before. The first connection of a device not seen before waits for
//! its answer after the handshake, up to `ocsp_timeout` (rustls verifies
//! certificates synchronously; the connection task does the waiting, never
//! a runtime thread).
//!
//! # Layout
//! - `request`: the OCSP request for a certificate, and its responder.
//! - `response`: checking an answer (signature, CertID, time window).
//! - here: the cache, the decision a handshake takes from it, lookups and
//!   the refresher.

mod request;
mod response;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::clock::now_unix;
use crate::config::OcspMode;

pub(crate) use request::{Query, query};
pub(crate) use response::{Answer, CertState};

use super::http::{Answer as HttpAnswer, Ask, Limits, fetch};
use super::signer::KeyId;
use crate::metrics::Metrics;

/// A certificate, as OCSP names it: its issuer's key and its serial.
pub(crate) type Key = (KeyId, Vec<u8>);

/// How long an answer without nextUpdate is used before asking again.
const NO_NEXT_UPDATE: i64 = 3600;
/// A failed lookup is retried this long after at the earliest.
const RETRY: i64 = 30;
/// Bounds on one request (a lookup goes on after a waiting handshake gave
/// up, so the next connection finds the answer).
const LIMITS: Limits = Limits {
    timeout: Duration::from_secs(10),
    max_bytes: 1024 * 1024,
    max_redirects: 2,
};

/// One cached certificate.
#[derive(Debug, Clone)]
struct Entry {
    query: Arc<Query>,
    answer: Option<Answer>,
    /// When it was last asked, Unix seconds.
    asked_at: i64,
    /// Why the last lookup failed.
    error: Option<String>,
}

impl Entry {
    /// Whether the answer may still be used at `now`.
    fn fresh(&self, now: i64) -> bool {
        match &self.answer {
            Some(a) => match a.next_update {
                Some(n) => now < n,
                None => now < self.asked_at + NO_NEXT_UPDATE,
            },
            None => false,
        }
    }

    /// Whether the refresher should ask again now: halfway through the
    /// answer's window, or a while after a failure.
    fn due(&self, now: i64) -> bool {
        match &self.answer {
            _ if self.error.is_some() => now >= self.asked_at + RETRY,
            Some(a) => {
                let until = a.next_update.unwrap_or(self.asked_at + NO_NEXT_UPDATE);
                now >= self.asked_at + (until - self.asked_at) / 2
            }
            None => now >= self.asked_at + RETRY,
        }
    }
}

/// What a handshake does about OCSP.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Admit (good, or no answer under `prefer`).
    Admit,
    /// Refuse: the responder says revoked.
    Revoked,
    /// Refuse under `require`: the responder does not know the certificate.
    Unknown,
    /// Refuse under `require`: no usable answer.
    Unavailable(String),
    /// First time this device is seen: the answer is on its way; the
    /// connection waits for it after the handshake.
    Wait(Pending),
}

/// A lookup in flight that a connection waits for.
#[derive(Debug)]
pub(crate) struct Pending {
    key: Key,
    done: watch::Receiver<bool>,
    ocsp: Weak<Ocsp>,
}

/// The OCSP cache of a listener.
#[derive(Debug)]
pub(crate) struct Ocsp {
    listener: String,
    entries: RwLock<HashMap<Key, Entry>>,
    inflight: std::sync::Mutex<HashMap<Key, watch::Receiver<bool>>>,
    refresher: AtomicBool,
    /// Open connections re-check when this moves (an answer says revoked).
    changed: Arc<watch::Sender<u64>>,
    pub(crate) metrics: std::sync::OnceLock<Arc<Metrics>>,
}

/// One row of the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct OcspView {
    /// The responder asked.
    pub(crate) responder: String,
    /// good, revoked, unknown, or none (no answer yet).
    pub(crate) status: &'static str,
    /// thisUpdate / nextUpdate of the answer.
    pub(crate) this_update: Option<i64>,
    /// nextUpdate.
    pub(crate) next_update: Option<i64>,
    /// When it was asked.
    pub(crate) asked_at: i64,
    /// Why the last lookup failed.
    pub(crate) error: Option<String>,
}

impl Ocsp {
    /// An empty cache for `listener`; `changed` is the version open
    /// connections of the listener watch.
    pub(crate) fn new(listener: &str, changed: Arc<watch::Sender<u64>>) -> Arc<Ocsp> {
        Arc::new(Ocsp {
            listener: listener.to_string(),
            entries: RwLock::default(),
            inflight: std::sync::Mutex::default(),
            refresher: AtomicBool::new(false),
            changed,
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// The decision for `key` at `now` under `mode`. `make_query` builds the
    /// request for a certificate not seen before; `None` means it names no
    /// responder and `ocsp_url` is not set.
    pub(crate) fn decide(
        self: &Arc<Self>,
        key: &Key,
        mode: OcspMode,
        make_query: impl FnOnce() -> Option<Query>,
        now: i64,
    ) -> Decision {
        let entry = self.entries.read().ok().and_then(|m| m.get(key).cloned());
        if let Some(e) = entry {
            return judge(&e, mode, now);
        }
        if let Some(done) = self.inflight.lock().ok().and_then(|m| m.get(key).cloned()) {
            return Decision::Wait(Pending {
                key: key.clone(),
                done,
                ocsp: Arc::downgrade(self),
            });
        }
        let Some(q) = make_query() else {
            return match mode {
                OcspMode::Require => Decision::Unavailable(
                    "the device certificate names no OCSP responder (authorityInfoAccess) and \
                     ocsp_url is not set"
                        .into(),
                ),
                _ => Decision::Admit,
            };
        };
        // Not inside a runtime (a unit test, `check`): nothing to ask with.
        if tokio::runtime::Handle::try_current().is_err() {
            return Decision::Admit;
        }
        let (tx, rx) = watch::channel(false);
        if let Ok(mut m) = self.inflight.lock() {
            m.insert(key.clone(), rx.clone());
        }
        let weak = Arc::downgrade(self);
        let key2 = key.clone();
        tokio::spawn(async move {
            lookup(&weak, key2, Arc::new(q)).await;
            let _ = tx.send(true);
        });
        self.start_refresher();
        Decision::Wait(Pending {
            key: key.clone(),
            done: rx,
            ocsp: Arc::downgrade(self),
        })
    }

    fn start_refresher(self: &Arc<Self>) {
        if !self.refresher.swap(true, Ordering::SeqCst) {
            tokio::spawn(refresh(Arc::downgrade(self)));
        }
    }

    /// Whether the cached answer about `key` says revoked.
    pub(crate) fn revoked(&self, key: &Key) -> bool {
        self.entries.read().is_ok_and(|m| {
            m.get(key)
                .and_then(|e| e.answer)
                .is_some_and(|a| a.state == CertState::Revoked)
        })
    }

    /// The cached answer about the certificate `serial` of `issuer`.
    pub(crate) fn view_of(&self, issuer: &str, serial: &[u8]) -> Option<OcspView> {
        let m = self.entries.read().ok()?;
        m.iter()
            .find(|(k, e)| k.1 == serial && e.query.issuer_name == issuer)
            .map(|(_, e)| OcspView {
                responder: e.query.url.clone(),
                status: e.answer.map_or("none", |a| a.state.as_str()),
                this_update: e.answer.map(|a| a.this_update),
                next_update: e.answer.and_then(|a| a.next_update),
                asked_at: e.asked_at,
                error: e.error.clone(),
            })
    }

    /// How many cached answers say what: (good, revoked, unknown, none).
    pub(crate) fn counts(&self) -> serde_json::Value {
        let (mut good, mut revoked, mut unknown, mut none) = (0u64, 0u64, 0u64, 0u64);
        if let Ok(m) = self.entries.read() {
            for e in m.values() {
                match e.answer.map(|a| a.state) {
                    Some(CertState::Good) => good += 1,
                    Some(CertState::Revoked) => revoked += 1,
                    Some(CertState::Unknown) => unknown += 1,
                    None => none += 1,
                }
            }
        }
        serde_json::json!({"good": good, "revoked": revoked, "unknown": unknown, "no_answer": none})
    }
}

/// The decision from a cached entry.
fn judge(e: &Entry, mode: OcspMode, now: i64) -> Decision {
    let require = mode == OcspMode::Require;
    match e.answer {
        // A revocation stands even past the answer's window.
        Some(a) if a.state == CertState::Revoked => Decision::Revoked,
        Some(a) if e.fresh(now) => match a.state {
            CertState::Good => Decision::Admit,
            CertState::Unknown if require => Decision::Unknown,
            _ => Decision::Admit,
        },
        _ if require => Decision::Unavailable(match &e.error {
            Some(why) => format!("no valid OCSP answer from {} ({why})", e.query.url),
            None => format!("the OCSP answer from {} has expired", e.query.url),
        }),
        _ => Decision::Admit,
    }
}

impl Pending {
    /// Waits up to `timeout` for the answer, then decides from what the
    /// cache holds (nothing, under `require`, refuses).
    pub(crate) async fn wait(mut self, timeout: Duration, mode: OcspMode) -> Decision {
        let _ = tokio::time::timeout(timeout, self.done.wait_for(|d| *d)).await;
        let Some(ocsp) = self.ocsp.upgrade() else {
            return Decision::Admit;
        };
        let entry = ocsp
            .entries
            .read()
            .ok()
            .and_then(|m| m.get(&self.key).cloned());
        match entry {
            Some(e) => judge(&e, mode, now_unix()),
            None if mode == OcspMode::Require => {
                Decision::Unavailable(format!("no OCSP answer within ocsp_timeout ({timeout:?})"))
            }
            None => Decision::Admit,
        }
    }
}

/// Asks the responder about `key` and stores what it says (or why not).
async fn lookup(ocsp: &Weak<Ocsp>, key: Key, q: Arc<Query>) {
    let ask = Ask {
        post: Some((Bytes::from(q.der.clone()), "application/ocsp-request")),
        ..Ask::default()
    };
    let now = now_unix();
    let result = match fetch(&q.url, &ask, LIMITS).await {
        Ok(HttpAnswer::Body { bytes, .. }) => response::verify(&bytes, &q, now),
        Ok(HttpAnswer::NotModified) => Err("the responder answered 304".into()),
        Err(e) => Err(e.to_string()),
    };
    let Some(ocsp) = ocsp.upgrade() else {
        return;
    };
    let label = match &result {
        Ok(a) => a.state.as_str(),
        Err(_) => "error",
    };
    if let Some(m) = ocsp.metrics.get() {
        m.ocsp_answered(label);
    }
    let listener = ocsp.listener.as_str();
    let mut newly_revoked = false;
    if let Ok(mut m) = ocsp.entries.write() {
        let before = m.get(&key).and_then(|e| e.answer);
        let entry = match result {
            Ok(a) => {
                newly_revoked = a.state == CertState::Revoked
                    && before.is_none_or(|b| b.state != CertState::Revoked);
                Entry {
                    query: q.clone(),
                    answer: Some(a),
                    asked_at: now,
                    error: None,
                }
            }
            Err(why) => {
                warn!(listener, responder = %q.url, "OCSP lookup failed: {why}; the last answer (if any) stays in use until its nextUpdate");
                Entry {
                    query: q.clone(),
                    // A failed refresh keeps the last answer (fail static);
                    // `judge` stops using it at its nextUpdate.
                    answer: before,
                    asked_at: now,
                    error: Some(why),
                }
            }
        };
        m.insert(key.clone(), entry);
    }
    if let Ok(mut m) = ocsp.inflight.lock() {
        m.remove(&key);
    }
    if newly_revoked {
        info!(listener, responder = %q.url, "OCSP: a device certificate is revoked; its open connections are closed");
        ocsp.changed.send_modify(|v| *v += 1);
    }
}

/// Refreshes answers before they expire, while the listener's revocation
/// state lives.
async fn refresh(weak: Weak<Ocsp>) {
    // At most this many lookups per round, one at a time: the refresher
    // never floods a responder.
    const PER_ROUND: usize = 256;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(ocsp) = weak.upgrade() else {
            return;
        };
        let now = now_unix();
        let due: Vec<(Key, Arc<Query>)> = ocsp
            .entries
            .read()
            .map(|m| {
                m.iter()
                    .filter(|(_, e)| e.due(now))
                    .take(PER_ROUND)
                    .map(|(k, e)| (k.clone(), e.query.clone()))
                    .collect()
            })
            .unwrap_or_default();
        drop(ocsp);
        for (key, q) in due {
            lookup(&weak, key, q).await;
        }
    }
}
