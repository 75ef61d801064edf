//! The readiness page: per listener and window, how clients authenticate
//! (the chart and its table), who enforcing would refuse (or is refusing
//! now), failures by reason, and legacy sources.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use maud::html;

use super::super::context::AdminContext;
use super::super::readiness::{Missing, reports};
use super::super::sessions::Caller;
use super::chart::chart;
use super::form::Form;
use super::layout::{error_page, html_response, page as shell, when};

/// Windows offered: (query value, seconds, words).
const WINDOWS: &[(&str, i64, &str)] = &[
    ("1h", 3600, "last hour"),
    ("24h", 86_400, "last day"),
    ("7d", 7 * 86_400, "last 7 days"),
];

/// `GET /readiness?listener=&window=`.
pub(super) async fn page(
    ctx: &AdminContext,
    caller: &Caller,
    query: &Form,
) -> Response<Full<Bytes>> {
    let window = WINDOWS
        .iter()
        .find(|(v, _, _)| *v == query.text("window"))
        .copied()
        .unwrap_or(WINDOWS[1]);
    let listener = Some(query.text("listener")).filter(|l| !l.is_empty());
    let all = match reports(ctx, listener, window.1).await {
        Ok(r) => r,
        Err(Missing::Off) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "Readiness",
                "Readiness tracking is off.",
                Some(caller),
            );
        }
        Err(Missing::Listener(e)) => {
            return error_page(StatusCode::NOT_FOUND, "Readiness", &e, Some(caller));
        }
    };
    let names: Vec<String> = ctx
        .view
        .load()
        .modes
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    let body = html! {
        form.filters method="get" action="/readiness" {
            label { "Listener"
                select name="listener" {
                    option value="" selected[listener.is_none()] { "all" }
                    @for n in &names { option value=(n) selected[listener == Some(n.as_str())] { (n) } }
                }
            }
            label { "Window"
                select name="window" {
                    @for (v, _, words) in WINDOWS { option value=(v) selected[*v == window.0] { (words) } }
                }
            }
            button type="submit" { "Show" }
        }
        @for (i, r) in all.iter().enumerate() {
            section aria-labelledby={"listener-" (i)} data-listener=(r.listener) {
                h2 id={"listener-" (i)} { "Listener " (r.listener) " " span.muted { "(mode = \"" (r.mode) "\", " (window.2) ")" } }
                (chart(r, &i.to_string()))
                table {
                    caption.muted { "The chart's numbers" }
                    thead { tr { th scope="col" { "How clients authenticated" } th.num scope="col" { "Attempts" } th.num scope="col" { "Share" } } }
                    tbody {
                        @for s in &r.by_status {
                            tr { td { (s.status.as_str().replace('_', " ")) } td.num { (s.count) } td.num { (format!("{:.1}%", s.percent)) } }
                        }
                    }
                }
                @if !r.failed_reasons.is_empty() {
                    h2 { "Failed, by reason" }
                    table {
                        thead { tr { th scope="col" { "Reason" } th.num scope="col" { "Attempts" } } }
                        tbody { @for (reason, n) in &r.failed_reasons { tr { td { (reason) } td.num { (n) } } } }
                    }
                }
                @if !r.instances.is_empty() {
                    p data-instances=(r.instances.join(",")) {
                        "Counted on " (r.instances.len()) " gateway(s) sharing the registry: " (r.instances.join(", ")) "."
                    }
                }
                @let n = r.would_refuse.len();
                p.notice data-would-refuse=(n) {
                    @if r.mode == "required" {
                        "Refused now: " strong { (n) } " client(s)."
                    } @else {
                        "Enforcing now (mode = \"required\") would refuse " strong { (n) } " client(s)."
                    }
                }
                @if n > 0 {
                    table {
                        thead { tr {
                            th scope="col" { "Status" } th scope="col" { "Reason" } th scope="col" { "Device" }
                            th scope="col" { "Subject" } th scope="col" { "Last address" } th.num scope="col" { "Attempts" } th scope="col" { "Last seen" }
                        } }
                        tbody {
                            @for c in &r.would_refuse {
                                tr {
                                    td { (c.status.as_str().replace('_', " ")) }
                                    td { (c.reason) }
                                    td.mono {
                                        @match &c.fingerprint {
                                            Some(fp) => a href={"/devices/" (fp)} { (fp.get(..16).unwrap_or(fp)) },
                                            None => "-",
                                        }
                                    }
                                    td { (c.subject.as_deref().unwrap_or("-")) }
                                    td.mono { (c.peer) @if !c.instance.is_empty() { " on " (c.instance) } }
                                    td.num { (c.attempts) }
                                    td { (when(Some(c.last_seen))) }
                                }
                            }
                        }
                    }
                }
                @if !r.legacy_sources.is_empty() {
                    h2 { "Legacy sources (agent upgrade required)" }
                    table {
                        thead { tr { th scope="col" { "Address" } th scope="col" { "Offered" } th.num scope="col" { "Attempts" } th scope="col" { "Last seen" } } }
                        tbody {
                            @for l in &r.legacy_sources {
                                tr { td.mono { (l.peer) } td { (l.version) } td.num { (l.attempts) } td { (when(Some(l.last_seen))) } }
                            }
                        }
                    }
                }
            }
        }
    };
    html_response(
        StatusCode::OK,
        shell("Readiness", "/readiness", caller, body),
    )
}
