//! The admin HTTP listener: `/metrics` (Prometheus text format),
//! `/healthz`, `POST /api/reload` and the device API under
//! `/api/devices`. It is served on its own address, loopback by default,
//! and never shares a port with device traffic. With a token file, every
//! `/api/` call needs `Authorization: Bearer <token>`; with or without one,
//! [`guard`] refuses what a browser sends on behalf of another site.
//!
//! # Layout
//!
//! - `serve` — the listener; `route` — which handler a request goes to;
//!   `context` — what every handler works on.
//! - `guard` — Host, Origin, Sec-Fetch-Site, Content-Type rules.
//! - `tokens` — bearer tokens and the access rules in force.
//! - `devices`, `readiness`, `readyz`, `reload`, `revocation` — the endpoints.
//! - `query`, `reply` — query strings in, JSON and text out.
//! - `console/` — the web console, on every other path; `sessions` — its
//!   sign-in sessions and anti-forgery tokens.

pub(crate) mod console;
mod context;
mod devices;
pub(crate) mod guard;
mod query;
mod readiness;
mod readyz;
mod reload;
mod reply;
mod revocation;
mod route;
mod serve;
pub(crate) mod sessions;
mod tokens;

pub(crate) use context::AdminContext;
pub(crate) use serve::serve;
pub(crate) use tokens::{Access, Tokens};
