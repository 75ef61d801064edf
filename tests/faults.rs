//! Faults on the files certgate was started with: the last good state keeps
//! serving when certificate files vanish or a CRL turns to garbage, and the
//! failure is visible (error naming the file, reload metrics).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

const FAILURES: &str = "certgate_reloads_total{result=\"failure\"}";
const LAST_OK: &str = "certgate_config_last_reload_successful";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_cert_files_keep_the_last_good_cert_serving() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let backend = Backend::start().await;
    let cb = ConfigBuilder::new(&pki, backend.addr);
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let client = no_resumption(&client_config(&pki, Some(&device), &[]));
    assert_eq!(
        get(addr, client.clone(), "/before", &[]).await.unwrap().0,
        200
    );

    let cert_pem = std::fs::read(&pki.server_cert).unwrap();
    let key_pem = std::fs::read(&pki.server_key).unwrap();
    std::fs::remove_file(&pki.server_cert).unwrap();
    std::fs::remove_file(&pki.server_key).unwrap();

    let err = gw.reload().await.unwrap_err().to_string();
    assert!(
        err.contains(&pki.server_cert.display().to_string()),
        "the error must name the missing file: {err}"
    );
    assert!(metric(&gw, FAILURES) >= 1.0);
    assert_eq!(metric(&gw, LAST_OK), 0.0);
    // New full handshakes still get the last good certificate.
    for i in 0..5 {
        let (s, _) = get(addr, client.clone(), &format!("/after/{i}"), &[])
            .await
            .unwrap();
        assert_eq!(s, 200);
    }

    // Files back: the next reload succeeds.
    std::fs::write(&pki.server_cert, cert_pem).unwrap();
    std::fs::write(&pki.server_key, key_pem).unwrap();
    // Files back as they were: the watcher sees it, and the failure signal
    // clears (the files on disk are again the ones in force).
    assert!(
        eventually(Duration::from_secs(3), || metric(&gw, LAST_OK) == 1.0).await,
        "restoring the files must clear last_reload_successful=0; metrics:\n{}",
        gw.metrics.encode()
    );
    assert_eq!(get(addr, client, "/restored", &[]).await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_replaced_with_garbage_keeps_the_old_crl_in_force() {
    let mut pki = Pki::new();
    let good = pki.client("device-a", Kind::Good);
    let revoked = pki.client("device-b", Kind::Good);
    let crl = pki.crl("clients", &[&revoked], true);
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.crl = vec![crl.clone()];
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let good_client = no_resumption(&client_config(&pki, Some(&good), &[]));
    let revoked_client = no_resumption(&client_config(&pki, Some(&revoked), &[]));
    let revoked_line =
        "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"revoked\"}";

    assert!(get(addr, revoked_client.clone(), "/b", &[]).await.is_err());
    // Counted just after the client read its alert.
    metric_at_least(&gw, revoked_line, 1.0).await;
    assert_eq!(metric(&gw, revoked_line), 1.0);

    for garbage in [
        &b"-----BEGIN X509 CRL-----\nnot base64!\n-----END X509 CRL-----\n"[..],
        &b"\x30\x82\x01\x00 truncated DER"[..],
        &b""[..],
    ] {
        std::fs::write(&crl, garbage).unwrap();
        let err = gw.reload().await.unwrap_err().to_string();
        assert!(
            err.contains(&crl.display().to_string()),
            "the error must name the CRL file: {err}"
        );
        assert_eq!(metric(&gw, LAST_OK), 0.0);
        // The old CRL still refuses device-b; device-a is still admitted.
        let before = metric(&gw, revoked_line);
        assert!(get(addr, revoked_client.clone(), "/b", &[]).await.is_err());
        assert_eq!(metric(&gw, revoked_line), before + 1.0);
        assert_eq!(
            get(addr, good_client.clone(), "/a", &[]).await.unwrap().0,
            200
        );
    }
    assert_eq!(
        backend.count(),
        3,
        "only device-a's requests reached the backend"
    );
}

/// The backend dies in the middle of a 1 GiB response (backpressure keeps
/// most of it unsent): the client's body ends in an error (no hang, no
/// silently short "complete" body), and the next request is served over a
/// new backend connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_response_gives_a_clean_error_and_the_pool_recovers() {
    use http_body_util::BodyExt;
    let f = Fixture::start().await;
    let (gw, addr, client) = (&f.gw, f.addr, f.device_client());
    // Warm the pool so the next request reuses a pooled connection.
    assert_eq!(
        get(addr, client.clone(), "/warm", &[]).await.unwrap().0,
        200
    );

    let mut sender = h1_sender(addr, client.clone()).await.unwrap();
    let req = http::Request::get("/download/1073741824")
        .header("host", "localhost")
        .body(empty())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while got < 1024 * 1024 {
        let frame = body.frame().await.unwrap().unwrap();
        got += frame.data_ref().map_or(0, |d| d.len() as u64);
    }
    let (backend_addr, seen) = f.backend.kill();
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match body.frame().await {
                Some(Ok(f)) => got += f.data_ref().map_or(0, |d| d.len() as u64),
                Some(Err(e)) => return Err(e.to_string()),
                None => return Ok(got),
            }
        }
    })
    .await
    .expect("the client hangs after the backend died");
    assert!(
        outcome.is_err(),
        "a cut-off body must end in an error, not look complete ({got} of 1 GiB)"
    );
    assert!(got < 1024 * 1024 * 1024);
    println!("backend killed after {got} bytes; client saw: {outcome:?}");

    // The backend comes back on the same address: served at once.
    let _backend = Backend::start_on(backend_addr, seen).await;
    let (status, body) = get(addr, client.clone(), "/after", &[]).await.unwrap();
    assert_eq!((status, &body[..]), (http::StatusCode::OK, &b"ok"[..]));
    assert!(
        metric(
            gw,
            "certgate_http_requests_total{listener=\"agents\",upstream=\"core\",code=\"2xx\"}"
        ) >= 3.0
    );
}

/// A backend that accepts connections and never answers: 504 at the
/// response timeout, and the gateway stays responsive meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_accepts_but_never_answers_gives_504_at_the_timeout() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
            if conns.len() > 100 {
                break;
            }
        }
    });
    let mut cb = ConfigBuilder::new(&pki, silent_addr);
    cb.extra_upstream = "response_timeout = \"500ms\"".into();
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let client = client_config(&pki, Some(&device), &[]);
    let started = std::time::Instant::now();
    let (status, _) = get(addr, client.clone(), "/never", &[]).await.unwrap();
    let took = started.elapsed();
    assert_eq!(status, 504);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(
        metric(
            &gw,
            "certgate_upstream_errors_total{upstream=\"core\",kind=\"response_timeout\"}"
        ),
        1.0
    );
    held.abort();
}

/// certgate in its own mount namespace with the registry directory on a
/// small tmpfs, so the test can fill it or make it read-only (as root,
/// `chmod` would not stop a write). Loopback only; the namespace dies with
/// the process.
struct RegistryOnTmpfs {
    proc: Proc,
    admin: std::net::SocketAddr,
    dir: std::path::PathBuf,
}

impl RegistryOnTmpfs {
    /// `None` when not root: a mount namespace needs CAP_SYS_ADMIN (CI and
    /// `scripts/test.sh` under sudo have it; a plain user run says so).
    fn start(pki: &Pki, backend: std::net::SocketAddr) -> Option<RegistryOnTmpfs> {
        let uid = std::process::Command::new("id").arg("-u").output().unwrap();
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            eprintln!("SKIPPED: the full-disk registry test needs root for its mount namespace");
            return None;
        }
        require_tool("unshare");
        require_tool("nsenter");
        let dir = pki.dir.path().join("registry");
        std::fs::create_dir_all(&dir).unwrap();
        let mut cb = ConfigBuilder::new(pki, backend);
        cb.extra_top = registry_table(&dir, "manual");
        let config = cb.write(pki.dir.path());
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o size=4m tmpfs "$0" && exec "$@""#)
            .arg(&dir)
            .arg(certgate_bin())
            .args(["run", "--config"])
            .arg(&config);
        let (mut proc, started) = spawn_logged(cmd, "127.0.0.1:0".parse().unwrap());
        let addr = started
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("not started:\n{}", proc.log.lock().unwrap()));
        proc.addr = addr.parse().unwrap();
        let admin = proc.admin_addr();
        Some(RegistryOnTmpfs { proc, admin, dir })
    }

    /// Runs a shell command inside certgate's mount namespace.
    fn inside(&self, script: &str) {
        let status = std::process::Command::new("nsenter")
            .args(["-t", &self.proc.pid().to_string(), "-m", "--", "sh", "-c"])
            .arg(script)
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "inside the namespace: {script}");
    }

    async fn approve(&self, c: &ClientCert) -> (http::StatusCode, serde_json::Value) {
        let fp = sha256_hex(&c.der);
        device_action(self.admin, &fp, "approve").await
    }
}

/// Must-show 3, registry: with its directory full or read-only (a
/// read-only bind mount over it: the open store file stays writable, as
/// after a `chmod`, but nothing new can be created), admitted
/// devices keep being served from the in-memory snapshot, the failure is
/// logged and counted, and an admin change fails loudly (an error answer,
/// not applied) instead of pretending to succeed; once space is back,
/// changes are saved again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_registry_keeps_serving_and_admin_writes_fail_loudly() {
    let mut pki = Pki::new();
    let a = pki.client("device-a", Kind::Good);
    let b = pki.client("device-b", Kind::Good);
    let c = pki.client("device-c", Kind::Good);
    let backend = Backend::start().await;
    let Some(gw) = RegistryOnTmpfs::start(&pki, backend.addr) else {
        return;
    };
    let addr = gw.proc.addr;
    let client = |d: &ClientCert| no_resumption(&client_config(&pki, Some(d), &[]));
    const WRITE_ERRORS: &str = "certgate_registry_write_errors_total";

    // a: seen, approved, served. b: seen (pending), saved to disk.
    assert!(get(addr, client(&a), "/", &[]).await.is_err());
    assert!(get(addr, client(&b), "/", &[]).await.is_err());
    let (s, v) = gw.approve(&a).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(get(addr, client(&a), "/a1", &[]).await.unwrap().0, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(scraped(gw.admin, WRITE_ERRORS).await, 0.0);

    // The disk fills up.
    gw.inside(r#"dd if=/dev/zero of="$0/filler" bs=64k 2>/dev/null; true"#);
    let (s, v) = gw.approve(&b).await;
    assert!(
        s.is_server_error(),
        "approval on a full disk answered {s}: {v}"
    );
    println!("approve on a full disk: {s} {v}");
    assert!(
        get(addr, client(&b), "/", &[]).await.is_err(),
        "an approval that was not saved must not be applied"
    );
    // Admitted devices are served from memory; a stranger is still
    // refused and its first-seen record fails to save, counted.
    for i in 0..3 {
        assert_eq!(
            get(addr, client(&a), &format!("/full{i}"), &[])
                .await
                .unwrap()
                .0,
            200
        );
    }
    assert!(get(addr, client(&c), "/", &[]).await.is_err());
    let mut counted = false;
    for _ in 0..50 {
        if scraped(gw.admin, WRITE_ERRORS).await >= 2.0 {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        counted,
        "write errors counted:\n{}",
        gw.proc.log.lock().unwrap()
    );
    assert!(
        gw.proc
            .log
            .lock()
            .unwrap()
            .contains("admin change NOT saved")
    );

    // Space is back: the same approval is saved and applied.
    gw.inside(r#"rm -f "$0/filler""#);
    let (s, v) = gw.approve(&b).await;
    assert_eq!(s, 200, "after space was freed: {v}");
    assert_eq!(get(addr, client(&b), "/b1", &[]).await.unwrap().0, 200);

    // Read-only: same story.
    gw.inside(r#"mount --bind "$0" "$0" && mount -o remount,bind,ro "$0""#);
    let (s, v) = gw.approve(&c).await;
    println!("approve on a read-only dir: {s} {v}");
    assert!(
        s.is_server_error(),
        "approval on a read-only fs answered {s}: {v}"
    );
    assert!(get(addr, client(&c), "/", &[]).await.is_err());
    assert_eq!(get(addr, client(&a), "/ro", &[]).await.unwrap().0, 200);
    gw.inside(r#"umount "$0""#);
    let (s, v) = gw.approve(&c).await;
    assert_eq!(s, 200, "after the fs is writable again: {v}");
    assert_eq!(get(addr, client(&c), "/c1", &[]).await.unwrap().0, 200);
}
