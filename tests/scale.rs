//! 10,000 concurrent mTLS connections held open against the certgate binary
//! (issue 8): all admitted, counted, still answering, and a new client is
//! served while they are held.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use http_body_util::BodyExt;

const HELD: usize = 10_000;

/// Raises this process's open-file limit (the test holds one fd per
/// connection) with `prlimit`; the gateway gets its own through `ulimit`.
fn raise_nofile(want: u64) {
    let pid = std::process::id().to_string();
    // Raising the hard limit needs CAP_SYS_RESOURCE (root in a container
    // may not have it): then the soft limit goes as far as the hard one,
    // and the count below says if that is not enough.
    let hard = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
        })
        .and_then(|h| h.parse::<u64>().ok())
        .unwrap_or(want);
    let limit = if hard >= want {
        format!("--nofile={want}:{hard}")
    } else {
        format!("--nofile={want}:{want}")
    };
    let ok = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &limit])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let _ = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_are_held_and_all_still_answer() {
    raise_nofile(30_000);
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_listener = "max_connections = 12000\nidle_timeout = \"300s\"\n".into();
    let config = cb.write(pki.dir.path());
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(r#"ulimit -n 30000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" run --config "$1""#)
        .arg(certgate_bin())
        .arg(&config);
    let (mut gw, started) = spawn_logged(cmd, "127.0.0.1:0".parse().unwrap());
    gw.addr = started
        .recv_timeout(Duration::from_secs(20))
        .unwrap()
        .parse()
        .unwrap();
    let admin = gw.admin_addr();
    let addr = gw.addr;
    // One client config: after the first, handshakes resume (the point here
    // is holding connections, not handshake cost).
    let client = client_config(&pki, Some(&device), &[]);

    let t = Instant::now();
    let mut held = Vec::with_capacity(HELD);
    let mut failures = Vec::new();
    // In waves, so the listen backlog never overflows.
    for wave in 0..HELD / 500 {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..500 {
            let client = client.clone();
            set.spawn(async move {
                let mut s = h1_sender(addr, client).await.map_err(|e| e.to_string())?;
                let req = http::Request::get(format!("/hold/{}", wave * 500 + i))
                    .header("host", "localhost")
                    .body(empty())
                    .unwrap();
                let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
                let status = resp.status();
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?;
                if status != 200 {
                    return Err(format!("status {status}"));
                }
                Ok(s)
            });
        }
        while let Some(r) = set.join_next().await {
            match r.unwrap() {
                Ok(s) => held.push(s),
                Err(e) => failures.push(e),
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(240),
            "too slow: {} held after {:?}",
            held.len(),
            t.elapsed()
        );
    }
    let opened_in = t.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {HELD} failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    let active = scraped(admin, "certgate_connections_active{listener=\"agents\"}").await;
    let rss_mib = gw.rss_kib() as f64 / 1024.0;
    println!(
        "{HELD} connections opened in {opened_in:?}; certgate: {active} active, RSS {rss_mib:.0} MiB"
    );
    assert_eq!(active as usize, HELD);

    // A newcomer is served while they are all held.
    let (status, _) = get(addr, client.clone(), "/newcomer", &[]).await.unwrap();
    assert_eq!(status, 200);
    // Every 50th held connection still answers.
    for (i, s) in held.iter_mut().enumerate().step_by(50) {
        s.ready().await.unwrap();
        let req = http::Request::get(format!("/again/{i}"))
            .header("host", "localhost")
            .body(empty())
            .unwrap();
        let resp = s.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "held connection {i}");
        resp.into_body().collect().await.unwrap();
    }
    drop(held);
    let mut closed = false;
    for _ in 0..100 {
        if scraped(admin, "certgate_connections_active{listener=\"agents\"}").await == 0.0 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "connections still counted after the clients closed");
}
