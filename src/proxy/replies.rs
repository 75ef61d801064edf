//! certgate's own short answers: 400, 413, 414, 502, 503, 504.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

/// A response body of certgate's own or the backend's.
pub(super) type Reply = Response<Either<Incoming, Full<Bytes>>>;

/// A short answer after which the connection is closed (the request's
/// framing or body cannot be trusted, so neither can what follows it).
pub(super) fn closing(
    status: StatusCode,
    text: &'static str,
) -> Response<Either<Incoming, Full<Bytes>>> {
    let mut resp = short_response(status, text);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// A short plain-text answer.
pub(super) fn short_response(
    status: StatusCode,
    text: &'static str,
) -> Response<Either<Incoming, Full<Bytes>>> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// 503 with a `Retry-After`.
pub(super) fn unavailable(retry_after: u64) -> Response<Either<Incoming, Full<Bytes>>> {
    let mut resp = short_response(StatusCode::SERVICE_UNAVAILABLE, "service unavailable\n");
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    resp
}
