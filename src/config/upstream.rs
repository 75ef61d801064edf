//! An upstream's active health check.

use crate::error::ConfigError;

use super::raw::RawHealthCheck;
use super::values::{duration_or, invalid};
use super::{DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_TIMEOUT, HealthCheckSettings};

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
