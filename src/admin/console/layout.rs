//! The page shell every console page shares (navigation, who is signed
//! in, sign-out), the answers pages give, and small formatting helpers.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use maud::{DOCTYPE, Markup, html};

use super::super::sessions::Caller;

/// The pages in the navigation: (path, label).
const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/devices", "Devices"),
    ("/readiness", "Readiness"),
    ("/certificates", "Certificates"),
    ("/audit", "Audit log"),
];

/// Content-Security-Policy of every console answer: nothing from another
/// origin, no inline script or style, no framing, forms post only here.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'; object-src 'none'";

/// The headers every console answer carries.
pub(crate) fn secure_headers(r: &mut Response<Full<Bytes>>) {
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// An HTML answer.
pub(crate) fn html_response(status: StatusCode, body: Markup) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.into_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(&mut r);
    r
}

/// `303 See Other` to `to` (after a form post: reloading the page does not
/// repeat the action).
pub(crate) fn see_other(to: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    secure_headers(&mut r);
    r
}

/// A whole page: `current` is the navigation entry it belongs to.
pub(crate) fn page(title: &str, current: &str, caller: &Caller, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · certgate" }
                link rel="stylesheet" href="/assets/console.css";
                link rel="icon" href="/assets/icon.svg" type="image/svg+xml";
                script src="/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    a.brand href="/" { "certgate" }
                    nav aria-label="Console" {
                        ul {
                            @for (path, label) in NAV {
                                li {
                                    @if *path == current {
                                        a href=(path) aria-current="page" { (label) }
                                    } @else {
                                        a href=(path) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    div.who {
                        span { "Signed in as " strong { (caller.who) } }
                        @if caller.signed_in {
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(caller.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page that says what went wrong.
pub(crate) fn error_page(
    status: StatusCode,
    title: &str,
    message: &str,
    caller: Option<&Caller>,
) -> Response<Full<Bytes>> {
    let body = html! { p.notice.error role="alert" { (message) } p { a href="/" { "Back to the overview" } } };
    let markup = match caller {
        Some(c) => page(title, "", c, body),
        None => html! {
            (DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; title { (title) " · certgate" } link rel="stylesheet" href="/assets/console.css"; }
                body { main #main { h1 { (title) } (body) } }
            }
        },
    };
    html_response(status, markup)
}

/// A Unix time as `YYYY-MM-DD HH:MM:SSZ`, or "-".
pub(crate) fn when(t: Option<i64>) -> String {
    t.filter(|&t| t > 0)
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .map(|d| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
                d.year(),
                u8::from(d.month()),
                d.day(),
                d.hour(),
                d.minute(),
                d.second()
            )
        })
        .unwrap_or_else(|| "-".into())
}

/// A Unix time as a date, or "-".
pub(crate) fn date(t: i64) -> String {
    let full = when(Some(t));
    full.split(' ').next().unwrap_or("-").to_string()
}

/// The CN of an RFC 4514 subject, else the whole subject.
pub(crate) fn common_name(subject: &str) -> &str {
    subject
        .split(',')
        .find_map(|rdn| rdn.trim().strip_prefix("CN="))
        .unwrap_or(subject)
}

/// A query string from pairs, percent-encoded.
pub(crate) fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_format_what_pages_show() {
        assert_eq!(when(Some(0)), "-");
        assert_eq!(when(Some(1_800_000_000)), "2027-01-15 08:00:00Z");
        assert_eq!(date(1_800_000_000), "2027-01-15");
        assert_eq!(common_name("CN=agent-7,O=Fleet"), "agent-7");
        assert_eq!(common_name("O=Fleet"), "O=Fleet");
        assert_eq!(query_string(&[("q", "a b&c"), ("status", "")]), "q=a+b%26c");
    }

    #[test]
    fn text_is_escaped() {
        let c = Caller {
            who: "<script>".into(),
            csrf: "t".into(),
            signed_in: true,
        };
        let p = page("x", "/", &c, html! {}).into_string();
        assert!(p.contains("&lt;script&gt;"), "{p}");
        assert!(!p.contains("<script>alert"));
    }
}
