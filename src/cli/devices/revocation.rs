//! `certgate revocation`: the CRLs in force and each fetched source.

use http::Method;

use super::api::call;
use super::print::{cut, when};
use super::target::Target;

/// `certgate revocation`: per listener, the CRLs in force (issuer, number,
/// nextUpdate, entries, delta) and each fetched source's last result.
pub(crate) async fn revocation(target: &Target, as_json: bool) -> anyhow::Result<()> {
    let r = call(target, Method::GET, "/api/revocation", None).await?;
    if as_json {
        outln!("{r}");
        return Ok(());
    }
    let listeners = r["listeners"].as_array().cloned().unwrap_or_default();
    if listeners.is_empty() {
        outln!("No listener checks client certificates.");
    }
    for l in listeners {
        outln!(
            "Listener \"{}\" (crl_stale = {}, require_crl = {}, ocsp = {})",
            l["listener"].as_str().unwrap_or("?"),
            l["crl_stale"].as_str().unwrap_or("?"),
            l["require_crl"],
            l["ocsp"]["mode"].as_str().unwrap_or("off")
        );
        outln!(
            "  {:<32} {:>8} {:<21} {:>7} {:<6} SOURCE",
            "ISSUER",
            "NUMBER",
            "NEXT UPDATE",
            "ENTRIES",
            "DELTA"
        );
        let crls = l["crls"].as_array().cloned().unwrap_or_default();
        if crls.is_empty() {
            outln!("  (no CRL loaded: devices are not checked against a CRL)");
        }
        for c in crls {
            let next = when(c["next_update"].as_i64());
            let next = if c["stale"].as_bool() == Some(true) {
                format!("{next} STALE")
            } else {
                next
            };
            outln!(
                "  {:<32} {:>8} {:<21} {:>7} {:<6} {}",
                cut(c["issuer"].as_str().unwrap_or("?"), 32),
                c["number"].as_str().unwrap_or("-"),
                next,
                c["entries"].as_u64().unwrap_or(0),
                c["delta"]["number"].as_str().unwrap_or("-"),
                c["source"].as_str().unwrap_or("?")
            );
        }
        let sources = l["sources"].as_array().cloned().unwrap_or_default();
        if !sources.is_empty() {
            outln!();
            outln!(
                "  {:<44} {:<14} {:<21} {:<21}",
                "FETCHED FROM",
                "LAST RESULT",
                "LAST ATTEMPT",
                "LAST SUCCESS"
            );
            for s in sources {
                outln!(
                    "  {:<44} {:<14} {:<21} {:<21}",
                    cut(s["url"].as_str().unwrap_or("?"), 44),
                    s["result"].as_str().unwrap_or("?"),
                    when(s["last_attempt"].as_i64()),
                    when(s["last_success"].as_i64())
                );
                if let Some(d) = s["detail"].as_str() {
                    outln!("    {d}");
                }
            }
        }
        if l["ocsp"]["mode"].as_str().is_some_and(|m| m != "off") {
            let a = &l["ocsp"]["answers"];
            outln!();
            outln!(
                "  OCSP answers cached: {} good, {} revoked, {} unknown, {} without an answer",
                a["good"],
                a["revoked"],
                a["unknown"],
                a["no_answer"]
            );
        }
        outln!();
    }
    Ok(())
}
