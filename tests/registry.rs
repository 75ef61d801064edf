//! The device registry: manual approval, blocking everywhere, durability,
//! a first-seen burst, and the admin API's token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;

/// A fixture with a registry kept in the fixture's PKI directory.
async fn registry_gateway(approval: &str, adjust: impl FnOnce(&mut ConfigBuilder)) -> Fixture {
    Fixture::with(move |cb| {
        let dir = cb.cert.parent().unwrap().to_path_buf();
        cb.extra_top = registry_table(&dir, approval);
        adjust(cb);
    })
    .await
}

fn fp_of(c: &ClientCert) -> String {
    sha256_hex(&c.der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_mode_refuses_a_new_device_lists_it_pending_and_admits_it_once_approved() {
    let f = registry_gateway("manual", |_| {}).await;
    let admin = f.gw.admin_addr().unwrap();
    let client = no_resumption(&f.device_client());
    let fp = fp_of(&f.device);

    // Refused in the handshake with access_denied.
    let status = get(f.addr, client.clone(), "/x", &[]).await;
    assert!(status.is_err(), "an unapproved device must be refused");
    assert_access_denied(f.addr, client.clone()).await;
    assert!(
        metric_at_least(
            &f.gw,
            "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"unapproved\"}",
            1.0
        )
        .await,
        "{}",
        f.gw.metrics.encode()
    );

    // Listed as pending, with the certificate's fields.
    let mut listed = serde_json::Value::Null;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let (s, v) = admin_call(admin, "GET", "/api/devices?status=pending", None, None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if v["total"] == 1 {
            listed = v["devices"][0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed["fingerprint"], fp.as_str(), "{listed}");
    assert_eq!(listed["status"], "pending");
    assert_eq!(listed["subject"], "CN=device-a,O=Fleet");
    assert_eq!(listed["issuer"], "CN=test client CA");
    assert_eq!(listed["serial"], "1001");
    assert_eq!(listed["last_peer"], "127.0.0.1");
    assert!(listed["refusals"]["unapproved"].as_u64().unwrap() >= 1);
    assert!(listed["first_seen"].as_i64().unwrap() > 0);
    assert!(listed["not_after"].as_i64().unwrap() > listed["not_before"].as_i64().unwrap());
    assert_eq!(listed["connections"], 0);

    // The table shows it; approve by a unique prefix, as an admin would.
    let (ok, out, err) = devices_cli(admin, &["list", "--status", "pending"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("pending") && out.contains(&fp[..16]) && out.contains("CN=device-a"),
        "{out}"
    );
    let approved_at = Instant::now();
    let (ok, out, err) = devices_cli(admin, &["approve", &fp[..12]]);
    assert!(ok, "{err}");
    assert!(out.contains("approved") && out.contains(&fp), "{out}");

    // Admitted on the next handshake, within 1 s of the approval.
    let mut admitted = None;
    while approved_at.elapsed() < Duration::from_secs(1) {
        if let Ok((s, _)) = get(f.addr, client.clone(), "/after-approval", &[]).await {
            admitted = Some(s);
            break;
        }
    }
    assert_eq!(
        admitted,
        Some(StatusCode::OK),
        "admitted within 1 s of the approval"
    );
    assert_eq!(
        f.backend.last().headers["x-client-cert-fingerprint"],
        fp.as_str()
    );
    let (ok, out, _) = devices_cli(admin, &["show", &fp, "--json"]);
    assert!(ok);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["status"], "approved");
    assert_eq!(shown["changed_by"], "local");
}

/// Expects a full handshake to end with the `access_denied` alert.
async fn assert_access_denied(addr: std::net::SocketAddr, cfg: Arc<rustls::ClientConfig>) {
    let e = tls_handshake_error(addr, cfg).await;
    assert_eq!(
        alert_of(&e),
        Some(rustls::AlertDescription::AccessDenied),
        "{e}"
    );
}

/// Blocks `fp` through the API and expects the device's `open`
/// connection to be closed within 1 s.
async fn block_and_see_closed<B>(
    admin: std::net::SocketAddr,
    fp: &str,
    open: &hyper::client::conn::http1::SendRequest<B>,
) {
    let (s, v) = device_action(admin, fp, "block").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        eventually(Duration::from_secs(1), || open.is_closed()).await,
        "the blocked device's open connection must be closed within 1 s of the block"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_closes_open_connections_and_refuses_resumed_and_full_handshakes() {
    let f = registry_gateway("auto", |_| {}).await;
    let admin = f.gw.admin_addr().unwrap();
    let fp = fp_of(&f.device);
    let resuming = f.device_client();

    // Admitted (auto approval), with a keep-alive connection open and a
    // session cached for resumption.
    let (s, _) = get(f.addr, resuming.clone(), "/first", &[]).await.unwrap();
    assert_eq!(s, 200);
    let open = h1_sender(f.addr, resuming.clone()).await.unwrap();
    let (s, _) = get(f.addr, resuming.clone(), "/resumed", &[])
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert!(
        metric(
            &f.gw,
            "certgate_tls_handshakes_total{listener=\"agents\",version=\"1.2\",cipher=\"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\",resumed=\"true\"}"
        ) >= 1.0,
        "the client resumes its session: {}",
        f.gw.metrics.encode()
    );

    let blocked_at = Instant::now();
    block_and_see_closed(admin, &fp, &open).await;
    println!(
        "open connection closed {:?} after the block",
        blocked_at.elapsed()
    );
    assert!(
        metric(
            &f.gw,
            "certgate_connections_closed_by_policy_total{listener=\"agents\",reason=\"blocked\"}"
        ) >= 1.0
    );

    // Resumption attempt and full handshake: both refused with an alert.
    let e = tls_handshake_error(f.addr, resuming.clone()).await;
    assert_eq!(
        alert_of(&e),
        Some(rustls::AlertDescription::AccessDenied),
        "{e}"
    );
    let e = tls_handshake_error(f.addr, no_resumption(&resuming)).await;
    assert_eq!(
        alert_of(&e),
        Some(rustls::AlertDescription::AccessDenied),
        "{e}"
    );
    assert!(
        metric_at_least(
            &f.gw,
            "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"blocked\"}",
            2.0
        )
        .await,
        "{}",
        f.gw.metrics.encode()
    );

    // Unblock: back to pending; in auto mode admitted again.
    let (s, _) = device_action(admin, &fp, "unblock").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = get(f.addr, no_resumption(&resuming), "/back", &[])
        .await
        .unwrap();
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_approvals_survive_kill_9() {
    let mut pki = Pki::new();
    let _device = pki.client("device-a", Kind::Good);
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_top = registry_table(pki.dir.path(), "manual");
    let config = cb.write(pki.dir.path());
    let mut gw = spawn_certgate(&config);
    let admin = gw.admin_addr();

    let fps: Vec<String> = (0..200u32)
        .map(|i| sha256_hex(format!("device {i}").as_bytes()))
        .collect();
    // One bulk call and a series of single ones, each acknowledged.
    let (s, v) = admin_call(
        admin,
        "POST",
        "/api/devices/approve",
        None,
        Some(serde_json::json!({"fingerprints": &fps[..150]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for fp in &fps[150..] {
        let (s, _) = device_action(admin, fp, "approve").await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, _) = device_action(admin, &fps[0], "block").await;
    assert_eq!(s, StatusCode::OK);
    gw.signal("KILL");
    let _ = gw.wait_exit(Duration::from_secs(5));
    drop(gw);

    let gw = spawn_certgate(&config);
    let admin = gw.admin_addr();
    let (s, v) = admin_call(admin, "GET", "/api/devices?limit=1000", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["total"], 200, "{v}");
    let (_, v) = admin_call(
        admin,
        "GET",
        "/api/devices?status=approved&limit=1000",
        None,
        None,
    )
    .await;
    assert_eq!(v["total"], 199);
    let (_, v) = admin_call(
        admin,
        "GET",
        &format!("/api/devices/{}", fps[0]),
        None,
        None,
    )
    .await;
    assert_eq!(v["status"], "blocked");
    // The audit log has every change, with who and what.
    let audit = std::fs::read_to_string(pki.path("audit.log")).unwrap();
    assert_eq!(audit.lines().count(), 201, "{audit}");
    assert!(audit.lines().all(|l| l.contains("\"who\":\"local\"")));
    assert!(
        audit
            .lines()
            .last()
            .unwrap()
            .contains("\"action\":\"block\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_10000_first_seen_devices_does_not_disturb_approved_ones() {
    const BURST: usize = 10_000;
    let f = registry_gateway("manual", |_| {}).await;
    let admin = f.gw.admin_addr().unwrap();
    let (s, _) = admin_call(
        admin,
        "POST",
        &format!("/api/devices/{}/approve", fp_of(&f.device)),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // 10,000 distinct device certificates (one key, distinct serials and
    // names: distinct fingerprints), made in memory.
    let started = Instant::now();
    let clients = f.pki.many_clients(BURST);
    println!(
        "made {BURST} device certificates in {:?}",
        started.elapsed()
    );

    // The approved device keeps making requests on new connections.
    let approved = no_resumption(&f.device_client());
    let addr = f.addr;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && ok < 100_000 {
                match get(addr, approved.clone(), "/steady", &[]).await {
                    Ok((s, _)) if s == 200 => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        })
    };

    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for cfg in clients {
        let permit = sem.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let e = tls_handshake_error(addr, cfg).await;
            drop(permit);
            e
        }));
    }
    // Only access_denied is the refusal asked for; anything else (a
    // connection that never reached the gateway) is named.
    let (mut refused, mut other) = (0, Vec::new());
    for t in tasks {
        let e = t.await.unwrap();
        if alert_of(&e) == Some(rustls::AlertDescription::AccessDenied) {
            refused += 1;
        } else if other.len() < 10 {
            other.push(e.to_string());
        }
    }
    let burst_time = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = steady.await.unwrap();
    println!(
        "{BURST} first-seen handshakes in {burst_time:?}; the approved device made {ok} requests meanwhile"
    );
    assert_eq!(
        refused, BURST,
        "every unapproved device is refused with access_denied; other errors: {other:?}"
    );
    assert!(failed.is_empty(), "approved device failed: {failed:?}");
    assert!(ok > 10, "the approved device kept being served ({ok})");

    let dropped = metric(&f.gw, "certgate_registry_updates_dropped_total");
    let mut pending = 0.0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        pending = metric(&f.gw, "certgate_devices{status=\"pending\"}");
        if pending + dropped >= BURST as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let unapproved = metric(
        &f.gw,
        "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"unapproved\"}",
    );
    println!(
        "registry: {pending} pending, {dropped} updates dropped; the gateway refused {unapproved} as unapproved"
    );
    assert!(
        pending + dropped >= BURST as f64,
        "every first-seen device is recorded or counted as dropped: {pending} + {dropped}"
    );
    let (_, v) = admin_call(
        admin,
        "GET",
        "/api/devices?status=pending&limit=1",
        None,
        None,
    )
    .await;
    assert_eq!(v["total"].as_f64().unwrap(), pending);
}

#[test]
fn a_non_loopback_admin_listener_needs_a_token_file() {
    let pki = Pki::new();
    let mut cb = ConfigBuilder::new(&pki, "127.0.0.1:9".parse().unwrap());
    cb.extra_top = String::new();
    let text = cb.render().replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        "[admin]\nlisten = \"192.0.2.10:9900\"",
    );
    let config = pki.path("exposed.toml");
    std::fs::write(&config, text).unwrap();
    let err = certgate_fails("run", &config);
    assert!(
        err.contains("admin.token_file") && err.contains("192.0.2.10:9900"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_file_the_api_needs_the_token_and_audits_its_name() {
    let token = "0123456789abcdef0123456789abcdef";
    let f = registry_gateway("manual", |cb| {
        let token_file = cb.cert.parent().unwrap().join("admin.tokens");
        std::fs::write(&token_file, format!("# admins\nalice:{token}\n")).unwrap();
        cb.extra_admin = format!("token_file = \"{}\"\n", token_file.display());
    })
    .await;
    let dir = f.pki.dir.path().to_path_buf();
    let admin = f.gw.admin_addr().unwrap();
    let fp = fp_of(&f.device);
    let (s, _) = device_action(admin, &fp, "approve").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = admin_call(
        admin,
        "POST",
        &format!("/api/devices/{fp}/approve"),
        Some("wrong-token-wrong-token"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = admin_call(admin, "GET", "/api/devices", Some("nope"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = admin_call(admin, "POST", "/api/reload", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Metrics stay open for Prometheus.
    let (s, _) = admin_call(admin, "GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = admin_call(
        admin,
        "POST",
        &format!("/api/devices/{fp}/approve"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["devices"][0]["changed_by"], "alice");
    let audit = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    assert!(
        audit.contains("\"who\":\"alice\"") && audit.contains(&fp),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_rules_pre_approve_matching_devices_and_without_a_registry_restrict() {
    // With a registry in manual mode: a CN rule pre-approves.
    let mut f = registry_gateway("manual", |cb| {
        cb.extra_client_auth = "allow_cn = [\"agent-*\"]\n".into();
    })
    .await;
    let agent = f.pki.client("agent-17", Kind::Good);
    let (s, _) = get(
        f.addr,
        client_config(&f.pki, Some(&agent), &[]),
        "/rule",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        s, 200,
        "a device matching allow_cn is admitted without approval"
    );
    assert!(
        get(f.addr, no_resumption(&f.device_client()), "/other", &[])
            .await
            .is_err(),
        "device-a matches no rule and is not approved"
    );
    let admin = f.gw.admin_addr().unwrap();
    let fp = sha256_hex(&agent.der);
    assert!(
        eventually_approved(admin, &fp).await,
        "the rule-admitted device is recorded as approved"
    );
    assert!(
        metric(
            &f.gw,
            "certgate_registry_decisions_total{listener=\"agents\",decision=\"rule\"}"
        ) >= 1.0
    );

    // Without a registry the rules are an allow-list (like ghostunnel).
    let mut g =
        Fixture::with(|cb| cb.extra_client_auth = "allow_cn = [\"agent-*\"]\n".into()).await;
    let agent = g.pki.client("agent-18", Kind::Good);
    let (s, _) = get(
        g.addr,
        client_config(&g.pki, Some(&agent), &[]),
        "/rule",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(s, 200);
    let e = get(g.addr, no_resumption(&g.device_client()), "/other", &[]).await;
    assert!(e.is_err(), "device-a matches no rule");
    assert!(
        metric_at_least(
            &g.gw,
            "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"not_allowed\"}",
            1.0
        )
        .await,
        "{}",
        g.gw.metrics.encode()
    );
}

async fn eventually_approved(admin: std::net::SocketAddr, fp: &str) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let (s, v) = admin_call(admin, "GET", &format!("/api/devices/{fp}"), None, None).await;
        if s == StatusCode::OK && v["status"] == "approved" {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_pre_approves_and_export_lists_every_device() {
    let mut f = registry_gateway("manual", |_| {}).await;
    let admin = f.gw.admin_addr().unwrap();
    let a = f.pki.client("imported-a", Kind::Good);
    let b = f.pki.client("imported-b", Kind::Good);
    // A file as exported from an old server: PEM certificates.
    let pem = f.pki.path("old-server-export.pem");
    std::fs::write(
        &pem,
        format!(
            "{}{}",
            std::fs::read_to_string(&a.cert).unwrap(),
            std::fs::read_to_string(&b.cert).unwrap()
        ),
    )
    .unwrap();
    let (ok, out, err) = devices_cli(admin, &["import", pem.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("approved")).count(),
        2,
        "{out}"
    );
    // A PEM import keeps what the certificate says, not only its
    // fingerprint.
    let (_, v) = admin_call(
        admin,
        "GET",
        &format!("/api/devices/{}", fp_of(&a)),
        None,
        None,
    )
    .await;
    assert_eq!(v["subject"], "CN=imported-a,O=Fleet", "{v}");
    assert_eq!(v["issuer"], "CN=test client CA", "{v}");
    assert!(!v["serial"].as_str().unwrap_or("").is_empty(), "{v}");
    assert!(v["not_after"].as_i64().unwrap_or(0) > 0, "{v}");
    // And a list of fingerprints, colon-separated as openssl prints them.
    let c = f.pki.client("imported-c", Kind::Good);
    let colons: Vec<String> = sha256_hex(&c.der)
        .as_bytes()
        .chunks(2)
        .map(|p| String::from_utf8_lossy(p).to_uppercase())
        .collect();
    let list = f.pki.path("fingerprints.txt");
    std::fs::write(
        &list,
        format!("# from the old console\n{}  imported-c\n", colons.join(":")),
    )
    .unwrap();
    let (ok, _, err) = devices_cli(admin, &["import", list.to_str().unwrap()]);
    assert!(ok, "{err}");
    let bad = f.pki.path("bad.txt");
    std::fs::write(&bad, "not-a-fingerprint\n").unwrap();
    let (ok, _, err) = devices_cli(admin, &["import", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("line 1"), "{err}");

    // Imported devices are admitted on their first connection.
    for dev in [&a, &b, &c] {
        let (s, _) = get(
            f.addr,
            client_config(&f.pki, Some(dev), &[]),
            "/imported",
            &[],
        )
        .await
        .unwrap();
        assert_eq!(s, 200);
    }
    let (ok, _, _) = devices_cli(admin, &["label", &sha256_hex(&a.der), "lobby kiosk"]);
    assert!(ok);
    let (ok, out, err) = devices_cli(admin, &["export"]);
    assert!(ok, "{err}");
    let all: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3);
    let (ok, out, _) = devices_cli(admin, &["list", "--search", "kiosk"]);
    assert!(
        ok && out.contains("lobby kiosk") && out.contains("1 of 1"),
        "{out}"
    );
}

/// A device that resumed its session once is refused on its next
/// resumption after it was blocked (registry) or revoked (CRL): with
/// resumption tickets, and with the session-ID cache. The resumption is
/// refused inside the handshake (the stored session is not found, the full
/// handshake that follows gets the alert), and the backend sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_is_refused_once_its_device_is_blocked_or_revoked() {
    let resumed_line = "certgate_tls_handshakes_total{listener=\"agents\",version=\"1.2\",cipher=\"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\",resumed=\"true\"}";
    for (kind, tls) in [
        ("tickets", "session_tickets = true\nsession_cache = 0\n"),
        ("session IDs", "session_tickets = false\n"),
    ] {
        for how in ["blocked", "revoked"] {
            let mut pki = Pki::new();
            let device = pki.client("device-a", Kind::Good);
            let crl = pki.crl("clients", &[], true);
            let backend = Backend::start().await;
            let mut cb = ConfigBuilder::new(&pki, backend.addr);
            cb.crl = vec![crl.clone()];
            cb.extra_tls = tls.into();
            cb.extra_top = registry_table(pki.dir.path(), "auto");
            let gw = start_gateway(&cb.write(pki.dir.path())).await;
            let addr = gw.addr("agents").unwrap();
            let client = client_config(&pki, Some(&device), &[]);

            // First connection: full handshake; second: resumed.
            for path in ["/full", "/resumed"] {
                let (s, _) = get(addr, client.clone(), path, &[]).await.unwrap();
                assert_eq!(s, 200, "{kind}/{how}: {path}");
            }
            assert_eq!(
                metric(&gw, resumed_line),
                1.0,
                "{kind}/{how}: the second connection must resume:\n{}",
                gw.metrics.encode()
            );

            match how {
                "blocked" => {
                    let fp = fp_of(&device);
                    let (s, v) = device_action(gw.admin_addr().unwrap(), &fp, "block").await;
                    assert_eq!(s, StatusCode::OK, "{v}");
                }
                _ => {
                    pki.crl("clients", &[&device], true);
                    let outcome = gw.reload().await;
                    assert!(outcome.is_ok(), "{kind}/{how}: reload: {outcome:?}");
                }
            }

            let served = backend.count();
            let e = tls_handshake_error(addr, client.clone()).await;
            let alert = alert_of(&e);
            let expected = if how == "blocked" {
                rustls::AlertDescription::AccessDenied
            } else {
                rustls::AlertDescription::CertificateRevoked
            };
            assert_eq!(alert, Some(expected), "{kind}/{how}: {e}");
            assert_eq!(
                metric(&gw, resumed_line),
                1.0,
                "{kind}/{how}: no further resumption may succeed"
            );
            // Counted just after the alert is written: wait for it.
            assert!(
                metric_at_least(
                    &gw,
                    &format!(
                        "certgate_tls_handshake_failures_total{{listener=\"agents\",reason=\"{how}\"}}"
                    ),
                    1.0
                )
                .await,
                "{kind}/{how}: {}",
                gw.metrics.encode()
            );
            assert_eq!(
                backend.count(),
                served,
                "{kind}/{how}: the backend saw a request"
            );
            gw.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_device_is_refused_in_observe_mode_too() {
    let f = registry_gateway("manual", |cb| cb.mode = "observe").await;
    let admin = f.gw.admin_addr().unwrap();
    let fp = fp_of(&f.device);
    let mut pki = f.pki;
    let other = pki.client("device-b", Kind::Good);
    let client = no_resumption(&client_config(&pki, Some(&f.device), &[]));
    let other_client = no_resumption(&client_config(&pki, Some(&other), &[]));

    // Observe mode: an unapproved device is admitted and reported.
    let (s, _) = get(f.addr, client.clone(), "/before", &[]).await.unwrap();
    assert_eq!(s, 200);
    assert_eq!(
        f.backend.last().headers["x-client-verify"],
        "FAILED:unapproved"
    );
    let mut open = h1_sender(f.addr, client.clone()).await.unwrap();
    let req = || {
        http::Request::get("/open")
            .header("host", "localhost")
            .body(empty())
            .unwrap()
    };
    assert_eq!(open.send_request(req()).await.unwrap().status(), 200);

    // An admin's block applies at once: the open connection is closed and
    // the next handshake is refused, although the listener only observes.
    block_and_see_closed(admin, &fp, &open).await;
    assert_access_denied(f.addr, client.clone()).await;
    assert!(
        metric_at_least(
            &f.gw,
            "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"blocked\"}",
            1.0
        )
        .await,
        "{}",
        f.gw.metrics.encode()
    );
    // Unapproved devices stay admitted: observe softens only the
    // automatic verdicts.
    let (s, _) = get(f.addr, other_client, "/other", &[]).await.unwrap();
    assert_eq!(s, 200);
    assert_eq!(f.backend.last().path, "/other");

    // The readiness report says the blocked device is refused now.
    let mut entry = serde_json::Value::Null;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) && entry.is_null() {
        let (s, r) = admin_call(admin, "GET", "/api/readiness?listener=agents", None, None).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        if let Some(e) = r["would_refuse"].as_array().and_then(|a| {
            a.iter()
                .find(|c| c["fingerprint"] == fp.as_str() && c["status"] == "blocked")
        }) {
            entry = e.clone();
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(entry["refused_now"], true, "{entry}");
    let out = std::process::Command::new(certgate_bin())
        .args(["readiness", "--admin"])
        .arg(admin.to_string())
        .args(["--listener", "agents"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("refused now in every mode, observe included"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_last_handshakes_taught_the_registry_survives_a_sigterm() {
    let mut pki = Pki::new();
    let devices: Vec<ClientCert> = (0..5)
        .map(|i| pki.client(&format!("late-{i}"), Kind::Good))
        .collect();
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_top = registry_table(pki.dir.path(), "manual");
    let config = cb.write(pki.dir.path());
    let mut gw = spawn_certgate(&config);
    let addr = gw.addr;
    // First-seen devices, refused and recorded pending, then at once a
    // clean stop: the records must not wait for the next periodic write.
    for d in &devices {
        let cfg = no_resumption(&client_config(&pki, Some(d), &[b"http/1.1"]));
        assert!(admitted(addr, cfg).await.is_err());
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).is_some());
    drop(gw);
    let gw = spawn_certgate(&config);
    let (s, v) = admin_call(
        gw.admin_addr(),
        "GET",
        "/api/devices?status=pending",
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["total"], devices.len(), "{v}");
}
