//! Who may call the admin API from where: the checks that keep a web page
//! the admin happens to open from using the admin listener through the
//! admin's own browser (cross-site requests, DNS rebinding).
//!
//! A browser lets any page send a "simple" cross-origin POST (`text/plain`,
//! form or multipart body, no preflight) to `http://127.0.0.1:9900`, and a
//! page on a name that resolves to 127.0.0.1 is even same-origin with it.
//! curl, scripts and `certgate devices` send no `Origin` and no
//! `Sec-Fetch-*`, name the address they connect to in `Host`, and send
//! JSON bodies; a browser context sends what gives it away. So, for every
//! `/api/*` request, `Host` must name this listener; for every request that
//! can change state, a foreign or `null` `Origin`, `Sec-Fetch-Site:
//! cross-site|same-site` and a body that is not `application/json` are
//! refused. (OWASP's CSRF guidance, "verifying origin with standard headers"
//! and "Fetch Metadata"; Django's and Go's `CrossOriginProtection` do the
//! same.)

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, Method, Uri, header};

/// Why a request was refused; the `reason` label of
/// `certgate_admin_requests_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `Host` names something other than this listener (DNS rebinding).
    Host,
    /// `Origin` is another origin, or `null`.
    Origin,
    /// `Sec-Fetch-Site` says another site sent it.
    FetchSite,
    /// A body that is not JSON (a form or `text/plain` post).
    ContentType,
}

impl Refusal {
    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::Host => "host",
            Refusal::Origin => "origin",
            Refusal::FetchSite => "fetch_site",
            Refusal::ContentType => "content_type",
        }
    }
}

/// A refusal with the sentence the caller gets in the JSON answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    /// Which check.
    pub reason: Refusal,
    /// What was wrong and what to do.
    pub message: String,
}

/// The names a request may use for this admin listener.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostRules {
    /// The configured listen address (its IP counts when not 0.0.0.0/::).
    pub listen: Option<SocketAddr>,
    /// `[admin] allowed_hosts`, normalized (`name` or `name:port`).
    pub allowed: Vec<String>,
}

/// A `host[:port]` split into a lowercase host (IPv6 without brackets,
/// no trailing dot) and a port.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let a = authority.trim();
    if a.is_empty() || a.contains('@') || a.contains('/') {
        return None;
    }
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        (h.to_string(), port)
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p.parse().ok()?)),
            Some(_) => return None,
            None => (a.to_string(), None),
        }
    };
    let host = host.to_ascii_lowercase();
    let host = host.trim_end_matches('.').to_string();
    if host.is_empty() {
        return None;
    }
    Some((host, port))
}

impl HostRules {
    /// Whether `host`/`port` (from `Host` or `Origin`) names this listener
    /// as reached through a socket whose local address is `local`.
    fn allows(&self, host: &str, port: Option<u16>, local: SocketAddr) -> bool {
        if let Ok(ip) = host.parse::<IpAddr>() {
            let ip = ip.to_canonical();
            return ip.is_loopback()
                || ip == local.ip().to_canonical()
                || self
                    .listen
                    .is_some_and(|l| !l.ip().is_unspecified() && l.ip().to_canonical() == ip)
                || self.allowed_entry(host, port);
        }
        host == "localhost" || self.allowed_entry(host, port)
    }

    fn allowed_entry(&self, host: &str, port: Option<u16>) -> bool {
        self.allowed.iter().any(|a| match split_authority(a) {
            Some((h, None)) => h == host,
            Some((h, Some(p))) => h == host && port == Some(p),
            None => false,
        })
    }
}

/// The authority a request was sent to: `:authority` (HTTP/2, absolute
/// URIs) or `Host`.
/// `None` without either; an unreadable `Host` (not ASCII) reads as an
/// empty name, which no rule allows.
fn request_authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).map(|v| v.to_str().unwrap_or("")))
}

/// A request that may change state: everything but GET, HEAD and OPTIONS.
pub(crate) fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// What a state-changing request's body must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// The API: JSON only, which no cross-site form can send.
    Json,
    /// The console: its own HTML forms (`application/x-www-form-urlencoded`),
    /// each carrying the session's anti-forgery token, which the console
    /// checks.
    Form,
}

/// Checks one `/api/*` request (`Body::Json`) or console request
/// (`Body::Form`). `has_body` says whether a body follows the head (any
/// `Content-Length` but 0, chunked, or HTTP/2 data).
/// [`check`] for a request about to be served, with the refusal counted
/// (`certgate_admin_requests_refused_total`) and logged at most once a
/// second; `what` names the surface ("admin", "console") in the log.
pub(crate) fn screen<B>(
    metrics: &crate::metrics::Metrics,
    what: &str,
    rules: &HostRules,
    local: SocketAddr,
    req: &http::Request<B>,
    body: Body,
) -> Result<(), Refused>
where
    B: hyper::body::Body,
{
    let has_body = !req.body().is_end_stream();
    let r = check(
        rules,
        local,
        req.method(),
        req.uri(),
        req.headers(),
        (body, has_body),
    );
    if let Err(refused) = &r {
        let reason = refused.reason.as_str();
        metrics.admin_refused(reason);
        if crate::log_limit::ADMIN_REFUSAL_LOG.should_log() {
            tracing::warn!(method = %req.method(), path = %req.uri().path(), reason,
                "{what} request refused: {} (further refusals are counted in \
                 certgate_admin_requests_refused_total, logged at most once a second)",
                refused.message);
        }
    }
    r
}

pub(crate) fn check(
    rules: &HostRules,
    local: SocketAddr,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    (body, has_body): (Body, bool),
) -> Result<(), Refused> {
    let refuse = |reason, message: String| Err(Refused { reason, message });
    // Without a Host (HTTP/1.0 tools) there is no browser: browsers always
    // send one.
    let target = match request_authority(uri, headers) {
        Some(a) => match split_authority(a) {
            Some((host, port)) if rules.allows(&host, port, local) => Some((host, port)),
            _ => {
                return refuse(
                    Refusal::Host,
                    format!(
                        "Host \"{a}\" is not this admin listener's address; use http://{local}/ \
                         (or a loopback name), or add the name to [admin] allowed_hosts"
                    ),
                );
            }
        },
        None => None,
    };
    if !changes_state(method) {
        return Ok(());
    }
    if let Some(site) = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        && (site == "cross-site" || site == "same-site")
    {
        return refuse(
            Refusal::FetchSite,
            format!(
                "refused: sent by a web page of another site (Sec-Fetch-Site: {site}); \
                 use the certgate devices CLI, curl or the admin listener's own console"
            ),
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let text = origin.to_str().unwrap_or("").trim();
        let same = same_origin(text, target.as_ref());
        if !same {
            return refuse(
                Refusal::Origin,
                format!(
                    "refused: sent by a web page of another origin (Origin: {}); state-changing \
                     admin requests are accepted only from the admin listener's own origin",
                    if text.is_empty() {
                        "(unreadable)"
                    } else {
                        text
                    }
                ),
            );
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or(""));
    if body == Body::Form {
        return match content_type {
            Some(ct) if media_type_is(ct, "application/x-www-form-urlencoded") => Ok(()),
            _ if !has_body => Ok(()),
            other => refuse(
                Refusal::ContentType,
                format!(
                    "refused: Content-Type \"{}\"; the console accepts its own forms only",
                    other.unwrap_or("(none)")
                ),
            ),
        };
    }
    match content_type {
        Some(ct) if !is_json(ct) => refuse(
            Refusal::ContentType,
            format!(
                "refused: Content-Type \"{ct}\"; admin requests with a body send \
                 Content-Type: application/json (curl: -H 'Content-Type: application/json')"
            ),
        ),
        None if has_body => refuse(
            Refusal::ContentType,
            "refused: a request body without Content-Type; send it as \
             Content-Type: application/json"
                .to_string(),
        ),
        _ => Ok(()),
    }
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(content_type: &str) -> bool {
    media_type_is(content_type, "application/json")
}

/// Whether a Content-Type names `media` (parameters ignored).
fn media_type_is(content_type: &str, media: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(media))
}

/// Whether an `Origin` value is the origin the request was sent to:
/// same host and same port (the scheme's default port when none is
/// written). `null` (sandboxed frames, `file:` pages, redirects) never is.
fn same_origin(origin: &str, target: Option<&(String, Option<u16>)>) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let Some((host, port)) = split_authority(authority) else {
        return false;
    };
    let Some((t_host, t_port)) = target else {
        return false;
    };
    host == *t_host && port.unwrap_or(default_port) == t_port.unwrap_or(default_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9900))
    }

    fn run(method: Method, headers: &[(&str, &str)], has_body: bool) -> Result<(), Refusal> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap_or(header::HOST),
                http::HeaderValue::from_str(v).unwrap_or(http::HeaderValue::from_static("")),
            );
        }
        let rules = HostRules {
            listen: Some(local()),
            allowed: vec!["gw1.example.net".into(), "proxy.example.net:8443".into()],
        };
        check(
            &rules,
            local(),
            &method,
            &Uri::from_static("/api/reload"),
            &h,
            (Body::Json, has_body),
        )
        .map_err(|r| r.reason)
    }

    #[test]
    fn cli_and_curl_requests_pass() {
        assert_eq!(
            run(Method::POST, &[("host", "127.0.0.1:9900")], false),
            Ok(())
        );
        assert_eq!(
            run(
                Method::POST,
                &[
                    ("host", "localhost:9900"),
                    ("content-type", "application/json; charset=utf-8")
                ],
                true
            ),
            Ok(())
        );
        assert_eq!(run(Method::POST, &[], false), Ok(()));
        assert_eq!(run(Method::GET, &[("host", "[::1]:9900")], false), Ok(()));
        assert_eq!(
            run(Method::GET, &[("host", "GW1.example.net.")], false),
            Ok(())
        );
        assert_eq!(
            run(Method::GET, &[("host", "proxy.example.net:8443")], false),
            Ok(())
        );
    }

    #[test]
    fn browser_contexts_are_refused() {
        let h = ("host", "127.0.0.1:9900");
        assert_eq!(
            run(Method::GET, &[("host", "evil.example:9900")], false),
            Err(Refusal::Host)
        );
        assert_eq!(
            run(Method::GET, &[("host", "proxy.example.net:9900")], false),
            Err(Refusal::Host)
        );
        assert_eq!(
            run(Method::POST, &[h, ("origin", "null")], false),
            Err(Refusal::Origin)
        );
        assert_eq!(
            run(
                Method::POST,
                &[h, ("origin", "http://localhost:3000")],
                false
            ),
            Err(Refusal::Origin)
        );
        assert_eq!(
            run(
                Method::POST,
                &[h, ("origin", "http://127.0.0.1:9900")],
                false
            ),
            Ok(())
        );
        assert_eq!(
            run(Method::POST, &[h, ("sec-fetch-site", "same-site")], false),
            Err(Refusal::FetchSite)
        );
        assert_eq!(
            run(Method::POST, &[h, ("sec-fetch-site", "same-origin")], false),
            Ok(())
        );
        assert_eq!(
            run(
                Method::POST,
                &[h, ("content-type", "text/plain;charset=UTF-8")],
                true
            ),
            Err(Refusal::ContentType)
        );
        assert_eq!(
            run(
                Method::POST,
                &[h, ("content-type", "application/x-www-form-urlencoded")],
                false
            ),
            Err(Refusal::ContentType)
        );
        assert_eq!(run(Method::POST, &[h], true), Err(Refusal::ContentType));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::HOST,
            http::HeaderValue::from_bytes(b"caf\xe9.example")
                .unwrap_or(http::HeaderValue::from_static("x")),
        );
        let rules = HostRules::default();
        let got = check(
            &rules,
            local(),
            &Method::GET,
            &Uri::from_static("/api/devices"),
            &headers,
            (Body::Json, false),
        );
        assert_eq!(got.map_err(|r| r.reason), Err(Refusal::Host));
    }
}
