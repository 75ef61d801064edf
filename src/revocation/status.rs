//! What the admin surfaces show of each fetched CRL source.

use serde::Serialize;

/// One fetched source: its last attempt and the CRL it holds.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct SourceStatus {
    /// The URL.
    pub(crate) url: String,
    /// How it was found: `configured` (`crl_urls`, or a distribution point
    /// of a client CA with `crl_from_certificates`), `device_certificate`
    /// (a device certificate's distribution point) or `freshest_crl` (a
    /// base CRL's Freshest CRL: its delta).
    pub(crate) found_in: &'static str,
    /// The last attempt's result (a `certgate_crl_fetch_total` label), or
    /// `pending` before the first.
    pub(crate) result: String,
    /// Why it failed, in words.
    pub(crate) detail: Option<String>,
    /// When it was last tried, Unix seconds.
    pub(crate) last_attempt: Option<i64>,
    /// When it last gave a usable answer.
    pub(crate) last_success: Option<i64>,
    /// The CRL held: issuer, number, thisUpdate, nextUpdate, entries.
    pub(crate) issuer: Option<String>,
    /// Its cRLNumber.
    pub(crate) number: Option<String>,
    /// Whether it is a delta CRL.
    pub(crate) delta: bool,
    /// thisUpdate.
    pub(crate) this_update: Option<i64>,
    /// nextUpdate.
    pub(crate) next_update: Option<i64>,
    /// Revoked entries.
    pub(crate) entries: usize,
}

/// One CRL in force (a base and the delta applied to it).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CrlView {
    /// Issuer, RFC 4514.
    pub(crate) issuer: String,
    /// Where the base CRL came from (file or URL).
    pub(crate) source: String,
    /// The base CRL's number.
    pub(crate) number: Option<String>,
    /// thisUpdate of the base.
    pub(crate) this_update: i64,
    /// The earlier nextUpdate of base and delta.
    pub(crate) next_update: Option<i64>,
    /// Whether it is past nextUpdate now.
    pub(crate) stale: bool,
    /// Revoked serials after the delta.
    pub(crate) entries: usize,
    /// The delta applied: source and number.
    pub(crate) delta: Option<DeltaView>,
}

/// The delta CRL applied to a base.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DeltaView {
    /// Where it came from.
    pub(crate) source: String,
    /// Its number.
    pub(crate) number: Option<String>,
    /// The BaseCRLNumber it applies to.
    pub(crate) base_number: Option<String>,
}

impl CrlView {
    /// Every CRL in force in `set`, sorted by issuer.
    pub(crate) fn of(set: &super::RevocationSet) -> Vec<CrlView> {
        let now = crate::clock::now_unix();
        let mut out: Vec<CrlView> = set
            .authorities()
            .map(|a| CrlView {
                issuer: a.base.crl.issuer.clone(),
                source: a.base.source.to_string(),
                number: a.base.crl.number.as_ref().map(|n| n.to_string()),
                this_update: a.base.crl.this_update,
                next_update: a.next_update,
                stale: a.next_update.is_some_and(|n| n <= now),
                entries: a.revoked.len(),
                delta: a.delta.as_ref().map(|d| DeltaView {
                    source: d.source.to_string(),
                    number: d.crl.number.as_ref().map(|n| n.to_string()),
                    base_number: d.crl.delta_base.as_ref().map(|n| n.to_string()),
                }),
            })
            .collect();
        out.sort_by(|a, b| a.issuer.cmp(&b.issuer).then(a.source.cmp(&b.source)));
        out
    }
}

/// What one listener's revocation state says about a device certificate
/// (`devices show`): the CRL that speaks for its issuer, and the OCSP
/// answer cached for it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DeviceRevocation {
    /// The listener.
    pub(crate) listener: String,
    /// `revoked`, `not_revoked` or `no_crl` (no CRL of its issuer loaded).
    pub(crate) crl: &'static str,
    /// Where the CRL that decides came from, and its number.
    pub(crate) crl_source: Option<String>,
    /// Its number.
    pub(crate) crl_number: Option<String>,
    /// The cached OCSP answer, with OCSP on.
    pub(crate) ocsp: Option<super::ocsp::OcspView>,
}

impl DeviceRevocation {
    /// The status of the certificate `serial_hex` of `issuer` (RFC 4514)
    /// on `listener`.
    pub(crate) fn of(
        listener: &str,
        rev: &super::Revocation,
        issuer: &str,
        serial_hex: &str,
    ) -> DeviceRevocation {
        let serial = super::crl::normalize_serial(&crate::identity::serial_from_hex(serial_hex));
        let set = rev.current();
        let mut crl = "no_crl";
        let mut crl_source = None;
        let mut crl_number = None;
        for a in set.authorities().filter(|a| a.base.crl.issuer == issuer) {
            let revoked = a.revoked.contains(&serial);
            if crl != "revoked" {
                crl = if revoked { "revoked" } else { "not_revoked" };
                let from = match &a.delta {
                    Some(d) if revoked && d.crl.revoked.contains(&serial) => d,
                    _ => &a.base,
                };
                crl_source = Some(from.source.to_string());
                crl_number = Some(from.crl.number_text());
            }
        }
        DeviceRevocation {
            listener: listener.to_string(),
            crl,
            crl_source,
            crl_number,
            ocsp: rev.ocsp.view_of(issuer, &serial),
        }
    }
}
