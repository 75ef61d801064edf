//! Reload planning, pure: which running socket each listener of the next
//! state keeps, which addresses must be bound, which sockets stop. No I/O
//! here, so the rules are unit-tested and `apply` only carries them out.

use std::collections::HashSet;
use std::net::SocketAddr;

/// A socket as the planner sees it: the listener's name and the address
/// it was configured with (not the address bound, which differs for port 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Slot<'a> {
    pub(super) name: &'a str,
    pub(super) listen: SocketAddr,
}

/// Where one listener of the next state gets its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Socket {
    /// Keeps the running socket at this index (same name and address, or
    /// a renamed listener on the same fixed address).
    Keep(usize),
    /// Binds (or takes over) a socket for its configured address.
    Bind,
}

/// Why a running socket stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// Its listener is still configured, at another address.
    Moved,
    /// Its listener is gone.
    Removed,
}

/// What happens to the admin socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AdminSocket {
    /// No change: the same address, or no admin listener before or after.
    Unchanged,
    /// Bind this address; the running admin socket, if any, closes.
    Bind(SocketAddr),
    /// The admin listener was removed from the config.
    Close,
}

/// The plan of one reload (or of the start: nothing running yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    /// One entry per listener of the next state, in its order.
    pub(super) listeners: Vec<Socket>,
    /// Running sockets that no listener keeps, by index, with the reason.
    pub(super) stop: Vec<(usize, Stop)>,
    /// The admin socket.
    pub(super) admin: AdminSocket,
}

/// Plans the move from `running` to `next`. A listener keeps its socket
/// when its name and configured address are unchanged; failing that, a
/// listener on a fixed address takes over the socket of a listener that is
/// going away at that address, so a rename needs no rebind (port 0 means
/// "any port": never shared). Everything else is bound.
pub(super) fn plan(
    running: &[Slot<'_>],
    next: &[Slot<'_>],
    admin_running: Option<SocketAddr>,
    admin_next: Option<SocketAddr>,
) -> Plan {
    let mut claimed = HashSet::new();
    let mut listeners: Vec<Socket> = next
        .iter()
        .map(|n| match running.iter().position(|r| r == n) {
            Some(i) => {
                claimed.insert(i);
                Socket::Keep(i)
            }
            None => Socket::Bind,
        })
        .collect();
    for (socket, n) in listeners.iter_mut().zip(next) {
        if *socket != Socket::Bind || n.listen.port() == 0 {
            continue;
        }
        let gone = running.iter().enumerate().position(|(i, r)| {
            !claimed.contains(&i)
                && r.listen == n.listen
                && !next.iter().any(|other| other.name == r.name)
        });
        if let Some(i) = gone {
            claimed.insert(i);
            *socket = Socket::Keep(i);
        }
    }
    let stop = running
        .iter()
        .enumerate()
        .filter(|(i, _)| !claimed.contains(i))
        .map(|(i, r)| {
            let moved = next.iter().any(|n| n.name == r.name);
            (i, if moved { Stop::Moved } else { Stop::Removed })
        })
        .collect();
    let admin = match (admin_next, admin_running) {
        (Some(a), Some(r)) if a == r => AdminSocket::Unchanged,
        (Some(a), _) => AdminSocket::Bind(a),
        (None, Some(_)) => AdminSocket::Close,
        (None, None) => AdminSocket::Unchanged,
    };
    Plan {
        listeners,
        stop,
        admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn slot(name: &str, port: u16) -> Slot<'_> {
        Slot {
            name,
            listen: addr(port),
        }
    }

    #[test]
    fn start_binds_everything() {
        let p = plan(
            &[],
            &[slot("a", 8443), slot("b", 0)],
            None,
            Some(addr(9000)),
        );
        assert_eq!(p.listeners, vec![Socket::Bind, Socket::Bind]);
        assert!(p.stop.is_empty());
        assert_eq!(p.admin, AdminSocket::Bind(addr(9000)));
    }

    #[test]
    fn unchanged_listeners_keep_their_sockets_in_any_order() {
        let running = [slot("a", 8443), slot("b", 0)];
        let p = plan(
            &running,
            &[slot("b", 0), slot("a", 8443)],
            Some(addr(9000)),
            Some(addr(9000)),
        );
        assert_eq!(p.listeners, vec![Socket::Keep(1), Socket::Keep(0)]);
        assert!(p.stop.is_empty());
        assert_eq!(p.admin, AdminSocket::Unchanged);
    }

    #[test]
    fn a_rename_on_a_fixed_address_keeps_the_socket() {
        let p = plan(&[slot("old", 8443)], &[slot("new", 8443)], None, None);
        assert_eq!(p.listeners, vec![Socket::Keep(0)]);
        assert!(p.stop.is_empty());
    }

    #[test]
    fn a_rename_on_port_zero_binds_anew() {
        let p = plan(&[slot("old", 0)], &[slot("new", 0)], None, None);
        assert_eq!(p.listeners, vec![Socket::Bind]);
        assert_eq!(p.stop, vec![(0, Stop::Removed)]);
    }

    #[test]
    fn a_moved_listener_binds_and_its_old_socket_stops_as_moved() {
        let p = plan(&[slot("a", 8443)], &[slot("a", 8444)], None, None);
        assert_eq!(p.listeners, vec![Socket::Bind]);
        assert_eq!(p.stop, vec![(0, Stop::Moved)]);
    }

    #[test]
    fn a_socket_whose_listener_stays_elsewhere_is_not_taken_by_a_newcomer() {
        // "a" moves away from 8443 and "b" arrives there: "b" must not take
        // "a"'s socket while "a" is still configured (its connections and
        // drain belong to "a"); the bind of 8443 fails and nothing changes.
        let p = plan(
            &[slot("a", 8443)],
            &[slot("a", 8444), slot("b", 8443)],
            None,
            None,
        );
        assert_eq!(p.listeners, vec![Socket::Bind, Socket::Bind]);
        assert_eq!(p.stop, vec![(0, Stop::Moved)]);
    }

    #[test]
    fn a_removed_listener_stops() {
        let p = plan(
            &[slot("a", 8443), slot("b", 8444)],
            &[slot("a", 8443)],
            None,
            None,
        );
        assert_eq!(p.listeners, vec![Socket::Keep(0)]);
        assert_eq!(p.stop, vec![(1, Stop::Removed)]);
    }

    #[test]
    fn two_renames_on_one_address_share_one_socket_only() {
        let p = plan(
            &[slot("old", 8443)],
            &[slot("x", 8443), slot("y", 8443)],
            None,
            None,
        );
        assert_eq!(p.listeners, vec![Socket::Keep(0), Socket::Bind]);
    }

    #[test]
    fn admin_moves_and_closes() {
        assert_eq!(
            plan(&[], &[], Some(addr(9000)), Some(addr(9001))).admin,
            AdminSocket::Bind(addr(9001))
        );
        assert_eq!(
            plan(&[], &[], Some(addr(9000)), None).admin,
            AdminSocket::Close
        );
        assert_eq!(plan(&[], &[], None, None).admin, AdminSocket::Unchanged);
    }
}
