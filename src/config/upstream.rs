//! One `[[upstream]]`: its name, servers, timeouts, pool, strategy,
//! passive failure counting and active health check.

use std::collections::HashSet;

use crate::error::ConfigError;

use super::raw::{RawHealthCheck, RawUpstream};
use super::values::{duration_or, invalid, parse_addr, valid_name};
use super::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_FAIL_TIMEOUT, DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_TIMEOUT,
    DEFAULT_MAX_FAILS, DEFAULT_POOL_IDLE_TIMEOUT, DEFAULT_POOL_MAX_IDLE, DEFAULT_QUEUE_TIMEOUT,
    DEFAULT_RESPONSE_TIMEOUT, DEFAULT_UPSTREAM_MAX_CONNECTIONS, HealthCheckSettings, Strategy,
    UpstreamSettings,
};

pub(super) fn health_check(
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

/// One `[[upstream]]`, the `i`-th; `names` collects the names seen so far
/// (a duplicate is an error).
pub(super) fn validate_upstream(
    i: usize,
    u: RawUpstream,
    names: &mut HashSet<String>,
    errors: &mut Vec<ConfigError>,
) -> UpstreamSettings {
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
    if !names.insert(u.name.clone()) {
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
    UpstreamSettings {
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
    }
}
