//! Which server an attempt goes to, by strategy: pure, so the rules are
//! unit-tested without sockets.

use crate::config::Strategy;

/// Which server a request should try next.
#[derive(Debug)]
pub(crate) enum Pick {
    /// This one (index into [`Upstream::servers`]).
    Server(usize),
    /// Every server is out of rotation; retry after this many seconds.
    AllDown {
        /// Seconds until the first server may be back.
        retry_after: u64,
    },
    /// Every server in rotation was tried for this request.
    Exhausted,
}

/// The server for the next attempt, among `n` servers: one not yet tried
/// (bit `i` of `tried`) and `available`. `start` is the round-robin
/// position, advanced by the caller once per pick. Failover takes the
/// first in config order; round-robin the next from `start`; least-conn
/// the one with the fewest requests in flight, ties going round-robin (or
/// an idle upstream would send everything to the first server).
pub(super) fn choose(
    strategy: Strategy,
    n: usize,
    start: usize,
    tried: u64,
    available: impl Fn(usize) -> bool,
    in_flight: impl Fn(usize) -> usize,
) -> Option<usize> {
    let candidate = |i: usize| tried & (1u64 << i) == 0 && available(i);
    match strategy {
        Strategy::Failover => (0..n).find(|&i| candidate(i)),
        Strategy::RoundRobin => (0..n).map(|k| (start + k) % n).find(|&i| candidate(i)),
        Strategy::LeastConn => (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| candidate(i))
            .min_by_key(|&i| in_flight(i)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: fn(usize) -> bool = |_| true;
    const IDLE: fn(usize) -> usize = |_| 0;

    #[test]
    fn failover_takes_the_first_available_untried_server() {
        assert_eq!(choose(Strategy::Failover, 3, 7, 0, ALL, IDLE), Some(0));
        assert_eq!(choose(Strategy::Failover, 3, 7, 0b001, ALL, IDLE), Some(1));
        assert_eq!(
            choose(Strategy::Failover, 3, 0, 0, |i| i == 2, IDLE),
            Some(2)
        );
        assert_eq!(choose(Strategy::Failover, 3, 0, 0b111, ALL, IDLE), None);
    }

    #[test]
    fn round_robin_starts_at_its_position_and_skips_what_is_out() {
        let picks: Vec<_> = (0..4)
            .map(|start| choose(Strategy::RoundRobin, 3, start, 0, ALL, IDLE))
            .collect();
        assert_eq!(picks, vec![Some(0), Some(1), Some(2), Some(0)]);
        assert_eq!(
            choose(Strategy::RoundRobin, 3, 1, 0, |i| i != 1, IDLE),
            Some(2)
        );
        assert_eq!(
            choose(Strategy::RoundRobin, 3, 1, 0b100, |i| i != 1, IDLE),
            Some(0)
        );
    }

    #[test]
    fn least_conn_prefers_fewest_in_flight_and_spreads_ties() {
        let busy = |i: usize| [5, 1, 3][i];
        assert_eq!(choose(Strategy::LeastConn, 3, 0, 0, ALL, busy), Some(1));
        assert_eq!(choose(Strategy::LeastConn, 3, 0, 0b010, ALL, busy), Some(2));
        let ties: Vec<_> = (0..3)
            .map(|start| choose(Strategy::LeastConn, 3, start, 0, ALL, IDLE))
            .collect();
        assert_eq!(ties, vec![Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn nothing_available_is_none_for_every_strategy() {
        for s in [
            Strategy::Failover,
            Strategy::RoundRobin,
            Strategy::LeastConn,
        ] {
            assert_eq!(choose(s, 2, 0, 0, |_| false, IDLE), None);
        }
    }
}
