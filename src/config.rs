//! The TOML schema and its validation.
//!
//! The pipeline, after sozu: `file → RawConfig (serde, deny_unknown_fields)
//! → validate → Settings`. The raw shape mirrors the file one to one; the
//! validated [`Settings`] are what the rest of the crate sees, with defaults
//! filled in, paths resolved against the config file's directory and every
//! cross-reference (listener → upstream) checked. This module reads the
//! config file itself and nothing else: loading the certificates and keys it
//! names belongs to [`crate::tls`], so parsing stays a pure function that
//! tests can feed from a string.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;

/// Default TLS handshake timeout: long enough for a slow device on a bad
/// link, short enough that idle half-open sockets do not pile up.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a client has to send a complete request head (HTTP/1) and,
/// on a keep-alive connection, to start its next request.
pub const DEFAULT_REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a connection may sit with no request in flight and no I/O.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default limit on a request head (request line + headers), in bytes.
pub const DEFAULT_MAX_REQUEST_HEADER_BYTES: usize = 64 * 1024;
/// Default limit on the number of request headers.
pub const DEFAULT_MAX_REQUEST_HEADERS: usize = 100;
/// Default cap on concurrent connections per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default TCP connect timeout toward a backend server.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a backend has to send its response head.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time an idle pooled backend connection is kept.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Default number of idle pooled connections kept per upstream.
pub const DEFAULT_POOL_MAX_IDLE: usize = 256;
/// Default cap on requests in flight to one upstream. A legacy backend that
/// thousands of agents reach at once after an outage must not be handed
/// thousands of new connections in the same second (nginx's backend here
/// runs out of worker connections); beyond the cap requests queue.
pub const DEFAULT_UPSTREAM_MAX_CONNECTIONS: usize = 512;
/// Default time a request may wait for an upstream connection slot.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default consecutive connect failures after which a server of a
/// multi-server upstream is taken out of rotation (nginx's `max_fails`).
pub const DEFAULT_MAX_FAILS: u32 = 1;
/// Default time an ejected server stays out of rotation before it gets
/// a request again (nginx's `fail_timeout`).
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time between two active health checks of a server.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// Default time one health check may take.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Default longest request target (nginx refuses longer ones with 414 at
/// its default 8 KiB header buffers too).
pub const DEFAULT_MAX_URI_BYTES: usize = 8192;
/// Default time in-flight requests get to finish after SIGTERM/SIGINT.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default capacity of the registry's update queue.
pub const DEFAULT_UPDATE_QUEUE: usize = 65_536;
/// File name of the audit log when `registry.audit_log` is not given.
pub const AUDIT_LOG_NAME: &str = "audit.log";
/// Default number of TLS 1.2 sessions kept for session-ID resumption.
pub const DEFAULT_SESSION_CACHE: usize = 20_000;

// hyper refuses a read buffer smaller than this; a smaller header limit
// would otherwise panic at startup.
const MIN_HEADER_BYTES: usize = 8 * 1024;

// ---------------------------------------------------------------------------
// Raw TOML shape
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    shutdown_grace: Option<String>,
    handover_socket: Option<String>,
    log: Option<RawLog>,
    admin: Option<RawAdmin>,
    registry: Option<RawRegistry>,
    #[serde(default)]
    listener: Vec<RawListener>,
    #[serde(default)]
    upstream: Vec<RawUpstream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
    access: Option<String>,
    access_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: String,
    token_file: Option<String>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    path: String,
    approval: Option<String>,
    audit_log: Option<String>,
    update_queue: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: String,
    listen: String,
    upstream: String,
    handshake_timeout: Option<String>,
    request_header_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_request_header_bytes: Option<usize>,
    max_request_headers: Option<usize>,
    max_uri_bytes: Option<usize>,
    max_request_body_bytes: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_source: Option<usize>,
    handshake_rate_per_source: Option<u32>,
    tls: Option<RawTls>,
    client_auth: Option<RawClientAuth>,
    allow_from: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    versions: Option<Vec<String>>,
    session_cache: Option<usize>,
    session_tickets: Option<bool>,
    #[serde(default)]
    certificate: Vec<RawCertificate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    cert: String,
    key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientAuth {
    mode: String,
    #[serde(default)]
    ca: Vec<String>,
    #[serde(default)]
    crl: Vec<String>,
    #[serde(default)]
    allow_cn: Vec<String>,
    #[serde(default)]
    allow_ou: Vec<String>,
    #[serde(default)]
    allow_dns: Vec<String>,
    #[serde(default)]
    allow_uri: Vec<String>,
    crl_stale: Option<String>,
    require_crl: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: String,
    servers: Vec<String>,
    connect_timeout: Option<String>,
    response_timeout: Option<String>,
    pool_idle_timeout: Option<String>,
    pool_max_idle: Option<usize>,
    max_connections: Option<usize>,
    queue_timeout: Option<String>,
    strategy: Option<String>,
    max_fails: Option<u32>,
    fail_timeout: Option<String>,
    health_check: Option<RawHealthCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    path: String,
    host: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    healthy_threshold: Option<u32>,
    unhealthy_threshold: Option<u32>,
}

// ---------------------------------------------------------------------------
// Validated settings
// ---------------------------------------------------------------------------

/// The validated configuration: what the gateway runs from.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The file these settings were read from (for messages).
    pub source: PathBuf,
    /// How long in-flight requests may run after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// Unix socket on which this process hands its listening sockets to a
    /// successor (`certgate run --takeover`); none when not configured.
    pub handover_socket: Option<PathBuf>,
    /// The device registry; none when not configured (then a valid
    /// certificate is enough).
    pub registry: Option<RegistrySettings>,
    /// Diagnostic log settings.
    pub log: LogSettings,
    /// The admin listener (metrics, health), if configured.
    pub admin: Option<AdminSettings>,
    /// Every `[[listener]]`, in file order.
    pub listeners: Vec<ListenerSettings>,
    /// Every `[[upstream]]`, in file order.
    pub upstreams: Vec<UpstreamSettings>,
}

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessTarget {
    /// Standard output (the default; diagnostics go to stderr).
    Stdout,
    /// Standard error, with the diagnostics.
    Stderr,
    /// Appended to a file.
    File(PathBuf),
    /// No access log.
    Off,
}

/// `[log]`: how diagnostics are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Where access-log lines go.
    pub access: AccessTarget,
    /// `logfmt` (default) or `json`.
    pub access_json: bool,
    /// Output format.
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `certgate=debug`.
    /// `RUST_LOG`, when set, wins.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable `key=value` lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[admin]`: the local admin/metrics listener.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    /// Address to bind.
    pub listen: SocketAddr,
    /// File of `name:token` lines; mutating API calls need
    /// `Authorization: Bearer <token>`. Required off loopback.
    pub token_file: Option<ConfigPath>,
    /// Extra names (lowercase, optionally `name:port`) that `/api/*`
    /// requests may carry in `Host`, beside the listener's own address and
    /// the loopback names: what admins type to reach it through a DNS name
    /// or a reverse proxy.
    pub allowed_hosts: Vec<String>,
}

/// How a first-seen device with a valid certificate is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// Refused and recorded as pending until an administrator approves it.
    Manual,
    /// Admitted and recorded as approved.
    Auto,
}

/// `[registry]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrySettings {
    /// The redb device store.
    pub path: ConfigPath,
    /// First-seen policy.
    pub approval: Approval,
    /// Append-only log of every admin change.
    pub audit_log: ConfigPath,
    /// Capacity of the queue of first/last-seen updates from handshakes;
    /// beyond it updates are dropped (and counted), never handshakes.
    pub update_queue: usize,
}

/// Static pre-approval rules of a listener: a certificate matching any of
/// them (after CA validation) counts as approved. `*` matches any run of
/// characters; matching is exact otherwise (case-insensitive for DNS).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AllowRules {
    /// Subject common names.
    pub cn: Vec<String>,
    /// Subject organizational units.
    pub ou: Vec<String>,
    /// SAN DNS names.
    pub dns: Vec<String>,
    /// SAN URIs.
    pub uri: Vec<String>,
}

impl AllowRules {
    /// True when no rule is configured.
    pub fn is_empty(&self) -> bool {
        self.cn.is_empty() && self.ou.is_empty() && self.dns.is_empty() && self.uri.is_empty()
    }
}

/// One validated `[[listener]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSettings {
    /// Unique name, used in logs, metrics and error messages.
    pub name: String,
    /// Address to bind.
    pub listen: SocketAddr,
    /// Name of the `[[upstream]]` requests are forwarded to.
    pub upstream: String,
    /// TLS policy for this listener; `None` for a plain-HTTP listener.
    pub tls: Option<TlsSettings>,
    /// Sources a plain-HTTP listener admits (others get 403).
    pub allow_from: Vec<ipnet::IpNet>,
    /// Timeouts and size limits.
    pub limits: ListenerLimits,
}

/// Per-listener timeouts and limits; every one has a safe default.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerLimits {
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed to receive a request head (HTTP/1), and to start the
    /// next request on a keep-alive connection.
    pub request_header_timeout: Duration,
    /// A connection with no request in flight and no I/O for this long is
    /// closed.
    pub idle_timeout: Duration,
    /// Largest accepted request head in bytes.
    pub max_request_header_bytes: usize,
    /// Most request headers accepted.
    pub max_request_headers: usize,
    /// Longest request target (path and query) accepted; longer ones get
    /// 414.
    pub max_uri_bytes: usize,
    /// Largest request body accepted; larger ones get 413. `0` = no limit.
    pub max_request_body_bytes: u64,
    /// Concurrent connections; further clients wait in the kernel backlog.
    pub max_connections: usize,
    /// Concurrent connections from one source address; `0` = no limit (the
    /// default: whole sites of agents often share one NAT address).
    pub max_connections_per_source: usize,
    /// New connections (each one a handshake) accepted per second from one
    /// source address, with a burst of the same size; `0` = no limit (the
    /// default, for the same NAT reason).
    pub handshake_rate_per_source: u32,
}

/// Protocol versions a TLS listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246).
    V1_2,
    /// TLS 1.3 (RFC 8446).
    V1_3,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        })
    }
}

/// `[listener.tls]` plus `[listener.client_auth]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    /// Accepted versions, sorted, never empty.
    pub versions: Vec<TlsVersion>,
    /// Server certificates; the first is the default when SNI matches none.
    pub certificates: Vec<CertificatePaths>,
    /// Size of the TLS 1.2 session-ID cache (0 turns that kind of
    /// resumption off).
    pub session_cache: usize,
    /// Whether resumption tickets are issued (TLS 1.2 RFC 5077 tickets,
    /// TLS 1.3 tickets). Every resumed connection is re-verified either way.
    pub session_tickets: bool,
    /// Client-certificate policy.
    pub client_auth: ClientAuthSettings,
}

/// A configured path: as written in the file (for messages) and resolved
/// against the config file's directory (for opening).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPath {
    /// The path exactly as written in the config.
    pub written: String,
    /// The path to open.
    pub resolved: PathBuf,
}

impl fmt::Display for ConfigPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// One `[[listener.tls.certificate]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificatePaths {
    /// Leaf certificate followed by its chain, PEM.
    pub cert: ConfigPath,
    /// Private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: ConfigPath,
}

/// How a listener treats client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMode {
    /// A valid client certificate is required; everything else is refused
    /// in the handshake.
    Required,
    /// No client certificate is requested.
    Off,
    /// A client certificate is requested but not required: every client is
    /// admitted and classified (readiness report, `X-Client-Verify`).
    Observe,
}

/// What a CRL past its `nextUpdate` does to its CA's devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlStale {
    /// Refuse them (a stale CRL may hide revocations).
    FailClosed,
    /// Admit them, checking the revocations the stale CRL lists.
    FailOpen,
}

/// `[listener.client_auth]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientAuthSettings {
    /// The policy.
    pub mode: ClientAuthMode,
    /// CA bundles client certificates must chain to (PEM).
    pub ca: Vec<ConfigPath>,
    /// Certificate revocation lists (PEM or DER).
    pub crl: Vec<ConfigPath>,
    /// What a CRL past its `nextUpdate` does.
    pub crl_stale: CrlStale,
    /// Every CA must have a CRL: a device whose issuer has none is refused
    /// (`unknown_revocation_status`), and `check` names each CA that lacks
    /// one. Off by default: a CA without a CRL is then not revocation
    /// checked, and never affects another CA's devices.
    pub require_crl: bool,
    /// Static pre-approval rules.
    pub allow: AllowRules,
}

/// One validated `[[upstream]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    /// Unique name.
    pub name: String,
    /// Backend servers, tried in order on connect failure.
    pub servers: Vec<SocketAddr>,
    /// TCP connect timeout per server.
    pub connect_timeout: Duration,
    /// Time allowed until the response head arrives.
    pub response_timeout: Duration,
    /// How long idle pooled connections are kept.
    pub pool_idle_timeout: Duration,
    /// Most idle pooled connections kept.
    pub pool_max_idle: usize,
    /// Most requests in flight to this upstream at once (each holds one
    /// backend connection); more wait in a queue. 0 = no limit.
    pub max_connections: usize,
    /// How long a request may wait in that queue before it is answered 503.
    pub queue_timeout: Duration,
    /// How a request picks its server.
    pub strategy: Strategy,
    /// Consecutive connect failures (refused, reset, timed out) that take a
    /// server out of rotation for `fail_timeout`; 0 = never. Only with
    /// more than one server: a lone server is always tried.
    pub max_fails: u32,
    /// How long an ejected server stays out of rotation.
    pub fail_timeout: Duration,
    /// Active health checks, if configured.
    pub health_check: Option<HealthCheckSettings>,
}

/// How requests are spread over the servers of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Always the first server in rotation, in the order listed; the others
    /// are standbys (what management suites do with a primary and a backup).
    Failover,
    /// Each request to the next server in rotation.
    RoundRobin,
    /// The server in rotation with the fewest requests in flight.
    LeastConn,
}

impl Strategy {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Failover => "failover",
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastConn => "least_conn",
        }
    }
}

/// `[upstream.health_check]`: an HTTP GET to every server on a timer.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckSettings {
    /// Path (with query) requested; answered 2xx or 3xx = healthy.
    pub path: String,
    /// Host header sent; the server's address when not given.
    pub host: Option<String>,
    /// Time between checks of one server.
    pub interval: Duration,
    /// Time one check may take (connect + response head).
    pub timeout: Duration,
    /// Consecutive passed checks that bring a down server back.
    pub healthy_threshold: u32,
    /// Consecutive failed checks that take a server out of rotation.
    pub unhealthy_threshold: u32,
}

impl Settings {
    /// Reads and validates the config file at `path`. Relative paths inside
    /// it are resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Settings::parse(&text, path, base)
    }

    /// Validates config text. `source` names it in messages; relative paths
    /// are resolved against `base`. Does no I/O.
    pub fn parse(text: &str, source: &Path, base: &Path) -> Result<Settings, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: source.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut errors = Vec::new();
        let settings = validate(raw, source, base, &mut errors);
        match errors.len() {
            0 => Ok(settings),
            1 => Err(errors.remove(0)),
            _ => Err(ConfigError::Many(errors)),
        }
    }

    /// The upstream a listener forwards to. Validation guarantees it exists.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamSettings> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// Every file this configuration depends on: the config file itself,
    /// then each certificate, key, CA bundle and CRL it names. Reload
    /// watches these.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out = vec![self.source.clone()];
        for tls in self.listeners.iter().filter_map(|l| l.tls.as_ref()) {
            for c in &tls.certificates {
                out.push(c.cert.resolved.clone());
                out.push(c.key.resolved.clone());
            }
            out.extend(tls.client_auth.ca.iter().map(|p| p.resolved.clone()));
            out.extend(tls.client_auth.crl.iter().map(|p| p.resolved.clone()));
        }
        if let Some(t) = self.admin.as_ref().and_then(|a| a.token_file.as_ref()) {
            out.push(t.resolved.clone());
        }
        out.dedup();
        out
    }
}

fn invalid(context: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        context: context.into(),
        message: message.into(),
    }
}

fn validate(raw: RawConfig, source: &Path, base: &Path, errors: &mut Vec<ConfigError>) -> Settings {
    let shutdown_grace = duration_or(
        raw.shutdown_grace.as_deref(),
        DEFAULT_SHUTDOWN_GRACE,
        "shutdown_grace",
        errors,
    );

    let log = match raw.log {
        None => LogSettings {
            format: LogFormat::Text,
            level: "info".into(),
            access: AccessTarget::Stdout,
            access_json: false,
        },
        Some(l) => {
            let format = match l.format.as_deref() {
                None | Some("text") | Some("logfmt") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    errors.push(invalid(
                        "log.format",
                        format!("\"{other}\" is not a log format; use \"text\" or \"json\""),
                    ));
                    LogFormat::Text
                }
            };
            let access = match l.access.as_deref() {
                None | Some("stdout") => AccessTarget::Stdout,
                Some("stderr") => AccessTarget::Stderr,
                Some("off") => AccessTarget::Off,
                Some(path) => AccessTarget::File(base.join(path)),
            };
            let access_json = match l.access_format.as_deref() {
                None | Some("logfmt") => false,
                Some("json") => true,
                Some(other) => {
                    errors.push(invalid(
                        "log.access_format",
                        format!(
                            "\"{other}\" is not an access-log format; use \"logfmt\" or \"json\""
                        ),
                    ));
                    false
                }
            };
            LogSettings {
                format,
                level: l.level.unwrap_or_else(|| "info".into()),
                access,
                access_json,
            }
        }
    };

    let admin = raw.admin.and_then(|a| match parse_addr(&a.listen) {
        Ok(listen) => {
            let token_file = a.token_file.map(|t| resolve(base, t));
            if token_file.is_none() && !listen.ip().is_loopback() {
                errors.push(invalid(
                    "admin.token_file",
                    format!(
                        "the admin listener {listen} is reachable from other hosts, so its \
                         mutating API needs a token: add token_file = \"...\" (lines of \
                         name:token), or listen on 127.0.0.1"
                    ),
                ));
            }
            let mut allowed_hosts = Vec::new();
            for (i, h) in a.allowed_hosts.iter().enumerate() {
                match normalize_allowed_host(h) {
                    Ok(h) => allowed_hosts.push(h),
                    Err(m) => errors.push(invalid(format!("admin.allowed_hosts[{i}]"), m)),
                }
            }
            Some(AdminSettings {
                listen,
                token_file,
                allowed_hosts,
            })
        }
        Err(m) => {
            errors.push(invalid("admin.listen", m));
            None
        }
    });

    let registry = raw.registry.and_then(|r| {
        let approval = match r.approval.as_deref() {
            None | Some("manual") => Approval::Manual,
            Some("auto") => Approval::Auto,
            Some(other) => {
                errors.push(invalid(
                    "registry.approval",
                    format!("\"{other}\" is not an approval mode; use \"manual\" or \"auto\""),
                ));
                return None;
            }
        };
        let update_queue = r.update_queue.unwrap_or(DEFAULT_UPDATE_QUEUE);
        if update_queue == 0 {
            errors.push(invalid("registry.update_queue", "must be at least 1"));
        }
        let path = resolve(base, r.path);
        let audit_log = match r.audit_log {
            Some(a) => resolve(base, a),
            None => ConfigPath {
                written: format!("{} (next to registry.path)", AUDIT_LOG_NAME),
                resolved: path
                    .resolved
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(AUDIT_LOG_NAME),
            },
        };
        Some(RegistrySettings {
            path,
            approval,
            audit_log,
            update_queue,
        })
    });

    let mut upstreams = Vec::new();
    let mut upstream_names = HashSet::new();
    for (i, u) in raw.upstream.into_iter().enumerate() {
        let ctx = format!("upstream[{i}] \"{}\"", u.name);
        if !valid_name(&u.name) {
            errors.push(invalid(
                format!("upstream[{i}].name"),
                format!(
                    "\"{}\" is not a valid name; use letters, digits, '.', '_' or '-'",
                    u.name
                ),
            ));
        }
        if !upstream_names.insert(u.name.clone()) {
            errors.push(invalid(
                &ctx,
                "duplicate upstream name; each [[upstream]] needs its own name",
            ));
        }
        if u.servers.is_empty() {
            errors.push(invalid(
                format!("{ctx}: servers"),
                "no servers listed; give at least one \"host:port\"",
            ));
        }
        if u.servers.len() > 64 {
            errors.push(invalid(
                format!("{ctx}: servers"),
                format!(
                    "{} servers listed; at most 64 per upstream",
                    u.servers.len()
                ),
            ));
        }
        let mut servers = Vec::new();
        for (j, s) in u.servers.iter().enumerate() {
            match parse_addr(s) {
                Ok(a) if servers.contains(&a) => errors.push(invalid(
                    format!("{ctx}: servers[{j}]"),
                    format!("{a} is listed twice; list each server once"),
                )),
                Ok(a) => servers.push(a),
                Err(m) => errors.push(invalid(format!("{ctx}: servers[{j}]"), m)),
            }
        }
        upstreams.push(UpstreamSettings {
            servers,
            connect_timeout: duration_or(
                u.connect_timeout.as_deref(),
                DEFAULT_CONNECT_TIMEOUT,
                &format!("{ctx}: connect_timeout"),
                errors,
            ),
            response_timeout: duration_or(
                u.response_timeout.as_deref(),
                DEFAULT_RESPONSE_TIMEOUT,
                &format!("{ctx}: response_timeout"),
                errors,
            ),
            pool_idle_timeout: duration_or(
                u.pool_idle_timeout.as_deref(),
                DEFAULT_POOL_IDLE_TIMEOUT,
                &format!("{ctx}: pool_idle_timeout"),
                errors,
            ),
            pool_max_idle: u.pool_max_idle.unwrap_or(DEFAULT_POOL_MAX_IDLE),
            max_connections: u
                .max_connections
                .unwrap_or(DEFAULT_UPSTREAM_MAX_CONNECTIONS),
            queue_timeout: duration_or(
                u.queue_timeout.as_deref(),
                DEFAULT_QUEUE_TIMEOUT,
                &format!("{ctx}: queue_timeout"),
                errors,
            ),
            strategy: match u.strategy.as_deref() {
                None | Some("failover") => Strategy::Failover,
                Some("round_robin") => Strategy::RoundRobin,
                Some("least_conn") => Strategy::LeastConn,
                Some(other) => {
                    errors.push(invalid(
                        format!("{ctx}: strategy"),
                        format!(
                            "\"{other}\" is not a strategy; use \"failover\", \"round_robin\" or \"least_conn\""
                        ),
                    ));
                    Strategy::Failover
                }
            },
            max_fails: u.max_fails.unwrap_or(DEFAULT_MAX_FAILS),
            fail_timeout: duration_or(
                u.fail_timeout.as_deref(),
                DEFAULT_FAIL_TIMEOUT,
                &format!("{ctx}: fail_timeout"),
                errors,
            ),
            health_check: u
                .health_check
                .map(|h| health_check(h, &format!("{ctx}: health_check"), errors)),
            name: u.name,
        });
    }

    if raw.listener.is_empty() {
        errors.push(invalid(
            source.display().to_string(),
            "no [[listener]] defined; add at least one",
        ));
    }
    let mut listeners = Vec::new();
    let mut listener_names = HashSet::new();
    let mut listen_addrs = HashSet::new();
    for (i, l) in raw.listener.into_iter().enumerate() {
        let ctx = format!("listener \"{}\"", l.name);
        if !valid_name(&l.name) {
            errors.push(invalid(
                format!("listener[{i}].name"),
                format!(
                    "\"{}\" is not a valid name; use letters, digits, '.', '_' or '-'",
                    l.name
                ),
            ));
        }
        if !listener_names.insert(l.name.clone()) {
            errors.push(invalid(
                &ctx,
                "duplicate listener name; each [[listener]] needs its own name",
            ));
        }
        let listen = match parse_addr(&l.listen) {
            Ok(a) => {
                if a.port() != 0 && !listen_addrs.insert(a) {
                    errors.push(invalid(
                        format!("{ctx}: listen"),
                        format!("{a} is already used by another listener"),
                    ));
                }
                Some(a)
            }
            Err(m) => {
                errors.push(invalid(format!("{ctx}: listen"), m));
                None
            }
        };
        if !upstream_names.contains(&l.upstream) {
            errors.push(invalid(
                format!("{ctx}: upstream"),
                format!(
                    "no [[upstream]] named \"{}\"; define it or fix the name",
                    l.upstream
                ),
            ));
        }
        let limits = listener_limits(&l, &ctx, errors);
        let mut allow_from = Vec::new();
        for (j, c) in l.allow_from.iter().flatten().enumerate() {
            match parse_cidr(c) {
                Some(n) => allow_from.push(n),
                None => errors.push(invalid(
                    format!("{ctx}: allow_from[{j}]"),
                    format!("\"{c}\" is not an address or CIDR block (e.g. \"10.20.0.0/16\")"),
                )),
            }
        }
        let tls = match l.tls {
            Some(t) => {
                if l.allow_from.is_some() {
                    errors.push(invalid(
                        format!("{ctx}: allow_from"),
                        "allow_from is for plain-HTTP listeners (no [listener.tls]); TLS \
                         listeners admit devices by certificate",
                    ));
                }
                validate_tls(t, l.client_auth, &ctx, base, errors).map(Some)
            }
            None => {
                if l.client_auth.is_some() {
                    errors.push(invalid(
                        format!("{ctx}: client_auth"),
                        "a plain-HTTP listener (no [listener.tls]) cannot check client \
                         certificates; remove [listener.client_auth] or add [listener.tls]",
                    ));
                }
                if l.allow_from.as_ref().is_none_or(|a| a.is_empty()) {
                    errors.push(invalid(
                        format!("{ctx}: allow_from"),
                        "a listener without [listener.tls] is a plain-HTTP listener for legacy \
                         devices and must list the sources it admits: allow_from = \
                         [\"10.20.0.0/16\", ...]; or add a [listener.tls] table",
                    ));
                    None
                } else {
                    Some(None)
                }
            }
        };
        if let (Some(listen), Some(tls)) = (listen, tls) {
            listeners.push(ListenerSettings {
                name: l.name,
                listen,
                upstream: l.upstream,
                tls,
                allow_from,
                limits,
            });
        }
    }

    let handover_socket = raw.handover_socket.map(|h| base.join(h));
    Settings {
        source: source.to_path_buf(),
        shutdown_grace,
        handover_socket,
        registry,
        log,
        admin,
        listeners,
        upstreams,
    }
}

fn listener_limits(l: &RawListener, ctx: &str, errors: &mut Vec<ConfigError>) -> ListenerLimits {
    let max_request_header_bytes = l
        .max_request_header_bytes
        .unwrap_or(DEFAULT_MAX_REQUEST_HEADER_BYTES);
    if max_request_header_bytes < MIN_HEADER_BYTES {
        errors.push(invalid(
            format!("{ctx}: max_request_header_bytes"),
            format!("{max_request_header_bytes} is below the minimum of {MIN_HEADER_BYTES}"),
        ));
    }
    let max_connections = l.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        errors.push(invalid(
            format!("{ctx}: max_connections"),
            "0 would refuse every client; give a positive number",
        ));
    }
    let max_request_headers = l.max_request_headers.unwrap_or(DEFAULT_MAX_REQUEST_HEADERS);
    if max_request_headers == 0 {
        errors.push(invalid(
            format!("{ctx}: max_request_headers"),
            "0 would refuse every request; give a positive number",
        ));
    }
    ListenerLimits {
        handshake_timeout: duration_or(
            l.handshake_timeout.as_deref(),
            DEFAULT_HANDSHAKE_TIMEOUT,
            &format!("{ctx}: handshake_timeout"),
            errors,
        ),
        request_header_timeout: duration_or(
            l.request_header_timeout.as_deref(),
            DEFAULT_REQUEST_HEADER_TIMEOUT,
            &format!("{ctx}: request_header_timeout"),
            errors,
        ),
        idle_timeout: duration_or(
            l.idle_timeout.as_deref(),
            DEFAULT_IDLE_TIMEOUT,
            &format!("{ctx}: idle_timeout"),
            errors,
        ),
        max_request_header_bytes: max_request_header_bytes.max(MIN_HEADER_BYTES),
        max_request_headers: max_request_headers.max(1),
        max_uri_bytes: match l.max_uri_bytes {
            Some(0) => {
                errors.push(invalid(
                    format!("{ctx}: max_uri_bytes"),
                    "0 would refuse every request; give a positive number (default 8192)",
                ));
                DEFAULT_MAX_URI_BYTES
            }
            Some(n) => n,
            None => DEFAULT_MAX_URI_BYTES,
        },
        max_request_body_bytes: l.max_request_body_bytes.unwrap_or(0),
        max_connections: max_connections.max(1),
        max_connections_per_source: l.max_connections_per_source.unwrap_or(0),
        handshake_rate_per_source: l.handshake_rate_per_source.unwrap_or(0),
    }
}

fn validate_tls(
    t: RawTls,
    client_auth: Option<RawClientAuth>,
    ctx: &str,
    base: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<TlsSettings> {
    let before = errors.len();
    let mut versions = Vec::new();
    for v in t.versions.unwrap_or_else(|| vec!["1.2".into()]) {
        match v.as_str() {
            "1.2" => versions.push(TlsVersion::V1_2),
            "1.3" => versions.push(TlsVersion::V1_3),
            "1.0" | "1.1" | "1" => errors.push(invalid(
                format!("{ctx}: tls.versions"),
                format!(
                    "TLS {v} is not allowed: it is broken and deprecated (RFC 8996); \
                     use [\"1.2\"] or [\"1.2\", \"1.3\"]"
                ),
            )),
            other => errors.push(invalid(
                format!("{ctx}: tls.versions"),
                format!("\"{other}\" is not a TLS version; use \"1.2\" and/or \"1.3\""),
            )),
        }
    }
    versions.sort();
    versions.dedup();
    if versions.is_empty() && errors.len() == before {
        errors.push(invalid(
            format!("{ctx}: tls.versions"),
            "empty; use [\"1.2\"] or [\"1.2\", \"1.3\"]",
        ));
    }
    if t.certificate.is_empty() {
        errors.push(invalid(
            format!("{ctx}: tls.certificate"),
            "no [[listener.tls.certificate]] given; add one with cert and key",
        ));
    }
    let certificates = t
        .certificate
        .into_iter()
        .map(|c| CertificatePaths {
            cert: resolve(base, c.cert),
            key: resolve(base, c.key),
        })
        .collect();

    let client_auth = match client_auth {
        None => {
            errors.push(invalid(
                format!("{ctx}: client_auth"),
                "missing [listener.client_auth]; add mode = \"required\" with ca = [...] to \
                 admit only devices with valid certificates, or mode = \"off\" to accept \
                 any client",
            ));
            None
        }
        Some(ca) => {
            let mode = match ca.mode.as_str() {
                "required" => Some(ClientAuthMode::Required),
                "off" => Some(ClientAuthMode::Off),
                "observe" => Some(ClientAuthMode::Observe),
                other => {
                    errors.push(invalid(
                        format!("{ctx}: client_auth.mode"),
                        format!(
                            "\"{other}\" is not a mode; use \"required\", \"observe\" or \"off\""
                        ),
                    ));
                    None
                }
            };
            if matches!(
                mode,
                Some(ClientAuthMode::Required | ClientAuthMode::Observe)
            ) && ca.ca.is_empty()
            {
                errors.push(invalid(
                    format!("{ctx}: client_auth.ca"),
                    format!(
                        "mode = \"{}\" needs at least one CA bundle in ca = [...]",
                        ca.mode
                    ),
                ));
            }
            if mode == Some(ClientAuthMode::Off) && (!ca.ca.is_empty() || !ca.crl.is_empty()) {
                errors.push(invalid(
                    format!("{ctx}: client_auth"),
                    "mode = \"off\" ignores ca and crl; remove them or set mode = \"required\"",
                ));
            }
            let crl_stale = match ca.crl_stale.as_deref() {
                None | Some("fail_closed") => CrlStale::FailClosed,
                Some("fail_open") => CrlStale::FailOpen,
                Some(other) => {
                    errors.push(invalid(
                        format!("{ctx}: client_auth.crl_stale"),
                        format!("\"{other}\": use \"fail_closed\" or \"fail_open\""),
                    ));
                    CrlStale::FailClosed
                }
            };
            let allow = AllowRules {
                cn: ca.allow_cn,
                ou: ca.allow_ou,
                dns: ca.allow_dns,
                uri: ca.allow_uri,
            };
            if mode == Some(ClientAuthMode::Off) && !allow.is_empty() {
                errors.push(invalid(
                    format!("{ctx}: client_auth"),
                    "allow_* rules need client certificates; set mode = \"required\"",
                ));
            }
            mode.map(|mode| ClientAuthSettings {
                mode,
                ca: ca.ca.into_iter().map(|p| resolve(base, p)).collect(),
                crl: ca.crl.into_iter().map(|p| resolve(base, p)).collect(),
                crl_stale,
                require_crl: ca.require_crl.unwrap_or(false),
                allow,
            })
        }
    };

    if errors.len() != before {
        return None;
    }
    Some(TlsSettings {
        versions,
        certificates,
        session_cache: t.session_cache.unwrap_or(DEFAULT_SESSION_CACHE),
        session_tickets: t.session_tickets.unwrap_or(true),
        client_auth: client_auth?,
    })
}

/// An `[admin] allowed_hosts` entry as it is compared with a `Host`
/// header: lowercase, without a trailing dot; `name` or `name:port`.
fn normalize_allowed_host(h: &str) -> Result<String, String> {
    let t = h.trim().to_ascii_lowercase();
    let bad = t.is_empty()
        || t.contains("://")
        || t.contains('/')
        || t.contains('@')
        || t.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad {
        return Err(format!(
            "\"{h}\" is not a host name; give the name admins use in the URL, e.g. \"gw1.example.net\" or \"gw1.example.net:9900\" (no scheme, no path)"
        ));
    }
    Ok(match t.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') || name.ends_with(']') => {
            format!("{}:{port}", name.trim_end_matches('.'))
        }
        _ => t.trim_end_matches('.').to_string(),
    })
}

/// An address or CIDR block; a bare address is a /32 (/128).
fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
}

fn resolve(base: &Path, written: String) -> ConfigPath {
    let p = Path::new(&written);
    let resolved = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    ConfigPath { written, resolved }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn health_check(
    h: RawHealthCheck,
    ctx: &str,
    errors: &mut Vec<ConfigError>,
) -> HealthCheckSettings {
    if !h.path.starts_with('/') || h.path.parse::<http::uri::PathAndQuery>().is_err() {
        errors.push(invalid(
            format!("{ctx}.path"),
            format!(
                "\"{}\" is not a request path; write e.g. \"/healthz\"",
                h.path
            ),
        ));
    }
    if let Some(host) = &h.host
        && http::HeaderValue::from_str(host).is_err()
    {
        errors.push(invalid(
            format!("{ctx}.host"),
            "not a valid Host header value",
        ));
    }
    let interval = duration_or(
        h.interval.as_deref(),
        DEFAULT_HEALTH_INTERVAL,
        &format!("{ctx}.interval"),
        errors,
    );
    let timeout = duration_or(
        h.timeout.as_deref(),
        DEFAULT_HEALTH_TIMEOUT,
        &format!("{ctx}.timeout"),
        errors,
    );
    if interval.is_zero() {
        errors.push(invalid(
            format!("{ctx}.interval"),
            "must be more than 0; e.g. \"5s\"",
        ));
    }
    if timeout.is_zero() || timeout > interval {
        errors.push(invalid(
            format!("{ctx}.timeout"),
            "must be more than 0 and at most the interval",
        ));
    }
    let mut threshold = |v: Option<u32>, default: u32, key: &str| match v {
        None => default,
        Some(0) => {
            errors.push(invalid(format!("{ctx}.{key}"), "must be at least 1"));
            default
        }
        Some(n) => n,
    };
    HealthCheckSettings {
        healthy_threshold: threshold(h.healthy_threshold, 2, "healthy_threshold"),
        unhealthy_threshold: threshold(h.unhealthy_threshold, 3, "unhealthy_threshold"),
        path: h.path,
        host: h.host,
        interval,
        timeout,
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>().map_err(|_| {
        format!(
            "\"{s}\" is not an IP address and port; write e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""
        )
    })
}

fn duration_or(
    value: Option<&str>,
    default: Duration,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    match value {
        None => default,
        Some(v) => match parse_duration(v) {
            Ok(d) => d,
            Err(m) => {
                errors.push(invalid(key, m));
                default
            }
        },
    }
}

/// Parses durations such as `"250ms"`, `"10s"`, `"5m"` or `"1h"`.
///
/// Written here rather than pulled from a crate: the grammar we accept is
/// one number and one unit, and a precise message matters more than range.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("\"{s}\" has no unit; write e.g. \"10s\", \"500ms\" or \"2m\""))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("\"{s}\" is not a duration; write e.g. \"10s\", \"500ms\" or \"2m\"")
    })?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => {
            return Err(format!(
                "\"{s}\": unknown unit \"{unit}\"; use ms, s, m or h"
            ));
        }
    };
    if d.is_zero() {
        return Err(format!("\"{s}\" is zero; give a positive duration"));
    }
    Ok(d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[listener]]
        name = "agents"
        listen = "127.0.0.1:8443"
        upstream = "core"
        [listener.tls]
        [[listener.tls.certificate]]
        cert = "certs/server.pem"
        key = "certs/server.key"
        [listener.client_auth]
        mode = "required"
        ca = ["certs/client-ca.pem"]

        [[upstream]]
        name = "core"
        servers = ["127.0.0.1:8080"]
    "#;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::parse(text, Path::new("test.toml"), Path::new("/etc/certgate"))
    }

    #[test]
    fn minimal_config_gets_safe_defaults() -> Result<(), ConfigError> {
        let s = parse(MINIMAL)?;
        let l = &s.listeners[0];
        assert_eq!(l.tls.as_ref().unwrap().versions, vec![TlsVersion::V1_2]);
        assert_eq!(l.limits.handshake_timeout, Duration::from_secs(10));
        assert_eq!(l.limits.max_request_header_bytes, 64 * 1024);
        assert_eq!(
            l.tls.as_ref().unwrap().client_auth.mode,
            ClientAuthMode::Required
        );
        assert_eq!(
            l.tls.as_ref().unwrap().certificates[0].key.resolved,
            PathBuf::from("/etc/certgate/certs/server.key")
        );
        assert_eq!(s.shutdown_grace, Duration::from_secs(30));
        Ok(())
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key() {
        let text = MINIMAL.replace("upstream = \"core\"", "upstream = \"core\"\nbogus = 1");
        let err = parse(&text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn old_tls_versions_are_refused() {
        let text = MINIMAL.replace(
            "[listener.tls]",
            "[listener.tls]\nversions = [\"1.1\", \"1.2\"]",
        );
        let err = parse(&text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("TLS 1.1 is not allowed"), "{err}");
    }

    #[test]
    fn missing_upstream_is_named() {
        let text = MINIMAL.replace("upstream = \"core\"", "upstream = \"nope\"");
        let err = parse(&text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no [[upstream]] named \"nope\""), "{err}");
    }

    #[test]
    fn upstream_strategy_and_health_check_are_validated_with_their_keys() {
        let ok = MINIMAL.replace(
            "servers = [\"127.0.0.1:8080\"]",
            "servers = [\"127.0.0.1:8080\", \"127.0.0.1:8081\"]\nstrategy = \"least_conn\"\n\
             [upstream.health_check]\npath = \"/healthz\"",
        );
        let s = parse(&ok).unwrap();
        let u = &s.upstreams[0];
        assert_eq!(u.strategy, Strategy::LeastConn);
        assert_eq!(u.max_fails, 1);
        let h = u.health_check.as_ref().unwrap();
        assert_eq!(
            (h.interval, h.timeout),
            (Duration::from_secs(5), Duration::from_secs(2))
        );
        assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (2, 3));

        let bad = MINIMAL.replace(
            "servers = [\"127.0.0.1:8080\"]",
            "servers = [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]\nstrategy = \"random\"\n\
             [upstream.health_check]\npath = \"healthz\"\ninterval = \"1s\"\ntimeout = \"2s\"\n\
             healthy_threshold = 0",
        );
        let err = parse(&bad).err().map(|e| e.to_string()).unwrap_or_default();
        for want in [
            "servers[1]: 127.0.0.1:8080 is listed twice",
            "strategy: \"random\" is not a strategy",
            "health_check.path",
            "health_check.timeout",
            "health_check.healthy_threshold",
        ] {
            assert!(err.contains(want), "{want} missing from: {err}");
        }
    }

    #[test]
    fn annotated_example_config_is_valid() -> Result<(), ConfigError> {
        let text = include_str!("../config/certgate.toml");
        let s = Settings::parse(text, Path::new("config/certgate.toml"), Path::new("config"))?;
        assert_eq!(s.listeners.len(), 1);
        assert_eq!(
            s.listeners[0].tls.as_ref().unwrap().client_auth.crl.len(),
            1
        );
        assert!(s.admin.is_some());
        Ok(())
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
