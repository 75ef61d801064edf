//! Backend servers of one `[[upstream]]`: which server a request goes to
//! (strategy), which servers are in rotation (active health checks and
//! passive ejection on connect failures), and one pooled hyper-util
//! HTTP/1.1 client per server.
//!
//! A pool per server, not one for the upstream: the strategy must decide
//! where a request goes, and a shared pool would hand out whichever idle
//! connection it has. Retrying on another server is decided by the caller
//! (`forward.rs`), which knows whether any byte of the request was sent.
//!
//! # Layout
//!
//! - `pool` — [`Upstream`]: the servers of one `[[upstream]]`.
//! - `pick` — which server an attempt goes to (pure).
//! - `server` — one server's pool and rotation state.
//! - `connector` — connecting, with its timeout and typed error.
//! - `health` — active health checks.

mod connector;
mod health;
mod pick;
mod pool;
mod server;

pub(crate) use connector::{AttemptError, ConnectError, ServerAddr};
pub(crate) use pick::Pick;
pub(crate) use pool::Upstream;
pub(crate) use server::ServerGuard;
