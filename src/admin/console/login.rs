//! Signing in with an admin token, and out.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use maud::{DOCTYPE, html};
use tracing::info;

use super::super::context::AdminContext;
use super::super::sessions::{self as session, Caller};
use super::super::tokens::Tokens;
use super::form;
use super::layout::{html_response, see_other};

/// The sign-in page; `failed` says why the last attempt was refused.
pub(super) fn form(caller: Option<&Caller>, failed: Option<&str>) -> Response<Full<Bytes>> {
    if caller.is_some() {
        return see_other("/");
    }
    let status = if failed.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    html_response(
        status,
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { "Sign in · certgate" }
                    link rel="stylesheet" href="/assets/console.css";
                }
                body {
                    main #main .login {
                        h1 { "certgate console" }
                        @if let Some(why) = failed {
                            p.notice.error role="alert" { (why) }
                        }
                        form method="post" action="/login" {
                            label for="token" { "Admin token (a line of the admin token_file)" }
                            input #token type="password" name="token" autocomplete="current-password" required autofocus;
                            p { button.primary type="submit" { "Sign in" } }
                        }
                        p.muted { "Tokens are the name:token lines of [admin] token_file; the name is recorded in the audit log." }
                    }
                }
            }
        },
    )
}

/// `POST /login`: a token of the token file opens a session.
pub(super) async fn sign_in(
    ctx: &AdminContext,
    tokens: &Tokens,
    secure: bool,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if tokens.is_empty() {
        // No tokens: everyone on loopback is `local` already.
        return see_other("/");
    }
    let form = match form::read(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some((who, digest)) = tokens.sign_in(form.text("token")) else {
        ctx.metrics.admin_refused("token");
        // A wrong token costs its sender a moment; a right one is long
        // enough that guessing is hopeless anyway.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        return form_page_refused();
    };
    let Some(id) = ctx.sessions.open(&who, digest) else {
        return super::layout::error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Cannot sign in",
            "No secure session could be made (the system random source failed).",
            None,
        );
    };
    info!(who = %who, "console: signed in");
    let mut r = see_other("/");
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&id, secure)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn form_page_refused() -> Response<Full<Bytes>> {
    form(
        None,
        Some("That is not a token of this gateway's admin token_file."),
    )
}

/// `POST /logout`.
pub(super) fn sign_out(
    ctx: &AdminContext,
    secure: bool,
    cookie: Option<&str>,
) -> Response<Full<Bytes>> {
    if let Some(id) = cookie {
        ctx.sessions.close(id);
    }
    let mut r = see_other("/login");
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(secure)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
