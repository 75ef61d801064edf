//! At most one log line a second for refusals an attacker can repeat.

/// At most one log line a second for a refusal that an attacker can repeat.
#[derive(Debug, Default)]
pub(super) struct LogLimit(std::sync::atomic::AtomicU64);

/// Slow request heads are logged through this one limit: a slowloris
/// attack opens thousands of connections, each ending in that line.
pub(super) static SLOW_HEAD_LOG: LogLimit = LogLimit(std::sync::atomic::AtomicU64::new(0));

impl LogLimit {
    pub(super) fn should_log(&self) -> bool {
        let now = u64::try_from(crate::clock::now_unix()).unwrap_or(0);
        self.0.swap(now, std::sync::atomic::Ordering::Relaxed) != now
    }
}
