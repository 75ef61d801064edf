//! The HTTP client that fetches CRLs (and asks OCSP responders): HTTP/1.1
//! over TCP or TLS (rustls, the system's CA bundle), with a total deadline,
//! a response size cap and a bounded number of redirects. A CA's server is
//! not trusted to be quick, small or finite.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

/// Bounds on one fetch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Whole exchange, redirects included.
    pub(crate) timeout: Duration,
    /// Largest body accepted.
    pub(crate) max_bytes: usize,
    /// Redirects followed at most.
    pub(crate) max_redirects: usize,
}

/// What a request carries beyond the URL.
#[derive(Debug, Default, Clone)]
pub(crate) struct Ask {
    /// `If-None-Match`.
    pub(crate) etag: Option<String>,
    /// `If-Modified-Since`.
    pub(crate) last_modified: Option<String>,
    /// A POST body and its content type (OCSP); GET without.
    pub(crate) post: Option<(Bytes, &'static str)>,
}

/// A successful answer.
#[derive(Debug)]
pub(crate) enum Answer {
    /// 304: what we have is current.
    NotModified,
    /// 200 with its body.
    Body {
        /// The body.
        bytes: Bytes,
        /// `ETag`, for the next conditional GET.
        etag: Option<String>,
        /// `Last-Modified`, likewise.
        last_modified: Option<String>,
    },
}

/// Why a fetch failed. The label is a bounded metric value.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum FetchError {
    /// The URL cannot be requested.
    #[error("{0}")]
    Url(String),
    /// TCP or TLS set-up failed.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The deadline passed.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// A status other than 200 / 304.
    #[error("the server answered {0}")]
    Status(StatusCode),
    /// The body is larger than allowed.
    #[error("the answer is larger than {0} bytes; refused")]
    TooLarge(usize),
    /// Too many redirects.
    #[error("more than {0} redirects")]
    Redirects(usize),
    /// The HTTP exchange broke off.
    #[error("HTTP error: {0}")]
    Http(String),
}

impl FetchError {
    /// The metric label.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            FetchError::Url(_) => "bad_url",
            FetchError::Connect(_) => "connect_error",
            FetchError::Timeout(_) => "timeout",
            FetchError::Status(_) => "http_status",
            FetchError::TooLarge(_) => "too_large",
            FetchError::Redirects(_) => "redirects",
            FetchError::Http(_) => "http_error",
        }
    }
}

/// The CA bundle for https:// sources: `SSL_CERT_FILE`, else Debian's.
fn tls_client() -> Result<tokio_rustls::TlsConnector, FetchError> {
    let path = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
    let mut roots = rustls::RootCertStore::empty();
    let iter = CertificateDer::pem_file_iter(&path).map_err(|e| {
        FetchError::Connect(format!(
            "cannot read the CA bundle {} for https ({e}); install ca-certificates or set \
             SSL_CERT_FILE",
            path.display()
        ))
    })?;
    for c in iter.flatten() {
        let _ = roots.add(c);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Connect(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// GETs (or POSTs) `url`, following redirects, within `limits`.
pub(crate) async fn fetch(url: &str, ask: &Ask, limits: Limits) -> Result<Answer, FetchError> {
    match tokio::time::timeout(limits.timeout, follow(url, ask, limits)).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::Timeout(limits.timeout)),
    }
}

async fn follow(url: &str, ask: &Ask, limits: Limits) -> Result<Answer, FetchError> {
    let mut uri: Uri = url
        .parse()
        .map_err(|e| FetchError::Url(format!("\"{url}\" is not a URL ({e})")))?;
    for _ in 0..=limits.max_redirects {
        match once(&uri, ask, limits).await? {
            Step::Done(a) => return Ok(a),
            Step::Redirect(to) => {
                // A relative Location resolves against the current URL.
                let next: Uri = to
                    .parse()
                    .map_err(|e| FetchError::Url(format!("redirect to \"{to}\" ({e})")))?;
                uri = if next.scheme().is_some() {
                    next
                } else {
                    let mut parts = uri.clone().into_parts();
                    parts.path_and_query = next.path_and_query().cloned();
                    Uri::from_parts(parts)
                        .map_err(|e| FetchError::Url(format!("redirect to \"{to}\" ({e})")))?
                };
            }
        }
    }
    Err(FetchError::Redirects(limits.max_redirects))
}

enum Step {
    Done(Answer),
    Redirect(String),
}

async fn once(uri: &Uri, ask: &Ask, limits: Limits) -> Result<Step, FetchError> {
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(FetchError::Url(format!(
                "\"{uri}\" is not an http:// or https:// URL"
            )));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| FetchError::Url(format!("\"{uri}\" has no host")))?;
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(|e| FetchError::Connect(format!("{host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    if https {
        let name = ServerName::try_from(bare.to_string())
            .map_err(|e| FetchError::Url(format!("\"{host}\" ({e})")))?;
        let tls = tls_client()?
            .connect(name, tcp)
            .await
            .map_err(|e| FetchError::Connect(format!("TLS with {host}:{port}: {e}")))?;
        exchange(tls, uri, ask, limits).await
    } else {
        exchange(tcp, uri, ask, limits).await
    }
}

async fn exchange<S>(io: S, uri: &Uri, ask: &Ask, limits: Limits) -> Result<Step, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::builder()
        .uri(path)
        .header(header::HOST, authority)
        .header(
            header::USER_AGENT,
            concat!("certgate/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(e) = &ask.etag {
        req = req.header(header::IF_NONE_MATCH, e);
    }
    if let Some(m) = &ask.last_modified {
        req = req.header(header::IF_MODIFIED_SINCE, m);
    }
    let body = match &ask.post {
        Some((b, content_type)) => {
            req = req
                .method(Method::POST)
                .header(header::CONTENT_TYPE, *content_type);
            b.clone()
        }
        None => Bytes::new(),
    };
    let req = req
        .body(Full::new(body))
        .map_err(|e| FetchError::Url(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| FetchError::Http(e.to_string()));
    let result = answer(resp?, limits).await;
    driver.abort();
    result
}

async fn answer(
    resp: http::Response<hyper::body::Incoming>,
    limits: Limits,
) -> Result<Step, FetchError> {
    let status = resp.status();
    let text = |name: header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
        return match text(header::LOCATION) {
            Some(to) => Ok(Step::Redirect(to)),
            None => Err(FetchError::Status(status)),
        };
    }
    if status == StatusCode::NOT_MODIFIED {
        return Ok(Step::Done(Answer::NotModified));
    }
    if status != StatusCode::OK {
        return Err(FetchError::Status(status));
    }
    let declared = text(header::CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes) {
        return Err(FetchError::TooLarge(limits.max_bytes));
    }
    let etag = text(header::ETAG);
    let last_modified = text(header::LAST_MODIFIED);
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| FetchError::Http(e.to_string()))?;
        if let Some(chunk) = frame.data_ref() {
            if bytes.len() + chunk.len() > limits.max_bytes {
                return Err(FetchError::TooLarge(limits.max_bytes));
            }
            bytes.extend_from_slice(chunk);
        }
    }
    Ok(Step::Done(Answer::Body {
        bytes: Bytes::from(bytes),
        etag,
        last_modified,
    }))
}
