//! Wall-clock time as the gateway records it: Unix seconds for first/last
//! seen, reload times, certificate and CRL deadlines. A leaf module.

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
