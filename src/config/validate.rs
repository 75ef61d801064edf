//! `RawConfig → Settings`: the top-level sections (log, admin, registry,
//! upstreams, listeners), every problem collected, none fatal alone.

use std::collections::HashSet;
use std::path::Path;

use crate::Settings;
use crate::error::ConfigError;

use super::listener::{Seen, validate_listener};
use super::raw::{RawAdmin, RawConfig, RawLog, RawRegistry};
use super::upstream::validate_upstream;
use super::values::{
    duration_or, invalid, normalize_allowed_host, parse_addr, resolve, valid_name,
};
use super::{
    AUDIT_LOG_NAME, AccessTarget, AdminClientAuth, AdminSettings, AdminTlsSettings, Approval,
    ConfigPath, DEFAULT_RESYNC_EVERY, DEFAULT_SHUTDOWN_GRACE, DEFAULT_UPDATE_QUEUE,
    ListenerSettings, LogFormat, LogSettings, PostgresSettings, RegistryBackend, RegistrySettings,
    RenewalIdentity, UpstreamSettings, defaults::CRL_CACHE_NAME,
};

/// Validates every section of `raw`, one function per section; every
/// problem is pushed to `errors` and validation goes on, so the admin sees
/// them all at once. Paths resolve against `base` (the config's folder).
pub(super) fn validate(
    raw: RawConfig,
    source: &Path,
    base: &Path,
    errors: &mut Vec<ConfigError>,
) -> Settings {
    let shutdown_grace = duration_or(
        raw.shutdown_grace.as_deref(),
        DEFAULT_SHUTDOWN_GRACE,
        "shutdown_grace",
        errors,
    );

    let log = log_section(raw.log, base, errors);
    let admin = raw.admin.and_then(|a| admin_section(a, base, errors));
    let registry = raw.registry.and_then(|r| registry_section(r, base, errors));

    let mut upstream_names = HashSet::new();
    let upstreams: Vec<UpstreamSettings> = raw
        .upstream
        .into_iter()
        .enumerate()
        .map(|(i, u)| validate_upstream(i, u, &mut upstream_names, errors))
        .collect();

    if raw.listener.is_empty() {
        errors.push(invalid(
            source.display().to_string(),
            "no [[listener]] defined; add at least one",
        ));
    }
    let mut seen = Seen::default();
    let listeners = raw
        .listener
        .into_iter()
        .enumerate()
        .filter_map(|(i, l)| validate_listener(i, l, &mut seen, &upstream_names, base, errors))
        .collect();

    let mut listeners: Vec<ListenerSettings> = listeners;
    default_crl_cache_dirs(&mut listeners, registry.as_ref(), errors);
    let mut registry = registry;
    if let Some(r) = &mut registry {
        let mut ids: Vec<RenewalIdentity> = listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .filter_map(|t| t.client_auth.renewal.identity.clone())
            .collect();
        ids.sort();
        ids.dedup();
        r.renewal_identities = ids;
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

/// A listener that fetches CRLs keeps the last good one of each source on
/// disk; without `crl_cache_dir` that is `crl-cache` next to the registry.
fn default_crl_cache_dirs(
    listeners: &mut [ListenerSettings],
    registry: Option<&RegistrySettings>,
    errors: &mut Vec<ConfigError>,
) {
    for l in listeners {
        let Some(ca) = l.tls.as_mut().map(|t| &mut t.client_auth) else {
            continue;
        };
        if !ca.fetches_crls() || ca.crl_cache_dir.is_some() {
            continue;
        }
        match registry {
            Some(r) => {
                ca.crl_cache_dir = Some(ConfigPath {
                    written: format!("{CRL_CACHE_NAME} (next to registry.path)"),
                    resolved: r
                        .path
                        .resolved
                        .parent()
                        .unwrap_or(Path::new("."))
                        .join(CRL_CACHE_NAME),
                });
            }
            None => errors.push(invalid(
                format!("listener \"{}\": client_auth.crl_cache_dir", l.name),
                "this listener fetches CRLs, and keeps the last good one on disk so that a \
                 restart while the CA is unreachable still enforces it; there is no [registry] \
                 to keep them next to, so set crl_cache_dir = \"/var/lib/certgate/crl-cache\" \
                 (a folder certgate may write)",
            )),
        }
    }
}

/// `[log]`: formats and targets, "info" to stdout when absent.
fn log_section(raw: Option<RawLog>, base: &Path, errors: &mut Vec<ConfigError>) -> LogSettings {
    match raw {
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
    }
}

/// `[admin]`: the listen address, the token file (required off loopback)
/// and the extra names the Host check accepts.
fn admin_section(a: RawAdmin, base: &Path, errors: &mut Vec<ConfigError>) -> Option<AdminSettings> {
    match parse_addr(&a.listen) {
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
            let tls = a.tls.map(|t| AdminTlsSettings {
                cert: resolve(base, t.cert),
                key: resolve(base, t.key),
            });
            let client_auth = a.client_auth.map(|c| AdminClientAuth {
                ca: c.ca.into_iter().map(|p| resolve(base, p)).collect(),
                crl: c.crl.into_iter().map(|p| resolve(base, p)).collect(),
            });
            if let Some(c) = &client_auth {
                if tls.is_none() {
                    errors.push(invalid(
                        "admin.client_auth",
                        "a client certificate is asked for in a TLS handshake: add [admin.tls] \
                         (cert, key), or remove [admin.client_auth]",
                    ));
                }
                if c.ca.is_empty() {
                    errors.push(invalid(
                        "admin.client_auth.ca",
                        "name the PEM file(s) of the CA that issues the admins' certificates \
                         (ca = [\"admin-ca.pem\"])",
                    ));
                }
            }
            Some(AdminSettings {
                listen,
                token_file,
                allowed_hosts,
                tls,
                client_auth,
            })
        }
        Err(m) => {
            errors.push(invalid("admin.listen", m));
            None
        }
    }
}

/// `[registry] backend` and the keys that belong to it. PostgreSQL keys
/// without `backend = "postgres"` are an error rather than ignored: an
/// admin who wrote a `url` expects the gateways to share it.
fn backend_section(r: &RawRegistry, base: &Path, errors: &mut Vec<ConfigError>) -> RegistryBackend {
    let postgres_keys = [
        ("url", r.url.is_some()),
        ("url_file", r.url_file.is_some()),
        ("database_ca", r.database_ca.is_some()),
        ("instance", r.instance.is_some()),
        ("resync_every", r.resync_every.is_some()),
    ];
    match r.backend.as_deref() {
        None | Some("redb") => {
            for (key, _) in postgres_keys.iter().filter(|(_, set)| *set) {
                errors.push(invalid(
                    format!("registry.{key}"),
                    "belongs to the PostgreSQL backend; add backend = \"postgres\" to [registry], or remove it",
                ));
            }
            RegistryBackend::Redb
        }
        Some("postgres") => match postgres_section(r, base, errors) {
            Some(p) => RegistryBackend::Postgres(p),
            None => RegistryBackend::Redb,
        },
        Some(other) => {
            errors.push(invalid(
                "registry.backend",
                format!("\"{other}\" is not a registry backend; use \"redb\" (one gateway, the default) or \"postgres\" (several gateways sharing one registry)"),
            ));
            RegistryBackend::Redb
        }
    }
}

/// The PostgreSQL settings: exactly one of `url` and `url_file` (a file,
/// so the password need not be in the config), checked as a connection
/// string here so `check` reports a typo, never echoing a password.
fn postgres_section(
    r: &RawRegistry,
    base: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<PostgresSettings> {
    let (url, url_source) = match (&r.url, &r.url_file) {
        (Some(_), Some(_)) => {
            errors.push(invalid(
                "registry.url",
                "give either url or url_file, not both",
            ));
            return None;
        }
        (None, None) => {
            errors.push(invalid(
                "registry.url",
                "backend = \"postgres\" needs url = \"postgres://USER@HOST/DB\" or url_file = \"FILE\" (a file holding it, so the password is not in the config)",
            ));
            return None;
        }
        (Some(u), None) => (u.trim().to_string(), "registry.url".to_string()),
        (None, Some(f)) => {
            let p = resolve(base, f.clone());
            match std::fs::read_to_string(&p.resolved) {
                Ok(s) => (
                    s.trim().to_string(),
                    format!("registry.url_file {}", p.resolved.display()),
                ),
                Err(e) => {
                    errors.push(ConfigError::File {
                        context: format!("registry.url_file {}", p.resolved.display()),
                        message: format!("cannot be read ({e}); put the connection string in it, e.g. postgres://certgate:PASSWORD@db1,db2/certgate?target_session_attrs=read-write"),
                    });
                    return None;
                }
            }
        }
    };
    let parsed: Result<postgres::Config, _> = url.parse();
    let parsed = match parsed {
        Ok(c) => c,
        Err(e) => {
            // The parser's message never contains the password; the string
            // itself is not repeated.
            errors.push(invalid(
                url_source.clone(),
                format!("is not a PostgreSQL connection string ({e}); write e.g. postgres://certgate@db.example/certgate"),
            ));
            return None;
        }
    };
    if parsed.get_hosts().is_empty() {
        errors.push(invalid(
            url_source.clone(),
            "names no database host; write e.g. postgres://certgate@db.example/certgate",
        ));
    }
    let database_ca = r.database_ca.clone().map(|c| resolve(base, c));
    if parsed.get_ssl_mode() == postgres::config::SslMode::Require && database_ca.is_none() {
        errors.push(invalid(
            "registry.database_ca",
            format!("{url_source} asks for sslmode=require: give database_ca = \"FILE\", the CA (PEM) that signed the database server's certificate, so certgate can verify it"),
        ));
    }
    let instance = match &r.instance {
        Some(i) if valid_name(i) => i.clone(),
        Some(i) => {
            errors.push(invalid(
                "registry.instance",
                format!("\"{i}\" is not a name: use letters, digits, '.', '_' or '-' (at most 64)"),
            ));
            return None;
        }
        None => default_instance(),
    };
    let resync_every = duration_or(
        r.resync_every.as_deref(),
        DEFAULT_RESYNC_EVERY,
        "registry.resync_every",
        errors,
    );
    if resync_every < std::time::Duration::from_secs(1) {
        errors.push(invalid("registry.resync_every", "must be at least \"1s\""));
    }
    Some(PostgresSettings {
        url,
        url_source,
        database_ca,
        instance,
        resync_every,
    })
}

/// The host name, cut to a valid name: what tells instances apart when
/// the config does not name them.
fn default_instance() -> String {
    let uname = rustix::system::uname();
    let host: String = uname
        .nodename()
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if host.is_empty() {
        "certgate".into()
    } else {
        host
    }
}

/// `[registry]`: the store, the approval mode and the audit log (beside
/// the store unless given).
fn registry_section(
    r: RawRegistry,
    base: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<RegistrySettings> {
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
    let backend = backend_section(&r, base, errors);
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
        backend,
        approval,
        audit_log,
        update_queue,
        renewal_identities: Vec::new(),
    })
}
