//! The TOML as written: serde types that mirror the file one to one,
//! unknown keys refused. Nothing outside `config` sees them.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) shutdown_grace: Option<String>,
    pub(super) handover_socket: Option<String>,
    pub(super) log: Option<RawLog>,
    pub(super) admin: Option<RawAdmin>,
    pub(super) registry: Option<RawRegistry>,
    #[serde(default)]
    pub(super) listener: Vec<RawListener>,
    #[serde(default)]
    pub(super) upstream: Vec<RawUpstream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<String>,
    pub(super) level: Option<String>,
    pub(super) access: Option<String>,
    pub(super) access_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: String,
    pub(super) token_file: Option<String>,
    #[serde(default)]
    pub(super) allowed_hosts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    pub(super) path: String,
    pub(super) approval: Option<String>,
    pub(super) audit_log: Option<String>,
    pub(super) update_queue: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) name: String,
    pub(super) listen: String,
    pub(super) upstream: String,
    pub(super) handshake_timeout: Option<String>,
    pub(super) request_header_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) max_request_header_bytes: Option<usize>,
    pub(super) max_request_headers: Option<usize>,
    pub(super) max_uri_bytes: Option<usize>,
    pub(super) max_request_body_bytes: Option<u64>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_source: Option<usize>,
    pub(super) handshake_rate_per_source: Option<u32>,
    pub(super) tls: Option<RawTls>,
    pub(super) client_auth: Option<RawClientAuth>,
    pub(super) allow_from: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) versions: Option<Vec<String>>,
    pub(super) session_cache: Option<usize>,
    pub(super) session_tickets: Option<bool>,
    #[serde(default)]
    pub(super) certificate: Vec<RawCertificate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub(super) cert: String,
    pub(super) key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientAuth {
    pub(super) mode: String,
    #[serde(default)]
    pub(super) ca: Vec<String>,
    #[serde(default)]
    pub(super) crl: Vec<String>,
    #[serde(default)]
    pub(super) allow_cn: Vec<String>,
    #[serde(default)]
    pub(super) allow_ou: Vec<String>,
    #[serde(default)]
    pub(super) allow_dns: Vec<String>,
    #[serde(default)]
    pub(super) allow_uri: Vec<String>,
    pub(super) crl_stale: Option<String>,
    pub(super) require_crl: Option<bool>,
    #[serde(default)]
    pub(super) crl_urls: Vec<String>,
    pub(super) crl_from_certificates: Option<bool>,
    pub(super) crl_refresh: Option<String>,
    pub(super) crl_cache_dir: Option<String>,
    pub(super) ocsp: Option<String>,
    pub(super) ocsp_url: Option<String>,
    pub(super) ocsp_timeout: Option<String>,
    pub(super) renewal: Option<String>,
    pub(super) renewal_identity: Option<String>,
    pub(super) renewal_grace: Option<String>,
    pub(super) supersede_grace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) name: String,
    pub(super) servers: Vec<String>,
    pub(super) connect_timeout: Option<String>,
    pub(super) response_timeout: Option<String>,
    pub(super) pool_idle_timeout: Option<String>,
    pub(super) pool_max_idle: Option<usize>,
    pub(super) max_connections: Option<usize>,
    pub(super) queue_timeout: Option<String>,
    pub(super) strategy: Option<String>,
    pub(super) max_fails: Option<u32>,
    pub(super) fail_timeout: Option<String>,
    pub(super) health_check: Option<RawHealthCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    pub(super) path: String,
    pub(super) host: Option<String>,
    pub(super) interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) healthy_threshold: Option<u32>,
    pub(super) unhealthy_threshold: Option<u32>,
}

// ---------------------------------------------------------------------------
// Validated settings
// ---------------------------------------------------------------------------
