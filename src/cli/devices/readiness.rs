//! `certgate readiness`: the readiness report of a listener (or of each).

use http::Method;

use super::api::{call, encode};
use super::print::{cut, short, when};
use super::target::Target;

/// `certgate readiness`: the readiness report of a listener (every
/// listener without one), as tables.
pub(crate) async fn readiness(
    target: &Target,
    listener: Option<&str>,
    window: &str,
    as_json: bool,
) -> anyhow::Result<()> {
    let path = match listener {
        Some(l) => format!(
            "/api/readiness?listener={}&window={}",
            encode(l),
            encode(window)
        ),
        None => format!("/api/readiness?window={}", encode(window)),
    };
    let r = call(target, Method::GET, &path, None).await?;
    if as_json {
        outln!("{r}");
        return Ok(());
    }
    match r["listeners"].as_array() {
        Some(all) => {
            for (i, one) in all.iter().enumerate() {
                if i > 0 {
                    outln!();
                }
                print_report(one, window);
            }
        }
        None => print_report(&r, window),
    }
    Ok(())
}

/// One listener's report.
fn print_report(r: &serde_json::Value, window: &str) {
    let listener = r["listener"].as_str().unwrap_or("?");
    let mode = r["mode"].as_str().unwrap_or("");
    let total = r["total"].as_u64().unwrap_or(0);
    outln!(
        "Listener \"{listener}\" (mode = \"{mode}\"), last {window}: {total} connection attempt(s)"
    );
    let instances: Vec<&str> = r["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str())
        .collect();
    if !instances.is_empty() {
        outln!(
            "Counted on {} gateway(s) sharing the registry: {}",
            instances.len(),
            instances.join(", ")
        );
    }
    outln!();
    outln!("{:<16} {:>8} {:>8}", "STATUS", "COUNT", "SHARE");
    for s in r["by_status"].as_array().into_iter().flatten() {
        outln!(
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
        outln!("failed by reason: {}", reasons.join(", "));
    }
    let refuse = r["would_refuse"].as_array().cloned().unwrap_or_default();
    outln!();
    // The words follow the mode: an enforcing listener refuses these
    // clients now; an observing one would refuse them once enforcing.
    let enforcing = mode == "required";
    if refuse.is_empty() {
        if enforcing {
            outln!("No client seen in this window was refused.");
        } else {
            outln!("Enforcing (mode = \"required\") would refuse no client seen in this window.");
        }
    } else {
        if enforcing {
            outln!(
                "Refused now (mode = \"required\"): {} client(s):",
                refuse.len()
            );
        } else {
            outln!(
                "Enforcing (mode = \"required\") would refuse {} client(s):",
                refuse.len()
            );
        }
        outln!(
            "{:<15} {:<18} {:<16} {:<32} {:>8}  LAST SEEN",
            "STATUS",
            "REASON",
            "FINGERPRINT",
            "SUBJECT",
            "ATTEMPTS"
        );
        for c in &refuse {
            outln!(
                "{:<15} {:<18} {:<16} {:<32} {:>8}  {} from {}",
                c["status"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or("?"),
                c["fingerprint"].as_str().map_or("-".to_string(), short),
                cut(
                    &super::print::cn_first(c["subject"].as_str().unwrap_or("-")),
                    32
                ),
                c["attempts"].as_u64().unwrap_or(0),
                when(c["last_seen"].as_i64()),
                match c["instance"].as_str() {
                    Some(i) => format!("{} on {i}", c["peer"].as_str().unwrap_or("?")),
                    None => c["peer"].as_str().unwrap_or("?").to_string(),
                },
            );
        }
    }
    if refuse
        .iter()
        .any(|c| c["refused_now"].as_bool() == Some(true))
    {
        outln!(
            "Status \"blocked\": blocked by an admin; refused now in every mode, observe included."
        );
    }
    let legacy = r["legacy_sources"].as_array().cloned().unwrap_or_default();
    if !legacy.is_empty() {
        outln!();
        outln!("Sources whose TLS stack needs an upgrade (or the plain-HTTP port):");
        for l in &legacy {
            outln!(
                "  {} offered at most {} ({} attempt(s), last {})",
                l["peer"].as_str().unwrap_or("?"),
                l["version"].as_str().unwrap_or("?"),
                l["attempts"].as_u64().unwrap_or(0),
                when(l["last_seen"].as_i64())
            );
        }
    }
    let needs = r["needs_certificate"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !needs.is_empty() {
        outln!();
        outln!(
            "Sources whose TLS stack needs a certificate key type this listener does not serve:"
        );
        for n in &needs {
            outln!(
                "  {} needs an {} certificate ({} attempt(s), last {})",
                n["peer"].as_str().unwrap_or("?"),
                n["needs"].as_str().unwrap_or("?"),
                n["attempts"].as_u64().unwrap_or(0),
                when(n["last_seen"].as_i64())
            );
        }
        for w in r["would_admit"].as_array().into_iter().flatten() {
            outln!(
                "Adding an {} certificate for the same names would admit {} of them.",
                w["key_type"].as_str().unwrap_or("?"),
                w["sources"].as_u64().unwrap_or(0)
            );
        }
    }
}
