//! Behaviour: several gateways sharing one device registry on a real
//! PostgreSQL, behind a real HAProxy (TCP, send-proxy-v2). Three certgate
//! processes; an admin change made on any of them takes effect on all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;

/// One certgate process of the fleet.
struct Instance {
    proc: Proc,
    admin: SocketAddr,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

/// PostgreSQL, three gateways (a, b, c) in manual mode and HAProxy in
/// front of them.
struct Fleet {
    pki: Pki,
    backend: Backend,
    pg: PgServer,
    gws: Vec<Instance>,
    lb: Haproxy,
}

fn instance_config(
    pki: &Pki,
    backend: SocketAddr,
    url: &str,
    name: &str,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut cb = ConfigBuilder::new(pki, backend);
    cb.extra_listener = "proxy_protocol = \"v2\"\nproxy_from = [\"127.0.0.1\"]\n".into();
    cb.extra_top = format!(
        "[registry]\npath = \"{}\"\napproval = \"manual\"\nbackend = \"postgres\"\nurl = \"{url}\"\ninstance = \"{name}\"\n",
        dir.path().join("devices.redb").display()
    );
    let config = cb.write(dir.path());
    (dir, config)
}

fn start_instance(pki: &Pki, backend: SocketAddr, url: &str, name: &str) -> Instance {
    let (dir, config) = instance_config(pki, backend, url, name);
    let proc = spawn_certgate(&config);
    let admin = proc.admin_addr();
    Instance {
        proc,
        admin,
        config,
        _dir: dir,
    }
}

async fn fleet() -> Fleet {
    require_tool("haproxy");
    let pki = Pki::new();
    let backend = Backend::start().await;
    let pg = PgServer::start();
    let gws: Vec<Instance> = ["a", "b", "c"]
        .iter()
        .map(|n| start_instance(&pki, backend.addr, &pg.url(), n))
        .collect();
    let lb = Haproxy::start_many(&gws.iter().map(|g| g.proc.addr).collect::<Vec<_>>());
    Fleet {
        pki,
        backend,
        pg,
        gws,
        lb,
    }
}

/// A device's status as an instance's API reports it.
async fn status_on(admin: SocketAddr, fp: &str) -> Option<String> {
    let (s, v) = admin_call(admin, "GET", &format!("/api/devices/{fp}"), None, None).await;
    (s == StatusCode::OK).then(|| v["status"].as_str().unwrap_or("").to_string())
}

async fn change_on(admin: SocketAddr, fp: &str, action: &str) -> (StatusCode, serde_json::Value) {
    admin_call(
        admin,
        "POST",
        &format!("/api/devices/{fp}/{action}"),
        None,
        None,
    )
    .await
}

/// Waits (bounded) until every admin address reports `status` for `fp`;
/// how long it took.
async fn until_everywhere(
    admins: &[SocketAddr],
    fp: &str,
    status: &str,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut pending: Vec<SocketAddr> = admins.to_vec();
    while start.elapsed() < limit {
        let mut left = Vec::new();
        for a in pending {
            if status_on(a, fp).await.as_deref() != Some(status) {
                left.push(a);
            }
        }
        if left.is_empty() {
            return Some(start.elapsed());
        }
        pending = left;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// The sum of every series of a metric family scraped from an instance.
async fn scraped_sum(admin: SocketAddr, prefix: &str) -> f64 {
    let (_, text) = http_plain(admin, "GET", "/metrics").await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Must-show 1: a device approved through instance A's API is admitted by
/// B and C (the handshake through the balancer reaches each in turn);
/// propagation latency over 100 approvals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_on_one_gateway_admits_the_device_on_every_gateway() {
    let mut f = fleet().await;
    let device = f.pki.client("fleet-device", Kind::Good);
    let fp = sha256_hex(&device.der);
    let cfg = no_resumption(&client_config(&f.pki, Some(&device), &[]));

    // Pending: refused by every instance (round robin reaches all three),
    // and recorded once in the shared registry.
    for i in 0..3 {
        let r = get_over(
            tcp_from("127.0.0.2", f.lb.addr).await,
            cfg.clone(),
            &format!("/before-{i}"),
        )
        .await;
        assert!(r.is_err(), "a pending device was served");
    }
    let admins: Vec<SocketAddr> = f.gws.iter().map(|g| g.admin).collect();
    assert!(
        until_everywhere(&admins, &fp, "pending", Duration::from_secs(5))
            .await
            .is_some(),
        "the pending device is not listed on every instance"
    );
    let (s, v) = change_on(admins[0], &fp, "approve").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        until_everywhere(&admins[1..], &fp, "approved", Duration::from_secs(2))
            .await
            .is_some()
    );
    for i in 0..6 {
        let status = get_over(
            tcp_from("127.0.0.2", f.lb.addr).await,
            cfg.clone(),
            &format!("/after-{i}"),
        )
        .await
        .unwrap_or_else(|e| panic!("approved device refused on connection {i}: {e}"));
        assert_eq!(status, 200);
        // Through the balancer (PROXY v2): the client's own address.
        assert_eq!(f.backend.last().headers["x-forwarded-for"], "127.0.0.2");
    }
    // Around the balancer: a direct connection from outside proxy_from,
    // and one from the balancer's address with a bad header, are closed
    // before TLS, on every instance.
    for g in &f.gws {
        assert!(
            get_over(
                tcp_from("127.0.0.3", g.proc.addr).await,
                cfg.clone(),
                "/direct"
            )
            .await
            .is_err(),
            "a direct connection from outside proxy_from was served"
        );
        let mut bad = tcp_from("127.0.0.1", g.proc.addr).await;
        tokio::io::AsyncWriteExt::write_all(&mut bad, b"PROXY TCP4 not-an-address\r\n")
            .await
            .unwrap();
        assert!(
            get_over(bad, cfg.clone(), "/bad-header").await.is_err(),
            "a bad PROXY header was accepted"
        );
        let refused = |r: &str| {
            format!("certgate_connections_refused_total{{listener=\"agents\",reason=\"{r}\"}}")
        };
        assert!(scraped(g.admin, &refused("proxy_from")).await >= 1.0);
        assert!(scraped(g.admin, &refused("proxy_header")).await >= 1.0);
    }
    for g in &f.gws {
        let served = scraped_sum(g.admin, "certgate_http_requests_total{").await;
        assert!(
            served >= 2.0,
            "instance at {} served {served} requests; round robin should give it 2",
            g.admin
        );
    }

    // 100 approvals on A, each timed until B and C report it.
    let mut took = Vec::new();
    for i in 0..100u32 {
        let fp = sha256_hex(format!("pre-approved device {i}").as_bytes());
        let (s, v) = change_on(admins[0], &fp, "approve").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let t = until_everywhere(&admins[1..], &fp, "approved", Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("approval {i} did not reach B and C within 5 s"));
        took.push(t);
    }
    took.sort();
    let (p50, p99) = (percentile(&took, 0.5), percentile(&took, 0.99));
    println!(
        "approval propagation A -> B and C over {} approvals: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        took.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        took[took.len() - 1].as_secs_f64() * 1e3
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    drop(f.lb);
    f.gws.clear();
}

/// An open keep-alive TLS connection through the balancer; the task ends
/// when the gateway closes it.
struct Held {
    sender: hyper::client::conn::http1::SendRequest<
        http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>,
    >,
    closed: tokio::task::JoinHandle<()>,
}

async fn hold(lb: SocketAddr, cfg: std::sync::Arc<rustls::ClientConfig>) -> Held {
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp_from("127.0.0.2", lb).await,
        )
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let closed = tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(
            http::Request::get("/held")
                .header("host", "localhost")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    use http_body_util::BodyExt as _;
    resp.into_body().collect().await.unwrap();
    Held { sender, closed }
}

/// Must-show 2: a block made on C closes the device's open keep-alive
/// connections held on A and B (and C) within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_on_one_gateway_closes_the_devices_connections_on_every_gateway() {
    let mut f = fleet().await;
    let device = f.pki.client("blocked-everywhere", Kind::Good);
    let fp = sha256_hex(&device.der);
    let cfg = no_resumption(&client_config(&f.pki, Some(&device), &[]));
    let admins: Vec<SocketAddr> = f.gws.iter().map(|g| g.admin).collect();
    let (s, v) = change_on(admins[0], &fp, "approve").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        until_everywhere(&admins, &fp, "approved", Duration::from_secs(2))
            .await
            .is_some()
    );

    // Six connections, two per instance (round robin).
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(hold(f.lb.addr, cfg.clone()).await);
    }
    for a in &admins {
        let open = scraped(*a, "certgate_connections_active{listener=\"agents\"}").await;
        assert_eq!(
            open, 2.0,
            "instance {a} holds {open} of the device's connections"
        );
    }
    let (s, v) = change_on(admins[2], &fp, "block").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let blocked = Instant::now();
    for (i, h) in held.iter_mut().enumerate() {
        let left = Duration::from_secs(1).saturating_sub(blocked.elapsed());
        assert!(
            tokio::time::timeout(left, &mut h.closed).await.is_ok(),
            "connection {i} is still open {:?} after the block on C",
            blocked.elapsed()
        );
    }
    println!(
        "all 6 connections (A, B, C) closed {:?} after the block on C",
        blocked.elapsed()
    );
    for h in &mut held {
        assert!(
            h.sender.ready().await.is_err(),
            "a closed connection still takes requests"
        );
    }
    for a in &admins {
        assert_eq!(status_on(*a, &fp).await.as_deref(), Some("blocked"));
        assert_eq!(
            scraped(*a, "certgate_connections_active{listener=\"agents\"}").await,
            0.0
        );
    }
    // And no new connection gets in anywhere.
    for i in 0..3 {
        assert!(
            get_over(
                tcp_from("127.0.0.2", f.lb.addr).await,
                cfg.clone(),
                &format!("/again-{i}")
            )
            .await
            .is_err(),
            "a blocked device was served"
        );
    }
    drop(f.lb);
    f.gws.clear();
}

/// The number of rows a query counts.
fn count(pg: &PgServer, query: &str) -> u64 {
    pg.sql(query).parse().unwrap()
}

/// Must-show 3: PostgreSQL stopped under load (16 keep-alive clients and a
/// new handshake every 10 ms across the balancer): no request of an
/// approved device fails, admin writes answer 503 and are applied
/// nowhere, a first-seen device is kept and written once the database is
/// back; no acknowledged approval, block or audit line is lost; an
/// instance restarted during the outage serves from its local copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_every_gateway_serves_from_its_snapshot_and_catches_up_after() {
    let mut f = fleet().await;
    let approved = f.pki.client("approved-before", Kind::Good);
    let blocked = f.pki.client("blocked-before", Kind::Good);
    let newcomer = f.pki.client("first-seen-during-outage", Kind::Good);
    let (afp, bfp, nfp) = (
        sha256_hex(&approved.der),
        sha256_hex(&blocked.der),
        sha256_hex(&newcomer.der),
    );
    let admins: Vec<SocketAddr> = f.gws.iter().map(|g| g.admin).collect();
    assert_eq!(
        change_on(admins[0], &afp, "approve").await.0,
        StatusCode::OK
    );
    assert_eq!(change_on(admins[1], &bfp, "block").await.0, StatusCode::OK);
    assert!(
        until_everywhere(&admins, &afp, "approved", Duration::from_secs(2))
            .await
            .is_some()
    );
    assert!(
        until_everywhere(&admins, &bfp, "blocked", Duration::from_secs(2))
            .await
            .is_some()
    );
    let audit_before = count(&f.pg, "SELECT count(*) FROM certgate_audit");
    assert_eq!(audit_before, 2);

    let cfg = no_resumption(&client_config(&f.pki, Some(&approved), &[]));
    let load = Load::start(f.lb.addr, cfg.clone(), 16, Duration::from_millis(10), false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.pg.down("fast");
    let down = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // `check` (the unit's ExecStartPre) still passes: a gateway starts on
    // its local copy; it warns.
    let check = std::process::Command::new(certgate_bin())
        .args(["check", "--config"])
        .arg(&f.gws[0].config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{said}");
    assert!(
        said.contains("warning") && said.contains("local copy"),
        "{said}"
    );
    // Admin writes: 503 with the reason, on every instance.
    let refused_fp = sha256_hex(b"approved while the database was down");
    for a in &admins {
        let (s, v) = change_on(*a, &refused_fp, "approve").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains("NOT saved") && e.contains("database"), "{e}");
    }
    // A device seen for the first time: refused (manual mode) by each
    // instance, and kept in memory.
    let ncfg = no_resumption(&client_config(&f.pki, Some(&newcomer), &[]));
    let bcfg = no_resumption(&client_config(&f.pki, Some(&blocked), &[]));
    // The balancer's round robin is shared with the load: try until each
    // instance has met the newcomer (bounded).
    let mut everywhere = false;
    for i in 0..60 {
        assert!(
            get_over(
                tcp_from("127.0.0.3", f.lb.addr).await,
                ncfg.clone(),
                &format!("/new-{i}")
            )
            .await
            .is_err()
        );
        assert!(
            get_over(
                tcp_from("127.0.0.4", f.lb.addr).await,
                bcfg.clone(),
                &format!("/blocked-{i}")
            )
            .await
            .is_err()
        );
        let mut all = true;
        for a in &admins {
            all &= status_on(*a, &nfp).await.as_deref() == Some("pending");
        }
        if all {
            everywhere = true;
            break;
        }
    }
    assert!(
        everywhere,
        "the first-seen device is not pending on every instance"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = load.ok();
    let (ok, failures) = load.finish().await;
    println!(
        "database down for {:?}: {ok} requests served ({during} before the load stopped), {} failed",
        down.elapsed(),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:?}");
    for a in &admins {
        let errors = scraped(*a, "certgate_registry_write_errors_total").await;
        assert!(errors >= 1.0, "instance {a} counted no failed write");
    }

    // C restarts while the database is down: its local copy admits the
    // approved device and refuses the blocked one.
    let c = f.gws.pop().unwrap();
    c.proc.signal("TERM");
    let Instance {
        mut proc,
        config,
        _dir,
        ..
    } = c;
    assert_eq!(proc.wait_exit(Duration::from_secs(10)), Some(0));
    let proc = spawn_certgate(&config);
    let c_admin = proc.admin_addr();
    let only_c = Haproxy::start(proc.addr);
    assert_eq!(
        get_over(
            tcp_from("127.0.0.2", only_c.addr).await,
            cfg.clone(),
            "/restarted"
        )
        .await
        .unwrap(),
        200
    );
    assert!(
        get_over(
            tcp_from("127.0.0.4", only_c.addr).await,
            bcfg.clone(),
            "/restarted-blocked"
        )
        .await
        .is_err()
    );
    assert_eq!(status_on(c_admin, &bfp).await.as_deref(), Some("blocked"));
    assert!(
        proc.log.lock().unwrap().contains("local copy"),
        "{}",
        proc.log.lock().unwrap()
    );
    f.gws.push(Instance {
        proc,
        admin: c_admin,
        config,
        _dir,
    });
    let admins: Vec<SocketAddr> = f.gws.iter().map(|g| g.admin).collect();

    // The database comes back: the first-seen device is written (once),
    // nothing acknowledged is lost, the refused approval is nowhere.
    f.pg.up();
    let back = Instant::now();
    let written = eventually(Duration::from_secs(10), || {
        count(&f.pg, &format!("SELECT count(*) FROM certgate_devices WHERE doc->'certificates' @> '[{{\"fingerprint\": \"{nfp}\"}}]' AND NOT deleted")) == 1
    })
    .await;
    assert!(
        written,
        "the device first seen during the outage was not written"
    );
    println!(
        "first-seen device written {:?} after the database came back",
        back.elapsed()
    );
    // Each instance that met it during the outage (A and B; C's queue
    // went with its restart) writes its own sightings on its next flush,
    // the first one together with the record.
    let sightings = || {
        count(
            &f.pg,
            &format!("SELECT count(*) FROM certgate_observations WHERE fingerprint = '{nfp}'"),
        )
    };
    let all_written = eventually(Duration::from_secs(10), || sightings() >= 2).await;
    assert!(
        all_written,
        "the first-seen device's sightings of only {} instance(s) were written",
        sightings()
    );
    println!(
        "sightings of both instances written {:?} after the database came back",
        back.elapsed()
    );
    assert_eq!(
        count(&f.pg, "SELECT count(*) FROM certgate_audit"),
        audit_before
    );
    assert_eq!(
        count(
            &f.pg,
            &format!(
                "SELECT count(*) FROM certgate_devices WHERE id = '{}'",
                &refused_fp[..16]
            )
        ),
        0
    );
    for a in &admins {
        assert_eq!(
            status_on(*a, &afp).await.as_deref(),
            Some("approved"),
            "instance {a}"
        );
        assert_eq!(
            status_on(*a, &bfp).await.as_deref(),
            Some("blocked"),
            "instance {a}"
        );
        assert_eq!(status_on(*a, &refused_fp).await, None, "instance {a}");
    }
    // Admin writes work again, from the restarted instance too.
    let (s, v) = change_on(admins[2], &nfp, "approve").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        until_everywhere(&admins, &nfp, "approved", Duration::from_secs(5))
            .await
            .is_some()
    );
    assert_eq!(
        count(&f.pg, "SELECT count(*) FROM certgate_audit"),
        audit_before + 1
    );
    drop(only_c);
    drop(f.lb);
    f.gws.clear();
}

/// `certgate devices export` against an admin address, sorted by id.
fn export(admin: SocketAddr) -> Vec<serde_json::Value> {
    let (ok, out, err) = devices_cli(admin, &["export"]);
    assert!(ok, "devices export: {err}");
    let mut v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    v.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    v
}

fn copy(from: &str, to: &str) -> std::process::Output {
    std::process::Command::new(certgate_bin())
        .args(["registry", "copy", "--from", from, "--to", to])
        .output()
        .unwrap()
}

/// Must-show 6: `registry copy` from a redb file with 10,000 devices to
/// PostgreSQL and back into a new file loses nothing: the same devices
/// (statuses, labels, certificates, counters) and the same audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_copy_to_postgres_and_back_is_lossless_at_ten_thousand_devices() {
    let mut pki = Pki::new();
    let backend = Backend::start().await;
    let device = pki.client("seen-device", Kind::Good);
    let start = |dir: &std::path::Path| {
        let mut cb = ConfigBuilder::new(&pki, backend.addr);
        cb.extra_top = registry_table(dir, "manual");
        cb.write(dir)
    };
    let one = tempfile::tempdir().unwrap();
    let gw = start_gateway(&start(one.path())).await;
    let admin = gw.admin_addr().unwrap();
    let fps: Vec<String> = (0..9_999u32)
        .map(|i| sha256_hex(format!("fleet device {i}").as_bytes()))
        .collect();
    let (s, v) = admin_call(
        admin,
        "POST",
        "/api/devices/approve",
        None,
        Some(serde_json::json!({"fingerprints": fps[..7000]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = admin_call(
        admin,
        "POST",
        "/api/devices/block",
        None,
        Some(serde_json::json!({"fingerprints": fps[7000..]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for fp in &fps[..10] {
        let (s, v) = admin_call(
            admin,
            "PUT",
            &format!("/api/devices/{fp}/label"),
            None,
            Some(serde_json::json!({"label": format!("rack {}", &fp[..4])})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // A device with counters: refused while pending, admitted once approved.
    let cfg = no_resumption(&client_config(&pki, Some(&device), &[]));
    assert!(
        get(gw.addr("agents").unwrap(), cfg.clone(), "/pending", &[])
            .await
            .is_err()
    );
    let dfp = sha256_hex(&device.der);
    let mut known = false;
    for _ in 0..100 {
        if status_on(admin, &dfp).await.is_some() {
            known = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(known);
    assert_eq!(change_on(admin, &dfp, "approve").await.0, StatusCode::OK);
    for i in 0..3 {
        assert_eq!(
            get(
                gw.addr("agents").unwrap(),
                cfg.clone(),
                &format!("/ok-{i}"),
                &[]
            )
            .await
            .unwrap()
            .0,
            200
        );
    }
    let mut before = export(admin);
    assert_eq!(before.len(), 10_000);
    assert!(gw.shutdown().await);
    // What shutdown flushed (the last handshakes) is in the export taken
    // from the file again below; read the counters from there.
    let gw = start_gateway(&start(one.path())).await;
    before = export(gw.admin_addr().unwrap());
    assert!(gw.shutdown().await);
    let seen = before
        .iter()
        .find(|d| d["fingerprint"] == dfp.as_str())
        .unwrap();
    assert_eq!(seen["connections"], 3, "{seen}");
    let audit = std::fs::read_to_string(one.path().join("audit.log")).unwrap();

    let pg = PgServer::start();
    let file = one.path().join("devices.redb");
    let out = copy(file.to_str().unwrap(), &pg.url());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("copied 10000 device(s)")
            && said.contains(&format!("{} audit line(s)", audit.lines().count())),
        "{said}"
    );
    assert_eq!(
        pg.sql("SELECT count(*) FROM certgate_devices WHERE NOT deleted"),
        "10000"
    );
    // A second copy into the now full database is refused, not merged.
    let again = copy(file.to_str().unwrap(), &pg.url());
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--replace"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let two = tempfile::tempdir().unwrap();
    let out = copy(&pg.url(), two.path().join("devices.redb").to_str().unwrap());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = std::fs::read_to_string(two.path().join("audit.log")).unwrap();
    assert!(
        back == audit,
        "the audit log copied back differs ({} lines, {} before)",
        back.lines().count(),
        audit.lines().count()
    );
    let gw = start_gateway(&start(two.path())).await;
    let after = export(gw.admin_addr().unwrap());
    assert_eq!(after.len(), before.len());
    for (a, b) in before.iter().zip(&after) {
        assert!(a == b, "device differs after the round trip:\n{a}\n{b}");
    }
    assert!(gw.shutdown().await);
}

/// A status's count in a readiness report.
fn count_of(report: &serde_json::Value, status: &str) -> u64 {
    report["by_status"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["status"] == status)
        .and_then(|s| s["count"].as_u64())
        .unwrap_or(0)
}

/// Must-show 5: the readiness report on instance A covers the attempts
/// that reached B and C (the balancer spreads them): counts per status
/// added up, the clients that enforcing refuses listed with the gateway
/// that saw them, the instances named; the CLI says so too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_on_one_gateway_reports_the_attempts_that_reached_the_others() {
    let mut f = fleet().await;
    let admins: Vec<SocketAddr> = f.gws.iter().map(|g| g.admin).collect();
    let good = f.pki.client("counted-everywhere", Kind::Good);
    let pending = f.pki.client("pending-somewhere", Kind::Good);
    let gfp = sha256_hex(&good.der);
    let pfp = sha256_hex(&pending.der);
    assert_eq!(
        change_on(admins[1], &gfp, "approve").await.0,
        StatusCode::OK
    );
    assert!(
        until_everywhere(&admins, &gfp, "approved", Duration::from_secs(2))
            .await
            .is_some()
    );
    let gcfg = no_resumption(&client_config(&f.pki, Some(&good), &[]));
    let pcfg = no_resumption(&client_config(&f.pki, Some(&pending), &[]));
    let ncfg = no_resumption(&client_config(&f.pki, None, &[]));
    // Nine of each: three on each instance (round robin, nothing else
    // connects meanwhile).
    for i in 0..9 {
        assert!(
            get_over(
                tcp_from("127.0.0.2", f.lb.addr).await,
                gcfg.clone(),
                &format!("/r{i}")
            )
            .await
            .is_ok()
        );
    }
    for i in 0..9 {
        assert!(
            get_over(
                tcp_from("127.0.0.3", f.lb.addr).await,
                pcfg.clone(),
                &format!("/p{i}")
            )
            .await
            .is_err()
        );
        assert!(
            get_over(
                tcp_from("127.0.0.5", f.lb.addr).await,
                ncfg.clone(),
                &format!("/n{i}")
            )
            .await
            .is_err()
        );
    }
    // No instance alone saw all nine.
    for a in &admins {
        let (_, own) = http_plain(*a, "GET", "/metrics").await.unwrap();
        let n: f64 = own
            .lines()
            .filter(|l| l.starts_with("certgate_http_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(n < 9.0, "instance {a} served {n} of the 9 requests");
    }
    let mut report;
    let complete = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (s, r) = admin_call(
                admins[0],
                "GET",
                "/api/readiness?listener=agents&window=1h",
                None,
                None,
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{r}");
            report = r;
            if count_of(&report, "authenticated") >= 9
                && count_of(&report, "unapproved") >= 9
                && count_of(&report, "no_credentials") >= 9
            {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(
        complete,
        "A's report does not cover B's and C's attempts: {report}"
    );
    assert_eq!(count_of(&report, "authenticated"), 9, "{report}");
    assert_eq!(count_of(&report, "unapproved"), 9, "{report}");
    assert_eq!(count_of(&report, "no_credentials"), 9, "{report}");
    assert_eq!(
        report["instances"],
        serde_json::json!(["a", "b", "c"]),
        "{report}"
    );
    let refused = report["would_refuse"].as_array().unwrap();
    let device = refused
        .iter()
        .find(|c| c["fingerprint"] == pfp.as_str())
        .unwrap();
    assert_eq!(device["attempts"], 9, "{device}");
    assert_eq!(device["status"], "unapproved");
    assert!(
        ["a", "b", "c"].contains(&device["instance"].as_str().unwrap()),
        "{device}"
    );
    let source = refused.iter().find(|c| c["peer"] == "127.0.0.5").unwrap();
    assert_eq!(source["attempts"], 9, "{source}");
    assert!(!refused.iter().any(|c| c["fingerprint"] == gfp.as_str()));
    // The same report from C, and in the CLI's words.
    let (_, from_c) = admin_call(
        admins[2],
        "GET",
        "/api/readiness?listener=agents&window=1h",
        None,
        None,
    )
    .await;
    assert_eq!(count_of(&from_c, "unapproved"), 9, "{from_c}");
    let out = std::process::Command::new(certgate_bin())
        .args([
            "readiness",
            "--admin",
            &admins[0].to_string(),
            "--listener",
            "agents",
            "--window",
            "1h",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Counted on 3 gateway(s) sharing the registry: a, b, c"),
        "{text}"
    );
    drop(f.lb);
    f.gws.clear();
}

/// Several hosts with `target_session_attrs=read-write`: a standby listed
/// first is passed over for the primary, and once the primary is gone and
/// the standby promoted, the gateway writes to it, with what it had
/// written before (replicated) still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_standby_pair_is_followed_through_a_failover() {
    let pki = Pki::new();
    let backend = Backend::start().await;
    let primary = PgServer::start();
    let standby = PgServer::standby_of(&primary);
    let url = format!(
        "postgres://certgate@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        standby.port, primary.port
    );
    let gw = start_instance(&pki, backend.addr, &url, "gw1");
    let before = sha256_hex(b"approved on the primary");
    let (s, v) = change_on(gw.admin, &before, "approve").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(primary.sql("SELECT count(*) FROM certgate_audit"), "1");
    // Replicated before the failover (asynchronous replication: an admin
    // who cannot lose a change sets synchronous_standby_names).
    assert!(
        eventually(Duration::from_secs(10), || standby
            .sql("SELECT count(*) FROM certgate_audit")
            == "1")
        .await,
        "the standby did not replicate the approval"
    );
    primary.down("immediate");
    standby.promote();
    let after = sha256_hex(b"approved on the promoted standby");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last;
    loop {
        last = change_on(gw.admin, &after, "approve").await;
        if last.0 == StatusCode::OK || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        last.0,
        StatusCode::OK,
        "no write after the failover: {}",
        last.1
    );
    assert_eq!(standby.sql("SELECT count(*) FROM certgate_audit"), "2");
    assert_eq!(
        status_on(gw.admin, &before).await.as_deref(),
        Some("approved")
    );
    assert_eq!(
        status_on(gw.admin, &after).await.as_deref(),
        Some("approved")
    );
    drop(gw);
}

/// A gateway's very first start needs the database (it has no local copy
/// yet): it refuses to start, saying which database and why; `check`
/// only warns (a gateway with a copy would start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_without_the_database_says_what_is_missing() {
    let pki = Pki::new();
    let backend = Backend::start().await;
    let pg = PgServer::start();
    let url = pg.url();
    pg.down("fast");
    let (_dir, config) = instance_config(&pki, backend.addr, &url, "gw1");
    let mut run = std::process::Command::new(certgate_bin())
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while run.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "certgate kept running without its database"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run.wait_with_output().unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("registry.url")
            && said.contains(&format!("127.0.0.1:{}", pg.port))
            && said.contains("no local copy"),
        "{said}"
    );
    assert!(!said.contains("password"), "{said}");
}
