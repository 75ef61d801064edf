//! The admin API against a web page the admin happens to open: the
//! requests a browser sends for another site's page (simple cross-origin
//! POSTs with form, text or multipart bodies; DNS rebinding) change
//! nothing, while curl, scripts and the `certgate devices` CLI keep working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one raw HTTP/1.1 request (exactly the bytes given, plus
/// `Content-Length` for `body`) and returns the status and the body.
async fn raw(admin: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    let req = format!(
        "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn refused(gw: &certgate::Gateway, reason: &str) -> f64 {
    metric(
        gw,
        &format!("certgate_admin_requests_refused_total{{reason=\"{reason}\"}}"),
    )
}

async fn status_of(admin: SocketAddr, fp: &str) -> String {
    let (s, v) = admin_call(admin, "GET", &format!("/api/devices/{fp}"), None, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["status"].as_str().unwrap_or("?").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_web_page_cannot_approve_reload_or_read_through_the_admins_browser() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_top = registry_table(pki.dir.path(), "manual");
    cb.extra_admin = "allowed_hosts = [\"gw1.example.net\"]\n".into();
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let admin = gw.admin_addr().unwrap();
    let fp = sha256_hex(&device.der);
    let client = no_resumption(&client_config(&pki, Some(&device), &[]));

    // The device is first seen and pending.
    assert!(get(addr, client.clone(), "/", &[]).await.is_err());
    let start = Instant::now();
    loop {
        let (s, _) = admin_call(admin, "GET", &format!("/api/devices/{fp}"), None, None).await;
        if s == StatusCode::OK || start.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status_of(admin, &fp).await, "pending");
    let reloads = || metric(&gw, "certgate_reloads_total{result=\"success\"}");
    let reloads_before = reloads();
    let host = format!("Host: {admin}\r\n");
    let approve = format!("/api/devices/{fp}/approve");
    let json_body = format!("{{\"fingerprints\":[\"{fp}\"]}}");
    let ua = "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36\r\n";

    // What browsers send for <form method=post action=...> on evil.example.
    let form = format!(
        "POST {approve} HTTP/1.1\r\n{host}{ua}Origin: http://evil.example\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nSec-Fetch-Site: cross-site\r\n\
         Sec-Fetch-Mode: navigate\r\nSec-Fetch-Dest: document\r\n"
    );
    let (s, b) = raw(admin, &form, "").await;
    assert_eq!(s, 403, "{b}");
    let v: serde_json::Value = serde_json::from_str(b.trim()).unwrap();
    assert_eq!(v["reason"], "fetch_site", "{v}");
    assert!(v["error"].as_str().unwrap().contains("another site"), "{v}");

    // fetch(url, {method: "POST", mode: "no-cors", body: JSON}) from an
    // older browser without Fetch Metadata: text/plain and an Origin.
    let text_post = format!(
        "POST /api/devices/approve HTTP/1.1\r\n{host}{ua}Origin: http://evil.example\r\n\
         Content-Type: text/plain;charset=UTF-8\r\n"
    );
    let (s, b) = raw(admin, &text_post, &json_body).await;
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("\"reason\":\"origin\""), "{b}");

    // A page on another port of this machine is another origin too.
    let local_page = format!(
        "POST {approve} HTTP/1.1\r\n{host}Origin: http://127.0.0.1:3000\r\n\
         Sec-Fetch-Site: same-site\r\n"
    );
    assert_eq!(raw(admin, &local_page, "").await.0, 403);

    // A sandboxed frame or a file: page sends Origin: null.
    let null_origin =
        format!("POST {approve} HTTP/1.1\r\n{host}Origin: null\r\nContent-Type: text/plain\r\n");
    let (s, b) = raw(admin, &null_origin, "x").await;
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("\"reason\":\"origin\""), "{b}");

    // A multipart form post with the Origin stripped (privacy add-ons,
    // old browsers): the body type alone gives it away.
    let multipart = format!(
        "POST /api/devices/approve HTTP/1.1\r\n{host}\
         Content-Type: multipart/form-data; boundary=----x\r\n"
    );
    let body = format!(
        "------x\r\nContent-Disposition: form-data; name=\"fingerprints\"\r\n\r\n{fp}\r\n------x--\r\n"
    );
    let (s, b) = raw(admin, &multipart, &body).await;
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("\"reason\":\"content_type\""), "{b}");

    // The same page trying a reload.
    let reload = format!(
        "POST /api/reload HTTP/1.1\r\n{host}{ua}Origin: http://evil.example\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nSec-Fetch-Site: cross-site\r\n"
    );
    assert_eq!(raw(admin, &reload, "").await.0, 403);

    // DNS rebinding: the page's own name now resolves to 127.0.0.1, so
    // the browser calls it same-origin; the Host header still names it.
    let port = admin.port();
    let rebound = format!(
        "GET /api/devices HTTP/1.1\r\nHost: rebind.attacker.example:{port}\r\n{ua}\
         Sec-Fetch-Site: same-origin\r\n"
    );
    let (s, b) = raw(admin, &rebound, "").await;
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("\"reason\":\"host\"") && !b.contains(&fp), "{b}");
    let rebound_post = format!(
        "POST {approve} HTTP/1.1\r\nHost: rebind.attacker.example:{port}\r\n\
         Origin: http://rebind.attacker.example:{port}\r\nSec-Fetch-Site: same-origin\r\n"
    );
    assert_eq!(raw(admin, &rebound_post, "").await.0, 403);

    // Nothing changed: still pending, no reload, every refusal counted.
    assert_eq!(status_of(admin, &fp).await, "pending");
    assert_eq!(reloads(), reloads_before, "a refused request reloaded");
    assert_eq!(refused(&gw, "fetch_site"), 3.0, "{}", gw.metrics.encode());
    assert_eq!(refused(&gw, "origin"), 2.0, "{}", gw.metrics.encode());
    assert_eq!(refused(&gw, "content_type"), 1.0);
    assert_eq!(refused(&gw, "host"), 2.0);

    // The admin listener's own origin (what its console will send), a
    // name from allowed_hosts, and a browser typing the URL itself pass.
    let own = format!(
        "GET /api/devices HTTP/1.1\r\nHost: gw1.example.net:{port}\r\nSec-Fetch-Site: none\r\n"
    );
    let (s, b) = raw(admin, &own, "").await;
    assert_eq!(s, 200, "{b}");
    let same_origin = format!(
        "POST /api/devices/{fp}/label HTTP/1.1\r\n{host}Origin: http://{admin}\r\n\
         Sec-Fetch-Site: same-origin\r\nContent-Type: application/json\r\n"
    );
    let (s, b) = raw(admin, &same_origin, "{\"label\":\"front desk\"}").await;
    assert_eq!(s, 200, "{b}");

    // curl and the CLI work unchanged.
    require_tool("curl");
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg(format!("http://{admin}/api/reload"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    assert_eq!(reloads(), reloads_before + 1.0);
    let (ok, out, err) = devices_cli(admin, &["approve", &fp]);
    assert!(ok, "{out}{err}");
    assert_eq!(status_of(admin, &fp).await, "approved");
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
        ])
        .arg(&json_body)
        .arg(format!("http://{admin}/api/devices/block"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("blocked"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(status_of(admin, &fp).await, "blocked");
    // curl -d without a JSON Content-Type is what a form sends: refused,
    // with a message that says how to send it.
    let out = std::process::Command::new("curl")
        .args(["-s", "-X", "POST", "-d"])
        .arg(&json_body)
        .arg(format!("http://{admin}/api/devices/unblock"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Content-Type: application/json"), "{text}");
    assert_eq!(status_of(admin, &fp).await, "blocked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_a_wrong_one_is_counted_and_a_right_one_still_needs_a_same_origin() {
    let pki = Pki::new();
    let backend = Backend::start().await;
    let tokens = pki.path("admin.tokens");
    std::fs::write(
        &tokens,
        "ops:0123456789abcdef0123\nci:fedcba9876543210fedc\n",
    )
    .unwrap();
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_admin = format!("token_file = \"{}\"\n", tokens.display());
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let admin = gw.admin_addr().unwrap();
    let (s, _) = admin_call(
        admin,
        "POST",
        "/api/reload",
        Some("0123456789abcdef0124"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = admin_call(admin, "POST", "/api/reload", Some("0123456789abcdef"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(refused(&gw, "token"), 2.0);
    for t in ["0123456789abcdef0123", "fedcba9876543210fedc"] {
        let (s, v) = admin_call(admin, "POST", "/api/reload", Some(t), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // A token does not make a cross-site request acceptable.
    let head = format!(
        "POST /api/reload HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer 0123456789abcdef0123\r\n\
         Origin: http://evil.example\r\n"
    );
    assert_eq!(raw(admin, &head, "").await.0, 403);
}
