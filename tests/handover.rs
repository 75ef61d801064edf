//! The running binary: SIGHUP and `POST /api/reload`, and a zero-downtime
//! hand-over of the listening sockets to a new certgate process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

const SUCCESSES: &str = "certgate_reloads_total{result=\"success\"}";
const FAILURES: &str = "certgate_reloads_total{result=\"failure\"}";

fn config_with_handover(
    pki: &Pki,
    backend: std::net::SocketAddr,
) -> (ConfigBuilder, std::path::PathBuf) {
    let sock = pki.path("handover.sock");
    let mut cb = ConfigBuilder::new(pki, backend);
    // With a device registry: its store is single-writer and must move to
    // the successor too.
    cb.extra_top = format!(
        "handover_socket = \"{}\"\n{}",
        sock.display(),
        registry_table(pki.dir.path(), "auto")
    );
    (cb, sock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_the_admin_api_reload_a_running_certgate() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let backend = Backend::start().await;
    let cb = ConfigBuilder::new(&pki, backend.addr);
    let config = cb.write(pki.dir.path());
    let gw = spawn_certgate(&config);
    let admin = gw.admin_addr();
    let client = client_config(&pki, Some(&device), &[]);
    assert_eq!(scraped(admin, SUCCESSES).await, 0.0);

    gw.signal("HUP");
    assert!(
        eventually_async(|| async { scraped(admin, SUCCESSES).await == 1.0 }).await,
        "SIGHUP must reload; log:\n{}",
        gw.log.lock().unwrap()
    );

    let (status, body) = http_plain(admin, "POST", "/api/reload").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.trim(), r#"{"changes":[],"result":"success"}"#);
    assert_eq!(scraped(admin, SUCCESSES).await, 2.0);
    let (status, _) = http_plain(admin, "GET", "/api/reload").await.unwrap();
    assert_eq!(status, 405);

    // A broken config is refused with the file and line named; the old
    // config keeps serving.
    std::fs::write(&config, "[[listener]\nname = \"agents\"\n").unwrap();
    let (status, body) = http_plain(admin, "POST", "/api/reload").await.unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("\"result\":\"failure\""), "{body}");
    assert!(
        body.contains("certgate.toml"),
        "the error names the file: {body}"
    );
    assert!(scraped(admin, FAILURES).await >= 1.0);
    assert_eq!(
        scraped(admin, "certgate_config_last_reload_successful").await,
        0.0
    );
    let (status, _) = get(gw.addr, client.clone(), "/still-served", &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(gw.log.lock().unwrap().contains("stay in force"));
}

async fn eventually_async<F, Fut>(mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_binary_takes_over_the_sockets_under_load_without_a_failed_request() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let backend = Backend::start().await;
    let (cb, sock) = config_with_handover(&pki, backend.addr);
    let config = cb.write(pki.dir.path());
    let mut old = spawn_certgate(&config);
    let addr = old.addr;
    let client = client_config(&pki, Some(&device), &[]);

    let load = Load::start(addr, client.clone(), 16, Duration::from_millis(5), true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = load.ok();

    let new = spawn_certgate_with(&config, &["--takeover"]);
    assert_eq!(new.addr, addr, "the successor serves the same socket");
    let exit = tokio::task::spawn_blocking(move || {
        let code = old.wait_exit(Duration::from_secs(30));
        (code, old)
    })
    .await
    .unwrap();
    let (code, old) = exit;
    assert_eq!(
        code,
        Some(0),
        "the old process drains and exits 0; log:\n{}",
        old.log.lock().unwrap()
    );
    let at_exit = load.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reconnects = load.reconnects.load(std::sync::atomic::Ordering::Relaxed);
    let (ok, failures) = load.finish().await;
    println!(
        "requests: {before} before the takeover, {} during it, {} after the old process exited; \
         {reconnects} keep-alive reconnects (the old process closed idle keep-alive connections)",
        at_exit - before,
        ok - at_exit
    );
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(ok - at_exit > 100, "the new process serves the load");
    let old_log = old.log.lock().unwrap().clone();
    assert!(old_log.contains("handing them over"), "{old_log}");
    let new_log = new.log.lock().unwrap().clone();
    assert!(
        new_log.contains("took over the listening sockets"),
        "{new_log}"
    );
    assert!(sock.exists(), "the successor owns the handover socket now");
    // The successor owns the device store: the device is recorded and an
    // administrator change is saved.
    let new_admin = new.admin_addr();
    let fp = sha256_hex(&device.der);
    let (s, v) = device_action(new_admin, &fp, "block").await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = device_action(new_admin, &fp, "unblock").await;
    assert_eq!(s, 200);
    let (s, _) = device_action(new_admin, &fp, "approve").await;
    assert_eq!(s, 200);

    // And it can hand over again: a third process takes over from the second.
    let mut second = new;
    let third = spawn_certgate_with(&config, &["--takeover"]);
    assert_eq!(third.addr, addr);
    let code = tokio::task::spawn_blocking(move || second.wait_exit(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    let (status, _) = get(addr, client, "/third", &[]).await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_certgate_without_takeover_refuses_to_start() {
    let pki = Pki::new();
    let backend = Backend::start().await;
    let (cb, _) = config_with_handover(&pki, backend.addr);
    let config = cb.write(pki.dir.path());
    let first = spawn_certgate(&config);
    let err = certgate_fails("run", &config);
    assert!(
        err.contains("another certgate is running") && err.contains("--takeover"),
        "{err}"
    );
    // The first one is untouched.
    let (status, _) = http_plain(first.admin_addr(), "GET", "/healthz")
        .await
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_with_nobody_to_take_over_from_starts_fresh() {
    let pki = Pki::new();
    let backend = Backend::start().await;
    let (cb, _) = config_with_handover(&pki, backend.addr);
    let config = cb.write(pki.dir.path());
    let gw = spawn_certgate_with(&config, &["--takeover"]);
    assert!(gw.log.lock().unwrap().contains("starting fresh"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_socket_activation_serves_the_passed_socket() {
    require_tool("systemd-socket-activate");
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let backend = Backend::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.listen = addr.to_string();
    let config = cb.write(pki.dir.path());
    // systemd-socket-activate binds the socket and starts certgate (same
    // pid, LISTEN_FDS=1) when the first connection arrives; that connection
    // waits in the backlog and must be served.
    let mut cmd = std::process::Command::new("systemd-socket-activate");
    cmd.arg("-l")
        .arg(addr.to_string())
        .arg(certgate_bin())
        .args(["run", "--config"])
        .arg(&config);
    let (gw, _) = spawn_logged(cmd, addr);
    let ready = Instant::now();
    let mut served = None;
    while ready.elapsed() < Duration::from_secs(5) && served.is_none() {
        served = get(
            addr,
            client_config(&pki, Some(&device), &[]),
            "/activated",
            &[],
        )
        .await
        .ok();
        if served.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let log = gw.log.lock().unwrap().clone();
    let (status, _) = served.unwrap_or_else(|| panic!("not served; log:\n{log}"));
    assert_eq!(status, 200);
    assert!(log.contains("socket activation"), "{log}");
    assert!(log.contains("serving a socket inherited"), "{log}");
}
