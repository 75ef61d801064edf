//! The hyper connection serving a connection now: hyper's HTTP/1 server
//! (which can be ended for parking and give the stream back) or, for an
//! HTTP/2 client, hyper-util's server.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use super::tracked::ProxyBody;

/// The error a connection ends with.
pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection's request handler, as the HTTP servers take it.
pub(super) trait Handler:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response<ProxyBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
    + 'static
{
}

impl<T> Handler for T where
    T: hyper::service::Service<
            Request<Incoming>,
            Response = Response<ProxyBody>,
            Error = Infallible,
            Future: Send + 'static,
        > + Send
        + 'static
{
}

/// One hyper connection over `I`, serving requests with `S`.
pub(super) enum Serving<'a, I, S: Handler> {
    /// HTTP/1: parked when idle.
    Http1(Box<http1::UpgradeableConnection<TokioIo<I>, S>>),
    /// HTTP/2 (by ALPN or preface): served until it ends.
    Auto(Pin<Box<auto::UpgradeableConnection<'a, TokioIo<I>, S, TokioExecutor>>>),
}

impl<'a, I, S> Serving<'a, I, S>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Handler,
{
    /// Serves HTTP/1 on `io`.
    pub(super) fn http1(builder: &http1::Builder, io: I, svc: S) -> Self {
        Serving::Http1(Box::new(
            builder
                .serve_connection(TokioIo::new(io), svc)
                .with_upgrades(),
        ))
    }

    /// Serves `io` with hyper-util's server (HTTP/2, or HTTP/1 if the
    /// client turns out to speak it).
    pub(super) fn auto(builder: &'a auto::Builder<TokioExecutor>, io: I, svc: S) -> Self {
        Serving::Auto(Box::pin(
            builder.serve_connection_with_upgrades(TokioIo::new(io), svc),
        ))
    }

    /// Drives the connection.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Serving::Http1(c) => Pin::new(&mut **c).poll(cx).map_err(Into::into),
            Serving::Auto(c) => c.as_mut().poll(cx),
        }
    }

    /// Asks hyper to finish: an idle connection ends at once, a busy one
    /// after its response (with `Connection: close`).
    pub(super) fn graceful_shutdown(&mut self) {
        match self {
            Serving::Http1(c) => Pin::new(&mut **c).graceful_shutdown(),
            Serving::Auto(c) => c.as_mut().graceful_shutdown(),
        }
    }

    /// Whether this connection can be parked when idle.
    pub(super) fn can_park(&self) -> bool {
        matches!(self, Serving::Http1(_))
    }

    /// The stream, the bytes hyper read and did not parse, and the handler
    /// back, after an HTTP/1 connection ended without an upgrade.
    pub(super) fn into_parts(self) -> Option<(I, Bytes, S)> {
        match self {
            Serving::Http1(c) => c
                .into_parts()
                .map(|p| (p.io.into_inner(), p.read_buf, p.service)),
            Serving::Auto(_) => None,
        }
    }
}
