//! The device actions: list, show, approve, block, unblock, forget, label,
//! import, export.

use anyhow::{Context as _, bail};
use http::Method;

use crate::registry::{DeviceView, Forecast};

use super::api::{call, encode, resolve};
use super::import::{Import, read_import};
use super::print::{
    print_certificates, print_device, print_device_revocation, print_forecast, print_table,
};
use super::target::Target;

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
        /// One row per certificate.
        certificates: bool,
        /// Page size.
        limit: usize,
        /// Page start.
        offset: usize,
    },
    /// One device in full.
    Show(String),
    /// The expiry forecast of devices active within this time.
    Expiry(String),
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
            certificates,
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
                outln!("{page}");
                return Ok(());
            }
            let devices: Vec<DeviceView> = serde_json::from_value(page["devices"].clone())
                .context("unexpected answer from the admin API")?;
            if certificates {
                print_certificates(&devices);
            } else {
                print_table(&devices);
            }
            let total = page["total"].as_u64().unwrap_or(0);
            outln!(
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
                outln!("{d}");
            } else {
                let revocation = d["revocation"].clone();
                let d: DeviceView = serde_json::from_value(d)?;
                print_device(&d);
                print_device_revocation(&revocation);
            }
        }
        Action::Expiry(active) => {
            let f = call(
                target,
                Method::GET,
                &format!("/api/devices/expiry?active={}", encode(&active)),
                None,
            )
            .await?;
            if as_json {
                outln!("{f}");
            } else {
                let f: Forecast =
                    serde_json::from_value(f).context("unexpected answer from the admin API")?;
                print_forecast(&f);
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
        Action::Import(path) => match read_import(&path)? {
            Import::Devices(devices) => {
                let devices = devices.as_array().cloned().unwrap_or_default();
                // In batches: the admin API takes bodies of a few MiB.
                for batch in devices.chunks(500) {
                    let r = call(
                        target,
                        Method::POST,
                        "/api/devices/import",
                        Some(serde_json::json!({ "devices": batch })),
                    )
                    .await?;
                    report(&r, "imported", as_json)?;
                }
            }
            Import::Certificates(ders) => {
                use base64::Engine as _;
                for batch in ders.chunks(500) {
                    let certs: Vec<String> = batch
                        .iter()
                        .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
                        .collect();
                    let r = call(
                        target,
                        Method::POST,
                        "/api/devices/approve",
                        Some(serde_json::json!({ "certificates": certs })),
                    )
                    .await?;
                    report(&r, "approved (imported)", as_json)?;
                }
            }
            Import::Fingerprints(fps) => {
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
        },
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
            outln!("{}", serde_json::Value::Array(all));
        }
    }
    Ok(())
}

pub(super) async fn change(
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

pub(super) fn report(r: &serde_json::Value, done: &str, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        outln!("{r}");
        return Ok(());
    }
    let devices: Vec<DeviceView> = serde_json::from_value(r["devices"].clone()).unwrap_or_default();
    for d in &devices {
        outln!("{done}: device {} {} {}", d.id, d.fingerprint, d.subject);
    }
    Ok(())
}
