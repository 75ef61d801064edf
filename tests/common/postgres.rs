//! A real PostgreSQL server per test (Debian's package): `initdb` and
//! `pg_ctl` in a temporary directory owned by the `postgres` user, on a
//! free loopback port; stopped when dropped.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The server binaries of the installed PostgreSQL (the newest major).
fn bin(name: &str) -> PathBuf {
    let mut majors: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    majors.sort();
    let dir = majors
        .into_iter()
        .rev()
        .find(|m| m.join("bin/initdb").exists())
        .unwrap_or_else(|| {
            panic!("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb); run scripts/test.sh, which installs it")
        });
    dir.join("bin").join(name)
}

/// An empty directory owned by the `postgres` user, directly under /tmp
/// (not inside root's 0700 temporary directories).
fn postgres_dir() -> PathBuf {
    let out = Command::new("mktemp")
        .args(["-d", "/tmp/certgate-pg.XXXXXX"])
        .output()
        .unwrap();
    let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let ok = Command::new("chown")
        .arg("postgres:")
        .arg(&dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chown postgres {}", dir.display());
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running PostgreSQL cluster.
pub struct PgServer {
    pub dir: PathBuf,
    pub port: u16,
}

/// Runs a command as the `postgres` user from `/` (PostgreSQL refuses
/// root), with its output collected (never inherited: `pg_ctl start`
/// would keep a pipe open).
fn as_postgres(args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .current_dir("/")
        .output()
        .unwrap()
}

impl PgServer {
    /// initdb (trust authentication, superuser `certgate`) and start.
    pub fn start() -> PgServer {
        super::require_tool("runuser");
        let initdb = bin("initdb");
        let dir = postgres_dir();
        let d = dir.display().to_string();
        let out = as_postgres(&[
            initdb.to_str().unwrap(),
            "-D",
            &d,
            "-A",
            "trust",
            "-U",
            "certgate",
            "--no-sync",
        ]);
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let pg = PgServer { dir, port };
        pg.up();
        pg
    }

    /// A hot standby of `primary` (pg_basebackup, streaming replication)
    /// on a port of its own, started.
    pub fn standby_of(primary: &PgServer) -> PgServer {
        let dir = postgres_dir();
        let d = dir.display().to_string();
        let port = primary.port.to_string();
        let out = as_postgres(&[
            bin("pg_basebackup").to_str().unwrap(),
            "-D",
            &d,
            "-R",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "certgate",
            "-X",
            "stream",
        ]);
        assert!(
            out.status.success(),
            "pg_basebackup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let pg = PgServer { dir, port };
        pg.up();
        pg
    }

    /// Makes a standby the primary.
    pub fn promote(&self) {
        let d = self.dir.display().to_string();
        let out = as_postgres(&[bin("pg_ctl").to_str().unwrap(), "-D", &d, "-w", "promote"]);
        assert!(
            out.status.success(),
            "pg_ctl promote: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The connection string certgate is given.
    pub fn url(&self) -> String {
        format!("postgres://certgate@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again), retrying while a killed postmaster is
    /// being reaped.
    pub fn up(&self) {
        let d = self.dir.display().to_string();
        let log = format!("{d}/log");
        let opts = format!(
            "-p {} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = as_postgres(&[
                bin("pg_ctl").to_str().unwrap(),
                "-D",
                &d,
                "-l",
                &log,
                "-o",
                &opts,
                "-w",
                "start",
            ]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pg_ctl start: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the server: `fast` (clients disconnected, clean) or
    /// `immediate` (as a crash).
    pub fn down(&self, mode: &str) {
        let d = self.dir.display().to_string();
        let out = as_postgres(&[
            bin("pg_ctl").to_str().unwrap(),
            "-D",
            &d,
            "-m",
            mode,
            "-w",
            "stop",
        ]);
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs SQL with psql; its output (unaligned, tuples only).
    pub fn sql(&self, query: &str) -> String {
        super::require_tool("psql");
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url())
            .args(["-c", query])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {query}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let d = self.dir.display().to_string();
        let _ = as_postgres(&[
            bin("pg_ctl").to_str().unwrap(),
            "-D",
            &d,
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
