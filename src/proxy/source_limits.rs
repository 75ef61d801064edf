//! Per-source limits at accept: open connections per address
//! (`max_connections_per_source`) and new connections per second
//! (`handshake_rate_per_source`). Pure bookkeeping, unit-tested here.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Open connections per source address, for `max_connections_per_source`.
/// Touched once at accept and once at close, never during a request.
#[derive(Debug, Default)]
pub(super) struct SourceCounts(
    std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
);

/// A connection's place in [`SourceCounts`]; released on drop.
pub(super) struct SourceSlot(Arc<SourceCounts>, std::net::IpAddr);

impl SourceCounts {
    /// A slot for one more connection from `ip`, or `None` at the limit
    /// (`0` = no limit, and no bookkeeping).
    pub(super) fn admit(
        self: &Arc<Self>,
        ip: std::net::IpAddr,
        limit: usize,
    ) -> Option<Option<SourceSlot>> {
        if limit == 0 {
            return Some(None);
        }
        let ip = ip.to_canonical();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Some(SourceSlot(self.clone(), ip)))
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut map = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

/// Token buckets of new connections per source address, for
/// `handshake_rate_per_source`, behind the accept loop's mutex (it and
/// proxied connections' tasks, once their header names the client, take
/// it only when a rate is set). A handful of fields per address; written here because the
/// rate-limit crates bring their own clocks and maps for what is ten lines.
#[derive(Debug, Default)]
pub(super) struct HandshakeRates {
    buckets: std::collections::HashMap<std::net::IpAddr, (f64, Instant)>,
    swept: Option<Instant>,
}

impl HandshakeRates {
    /// Most addresses tracked; beyond it the table starts over (admitting
    /// rather than refusing: the limit is a brake, not an allow-list).
    const MAX_SOURCES: usize = 100_000;

    /// Whether one more handshake from `ip` fits `rate` per second.
    pub(super) fn admit(&mut self, ip: std::net::IpAddr, rate: u32) -> bool {
        self.admit_at(ip, rate, Instant::now())
    }

    /// [`HandshakeRates::admit`] at a given moment.
    fn admit_at(&mut self, ip: std::net::IpAddr, rate: u32, now: Instant) -> bool {
        if rate == 0 {
            return true;
        }
        let rate = f64::from(rate);
        // A bucket untouched for a second is full again: forget it.
        if self
            .swept
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
        {
            self.buckets
                .retain(|_, (_, last)| now.duration_since(*last) < Duration::from_secs(1));
            self.swept = Some(now);
        }
        if self.buckets.len() >= Self::MAX_SOURCES {
            self.buckets.clear();
        }
        let (tokens, last) = self.buckets.entry(ip.to_canonical()).or_insert((rate, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn per_source_slots_count_up_to_the_limit_and_free_on_drop() {
        let counts = Arc::new(SourceCounts::default());
        let a = counts.admit(ip("10.0.0.1"), 2);
        let b = counts.admit(ip("10.0.0.1"), 2);
        assert!(matches!(a, Some(Some(_))) && matches!(b, Some(Some(_))));
        assert!(
            counts.admit(ip("10.0.0.1"), 2).is_none(),
            "third is over the limit"
        );
        assert!(
            matches!(counts.admit(ip("10.0.0.2"), 2), Some(Some(_))),
            "other sources are not affected"
        );
        drop(a);
        assert!(
            matches!(counts.admit(ip("10.0.0.1"), 2), Some(Some(_))),
            "a closed connection frees its slot"
        );
    }

    #[test]
    fn an_ipv4_mapped_address_counts_as_its_ipv4_source() {
        let counts = Arc::new(SourceCounts::default());
        let _a = counts.admit(ip("10.0.0.1"), 1);
        assert!(counts.admit(ip("::ffff:10.0.0.1"), 1).is_none());
    }

    #[test]
    fn no_limit_keeps_no_books() {
        let counts = Arc::new(SourceCounts::default());
        for _ in 0..10 {
            assert!(matches!(counts.admit(ip("10.0.0.1"), 0), Some(None)));
        }
        assert!(counts.0.lock().map(|m| m.is_empty()).unwrap_or(false));
    }

    #[test]
    fn the_handshake_rate_allows_a_burst_of_rate_then_refills_over_time() {
        let mut r = HandshakeRates::default();
        let t0 = Instant::now();
        let src = ip("10.0.0.1");
        let burst = (0..5).filter(|_| r.admit_at(src, 3, t0)).count();
        assert_eq!(burst, 3, "a full bucket holds `rate` tokens");
        assert!(!r.admit_at(src, 3, t0 + Duration::from_millis(100)));
        // 3 per second: one token every ~333 ms.
        assert!(r.admit_at(src, 3, t0 + Duration::from_millis(400)));
        assert!(!r.admit_at(src, 3, t0 + Duration::from_millis(450)));
        assert!(
            r.admit_at(ip("10.0.0.2"), 3, t0),
            "each source has its own bucket"
        );
    }

    #[test]
    fn rate_zero_means_no_limit() {
        let mut r = HandshakeRates::default();
        let t0 = Instant::now();
        assert!((0..100).all(|_| r.admit_at(ip("10.0.0.1"), 0, t0)));
        assert!(r.buckets.is_empty());
    }

    #[test]
    fn idle_buckets_are_swept() {
        let mut r = HandshakeRates::default();
        let t0 = Instant::now();
        assert!(r.admit_at(ip("10.0.0.1"), 1, t0));
        assert!(r.admit_at(ip("10.0.0.2"), 1, t0 + Duration::from_secs(11)));
        assert_eq!(
            r.buckets.len(),
            1,
            "the first source's bucket was full again and forgotten"
        );
    }
}
