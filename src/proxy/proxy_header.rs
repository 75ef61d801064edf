//! The PROXY protocol header an L4 balancer puts before the TLS bytes
//! (`proxy_protocol`, `proxy_from`): read exactly the header, nothing of
//! the ClientHello, and say which client it names. Parsing is the `ppp`
//! crate's; this file only frames the read and bounds it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

use crate::config::ProxyVersion;

/// The v2 signature (`\r\n\r\n\0\r\nQUIT\n`).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// Longest v2 address block and TLVs accepted. The specification allows
/// 65,535; balancers send addresses plus a few TLVs, far below this.
const V2_MAX_PAYLOAD: usize = 2048;

/// Why a connection's PROXY header was refused (the connection is closed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// No complete header within the handshake timeout.
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    /// The peer closed or the read failed first.
    #[error("connection closed before a complete PROXY header ({0})")]
    Io(String),
    /// Not a header of the configured version, or malformed.
    #[error("not a valid PROXY {version} header ({why})")]
    Invalid {
        /// "v1" or "v2".
        version: &'static str,
        /// What was wrong.
        why: String,
    },
}

/// Reads the header at the start of `tcp` within `timeout`: the client's
/// address for a proxied connection, `None` for one the balancer makes
/// itself (v2 `LOCAL`, v1 `UNKNOWN`: health checks), which keeps the
/// balancer's own address.
pub(crate) async fn read(
    tcp: &mut TcpStream,
    version: ProxyVersion,
    timeout: Duration,
) -> Result<Option<SocketAddr>, HeaderError> {
    let read = async {
        match version {
            ProxyVersion::V2 => read_v2(tcp).await,
            ProxyVersion::V1 => read_v1(tcp).await,
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| HeaderError::Timeout(timeout))?
}

/// After a header that names no client: whether the balancer sends
/// anything at all before it closes (a health check sends nothing, and is
/// not a failed handshake to count or log).
pub(crate) async fn sends_data(tcp: &TcpStream, timeout: Duration) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(timeout, tcp.peek(&mut b)).await,
        Ok(Ok(n)) if n > 0
    )
}

fn io(e: std::io::Error) -> HeaderError {
    HeaderError::Io(e.to_string())
}

fn invalid(version: &'static str, why: impl Into<String>) -> HeaderError {
    HeaderError::Invalid {
        version,
        why: why.into(),
    }
}

async fn read_v2(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, HeaderError> {
    let mut head = [0u8; 16];
    tcp.read_exact(&mut head).await.map_err(io)?;
    if &head[..12] != V2_SIGNATURE {
        return Err(invalid(
            "v2",
            "the connection does not start with the v2 signature",
        ));
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > V2_MAX_PAYLOAD {
        return Err(invalid(
            "v2",
            format!("{len} bytes of addresses and TLVs (at most {V2_MAX_PAYLOAD})"),
        ));
    }
    let mut whole = Vec::with_capacity(16 + len);
    whole.extend_from_slice(&head);
    whole.resize(16 + len, 0);
    tcp.read_exact(&mut whole[16..]).await.map_err(io)?;
    v2_client(&whole)
}

/// The client a complete v2 header names.
fn v2_client(bytes: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    use ppp::v2::{Addresses, Command, Header};
    let h = Header::try_from(bytes).map_err(|e| invalid("v2", e.to_string()))?;
    match (h.command, h.addresses) {
        (Command::Local, _) => Ok(None),
        (Command::Proxy, Addresses::IPv4(a)) => {
            Ok(Some(SocketAddr::from((a.source_address, a.source_port))))
        }
        (Command::Proxy, Addresses::IPv6(a)) => {
            Ok(Some(SocketAddr::from((a.source_address, a.source_port))))
        }
        (Command::Proxy, Addresses::Unspecified) => Ok(None),
        (Command::Proxy, Addresses::Unix(_)) => Err(invalid(
            "v2",
            "a UNIX-socket client has no address to log or limit",
        )),
    }
}

async fn read_v1(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, HeaderError> {
    // Peek until the CRLF is in, then take exactly the header: what
    // follows it is the ClientHello.
    let mut buf = [0u8; V1_MAX];
    for _ in 0..100 {
        let n = tcp.peek(&mut buf).await.map_err(io)?;
        if n == 0 {
            return Err(HeaderError::Io("closed".into()));
        }
        if let Some(end) = buf[..n].windows(2).position(|w| w == b"\r\n") {
            let mut line = vec![0u8; end + 2];
            tcp.read_exact(&mut line).await.map_err(io)?;
            return v1_client(&line);
        }
        if n == V1_MAX || !b"PROXY ".starts_with(&buf[..n.min(6)]) {
            return Err(invalid("v1", "no \"PROXY ...\\r\\n\" line at the start"));
        }
        // Part of the line is in: wait for the rest.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err(invalid("v1", "the header line did not complete"))
}

/// The client a complete v1 line names.
fn v1_client(line: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    use ppp::v1::{Addresses, Header};
    let h = Header::try_from(line).map_err(|e| invalid("v1", e.to_string()))?;
    Ok(match h.addresses {
        Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Tcp6(a) => Some(SocketAddr::new(
            std::net::IpAddr::V6(a.source_address).to_canonical(),
            a.source_port,
        )),
        Addresses::Unknown => None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(command);
        h.push(family);
        h.extend_from_slice(&u16::try_from(addresses.len()).unwrap_or(0).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn a_v2_proxy_header_names_the_client() {
        let addrs = [10, 1, 2, 3, 192, 0, 2, 1, 0x30, 0x39, 1, 187];
        assert_eq!(
            v2_client(&v2(0x21, 0x11, &addrs)),
            Ok(Some("10.1.2.3:12345".parse().unwrap()))
        );
    }

    #[test]
    fn a_v2_local_header_keeps_the_balancers_address() {
        assert_eq!(v2_client(&v2(0x20, 0x00, &[])), Ok(None));
    }

    #[test]
    fn a_malformed_v2_header_is_refused() {
        // PROXY command over IPv4 with a truncated address block.
        assert!(v2_client(&v2(0x21, 0x11, &[10, 1, 2])).is_err());
        // Version 1 in the version nibble.
        assert!(v2_client(&v2(0x11, 0x11, &[0; 12])).is_err());
    }

    #[test]
    fn v1_lines_name_the_client_or_nobody() {
        assert_eq!(
            v1_client(b"PROXY TCP4 10.1.2.3 192.0.2.1 12345 443\r\n"),
            Ok(Some("10.1.2.3:12345".parse().unwrap()))
        );
        assert_eq!(
            v1_client(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n"),
            Ok(Some("[2001:db8::1]:4000".parse().unwrap()))
        );
        assert_eq!(
            v1_client(b"PROXY TCP6 ::ffff:10.1.2.3 2001:db8::2 4000 443\r\n"),
            Ok(Some("10.1.2.3:4000".parse().unwrap()))
        );
        assert_eq!(v1_client(b"PROXY UNKNOWN\r\n"), Ok(None));
        assert!(v1_client(b"PROXY TCP4 10.1.2.999 192.0.2.1 1 443\r\n").is_err());
    }
}
