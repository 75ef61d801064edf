//! The devices page: filter, search, sort, page; select many and approve,
//! block, unblock or forget them after a confirmation that says how many.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use maud::{Markup, html};

use crate::registry::{Change, DeviceStatus, DeviceView, Query, Registry, Sort};

use super::super::context::AdminContext;
use super::super::sessions::Caller;
use super::form::Form;
use super::layout::{
    common_name, date, error_page, html_response, page as shell, query_string, see_other, when,
};

/// Page sizes offered.
const PER_PAGE: &[usize] = &[50, 100, 500];
/// Most devices one confirmation acts on.
pub(super) const MAX_BULK: usize = 10_000;

/// The filter of a device list, as the page's query string carries it.
#[derive(Debug, Clone, Default)]
pub(super) struct Filter {
    status: Option<DeviceStatus>,
    q: String,
    sort: Sort,
    descending: bool,
    offset: usize,
    per: usize,
}

impl Filter {
    pub(super) fn from(form: &Form) -> Filter {
        let sort = Sort::parse(form.text("sort")).unwrap_or(Sort::LastSeen);
        Filter {
            status: DeviceStatus::parse(form.text("status")),
            q: form.text("q").to_string(),
            sort,
            // Newest activity first unless asked otherwise; soonest expiry
            // first.
            descending: match form.text("order") {
                "asc" => false,
                "desc" => true,
                _ => sort != Sort::Expiry,
            },
            offset: form.text("offset").parse().unwrap_or(0),
            per: form
                .text("per")
                .parse()
                .ok()
                .filter(|p| PER_PAGE.contains(p))
                .unwrap_or(PER_PAGE[0]),
        }
    }

    fn query(&self, offset: usize, limit: usize) -> Query {
        Query {
            status: self.status,
            text: (!self.q.is_empty()).then(|| self.q.clone()),
            sort: self.sort,
            descending: self.descending,
            offset,
            limit: Some(limit),
            ..Query::default()
        }
    }

    /// This filter's URL, at `offset`.
    fn url(&self, offset: usize) -> String {
        let offset = offset.to_string();
        let per = self.per.to_string();
        let q = query_string(&[
            (
                "status",
                self.status.map(DeviceStatus::as_str).unwrap_or(""),
            ),
            ("q", &self.q),
            ("sort", self.sort.as_str()),
            ("order", if self.descending { "desc" } else { "asc" }),
            ("per", &per),
            ("offset", if offset == "0" { "" } else { &offset }),
        ]);
        format!("/devices?{q}")
    }

    fn hidden(&self) -> Markup {
        html! {
            input type="hidden" name="status" value=(self.status.map(DeviceStatus::as_str).unwrap_or(""));
            input type="hidden" name="q" value=(self.q);
            input type="hidden" name="sort" value=(self.sort.as_str());
            input type="hidden" name="order" value=(if self.descending { "desc" } else { "asc" });
            input type="hidden" name="per" value=(self.per);
        }
    }
}

/// What a bulk action does, in the words the page uses.
fn action(name: &str) -> Option<(Change, &'static str, &'static str)> {
    match name {
        "approve" => Some((Change::Approve, "Approve", "approved")),
        "block" => Some((Change::Block, "Block", "blocked")),
        "unblock" => Some((Change::Unblock, "Unblock", "unblocked (back to pending)")),
        "forget" => Some((Change::Forget, "Forget", "forgotten")),
        _ => None,
    }
}

pub(super) fn status_badge(s: DeviceStatus) -> Markup {
    html! { span class={"badge " (s.as_str())} { (s.as_str()) } }
}

/// The answer when the gateway has no registry.
pub(super) fn no_registry(caller: &Caller) -> Response<Full<Bytes>> {
    error_page(
        StatusCode::NOT_FOUND,
        "No device registry",
        "This gateway has no [registry] table: every CA-valid certificate is admitted, and there are no devices to manage.",
        Some(caller),
    )
}

/// `GET /devices`.
pub(super) async fn page(
    ctx: &AdminContext,
    caller: &Caller,
    query: &Form,
) -> Response<Full<Bytes>> {
    let Some(reg) = &ctx.registry else {
        return no_registry(caller);
    };
    let f = Filter::from(query);
    let list = match reg.list(f.query(f.offset, f.per)).await {
        Ok(p) => p,
        Err(e) => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Devices",
                &e.to_string(),
                Some(caller),
            );
        }
    };
    let done = query.text("done");
    let sort_option = |s: Sort, label: &str| {
        html! {
            option value=(s.as_str()) selected[f.sort == s] { (label) }
        }
    };
    let body = html! {
        @if !done.is_empty() {
            p.notice role="status" { (done) }
        }
        form.filters method="get" action="/devices" role="search" {
            label { "Status"
                select name="status" {
                    option value="" selected[f.status.is_none()] { "all" }
                    @for s in [DeviceStatus::Pending, DeviceStatus::Approved, DeviceStatus::Blocked] {
                        option value=(s.as_str()) selected[f.status == Some(s)] { (s.as_str()) }
                    }
                }
            }
            label { "Search (CN, fingerprint, SAN, label, address)"
                input type="search" name="q" value=(f.q);
            }
            label { "Sort by"
                select name="sort" {
                    (sort_option(Sort::LastSeen, "last seen"))
                    (sort_option(Sort::FirstSeen, "first seen"))
                    (sort_option(Sort::Expiry, "certificate expiry"))
                }
            }
            label { "Order"
                select name="order" {
                    option value="desc" selected[f.descending] { "newest / latest first" }
                    option value="asc" selected[!f.descending] { "oldest / soonest first" }
                }
            }
            label { "Per page"
                select name="per" {
                    @for p in PER_PAGE {
                        option value=(p) selected[f.per == *p] { (p) }
                    }
                }
            }
            button type="submit" { "Show" }
        }
        form method="post" action="/devices/confirm" {
            input type="hidden" name="csrf" value=(caller.csrf);
            (f.hidden())
            div data-live {
                p #count {
                    (list.total) " device(s) match"
                    @if list.total > 0 {
                        ", showing " (list.offset + 1) "–" (list.offset + list.devices.len())
                    }
                    "."
                }
                div.actions {
                    button type="submit" name="action" value="approve" { "Approve selected" }
                    button type="submit" name="action" value="block" { "Block selected" }
                    button type="submit" name="action" value="unblock" { "Unblock selected" }
                    button.danger type="submit" name="action" value="forget" { "Forget selected" }
                    @if list.total > list.devices.len() {
                        label {
                            input type="checkbox" name="scope" value="all";
                            " all " (list.total) " matching devices, not only this page"
                        }
                    }
                }
                table #devices {
                    caption.muted { "Devices" }
                    thead {
                        tr {
                            th scope="col" { input type="checkbox" data-select-all aria-label="Select every device on this page"; }
                            th scope="col" { "Status" }
                            th scope="col" { "Device" }
                            th scope="col" { "Common name" }
                            th scope="col" { "Expires" }
                            th scope="col" { "Last seen" }
                            th scope="col" { "Last address" }
                            th.num scope="col" { "Connections" }
                            th.num scope="col" { "Refused" }
                            th scope="col" { "Label" }
                        }
                    }
                    tbody {
                        @for d in &list.devices {
                            (row(d))
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if f.offset > 0 {
                a href=(f.url(f.offset.saturating_sub(f.per))) rel="prev" { "← Previous" }
            }
            @if f.offset + list.devices.len() < list.total {
                a href=(f.url(f.offset + f.per)) rel="next" { "Next →" }
            }
        }
    };
    html_response(StatusCode::OK, shell("Devices", "/devices", caller, body))
}

fn row(d: &DeviceView) -> Markup {
    let cn = common_name(&d.subject);
    let refused: u64 = d.refusals.values().sum();
    html! {
        tr {
            td { input type="checkbox" name="id" value=(d.id) aria-label={"Select " (cn)}; }
            td { (status_badge(d.status)) }
            td.mono { a href={"/devices/" (d.id)} { (d.id) } }
            td { (if cn.is_empty() { "-" } else { cn }) }
            td { (if d.not_after > 0 { date(d.not_after) } else { "-".into() }) }
            td { (when(d.last_seen)) }
            td.mono { (d.last_peer.as_deref().unwrap_or("-")) }
            td.num { (d.connections) }
            td.num { (refused) }
            td { (d.label.as_deref().unwrap_or("")) }
        }
    }
}

/// The device ids a bulk form names: the ticked ones, or with
/// `scope=all` every device matching its filter (at most [`MAX_BULK`]).
async fn selected(reg: &Registry, form: &Form) -> Result<Vec<DeviceView>, String> {
    if form.text("scope") == "all" {
        let f = Filter::from(form);
        let mut out = Vec::new();
        loop {
            let page = reg
                .list(f.query(out.len(), 1000))
                .await
                .map_err(|e| e.to_string())?;
            let n = page.devices.len();
            out.extend(page.devices);
            if n == 0 || out.len() >= page.total || out.len() >= MAX_BULK {
                break;
            }
        }
        out.truncate(MAX_BULK);
        return Ok(out);
    }
    let ids = form.all("id").take(MAX_BULK).map(str::to_string).collect();
    let found = reg.get_many(ids).await.map_err(|e| e.to_string())?;
    Ok(found.iter().map(|d| d.view()).collect())
}

/// `POST /devices/confirm`: what the action would do, and a button that
/// does it.
pub(super) async fn confirm(
    ctx: &AdminContext,
    caller: &Caller,
    form: &Form,
) -> Response<Full<Bytes>> {
    let Some(reg) = &ctx.registry else {
        return no_registry(caller);
    };
    let f = Filter::from(form);
    let Some((_, verb, _)) = action(form.text("action")) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Devices",
            "Unknown action.",
            Some(caller),
        );
    };
    let devices = match selected(reg, form).await {
        Ok(d) => d,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, "Devices", &e, Some(caller)),
    };
    if devices.is_empty() {
        let back = format!(
            "{}&{}",
            f.url(f.offset),
            query_string(&[("done", "Select one or more devices first.")])
        );
        return see_other(&back);
    }
    let n = devices.len();
    let title = format!("{verb} {n} device{}?", if n == 1 { "" } else { "s" });
    const SHOWN: usize = 50;
    let body = html! {
        p { "These " (n) " device(s) will be " (action(form.text("action")).map(|a| a.2).unwrap_or("")) ":" }
        ul {
            @for d in devices.iter().take(SHOWN) {
                li { (status_badge(d.status)) " " code { (d.id) } " " (common_name(&d.subject)) }
            }
        }
        @if n > SHOWN {
            p { "… and " (n - SHOWN) " more." }
        }
        form method="post" action="/devices/apply" {
            input type="hidden" name="csrf" value=(caller.csrf);
            input type="hidden" name="action" value=(form.text("action"));
            input type="hidden" name="back" value=(f.url(f.offset));
            @for d in &devices {
                input type="hidden" name="id" value=(d.id);
            }
            div.actions {
                button.primary type="submit" autofocus { (verb) " " (n) " device" (if n == 1 { "" } else { "s" }) }
                a.button href=(f.url(f.offset)) { "Cancel" }
            }
        }
    };
    html_response(StatusCode::OK, shell(&title, "/devices", caller, body))
}

/// `POST /devices/apply`: makes the change (durable and audited under the
/// caller's name) and goes back to the list, saying what was done.
pub(super) async fn apply(
    ctx: &AdminContext,
    caller: &Caller,
    form: &Form,
) -> Response<Full<Bytes>> {
    let Some(reg) = &ctx.registry else {
        return no_registry(caller);
    };
    let Some((change, _, done)) = action(form.text("action")) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Devices",
            "Unknown action.",
            Some(caller),
        );
    };
    let ids: Vec<String> = form.all("id").take(MAX_BULK).map(str::to_string).collect();
    if ids.is_empty() {
        return see_other("/devices");
    }
    let n = ids.len();
    match reg.change(ids, change, &caller.who).await {
        Ok(_) => {
            let back = safe_back(form.text("back"));
            let sep = if back.contains('?') { '&' } else { '?' };
            let msg = format!("{n} device{} {done}.", if n == 1 { "" } else { "s" });
            see_other(&format!("{back}{sep}{}", query_string(&[("done", &msg)])))
        }
        Err(e) => error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not changed",
            &format!("Nothing was changed: {e}"),
            Some(caller),
        ),
    }
}

/// A return address inside the console only (never another site).
pub(super) fn safe_back(back: &str) -> &str {
    if back.starts_with('/') && !back.starts_with("//") && !back.contains('\\') {
        back
    } else {
        "/devices"
    }
}
