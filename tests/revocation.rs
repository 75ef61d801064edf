//! Revocation that keeps itself current: CRLs fetched from a real HTTP
//! publication point on loopback (conditional GET, refusals of bad answers,
//! the last good CRL kept on disk), delta CRLs merged with their base, and
//! what a device and its open connections see when its CA revokes it.
//! Every CA and CRL is made in the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use rustls::AlertDescription;

/// A gateway fetching `urls` every second into `cache`.
fn fetching_config(
    pki: &Pki,
    backend: std::net::SocketAddr,
    urls: &[String],
    extra: &str,
) -> PathBuf {
    let mut cb = ConfigBuilder::new(pki, backend);
    let list: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    cb.extra_client_auth = format!(
        "crl_urls = [{}]\ncrl_refresh = \"1s\"\ncrl_cache_dir = \"{}\"\n{extra}",
        list.join(", "),
        pki.dir.path().join("crl-cache").display()
    );
    cb.write(pki.dir.path())
}

fn fetches(gw: &certgate::Gateway, url: &str, result: &str) -> f64 {
    metric(
        gw,
        &format!("certgate_crl_fetch_total{{source=\"{url}\",result=\"{result}\"}}"),
    )
}

async fn wait_fetches(gw: &certgate::Gateway, url: &str, result: &str, at_least: f64) {
    let ok = eventually(Duration::from_secs(15), || {
        fetches(gw, url, result) >= at_least
    })
    .await;
    assert!(
        ok,
        "no {at_least} fetch(es) of {url} with result {result}:\n{}",
        gw.metrics.encode()
    );
}

async fn revocation_api(gw: &certgate::Gateway) -> serde_json::Value {
    let (status, v) = admin_call(
        gw.admin_addr().unwrap(),
        "GET",
        "/api/revocation",
        None,
        None,
    )
    .await;
    assert_eq!(status, http::StatusCode::OK, "{v}");
    v
}

fn write(dir: &Path, name: &str, der: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, der).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_published_at_the_ca_refuses_the_device_and_cuts_its_open_connection_while_others_see_no_failure()
 {
    let backend = Backend::start().await;
    let mut pki = Pki::new();
    let victim = pki.client("lost-laptop", Kind::Good);
    let fleet = pki.client("fleet-agent", Kind::Good);
    let server = CrlServer::start().await;
    let url = server.url("/device-ca.crl");
    server.publish(
        "/device-ca.crl",
        build_crl(&CrlSpec::base(1, &[]), pki.client_issuer()),
    );
    let gw = start_gateway(&fetching_config(
        &pki,
        backend.addr,
        std::slice::from_ref(&url),
        "",
    ))
    .await;
    let addr = gw.addr("agents").unwrap();
    wait_fetches(&gw, &url, "updated", 1.0).await;
    // Conditional GET: the unchanged CRL is answered 304 from then on.
    wait_fetches(&gw, &url, "not_modified", 1.0).await;
    assert!(server.hits().1 >= 1);

    // The victim holds a keep-alive connection; 16 other agents keep
    // working (and opening new connections) throughout.
    let victim_cfg = client_config(&pki, Some(&victim), &[b"http/1.1"]);
    let mut open = h1_sender(addr, victim_cfg.clone()).await.unwrap();
    let req = || {
        http::Request::get("/check-in")
            .header("host", "localhost")
            .body(empty())
            .unwrap()
    };
    assert_eq!(open.send_request(req()).await.unwrap().status(), 200);
    let fleet_cfg = client_config(&pki, Some(&fleet), &[b"http/1.1"]);
    let load = Load::start(addr, fleet_cfg, 16, Duration::from_millis(50), false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The CA revokes the laptop and publishes CRL number 2.
    let published = std::time::Instant::now();
    server.publish(
        "/device-ca.crl",
        build_crl(&CrlSpec::base(2, &[&victim.serial]), pki.client_issuer()),
    );
    // Its open connection is closed as a block closes it...
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if open.ready().await.is_err() || open.send_request(req()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the revoked device's keep-alive connection stayed open"
    );
    // ...and its next handshake is refused with certificate_revoked.
    assert_eq!(
        admitted(addr, no_resumption(&victim_cfg)).await,
        Err(Some(AlertDescription::CertificateRevoked))
    );
    let took = published.elapsed();
    // A resumed session is no way around it either.
    assert_eq!(
        admitted(addr, victim_cfg.clone()).await.map_err(|_| ()),
        Err(())
    );
    assert!(
        took < Duration::from_secs(5),
        "crl_refresh is 1 s; the revocation took {took:?}"
    );
    assert!(
        metric(
            &gw,
            "certgate_connections_closed_by_policy_total{listener=\"agents\",reason=\"revoked\"}"
        ) >= 1.0,
        "{}",
        gw.metrics.encode()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failures) = load.finish().await;
    assert!(ok > 100, "the load ran ({ok} requests)");
    assert!(
        failures.is_empty(),
        "unrevoked agents saw failures: {failures:?}"
    );
    assert_eq!(
        metric(
            &gw,
            "certgate_crl_number{listener=\"agents\",issuer=\"CN=test client CA\"}"
        ),
        2.0
    );
    let v = revocation_api(&gw).await;
    let l = &v["listeners"][0];
    assert_eq!(l["crls"][0]["number"], "2", "{v}");
    assert_eq!(l["crls"][0]["entries"], 1, "{v}");
    assert_eq!(l["sources"][0]["url"], url.as_str(), "{v}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_ca_is_unreachable_the_last_crl_keeps_serving_survives_a_restart_and_goes_stale_visibly()
 {
    let backend = Backend::start().await;
    let mut pki = Pki::new();
    let victim = pki.client("lost-laptop", Kind::Good);
    let good = pki.client("agent", Kind::Good);
    let server = CrlServer::start().await;
    let url = server.url("/ca.crl");
    // A CRL whose nextUpdate is 8 s away.
    let mut spec = CrlSpec::base(7, &[&victim.serial]);
    spec.next_update = 8;
    server.publish("/ca.crl", build_crl(&spec, pki.client_issuer()));
    let config = fetching_config(&pki, backend.addr, std::slice::from_ref(&url), "");
    let gw = start_gateway(&config).await;
    let addr = gw.addr("agents").unwrap();
    wait_fetches(&gw, &url, "updated", 1.0).await;
    let victim_cfg = no_resumption(&client_config(&pki, Some(&victim), &[b"http/1.1"]));
    let good_cfg = no_resumption(&client_config(&pki, Some(&good), &[b"http/1.1"]));
    assert_eq!(
        admitted(addr, victim_cfg.clone()).await,
        Err(Some(AlertDescription::CertificateRevoked))
    );
    assert_eq!(admitted(addr, good_cfg.clone()).await, Ok(()));

    // The CA goes away: fetches fail, the CRL in force stays.
    server.go_away();
    wait_fetches(&gw, &url, "connect_error", 1.0).await;
    assert_eq!(
        admitted(addr, victim_cfg.clone()).await,
        Err(Some(AlertDescription::CertificateRevoked))
    );
    let v = revocation_api(&gw).await;
    assert_eq!(
        v["listeners"][0]["sources"][0]["result"], "connect_error",
        "{v}"
    );
    assert_eq!(v["listeners"][0]["crls"][0]["number"], "7", "{v}");
    gw.shutdown().await;

    // Restarted while the CA is still unreachable: enforced from the cache
    // before any fetch succeeds.
    let gw = start_gateway(&config).await;
    let addr = gw.addr("agents").unwrap();
    assert_eq!(
        admitted(addr, victim_cfg.clone()).await,
        Err(Some(AlertDescription::CertificateRevoked))
    );
    assert_eq!(admitted(addr, good_cfg.clone()).await, Ok(()));
    assert_eq!(fetches(&gw, &url, "updated"), 0.0);

    // Past nextUpdate, crl_stale = "fail_closed" (the default) refuses the
    // CA's devices, and the stale gauge says why.
    let stale = eventually(Duration::from_secs(15), || {
        metric(
            &gw,
            "certgate_crl_stale{listener=\"agents\",issuer=\"CN=test client CA\"}",
        ) == 1.0
    })
    .await;
    assert!(stale, "{}", gw.metrics.encode());
    let refused = admitted(addr, good_cfg.clone()).await;
    assert!(
        refused.is_err(),
        "a stale CRL under fail_closed admitted a device"
    );
    assert!(
        metric(
            &gw,
            "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"crl_expired\"}"
        ) >= 1.0,
        "{}",
        gw.metrics.encode()
    );
    assert!(
        metric(
            &gw,
            &format!("certgate_crl_last_success_timestamp_seconds{{source=\"{url}\"}}")
        ) == 0.0
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_truncated_older_or_huge_crl_is_refused_and_the_crl_in_force_stays() {
    let backend = Backend::start().await;
    let mut pki = Pki::new();
    let victim = pki.client("lost-laptop", Kind::Good);
    let server = CrlServer::start().await;
    let url = server.url("/ca.crl");
    let good = build_crl(&CrlSpec::base(5, &[&victim.serial]), pki.client_issuer());
    server.publish("/ca.crl", good.clone());
    let gw = start_gateway(&fetching_config(
        &pki,
        backend.addr,
        std::slice::from_ref(&url),
        "",
    ))
    .await;
    let addr = gw.addr("agents").unwrap();
    wait_fetches(&gw, &url, "updated", 1.0).await;
    let victim_cfg = no_resumption(&client_config(&pki, Some(&victim), &[b"http/1.1"]));

    // Same CA name, another key: a forged CRL that would un-revoke.
    let forger = rcgen::CertifiedIssuer::self_signed(
        ca_params("test client CA"),
        rcgen::KeyPair::generate().unwrap(),
    )
    .unwrap();
    let forged = build_crl(&CrlSpec::base(6, &[]), &forger);
    let mut truncated = good.clone();
    truncated.truncate(good.len() / 2);
    let older = build_crl(&CrlSpec::base(4, &[]), pki.client_issuer());
    let cases: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        ("forged", Some(forged), "bad_signature"),
        ("truncated", Some(truncated), "bad_crl"),
        ("older", Some(older), "older"),
        ("100 MiB", None, "too_large"),
    ];
    for (what, body, label) in cases {
        match body {
            Some(b) => server.publish("/ca.crl", b),
            None => server.huge(Some(100 * 1024 * 1024)),
        }
        wait_fetches(&gw, &url, label, 1.0).await;
        server.huge(None);
        server.publish("/ca.crl", good.clone());
        assert_eq!(
            admitted(addr, victim_cfg.clone()).await,
            Err(Some(AlertDescription::CertificateRevoked)),
            "{what}: the CRL in force must stay"
        );
        let v = revocation_api(&gw).await;
        let src = &v["listeners"][0]["sources"][0];
        assert_eq!(src["result"], label, "{what}: {v}");
        assert!(
            src["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: {v}"
        );
        assert_eq!(v["listeners"][0]["crls"][0]["number"], "5", "{what}: {v}");
    }
    // Redirects are followed (a moved publication point), a loop is not.
    let moved = build_crl(&CrlSpec::base(6, &[&victim.serial]), pki.client_issuer());
    server.publish("/moved/ca.crl", moved);
    server.redirect("/ca.crl", Some("/moved/ca.crl"));
    let ok = eventually(Duration::from_secs(10), || {
        metric(
            &gw,
            "certgate_crl_number{listener=\"agents\",issuer=\"CN=test client CA\"}",
        ) == 6.0
    })
    .await;
    assert!(ok, "{}", gw.metrics.encode());
    server.redirect("/moved/ca.crl", Some("/ca.crl"));
    wait_fetches(&gw, &url, "redirects", 1.0).await;
    assert_eq!(
        admitted(addr, victim_cfg.clone()).await,
        Err(Some(AlertDescription::CertificateRevoked))
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_crl_revokes_on_top_of_its_base_and_remove_from_crl_readmits() {
    let backend = Backend::start().await;
    let mut pki = Pki::new();
    let lost = pki.client("lost", Kind::Good);
    let held = pki.client("on-hold", Kind::Good);
    let stolen = pki.client("stolen-yesterday", Kind::Good);
    let fine = pki.client("fine", Kind::Good);
    let dir = pki.dir.path().to_path_buf();
    // The weekly base (number 10) revokes "lost" and holds "on-hold"; the
    // daily delta (number 11, for base 10) revokes "stolen-yesterday" and
    // releases the hold (removeFromCRL).
    let base = build_crl(
        &CrlSpec::base(10, &[&lost.serial, &held.serial]),
        pki.client_issuer(),
    );
    let delta = build_crl(
        &CrlSpec {
            number: 11,
            delta_base: Some(10),
            this_update: -60,
            next_update: 86_400,
            revoked: vec![stolen.serial.clone()],
            removed: vec![held.serial.clone()],
            freshest: None,
        },
        pki.client_issuer(),
    );
    // From files...
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.crl = vec![
        write(&dir, "base.crl", &base),
        write(&dir, "delta.crl", &delta),
    ];
    let gw = start_gateway(&cb.write(&dir)).await;
    let addr = gw.addr("agents").unwrap();
    let cfg = |c: &ClientCert| no_resumption(&client_config(&pki, Some(c), &[b"http/1.1"]));
    let revoked = Err(Some(AlertDescription::CertificateRevoked));
    assert_eq!(admitted(addr, cfg(&lost)).await, revoked);
    assert_eq!(
        admitted(addr, cfg(&stolen)).await,
        revoked,
        "revoked only in the delta"
    );
    assert_eq!(
        admitted(addr, cfg(&held)).await,
        Ok(()),
        "removed from the CRL by the delta"
    );
    assert_eq!(admitted(addr, cfg(&fine)).await, Ok(()));
    let v = revocation_api(&gw).await;
    let crl = &v["listeners"][0]["crls"][0];
    assert_eq!(crl["number"], "10", "{v}");
    assert_eq!(crl["delta"]["number"], "11", "{v}");
    assert_eq!(crl["entries"], 2, "{v}");
    gw.shutdown().await;

    // ...and from URLs, the same.
    let server = CrlServer::start().await;
    server.publish("/ca.crl", base.clone());
    server.publish("/ca+.crl", delta.clone());
    let urls = [server.url("/ca.crl"), server.url("/ca+.crl")];
    let gw = start_gateway(&fetching_config(&pki, backend.addr, &urls, "")).await;
    let addr = gw.addr("agents").unwrap();
    wait_fetches(&gw, &urls[1], "updated", 1.0).await;
    wait_fetches(&gw, &urls[0], "updated", 1.0).await;
    let ok = eventually(Duration::from_secs(5), || {
        metric(
            &gw,
            "certgate_crl_number{listener=\"agents\",issuer=\"CN=test client CA\"}",
        ) == 11.0
    })
    .await;
    assert!(ok, "{}", gw.metrics.encode());
    assert_eq!(admitted(addr, cfg(&stolen)).await, revoked);
    assert_eq!(admitted(addr, cfg(&held)).await, Ok(()));
    gw.shutdown().await;

    // A delta whose base is not loaded is an error naming both.
    let older_base = build_crl(&CrlSpec::base(9, &[]), pki.client_issuer());
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.crl = vec![
        write(&dir, "old-base.crl", &older_base),
        write(&dir, "delta.crl", &delta),
    ];
    let text = certgate_fails("check", &cb.write(&dir));
    assert!(
        text.contains("delta.crl") && text.contains("old-base.crl"),
        "{text}"
    );
    assert!(text.contains("number 10"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crl_from_certificates_fetches_what_devices_name_follows_freshest_crl_and_remembers_it_across_a_restart()
 {
    let backend = Backend::start().await;
    let mut pki = Pki::new();
    let server = CrlServer::start().await;
    pki.device_crl_uris = vec![server.url("/pki/ca.crl")];
    let first = pki.client("first-agent", Kind::Good);
    let victim = pki.client("stolen", Kind::Good);
    // The base names its delta's location (Freshest CRL), as AD CS does;
    // only the delta revokes the stolen device.
    let mut base = CrlSpec::base(3, &[]);
    base.freshest = Some(server.url("/pki/ca+.crl"));
    server.publish("/pki/ca.crl", build_crl(&base, pki.client_issuer()));
    let delta = CrlSpec {
        number: 4,
        delta_base: Some(3),
        this_update: -60,
        next_update: 86_400,
        revoked: vec![victim.serial.clone()],
        removed: vec![],
        freshest: None,
    };
    server.publish("/pki/ca+.crl", build_crl(&delta, pki.client_issuer()));
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_client_auth = format!(
        "crl_from_certificates = true\ncrl_refresh = \"1s\"\ncrl_cache_dir = \"{}\"\n",
        pki.dir.path().join("crl-cache").display()
    );
    let config = cb.write(pki.dir.path());
    let gw = start_gateway(&config).await;
    let addr = gw.addr("agents").unwrap();
    let cfg = |c: &ClientCert| no_resumption(&client_config(&pki, Some(c), &[b"http/1.1"]));
    // Nothing is fetched until a device names where its CA publishes.
    assert_eq!(admitted(addr, cfg(&first)).await, Ok(()));
    wait_fetches(&gw, &server.url("/pki/ca.crl"), "updated", 1.0).await;
    wait_fetches(&gw, &server.url("/pki/ca+.crl"), "updated", 1.0).await;
    let ok = eventually(Duration::from_secs(5), || {
        metric(
            &gw,
            "certgate_crl_number{listener=\"agents\",issuer=\"CN=test client CA\"}",
        ) == 4.0
    })
    .await;
    assert!(ok, "{}", gw.metrics.encode());
    let revoked = Err(Some(AlertDescription::CertificateRevoked));
    assert_eq!(admitted(addr, cfg(&victim)).await, revoked);
    let v = revocation_api(&gw).await;
    let sources = v["listeners"][0]["sources"].as_array().unwrap().clone();
    assert_eq!(sources.len(), 2, "{v}");
    assert_eq!(sources[0]["found_in"], "device_certificate", "{v}");
    assert_eq!(sources[1]["found_in"], "freshest_crl", "{v}");
    gw.shutdown().await;

    // After a restart, with the CA unreachable, what was learned is
    // enforced from the cache before any device is seen again.
    server.go_away();
    let gw = start_gateway(&config).await;
    let addr = gw.addr("agents").unwrap();
    let mut metas = String::new();
    for e in std::fs::read_dir(pki.dir.path().join("crl-cache")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            metas.push_str(&std::fs::read_to_string(p).unwrap());
        }
    }
    assert_eq!(
        admitted(addr, cfg(&victim)).await,
        revoked,
        "{metas}\n{}",
        revocation_api(&gw).await
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_is_fetched_over_https_with_the_system_ca_bundle_and_certgate_revocation_shows_it() {
    let backend = Backend::start().await;
    let mut pki = Pki::new();
    let victim = pki.client("lost", Kind::Good);
    // The publication point's certificate is from the test server CA; the
    // gateway (a child process) is given it as its CA bundle.
    let server = CrlServer::start_tls(&pki.server_cert, &pki.server_key).await;
    let url = server.https_url("/ca.crl");
    server.publish(
        "/ca.crl",
        build_crl(&CrlSpec::base(1, &[&victim.serial]), pki.client_issuer()),
    );
    let config = fetching_config(&pki, backend.addr, std::slice::from_ref(&url), "");
    let mut cmd = std::process::Command::new(certgate_bin());
    cmd.args(["run", "--config"])
        .arg(&config)
        .env("SSL_CERT_FILE", &pki.server_ca);
    let (mut proc, started) = spawn_logged(cmd, "0.0.0.0:0".parse().unwrap());
    let addr: std::net::SocketAddr = started
        .recv_timeout(Duration::from_secs(20))
        .expect("certgate started")
        .parse()
        .unwrap();
    proc.addr = addr;
    let cfg = no_resumption(&client_config(&pki, Some(&victim), &[b"http/1.1"]));
    let mut refused = false;
    for _ in 0..100 {
        if admitted(addr, cfg.clone()).await == Err(Some(AlertDescription::CertificateRevoked)) {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = proc.log.lock().unwrap().clone();
    assert!(refused, "the https CRL was not enforced; log:\n{log}");
    assert!(log.contains("fetched a new CRL"), "{log}");
    let admin = proc.admin_addr().to_string();
    let out = std::process::Command::new(certgate_bin())
        .args(["revocation", "--admin", &admin])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains(&url), "{table}");
    assert!(table.contains("CN=test client CA"), "{table}");
    assert!(
        table.contains("updated") || table.contains("not_modified"),
        "{table}"
    );

    // The CA publishes garbage: refused, and the log says which source and why.
    server.publish("/ca.crl", b"not a CRL".to_vec());
    let mut named = false;
    for _ in 0..100 {
        if proc.log.lock().unwrap().contains("bad_crl") {
            named = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = proc.log.lock().unwrap().clone();
    assert!(named, "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("bad_crl") && l.contains(&url) && l.contains("not a CRL")),
        "{log}"
    );
    assert_eq!(
        admitted(addr, cfg).await,
        Err(Some(AlertDescription::CertificateRevoked))
    );
    let _ = proc.wait_exit(Duration::from_millis(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_show_says_which_crl_revokes_a_device_and_the_cache_defaults_next_to_the_registry()
{
    let backend = Backend::start().await;
    let mut pki = Pki::new();
    let laptop = pki.client("laptop", Kind::Good);
    let server = CrlServer::start().await;
    let url = server.url("/ca.crl");
    server.publish(
        "/ca.crl",
        build_crl(&CrlSpec::base(1, &[]), pki.client_issuer()),
    );
    let dir = pki.dir.path().to_path_buf();
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_top = registry_table(&dir, "auto");
    cb.extra_client_auth = format!("crl_urls = [\"{url}\"]\ncrl_refresh = \"1s\"\n");
    let gw = start_gateway(&cb.write(&dir)).await;
    let addr = gw.addr("agents").unwrap();
    wait_fetches(&gw, &url, "updated", 1.0).await;
    assert!(
        std::fs::read_dir(dir.join("crl-cache")).unwrap().count() >= 2,
        "the CRL and its metadata are kept in crl-cache next to the registry"
    );
    let cfg = no_resumption(&client_config(&pki, Some(&laptop), &[b"http/1.1"]));
    assert_eq!(admitted(addr, cfg.clone()).await, Ok(()));
    let fp = sha256_hex(&laptop.der);
    let admin = gw.admin_addr().unwrap();
    let shown = eventually(Duration::from_secs(5), || {
        devices_cli(admin, &["show", &fp])
            .1
            .contains("not revoked (CRL number 1")
    })
    .await;
    assert!(shown, "{}", devices_cli(admin, &["show", &fp]).1);

    server.publish(
        "/ca.crl",
        build_crl(&CrlSpec::base(2, &[&laptop.serial]), pki.client_issuer()),
    );
    wait_fetches(&gw, &url, "updated", 2.0).await;
    assert_eq!(
        admitted(addr, cfg).await,
        Err(Some(AlertDescription::CertificateRevoked))
    );
    let (ok, out, err) = devices_cli(admin, &["show", &fp]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("agents: REVOKED by CRL number 2 from {url}")),
        "{out}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_url_removed_from_the_config_stops_being_enforced_and_the_fleet_keeps_its_sessions() {
    let backend = Backend::start().await;
    let mut pki = Pki::new();
    let victim = pki.client("victim", Kind::Good);
    let agent = pki.client("agent", Kind::Good);
    let server = CrlServer::start().await;
    let url = server.url("/ca.crl");
    server.publish(
        "/ca.crl",
        build_crl(&CrlSpec::base(1, &[&victim.serial]), pki.client_issuer()),
    );
    let config = fetching_config(&pki, backend.addr, std::slice::from_ref(&url), "");
    let gw = start_gateway(&config).await;
    let addr = gw.addr("agents").unwrap();
    wait_fetches(&gw, &url, "updated", 1.0).await;
    let victim_cfg = no_resumption(&client_config(&pki, Some(&victim), &[b"http/1.1"]));
    assert_eq!(
        admitted(addr, victim_cfg.clone()).await,
        Err(Some(AlertDescription::CertificateRevoked))
    );
    // The agent resumes across CRL changes: its session outlives them.
    let agent_cfg = client_config(&pki, Some(&agent), &[b"http/1.1"]);
    assert_eq!(admitted(addr, agent_cfg.clone()).await, Ok(()));
    server.publish(
        "/ca.crl",
        build_crl(&CrlSpec::base(2, &[&victim.serial]), pki.client_issuer()),
    );
    wait_fetches(&gw, &url, "updated", 2.0).await;
    assert_eq!(admitted(addr, agent_cfg.clone()).await, Ok(()));
    assert!(
        gw.metrics
            .encode()
            .lines()
            .any(|l| l.starts_with("certgate_tls_handshakes_total")
                && l.contains("resumed=\"true\"")
                && !l.ends_with(" 0")),
        "the agent did not resume after the CRL changed:\n{}",
        gw.metrics.encode()
    );

    // The admin drops the URL: its cached CRL is not enforced any more.
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_client_auth = format!(
        "crl_cache_dir = \"{}\"\n",
        pki.dir.path().join("crl-cache").display()
    );
    std::fs::write(&config, cb.render()).unwrap();
    assert!(gw.reload().await.is_ok());
    assert_eq!(admitted(addr, victim_cfg).await, Ok(()));
    gw.shutdown().await;
}
