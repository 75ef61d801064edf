//! Soak: a release certgate under mixed load for a long time, watched for
//! leaks. Keep-alive requests, new handshakes (full and resumed), uploads,
//! refused devices (unknown CA, not approved), a new device approved every
//! few seconds and a server certificate rotation every minute. Every
//! sample interval it prints RSS, open file descriptors and the keep-alive
//! latency of that interval; at the end, the growth after warm-up.
//!
//! Loopback only; every loop stops at the deadline. Run through
//! `benches/soak.sh` (release build, 30 minutes by default):
//!
//!   SOAK_SECONDS (1800)  SOAK_SAMPLE (30)  SOAK_KEEPALIVE (8)
//!   SOAK_FORGET (0): 1 deletes each approved device once it was served,
//!   so the registry stays the same size and any RSS growth left is not
//!   the registry's data (a new device record is expected to cost memory)
//!   SOAK_HEAPTRACK (unset): a file path; certgate runs with heaptrack's
//!   preload library writing its raw allocation record there
//!   SOAK_SESSION_CACHE (2000): the TLS session cache grows by one entry
//!   per full handshake (~700 a minute here) up to its bound; the default
//!   50,000 would take the whole run to fill and look like a leak, so the
//!   soak uses a bound it reaches during warm-up.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl Ca {
    fn new(cn: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    /// A leaf: (cert DER, cert PEM, key PEM).
    fn leaf(&self, cn: &str, server: bool) -> (CertificateDer<'static>, String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names = if server {
            vec!["localhost".to_string()]
        } else {
            Vec::new()
        };
        let mut p = rcgen::CertificateParams::new(names).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.der().clone(), cert.pem(), key.serialize_pem())
    }
}

fn sha256_hex(b: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn client_config(
    server_ca: &str,
    device: Option<(&CertificateDer<'static>, &str)>,
    resume: bool,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_slice_iter(server_ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots);
    let mut cfg = match device {
        Some((der, key_pem)) => {
            let key = rustls::pki_types::pem::PemObject::from_pem_slice(key_pem.as_bytes())
                .map(|k: PrivatePkcs8KeyDer<'static>| PrivateKeyDer::Pkcs8(k))
                .unwrap();
            b.with_client_auth_cert(vec![der.clone()], key).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    if !resume {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(cfg)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn request(s: &mut Sender, method: &str, path: &str, body: Bytes) -> Result<Bytes, String> {
    s.ready().await.map_err(|e| e.to_string())?;
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(body))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), s.send_request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status != 200 {
        return Err(format!("status {status}"));
    }
    Ok(body)
}

/// One GET over a new connection.
async fn once(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<Bytes, String> {
    let mut s = connect(addr, cfg).await?;
    request(&mut s, "GET", path, Bytes::new()).await
}

/// The backend: `/upload` answers the body length, anything else "ok".
async fn backend() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let upload = req.uri().path() == "/upload";
                        let n = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes().len())
                            .unwrap_or(0);
                        let text = if upload {
                            n.to_string()
                        } else {
                            "ok".to_string()
                        };
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(text))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    handshakes: AtomicU64,
    uploads: AtomicU64,
    refused_as_expected: AtomicU64,
    approvals: AtomicU64,
    rotations: AtomicU64,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
    latencies_us: Mutex<Vec<u32>>,
}

impl Counters {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut f = self.first_errors.lock().unwrap();
        if f.len() < 10 {
            f.push(what);
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn write_pair(dir: &Path, cert: &str, key: &str) {
    // Write-and-rename, as certbot does.
    for (name, text) in [("server.pem", cert), ("server.key", key)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

struct Gateway {
    child: std::process::Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // SIGTERM first: certgate shuts down cleanly, so a heap profiler
        // preloaded into it (SOAK_HEAPTRACK) writes its last data.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..150 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway(config: &Path) -> Gateway {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_certgate"));
    if let Ok(raw) = std::env::var("SOAK_HEAPTRACK") {
        // Where a leak hunt starts: heaptrack's preload library records
        // every allocation with its stack; turn the raw file into a report
        // with `/usr/lib/heaptrack/libexec/heaptrack_interpret < RAW | gzip
        // > ht.gz; heaptrack_print -f ht.gz` (apt-get install heaptrack).
        cmd.env("LD_PRELOAD", "/usr/lib/heaptrack/libheaptrack_preload.so")
            .env("DUMP_HEAPTRACK_OUTPUT", raw);
    }
    let mut child = cmd
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn,certgate=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Read the whole log (so the pipe never fills), keep nothing.
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if line.contains("listening")
                && let Some(a) = line
                    .split("addr=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
            {
                let who = if line.contains("listener=agents") {
                    "agents"
                } else {
                    "admin"
                };
                let _ = tx.send((who, a.trim_matches('"').to_string()));
            }
        }
    });
    let (mut addr, mut admin) = (None, None);
    while addr.is_none() || admin.is_none() {
        let (who, a) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("certgate did not start");
        if who == "agents" {
            addr = a.parse().ok();
        } else {
            admin = a.parse().ok();
        }
    }
    Gateway {
        child,
        addr: addr.unwrap(),
        admin: admin.unwrap(),
    }
}

/// `method path` on the admin API; an error unless it answers 200.
async fn admin_call(admin: SocketAddr, method: http::Method, path: &str) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(admin)
        .await
        .map_err(|e| e.to_string())?;
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method.clone())
        .uri(path)
        .header("host", "admin")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("{method} {path} answered {}", resp.status()));
    }
    Ok(())
}

/// Every `every` until `deadline`: a new connection with the next of
/// `cfgs` in turn, one GET of `path`, its outcome handed to `tally`.
fn alternating(
    addr: SocketAddr,
    cfgs: [Arc<rustls::ClientConfig>; 2],
    path: &'static str,
    every: Duration,
    deadline: Instant,
    tally: impl Fn(Result<Bytes, String>) + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0usize;
        while Instant::now() < deadline {
            n += 1;
            tally(once(addr, cfgs[n % 2].clone(), path).await);
            tokio::time::sleep(every).await;
        }
    })
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds = env_num("SOAK_SECONDS", 1800);
    let sample = Duration::from_secs(env_num("SOAK_SAMPLE", 30));
    let keepalive = env_num("SOAK_KEEPALIVE", 8) as usize;
    let forget = env_num("SOAK_FORGET", 0) == 1;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(soak(seconds, sample, keepalive, forget));
}

async fn soak(seconds: u64, sample: Duration, keepalive: usize, forget: bool) {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("soak server CA");
    let client_ca = Ca::new("soak client CA");
    let stranger_ca = Ca::new("stranger CA");
    let pairs: Vec<(String, String)> = (0..2)
        .map(|i| {
            let (_, c, k) = server_ca.leaf(&format!("soak server {i}"), true);
            (c, k)
        })
        .collect();
    write_pair(dir.path(), &pairs[0].0, &pairs[0].1);
    std::fs::write(dir.path().join("client-ca.pem"), &client_ca.pem).unwrap();
    let backend = backend().await;
    let config = dir.path().join("certgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[registry]
path = "{reg}"
approval = "manual"

[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "agents"
listen = "127.0.0.1:0"
upstream = "core"
[listener.tls]
session_cache = {session_cache}
[[listener.tls.certificate]]
cert = "server.pem"
key = "server.key"
[listener.client_auth]
mode = "required"
ca = ["client-ca.pem"]

[[upstream]]
name = "core"
servers = ["{backend}"]
"#,
            reg = dir.path().join("registry/devices.redb").display(),
            session_cache = env_num("SOAK_SESSION_CACHE", 2000),
        ),
    )
    .unwrap();
    let gw = start_gateway(&config);
    let (addr, admin, pid) = (gw.addr, gw.admin, gw.child.id());

    // The steady devices are approved up front.
    let device = |cn: &str| {
        let (der, _, key) = client_ca.leaf(cn, false);
        (der, key)
    };
    let steady = device("soak steady");
    admin_call(
        admin,
        http::Method::POST,
        &format!("/api/devices/{}/approve", sha256_hex(&steady.0)),
    )
    .await
    .unwrap();
    let resumed_cfg = client_config(&server_ca.pem, Some((&steady.0, &steady.1)), true);
    let full_cfg = client_config(&server_ca.pem, Some((&steady.0, &steady.1)), false);
    let stranger = {
        let (der, _, key) = stranger_ca.leaf("stranger", false);
        client_config(&server_ca.pem, Some((&der, &key)), false)
    };
    let unapproved = {
        let (der, key) = device("never approved");
        client_config(&server_ca.pem, Some((&der, &key)), false)
    };

    let c = Arc::new(Counters::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();

    // Keep-alive clients: a request every 2 ms each, latency recorded.
    for i in 0..keepalive {
        let (c, cfg) = (c.clone(), resumed_cfg.clone());
        tasks.push(tokio::spawn(async move {
            let mut s: Option<Sender> = None;
            while Instant::now() < deadline {
                if s.as_ref().is_none_or(|s| s.is_closed()) {
                    match connect(addr, cfg.clone()).await {
                        Ok(x) => s = Some(x),
                        Err(e) => {
                            c.error(format!("keep-alive {i} connect: {e}"));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    }
                }
                let Some(sender) = s.as_mut() else { continue };
                let t = Instant::now();
                match request(sender, "GET", "/ka", Bytes::new()).await {
                    Ok(_) => {
                        c.ok.fetch_add(1, Ordering::Relaxed);
                        let us = u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX);
                        c.latencies_us.lock().unwrap().push(us);
                    }
                    Err(e) => {
                        c.error(format!("keep-alive {i}: {e}"));
                        s = None;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    // New connections: alternately resumed and full handshakes, every 20 ms.
    {
        let c = c.clone();
        tasks.push(alternating(
            addr,
            [resumed_cfg.clone(), full_cfg.clone()],
            "/new",
            Duration::from_millis(20),
            deadline,
            move |r| match r {
                Ok(_) => {
                    c.handshakes.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => c.error(format!("new connection: {e}")),
            },
        ));
    }
    // Uploads: 256 KiB every 250 ms on one keep-alive connection.
    {
        let (c, cfg) = (c.clone(), resumed_cfg.clone());
        tasks.push(tokio::spawn(async move {
            let body = Bytes::from(vec![0x5a; 256 * 1024]);
            let mut s: Option<Sender> = None;
            while Instant::now() < deadline {
                if s.as_ref().is_none_or(|s| s.is_closed()) {
                    s = connect(addr, cfg.clone()).await.ok();
                }
                if let Some(sender) = s.as_mut() {
                    match request(sender, "POST", "/upload", body.clone()).await {
                        Ok(b) if &b[..] == b"262144" => {
                            c.uploads.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(b) => c.error(format!("upload answered {b:?}")),
                        Err(e) => {
                            c.error(format!("upload: {e}"));
                            s = None;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }));
    }
    // Refusals: an unknown CA and an unapproved device, every 100 ms.
    {
        let c = c.clone();
        tasks.push(alternating(
            addr,
            [stranger, unapproved],
            "/refused",
            Duration::from_millis(100),
            deadline,
            move |r| match r {
                Err(_) => {
                    c.refused_as_expected.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => c.error("a device that must be refused was served".into()),
            },
        ));
    }
    // A new device approved every 3 s, then served.
    {
        let (c, server_pem) = (c.clone(), server_ca.pem.clone());
        let issuer_ca = Arc::new(client_ca);
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let (der, _, key) = issuer_ca.leaf(&format!("new device {n}"), false);
                let fp = sha256_hex(&der);
                let r = async {
                    admin_call(
                        admin,
                        http::Method::POST,
                        &format!("/api/devices/{fp}/approve"),
                    )
                    .await?;
                    let mut s =
                        connect(addr, client_config(&server_pem, Some((&der, &key)), false))
                            .await?;
                    request(&mut s, "GET", "/approved", Bytes::new()).await?;
                    if forget {
                        admin_call(admin, http::Method::DELETE, &format!("/api/devices/{fp}"))
                            .await?;
                    }
                    Ok::<_, String>(())
                }
                .await;
                match r {
                    Ok(_) => c.approvals.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        c.error(format!("approved device {n}: {e}"));
                        0
                    }
                };
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        }));
    }
    // A server certificate rotation every minute.
    {
        let (c, dir) = (c.clone(), PathBuf::from(dir.path()));
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while Instant::now() + Duration::from_secs(60) < deadline {
                tokio::time::sleep(Duration::from_secs(60)).await;
                n += 1;
                let (cert, key) = &pairs[n % 2];
                write_pair(&dir, cert, key);
                c.rotations.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    println!(
        "soak: {seconds} s, {keepalive} keep-alive clients + new connections every 20 ms + 256 KiB upload every 250 ms + 2 refusals every 200 ms + an approval every 3 s{} + a cert rotation every 60 s",
        if forget {
            " (deleted again once served)"
        } else {
            ""
        }
    );
    println!(
        "| t (s) | RSS MiB | fds | keep-alive req/s | p50 ms | p99 ms | handshakes | uploads | refused | approvals | rotations | errors |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let started = Instant::now();
    let mut rows: Vec<(u64, u64, usize)> = Vec::new();
    let mut last_ok = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(sample.min(deadline.saturating_duration_since(Instant::now()))).await;
        let mut lat = std::mem::take(&mut *c.latencies_us.lock().unwrap());
        lat.sort_unstable();
        let ok = c.ok.load(Ordering::Relaxed);
        let t = started.elapsed().as_secs();
        let (rss, fd) = (rss_kib(pid), fds(pid));
        rows.push((t, rss, fd));
        println!(
            "| {t} | {:.1} | {fd} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |",
            rss as f64 / 1024.0,
            (ok - last_ok) as f64 / sample.as_secs_f64(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            c.handshakes.load(Ordering::Relaxed),
            c.uploads.load(Ordering::Relaxed),
            c.refused_as_expected.load(Ordering::Relaxed),
            c.approvals.load(Ordering::Relaxed),
            c.rotations.load(Ordering::Relaxed),
            c.errors.load(Ordering::Relaxed),
        );
        last_ok = ok;
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    // Warm-up: the first fifth of the run (caches, pools, the allocator's
    // arenas fill up); growth after it is what a leak looks like.
    let warm = rows
        .iter()
        .find(|r| r.0 >= seconds / 5)
        .or(rows.first())
        .copied();
    let end = rows.last().copied();
    if let (Some(w), Some(e)) = (warm, end) {
        let growth = e.1 as f64 / w.1.max(1) as f64 - 1.0;
        println!(
            "\nafter warm-up (t={} s): RSS {:.1} MiB, {} fds; at the end (t={} s): RSS {:.1} MiB ({:+.1} %), {} fds ({:+})",
            w.0,
            w.1 as f64 / 1024.0,
            w.2,
            e.0,
            e.1 as f64 / 1024.0,
            growth * 100.0,
            e.2,
            e.2 as i64 - w.2 as i64
        );
        let leak = (growth > 0.25 && e.1 > w.1 + 5 * 1024) || e.2 > w.2 + 20;
        println!(
            "verdict: {}",
            if leak {
                "GROWTH AFTER WARM-UP (look for a leak)"
            } else {
                "no growth beyond noise after warm-up"
            }
        );
    }
    println!(
        "keep-alive requests {}, handshakes {}, uploads {}, refused as expected {}, approvals {}, rotations {}, errors {}",
        c.ok.load(Ordering::Relaxed),
        c.handshakes.load(Ordering::Relaxed),
        c.uploads.load(Ordering::Relaxed),
        c.refused_as_expected.load(Ordering::Relaxed),
        c.approvals.load(Ordering::Relaxed),
        c.rotations.load(Ordering::Relaxed),
        c.errors.load(Ordering::Relaxed),
    );
    for e in c.first_errors.lock().unwrap().iter() {
        println!("  error: {e}");
    }
    drop(gw);
}
