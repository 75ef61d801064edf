//! The overview: listeners and their mode, devices by status, refusals by
//! reason over the last hour and day, upstream servers, certificates
//! expiring soon, the last reload.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use maud::html;

use crate::readiness::Status;
use crate::registry::{DeviceStatus, Query};

use super::super::context::AdminContext;
use super::super::readiness::reports;
use super::super::sessions::Caller;
use super::devices::status_badge;
use super::layout::{date, html_response, page as shell, when};

/// What "soon" means for an expiry.
const SOON: i64 = 30 * 86_400;

/// Refused attempts by reason in the last `window` seconds, all listeners.
async fn refusals(ctx: &AdminContext, window: i64) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in reports(ctx, None, window).await.unwrap_or_default() {
        for s in &r.by_status {
            let refused = match s.status {
                Status::Unapproved | Status::Blocked | Status::UpgradeRequired => true,
                Status::NoCredentials => r.mode == "required",
                Status::Authenticated | Status::Failed => false,
            };
            if refused && s.count > 0 {
                *out.entry(s.status.as_str().to_string()).or_default() += s.count;
            }
        }
        for (reason, n) in &r.failed_reasons {
            *out.entry(reason.clone()).or_default() += n;
        }
    }
    out
}

/// `GET /`.
pub(super) async fn page(ctx: &AdminContext, caller: &Caller) -> Response<Full<Bytes>> {
    let view = ctx.view.load_full();
    let now = crate::clock::now_unix();
    let mut counts = Vec::new();
    let mut expiring_devices = None;
    if let Some(reg) = &ctx.registry {
        for s in [
            DeviceStatus::Pending,
            DeviceStatus::Approved,
            DeviceStatus::Blocked,
        ] {
            let q = Query {
                status: Some(s),
                limit: Some(1),
                ..Query::default()
            };
            counts.push((s, reg.list(q).await.map(|p| p.total).unwrap_or(0)));
        }
        let q = Query {
            expiring_within: Some(SOON),
            limit: Some(1),
            ..Query::default()
        };
        expiring_devices = reg.list(q).await.ok().map(|p| p.total);
    }
    let hour = refusals(ctx, 3600).await;
    let day = refusals(ctx, 86_400).await;
    let reasons: Vec<&String> = day
        .keys()
        .chain(hour.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let certs = ctx.metrics.certificates();
    let soon: Vec<_> = certs.iter().filter(|c| c.not_after - now < SOON).collect();
    let (reload_ok, loaded_at) = ctx.metrics.last_reload();
    let mode_of = |name: &str| {
        view.modes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| *m)
            .unwrap_or("-")
    };
    let body = html! {
        div.cards {
            section.card.wide aria-labelledby="h-listeners" {
                h2 #h-listeners { "Listeners" }
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Address" } th scope="col" { "Client certificates" } } }
                    tbody {
                        @for (name, addr) in &view.listeners {
                            tr { td { (name) } td.mono { (addr) } td { (mode_of(name)) } }
                        }
                    }
                }
            }
            section.card aria-labelledby="h-devices" {
                h2 #h-devices { "Devices" }
                @if counts.is_empty() {
                    p.muted { "No device registry: every CA-valid certificate is admitted." }
                } @else {
                    ul {
                        @for (s, n) in &counts {
                            li { (status_badge(*s)) " " a href={"/devices?status=" (s.as_str())} { (n) " " (s.as_str()) } }
                        }
                    }
                    @if let Some(n) = expiring_devices {
                        p { a href="/devices?sort=expiry&order=asc" { (n) " device certificate(s)" } " expire within 30 days." }
                    }
                }
            }
            section.card aria-labelledby="h-upstreams" {
                h2 #h-upstreams { "Upstream servers" }
                table {
                    thead { tr { th scope="col" { "Listener" } th scope="col" { "Server" } th scope="col" { "State" } } }
                    tbody {
                        @for (listener, up) in &view.upstreams {
                            @for s in up.servers() {
                                tr {
                                    td { (listener) " → " (up.settings.name) }
                                    td.mono { (s.addr) }
                                    td { @if s.available() { span.badge.up { "up" } } @else { span.badge.down { "down" } } }
                                }
                            }
                        }
                    }
                }
            }
            section.card aria-labelledby="h-reload" {
                h2 #h-reload { "Configuration" }
                p {
                    @if reload_ok { span.badge.ok { "loaded" } } @else { span.badge.bad { "last reload refused" } }
                    " The configuration in force was loaded " (when(Some(loaded_at))) "."
                }
                @if !reload_ok {
                    p { "The last reload attempt was refused; the previous configuration stays in force. The gateway's log names each problem." }
                }
            }
        }
        section aria-labelledby="h-refusals" {
            h2 #h-refusals { "Refused connection attempts by reason" }
            @if reasons.is_empty() {
                p.muted { "None in the last day." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Reason" } th.num scope="col" { "Last hour" } th.num scope="col" { "Last day" } } }
                    tbody {
                        @for r in &reasons {
                            tr { td { (r.replace('_', " ")) } td.num { (hour.get(*r).copied().unwrap_or(0)) } td.num { (day.get(*r).copied().unwrap_or(0)) } }
                        }
                    }
                }
            }
        }
        section aria-labelledby="h-expiring" {
            h2 #h-expiring { "Gateway certificates expiring within 30 days" }
            @if soon.is_empty() {
                p.muted { "None." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Listener" } th scope="col" { "Role" } th scope="col" { "Subject" } th scope="col" { "Expires" } } }
                    tbody {
                        @for c in &soon {
                            tr { td { (c.listener) } td { (c.role) } td { (c.subject) } td { (date(c.not_after)) } }
                        }
                    }
                }
            }
        }
    };
    html_response(StatusCode::OK, shell("Overview", "/", caller, body))
}
