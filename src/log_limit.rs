//! At most one log line a second for refusals an attacker can repeat
//! (connection limits, slow request heads, cross-site admin requests).
//! A leaf module.

/// At most one log line a second for a refusal that an attacker can repeat.
#[derive(Debug, Default)]
pub(crate) struct LogLimit(std::sync::atomic::AtomicU64);

/// Slow request heads are logged through this one limit: a slowloris
/// attack opens thousands of connections, each ending in that line.
pub(crate) static SLOW_HEAD_LOG: LogLimit = LogLimit::new();

/// Refused admin requests (a web page can send them in a loop).
pub(crate) static ADMIN_REFUSAL_LOG: LogLimit = LogLimit::new();

impl LogLimit {
    /// A new limit that has logged nothing yet.
    pub(crate) const fn new() -> LogLimit {
        LogLimit(std::sync::atomic::AtomicU64::new(0))
    }

    /// True at most once per wall-clock second.
    pub(crate) fn should_log(&self) -> bool {
        let now = u64::try_from(crate::clock::now_unix()).unwrap_or(0);
        self.0.swap(now, std::sync::atomic::Ordering::Relaxed) != now
    }
}
