//! Zero-downtime restart of the binary: a running certgate hands its
//! listening sockets to a successor over a Unix socket (`SCM_RIGHTS`), the
//! way HAProxy's `-x` and Envoy's hot restart do.
//!
//! Both processes accept from the *same* kernel sockets for a moment, so no
//! connection waiting in a backlog is lost (closing one SO_REUSEPORT socket
//! of a group resets the connections queued on it; passing the socket
//! itself does not). The exchange:
//!
//! 1. successor → `certgate-takeover 1`
//! 2. predecessor → manifest (one line per socket) with the file
//!    descriptors attached
//! 3. successor starts serving them → `ready`
//! 4. predecessor stops accepting → `bye`, then drains its connections
//!    and exits.
//!
//! If the successor fails or goes away before step 3, the predecessor keeps
//! serving as if nothing happened.

use std::io::{BufRead as _, BufReader, IoSlice, IoSliceMut, Write as _};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use thiserror::Error;
use tokio::net::{TcpListener, UnixListener};

const HELLO: &str = "certgate-takeover 1";
const MANIFEST: &str = "certgate-handover 1";
const MAX_SOCKETS: usize = 64;
/// How long the predecessor waits for the successor to start serving.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A handover did not complete.
#[derive(Debug, Error)]
pub enum HandoverError {
    /// Socket I/O failed.
    #[error("handover socket {path}: {source}")]
    Io {
        /// The handover socket path, or `peer` on the predecessor side.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The other side said something unexpected.
    #[error("handover protocol: {0}")]
    Protocol(String),
}

fn io_err(path: &str) -> impl Fn(std::io::Error) -> HandoverError + '_ {
    move |source| HandoverError::Io {
        path: path.to_string(),
        source,
    }
}

/// A socket offered to a successor.
#[derive(Debug)]
pub(crate) struct OfferedSocket {
    /// `listener:<name>` or `admin`.
    pub name: String,
    /// The address as configured (may have port 0).
    pub configured: SocketAddr,
    /// The address as bound.
    pub local: SocketAddr,
    /// The socket.
    pub socket: Arc<TcpListener>,
}

/// A socket received from a predecessor.
#[derive(Debug)]
pub struct InheritedSocket {
    /// `listener:<name>` or `admin`.
    pub name: String,
    /// The address as configured in the predecessor.
    pub configured: SocketAddr,
    /// The address as bound.
    pub local: SocketAddr,
    fd: OwnedFd,
}

/// Listening TCP sockets passed by systemd socket activation (`LISTEN_FDS`,
/// checked against `LISTEN_PID`). Each serves the listener whose `listen`
/// address equals the socket's address; the rest are closed.
pub(crate) fn systemd_sockets() -> Result<Vec<InheritedSocket>, HandoverError> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut out = Vec::new();
    for i in 0..fds.len() {
        let listener = fds
            .take_tcp_listener(i)
            .map_err(|source| HandoverError::Io {
                path: format!("LISTEN_FDS socket #{i}"),
                source,
            })?;
        let Some(listener) = listener else { continue };
        let local = listener.local_addr().map_err(|source| HandoverError::Io {
            path: format!("LISTEN_FDS socket #{i}"),
            source,
        })?;
        out.push(InheritedSocket {
            name: format!("systemd:{i}"),
            configured: local,
            local,
            fd: OwnedFd::from(listener),
        });
    }
    Ok(out)
}

impl InheritedSocket {
    /// Turns the inherited descriptor into a tokio listener.
    pub fn into_tokio(self) -> std::io::Result<TcpListener> {
        let std = std::net::TcpListener::from(self.fd);
        // Fails unless it really is a listening TCP socket.
        std.local_addr()?;
        std.set_nonblocking(true)?;
        TcpListener::from_std(std)
    }
}

/// Predecessor side: sends `sockets` to the successor on `conn`, calls
/// `on_ready` (stop accepting) once the successor serves them, and
/// confirms. Any error before `ready` leaves this process untouched.
pub(crate) async fn offer(
    conn: tokio::net::UnixStream,
    sockets: Vec<OfferedSocket>,
    on_ready: impl FnOnce(),
) -> Result<(), HandoverError> {
    let peer = "peer";
    let stream = conn.into_std().map_err(io_err(peer))?;
    stream.set_nonblocking(false).map_err(io_err(peer))?;
    let mut fds = Vec::new();
    let mut manifest = format!("{MANIFEST}\npid {}\n", std::process::id());
    for s in &sockets {
        fds.push(
            s.socket
                .as_fd()
                .try_clone_to_owned()
                .map_err(io_err(peer))?,
        );
        manifest.push_str(&format!("socket {} {} {}\n", s.configured, s.local, s.name));
    }
    manifest.push_str("end\n");
    let stream = tokio::task::spawn_blocking(move || -> Result<UnixStream, HandoverError> {
        stream
            .set_read_timeout(Some(STEP_TIMEOUT))
            .map_err(io_err(peer))?;
        let mut reader = BufReader::new(stream.try_clone().map_err(io_err(peer))?);
        let hello = read_line(&mut reader, peer)?;
        if hello != HELLO {
            return Err(HandoverError::Protocol(format!(
                "expected \"{HELLO}\", got \"{hello}\""
            )));
        }
        send_with_fds(&stream, manifest.as_bytes(), &fds).map_err(io_err(peer))?;
        drop(fds);
        stream
            .set_read_timeout(Some(READY_TIMEOUT))
            .map_err(io_err(peer))?;
        let ready = read_line(&mut reader, peer)?;
        if ready != "ready" {
            return Err(HandoverError::Protocol(format!(
                "successor did not start serving: \"{ready}\""
            )));
        }
        Ok(stream)
    })
    .await
    .map_err(|e| HandoverError::Protocol(format!("handover task failed: {e}")))??;
    on_ready();
    let mut stream = stream;
    // The successor is already serving; if it went away after `ready`
    // there is nobody left to tell.
    let _ = stream.write_all(b"bye\n");
    Ok(())
}

/// Successor side: the sockets taken over, and the connection to confirm on.
#[derive(Debug)]
pub struct Takeover {
    stream: UnixStream,
    path: String,
    /// The predecessor's process id.
    pub predecessor: u32,
    /// The sockets received.
    pub sockets: Vec<InheritedSocket>,
}

impl Takeover {
    /// Asks the process listening on `path` for its sockets. `Ok(None)`
    /// when nobody listens there (nothing to take over).
    pub async fn connect(path: &Path) -> Result<Option<Takeover>, HandoverError> {
        let shown = path.display().to_string();
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || connect_blocking(&path, shown))
            .await
            .map_err(|e| HandoverError::Protocol(format!("handover task failed: {e}")))?
    }

    /// Tells the predecessor that this process now serves the sockets, and
    /// waits until it has stopped accepting.
    pub async fn finish(self) -> Result<u32, HandoverError> {
        let Takeover {
            mut stream,
            path,
            predecessor,
            ..
        } = self;
        tokio::task::spawn_blocking(move || {
            stream.write_all(b"ready\n").map_err(io_err(&path))?;
            let mut reader = BufReader::new(&stream);
            let bye = read_line(&mut reader, &path)?;
            if bye != "bye" {
                return Err(HandoverError::Protocol(format!(
                    "expected \"bye\", got \"{bye}\""
                )));
            }
            Ok(predecessor)
        })
        .await
        .map_err(|e| HandoverError::Protocol(format!("handover task failed: {e}")))?
    }
}

fn connect_blocking(path: &Path, shown: String) -> Result<Option<Takeover>, HandoverError> {
    let stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(io_err(&shown)(e)),
    };
    stream
        .set_read_timeout(Some(STEP_TIMEOUT))
        .map_err(io_err(&shown))?;
    (&stream)
        .write_all(format!("{HELLO}\n").as_bytes())
        .map_err(io_err(&shown))?;

    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let mut data = vec![0u8; 64 * 1024];
    let got = rustix::net::recvmsg(
        &stream,
        &mut [IoSliceMut::new(&mut data)],
        &mut cmsg,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| io_err(&shown)(e.into()))?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    data.truncate(got.bytes);
    // The manifest normally arrives whole with the descriptors; read on
    // until its end marker in case the stream split it.
    let mut reader = BufReader::new(&stream);
    while !data.ends_with(b"end\n") {
        let mut line = String::new();
        let n = reader.read_line(&mut line).map_err(io_err(&shown))?;
        if n == 0 {
            return Err(HandoverError::Protocol("manifest cut short".into()));
        }
        data.extend_from_slice(line.as_bytes());
    }
    let text = String::from_utf8(data)
        .map_err(|_| HandoverError::Protocol("manifest is not UTF-8".into()))?;
    let mut lines = text.lines();
    if lines.next() != Some(MANIFEST) {
        return Err(HandoverError::Protocol(
            "the process on the handover socket is not a compatible certgate".into(),
        ));
    }
    let mut predecessor = 0;
    let mut entries = Vec::new();
    for line in lines {
        let mut parts = line.splitn(4, ' ');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("pid"), Some(p), None, None) => predecessor = p.parse().unwrap_or(0),
            (Some("socket"), Some(c), Some(l), Some(name)) => {
                let parse = |s: &str| {
                    s.parse::<SocketAddr>()
                        .map_err(|_| HandoverError::Protocol(format!("bad address \"{s}\"")))
                };
                entries.push((name.to_string(), parse(c)?, parse(l)?));
            }
            (Some("end"), None, None, None) => break,
            _ => {
                return Err(HandoverError::Protocol(format!(
                    "unexpected manifest line \"{line}\""
                )));
            }
        }
    }
    if entries.len() != fds.len() {
        return Err(HandoverError::Protocol(format!(
            "manifest lists {} sockets but {} descriptors arrived",
            entries.len(),
            fds.len()
        )));
    }
    let sockets = entries
        .into_iter()
        .zip(fds)
        .map(|((name, configured, local), fd)| InheritedSocket {
            name,
            configured,
            local,
            fd,
        })
        .collect();
    Ok(Some(Takeover {
        stream,
        path: shown,
        predecessor,
        sockets,
    }))
}

fn send_with_fds(stream: &UnixStream, payload: &[u8], fds: &[OwnedFd]) -> std::io::Result<()> {
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(borrowed.len()))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    if !borrowed.is_empty() && !cmsg.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(std::io::Error::other("too many sockets to hand over"));
    }
    let sent = rustix::net::sendmsg(
        stream,
        &[IoSlice::new(payload)],
        &mut cmsg,
        SendFlags::empty(),
    )?;
    if sent < payload.len() {
        // The descriptors went with the first part; the rest is plain data.
        let mut s = stream;
        s.write_all(&payload[sent..])?;
    }
    Ok(())
}

fn read_line<R: std::io::BufRead>(reader: &mut R, path: &str) -> Result<String, HandoverError> {
    let mut line = String::new();
    let n = reader.read_line(&mut line).map_err(io_err(path))?;
    if n == 0 {
        return Err(HandoverError::Protocol(
            "the other process closed the handover connection".into(),
        ));
    }
    Ok(line.trim_end().to_string())
}

/// Binds the handover socket at `path` (mode 0600: only certgate's user
/// may take its sockets). A stale socket file is replaced; a live one
/// belongs to another running certgate and is an error.
pub(crate) fn listen(path: &Path) -> Result<UnixListener, HandoverError> {
    let shown = path.display().to_string();
    if path.exists() {
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(HandoverError::Protocol(format!(
                    "{shown}: another certgate is running and owns this handover socket; \
                     start with --takeover to replace it, or stop it first"
                )));
            }
            Err(_) => std::fs::remove_file(path).map_err(io_err(&shown))?,
        }
    }
    replace_socket(path)
}

/// Binds the handover socket after a takeover: the predecessor's socket
/// file is still there (it keeps its unlinked socket until it exits).
pub(crate) fn listen_after_takeover(path: &Path) -> Result<UnixListener, HandoverError> {
    let shown = path.display().to_string();
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&shown)(e)),
    }
    replace_socket(path)
}

fn replace_socket(path: &Path) -> Result<UnixListener, HandoverError> {
    use std::os::unix::fs::PermissionsExt as _;
    let shown = path.display().to_string();
    let tmp: PathBuf = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(io_err(&shown))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(&shown))?;
    // Bind under a temporary name, then rename: the path never points at a
    // socket with the default (umask) permissions.
    std::fs::rename(&tmp, path).map_err(io_err(&shown))?;
    Ok(listener)
}
