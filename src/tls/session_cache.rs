//! A listener's TLS session cache (session-ID resumption): bounded, the
//! oldest session out first, and only as large as the sessions it holds.
//!
//! rustls's `ServerSessionMemoryCache` allocates its table for the whole
//! capacity at start (50,000 sessions by default: about 4.3 MiB), and each
//! session lands at a random place in it, so the first few thousand
//! handshakes had touched most of its pages: about 2.8 MiB resident after
//! 2,000 devices, 1.4 KiB per connection in the idle benchmark. This cache
//! grows with what it holds. Its keys are kept inline (rustls's session IDs
//! are 32 bytes), and `take` (single-use TLS 1.3 sessions) costs one map
//! removal where rustls's searched its whole eviction queue.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// The longest key kept: rustls makes 32-byte session IDs (TLS 1.2) and
/// 32-byte stateful ticket IDs (TLS 1.3).
const MAX_KEY: usize = 32;

/// A session's key, inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    len: u8,
    bytes: [u8; MAX_KEY],
}

impl Key {
    /// The key for `k`, or `None` if it is longer than [`MAX_KEY`].
    fn new(k: &[u8]) -> Option<Key> {
        let mut bytes = [0u8; MAX_KEY];
        bytes.get_mut(..k.len())?.copy_from_slice(k);
        Some(Key {
            len: u8::try_from(k.len()).ok()?,
            bytes,
        })
    }
}

/// A stored session and when it was stored.
struct Entry {
    value: Vec<u8>,
    seq: u64,
}

/// The map and its eviction order.
#[derive(Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    /// Keys oldest first, with the `seq` they were stored with: a slot
    /// whose key was taken or stored again since is stale and skipped.
    order: VecDeque<(Key, u64)>,
    next: u64,
}

impl Inner {
    fn live(&self, (key, seq): &(Key, u64)) -> bool {
        self.map.get(key).is_some_and(|e| e.seq == *seq)
    }
}

/// The session cache of one listener's TLS config (see the module docs).
pub(super) struct SessionCache {
    max: usize,
    inner: Mutex<Inner>,
}

impl SessionCache {
    /// A cache of at most `max` sessions (at least one).
    pub(super) fn new(max: usize) -> SessionCache {
        SessionCache {
            max: max.max(1),
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing in here panics halfway through a change; a poisoned lock
        // still holds a consistent cache.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("max", &self.max)
            .field("len", &self.lock().map.len())
            .finish()
    }
}

impl rustls::server::StoresServerSessions for SessionCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let Some(key) = Key::new(&key) else {
            return false;
        };
        let mut g = self.lock();
        let seq = g.next;
        g.next += 1;
        g.map.insert(key, Entry { value, seq });
        g.order.push_back((key, seq));
        while g.map.len() > self.max {
            let Some(oldest) = g.order.pop_front() else {
                break;
            };
            if g.live(&oldest) {
                g.map.remove(&oldest.0);
            }
        }
        // Taken and re-stored keys leave stale slots behind; drop them
        // before they outnumber the sessions.
        if g.order.len() > 2 * g.map.len() + 64 {
            let mut order = std::mem::take(&mut g.order);
            order.retain(|slot| g.live(slot));
            g.order = order;
        }
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let key = Key::new(key)?;
        self.lock().map.get(&key).map(|e| e.value.clone())
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let key = Key::new(key)?;
        self.lock().map.remove(&key).map(|e| e.value)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rustls::server::StoresServerSessions;

    fn id(n: u32) -> Vec<u8> {
        let mut k = vec![7u8; 32];
        k[..4].copy_from_slice(&n.to_be_bytes());
        k
    }

    #[test]
    fn holds_at_most_max_sessions_and_lets_the_oldest_go_first() {
        let c = SessionCache::new(3);
        for n in 0..5 {
            assert!(c.put(id(n), vec![n as u8]));
        }
        assert_eq!(c.get(&id(0)), None);
        assert_eq!(c.get(&id(1)), None);
        assert_eq!(c.get(&id(2)), Some(vec![2]));
        assert_eq!(c.get(&id(4)), Some(vec![4]));
        // Stored again, a key counts as new: the next one out is 3.
        assert!(c.put(id(2), vec![22]));
        assert!(c.put(id(5), vec![5]));
        assert_eq!(c.get(&id(3)), None);
        assert_eq!(c.get(&id(2)), Some(vec![22]));
        assert_eq!(c.lock().map.len(), 3);
    }

    #[test]
    fn take_removes_and_get_keeps() {
        let c = SessionCache::new(10);
        c.put(id(1), b"one".to_vec());
        assert_eq!(c.get(&id(1)).as_deref(), Some(&b"one"[..]));
        assert_eq!(c.take(&id(1)).as_deref(), Some(&b"one"[..]));
        assert_eq!(c.take(&id(1)), None);
        assert_eq!(c.get(&id(1)), None);
    }

    #[test]
    fn keys_longer_than_a_session_id_are_not_stored() {
        let c = SessionCache::new(10);
        assert!(!c.put(vec![1u8; 33], b"x".to_vec()));
        assert_eq!(c.get(&[1u8; 33]), None);
        // A shorter key is its own key, not a prefix of a longer one.
        assert!(c.put(vec![1u8; 4], b"short".to_vec()));
        assert_eq!(c.get(&[1u8; 5]), None);
        assert_eq!(c.get(&[1u8; 4]).as_deref(), Some(&b"short"[..]));
    }

    #[test]
    fn memory_follows_the_sessions_held_not_the_capacity() {
        // The default capacity, ten sessions: a small table.
        let c = SessionCache::new(50_000);
        for n in 0..10 {
            c.put(id(n), vec![0; 100]);
        }
        assert!(c.lock().map.capacity() < 64, "{}", c.lock().map.capacity());
        // Single-use sessions taken as fast as they come leave no backlog
        // of stale slots behind.
        for n in 100..10_100 {
            c.put(id(n), vec![1]);
            assert!(c.take(&id(n)).is_some());
        }
        let g = c.lock();
        assert_eq!(g.map.len(), 10);
        assert!(g.order.len() <= 2 * 10 + 64 + 1, "{}", g.order.len());
    }
}
