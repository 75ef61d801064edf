//! Renewal continuity: a device approved in manual mode that renews its
//! certificate is admitted with the new one at once, and every safety rule
//! around it holds (same CA, same identity or key, blocked stays blocked,
//! ambiguous identities and revoked certificates inherit nothing, an old
//! certificate is refused once its grace is over).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use http::StatusCode;

struct Setup {
    pki: Pki,
    _backend: Backend,
    gw: certgate::Gateway,
    addr: SocketAddr,
    admin: SocketAddr,
}

/// A gateway in manual mode with a registry and these extra
/// `[listener.client_auth]` lines; `ca` replaces the client CA list when
/// given.
async fn setup(pki: Pki, client_auth: &str, ca: Option<Vec<PathBuf>>, crl: Vec<PathBuf>) -> Setup {
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_top = registry_table(pki.dir.path(), "manual");
    cb.extra_client_auth = client_auth.to_string();
    if let Some(ca) = ca {
        cb.ca = ca;
    }
    cb.crl = crl;
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let admin = gw.admin_addr().unwrap();
    Setup {
        pki,
        _backend: backend,
        gw,
        addr,
        admin,
    }
}

fn fp(c: &ClientCert) -> String {
    sha256_hex(&c.der)
}

fn cfg(pki: &Pki, c: &ClientCert) -> std::sync::Arc<rustls::ClientConfig> {
    no_resumption(&client_config(pki, Some(c), &[b"http/1.1"]))
}

fn name(o: &str, cn: &str) -> rcgen::DistinguishedName {
    let mut n = rcgen::DistinguishedName::new();
    n.push(rcgen::DnType::OrganizationName, o);
    n.push(rcgen::DnType::CommonName, cn);
    n
}

/// The device a certificate belongs to, once the registry has it
/// (`want` certificates in it).
async fn device(admin: SocketAddr, fp: &str, want: usize) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..100 {
        let (s, v) = admin_call(admin, "GET", &format!("/api/devices/{fp}"), None, None).await;
        if s == StatusCode::OK && v["certificates"].as_array().map_or(0, Vec::len) >= want {
            return v;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("device of {fp} with {want} certificate(s) never appeared: {last}");
}

/// A device seen (refused, pending) and then approved by the admin.
async fn seen_and_approved(s: &Setup, c: &ClientCert) {
    assert!(
        admitted(s.addr, cfg(&s.pki, c)).await.is_err(),
        "unapproved must be refused"
    );
    device(s.admin, &fp(c), 1).await;
    let (st, v) = admin_call(
        s.admin,
        "POST",
        "/api/devices/approve",
        None,
        Some(serde_json::json!({"fingerprints": [fp(c)]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(
        admitted(s.addr, cfg(&s.pki, c)).await.is_ok(),
        "approved must be admitted"
    );
}

async fn audit(s: &Setup) -> String {
    std::fs::read_to_string(s.pki.dir.path().join("audit.log")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_device_that_renews_is_admitted_with_its_new_certificate_at_once() {
    let mut pki = Pki::new();
    let old = pki.client("agent-1", Kind::Good);
    let mut s = setup(pki, "", None, vec![]).await;
    seen_and_approved(&s, &old).await;

    // New key, same subject, later notBefore: admitted on its first
    // handshake, no admin action.
    let new = s.pki.client_named(
        "agent-1-renewed",
        name("Fleet", "agent-1"),
        Kind::ValidFrom(-3600),
    );
    assert!(
        admitted(s.addr, cfg(&s.pki, &new)).await.is_ok(),
        "the renewal must inherit the approval"
    );

    let d = device(s.admin, &fp(&new), 2).await;
    assert_eq!(d["status"], "approved", "{d}");
    assert_eq!(d["fingerprint"], fp(&new), "the renewal is current: {d}");
    let certs = d["certificates"].as_array().unwrap();
    assert_eq!(certs[0]["fingerprint"], fp(&old));
    assert_eq!(certs[0]["state"], "superseded", "{d}");
    assert_eq!(certs[1]["state"], "current");
    assert_eq!(certs[1]["renewal_of"], fp(&old));
    // One device, by either fingerprint.
    let by_old = device(s.admin, &fp(&old), 2).await;
    assert_eq!(by_old["id"], d["id"]);
    let (_, list) = admin_call(s.admin, "GET", "/api/devices", None, None).await;
    assert_eq!(list["total"], 1, "{list}");

    // The audit log says how it was approved.
    let log = audit(&s).await;
    assert!(
        log.contains(&format!("approved by renewal of {}", fp(&old)))
            && log.contains("\"action\":\"renewal\""),
        "{log}"
    );
    // Within supersede_grace (7 days by default) the old one still works.
    assert!(admitted(s.addr, cfg(&s.pki, &old)).await.is_ok());
    assert!(
        metric_at_least(
            &s.gw,
            "certgate_device_renewals_total{result=\"inherited\"}",
            1.0
        )
        .await,
        "{}",
        s.gw.metrics.encode()
    );

    // devices show lists both certificates with their state.
    let (ok, out, err) = devices_cli(s.admin, &["show", &fp(&new)[..12]]);
    assert!(ok, "{err}");
    assert!(out.contains("certificates (2):"), "{out}");
    assert!(
        out.contains("superseded") && out.contains("current"),
        "{out}"
    );
    let (ok, out, err) = devices_cli(s.admin, &["list", "--certificates"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("approved")).count(),
        2,
        "{out}"
    );
    s.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_same_key_only_a_renewal_of_the_same_key_inherits() {
    let mut pki = Pki::new();
    let key = rcgen::KeyPair::generate().unwrap();
    let key_pem = key.serialize_pem();
    let old = pki.client_with_key("agent-2", name("Fleet", "agent-2"), Kind::Good, key);
    let mut s = setup(pki, "renewal = \"same_key\"\n", None, vec![]).await;
    seen_and_approved(&s, &old).await;
    let new_key = s.pki.client_named(
        "agent-2-newkey",
        name("Fleet", "agent-2"),
        Kind::ValidFrom(-3600),
    );
    let same_key = s.pki.client_with_key(
        "agent-2-samekey",
        name("Fleet", "agent-2 renamed"),
        Kind::ValidFrom(-3600),
        rcgen::KeyPair::from_pem(&key_pem).unwrap(),
    );
    assert!(
        admitted(s.addr, cfg(&s.pki, &new_key)).await.is_err(),
        "same subject, new key: pending under same_key"
    );
    assert!(
        admitted(s.addr, cfg(&s.pki, &same_key)).await.is_ok(),
        "same key: inherited"
    );
    let d = device(s.admin, &fp(&same_key), 2).await;
    assert_eq!(d["certificates"][0]["fingerprint"], fp(&old), "{d}");
    let pending = device(s.admin, &fp(&new_key), 1).await;
    assert_eq!(pending["status"], "pending", "{pending}");
    assert_ne!(pending["id"], d["id"]);
    s.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_from_another_ca_with_the_same_subject_stays_pending() {
    let mut pki = Pki::new();
    let old = pki.client("agent-3", Kind::Good);
    let first_ca = pki.client_ca.clone();
    let second_ca = pki.path("second-ca.pem");
    std::fs::write(&second_ca, pki.new_client_ca("second client CA")).unwrap();
    let other = pki.client_named(
        "agent-3-other-ca",
        name("Fleet", "agent-3"),
        Kind::ValidFrom(-3600),
    );
    let s = setup(pki, "", Some(vec![first_ca, second_ca]), vec![]).await;
    seen_and_approved(&s, &old).await;
    assert!(
        admitted(s.addr, cfg(&s.pki, &other)).await.is_err(),
        "another CA's certificate must not inherit"
    );
    let d = device(s.admin, &fp(&other), 1).await;
    assert_eq!(d["status"], "pending", "{d}");
    assert_eq!(d["issuer"], "CN=second client CA");
    s.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_devices_renewal_is_refused_and_joins_the_blocked_device() {
    let mut pki = Pki::new();
    let old = pki.client("agent-4", Kind::Good);
    let mut s = setup(pki, "", None, vec![]).await;
    seen_and_approved(&s, &old).await;
    let (st, v) = admin_call(
        s.admin,
        "POST",
        "/api/devices/block",
        None,
        Some(serde_json::json!({"fingerprints": [fp(&old)]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let new = s.pki.client_named(
        "agent-4-renewed",
        name("Fleet", "agent-4"),
        Kind::ValidFrom(-3600),
    );
    assert_eq!(
        admitted(s.addr, cfg(&s.pki, &new)).await,
        Err(Some(rustls::AlertDescription::AccessDenied))
    );
    let d = device(s.admin, &fp(&new), 2).await;
    assert_eq!(d["status"], "blocked", "{d}");
    // Refused, so it supersedes nothing.
    assert_eq!(d["certificates"][0]["state"], "previous", "{d}");
    assert!(
        metric_at_least(
            &s.gw,
            "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"blocked\"}",
            1.0
        )
        .await
    );
    assert!(audit(&s).await.contains("blocked by renewal of"));
    s.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_two_approved_devices_share_is_ambiguous_and_inherits_nothing() {
    let mut pki = Pki::new();
    let a = pki.client_named("lab-a", name("Lab A", "shared-name"), Kind::Good);
    let b = pki.client_named("lab-b", name("Lab B", "shared-name"), Kind::Good);
    let mut s = setup(pki, "renewal_identity = \"cn\"\n", None, vec![]).await;
    seen_and_approved(&s, &a).await;
    seen_and_approved(&s, &b).await;
    let new = s.pki.client_named(
        "lab-new",
        name("Lab C", "shared-name"),
        Kind::ValidFrom(-3600),
    );
    assert!(
        admitted(s.addr, cfg(&s.pki, &new)).await.is_err(),
        "ambiguous: nothing inherited"
    );
    let d = device(s.admin, &fp(&new), 1).await;
    assert_eq!(d["status"], "pending", "{d}");
    assert_eq!(d["ambiguous_identity"], true, "{d}");
    let (ok, out, err) = devices_cli(s.admin, &["show", &fp(&new)]);
    assert!(ok, "{err}");
    assert!(out.contains("ambiguous identity"), "{out}");
    assert!(
        metric_at_least(
            &s.gw,
            "certgate_device_renewals_total{result=\"ambiguous\"}",
            1.0
        )
        .await
    );
    s.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_certificate_is_refused_once_its_supersede_grace_is_over() {
    let mut pki = Pki::new();
    let old = pki.client("agent-6", Kind::Good);
    let mut s = setup(pki, "supersede_grace = \"2s\"\n", None, vec![]).await;
    seen_and_approved(&s, &old).await;
    let new = s.pki.client_named(
        "agent-6-renewed",
        name("Fleet", "agent-6"),
        Kind::ValidFrom(-3600),
    );
    assert!(admitted(s.addr, cfg(&s.pki, &new)).await.is_ok());
    device(s.admin, &fp(&new), 2).await;
    // Held open across the grace: an old connection is closed too.
    let mut held = h1_sender(s.addr, cfg(&s.pki, &old)).await.unwrap();
    let r = held
        .send_request(
            http::Request::get("/")
                .header("host", "localhost")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert!(r.is_ok());
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    assert_eq!(
        admitted(s.addr, cfg(&s.pki, &old)).await,
        Err(Some(rustls::AlertDescription::AccessDenied)),
        "superseded past its grace"
    );
    assert!(
        admitted(s.addr, cfg(&s.pki, &new)).await.is_ok(),
        "the new one still works"
    );
    let again = held
        .send_request(
            http::Request::get("/")
                .header("host", "localhost")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert!(
        again.is_err(),
        "the old certificate's open connection must be closed"
    );
    assert!(
        metric_at_least(
            &s.gw,
            "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"superseded\"}",
            1.0
        )
        .await,
        "{}",
        s.gw.metrics.encode()
    );
    s.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificates_renewal_inherits_nothing() {
    let mut pki = Pki::new();
    let old = pki.client("agent-7", Kind::Good);
    let keep = pki.client("agent-keep", Kind::Good);
    // The CRL revokes the old certificate after it was approved: start
    // with an empty CRL, then replace it and reload.
    let crl = pki.crl("devices.crl", &[], true);
    let mut s = setup(pki, "", None, vec![crl.clone()]).await;
    seen_and_approved(&s, &old).await;
    seen_and_approved(&s, &keep).await;
    s.pki.crl("devices.crl", &[&old], true);
    s.gw.reload().await.unwrap();
    assert!(
        admitted(s.addr, cfg(&s.pki, &old)).await.is_err(),
        "revoked"
    );
    let new = s.pki.client_named(
        "agent-7-renewed",
        name("Fleet", "agent-7"),
        Kind::ValidFrom(-3600),
    );
    assert!(
        admitted(s.addr, cfg(&s.pki, &new)).await.is_err(),
        "a revoked certificate's renewal must not inherit"
    );
    let d = device(s.admin, &fp(&new), 1).await;
    assert_eq!(d["status"], "pending", "{d}");
    assert_eq!(d["certificates"].as_array().unwrap().len(), 1, "{d}");
    assert!(admitted(s.addr, cfg(&s.pki, &keep)).await.is_ok());
    s.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_off_keeps_every_certificate_its_own_device() {
    let mut pki = Pki::new();
    let old = pki.client("agent-8", Kind::Good);
    let mut s = setup(pki, "renewal = \"off\"\n", None, vec![]).await;
    seen_and_approved(&s, &old).await;
    let new = s.pki.client_named(
        "agent-8-renewed",
        name("Fleet", "agent-8"),
        Kind::ValidFrom(-3600),
    );
    assert!(admitted(s.addr, cfg(&s.pki, &new)).await.is_err());
    let d = device(s.admin, &fp(&new), 1).await;
    assert_eq!(d["status"], "pending");
    s.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_carry_the_lineage() {
    let mut pki = Pki::new();
    let old = pki.client("agent-9", Kind::Good);
    let mut s = setup(pki, "", None, vec![]).await;
    seen_and_approved(&s, &old).await;
    let new = s.pki.client_named(
        "agent-9-renewed",
        name("Fleet", "agent-9"),
        Kind::ValidFrom(-3600),
    );
    assert!(admitted(s.addr, cfg(&s.pki, &new)).await.is_ok());
    device(s.admin, &fp(&new), 2).await;
    let (ok, export, err) = devices_cli(s.admin, &["export"]);
    assert!(ok, "{err}");
    let file = s.pki.path("export.json");
    std::fs::write(&file, &export).unwrap();
    let id = device(s.admin, &fp(&new), 2).await["id"].clone();
    s.gw.shutdown().await;

    // A fresh registry restores both certificates as one approved device.
    let fresh = Pki::new();
    let dir = fresh.dir.path().to_path_buf();
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&s.pki, backend.addr);
    cb.extra_top = registry_table(&dir, "manual");
    let gw = start_gateway(&cb.write(&dir)).await;
    let admin = gw.admin_addr().unwrap();
    let addr = gw.addr("agents").unwrap();
    let (ok, out, err) = devices_cli(admin, &["import", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("imported: device"), "{out}");
    let d = device(admin, &fp(&old), 2).await;
    assert_eq!(d["id"], id);
    assert_eq!(d["status"], "approved");
    assert!(admitted(addr, cfg(&s.pki, &new)).await.is_ok());
    assert!(
        std::fs::read_to_string(dir.join("audit.log"))
            .unwrap()
            .contains("\"action\":\"import\"")
    );
    gw.shutdown().await;
}

/// Handshakes (and one request) with every config, 8 at a time; the
/// indices refused.
async fn connect_all(
    addr: SocketAddr,
    cfgs: &[(std::sync::Arc<rustls::ClientConfig>, Vec<u8>)],
) -> Vec<usize> {
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::new();
    for (i, (cfg, _)) in cfgs.iter().enumerate() {
        let (cfg, sem) = (cfg.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.unwrap();
            (i, admitted(addr, cfg).await.is_ok())
        }));
    }
    let mut refused = Vec::new();
    for t in tasks {
        let (i, ok) = t.await.unwrap();
        if !ok {
            refused.push(i);
        }
    }
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_devices_renew_under_keep_alive_load_with_no_refusal_and_no_failed_request() {
    const N: usize = 2_000;
    let mut pki = Pki::new();
    let keeper = pki.client("keep-alive-agent", Kind::Good);
    let old = pki.fleet(N, |i| format!("fleet-{i}"), -86_400, 1 << 20);
    let renewed = pki.fleet(N, |i| format!("fleet-{i}"), -3_600, 1 << 21);
    let s = setup(pki, "", None, vec![]).await;
    seen_and_approved(&s, &keeper).await;
    // The fleet is approved (by fingerprint, as an import does) and
    // checks in once with its current certificates.
    let fps: Vec<String> = old.iter().map(|(_, der)| sha256_hex(der)).collect();
    let (st, v) = admin_call(
        s.admin,
        "POST",
        "/api/devices/approve",
        None,
        Some(serde_json::json!({ "fingerprints": fps })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(connect_all(s.addr, &old).await, Vec::<usize>::new());
    // Until each record has the certificate's details, a renewal has
    // nothing to match (the check-in fills them).
    for fp in fps.iter().step_by(97).chain(fps.last()) {
        let mut filled = false;
        for _ in 0..100 {
            let (_, d) =
                admin_call(s.admin, "GET", &format!("/api/devices/{fp}"), None, None).await;
            if d["subject"].as_str().is_some_and(|s| !s.is_empty()) {
                filled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(filled, "{fp} never got its details");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let load = Load::start(
        s.addr,
        cfg(&s.pki, &keeper),
        16,
        Duration::from_millis(50),
        false,
    )
    .await;
    let before = load.ok();
    let started = std::time::Instant::now();
    let refused = connect_all(s.addr, &renewed).await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failures) = load.finish().await;
    assert!(
        refused.is_empty(),
        "{} renewals refused, e.g. #{:?}",
        refused.len(),
        &refused[..refused.len().min(5)]
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert!(ok > before, "the keep-alive clients made progress");
    println!("{N} renewals in {took:?} under load; {ok} keep-alive requests, none failed");

    // Each device now has two certificates, the renewal current.
    assert!(
        metric_at_least(
            &s.gw,
            "certgate_device_renewals_total{result=\"inherited\"}",
            N as f64
        )
        .await,
        "{}",
        s.gw.metrics.encode()
    );
    let (_, page) = admin_call(
        s.admin,
        "GET",
        "/api/devices?limit=1000&q=fleet-1999",
        None,
        None,
    )
    .await;
    assert_eq!(
        page["devices"][0]["certificates"].as_array().unwrap().len(),
        2,
        "{page}"
    );
    let (_, all) = admin_call(s.admin, "GET", "/api/devices?limit=1", None, None).await;
    assert_eq!(
        all["total"],
        N + 1,
        "one device per agent, not one per certificate"
    );
    assert_eq!(
        metric(&s.gw, "certgate_registry_updates_dropped_total"),
        0.0,
        "no handshake update was dropped"
    );
    s.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_forecast_counts_active_devices_and_lists_those_at_risk() {
    let mut pki = Pki::new();
    let day = 86_400;
    let soon = pki.client("expires-in-3-days", Kind::ExpiresIn(3 * day));
    let month = pki.client("expires-in-20-days", Kind::ExpiresIn(20 * day));
    let later = pki.client("expires-in-60-days", Kind::ExpiresIn(60 * day));
    let renews = pki.client("renews-in-time", Kind::ExpiresIn(5 * day));
    let mut s = setup(pki, "", None, vec![]).await;
    for c in [&soon, &month, &later, &renews] {
        seen_and_approved(&s, c).await;
    }
    let renewal = s.pki.client_named(
        "renews-in-time-2",
        name("Fleet", "renews-in-time"),
        Kind::ValidFrom(-3600),
    );
    assert!(admitted(s.addr, cfg(&s.pki, &renewal)).await.is_ok());
    device(s.admin, &fp(&renewal), 2).await;

    let (st, f) = admin_call(s.admin, "GET", "/api/devices/expiry?active=30d", None, None).await;
    assert_eq!(st, StatusCode::OK, "{f}");
    assert_eq!(f["active"], 4, "{f}");
    assert_eq!(f["within_7_days"], 1, "{f}");
    assert_eq!(f["within_30_days"], 2, "{f}");
    assert_eq!(f["months"].as_array().unwrap().len(), 12);
    let at_risk: Vec<&str> = f["at_risk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        at_risk,
        [
            "CN=expires-in-3-days,O=Fleet",
            "CN=expires-in-20-days,O=Fleet"
        ],
        "the renewed device is not at risk: {f}"
    );
    let (st, bad) = admin_call(
        s.admin,
        "GET",
        "/api/devices/expiry?active=soon",
        None,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");

    let (ok, out, err) = devices_cli(s.admin, &["expiry"]);
    assert!(ok, "{err}");
    println!("{out}");
    assert!(out.contains("4 active device(s)"), "{out}");
    assert!(out.contains("at risk: 2 device(s)"), "{out}");
    assert!(out.contains("CN=expires-in-3-days"), "{out}");
    assert!(!out.contains("CN=renews-in-time"), "{out}");

    for (within, n) in [("7d", 1.0), ("30d", 2.0), ("90d", 4.0)] {
        let line = format!("certgate_device_certificates_expiring{{within=\"{within}\"}}");
        assert!(
            eventually(Duration::from_secs(3), || metric(&s.gw, &line) == n).await,
            "{line} != {n}: {}",
            s.gw.metrics.encode()
        );
    }
    s.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_renewal_on_by_reload_admits_a_renewal_that_was_left_pending() {
    let mut pki = Pki::new();
    let old = pki.client("agent-10", Kind::Good);
    let new = pki.client_named(
        "agent-10-renewed",
        name("Fleet", "agent-10"),
        Kind::ValidFrom(-3600),
    );
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_top = registry_table(pki.dir.path(), "manual");
    cb.extra_client_auth = "renewal = \"off\"\n".into();
    let path = cb.write(pki.dir.path());
    let gw = start_gateway(&path).await;
    let s = Setup {
        pki,
        _backend: backend,
        addr: gw.addr("agents").unwrap(),
        admin: gw.admin_addr().unwrap(),
        gw,
    };
    seen_and_approved(&s, &old).await;
    assert!(
        admitted(s.addr, cfg(&s.pki, &new)).await.is_err(),
        "renewal off"
    );
    device(s.admin, &fp(&new), 1).await;

    cb.extra_client_auth = String::new();
    cb.write(s.pki.dir.path());
    s.gw.reload().await.unwrap();
    // The pending certificate no one decided on is placed by the rule now
    // in force: it joins its device and is admitted.
    let mut ok = false;
    for _ in 0..50 {
        if admitted(s.addr, cfg(&s.pki, &new)).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "after the reload the renewal must inherit the approval");
    let d = device(s.admin, &fp(&new), 2).await;
    assert_eq!(d["status"], "approved", "{d}");
    assert_eq!(d["certificates"][0]["fingerprint"], fp(&old), "{d}");
    let (_, list) = admin_call(s.admin, "GET", "/api/devices", None, None).await;
    assert_eq!(
        list["total"], 1,
        "the pending device of one is gone: {list}"
    );
    s.gw.shutdown().await;

    // And so it stays after a restart: the store has the move too.
    let gw = start_gateway(&path).await;
    let admin = gw.admin_addr().unwrap();
    let (_, list) = admin_call(admin, "GET", "/api/devices", None, None).await;
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(
        list["devices"][0]["certificates"].as_array().unwrap().len(),
        2
    );
    assert!(
        admitted(gw.addr("agents").unwrap(), cfg(&s.pki, &new))
            .await
            .is_ok()
    );
    gw.shutdown().await;
}
