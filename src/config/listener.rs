//! One `[[listener]]`: its name and address, its limits, its TLS and
//! client-auth sections, and the CIDRs of a plain-HTTP listener.

use std::collections::HashSet;
use std::path::Path;

use crate::error::ConfigError;

use super::defaults::{
    DEFAULT_CRL_REFRESH, DEFAULT_OCSP_TIMEOUT, DEFAULT_RENEWAL_GRACE, DEFAULT_SUPERSEDE_GRACE,
    MIN_HEADER_BYTES,
};
use super::raw::{RawClientAuth, RawListener, RawTls};
use super::values::{check_crl_url, duration_or, invalid, parse_addr, resolve, valid_name};
use super::{
    AllowRules, CertificatePaths, ClientAuthMode, ClientAuthSettings, CrlStale,
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_REQUEST_HEADER_BYTES, DEFAULT_MAX_REQUEST_HEADERS, DEFAULT_MAX_URI_BYTES,
    DEFAULT_REQUEST_HEADER_TIMEOUT, DEFAULT_SESSION_CACHE, ListenerLimits, ListenerSettings,
    OcspMode, ProxySettings, ProxyVersion, RenewalIdentity, RenewalSettings, TlsSettings,
    TlsVersion,
};

pub(super) fn listener_limits(
    l: &RawListener,
    ctx: &str,
    errors: &mut Vec<ConfigError>,
) -> ListenerLimits {
    let max_request_header_bytes = l
        .max_request_header_bytes
        .unwrap_or(DEFAULT_MAX_REQUEST_HEADER_BYTES);
    if max_request_header_bytes < MIN_HEADER_BYTES {
        errors.push(invalid(
            format!("{ctx}: max_request_header_bytes"),
            format!("{max_request_header_bytes} is below the minimum of {MIN_HEADER_BYTES}"),
        ));
    }
    let max_connections = l.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        errors.push(invalid(
            format!("{ctx}: max_connections"),
            "0 would refuse every client; give a positive number",
        ));
    }
    let max_request_headers = l.max_request_headers.unwrap_or(DEFAULT_MAX_REQUEST_HEADERS);
    if max_request_headers == 0 {
        errors.push(invalid(
            format!("{ctx}: max_request_headers"),
            "0 would refuse every request; give a positive number",
        ));
    }
    ListenerLimits {
        handshake_timeout: duration_or(
            l.handshake_timeout.as_deref(),
            DEFAULT_HANDSHAKE_TIMEOUT,
            &format!("{ctx}: handshake_timeout"),
            errors,
        ),
        request_header_timeout: duration_or(
            l.request_header_timeout.as_deref(),
            DEFAULT_REQUEST_HEADER_TIMEOUT,
            &format!("{ctx}: request_header_timeout"),
            errors,
        ),
        idle_timeout: duration_or(
            l.idle_timeout.as_deref(),
            DEFAULT_IDLE_TIMEOUT,
            &format!("{ctx}: idle_timeout"),
            errors,
        ),
        max_request_header_bytes: max_request_header_bytes.max(MIN_HEADER_BYTES),
        max_request_headers: max_request_headers.max(1),
        max_uri_bytes: match l.max_uri_bytes {
            Some(0) => {
                errors.push(invalid(
                    format!("{ctx}: max_uri_bytes"),
                    "0 would refuse every request; give a positive number (default 8192)",
                ));
                DEFAULT_MAX_URI_BYTES
            }
            Some(n) => n,
            None => DEFAULT_MAX_URI_BYTES,
        },
        max_request_body_bytes: l.max_request_body_bytes.unwrap_or(0),
        max_connections: max_connections.max(1),
        max_connections_per_source: l.max_connections_per_source.unwrap_or(0),
        handshake_rate_per_source: l.handshake_rate_per_source.unwrap_or(0),
    }
}

pub(super) fn validate_tls(
    t: RawTls,
    client_auth: Option<RawClientAuth>,
    ctx: &str,
    base: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<TlsSettings> {
    let before = errors.len();
    let mut versions = Vec::new();
    for v in t.versions.unwrap_or_else(|| vec!["1.2".into()]) {
        match v.as_str() {
            "1.2" => versions.push(TlsVersion::V1_2),
            "1.3" => versions.push(TlsVersion::V1_3),
            "1.0" | "1.1" | "1" => errors.push(invalid(
                format!("{ctx}: tls.versions"),
                format!(
                    "TLS {v} is not allowed: it is broken and deprecated (RFC 8996); \
                     use [\"1.2\"] or [\"1.2\", \"1.3\"]"
                ),
            )),
            other => errors.push(invalid(
                format!("{ctx}: tls.versions"),
                format!("\"{other}\" is not a TLS version; use \"1.2\" and/or \"1.3\""),
            )),
        }
    }
    versions.sort();
    versions.dedup();
    if versions.is_empty() && errors.len() == before {
        errors.push(invalid(
            format!("{ctx}: tls.versions"),
            "empty; use [\"1.2\"] or [\"1.2\", \"1.3\"]",
        ));
    }
    if t.certificate.is_empty() {
        errors.push(invalid(
            format!("{ctx}: tls.certificate"),
            "no [[listener.tls.certificate]] given; add one with cert and key",
        ));
    }
    let certificates = t
        .certificate
        .into_iter()
        .map(|c| CertificatePaths {
            cert: resolve(base, c.cert),
            key: resolve(base, c.key),
        })
        .collect();

    let client_auth = match client_auth {
        None => {
            errors.push(invalid(
                format!("{ctx}: client_auth"),
                "missing [listener.client_auth]; add mode = \"required\" with ca = [...] to \
                 admit only devices with valid certificates, or mode = \"off\" to accept \
                 any client",
            ));
            None
        }
        Some(ca) => {
            let mode = match ca.mode.as_str() {
                "required" => Some(ClientAuthMode::Required),
                "off" => Some(ClientAuthMode::Off),
                "observe" => Some(ClientAuthMode::Observe),
                other => {
                    errors.push(invalid(
                        format!("{ctx}: client_auth.mode"),
                        format!(
                            "\"{other}\" is not a mode; use \"required\", \"observe\" or \"off\""
                        ),
                    ));
                    None
                }
            };
            if matches!(
                mode,
                Some(ClientAuthMode::Required | ClientAuthMode::Observe)
            ) && ca.ca.is_empty()
            {
                errors.push(invalid(
                    format!("{ctx}: client_auth.ca"),
                    format!(
                        "mode = \"{}\" needs at least one CA bundle in ca = [...]",
                        ca.mode
                    ),
                ));
            }
            if mode == Some(ClientAuthMode::Off) && (!ca.ca.is_empty() || !ca.crl.is_empty()) {
                errors.push(invalid(
                    format!("{ctx}: client_auth"),
                    "mode = \"off\" ignores ca and crl; remove them or set mode = \"required\"",
                ));
            }
            let crl_stale = match ca.crl_stale.as_deref() {
                None | Some("fail_closed") => CrlStale::FailClosed,
                Some("fail_open") => CrlStale::FailOpen,
                Some(other) => {
                    errors.push(invalid(
                        format!("{ctx}: client_auth.crl_stale"),
                        format!("\"{other}\": use \"fail_closed\" or \"fail_open\""),
                    ));
                    CrlStale::FailClosed
                }
            };
            let renewal = renewal_rule(&ca, ctx, errors);
            let allow = AllowRules {
                cn: ca.allow_cn,
                ou: ca.allow_ou,
                dns: ca.allow_dns,
                uri: ca.allow_uri,
            };
            if mode == Some(ClientAuthMode::Off) && !allow.is_empty() {
                errors.push(invalid(
                    format!("{ctx}: client_auth"),
                    "allow_* rules need client certificates; set mode = \"required\"",
                ));
            }
            for (i, url) in ca.crl_urls.iter().enumerate() {
                if let Err(why) = check_crl_url(url) {
                    errors.push(invalid(format!("{ctx}: client_auth.crl_urls[{i}]"), why));
                }
            }
            let crl_from_certificates = ca.crl_from_certificates.unwrap_or(false);
            if mode == Some(ClientAuthMode::Off)
                && (!ca.crl_urls.is_empty() || crl_from_certificates)
            {
                errors.push(invalid(
                    format!("{ctx}: client_auth"),
                    "mode = \"off\" checks no client certificates, so it fetches no CRLs; \
                     remove crl_urls / crl_from_certificates or set mode = \"required\"",
                ));
            }
            let crl_refresh = duration_or(
                ca.crl_refresh.as_deref(),
                DEFAULT_CRL_REFRESH,
                &format!("{ctx}: client_auth.crl_refresh"),
                errors,
            );
            if crl_refresh < std::time::Duration::from_secs(1) {
                errors.push(invalid(
                    format!("{ctx}: client_auth.crl_refresh"),
                    "must be at least 1s (the default, 1h, suits CAs that publish daily)",
                ));
            }
            let ocsp = match ca.ocsp.as_deref() {
                None | Some("off") => OcspMode::Off,
                Some("prefer") => OcspMode::Prefer,
                Some("require") => OcspMode::Require,
                Some(other) => {
                    errors.push(invalid(
                        format!("{ctx}: client_auth.ocsp"),
                        format!("\"{other}\": use \"off\", \"prefer\" or \"require\""),
                    ));
                    OcspMode::Off
                }
            };
            if let Some(url) = &ca.ocsp_url
                && let Err(why) = check_crl_url(url)
            {
                errors.push(invalid(format!("{ctx}: client_auth.ocsp_url"), why));
            }
            if ocsp != OcspMode::Off && mode == Some(ClientAuthMode::Off) {
                errors.push(invalid(
                    format!("{ctx}: client_auth.ocsp"),
                    "mode = \"off\" checks no client certificates; remove ocsp or set mode = \"required\"",
                ));
            }
            let ocsp_timeout = duration_or(
                ca.ocsp_timeout.as_deref(),
                DEFAULT_OCSP_TIMEOUT,
                &format!("{ctx}: client_auth.ocsp_timeout"),
                errors,
            );
            mode.map(|mode| ClientAuthSettings {
                mode,
                ca: ca.ca.into_iter().map(|p| resolve(base, p)).collect(),
                crl: ca.crl.into_iter().map(|p| resolve(base, p)).collect(),
                crl_stale,
                require_crl: ca.require_crl.unwrap_or(false),
                crl_urls: ca.crl_urls,
                crl_from_certificates,
                crl_refresh,
                crl_cache_dir: ca.crl_cache_dir.map(|p| resolve(base, p)),
                ocsp,
                ocsp_url: ca.ocsp_url,
                ocsp_timeout,
                allow,
                renewal,
            })
        }
    };

    if errors.len() != before {
        return None;
    }
    Some(TlsSettings {
        versions,
        certificates,
        session_cache: t.session_cache.unwrap_or(DEFAULT_SESSION_CACHE),
        session_tickets: t.session_tickets.unwrap_or(true),
        client_auth: client_auth?,
    })
}

/// An address or CIDR block; a bare address is a /32 (/128).
pub(super) fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
}

/// What the listeners validated so far claimed: names and fixed addresses.
#[derive(Default)]
pub(super) struct Seen {
    names: HashSet<String>,
    addrs: HashSet<std::net::SocketAddr>,
}

/// One `[[listener]]`, the `i`-th. `seen` collects the names and fixed
/// addresses of the listeners before it (a duplicate is an error);
/// `upstreams` are the upstream names defined. `None` when the listener is
/// too broken to describe (its errors are in `errors`).
pub(super) fn validate_listener(
    i: usize,
    l: RawListener,
    seen: &mut Seen,
    upstream_names: &HashSet<String>,
    base: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<ListenerSettings> {
    let ctx = format!("listener \"{}\"", l.name);
    if !valid_name(&l.name) {
        errors.push(invalid(
            format!("listener[{i}].name"),
            format!(
                "\"{}\" is not a valid name; use letters, digits, '.', '_' or '-'",
                l.name
            ),
        ));
    }
    if !seen.names.insert(l.name.clone()) {
        errors.push(invalid(
            &ctx,
            "duplicate listener name; each [[listener]] needs its own name",
        ));
    }
    let listen = match parse_addr(&l.listen) {
        Ok(a) => {
            if a.port() != 0 && !seen.addrs.insert(a) {
                errors.push(invalid(
                    format!("{ctx}: listen"),
                    format!("{a} is already used by another listener"),
                ));
            }
            Some(a)
        }
        Err(m) => {
            errors.push(invalid(format!("{ctx}: listen"), m));
            None
        }
    };
    if !upstream_names.contains(&l.upstream) {
        errors.push(invalid(
            format!("{ctx}: upstream"),
            format!(
                "no [[upstream]] named \"{}\"; define it or fix the name",
                l.upstream
            ),
        ));
    }
    let limits = listener_limits(&l, &ctx, errors);
    let mut allow_from = Vec::new();
    for (j, c) in l.allow_from.iter().flatten().enumerate() {
        match parse_cidr(c) {
            Some(n) => allow_from.push(n),
            None => errors.push(invalid(
                format!("{ctx}: allow_from[{j}]"),
                format!("\"{c}\" is not an address or CIDR block (e.g. \"10.20.0.0/16\")"),
            )),
        }
    }
    let tls = match l.tls {
        Some(t) => {
            if l.allow_from.is_some() {
                errors.push(invalid(
                    format!("{ctx}: allow_from"),
                    "allow_from is for plain-HTTP listeners (no [listener.tls]); TLS \
                     listeners admit devices by certificate",
                ));
            }
            validate_tls(t, l.client_auth, &ctx, base, errors).map(Some)
        }
        None => {
            if l.client_auth.is_some() {
                errors.push(invalid(
                    format!("{ctx}: client_auth"),
                    "a plain-HTTP listener (no [listener.tls]) cannot check client \
                     certificates; remove [listener.client_auth] or add [listener.tls]",
                ));
            }
            if l.allow_from.as_ref().is_none_or(|a| a.is_empty()) {
                errors.push(invalid(
                    format!("{ctx}: allow_from"),
                    "a listener without [listener.tls] is a plain-HTTP listener for legacy \
                     devices and must list the sources it admits: allow_from = \
                     [\"10.20.0.0/16\", ...]; or add a [listener.tls] table",
                ));
                None
            } else {
                Some(None)
            }
        }
    };
    let (Some(listen), Some(tls)) = (listen, tls) else {
        return None;
    };
    let proxy = proxy_settings(
        l.proxy_protocol.as_deref(),
        l.proxy_from.as_deref(),
        &ctx,
        errors,
    );
    Some(ListenerSettings {
        name: l.name,
        listen,
        upstream: l.upstream,
        tls,
        allow_from,
        limits,
        proxy,
    })
}

/// `proxy_protocol` and `proxy_from`: both or neither, so a listener never
/// trusts a header from anyone, nor takes a balancer's address for every
/// client.
fn proxy_settings(
    version: Option<&str>,
    from: Option<&[String]>,
    ctx: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<ProxySettings> {
    let Some(version) = version else {
        if from.is_some() {
            errors.push(invalid(
                format!("{ctx}: proxy_from"),
                "proxy_from names the balancers that send a PROXY header: set \
                 proxy_protocol = \"v2\" (or \"v1\") too, or remove proxy_from",
            ));
        }
        return None;
    };
    let version = match version {
        "v2" => ProxyVersion::V2,
        "v1" => ProxyVersion::V1,
        other => {
            errors.push(invalid(
                format!("{ctx}: proxy_protocol"),
                format!(
                    "\"{other}\" is not a PROXY protocol version; use \"v2\" (HAProxy send-proxy-v2) \
                     or \"v1\" (send-proxy)"
                ),
            ));
            return None;
        }
    };
    let mut nets = Vec::new();
    for (j, c) in from.unwrap_or_default().iter().enumerate() {
        match parse_cidr(c) {
            Some(n) => nets.push(n),
            None => errors.push(invalid(
                format!("{ctx}: proxy_from[{j}]"),
                format!("\"{c}\" is not an address or CIDR block (e.g. \"10.0.0.5/32\")"),
            )),
        }
    }
    if from.is_none_or(<[String]>::is_empty) {
        errors.push(invalid(
            format!("{ctx}: proxy_from"),
            "with proxy_protocol, list the balancers' addresses (proxy_from = [\"10.0.0.5\"]): \
             only they may send a PROXY header, and every other connection is closed",
        ));
        return None;
    }
    Some(ProxySettings {
        version,
        from: nets,
    })
}

/// `renewal`, `renewal_identity`, `renewal_grace`, `supersede_grace` of
/// `[listener.client_auth]`.
fn renewal_rule(ca: &RawClientAuth, ctx: &str, errors: &mut Vec<ConfigError>) -> RenewalSettings {
    let key = |k: &str| format!("{ctx}: client_auth.{k}");
    let identity = match (ca.renewal.as_deref(), ca.renewal_identity.as_deref()) {
        (None | Some("same_subject"), None) => Some(RenewalIdentity::Subject),
        (None | Some("same_subject"), Some(id)) => match id {
            "subject" => Some(RenewalIdentity::Subject),
            "cn" => Some(RenewalIdentity::Cn),
            "san_dns" => Some(RenewalIdentity::SanDns),
            "san_uri" => Some(RenewalIdentity::SanUri),
            oid if is_oid(oid) => Some(RenewalIdentity::Oid(oid.to_string())),
            other => {
                errors.push(invalid(
                    key("renewal_identity"),
                    format!(
                        "\"{other}\" is not an identity; use \"cn\", \"san_dns\", \"san_uri\", \
                         \"subject\" or the dotted OID of a subject attribute (e.g. \"2.5.4.5\" \
                         for serialNumber)"
                    ),
                ));
                None
            }
        },
        (Some("same_key"), None) => Some(RenewalIdentity::Key),
        (Some("off"), None) => None,
        (Some(r @ ("same_key" | "off")), Some(_)) => {
            errors.push(invalid(
                key("renewal_identity"),
                format!(
                    "renewal_identity applies to renewal = \"same_subject\"; with renewal = \"{r}\" \
                     remove it"
                ),
            ));
            None
        }
        (Some(other), _) => {
            errors.push(invalid(
                key("renewal"),
                format!(
                    "\"{other}\" is not a renewal rule; use \"same_subject\" (the default), \
                     \"same_key\" or \"off\""
                ),
            ));
            None
        }
    };
    let grace = duration_or(
        ca.renewal_grace.as_deref(),
        DEFAULT_RENEWAL_GRACE,
        &key("renewal_grace"),
        errors,
    );
    let supersede_grace = duration_or(
        ca.supersede_grace.as_deref(),
        DEFAULT_SUPERSEDE_GRACE,
        &key("supersede_grace"),
        errors,
    );
    RenewalSettings {
        identity,
        grace,
        supersede_grace,
    }
}

/// A dotted object identifier: at least two arcs of digits.
fn is_oid(s: &str) -> bool {
    s.split('.').count() >= 2
        && s.split('.')
            .all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()))
}
