//! The audit log, newest first: every admin change with who made it,
//! filtered by who and action; and one device's trail.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use maud::{Markup, html};

use crate::registry::Registry;

use super::super::context::AdminContext;
use super::super::sessions::Caller;
use super::form::Form;
use super::layout::{common_name, error_page, html_response, page as shell, query_string, when};

/// The newest part of the log that is read (the file is append-only and
/// may be years long; older lines stay in the file for `grep`).
const TAIL_BYTES: u64 = 32 << 20;
const PER_PAGE: usize = 100;

/// One audit line.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    time: i64,
    who: String,
    action: String,
    device: String,
    subject: String,
    detail: String,
}

fn parse(line: &str) -> Option<Entry> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let detail = match v["action"].as_str() {
        Some("label") => format!("label: {}", v["label"].as_str().unwrap_or("(cleared)")),
        Some("renewal") => format!("renewed: new certificate {}", s("fingerprint")),
        _ => String::new(),
    };
    Some(Entry {
        time: v["time"].as_i64().unwrap_or(0),
        who: s("who"),
        action: s("action"),
        device: s("device"),
        subject: s("subject"),
        detail,
    })
}

/// The log's newest lines, newest first.
async fn read(path: PathBuf) -> Result<Vec<Entry>, String> {
    tokio::task::spawn_blocking(move || {
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: cannot be read ({e})", path.display())),
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(TAIL_BYTES);
        f.seek(SeekFrom::Start(start))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut text = String::new();
        f.take(TAIL_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let lines = text.lines();
        // A tail that starts mid-line: its first line is partial.
        let skip = usize::from(start > 0);
        let mut entries: Vec<Entry> = lines.skip(skip).filter_map(parse).collect();
        entries.reverse();
        Ok(entries)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The trail of one device, newest first.
pub(super) async fn for_device(reg: &Registry, id: &str) -> Vec<Entry> {
    read(reg.audit_path().to_path_buf())
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.device == id)
        .take(200)
        .collect()
}

/// A table of audit entries.
pub(super) fn table(entries: &[Entry]) -> Markup {
    html! {
        @if entries.is_empty() {
            p.muted { "No changes recorded." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Action" }
                    th scope="col" { "Device" } th scope="col" { "Common name" } th scope="col" { "Detail" }
                } }
                tbody {
                    @for e in entries {
                        tr {
                            td { (when(Some(e.time))) }
                            td { (e.who) }
                            td { (e.action) }
                            td.mono { a href={"/devices/" (e.device)} { (e.device) } }
                            td { (common_name(&e.subject)) }
                            td { (e.detail) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /audit?who=&action=&offset=`.
pub(super) async fn page(
    ctx: &AdminContext,
    caller: &Caller,
    query: &Form,
) -> Response<Full<Bytes>> {
    let Some(reg) = &ctx.registry else {
        return error_page(
            StatusCode::NOT_FOUND,
            "No device registry",
            "This gateway has no [registry] table, so nothing is audited.",
            Some(caller),
        );
    };
    let all = match read(reg.audit_path().to_path_buf()).await {
        Ok(a) => a,
        Err(e) => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Audit log",
                &e,
                Some(caller),
            );
        }
    };
    let who = query.text("who");
    let action = query.text("action");
    let offset: usize = query.text("offset").parse().unwrap_or(0);
    let mut whos: Vec<&str> = all.iter().map(|e| e.who.as_str()).collect();
    whos.sort_unstable();
    whos.dedup();
    let mut actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    actions.sort_unstable();
    actions.dedup();
    let matching: Vec<Entry> = all
        .iter()
        .filter(|e| who.is_empty() || e.who == who)
        .filter(|e| action.is_empty() || e.action == action)
        .cloned()
        .collect();
    let shown: Vec<Entry> = matching
        .iter()
        .skip(offset)
        .take(PER_PAGE)
        .cloned()
        .collect();
    let url = |o: usize| {
        let o = o.to_string();
        format!(
            "/audit?{}",
            query_string(&[("who", who), ("action", action), ("offset", &o)])
        )
    };
    let body = html! {
        form.filters method="get" action="/audit" {
            label { "Who"
                select name="who" {
                    option value="" selected[who.is_empty()] { "anyone" }
                    @for w in &whos { option value=(w) selected[*w == who] { (w) } }
                }
            }
            label { "Action"
                select name="action" {
                    option value="" selected[action.is_empty()] { "any" }
                    @for a in &actions { option value=(a) selected[*a == action] { (a) } }
                }
            }
            button type="submit" { "Show" }
        }
        p { (matching.len()) " change(s)" @if !shown.is_empty() { ", showing " (offset + 1) "–" (offset + shown.len()) } "." }
        (table(&shown))
        nav.pager aria-label="Pages" {
            @if offset > 0 { a href=(url(offset.saturating_sub(PER_PAGE))) rel="prev" { "← Newer" } }
            @if offset + shown.len() < matching.len() { a href=(url(offset + PER_PAGE)) rel="next" { "Older →" } }
        }
        p.muted { "The log file: " code { (reg.audit_path().display()) } " (one JSON line per change)." }
    };
    html_response(StatusCode::OK, shell("Audit log", "/audit", caller, body))
}
