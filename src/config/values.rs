//! Small parsers for values the config holds: addresses, durations,
//! names, paths, allowed host names; and the error for a bad value.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::error::ConfigError;

use super::ConfigPath;

pub(super) fn invalid(context: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        context: context.into(),
        message: message.into(),
    }
}

/// An `[admin] allowed_hosts` entry as it is compared with a `Host`
/// header: lowercase, without a trailing dot; `name` or `name:port`.
pub(super) fn normalize_allowed_host(h: &str) -> Result<String, String> {
    let t = h.trim().to_ascii_lowercase();
    let bad = t.is_empty()
        || t.contains("://")
        || t.contains('/')
        || t.contains('@')
        || t.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad {
        return Err(format!(
            "\"{h}\" is not a host name; give the name admins use in the URL, e.g. \"gw1.example.net\" or \"gw1.example.net:9900\" (no scheme, no path)"
        ));
    }
    Ok(match t.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') || name.ends_with(']') => {
            format!("{}:{port}", name.trim_end_matches('.'))
        }
        _ => t.trim_end_matches('.').to_string(),
    })
}

pub(super) fn resolve(base: &Path, written: String) -> ConfigPath {
    let p = Path::new(&written);
    let resolved = if p.is_absolute() {
        p.to_path_buf()
    } else {
        join_relative(base, p)
    };
    ConfigPath { written, resolved }
}

/// `base` joined with the relative path `p`, with `.` dropped and the
/// `..` that lead `p` applied to `base` (`../data/x` from `/etc/certgate`
/// is `/etc/data/x`). A `..` after a name is kept: that name may be a
/// symbolic link, and only the kernel knows where its parent is.
fn join_relative(base: &Path, p: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = base.to_path_buf();
    let mut leading = true;
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if leading => {
                if !out.pop() || out.as_os_str().is_empty() {
                    out.push("..");
                }
            }
            other => {
                leading = false;
                out.push(other);
            }
        }
    }
    out
}

pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(super) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>().map_err(|_| {
        format!(
            "\"{s}\" is not an IP address and port; write e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""
        )
    })
}

/// Checks a CRL address: `http://` or `https://`, a host, no credentials.
pub(super) fn check_crl_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| {
        format!("\"{url}\" is not a URL ({e}); write e.g. \"http://pki.example/ca.crl\"")
    })?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!(
                "\"{url}\" is not an http:// or https:// URL (CRLs are fetched over HTTP; \
                 for an ldap:// or file path, copy the CRL to a file and list it in crl = [...])"
            ));
        }
    }
    match uri.authority() {
        None => Err(format!("\"{url}\" has no host")),
        Some(a) if a.as_str().contains('@') => Err(format!(
            "\"{url}\" has credentials in it; CRLs are public, remove the user:password@ part"
        )),
        Some(_) => Ok(()),
    }
}

pub(super) fn duration_or(
    value: Option<&str>,
    default: Duration,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    match value {
        None => default,
        Some(v) => match parse_duration(v) {
            Ok(d) => d,
            Err(m) => {
                errors.push(invalid(key, m));
                default
            }
        },
    }
}

/// Parses durations such as `"250ms"`, `"10s"`, `"5m"` or `"1h"`.
///
/// Written here rather than pulled from a crate: the grammar we accept is
/// one number and one unit, and a precise message matters more than range.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("\"{s}\" has no unit; write e.g. \"10s\", \"500ms\" or \"2m\""))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("\"{s}\" is not a duration; write e.g. \"10s\", \"500ms\" or \"2m\"")
    })?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        "w" => Duration::from_secs(n.saturating_mul(7 * 86_400)),
        _ => {
            return Err(format!(
                "\"{s}\": unknown unit \"{unit}\"; use ms, s, m, h, d or w"
            ));
        }
    };
    if d.is_zero() {
        return Err(format!("\"{s}\" is zero; give a positive duration"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_lose_their_leading_dots() {
        let r = |base: &str, p: &str| resolve(Path::new(base), p.into()).resolved;
        assert_eq!(
            r("/etc/certgate", "../data/x.redb"),
            Path::new("/etc/data/x.redb")
        );
        assert_eq!(
            r("/etc/certgate", "./certs/a.pem"),
            Path::new("/etc/certgate/certs/a.pem")
        );
        assert_eq!(r("/etc/certgate", "/var/lib/x"), Path::new("/var/lib/x"));
        // After a name, `..` stays for the kernel to resolve.
        assert_eq!(
            r("/etc/certgate", "certs/../a.pem"),
            Path::new("/etc/certgate/certs/../a.pem")
        );
        assert_eq!(r(".", "../a"), Path::new("../a"));
    }
}
