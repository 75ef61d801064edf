//! Server certificates, client CAs and CRLs in force, with their expiry
//! and staleness.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use maud::html;

use crate::revocation::status::CrlView;

use super::super::context::AdminContext;
use super::super::sessions::Caller;
use super::layout::{html_response, page as shell, when};

/// `GET /certificates`.
pub(super) fn page(ctx: &AdminContext, caller: &Caller) -> Response<Full<Bytes>> {
    let now = crate::clock::now_unix();
    let certs = ctx.metrics.certificates();
    let view = ctx.view.load_full();
    let days = |t: i64| (t - now).div_euclid(86_400);
    let body = html! {
        h2 { "Server certificates and client CAs" }
        table {
            thead { tr { th scope="col" { "Listener" } th scope="col" { "Role" } th scope="col" { "Subject" } th scope="col" { "Expires" } th.num scope="col" { "Days left" } } }
            tbody {
                @for c in &certs {
                    tr {
                        td { (c.listener) }
                        td { (if c.role == "server" { "served to clients" } else { "trusted for devices" }) }
                        td { (c.subject) }
                        td { (when(Some(c.not_after))) }
                        td.num { (days(c.not_after)) }
                    }
                }
            }
        }
        h2 { "Certificate revocation lists" }
        @for (listener, r) in &view.revocation {
            @let crls = CrlView::of(&r.current());
            h3 { "Listener " (listener) }
            @if crls.is_empty() {
                p.muted { "No CRL in force." }
            } @else {
                table {
                    thead { tr {
                        th scope="col" { "Issuer" } th scope="col" { "Source" } th scope="col" { "Number" }
                        th scope="col" { "This update" } th scope="col" { "Next update" } th scope="col" { "State" } th.num scope="col" { "Revoked" }
                    } }
                    tbody {
                        @for c in &crls {
                            tr {
                                td { (c.issuer) }
                                td.mono { (c.source) }
                                td.mono { (c.number.as_deref().unwrap_or("-")) }
                                td { (when(Some(c.this_update))) }
                                td { (when(c.next_update)) }
                                td { @if c.stale { span.badge.stale { "stale" } } @else { span.badge.ok { "current" } } }
                                td.num { (c.entries) }
                            }
                        }
                    }
                }
            }
        }
    };
    html_response(
        StatusCode::OK,
        shell("Certificates", "/certificates", caller, body),
    )
}
