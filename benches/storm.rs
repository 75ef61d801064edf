//! Reconnect storm: N distinct devices (own key, own certificate, all with
//! the CN the bench policy admits) connect at the same moment, each makes
//! one request and closes — what a fleet does after a restart or an outage.
//! Reports, per proxy, how many were served, how many failed and how, and
//! the time until the last one was served.
//!
//! Needs the shared harness's PKI and running proxies, so it is driven by
//! `benches/fleet-bench.sh` (which sets the variables below); without them it
//! says so and exits. Loopback only, bounded by `STORM_DEADLINE` seconds.
//!
//!   STORM_TARGETS   name=127.0.0.1:port,...
//!   STORM_CLIENT_CA / STORM_CLIENT_CA_KEY / STORM_SERVER_CA   PEM files
//!   STORM_DEVICES (10000), STORM_CN (device-a), STORM_O (organization,
//!   none by default), STORM_DEADLINE (120)
//!   STORM_PIDS      name=pid,... : the proxies' CPU per connection (each a
//!                   first-seen device: a full handshake, chain not cached)
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// CPU ticks (user + system) of `pid` and its children (nginx's workers).
fn ticks(pid: u32) -> u64 {
    let stat = |p: &str| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .ok()
            .and_then(|s| {
                // Fields after the command, which may hold spaces.
                let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
                Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0)
    };
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    stat(&pid.to_string()) + children.split_whitespace().map(stat).sum::<u64>()
}

fn main() {
    // `cargo test --all-targets` and nextest list or run bench binaries
    // without `--bench`; only a real `cargo bench` runs the storm.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let Some(targets) = env("STORM_TARGETS") else {
        println!("storm: STORM_TARGETS not set; run benches/fleet-bench.sh (skipped)");
        return;
    };
    let n: usize = env("STORM_DEVICES").map_or(10_000, |v| v.parse().unwrap());
    let cn = env("STORM_CN").unwrap_or_else(|| "device-a".into());
    let org = env("STORM_O");
    let deadline = Duration::from_secs(env("STORM_DEADLINE").map_or(120, |v| v.parse().unwrap()));
    let read =
        |k: &str| std::fs::read_to_string(env(k).unwrap_or_else(|| panic!("{k} not set"))).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(&read("STORM_CLIENT_CA_KEY")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&read("STORM_CLIENT_CA"), ca_key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_slice_iter(read("STORM_SERVER_CA").as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let roots = Arc::new(roots);

    let t = Instant::now();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let clients: Vec<Arc<rustls::ClientConfig>> = (0..n)
        .map(|i| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            // The subject is exactly the admitted one (nginx's policy
            // compares the whole DN); key and serial make each device distinct.
            // A fresh DN (the default one already holds a CN, which would
            // stay first), RDNs in the order of the harness's devices: O, CN.
            p.distinguished_name = rcgen::DistinguishedName::new();
            if let Some(o) = &org {
                p.distinguished_name
                    .push(rcgen::DnType::OrganizationName, o.as_str());
            }
            p.distinguished_name
                .push(rcgen::DnType::CommonName, cn.as_str());
            p.serial_number = Some(rcgen::SerialNumber::from(0x5000_0000u64 + i as u64));
            let cert = p.signed_by(&key, &issuer).unwrap();
            if i == 0
                && let Some(path) = env("STORM_DUMP_FIRST")
            {
                std::fs::write(path, cert.pem()).unwrap();
            }
            let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS12])
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_client_auth_cert(
                    vec![CertificateDer::from(cert.der().to_vec())],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .unwrap();
            cfg.resumption = rustls::client::Resumption::disabled();
            Arc::new(cfg)
        })
        .collect();
    eprintln!(
        "storm: {n} device certificates in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| proxy | devices | served (200) | failed | failure kinds | time to serve all, s | p50 s | p99 s | proxy CPU µs/conn |"
    );
    println!("|---|---:|---:|---:|---|---:|---:|---:|---:|");
    let pids = env("STORM_PIDS").unwrap_or_default();
    let pid_of = |name: &str| {
        pids.split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse::<u32>().ok())
    };
    // /proc/<pid>/stat counts in USER_HZ, which is 100 on Linux.
    let hz = 100.0;
    for target in targets.split(',') {
        let (name, addr) = target.split_once('=').expect("name=addr");
        let addr: SocketAddr = addr.parse().unwrap();
        assert!(addr.ip().is_loopback(), "storm: loopback only");
        let t0 = pid_of(name).map(ticks);
        let r = rt.block_on(storm(addr, &clients, deadline));
        let cpu = match (pid_of(name), t0) {
            (Some(p), Some(t0)) if r.ok > 0 => {
                format!(
                    "{:.0}",
                    ticks(p).saturating_sub(t0) as f64 / hz * 1e6 / r.ok as f64
                )
            }
            _ => "-".into(),
        };
        println!(
            "| {name} | {n} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {cpu} |",
            r.ok, r.failed, r.kinds, r.all_s, r.p50, r.p99
        );
        // Let the proxy settle (TIME_WAIT, pools) before the next one.
        std::thread::sleep(Duration::from_secs(3));
    }
}

struct Outcome {
    ok: usize,
    failed: usize,
    kinds: String,
    all_s: f64,
    p50: f64,
    p99: f64,
}

async fn storm(
    addr: SocketAddr,
    clients: &[Arc<rustls::ClientConfig>],
    deadline: Duration,
) -> Outcome {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in clients {
        let c = c.clone();
        set.spawn(async move {
            let r = tokio::time::timeout(deadline, one(addr, c)).await;
            (r.unwrap_or_else(|_| Err("timeout".into())), start.elapsed())
        });
    }
    let mut ok = 0;
    let mut times = Vec::with_capacity(clients.len());
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    while let Some(r) = set.join_next().await {
        let (r, at) = r.unwrap();
        match r {
            Ok(()) => {
                ok += 1;
                times.push(at.as_secs_f64());
            }
            Err(e) => *kinds.entry(e).or_default() += 1,
        }
    }
    times.sort_by(f64::total_cmp);
    let q = |p: f64| {
        times
            .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Outcome {
        ok,
        failed: clients.len() - ok,
        kinds: if kinds.is_empty() {
            "–".into()
        } else {
            kinds
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        all_s: times.last().copied().unwrap_or(0.0),
        p50: q(0.5),
        p99: q(0.99),
    }
}

async fn one(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let mut tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {}", e.kind()))?;
    tls.write_all(b"GET /small HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {}", e.kind()))?;
    let mut buf = Vec::with_capacity(1024);
    // Some servers end without close_notify; what was read counts.
    let _ = tls.read_to_end(&mut buf).await;
    if buf.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else if buf.is_empty() {
        Err("no response".into())
    } else {
        Err(format!(
            "status {}",
            String::from_utf8_lossy(&buf[9..12.min(buf.len())])
        ))
    }
}
