//! The data path: accept loops, TLS handshakes with client-certificate
//! checks, the HTTP service and the upstream pool.
//!
//! A connection reads the listener's current [`ListenerState`] once, at
//! accept, and keeps its TLS state and limits for its lifetime: a reload
//! changes what new connections get, never what an open one negotiated.
//! Two things do follow a reload on open connections: each request goes to
//! the upstream in force when it arrives, and a client that the new CAs,
//! CRLs or policy no longer admit is disconnected.
//!
//! # Layout (the data path, in order)
//! - `accept`: the accept loop and its limits ([`serve`]); `source_limits`
//!   keeps the per-source books.
//! - `handshake`, `plain`: TLS and admission, or the plain-HTTP port.
//! - `connection`: an admitted connection until it closes; `serving` is
//!   the hyper connection serving it, `park` keeps an idle one outside
//!   hyper; `recheck` cuts it off when its client is no longer admitted.
//! - `service`: each request, from hyper's call to the response body
//!   (`tracked`) that counts and logs it; `context` and `activity` are
//!   what every request of a connection reads.
//! - `request`, [`headers`], [`framing`]: checking and rewriting it.
//! - `forward`: an upstream slot, a server, safe retries, 502/503/504
//!   (`replies`); `tunnel` relays a protocol upgrade.
//! - [`upstream`], `body`: the backend servers and the request body.
//! - [`state`]: the listener state all of them read.

mod accept;
mod activity;
mod body;
mod connection;
mod context;
mod forward;
pub(crate) mod framing;
mod handshake;
pub(crate) mod headers;
mod lifeline;
mod park;
mod plain;
pub(crate) mod proxy_header;
mod recheck;
mod replies;
mod request;
mod service;
mod serving;
mod source_limits;
pub(crate) mod state;
mod tracked;
mod tunnel;
pub(crate) mod upstream;

pub(crate) use accept::serve;
pub(crate) use recheck::Admission;
pub(crate) use state::{ListenerShared, ListenerState};
