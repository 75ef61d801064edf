//! The access log: one line per request, written through tracing with the
//! target `certgate::access` so it can go to its own writer (stdout by
//! default) apart from diagnostics, as `logfmt` or `json`.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `key=value` pairs, values quoted when needed.
    Logfmt,
    /// One JSON object per line.
    Json,
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// Chooses the line format (once, at startup; logfmt otherwise).
pub(crate) fn set_format(f: Format) {
    let _ = FORMAT.set(f);
}

static OFF: AtomicBool = AtomicBool::new(false);

/// Tells requests that no access line is wanted (`log.access = "off"`).
/// `tracing::enabled!` alone does not say so: with per-layer filters it
/// answers for the whole subscriber, and each request would build and
/// format a line for nobody.
pub(crate) fn set_off(off: bool) {
    OFF.store(off, Ordering::Relaxed);
}

/// Whether an access line would be written: requests skip building the
/// entry when nobody listens.
pub(crate) fn enabled() -> bool {
    !OFF.load(Ordering::Relaxed)
        && tracing::enabled!(target: "certgate::access", tracing::Level::INFO)
}

/// Everything one access line says.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entry {
    /// Listener.
    pub listener: String,
    /// Client address.
    pub peer: Option<SocketAddr>,
    /// Device fingerprint.
    pub fingerprint: Option<String>,
    /// Device subject.
    pub subject: Option<String>,
    /// `1.2`, `1.3`, or none for plain HTTP.
    pub tls_version: Option<&'static str>,
    /// Negotiated cipher suite.
    pub cipher: Option<&'static str>,
    /// Request method.
    pub method: String,
    /// Request path (and query).
    pub path: String,
    /// Response status.
    pub status: u16,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Backend server that answered.
    pub upstream_server: Option<SocketAddr>,
    /// TLS handshake duration of the connection, ms.
    pub handshake_ms: Option<f64>,
    /// Request sent → response head received, ms.
    pub upstream_ms: Option<f64>,
    /// Request head → end of response body, ms.
    pub total_ms: f64,
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

fn logfmt_value(out: &mut String, v: &str) {
    if !v.is_empty()
        && !v
            .bytes()
            .any(|b| b == b' ' || b == b'"' || b == b'=' || b < 0x20)
    {
        out.push_str(v);
        return;
    }
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Entry {
    /// The line in `format`.
    pub(crate) fn line(&self, format: Format) -> String {
        let time = now_rfc3339();
        let ms = |v: f64| (v * 1000.0).round() / 1000.0;
        match format {
            Format::Json => serde_json::json!({
                "time": time,
                "listener": self.listener,
                "peer": self.peer.map(|p| p.to_string()),
                "fingerprint": self.fingerprint,
                "subject": self.subject,
                "tls_version": self.tls_version,
                "cipher": self.cipher,
                "method": self.method,
                "path": self.path,
                "status": self.status,
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "upstream_server": self.upstream_server.map(|s| s.to_string()),
                "handshake_ms": self.handshake_ms.map(ms),
                "upstream_ms": self.upstream_ms.map(ms),
                "total_ms": ms(self.total_ms),
            })
            .to_string(),
            Format::Logfmt => {
                let mut out = String::with_capacity(256);
                let mut kv = |k: &str, v: &str| {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    out.push_str(k);
                    out.push('=');
                    logfmt_value(&mut out, v);
                };
                let dash = |o: Option<String>| o.unwrap_or_else(|| "-".into());
                kv("time", &time);
                kv("listener", &self.listener);
                kv("peer", &dash(self.peer.map(|p| p.to_string())));
                kv("fingerprint", &dash(self.fingerprint.clone()));
                kv("subject", &dash(self.subject.clone()));
                kv("tls_version", self.tls_version.unwrap_or("-"));
                kv("cipher", self.cipher.unwrap_or("-"));
                kv("method", &self.method);
                kv("path", &self.path);
                kv("status", &self.status.to_string());
                kv("bytes_in", &self.bytes_in.to_string());
                kv("bytes_out", &self.bytes_out.to_string());
                kv(
                    "upstream_server",
                    &dash(self.upstream_server.map(|s| s.to_string())),
                );
                kv(
                    "handshake_ms",
                    &dash(self.handshake_ms.map(|v| format!("{:.3}", v))),
                );
                kv(
                    "upstream_ms",
                    &dash(self.upstream_ms.map(|v| format!("{:.3}", v))),
                );
                kv("total_ms", &format!("{:.3}", self.total_ms));
                out
            }
        }
    }

    /// Writes the line.
    pub(crate) fn emit(&self) {
        let format = FORMAT.get().copied().unwrap_or(Format::Logfmt);
        tracing::info!(target: "certgate::access", "{}", self.line(format));
    }
}

/// A handshake refused: also an access-log line (no request), so the log
/// shows every device that tried.
pub(crate) fn refused(listener: &str, peer: SocketAddr, reason: &str, fingerprint: Option<&str>) {
    if !enabled() {
        return;
    }
    let format = FORMAT.get().copied().unwrap_or(Format::Logfmt);
    let line = match format {
        Format::Json => serde_json::json!({
            "time": now_rfc3339(),
            "listener": listener,
            "peer": peer.to_string(),
            "fingerprint": fingerprint,
            "event": "handshake_refused",
            "reason": reason,
        })
        .to_string(),
        Format::Logfmt => {
            let mut out = format!(
                "time={} listener={listener} peer={peer} fingerprint={} event=handshake_refused reason=",
                now_rfc3339(),
                fingerprint.unwrap_or("-")
            );
            logfmt_value(&mut out, reason);
            out
        }
    };
    tracing::info!(target: "certgate::access", "{}", line);
}
