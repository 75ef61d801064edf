//! Stale CRLs: a CRL past its nextUpdate is logged once, with what that
//! means under the listener's `crl_stale` policy.

use tracing::warn;

use crate::clock::now_unix;

use super::controller::Controller;

struct Stale {
    issuer: String,
    next_update: Option<i64>,
}

impl Controller {
    /// Logs a CRL going past its nextUpdate (once), with what that means
    /// under the listener's `crl_stale` policy.
    pub(super) fn check_crls(&mut self) {
        let now = now_unix();
        for r in &self.listeners {
            let state = r.shared.current();
            let Some(tls) = &state.tls else { continue };
            let policy = self
                .settings
                .listeners
                .iter()
                .find(|l| l.name == r.name)
                .and_then(|l| l.tls.as_ref())
                .map(|t| t.client_auth.crl_stale);
            let Some(revocation) = &tls.revocation else {
                continue;
            };
            for (issuer, next_update, _) in crate::revocation::gauges(&revocation.current()) {
                let c = Stale {
                    issuer,
                    next_update,
                };
                let key = (r.name.clone(), c.issuer.clone());
                let stale = c.next_update.is_some_and(|n| n < now);
                if stale && self.stale_crls.insert(key) {
                    match policy {
                        Some(crate::config::CrlStale::FailOpen) => warn!(
                            listener = %r.name, issuer = %c.issuer, next_update = c.next_update.unwrap_or(0),
                            "CRL is past its nextUpdate; crl_stale = \"fail_open\": devices of this CA are still admitted on the stale CRL; publish a fresh CRL"
                        ),
                        _ => warn!(
                            listener = %r.name, issuer = %c.issuer, next_update = c.next_update.unwrap_or(0),
                            "CRL is past its nextUpdate; crl_stale = \"fail_closed\": devices of this CA are REFUSED (reason crl_expired) until a fresh CRL is loaded"
                        ),
                    }
                } else if !stale {
                    self.stale_crls.remove(&(r.name.clone(), c.issuer.clone()));
                }
            }
        }
    }
}
