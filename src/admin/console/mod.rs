//! The web console on the admin listener: sign in, the overview, devices
//! (approve, block, unblock, forget, label), readiness as a chart,
//! certificates and CRLs, the audit log.
//!
//! Server-rendered HTML (maud: markup written in Rust, escaped by
//! construction and compiled in, so the binary carries the whole console
//! and a page cannot drift from the data it shows), one stylesheet and one
//! small script, both compiled in and served from here. Every page works
//! without the script; it adds "select all" and keeps the device list
//! current. No request ever leaves for another origin (CSP
//! `default-src 'self'`, no inline script or style).
//!
//! Access follows the admin API: with `[admin] token_file`, an admin signs
//! in with a token and gets a session cookie (`HttpOnly`,
//! `SameSite=Strict`, eight hours); the token's name is who the audit log
//! records. Without a token file the listener is loopback-only and
//! everyone is `local`. Every request must name this listener in `Host`
//! (DNS rebinding); every form post must come from this origin (`Origin`,
//! `Sec-Fetch-Site`) and carry the session's anti-forgery token.
//!
//! # Layout
//!
//! - `../sessions` (admin::sessions) — sign-in sessions and anti-forgery tokens.
//! - `layout` — the page shell, answers and formatting helpers.
//! - `form` — reading a posted form.
//! - `overview`, `devices`, `device`, `readiness`, `certificates`,
//!   `audit` — the pages; `chart` — the readiness chart (SVG).
//! - `assets/` — the stylesheet and the script.

mod audit;
mod certificates;
mod chart;
mod device;
mod devices;
mod form;
mod layout;
mod login;
mod overview;
mod readiness;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use super::context::{AdminContext, Conn};
use super::guard;
use super::sessions::{self as session, Caller};
use layout::error_page;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
const ICON: &str = include_str!("assets/icon.svg");

fn asset(content_type: &'static str, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    layout::secure_headers(&mut r);
    // Compiled in: the same for the life of this binary.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    r
}

/// Serves a console request (every path outside `/api/`, `/metrics`,
/// `/healthz` and `/readyz`).
pub(super) async fn handle(
    ctx: &AdminContext,
    conn: Conn,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let access = ctx.access.load_full();
    if let Err(refused) = guard::screen(
        &ctx.metrics,
        "console",
        &access.hosts,
        conn.local,
        &req,
        guard::Body::Form,
    ) {
        return error_page(StatusCode::FORBIDDEN, "Refused", &refused.message, None);
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/assets/console.css") => return asset("text/css; charset=utf-8", CSS),
        (&Method::GET, "/assets/console.js") => {
            return asset("text/javascript; charset=utf-8", JS);
        }
        (&Method::GET, "/assets/icon.svg" | "/favicon.ico") => {
            return asset("image/svg+xml", ICON);
        }
        _ => {}
    }
    let cookie = session::cookie(req.headers());
    let caller: Option<Caller> = if access.tokens.is_empty() {
        Some(ctx.sessions.local())
    } else {
        cookie.as_deref().and_then(|id| {
            ctx.sessions
                .find(id, |digest| access.tokens.named(digest).map(str::to_string))
        })
    };
    match (&method, path.as_str()) {
        (&Method::GET, "/login") => return login::form(caller.as_ref(), None),
        (&Method::POST, "/login") => {
            return login::sign_in(ctx, &access.tokens, conn.secure, req).await;
        }
        _ => {}
    }
    let Some(caller) = caller else {
        return if method == Method::GET || method == Method::HEAD {
            layout::see_other("/login")
        } else {
            error_page(
                StatusCode::FORBIDDEN,
                "Signed out",
                "Your session has ended; sign in again, then repeat the action.",
                None,
            )
        };
    };
    if method == Method::POST {
        let form = match form::read(req).await {
            Ok(f) => f,
            Err(r) => return r,
        };
        if !session::csrf_ok(&caller, form.one("csrf")) {
            ctx.metrics.admin_refused("csrf");
            return error_page(
                StatusCode::FORBIDDEN,
                "Refused",
                "This form is out of date or was not sent from this console; reload the page and try again.",
                Some(&caller),
            );
        }
        return match path.as_str() {
            "/logout" => login::sign_out(ctx, conn.secure, cookie.as_deref()),
            "/devices/confirm" => devices::confirm(ctx, &caller, &form).await,
            "/devices/apply" => devices::apply(ctx, &caller, &form).await,
            p => match p
                .strip_prefix("/devices/")
                .and_then(|r| r.strip_suffix("/label"))
            {
                Some(id) => device::label(ctx, &caller, id, &form).await,
                None => error_page(
                    StatusCode::NOT_FOUND,
                    "Not found",
                    "No such action.",
                    Some(&caller),
                ),
            },
        };
    }
    if method != Method::GET && method != Method::HEAD {
        return error_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Not allowed",
            "The console answers GET and its own forms only.",
            Some(&caller),
        );
    }
    let query = form::Form::query(req.uri());
    match path.as_str() {
        "/" => overview::page(ctx, &caller).await,
        "/devices" => devices::page(ctx, &caller, &query).await,
        "/readiness" => readiness::page(ctx, &caller, &query).await,
        "/certificates" => certificates::page(ctx, &caller),
        "/audit" => audit::page(ctx, &caller, &query).await,
        p => match p.strip_prefix("/devices/") {
            Some(id) if !id.is_empty() && !id.contains('/') => {
                device::page(ctx, &caller, id, &query).await
            }
            _ => error_page(
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no such page.",
                Some(&caller),
            ),
        },
    }
}
