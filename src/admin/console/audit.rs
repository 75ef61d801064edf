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

/// The fields of an audit line the console shows, borrowed from the line
/// (a page parses up to [`TAIL_BYTES`] of them: no map, no copy of what
/// it skips).
#[derive(serde::Deserialize)]
struct Line<'a> {
    #[serde(default)]
    time: i64,
    #[serde(borrow, default)]
    who: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    action: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    device: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    subject: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    label: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    fingerprint: std::borrow::Cow<'a, str>,
}

fn parse(line: &str) -> Option<Entry> {
    let l: Line<'_> = serde_json::from_str(line).ok()?;
    let detail = match &*l.action {
        "label" => format!("label: {}", l.label.as_deref().unwrap_or("(cleared)")),
        "renewal" => format!("renewed: new certificate {}", l.fingerprint),
        _ => String::new(),
    };
    Some(Entry {
        time: l.time,
        who: l.who.into_owned(),
        action: l.action.into_owned(),
        device: l.device.into_owned(),
        subject: l.subject.into_owned(),
        detail,
    })
}

/// The newest [`TAIL_BYTES`] of the log, whole lines only (an absent log
/// is empty).
fn tail(path: &std::path::Path) -> Result<String, String> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(format!("{}: cannot be read ({e})", path.display())),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(start))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(TAIL_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // A tail that starts mid-line: its first line is partial.
    if start > 0 {
        let cut = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..cut);
    }
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// What the audit page shows: who and which actions occur (for the
/// filters), how many lines match, and the page of them, newest first.
#[derive(Debug, Default)]
struct Summary {
    whos: std::collections::BTreeSet<String>,
    actions: std::collections::BTreeSet<String>,
    total: usize,
    shown: Vec<Entry>,
}

/// Scans the tail once, newest first; only the shown lines are copied.
async fn summarize(
    path: PathBuf,
    who: String,
    action: String,
    offset: usize,
) -> Result<Summary, String> {
    tokio::task::spawn_blocking(move || {
        let text = tail(&path)?;
        let mut out = Summary::default();
        for line in text.lines().rev() {
            let Ok(l) = serde_json::from_str::<Line<'_>>(line) else {
                continue;
            };
            if !out.whos.contains(&*l.who) {
                out.whos.insert(l.who.to_string());
            }
            if !out.actions.contains(&*l.action) {
                out.actions.insert(l.action.to_string());
            }
            if (who.is_empty() || l.who == who) && (action.is_empty() || l.action == action) {
                if out.total >= offset && out.shown.len() < PER_PAGE {
                    out.shown.extend(parse(line));
                }
                out.total += 1;
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The trail of one device, newest first (its 200 latest changes).
pub(super) async fn for_device(reg: &Registry, id: &str) -> Vec<Entry> {
    let path = reg.audit_path().to_path_buf();
    let id = id.to_string();
    tokio::task::spawn_blocking(move || {
        let text = tail(&path).unwrap_or_default();
        // Only lines naming the device are parsed.
        let needle = format!("\"{id}\"");
        text.lines()
            .rev()
            .filter(|l| l.contains(&needle))
            .filter_map(parse)
            .filter(|e| e.device == id)
            .take(200)
            .collect()
    })
    .await
    .unwrap_or_default()
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
    let who = query.text("who");
    let action = query.text("action");
    let offset: usize = query.text("offset").parse().unwrap_or(0);
    let summary = match summarize(
        reg.audit_path().to_path_buf(),
        who.to_string(),
        action.to_string(),
        offset,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Audit log",
                &e,
                Some(caller),
            );
        }
    };
    let Summary {
        whos,
        actions,
        total,
        shown,
    } = summary;
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
                    @for w in &whos { option value=(w) selected[w == who] { (w) } }
                }
            }
            label { "Action"
                select name="action" {
                    option value="" selected[action.is_empty()] { "any" }
                    @for a in &actions { option value=(a) selected[a == action] { (a) } }
                }
            }
            button type="submit" { "Show" }
        }
        p { (total) " change(s)" @if !shown.is_empty() { ", showing " (offset + 1) "–" (offset + shown.len()) } "." }
        (table(&shown))
        nav.pager aria-label="Pages" {
            @if offset > 0 { a href=(url(offset.saturating_sub(PER_PAGE))) rel="prev" { "← Newer" } }
            @if offset + shown.len() < total { a href=(url(offset + PER_PAGE)) rel="next" { "Older →" } }
        }
        p.muted { "The log file: " code { (reg.audit_path().display()) } " (one JSON line per change)." }
    };
    html_response(StatusCode::OK, shell("Audit log", "/audit", caller, body))
}
