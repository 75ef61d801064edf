//! The validated settings the rest of the crate sees: defaults filled in,
//! paths resolved, cross-references checked.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// `[admin.tls]`: serve the admin listener (API and console) over
    /// HTTPS with this certificate; reloaded like the listeners'.
    pub tls: Option<AdminTlsSettings>,
    /// `[admin.client_auth]`: require a client certificate from these CAs
    /// in the admin listener's TLS handshake (needs `tls`).
    pub client_auth: Option<AdminClientAuth>,
}

/// `[admin.tls]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminTlsSettings {
    /// PEM chain, leaf first.
    pub cert: ConfigPath,
    /// Its PEM private key.
    pub key: ConfigPath,
}

/// `[admin.client_auth]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminClientAuth {
    /// PEM files of the CAs whose certificates admins present.
    pub ca: Vec<ConfigPath>,
    /// DER or PEM CRLs of those CAs (optional).
    pub crl: Vec<ConfigPath>,
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
    /// The redb device store; with the PostgreSQL backend, the local copy
    /// an instance serves from when it starts while the database is down.
    pub path: ConfigPath,
    /// Where the devices are kept.
    pub backend: RegistryBackend,
    /// First-seen policy.
    pub approval: Approval,
    /// Append-only log of every admin change.
    pub audit_log: ConfigPath,
    /// Capacity of the queue of first/last-seen updates from handshakes;
    /// beyond it updates are dropped (and counted), never handshakes.
    pub update_queue: usize,
    /// What the listeners' renewal rules match devices on: the registry
    /// keeps an index for each (from the listeners, not a key of its own).
    pub renewal_identities: Vec<RenewalIdentity>,
}

/// `[registry] backend`: one gateway's embedded file, or a database that
/// several gateways share.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum RegistryBackend {
    /// The embedded redb file at `registry.path` (the default).
    #[default]
    Redb,
    /// PostgreSQL, shared by every instance that names it.
    Postgres(PostgresSettings),
}

/// `[registry] backend = "postgres"`, validated.
#[derive(Clone, PartialEq)]
pub struct PostgresSettings {
    /// The connection string (URL or `key=value` form). It may hold a
    /// password: never logged, and `Debug` leaves it out.
    pub url: String,
    /// Where the connection string came from, for messages:
    /// `registry.url` or the `url_file` path.
    pub url_source: String,
    /// The CA that signed the database server's certificate: TLS to the
    /// database is verified against it (required when the connection
    /// string asks for `sslmode=require`).
    pub database_ca: Option<ConfigPath>,
    /// This gateway's name in the shared tables (readiness rows, logs).
    pub instance: String,
    /// How often the whole registry is read again (counters that other
    /// instances wrote; changes are followed as they happen).
    pub resync_every: std::time::Duration,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url_source", &self.url_source)
            .field("database_ca", &self.database_ca)
            .field("instance", &self.instance)
            .field("resync_every", &self.resync_every)
            .finish_non_exhaustive()
    }
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
    /// `proxy_protocol` and `proxy_from`: behind an L4 balancer, the
    /// client address comes from a PROXY header sent by these addresses.
    pub proxy: Option<ProxySettings>,
}

/// The PROXY protocol a listener expects from its balancers.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    /// Which header.
    pub version: ProxyVersion,
    /// The balancers' addresses: only they may connect, and each of their
    /// connections must start with a valid header.
    pub from: Vec<ipnet::IpNet>,
}

/// PROXY protocol version (HAProxy's `send-proxy` / `send-proxy-v2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
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

/// Whether device certificates are checked by OCSP, and what a missing
/// answer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OcspMode {
    /// No OCSP (CRLs and the registry only).
    #[default]
    Off,
    /// Ask; without an answer, admit on CRLs and the registry alone (logged).
    Prefer,
    /// Ask; without a good answer, refuse (`ocsp_unavailable`).
    Require,
}

/// What a CRL past its `nextUpdate` does to its CA's devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlStale {
    /// Refuse them (a stale CRL may hide revocations).
    FailClosed,
    /// Admit them, checking the revocations the stale CRL lists.
    FailOpen,
}

impl ClientAuthSettings {
    /// Whether this listener fetches CRLs over the network.
    pub fn fetches_crls(&self) -> bool {
        !self.crl_urls.is_empty() || self.crl_from_certificates
    }
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
    /// CRLs fetched over HTTP(S) and kept current (`crl_urls`).
    pub crl_urls: Vec<String>,
    /// Also fetch the CRL distribution points named in the client CA
    /// certificates and, as devices are first seen, in their certificates.
    pub crl_from_certificates: bool,
    /// Fetch each CRL at least this often (and before its nextUpdate).
    pub crl_refresh: std::time::Duration,
    /// Where the last good fetched CRL of each source is kept, so a restart
    /// while the CA is unreachable still enforces it. Set whenever a
    /// listener fetches CRLs (defaults to `crl-cache` next to
    /// `registry.path`).
    pub crl_cache_dir: Option<ConfigPath>,
    /// OCSP for device certificates.
    pub ocsp: OcspMode,
    /// The responder to ask instead of the one a certificate names (AIA).
    pub ocsp_url: Option<String>,
    /// How long the first connection of a device not seen before may wait
    /// for its OCSP answer.
    pub ocsp_timeout: std::time::Duration,
    /// Static pre-approval rules.
    pub allow: AllowRules,
    /// How a renewed device certificate keeps its device's status.
    pub renewal: RenewalSettings,
}

/// The renewal rule of a listener (`renewal`, `renewal_identity`,
/// `renewal_grace`, `supersede_grace`): when a CA-valid certificate not
/// seen before belongs to a device the registry knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalSettings {
    /// What a renewal must share with the device's current certificate;
    /// `None` is `renewal = "off"`.
    pub identity: Option<RenewalIdentity>,
    /// How long after the current certificate expired a renewal is still
    /// inherited.
    pub grace: Duration,
    /// How long an old certificate is still admitted once its renewal has
    /// been used.
    pub supersede_grace: Duration,
}

impl Default for RenewalSettings {
    fn default() -> Self {
        RenewalSettings {
            identity: Some(RenewalIdentity::Subject),
            grace: super::defaults::DEFAULT_RENEWAL_GRACE,
            supersede_grace: super::defaults::DEFAULT_SUPERSEDE_GRACE,
        }
    }
}

/// What identifies a device across its certificates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RenewalIdentity {
    /// The whole subject DN (`renewal = "same_subject"`, the default).
    Subject,
    /// The subject's common name(s) (`renewal_identity = "cn"`).
    Cn,
    /// The set of DNS SANs (`"san_dns"`).
    SanDns,
    /// The set of URI SANs (`"san_uri"`).
    SanUri,
    /// The value(s) of one subject attribute, by dotted OID.
    Oid(String),
    /// The public key (`renewal = "same_key"`).
    Key,
}

impl RenewalIdentity {
    /// The name the config and the log use.
    pub fn name(&self) -> String {
        match self {
            RenewalIdentity::Subject => "subject".into(),
            RenewalIdentity::Cn => "cn".into(),
            RenewalIdentity::SanDns => "san_dns".into(),
            RenewalIdentity::SanUri => "san_uri".into(),
            RenewalIdentity::Oid(o) => o.clone(),
            RenewalIdentity::Key => "key".into(),
        }
    }
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
        if let Some(a) = &self.admin {
            out.extend(a.token_file.iter().map(|t| t.resolved.clone()));
            if let Some(t) = &a.tls {
                out.push(t.cert.resolved.clone());
                out.push(t.key.resolved.clone());
            }
            if let Some(c) = &a.client_auth {
                out.extend(c.ca.iter().chain(&c.crl).map(|p| p.resolved.clone()));
            }
        }
        out.dedup();
        out
    }
}
