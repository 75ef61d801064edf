//! Operations: Prometheus (promtool and a real server), the access log,
//! CRL staleness policy, /readyz and systemd notifications.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;

/// Some traffic of every kind: successes, a refused handshake, a 502.
async fn traffic(f: &Fixture) {
    for i in 0..7 {
        let (s, _) = get(f.addr, f.device_client(), &format!("/ok/{i}"), &[])
            .await
            .unwrap();
        assert_eq!(s, 200);
    }
    assert!(
        get(f.addr, client_config(&f.pki, None, &[]), "/anon", &[])
            .await
            .is_err()
    );
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    require_tool("promtool");
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_a_live_scrape_and_the_alert_rules() {
    let f = Fixture::start().await;
    traffic(&f).await;
    let (s, text) = http_plain(f.gw.admin_addr().unwrap(), "GET", "/metrics")
        .await
        .unwrap();
    assert_eq!(s, 200);
    for name in [
        "certgate_tls_handshake_duration_seconds_bucket",
        "certgate_http_request_duration_seconds_bucket",
        "certgate_http_response_body_bytes_total",
        "certgate_process_resident_memory_bytes",
        "certgate_process_open_fds",
        "certgate_process_cpu_seconds_total",
        "certgate_upstream_server_up",
        "certgate_client_auth_total",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    let (ok, out) = promtool(&["check", "metrics"], Some(&text));
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}"
    );
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yml");
    let (ok, out) = promtool(&["check", "rules", rules], None);
    assert!(ok, "promtool check rules:\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_certgate_and_counts_its_requests() {
    require_tool("prometheus");
    let f = Fixture::start().await;
    traffic(&f).await;
    let admin = f.gw.admin_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: certgate\n    static_configs:\n      - targets: ['{admin}']\n"
        ),
    )
    .unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _prom = ProcGuard(child);
    let prom: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let query = "/api/v1/query?query=sum(certgate_http_requests_total%7Bcode%3D%222xx%22%7D)";
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(60) {
        if let Ok((s, body)) = http_plain(prom, "GET", query).await
            && s == StatusCode::OK
        {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if let Some(value) = v["data"]["result"][0]["value"][1].as_str() {
                last = value.to_string();
                if value == "7" {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("Prometheus never reported 7 requests (last answer {last:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_for_a_success_a_refused_handshake_and_a_502() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let backend = Backend::start().await;
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_upstream = format!(
        "\n[[listener]]\nname = \"broken\"\nlisten = \"127.0.0.1:0\"\nupstream = \"gone\"\n\
         [listener.tls]\n[[listener.tls.certificate]]\ncert = \"{}\"\nkey = \"{}\"\n\
         [listener.client_auth]\nmode = \"required\"\nca = [\"{}\"]\n\
         [[upstream]]\nname = \"gone\"\nservers = [\"{gone}\"]\n",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.client_ca.display()
    );
    let config = cb.write(pki.dir.path());
    let mut child = Command::new(certgate_bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let access: Arc<Mutex<Vec<String>>> = Arc::default();
    let diag: Arc<Mutex<Vec<String>>> = Arc::default();
    for (stream, sink) in [
        (
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            access.clone(),
        ),
        (Box::new(stderr), diag.clone()),
    ] {
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
    }
    let _guard = ProcGuard(child);
    let addr_of = |name: &str| {
        diag.lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("listening") && l.contains(&format!("listener={name}")))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
    };
    let start = Instant::now();
    while (addr_of("agents").is_none() || addr_of("broken").is_none())
        && start.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (agents, broken) = (addr_of("agents").unwrap(), addr_of("broken").unwrap());
    let client = client_config(&pki, Some(&device), &[]);
    let (s, _) = get(agents, client.clone(), "/checkin?id=7", &[])
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert!(
        get(agents, client_config(&pki, None, &[]), "/anon", &[])
            .await
            .is_err()
    );
    let (s, _) = get(broken, client.clone(), "/down", &[]).await.unwrap();
    assert_eq!(s, 502);

    let fp = sha256_hex(&device.der);
    let mut lines = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        lines = access.lock().unwrap().clone();
        if lines.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for l in &lines {
        println!("{l}");
    }
    let find = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no access line with {needle}: {lines:#?}"))
            .clone()
    };
    let ok = find("status=200");
    for field in [
        "listener=agents",
        "peer=127.0.0.1:",
        &format!("fingerprint={fp}"),
        "subject=\"CN=device-a,O=Fleet\"",
        "tls_version=1.2",
        "cipher=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "method=GET",
        "path=\"/checkin?id=7\"",
        "bytes_in=0",
        "bytes_out=2",
        &format!("upstream_server={}", backend.addr),
        "handshake_ms=",
        "upstream_ms=",
        "total_ms=",
    ] {
        assert!(ok.contains(field), "{field} missing in {ok}");
    }
    let refused = find("event=handshake_refused");
    assert!(
        refused.contains("reason=no_certificate") && refused.contains("peer=127.0.0.1:"),
        "{refused}"
    );
    let bad = find("status=502");
    assert!(
        bad.contains("listener=broken") && bad.contains("path=/down"),
        "{bad}"
    );
    assert!(
        diag.lock()
            .unwrap()
            .iter()
            .all(|l| !l.contains("status=200")),
        "access lines stay out of the diagnostics"
    );
}

/// A child process started by a test; killed on drop.
struct ProcGuard(std::process::Child);

impl Drop for ProcGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_crl_refuses_when_fail_closed_and_admits_when_fail_open() {
    for (policy, admitted) in [("fail_closed", false), ("fail_open", true)] {
        let mut pki = Pki::new();
        let device = pki.client("device-a", Kind::Good);
        let backend = Backend::start().await;
        let mut cb = ConfigBuilder::new(&pki, backend.addr);
        cb.crl = vec![pki.stale_crl("client-ca.crl")];
        cb.extra_client_auth = format!("crl_stale = \"{policy}\"\n");
        let gw = spawn_certgate(&cb.write(pki.dir.path()));
        let admin = gw.admin_addr();
        let r = get(gw.addr, client_config(&pki, Some(&device), &[]), "/x", &[]).await;
        assert_eq!(r.is_ok(), admitted, "{policy}: {r:?}");
        if admitted {
            assert_eq!(r.unwrap().0, 200);
        } else {
            assert_eq!(
                scraped(admin, "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"crl_expired\"}").await,
                1.0
            );
        }
        assert_eq!(
            scraped(
                admin,
                "certgate_crl_stale{listener=\"agents\",issuer=\"CN=test client CA\"}"
            )
            .await,
            1.0,
            "{policy}"
        );
        assert!(
            scraped(admin, "certgate_crl_next_update_timestamp_seconds{listener=\"agents\",issuer=\"CN=test client CA\"}").await
                > 0.0
        );
        let log = gw.log.lock().unwrap().clone();
        let line = log
            .lines()
            .find(|l| l.contains("past its nextUpdate"))
            .unwrap_or_else(|| panic!("{policy}: no staleness warning; log:\n{log}"));
        assert!(line.contains(policy), "{line}");
        println!("{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_upstream() {
    let f = Fixture::start().await;
    let admin = f.gw.admin_addr().unwrap();
    let (s, body) = http_plain(admin, "GET", "/readyz").await.unwrap();
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("\"ready\":true"), "{body}");
    let (s, _) = http_plain(admin, "GET", "/healthz").await.unwrap();
    assert_eq!(s, 200);
    let Fixture { backend, gw, .. } = f;
    let backend_addr = backend.addr;
    drop(backend);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s, body) = http_plain(admin, "GET", "/readyz").await.unwrap();
    assert_eq!(s, 503, "{body}");
    assert!(
        body.contains(&backend_addr.to_string()) && body.contains("\"up\":false"),
        "{body}"
    );
    assert_eq!(
        metric(
            &gw,
            &format!("certgate_upstream_server_up{{upstream=\"core\",server=\"{backend_addr}\"}}")
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notifications_are_sent_for_ready_reload_and_stop() {
    let pki = Pki::new();
    let backend = Backend::start().await;
    let config = ConfigBuilder::new(&pki, backend.addr).write(pki.dir.path());
    let sock_path = pki.path("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut cmd = Command::new(certgate_bin());
    cmd.args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path);
    let (mut gw, started) = spawn_logged(cmd, "127.0.0.1:0".parse().unwrap());
    started.recv_timeout(Duration::from_secs(20)).unwrap();
    let recv = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("no notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = recv();
    assert!(
        ready.starts_with("READY=1\n") && ready.contains(&format!("MAINPID={}", gw.pid())),
        "{ready}"
    );
    gw.signal("HUP");
    let reloading = recv();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let ready = recv();
    assert!(
        ready.starts_with("READY=1") && ready.contains("reload succeeded"),
        "{ready}"
    );
    gw.signal("TERM");
    let stopping = recv();
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    println!("{ready:?} / {reloading:?} / {stopping:?}");
}

/// Every metric name the shipped dashboard and alert rules use.
fn metric_names_shipped() -> std::collections::BTreeSet<String> {
    let mut text = String::new();
    for f in [
        "deploy/grafana/certgate-dashboard.json",
        "deploy/prometheus/alerts.yml",
    ] {
        text.push_str(
            &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(f)).unwrap(),
        );
    }
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("certgate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_use_is_there_before_any_traffic() {
    let crls = CrlServer::start().await;
    let mut pki = Pki::new();
    let _device = pki.client("device-a", Kind::Good);
    let crl = pki.crl("devices.crl", &[], true);
    crls.publish(
        "/fetched.crl",
        std::fs::read(pki.crl("fetched.crl", &[], false)).unwrap(),
    );
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_top = registry_table(pki.dir.path(), "manual");
    cb.crl = vec![crl];
    cb.extra_client_auth = format!(
        "crl_urls = [\"{}\"]\nocsp = \"prefer\"\n",
        crls.url("/fetched.crl")
    );
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let admin = gw.admin_addr().unwrap();
    let (s, text) = http_plain(admin, "GET", "/metrics").await.unwrap();
    assert_eq!(s, StatusCode::OK);
    let missing: Vec<String> = metric_names_shipped()
        .into_iter()
        .filter(|name| {
            !text
                .lines()
                .any(|l| !l.starts_with('#') && l.starts_with(name.as_str()))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "missing before any traffic: {missing:?}\n{text}"
    );
    let (ok, out) = promtool(&["check", "metrics"], Some(&text));
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}"
    );
    gw.shutdown().await;
}
