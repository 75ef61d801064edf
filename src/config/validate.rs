//! `RawConfig → Settings`: the top-level sections (log, admin, registry,
//! upstreams, listeners), every problem collected, none fatal alone.

use std::collections::HashSet;
use std::path::Path;

use crate::Settings;
use crate::error::ConfigError;

use super::listener::{listener_limits, parse_cidr, validate_tls};
use super::raw::RawConfig;
use super::upstream::health_check;
use super::values::{
    duration_or, invalid, normalize_allowed_host, parse_addr, resolve, valid_name,
};
use super::{
    AUDIT_LOG_NAME, AccessTarget, AdminSettings, Approval, ConfigPath, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FAIL_TIMEOUT, DEFAULT_MAX_FAILS, DEFAULT_POOL_IDLE_TIMEOUT, DEFAULT_POOL_MAX_IDLE,
    DEFAULT_QUEUE_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, DEFAULT_SHUTDOWN_GRACE, DEFAULT_UPDATE_QUEUE,
    DEFAULT_UPSTREAM_MAX_CONNECTIONS, ListenerSettings, LogFormat, LogSettings, RegistrySettings,
    Strategy, UpstreamSettings,
};

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
