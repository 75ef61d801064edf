//! Sockets for the listeners: taken over from a predecessor (or systemd)
//! where one matches, bound otherwise, always the same way.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tracing::info;

use crate::error::RunError;
use crate::handover;

/// Sockets to serve instead of binding: inherited from a predecessor.
pub(crate) type Inherited = Vec<handover::InheritedSocket>;

/// Takes the inherited socket recorded under `key` for `listen` (or any
/// inherited socket on that fixed address), else binds a new one.
pub(super) async fn take_or_bind(
    inherited: &mut Inherited,
    key: &str,
    name: &str,
    listen: SocketAddr,
) -> Result<TcpListener, RunError> {
    let found = inherited
        .iter()
        .position(|s| s.name == key && s.configured == listen)
        .or_else(|| {
            inherited
                .iter()
                .position(|s| s.configured == listen && listen.port() != 0)
        });
    if let Some(i) = found {
        let s = inherited.swap_remove(i);
        info!(listener = %name, addr = %s.local, "serving a socket inherited from the previous process");
        return s.into_tokio().map_err(|source| RunError::Bind {
            listener: name.to_string(),
            addr: listen,
            source,
        });
    }
    bind(name, listen)
}

/// Binds a listening socket the way every certgate listener is bound:
/// SO_REUSEADDR (restart while old connections sit in TIME_WAIT) and a
/// deep backlog for fleet reconnect storms.
pub(crate) fn bind(name: &str, listen: SocketAddr) -> Result<TcpListener, RunError> {
    let err = |source| RunError::Bind {
        listener: name.to_string(),
        addr: listen,
        source,
    };
    let socket = if listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(listen).map_err(err)?;
    socket.listen(4096).map_err(err)
}
