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
}

async fn setup() -> Setup {
    let pki = Pki::new();
    let backend = Backend::start().await;
    let tokens = pki.path("admin.tokens");
    std::fs::write(&tokens, format!("alice:{TOKEN}\n")).unwrap();
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_admin = format!("token_file = \"{}\"\n", tokens.display());
    cb.extra_top = registry_table(pki.dir.path(), "manual");
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let admin = gw.admin_addr().unwrap();
    Setup {
        pki,
        gw,
        _backend: backend,
        addr,
        admin,
    }
}

async fn sign_in(b: &Browser, admin: SocketAddr, token: &str) {
    b.client.goto(&format!("http://{admin}/")).await.unwrap();
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
