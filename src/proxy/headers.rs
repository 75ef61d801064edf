//! Header rules between client and backend: hop-by-hop headers (RFC 9110
//! §7.6.1), identity headers a client must never be able to set, and the
//! headers certgate adds.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use base64::Engine as _;

use crate::identity::PeerIdentity;

/// `X-Client-Verify`: the outcome of client-certificate verification.
pub(crate) const X_CLIENT_VERIFY: HeaderName = HeaderName::from_static("x-client-verify");
/// `X-Client-Cert-Fingerprint`: lowercase hex SHA-256 of the cert DER.
pub(crate) const X_CLIENT_CERT_FINGERPRINT: HeaderName =
    HeaderName::from_static("x-client-cert-fingerprint");
/// `X-Client-Cert-Subject`: subject DN, RFC 4514.
pub(crate) const X_CLIENT_CERT_SUBJECT: HeaderName =
    HeaderName::from_static("x-client-cert-subject");
/// `X-Client-Cert-Serial`: serial number, uppercase hex.
pub(crate) const X_CLIENT_CERT_SERIAL: HeaderName = HeaderName::from_static("x-client-cert-serial");
/// `Client-Cert` (RFC 9440): the DER certificate as a byte sequence.
pub(crate) const CLIENT_CERT: HeaderName = HeaderName::from_static("client-cert");
/// `X-Forwarded-For`: the client's address.
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: `https` on TLS listeners.
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the host the client asked for.
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Header names (lowercase, `-` form) a backend could take as proof of
/// identity or origin. Removed from every request, compared with `_` read as
/// `-`, because many backends (CGI, PHP, IIS ARR) fold the two together.
const IDENTITY_EXACT: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-real-ip",
    "x-client-ip",
    "x-client-verify",
    "x-client-dn",
    "x-client-s-dn",
    "x-client-i-dn",
    "x-client-subject",
    "x-client-issuer",
    "x-client-serial",
    "x-client-fingerprint",
    "x-url-scheme",
    "forwarded",
    "front-end-https",
];

/// Prefixes of identity headers used by certgate and by other gateways
/// (nginx/HAProxy conventions, Envoy XFCC, Traefik, IIS ARR, AWS ALB mTLS).
const IDENTITY_PREFIXES: &[&str] = &[
    "x-client-cert",
    "client-cert",
    "x-forwarded-client-cert",
    "x-forwarded-tls-client-cert",
    "x-ssl",
    "ssl-client",
    "x-arr-clientcert",
    "x-arr-ssl",
    "x-amzn-mtls-",
    "x-tls-client",
];

/// Whether `a` starts with `prefix`, reading `_` in `a` as `-`. HeaderName
/// is already lowercase, so no case folding is needed.
fn starts_with_normalized(a: &str, prefix: &str) -> bool {
    a.len() >= prefix.len()
        && a.bytes()
            .zip(prefix.bytes())
            .all(|(x, p)| x == p || (x == b'_' && p == b'-'))
}

/// Whether a request header is one a client must not be able to send to the
/// backend because the backend could read it as identity.
pub fn is_identity_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    // Every listed name begins with one of these, so most headers (host,
    // accept, content-*, user-agent, cookie) are passed on their first
    // bytes instead of being compared with thirty names. A test holds the
    // lists to this.
    let candidate = match n.as_bytes().first() {
        Some(b'x' | b's' | b'f') => true,
        Some(b'c') => n.starts_with("client"),
        _ => false,
    };
    candidate
        && (IDENTITY_PREFIXES
            .iter()
            .any(|p| starts_with_normalized(n, p))
            || IDENTITY_EXACT
                .iter()
                .any(|e| n.len() == e.len() && starts_with_normalized(n, e)))
}

/// Whether `headers` ask for a protocol upgrade (HTTP/1.1 `Connection:
/// upgrade` plus an `Upgrade` header).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has_token(headers, "upgrade")
}

fn connection_has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): `Connection` and every
/// header it names, `Keep-Alive`, `Proxy-Connection`, `TE`,
/// `Transfer-Encoding` and `Upgrade`. With `keep_upgrade`, the upgrade
/// handshake (`Connection: upgrade` + `Upgrade`) is kept for the next hop.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One look at the names first: most messages carry none of these or
    // only `Connection`, and every removal hashes a name.
    let (mut connection, mut keep_alive, mut proxy_connection) = (false, false, false);
    let (mut te, mut transfer_encoding, mut upgrade) = (false, false, false);
    for name in headers.keys() {
        if *name == header::CONNECTION {
            connection = true;
        } else if *name == header::TRANSFER_ENCODING {
            transfer_encoding = true;
        } else if *name == header::TE {
            te = true;
        } else if *name == header::UPGRADE {
            upgrade = true;
        } else if *name == KEEP_ALIVE {
            keep_alive = true;
        } else if *name == PROXY_CONNECTION {
            proxy_connection = true;
        }
    }
    // A message framed by Transfer-Encoding was read by that framing, which
    // overrides any Content-Length (RFC 9112 §6.3); forwarding the length
    // as well would have the next hop cut the body short. A proxy must
    // remove it. (Requests with both never get here: they are refused.)
    if transfer_encoding {
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
    }
    if connection {
        // The headers the Connection tokens name that the message has;
        // tokens such as `close` or `keep-alive` usually name none.
        let mut named: Vec<HeaderName> = Vec::new();
        for token in headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
        {
            // A client may not use Connection to strip the headers that
            // frame or route the message.
            if token.eq_ignore_ascii_case("host")
                || token.eq_ignore_ascii_case("content-length")
                || (keep_upgrade && token.eq_ignore_ascii_case("upgrade"))
            {
                continue;
            }
            if let Some(n) = headers
                .keys()
                .find(|n| n.as_str().eq_ignore_ascii_case(token))
            {
                named.push(n.clone());
            }
        }
        for name in named {
            headers.remove(&name);
        }
        headers.remove(header::CONNECTION);
    }
    if keep_alive {
        headers.remove(KEEP_ALIVE);
    }
    if proxy_connection {
        headers.remove(PROXY_CONNECTION);
    }
    if te {
        headers.remove(header::TE);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// Removes every identity header a client sent, whatever its case or
/// `-`/`_` spelling.
pub(crate) fn strip_identity(headers: &mut HeaderMap) {
    // Collect first: HeaderMap cannot remove while iterating. The common
    // case (no such header) allocates nothing.
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if is_identity_header(name) {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(&name);
    }
}

/// What certgate knows about the client of one connection.
#[derive(Debug, Clone)]
pub struct ClientFacts {
    /// `X-Forwarded-For` value: the peer IP.
    pub forwarded_for: HeaderValue,
    /// `X-Forwarded-Proto` value.
    pub proto: HeaderValue,
    /// `X-Client-Verify` value.
    pub verify: HeaderValue,
    /// The verified certificate, if any.
    pub identity: Option<ClientIdentity>,
}

/// A verified client certificate's identity with its header values,
/// built once per connection so that requests only clone them.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// The identity.
    pub id: PeerIdentity,
    /// Its header values.
    pub headers: IdentityHeaders,
}

/// Header values derived from a client certificate.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    /// `X-Client-Cert-Fingerprint`.
    pub fingerprint: HeaderValue,
    /// `X-Client-Cert-Subject`.
    pub subject: HeaderValue,
    /// `X-Client-Cert-Serial`.
    pub serial: HeaderValue,
    /// `Client-Cert` (RFC 9440): `:base64(DER):`.
    pub client_cert: HeaderValue,
}

impl ClientIdentity {
    /// The identity and header values of a (verified) certificate; `None`
    /// only if the DER does not parse, which the verifier would have refused.
    pub fn from_der(der: &[u8]) -> Option<ClientIdentity> {
        let id = PeerIdentity::from_der(der)?;
        let client_cert = format!(
            ":{}:",
            base64::engine::general_purpose::STANDARD.encode(der)
        );
        let headers = IdentityHeaders {
            fingerprint: HeaderValue::from_str(&id.fingerprint).ok()?,
            subject: HeaderValue::from_str(&id.subject).ok()?,
            serial: HeaderValue::from_str(&id.serial).ok()?,
            client_cert: HeaderValue::from_str(&client_cert).ok()?,
        };
        Some(ClientIdentity { id, headers })
    }
}

/// Rewrites request headers for the backend: hop-by-hop and spoofable
/// identity headers out, certgate's own in.
pub fn prepare_request(
    headers: &mut HeaderMap,
    facts: &ClientFacts,
    host: Option<HeaderValue>,
    upgrade: bool,
) {
    strip_hop_by_hop(headers, upgrade);
    strip_identity(headers);
    // Room for the headers added below at once, instead of the map growing
    // (and rehashing) on the way.
    headers.reserve(9);
    headers.insert(X_FORWARDED_FOR, facts.forwarded_for.clone());
    headers.insert(X_FORWARDED_PROTO, facts.proto.clone());
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
    headers.insert(X_CLIENT_VERIFY, facts.verify.clone());
    if let Some(id) = &facts.identity {
        headers.insert(X_CLIENT_CERT_FINGERPRINT, id.headers.fingerprint.clone());
        headers.insert(X_CLIENT_CERT_SUBJECT, id.headers.subject.clone());
        headers.insert(X_CLIENT_CERT_SERIAL, id.headers.serial.clone());
        headers.insert(CLIENT_CERT, id.headers.client_cert.clone());
    }
}

/// Why a request's message framing is ambiguous, if it is: two parsers (ours
/// and the legacy backend's) could disagree on where the body ends, which is
/// how requests are smuggled (RFC 9112 §6.3). Such a request is refused with
/// 400 and the connection closed; it never reaches the backend.
pub fn ambiguous_framing(headers: &HeaderMap) -> Option<&'static str> {
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let first = codings.next();
    if lengths > 1 {
        return Some("several Content-Length headers");
    }
    match (lengths, first) {
        (1, Some(_)) => Some("both Content-Length and Transfer-Encoding"),
        (_, Some(te)) => {
            if codings.next().is_some() {
                return Some("several Transfer-Encoding headers");
            }
            let chunked_only = te
                .to_str()
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
            (!chunked_only).then_some("a transfer coding other than chunked")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> HeaderName {
        HeaderName::from_bytes(s.as_bytes()).unwrap_or(HeaderName::from_static("x-invalid"))
    }

    #[test]
    fn identity_headers_match_in_any_spelling() {
        for n in [
            "X-Client-Cert-Fingerprint",
            "x_client_cert_subject",
            "CLIENT-CERT",
            "Client-Cert-Chain",
            "X-Forwarded-Client-Cert",
            "x-ssl-client-verify",
            "X_SSL_CLIENT_S_DN",
            "X-ARR-ClientCert",
            "X-Forwarded-For",
            "x_forwarded_for",
            "X-Client-Verify",
            "Forwarded",
        ] {
            assert!(is_identity_header(&name(n)), "{n} should be stripped");
        }
        for n in [
            "x-client-version",
            "content-type",
            "x-forwarded",
            "authorization",
        ] {
            assert!(!is_identity_header(&name(n)), "{n} should pass");
        }
    }

    #[test]
    fn every_listed_identity_name_passes_the_first_byte_filter() {
        for n in IDENTITY_EXACT.iter().chain(IDENTITY_PREFIXES) {
            assert!(
                is_identity_header(&name(n)),
                "{n} is listed but not matched"
            );
            assert!(
                is_identity_header(&name(&n.replace('-', "_"))),
                "{n} with _ is listed but not matched"
            );
        }
    }

    #[test]
    fn hop_by_hop_headers_go_and_end_to_end_ones_stay() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, X-Trace, close"),
        );
        h.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        h.insert(PROXY_CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert(name("x-trace"), HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert(name("x-kept"), HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        assert_eq!(left, ["content-type", "x-kept"]);

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
    }

    #[test]
    fn connection_named_headers_are_removed_but_not_host() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-secret, host, keep-alive"),
        );
        h.insert(name("x-secret"), HeaderValue::from_static("1"));
        h.insert(header::HOST, HeaderValue::from_static("example"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h, false);
        assert!(!h.contains_key("x-secret"));
        assert!(!h.contains_key(header::TE));
        assert!(!h.contains_key(header::CONNECTION));
        assert!(h.contains_key(header::HOST));
    }
}
