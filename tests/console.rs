//! Behaviour: the web console in a real headless Chromium (Debian's
//! `chromium`, driven through `chromedriver` over WebDriver), against a
//! real certgate with a real backend and real TLS clients: an admin signs
//! in, approves the device that just tried to connect by clicking, blocks
//! one and sees its connection close; a page of another site cannot make
//! the console act.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use http::StatusCode;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A chromedriver on a free loopback port, with a headless Chromium
/// session; both stopped (by PID) when dropped.
struct Browser {
    driver: std::process::Child,
    client: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        require_tool("chromedriver");
        require_tool("chromium");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        // The flags the machine notes give for a closed network: no
        // background connections, no first-run work, no sandbox as root.
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
            // The HTTPS test's admin certificate is from the test's own CA.
            "acceptInsecureCerts": true,
        });
        let caps = caps.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::rustls()
                .unwrap()
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("chromedriver at {url} did not start a session: {e}"),
            }
        };
        Browser {
            driver,
            client,
            _profile: profile,
        }
    }

    /// The text of `css` once it contains `want` (a click's navigation
    /// may still be on its way), within 5 s; else a panic with the page.
    async fn wait_text(&self, css: &str, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await
                && let Ok(t) = e.text().await
                && t.contains(want)
            {
                return t;
            }
            if Instant::now() > deadline {
                panic!("{css} never contained {want:?}:\n{}", self.source().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        self.wait_text(css, "").await
    }

    /// Waits until the page's path is `path` (within 5 s).
    async fn wait_path(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.client.current_url().await.unwrap().path() != path {
            assert!(
                Instant::now() < deadline,
                "never reached {path}; at {}",
                self.client.current_url().await.unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.click().await,
                Err(e) => Err(e),
            };
            match r {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => panic!("click {css}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn fill(&self, css: &str, value: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .send_keys(value)
            .await
            .unwrap();
    }

    async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// Every resource the current page loaded, by URL (the Resource
    /// Timing entries, which include stylesheets, scripts and fetches).
    async fn resources(&self) -> Vec<String> {
        let v = self
            .client
            .execute(
                "return performance.getEntriesByType('resource').map(e => e.name)\
                 .concat([location.href]);",
                vec![],
            )
            .await
            .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Console messages of level SEVERE since the last call
    /// (chromedriver's log endpoint).
    async fn severe_logs(&self) -> Vec<String> {
        let v = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .unwrap_or(serde_json::Value::Null);
        v.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Writes a PNG of the page to the test output
/// (`target/tmp/console-screenshots/NAME.png`) and, with
/// `CERTGATE_DOCS_SCREENSHOTS=1`, to `docs/NAME.png` for the README.
async fn screenshot(b: &Browser, name: &str) -> std::path::PathBuf {
    let png = b.client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, &png).unwrap();
    println!("screenshot: {}", path.display());
    if std::env::var_os("CERTGATE_DOCS_SCREENSHOTS").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join(format!("console-{name}.png")), &png).unwrap();
    }
    path
}

/// `POST /session/{id}/se/log {"type": "browser"}`: chromedriver's (pre-W3C,
/// still supported) way to read the page's console.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or("")))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(serde_json::json!({"type": "browser"}).to_string()),
        )
    }
}

/// A gateway with a registry in manual mode and an admin token file
/// (`alice`).
struct Setup {
    pki: Pki,
    gw: certgate::Gateway,
    _backend: Backend,
    addr: SocketAddr,
    admin: SocketAddr,
    config: std::path::PathBuf,
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

async fn setup_with(adjust: impl FnOnce(&mut ConfigBuilder)) -> Setup {
    let pki = Pki::new();
    let backend = Backend::start().await;
    let tokens = pki.path("admin.tokens");
    std::fs::write(&tokens, format!("alice:{TOKEN}\n")).unwrap();
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_admin = format!("token_file = \"{}\"\n", tokens.display());
    cb.extra_top = registry_table(pki.dir.path(), "manual");
    adjust(&mut cb);
    let config = cb.write(pki.dir.path());
    let gw = start_gateway(&config).await;
    let addr = gw.addr("agents").unwrap();
    let admin = gw.admin_addr().unwrap();
    Setup {
        pki,
        gw,
        _backend: backend,
        addr,
        admin,
        config,
    }
}

async fn sign_in(b: &Browser, admin: SocketAddr, token: &str) {
    sign_in_at(b, &format!("http://{admin}"), token).await;
}

async fn sign_in_at(b: &Browser, origin: &str, token: &str) {
    b.client.goto(&format!("{origin}/")).await.unwrap();
    // Not signed in: the console sends the browser to the sign-in page.
    b.wait_path("/login").await;
    b.fill("#token", token).await;
    b.click("button[type=submit]").await;
}

async fn device_status(admin: SocketAddr, fp: &str) -> String {
    let (s, v) = admin_call(
        admin,
        "GET",
        &format!("/api/devices/{fp}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["status"].as_str().unwrap_or("").to_string()
}

/// Must-show 1: a wrong token is refused; signed in, the admin sees the
/// device that just tried to connect as pending, approves it by clicking
/// (through the confirmation), and its next handshake succeeds; the audit
/// log names the session's user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_signs_in_and_approves_the_pending_device_by_clicking() {
    let mut s = setup().await;
    let device = s.pki.client("console-device", Kind::Good);
    let fp = sha256_hex(&device.der);
    let cfg = no_resumption(&client_config(&s.pki, Some(&device), &[]));
    assert!(
        get(s.addr, cfg.clone(), "/", &[]).await.is_err(),
        "pending: refused"
    );
    assert!(eventually(Duration::from_secs(5), || s.has_pending()).await);

    let b = Browser::start().await;
    sign_in(&b, s.admin, "not-the-token-0000000000").await;
    b.wait_text("[role=alert]", "not a token").await;
    b.wait_path("/login").await;

    b.fill("#token", TOKEN).await;
    b.click("button[type=submit]").await;
    b.wait_path("/").await;
    b.wait_text("header .who", "alice").await;
    screenshot(&b, "overview").await;

    b.click("a[href='/devices?status=pending']").await;
    let row = b.wait_text("#devices tbody tr", "console-device").await;
    assert!(row.contains("pending"), "{row}");
    b.click(&format!("input[name=id][value='{}']", &fp[..16]))
        .await;
    b.click("button[name=action][value=approve]").await;
    b.wait_text("h1", "Approve 1 device?").await;
    b.click("button.primary").await;
    b.wait_text("[role=status]", "1 device approved.").await;

    assert_eq!(device_status(s.admin, &fp).await, "approved");
    let (status, _) = get(s.addr, cfg, "/after-approval", &[]).await.unwrap();
    assert_eq!(status, 200);

    b.client
        .goto(&format!("http://{}/audit", s.admin))
        .await
        .unwrap();
    let audit = b.wait_text("main table tbody tr", "alice").await;
    assert!(audit.contains("approve"), "{audit}");
    b.client
        .goto(&format!(
            "http://{}/audit?who=alice&action=approve",
            s.admin
        ))
        .await
        .unwrap();
    b.wait_text("main", "1 change(s)").await;
    // The device's own page carries its trail.
    b.client
        .goto(&format!("http://{}/devices/{}", s.admin, &fp[..16]))
        .await
        .unwrap();
    let trail = b.text("main").await;
    assert!(
        trail.contains("alice") && trail.contains("approve"),
        "no trail on the device page:\n{trail}"
    );
    let log = std::fs::read_to_string(s.pki.dir.path().join("audit.log")).unwrap();
    assert!(log.contains("\"who\":\"alice\""), "{log}");

    // Signed out, the console is closed again.
    b.click("header form button").await;
    b.wait_path("/login").await;
    b.client
        .goto(&format!("http://{}/devices", s.admin))
        .await
        .unwrap();
    b.wait_path("/login").await;
    b.client.clone().close().await.unwrap();
    s.gw.shutdown().await;
}

/// Must-show 2: blocking a device in the console closes its open
/// keep-alive connection within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_in_the_console_closes_the_devices_open_connection() {
    let mut s = setup().await;
    let device = s.pki.client("kept-alive", Kind::Good);
    let fp = sha256_hex(&device.der);
    let (st, _) = admin_call(
        s.admin,
        "POST",
        &format!("/api/devices/{fp}/approve"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let mut sender = h1_sender(s.addr, client_config(&s.pki, Some(&device), &[]))
        .await
        .unwrap();
    let req = || {
        http::Request::get("/")
            .header("host", "localhost")
            .body(empty())
            .unwrap()
    };
    assert_eq!(sender.send_request(req()).await.unwrap().status(), 200);

    let b = Browser::start().await;
    sign_in(&b, s.admin, TOKEN).await;
    b.client
        .goto(&format!("http://{}/devices/{}", s.admin, &fp[..16]))
        .await
        .unwrap();
    b.click("button[name=action][value=block]").await;
    b.wait_text("h1", "Block 1 device?").await;
    b.click("button.primary").await;
    let blocked_at = Instant::now();
    b.wait_text("[role=status]", "1 device blocked.").await;
    // The connection the device held open is closed.
    let closed = loop {
        if sender.is_closed() || sender.ready().await.is_err() {
            break true;
        }
        if blocked_at.elapsed() > Duration::from_secs(1) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        closed || sender.send_request(req()).await.is_err(),
        "the blocked device's keep-alive connection is still open"
    );
    assert!(blocked_at.elapsed() <= Duration::from_secs(1));
    assert_eq!(device_status(s.admin, &fp).await, "blocked");
    b.client.clone().close().await.unwrap();
    s.gw.shutdown().await;
}

/// A page of another origin (127.0.0.2) that posts a form to the console
/// as soon as it loads: what a malicious page the admin opens would do.
async fn attacker_page(target: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..8 {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let target = target.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let page = format!(
                    "<!doctype html><title>cute cats</title>\
                     <form id=f method=post action=\"{target}\">\
                     <input name=action value=approve><input name=id value=all>\
                     <input name=csrf value=guess></form>\
                     <script>document.getElementById('f').submit()</script>"
                );
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = tcp.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

/// Must-show 5: a cross-site form post to a console action is refused
/// (and changes nothing) even with the admin signed in; the console's
/// pages load with no console errors and no request to another origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_form_post_is_refused_and_pages_stay_on_their_origin() {
    let mut s = setup().await;
    let device = s.pki.client("target-device", Kind::Good);
    let fp = sha256_hex(&device.der);
    let cfg = no_resumption(&client_config(&s.pki, Some(&device), &[]));
    assert!(get(s.addr, cfg, "/", &[]).await.is_err());
    assert!(eventually(Duration::from_secs(5), || s.has_pending()).await);

    let b = Browser::start().await;
    sign_in(&b, s.admin, TOKEN).await;
    let origin = format!("http://{}", s.admin);
    for path in [
        "/",
        "/devices",
        &format!("/devices/{}", &fp[..16]),
        "/readiness",
        "/certificates",
        "/audit",
    ] {
        b.client.goto(&format!("{origin}{path}")).await.unwrap();
        b.wait_path(path).await;
        let h1 = b.text("h1").await;
        assert!(
            h1 != "Refused" && h1 != "Not found",
            "{path}: {}",
            b.source().await
        );
        for r in b.resources().await {
            assert!(
                r.starts_with(&origin),
                "{path} loaded {r} from another origin"
            );
        }
        let errors = b.severe_logs().await;
        assert!(errors.is_empty(), "{path}: console errors {errors:?}");
    }

    let evil = attacker_page(format!("{origin}/devices/apply")).await;
    b.client.goto(&format!("http://{evil}/")).await.unwrap();
    // The form posts itself; the console refuses it.
    let mut refused = false;
    for _ in 0..50 {
        let url = b.client.current_url().await.unwrap();
        if url.as_str().starts_with(&origin) {
            refused = b.wait_text("h1", "Refused").await == "Refused"
                && b.wait_text("[role=alert]", "another site")
                    .await
                    .contains("another site");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused,
        "the cross-site post was not refused: {}",
        b.source().await
    );
    assert_eq!(device_status(s.admin, &fp).await, "pending");
    assert!(
        scraped(
            s.admin,
            "certgate_admin_requests_refused_total{reason=\"fetch_site\"}"
        )
        .await
            >= 1.0
    );
    b.client.clone().close().await.unwrap();
    s.gw.shutdown().await;
}

impl Setup {
    /// Whether the registry lists a pending device (the one the test's
    /// first handshake made).
    fn has_pending(&self) -> bool {
        metric(&self.gw, "certgate_devices{status=\"pending\"}") >= 1.0
    }
}

/// The number of devices with `status`, from the API.
async fn count(admin: SocketAddr, status: &str) -> f64 {
    let (s, v) = admin_call(
        admin,
        "GET",
        &format!("/api/devices?status={status}&limit=1"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["total"].as_f64().unwrap()
}

/// First handshakes of `clients` (each refused: unapproved), 32 at a time.
async fn knock(addr: SocketAddr, clients: Vec<std::sync::Arc<rustls::ClientConfig>>) {
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for cfg in clients {
        let permit = sem.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let e = tls_handshake_error(addr, cfg).await;
            drop(permit);
            alert_of(&e)
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            Some(rustls::AlertDescription::AccessDenied)
        );
    }
}

/// Must-show 3: 500 of 520 pending devices are found with the filter
/// (status and search), selected (the page and "all matching"), and
/// approved with one confirmation that says 500; the other 20 stay
/// pending, and an approved one connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_pending_devices_are_approved_at_once_from_a_filtered_list() {
    let s = setup().await;
    let bulk = s
        .pki
        .fleet(500, |i| format!("bulk-{i:03}"), -86_400, 1 << 41);
    let other = s
        .pki
        .fleet(20, |i| format!("other-{i:02}"), -86_400, 1 << 42);
    let (first_bulk, first_other) = (bulk[0].0.clone(), other[0].0.clone());
    knock(
        s.addr,
        bulk.iter().chain(&other).map(|(c, _)| c.clone()).collect(),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || metric(
            &s.gw,
            "certgate_devices{status=\"pending\"}"
        ) >= 520.0)
        .await
    );

    let b = Browser::start().await;
    sign_in(&b, s.admin, TOKEN).await;
    b.wait_path("/").await;
    b.client
        .goto(&format!("http://{}/devices", s.admin))
        .await
        .unwrap();
    b.client
        .find(Locator::Css("form.filters select[name=status]"))
        .await
        .unwrap()
        .select_by_value("pending")
        .await
        .unwrap();
    b.fill("form.filters input[name=q]", "bulk-").await;
    b.click("form.filters button[type=submit]").await;
    b.wait_text("#count", "500 device(s) match").await;
    screenshot(&b, "devices").await;
    b.click("input[data-select-all]").await;
    b.click("input[name=scope][value=all]").await;
    b.click("button[name=action][value=approve]").await;
    b.wait_text("h1", "Approve 500 devices?").await;
    let list = b.text("main").await;
    assert!(list.contains("… and 450 more."), "{list}");
    b.click("button.primary").await;
    b.wait_text("[role=status]", "500 devices approved.").await;

    assert_eq!(count(s.admin, "approved").await, 500.0);
    assert_eq!(count(s.admin, "pending").await, 20.0);
    let (status, _) = get(s.addr, first_bulk, "/approved-in-bulk", &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        get(s.addr, first_other, "/still-pending", &[])
            .await
            .is_err()
    );
    let log = std::fs::read_to_string(s.pki.dir.path().join("audit.log")).unwrap();
    let lines = log
        .lines()
        .filter(|l| l.contains("\"who\":\"alice\"") && l.contains("approve"))
        .count();
    assert!(
        lines >= 1,
        "the bulk approval is audited under alice: {log}"
    );
    b.client.clone().close().await.unwrap();
    s.gw.shutdown().await;
}

/// Must-show 4: an observe-mode listener's readiness chart, for clients
/// that authenticate, are unapproved, send no certificate, come from
/// another CA and offer only TLS 1.0: each bar's count in the DOM is the
/// report's, and "enforcing would refuse" names the API's number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readiness_chart_shows_how_an_observe_listeners_clients_authenticate() {
    require_tool("openssl");
    let mut s = setup_with(|cb| cb.mode = "observe").await;
    let good = s.pki.client("approved-agent", Kind::Good);
    let unapproved = s.pki.client("new-agent", Kind::Good);
    let foreign = s.pki.client("foreign-agent", Kind::ForeignCa);
    let (st, _) = admin_call(
        s.admin,
        "POST",
        &format!("/api/devices/{}/approve", sha256_hex(&good.der)),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let mixed: [(Option<&ClientCert>, usize); 4] = [
        (Some(&good), 3),
        (Some(&unapproved), 2),
        (None, 1),
        (Some(&foreign), 1),
    ];
    for (cert, n) in mixed {
        for _ in 0..n {
            let cfg = no_resumption(&client_config(&s.pki, cert, &[]));
            let (st, _) = get(s.addr, cfg, "/observed", &[]).await.unwrap();
            assert_eq!(st, 200, "observe mode admits everyone");
        }
    }
    // An agent that speaks only TLS 1.0.
    let out = tokio::process::Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(format!("127.0.0.1:{}", s.addr.port()))
        .args(["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"])
        .env("OPENSSL_CONF", "/dev/null")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Cipher is ECDHE"));

    let want = [
        ("authenticated", 3),
        ("unapproved", 2),
        ("no_credentials", 1),
        ("failed", 1),
        ("upgrade_required", 1),
    ];
    let mut report = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, v) = admin_call(
            s.admin,
            "GET",
            "/api/readiness?listener=agents&window=1h",
            Some(TOKEN),
            None,
        )
        .await;
        report = v;
        if report["total"].as_u64() == Some(8) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(report["total"].as_u64(), Some(8), "{report}");
    let would_refuse = report["would_refuse"].as_array().unwrap().len();
    assert!(would_refuse >= 3, "{report}");

    let b = Browser::start().await;
    sign_in(&b, s.admin, TOKEN).await;
    b.wait_path("/").await;
    b.client
        .goto(&format!(
            "http://{}/readiness?listener=agents&window=1h",
            s.admin
        ))
        .await
        .unwrap();
    b.wait_text("h2", "Listener agents").await;
    let section = "section[data-listener=agents]";
    for (status, n) in want {
        let bar = b
            .client
            .find(Locator::Css(&format!(
                "{section} svg g[data-status={status}]"
            )))
            .await
            .unwrap_or_else(|e| panic!("no bar for {status}: {e}"));
        assert_eq!(
            bar.attr("data-count").await.unwrap().as_deref(),
            Some(n.to_string().as_str()),
            "{status}"
        );
        // Drawn as wide as its share (the bar is 480 of the chart's 800
        // units), and its number is drawn, not only present in the DOM.
        let drawn = b
            .client
            .execute(
                "const g = arguments[0]; const svg = g.ownerSVGElement.getBoundingClientRect();\
                 const bar = g.querySelector('rect[data-bar]').getBoundingClientRect();\
                 const label = g.querySelectorAll('text')[1].getBoundingClientRect();\
                 return [bar.width / svg.width * 800, label.width];",
                vec![serde_json::to_value(&bar).unwrap()],
            )
            .await
            .unwrap();
        let share = 480.0 * n as f64 / 8.0;
        let width = drawn[0].as_f64().unwrap();
        assert!(
            (width - share).abs() < 3.0,
            "{status}: drawn {width} wide, its share is {share}"
        );
        assert!(
            drawn[1].as_f64().unwrap() > 10.0,
            "{status}: its count is not drawn"
        );
        // Each bar says its name and number in text, not only in colour.
        let text = bar.text().await.unwrap();
        assert!(
            text.contains(&status.replace('_', " ")) && text.contains(&format!("{n} (")),
            "{status}: {text:?}"
        );
    }
    let notice = b
        .client
        .find(Locator::Css(&format!("{section} p[data-would-refuse]")))
        .await
        .unwrap();
    assert_eq!(
        notice.attr("data-would-refuse").await.unwrap(),
        Some(would_refuse.to_string())
    );
    assert!(
        notice
            .text()
            .await
            .unwrap()
            .contains(&format!("would refuse {would_refuse} client(s)")),
    );
    let page = b.text("main").await;
    for who in ["new-agent", "foreign-agent", "TLS 1.0"] {
        assert!(page.contains(who), "{who} missing from the page:\n{page}");
    }
    let shot = screenshot(&b, "readiness").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    let errors = b.severe_logs().await;
    assert!(errors.is_empty(), "console errors {errors:?}");
    b.client.clone().close().await.unwrap();
    s.gw.shutdown().await;
}

/// WebDriver key codes.
const TAB: &str = "\u{E004}";
const SHIFT_TAB: &str = "\u{E008}\u{E004}";
const ENTER: &str = "\u{E007}";

impl Browser {
    /// Presses `keys` (Tab or Shift+Tab) until the focused element
    /// matches `css` (at most 100 presses).
    async fn focus_by_keys(&self, keys: &str, css: &str) {
        let script = format!(
            "return document.activeElement !== null && document.activeElement.matches({});",
            serde_json::to_string(css).unwrap()
        );
        for _ in 0..100 {
            if self.client.execute(&script, vec![]).await.unwrap() == serde_json::json!(true) {
                return;
            }
            self.press(keys).await;
        }
        panic!("{css} never got the focus:\n{}", self.source().await);
    }

    async fn press(&self, keys: &str) {
        self.client
            .active_element()
            .await
            .unwrap()
            .send_keys(keys)
            .await
            .unwrap();
    }

    /// axe-core's violations on the current page (from npm, run in the
    /// page): (rule, impact, help, nodes).
    async fn axe(&self, source: &str) -> Vec<serde_json::Value> {
        self.client.execute(source, vec![]).await.unwrap();
        let v = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 axe.run(document)\
                   .then(r => done({ passes: r.passes.length, violations: r.violations.map(v => ({ \
                      id: v.id, impact: v.impact, help: v.help, \
                      nodes: v.nodes.map(n => n.target.join(' ')) })) }))\
                   .catch(e => done({ passes: 0, violations: [{ id: 'axe-error', impact: 'critical', help: String(e) }] }));",
                vec![],
            )
            .await
            .unwrap();
        // A run that checked nothing proves nothing.
        assert!(
            v["passes"].as_u64().unwrap_or(0) > 10,
            "axe did not run: {v}"
        );
        v["violations"].as_array().cloned().unwrap_or_default()
    }
}

/// axe-core's script, installed from npm by `scripts/test.sh` into
/// `target/axe`.
fn axe_source() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/axe/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/test.sh, which installs axe-core from npm",
            path.display()
        )
    })
}

/// Must-show 6: an admin signs in and approves a device with the keyboard
/// only (Tab, Shift+Tab, Space, Enter); no page has a critical or serious
/// accessibility violation by axe-core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_is_approved_with_the_keyboard_alone_and_pages_pass_axe() {
    let mut s = setup().await;
    let device = s.pki.client("keyboard-device", Kind::Good);
    let fp = sha256_hex(&device.der);
    let cfg = no_resumption(&client_config(&s.pki, Some(&device), &[]));
    assert!(get(s.addr, cfg.clone(), "/", &[]).await.is_err());
    assert!(eventually(Duration::from_secs(5), || s.has_pending()).await);
    let axe = axe_source();

    let b = Browser::start().await;
    b.client
        .goto(&format!("http://{}/", s.admin))
        .await
        .unwrap();
    b.wait_path("/login").await;
    let mut violations = Vec::new();
    violations.extend(
        b.axe(&axe)
            .await
            .into_iter()
            .map(|v| ("/login".to_string(), v)),
    );
    b.focus_by_keys(TAB, "#token").await;
    b.press(TOKEN).await;
    b.press(ENTER).await;
    b.wait_path("/").await;

    // Overview → the pending devices, by keyboard.
    b.focus_by_keys(TAB, "a[href='/devices?status=pending']")
        .await;
    b.press(ENTER).await;
    b.wait_text("#devices tbody", "keyboard-device").await;
    let tick = format!("input[name=id][value='{}']", &fp[..16]);
    b.focus_by_keys(TAB, &tick).await;
    b.press(" ").await;
    b.focus_by_keys(SHIFT_TAB, "button[name=action][value=approve]")
        .await;
    b.press(ENTER).await;
    b.wait_text("h1", "Approve 1 device?").await;
    // The confirmation's button has the focus: Enter confirms.
    b.focus_by_keys(TAB, "button.primary").await;
    b.press(ENTER).await;
    b.wait_text("[role=status]", "1 device approved.").await;
    assert_eq!(device_status(s.admin, &fp).await, "approved");
    let (status, _) = get(s.addr, cfg, "/keyboard", &[]).await.unwrap();
    assert_eq!(status, 200);

    let origin = format!("http://{}", s.admin);
    for path in [
        "/",
        "/devices",
        &format!("/devices/{}", &fp[..16]),
        "/readiness",
        "/certificates",
        "/audit",
    ] {
        b.client.goto(&format!("{origin}{path}")).await.unwrap();
        b.wait_path(path).await;
        b.text("h1").await;
        violations.extend(b.axe(&axe).await.into_iter().map(|v| (path.to_string(), v)));
    }
    for (path, v) in &violations {
        println!("axe on {path}: {v}");
    }
    let bad: Vec<_> = violations
        .iter()
        .filter(|(_, v)| matches!(v["impact"].as_str(), Some("critical" | "serious")))
        .collect();
    assert!(bad.is_empty(), "accessibility violations: {bad:#?}");
    b.client.clone().close().await.unwrap();
    s.gw.shutdown().await;
}

/// `certgate devices ARGS --config CONFIG` (a copy that names the admin
/// port the gateway bound): (success, stdout, stderr).
fn devices_with_config(s: &Setup, args: &[&str]) -> (bool, String, String) {
    let text = std::fs::read_to_string(&s.config).unwrap().replacen(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!("[admin]\nlisten = \"{}\"", s.admin),
        1,
    );
    let config = s.pki.path("cli.toml");
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(certgate_bin())
        .arg("devices")
        .args(args)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `curl -si ARGS URL` (bounded): (exit code, what it printed).
fn curl(args: &[&str], url: &str) -> (i32, String) {
    require_tool("curl");
    let out = std::process::Command::new("curl")
        .args(["-si", "--max-time", "10"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn write_pair(pki: &Pki, pair: &ServerPair) {
    std::fs::write(pki.path("admin.pem"), &pair.cert_pem).unwrap();
    std::fs::write(pki.path("admin.key"), &pair.key_pem).unwrap();
}

/// `[admin.tls]`: the console and API over HTTPS (curl with the CA, the CLI
/// with --config, Chromium), session cookies `Secure`, plain HTTP on that
/// port answered by nothing, and a renewed admin certificate served from
/// the next connection on without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_over_https_with_secure_cookies_and_a_renewed_certificate() {
    let pki_for_pair = Pki::new();
    let first = pki_for_pair.server_pair("admin-one");
    let s = setup_with(|cb| {
        let dir = cb.cert.parent().unwrap().to_path_buf();
        std::fs::write(dir.join("admin.pem"), &first.cert_pem).unwrap();
        std::fs::write(dir.join("admin.key"), &first.key_pem).unwrap();
        cb.extra_admin.push_str(&format!(
            "[admin.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            dir.join("admin.pem").display(),
            dir.join("admin.key").display()
        ));
    })
    .await;
    // The admin certificate is from another CA than the gateway's own
    // server certificate: curl is told which.
    let ca = pki_for_pair.server_ca.to_str().unwrap().to_string();
    let origin = format!("https://localhost:{}", s.admin.port());

    let (code, out) = curl(&["--cacert", &ca], &format!("{origin}/login"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("HTTP/2 200") || out.starts_with("HTTP/1.1 200"),
        "{out}"
    );
    assert!(out.contains("Sign in"), "{out}");
    let (code, out) = curl(
        &[
            "--cacert",
            &ca,
            "--data-urlencode",
            &format!("token={TOKEN}"),
        ],
        &format!("{origin}/login"),
    );
    assert_eq!(code, 0, "{out}");
    let cookie = out
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no session cookie: {out}"));
    for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Max-Age="] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
    // Plain HTTP on the TLS port gets no HTTP answer.
    let (code, out) = curl(&[], &format!("http://127.0.0.1:{}/login", s.admin.port()));
    assert_ne!(code, 0, "plain HTTP was answered: {out}");
    assert!(!out.contains("Sign in"), "{out}");

    // The CLI reads the config and speaks HTTPS, trusting that certificate.
    let (ok, stdout, stderr) = devices_with_config(&s, &["list"]);
    assert!(ok, "devices list over HTTPS: {stderr}");
    assert!(!stdout.is_empty());

    // In Chromium: sign in and see the overview, over HTTPS.
    let b = Browser::start().await;
    sign_in_at(&b, &origin, TOKEN).await;
    b.wait_path("/").await;
    b.wait_text("header .who", "alice").await;

    // A renewed certificate (cert and key rewritten in place) is served
    // from the next connection on; the signed-in browser stays signed in.
    let second = pki_for_pair.server_pair("admin-two");
    let since = Instant::now();
    write_pair(&s.pki, &second);
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject as _;
        for c in rustls::pki_types::CertificateDer::pem_file_iter(&pki_for_pair.server_ca).unwrap()
        {
            r.add(c.unwrap()).unwrap();
        }
        r
    };
    let cfg = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let took = wait_for_cert(s.admin, cfg, &second.der, since, Duration::from_secs(10))
        .await
        .expect("the renewed admin certificate is served");
    println!("renewed admin certificate served after {took:?}");
    b.client.refresh().await.unwrap();
    b.wait_text("header .who", "alice").await;
    let (ok, _, stderr) = devices_with_config(&s, &["list"]);
    assert!(ok, "devices list after the renewal: {stderr}");
    b.client.clone().close().await.unwrap();
    s.gw.shutdown().await;
}

/// `[admin.client_auth]`: the admin listener's handshake needs a
/// certificate from the admin CA (none, or another CA's, is refused before
/// any HTTP), the CLI presents one with --client-cert and --client-key and
/// says so when it is missing; and the pair needs `[admin.tls]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_client_certificate_is_required_when_admin_client_auth_is_set() {
    let mut s = setup_with(|cb| {
        let dir = cb.cert.parent().unwrap().to_path_buf();
        cb.extra_admin.push_str(&format!(
            "[admin.tls]\ncert = \"{}\"\nkey = \"{}\"\n[admin.client_auth]\nca = [\"{}\"]\n",
            cb.cert.display(),
            cb.key.display(),
            dir.join("client-ca.pem").display(),
        ));
    })
    .await;
    let admin_cert = s.pki.client("alice-laptop", Kind::Good);
    let stranger = s.pki.client("stranger", Kind::ForeignCa);
    let ca = s.pki.server_ca.to_str().unwrap().to_string();
    let url = format!("https://localhost:{}/healthz", s.admin.port());

    let (code, out) = curl(&["--cacert", &ca], &url);
    assert_ne!(code, 0, "no client certificate was admitted: {out}");
    let with = |c: &ClientCert| {
        curl(
            &[
                "--cacert",
                &ca,
                "--cert",
                c.cert.to_str().unwrap(),
                "--key",
                c.key.to_str().unwrap(),
            ],
            &url,
        )
    };
    let (code, out) = with(&stranger);
    assert_ne!(code, 0, "another CA's certificate was admitted: {out}");
    let (code, out) = with(&admin_cert);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok"), "{out}");

    let (ok, _, stderr) = devices_with_config(&s, &["list"]);
    assert!(!ok);
    assert!(stderr.contains("--client-cert"), "{stderr}");
    let (ok, _, stderr) = devices_with_config(
        &s,
        &[
            "list",
            "--client-cert",
            admin_cert.cert.to_str().unwrap(),
            "--client-key",
            admin_cert.key.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stderr}");
    s.gw.shutdown().await;

    // [admin.client_auth] without [admin.tls] is refused by check.
    let text = std::fs::read_to_string(&s.config).unwrap();
    let start = text.find("[admin.tls]").unwrap();
    let end = text.find("[admin.client_auth]").unwrap();
    let broken = s.pki.path("no-tls.toml");
    std::fs::write(&broken, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let err = certgate_fails("check", &broken);
    assert!(
        err.contains("admin.client_auth") && err.contains("[admin.tls]"),
        "{err}"
    );
}

/// `certgate check` names the admin TLS key whose file is missing or
/// wrong, as it does for a listener's.
#[test]
fn check_names_the_admin_tls_file_that_is_missing_or_does_not_match() {
    let pki = Pki::new();
    let other = pki.server_pair("another");
    std::fs::write(pki.path("other.key"), &other.key_pem).unwrap();
    for (cert, key, want) in [
        (
            pki.path("missing-admin.pem"),
            pki.server_key.clone(),
            "admin.tls.cert",
        ),
        (
            pki.server_cert.clone(),
            pki.path("other.key"),
            "does not match",
        ),
    ] {
        let mut cb = ConfigBuilder::new(&pki, "127.0.0.1:9".parse().unwrap());
        cb.extra_admin = format!(
            "[admin.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        );
        let err = certgate_fails("check", &cb.write(pki.dir.path()));
        assert!(err.contains(want), "{want}: {err}");
        assert!(err.contains("admin.tls"), "{err}");
    }
}

/// A device that tries to connect while the admin looks at the pending
/// list appears in it without a reload (the list refreshes itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_pending_device_appears_in_the_open_list_without_a_reload() {
    let mut s = setup().await;
    let b = Browser::start().await;
    sign_in(&b, s.admin, TOKEN).await;
    b.wait_path("/").await;
    b.client
        .goto(&format!("http://{}/devices?status=pending", s.admin))
        .await
        .unwrap();
    b.wait_text("#count", "0 device(s) match").await;
    // A mark on this page's window: a reload would lose it.
    b.client
        .execute("window.certgateMark = 42; return true;", vec![])
        .await
        .unwrap();

    let device = s.pki.client("late-arrival", Kind::Good);
    let cfg = no_resumption(&client_config(&s.pki, Some(&device), &[]));
    assert!(get(s.addr, cfg, "/", &[]).await.is_err());
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let body = b.text("#devices").await;
        if body.contains("late-arrival") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new device never appeared:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.wait_text("#count", "1 device(s) match").await;
    let mark = b
        .client
        .execute("return window.certgateMark === 42;", vec![])
        .await
        .unwrap();
    assert_eq!(mark, serde_json::json!(true), "the page was reloaded");
    b.client.clone().close().await.unwrap();
    s.gw.shutdown().await;
}
