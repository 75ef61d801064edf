//! The plain-HTTP listener for legacy devices: `allow_from` sources only.

use super::connection::Ready;
use super::handshake::record;
use super::headers::ClientFacts;
use super::{Admission, ListenerShared, ListenerState};
use crate::readiness::Status;
use crate::tls::HandshakeNote;
use http::HeaderValue;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tracing::info;

use super::lifeline::Lifeline;

/// A plain-HTTP listener (legacy devices): sources in `allow_from` are
/// admitted like TLS clients without a certificate (returned to be
/// served); others get 403 here.
pub(super) async fn plain(
    tcp: TcpStream,
    peer: SocketAddr,
    (shared, state): (Arc<ListenerShared>, Arc<ListenerState>),
    lifeline: Lifeline,
) -> Option<Box<Ready<TcpStream>>> {
    let ip = peer.ip().to_canonical();
    if !state.allow_from.iter().any(|n| n.contains(&ip)) {
        state.metrics.source_refused();
        info!(listener = %state.name, %peer,
            "source not in allow_from of this plain-HTTP listener; answering 403");
        let svc = hyper::service::service_fn(|_req| async {
            let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
                b"forbidden: this source may not use the plain-HTTP port\n",
            )));
            *r.status_mut() = http::StatusCode::FORBIDDEN;
            r.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            Ok::<_, std::convert::Infallible>(r)
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(state.limits.request_header_timeout)
            .keep_alive(false)
            .serve_connection(TokioIo::new(tcp), svc);
        let _ = tokio::time::timeout(state.limits.request_header_timeout, conn).await;
        return None;
    }
    record(
        &state,
        peer,
        (Status::NoCredentials, None),
        &HandshakeNote::default(),
        None,
        None,
    );
    let facts = ClientFacts {
        forwarded_for: HeaderValue::from_str(&ip.to_string())
            .unwrap_or(HeaderValue::from_static("unknown")),
        proto: HeaderValue::from_static("http"),
        verify: HeaderValue::from_static("NONE"),
        identity: None,
    };
    let admission = Admission::plain(shared.clone());
    Some(Box::new(Ready {
        io: tcp,
        peer,
        listener: (shared, state),
        facts,
        tls: None,
        admission,
        lifeline,
    }))
}
