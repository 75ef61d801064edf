//! One call to the admin API over HTTP, with the bearer token.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

use crate::registry::parse_fingerprint;

use super::target::Target;

pub(super) fn encode(s: &str) -> String {
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
pub(super) async fn call(
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
    let mut sender = match &target.tls {
        None => {
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            sender
        }
        Some(tls) => {
            let name = rustls::pki_types::ServerName::from(target.addr.ip());
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .with_context(|| {
                    format!("TLS to the certgate admin API at {} failed", target.addr)
                })?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            sender
        }
    };
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

/// A full fingerprint from a full one or a unique prefix (as the table
/// shows them).
pub(super) async fn resolve(target: &Target, given: &str) -> anyhow::Result<String> {
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
    // A device answers to its id and to the fingerprint of any of its
    // certificates; the API takes its id.
    let matches: Vec<String> = page["devices"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|d| {
                    d["id"].as_str().is_some_and(|id| id.starts_with(&prefix))
                        || d["certificates"].as_array().is_some_and(|cs| {
                            cs.iter().any(|c| {
                                c["fingerprint"]
                                    .as_str()
                                    .is_some_and(|f| f.starts_with(&prefix))
                            })
                        })
                })
                .filter_map(|d| d["id"].as_str())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no device id or certificate fingerprint starts with {prefix}"),
        many => bail!(
            "{prefix} matches {} devices ({}); give more digits",
            many.len(),
            many.join(", ")
        ),
    }
}
