//! `GET /api/revocation`: the CRLs in force on each listener and each
//! fetched source's last result.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::revocation::status::CrlView;

use super::context::AdminContext;
use super::reply::json;

/// Every listener with client certificates: its CRLs in force (issuer,
/// number, thisUpdate / nextUpdate, staleness, entries, the delta applied)
/// and its fetched sources (URL, last result and when, the CRL held).
pub(super) async fn revocation(ctx: &AdminContext) -> Response<Full<Bytes>> {
    let view = ctx.view.load();
    let listeners: Vec<serde_json::Value> = view
        .revocation
        .iter()
        .map(|(name, r)| {
            let inputs = r.inputs();
            serde_json::json!({
                "listener": name,
                "crl_stale": match inputs.stale {
                    crate::config::CrlStale::FailClosed => "fail_closed",
                    crate::config::CrlStale::FailOpen => "fail_open",
                },
                "require_crl": inputs.require,
                "ocsp": {
                    "mode": match inputs.ocsp {
                        crate::config::OcspMode::Off => "off",
                        crate::config::OcspMode::Prefer => "prefer",
                        crate::config::OcspMode::Require => "require",
                    },
                    "responder": inputs.ocsp_url,
                    "answers": r.ocsp.counts(),
                },
                "crls": CrlView::of(&r.current()),
                "sources": r.sources(),
            })
        })
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({ "listeners": listeners }),
    )
}
