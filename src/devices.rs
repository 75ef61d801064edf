//! `certgate devices ...`: the command-line client of the admin device API
//! of a running gateway. Tables for people, `--json` for scripts.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::config::Settings;
use crate::registry::{Device, parse_fingerprint};

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Admin listener address.
    pub addr: SocketAddr,
    /// Bearer token, if the gateway has a token file.
    pub token: Option<String>,
}

impl Target {
    /// From the gateway's config file: `[admin] listen` (a wildcard address
    /// is reached on loopback) and the first token of `token_file`.
    pub(crate) fn from_config(path: &Path) -> anyhow::Result<Target> {
        let settings = Settings::load(path)?;
        let admin = settings.admin.as_ref().ok_or_else(|| {
            anyhow!(
                "{} has no [admin] table; the devices command talks to the admin API",
                path.display()
            )
        })?;
        let mut addr = admin.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let token = match &admin.token_file {
            Some(t) => Some(first_token(&t.resolved)?),
            None => None,
        };
        Ok(Target { addr, token })
    }
}

/// The first token of a token file (`name:token` lines).
pub(crate) fn first_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once(':').map_or(l, |(_, t)| t).trim().to_string())
        .ok_or_else(|| anyhow!("token file {} contains no token", path.display()))
}

/// One `certgate devices` action.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// List devices.
    List {
        /// Only this status.
        status: Option<String>,
        /// Text search.
        search: Option<String>,
        /// e.g. `30d`.
        expiring: Option<String>,
        /// Page size.
        limit: usize,
        /// Page start.
        offset: usize,
    },
    /// One device in full.
    Show(String),
    /// Approve devices.
    Approve(Vec<String>),
    /// Block devices.
    Block(Vec<String>),
    /// Back to pending.
    Unblock(Vec<String>),
    /// Delete a record.
    Forget(String),
    /// Set (empty: clear) a label.
    Label(String, String),
    /// Pre-approve fingerprints or PEM certificates from a file.
    Import(std::path::PathBuf),
    /// Every device as JSON.
    Export,
}

/// Runs one action against `target`, printing to stdout.
pub(crate) async fn run(target: &Target, action: Action, as_json: bool) -> anyhow::Result<()> {
    match action {
        Action::List {
            status,
            search,
            expiring,
            limit,
            offset,
        } => {
            let mut q = vec![format!("limit={limit}"), format!("offset={offset}")];
            if let Some(s) = status {
                q.push(format!("status={}", encode(&s)));
            }
            if let Some(s) = search {
                q.push(format!("q={}", encode(&s)));
            }
            if let Some(e) = expiring {
                q.push(format!("expiring={}", encode(&e)));
            }
            let page = call(
                target,
                Method::GET,
                &format!("/api/devices?{}", q.join("&")),
                None,
            )
            .await?;
            if as_json {
                println!("{page}");
                return Ok(());
            }
            let devices: Vec<Device> = serde_json::from_value(page["devices"].clone())
                .context("unexpected answer from the admin API")?;
            print_table(&devices);
            let total = page["total"].as_u64().unwrap_or(0);
            println!(
                "{} of {total} device(s){}",
                devices.len(),
                if (offset + devices.len()) < total as usize {
                    format!("; more with --offset {}", offset + devices.len())
                } else {
                    String::new()
                }
            );
        }
        Action::Show(fp) => {
            let fp = resolve(target, &fp).await?;
            let d = call(target, Method::GET, &format!("/api/devices/{fp}"), None).await?;
            if as_json {
                println!("{d}");
            } else {
                let d: Device = serde_json::from_value(d)?;
                print_device(&d);
            }
        }
        Action::Approve(fps) => change(target, "approve", fps, as_json).await?,
        Action::Block(fps) => change(target, "block", fps, as_json).await?,
        Action::Unblock(fps) => change(target, "unblock", fps, as_json).await?,
        Action::Forget(fp) => {
            let fp = resolve(target, &fp).await?;
            let r = call(target, Method::DELETE, &format!("/api/devices/{fp}"), None).await?;
            report(&r, "forgotten", as_json)?;
        }
        Action::Label(fp, label) => {
            let fp = resolve(target, &fp).await?;
            let body = if label.is_empty() {
                serde_json::json!({"label": null})
            } else {
                serde_json::json!({"label": label})
            };
            let r = call(
                target,
                Method::POST,
                &format!("/api/devices/{fp}/label"),
                Some(body),
            )
            .await?;
            report(&r, "labelled", as_json)?;
        }
        Action::Import(path) => {
            let fps = read_import(&path)?;
            if fps.is_empty() {
                bail!(
                    "{} contains no fingerprint and no PEM certificate",
                    path.display()
                );
            }
            let r = call(
                target,
                Method::POST,
                "/api/devices/approve",
                Some(serde_json::json!({"fingerprints": fps})),
            )
            .await?;
            report(&r, "approved (imported)", as_json)?;
        }
        Action::Export => {
            let mut all = Vec::new();
            let mut offset = 0;
            loop {
                let page = call(
                    target,
                    Method::GET,
                    &format!("/api/devices?limit=1000&offset={offset}"),
                    None,
                )
                .await?;
                let devices = page["devices"].as_array().cloned().unwrap_or_default();
                let n = devices.len();
                all.extend(devices);
                offset += n;
                if n == 0 || offset as u64 >= page["total"].as_u64().unwrap_or(0) {
                    break;
                }
            }
            println!("{}", serde_json::Value::Array(all));
        }
    }
    Ok(())
}

async fn change(
    target: &Target,
    action: &str,
    fps: Vec<String>,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut full = Vec::new();
    for fp in &fps {
        full.push(resolve(target, fp).await?);
    }
    let r = call(
        target,
        Method::POST,
        &format!("/api/devices/{action}"),
        Some(serde_json::json!({"fingerprints": full})),
    )
    .await?;
    let done = match action {
        "approve" => "approved",
        "block" => "blocked",
        _ => "unblocked (back to pending)",
    };
    report(&r, done, as_json)
}

fn report(r: &serde_json::Value, done: &str, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{r}");
        return Ok(());
    }
    let devices: Vec<Device> = serde_json::from_value(r["devices"].clone()).unwrap_or_default();
    for d in &devices {
        println!("{done}: {} {}", d.fingerprint, d.subject);
    }
    Ok(())
}

/// A full fingerprint from a full one or a unique prefix (as the table
/// shows them).
async fn resolve(target: &Target, given: &str) -> anyhow::Result<String> {
    if let Some(fp) = parse_fingerprint(given) {
        return Ok(fp);
    }
    let prefix = given.trim().to_ascii_lowercase().replace(':', "");
    if prefix.len() < 6 || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!(
            "\"{given}\" is not a fingerprint; give the 64 hex digits, or a unique prefix of at least 6"
        );
    }
    let page = call(
        target,
        Method::GET,
        &format!("/api/devices?q={prefix}&limit=1000"),
        None,
    )
    .await?;
    let matches: Vec<String> = page["devices"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["fingerprint"].as_str())
                .filter(|f| f.starts_with(&prefix))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no device fingerprint starts with {prefix}"),
        many => bail!(
            "{prefix} matches {} devices ({}); give more digits",
            many.len(),
            many.join(", ")
        ),
    }
}

/// Fingerprints from a file: PEM certificates (fingerprint of each), or
/// lines of hex fingerprints (`#` comments, colons allowed).
pub(crate) fn read_import(path: &Path) -> anyhow::Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    if bytes
        .windows(27)
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        for (i, c) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
            let c = c.with_context(|| {
                format!("{}: certificate #{} is malformed", path.display(), i + 1)
            })?;
            out.push(crate::identity::sha256_hex(&c));
        }
        return Ok(out);
    }
    let text = String::from_utf8_lossy(&bytes);
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        // Allow "fingerprint<whitespace>anything" (e.g. an exported list).
        let word = line.split_whitespace().next().unwrap_or("");
        let fp = parse_fingerprint(word).ok_or_else(|| {
            anyhow!(
                "{} line {}: \"{word}\" is not a SHA-256 fingerprint (64 hex digits)",
                path.display(),
                i + 1
            )
        })?;
        out.push(fp);
    }
    Ok(out)
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One admin API call; the JSON answer, or an error carrying the API's
/// message.
async fn call(
    target: &Target,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let tcp = tokio::net::TcpStream::connect(target.addr).await.with_context(|| {
        format!(
            "cannot reach the certgate admin API at {}; is certgate running with [admin] listen = \"{}\"?",
            target.addr, target.addr
        )
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, target.addr.to_string());
    if let Some(t) = &target.token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = match body {
        Some(b) => {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
            Bytes::from(b.to_string())
        }
        None => Bytes::new(),
    };
    let resp = sender.send_request(req.body(Full::new(body))?).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(
        |_| serde_json::json!({"error": String::from_utf8_lossy(&bytes).trim().to_string()}),
    );
    if status == StatusCode::UNAUTHORIZED {
        bail!(
            "the admin API refused the token (401); pass --config with the gateway's config, or --token-file"
        );
    }
    if !status.is_success() {
        bail!(
            "{}: {}",
            status,
            value["error"].as_str().unwrap_or("request failed")
        );
    }
    Ok(value)
}

fn when(t: Option<i64>) -> String {
    match t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok()) {
        Some(dt) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        ),
        None => "-".into(),
    }
}

/// The first 16 characters of a fingerprint, as the tables show it (by
/// character: the answer comes from the network).
fn short(fp: &str) -> String {
    fp.chars().take(16).collect()
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn print_table(devices: &[Device]) {
    println!(
        "{:<9} {:<16} {:<32} {:<20} {:<15} {:>6} {:>7}  LABEL",
        "STATUS", "FINGERPRINT", "SUBJECT", "LAST SEEN", "LAST PEER", "CONNS", "REFUSED"
    );
    for d in devices {
        println!(
            "{:<9} {:<16} {:<32} {:<20} {:<15} {:>6} {:>7}  {}",
            d.status.as_str(),
            short(&d.fingerprint),
            cut(
                if d.subject.is_empty() {
                    "(not seen yet)"
                } else {
                    &d.subject
                },
                32
            ),
            when(d.last_seen),
            d.last_peer.as_deref().unwrap_or("-"),
            d.connections,
            d.refusals.values().sum::<u64>(),
            d.label.as_deref().unwrap_or("")
        );
    }
}

fn print_device(d: &Device) {
    let rows: Vec<(&str, String)> = vec![
        ("fingerprint", d.fingerprint.clone()),
        ("status", d.status.as_str().into()),
        ("subject", d.subject.clone()),
        ("issuer", d.issuer.clone()),
        ("serial", d.serial.clone()),
        ("SANs", d.sans.join(", ")),
        (
            "valid from",
            when((d.not_before != 0).then_some(d.not_before)),
        ),
        (
            "valid until",
            when((d.not_after != 0).then_some(d.not_after)),
        ),
        ("first seen", when(d.first_seen)),
        ("last seen", when(d.last_seen)),
        (
            "last peer",
            d.last_peer.clone().unwrap_or_else(|| "-".into()),
        ),
        ("connections", d.connections.to_string()),
        (
            "refusals",
            d.refusals
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("label", d.label.clone().unwrap_or_default()),
        (
            "changed",
            match (&d.changed_by, d.changed_at) {
                (Some(by), at) => format!("{} by {by}", when(at)),
                _ => "-".into(),
            },
        ),
    ];
    for (k, v) in rows {
        println!("{k:<12} {v}");
    }
}

/// `certgate readiness`: the readiness report of a listener, as a table.
pub(crate) async fn readiness(
    target: &Target,
    listener: &str,
    window: &str,
    as_json: bool,
) -> anyhow::Result<()> {
    let r = call(
        target,
        Method::GET,
        &format!(
            "/api/readiness?listener={}&window={}",
            encode(listener),
            encode(window)
        ),
        None,
    )
    .await?;
    if as_json {
        println!("{r}");
        return Ok(());
    }
    let total = r["total"].as_u64().unwrap_or(0);
    println!("Listener \"{listener}\", last {window}: {total} connection attempt(s)");
    println!();
    println!("{:<16} {:>8} {:>8}", "STATUS", "COUNT", "SHARE");
    for s in r["by_status"].as_array().into_iter().flatten() {
        println!(
            "{:<16} {:>8} {:>7.1}%",
            s["status"].as_str().unwrap_or("?"),
            s["count"].as_u64().unwrap_or(0),
            s["percent"].as_f64().unwrap_or(0.0)
        );
    }
    let reasons: Vec<String> = r["failed_reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{} {}",
                p[0].as_str().unwrap_or("?"),
                p[1].as_u64().unwrap_or(0)
            )
        })
        .collect();
    if !reasons.is_empty() {
        println!("failed by reason: {}", reasons.join(", "));
    }
    let refuse = r["would_refuse"].as_array().cloned().unwrap_or_default();
    println!();
    if refuse.is_empty() {
        println!("Enforcing now (mode = \"required\") would refuse no client seen in this window.");
    } else {
        println!(
            "Enforcing now (mode = \"required\") would refuse {} client(s):",
            refuse.len()
        );
        println!(
            "{:<15} {:<18} {:<16} {:<32} {:>8}  LAST SEEN",
            "STATUS", "REASON", "FINGERPRINT", "SUBJECT", "ATTEMPTS"
        );
        for c in &refuse {
            println!(
                "{:<15} {:<18} {:<16} {:<32} {:>8}  {} from {}",
                c["status"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or("?"),
                c["fingerprint"].as_str().map_or("-".to_string(), short),
                cut(c["subject"].as_str().unwrap_or("-"), 32),
                c["attempts"].as_u64().unwrap_or(0),
                when(c["last_seen"].as_i64()),
                c["peer"].as_str().unwrap_or("?"),
            );
        }
    }
    if refuse
        .iter()
        .any(|c| c["refused_now"].as_bool() == Some(true))
    {
        println!(
            "Status \"blocked\": blocked by an admin; refused now in every mode, observe included."
        );
    }
    let legacy = r["legacy_sources"].as_array().cloned().unwrap_or_default();
    if !legacy.is_empty() {
        println!();
        println!(
            "Sources that offered only an old protocol (need the plain-HTTP port or an upgrade):"
        );
        for l in &legacy {
            println!(
                "  {} offered at most {} ({} attempt(s), last {})",
                l["peer"].as_str().unwrap_or("?"),
                l["version"].as_str().unwrap_or("?"),
                l["attempts"].as_u64().unwrap_or(0),
                when(l["last_seen"].as_i64())
            );
        }
    }
    Ok(())
}
