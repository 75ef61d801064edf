//! systemd service notifications (`Type=notify`): `READY=1` once every
//! listener is bound, `RELOADING=1` / `READY=1` around a reload,
//! `STOPPING=1` when draining begins, `STATUS=` lines for `systemctl
//! status`.
//!
//! Hand-written: the protocol is one datagram per message to the socket in
//! `$NOTIFY_SOCKET`; std's `UnixDatagram` does it, a crate would add
//! nothing.

use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;

use tracing::debug;

static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();

struct Notifier {
    sock: UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
}

fn notifier() -> Option<&'static Notifier> {
    NOTIFIER
        .get_or_init(|| {
            let path = std::env::var_os("NOTIFY_SOCKET")?;
            let bytes = path.as_encoded_bytes();
            let addr = if let Some(name) = bytes.strip_prefix(b"@") {
                use std::os::linux::net::SocketAddrExt as _;
                std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(std::path::Path::new(&path)).ok()?
            };
            let sock = UnixDatagram::unbound().ok()?;
            Some(Notifier { sock, addr })
        })
        .as_ref()
}

fn send(msg: &str) {
    if let Some(n) = notifier()
        && let Err(e) = n.sock.send_to_addr(msg.as_bytes(), &n.addr)
    {
        debug!(error = %e, "sd_notify failed");
    }
}

/// Every listener is bound and serving.
pub(crate) fn ready(status: &str) {
    send(&format!(
        "READY=1\nMAINPID={}\nSTATUS={status}",
        std::process::id()
    ));
}

/// A reload begins (systemd wants the monotonic time with it).
pub(crate) fn reloading() {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000;
    send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// Draining begins; the process exits when it is done.
pub(crate) fn stopping(status: &str) {
    send(&format!("STOPPING=1\nSTATUS={status}"));
}
