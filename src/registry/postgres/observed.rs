//! What handshakes taught about a certificate, kept apart from the
//! device's record: each instance counts its own, the fleet's view adds
//! them up.

use std::collections::BTreeMap;

use super::super::{Certificate, Device};

/// One certificate's handshake counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Observed {
    pub(super) first_seen: Option<i64>,
    pub(super) last_seen: Option<i64>,
    pub(super) last_peer: Option<String>,
    pub(super) connections: u64,
    pub(super) refusals: BTreeMap<String, u64>,
}

impl Observed {
    /// The counters a certificate record holds.
    pub(super) fn of(c: &Certificate) -> Observed {
        Observed {
            first_seen: c.first_seen,
            last_seen: c.last_seen,
            last_peer: c.last_peer.clone(),
            connections: c.connections,
            refusals: c.refusals.clone(),
        }
    }

    /// Writes the counters into a certificate record.
    pub(super) fn set_on(&self, c: &mut Certificate) {
        c.first_seen = self.first_seen;
        c.last_seen = self.last_seen;
        c.last_peer = self.last_peer.clone();
        c.connections = self.connections;
        c.refusals = self.refusals.clone();
    }

    /// Adds another instance's counters: the earliest first sight, the
    /// latest sight (and its peer), the sums.
    pub(super) fn merge(&mut self, o: &Observed) {
        self.first_seen = match (self.first_seen, o.first_seen) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if o.last_seen > self.last_seen {
            self.last_seen = o.last_seen;
            self.last_peer = o.last_peer.clone();
        }
        self.connections += o.connections;
        for (k, v) in &o.refusals {
            *self.refusals.entry(k.clone()).or_default() += v;
        }
    }

    /// This instance's own counters plus what the writer counted since
    /// `base` (the counters it held when they were last written or read).
    pub(super) fn add_since(&mut self, now: &Observed, base: &Observed) {
        if self.first_seen.is_none() {
            self.first_seen = now.last_seen.or(now.first_seen);
        }
        if now.last_seen > base.last_seen && now.last_seen > self.last_seen {
            self.last_seen = now.last_seen;
            self.last_peer = now.last_peer.clone();
        }
        self.connections += now.connections.saturating_sub(base.connections);
        for (k, v) in &now.refusals {
            let before = base.refusals.get(k).copied().unwrap_or(0);
            if *v > before {
                *self.refusals.entry(k.clone()).or_default() += v - before;
            }
        }
    }
}

/// The device as the shared table keeps it: without the counters, which
/// live in their own rows (so a handshake never rewrites a status).
pub(super) fn without_counters(d: &Device) -> Device {
    let mut d = d.clone();
    for c in &mut d.certificates {
        Observed::default().set_on(c);
    }
    d
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Observed;

    fn seen(first: i64, last: i64, peer: &str, n: u64) -> Observed {
        Observed {
            first_seen: Some(first),
            last_seen: Some(last),
            last_peer: Some(peer.into()),
            connections: n,
            refusals: [("unapproved".to_string(), n)].into(),
        }
    }

    #[test]
    fn the_fleet_view_takes_the_earliest_first_sight_the_latest_peer_and_the_sums() {
        let mut a = seen(10, 50, "10.0.0.1", 3);
        a.merge(&seen(5, 40, "10.0.0.2", 2));
        assert_eq!(a, {
            let mut x = seen(5, 50, "10.0.0.1", 5);
            x.refusals.insert("unapproved".into(), 5);
            x
        });
    }

    #[test]
    fn own_counters_grow_by_what_was_counted_since_the_last_write() {
        let mut mine = seen(10, 20, "10.0.0.1", 3);
        // The writer holds the fleet's sums (3 + another instance's 4)
        // plus 2 of its own since.
        let base = seen(5, 30, "10.0.0.9", 7);
        let now = seen(5, 60, "10.0.0.1", 9);
        mine.add_since(&now, &base);
        assert_eq!(mine.connections, 5);
        assert_eq!(mine.refusals["unapproved"], 5);
        assert_eq!(mine.last_seen, Some(60));
        // Writing the same again adds nothing.
        let again = mine.clone();
        mine.add_since(&now, &now);
        assert_eq!(mine, again);
    }
}
