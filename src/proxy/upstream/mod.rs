//! Backend servers of one `[[upstream]]`: which server a request goes to
//! (strategy), which servers are in rotation (active health checks and
//! passive ejection on connect failures), and the kept-alive HTTP/1.1
//! connections of each server.
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
//! - `server` — one server's rotation state and connections.
//! - `conns` — one server's kept-alive connections: checkout, give back,
//!   idle expiry, resending a request a closed connection never took.
//! - `connector` — connecting, with its timeout and typed error.
//! - `health` — active health checks.

mod connector;
mod conns;
mod health;
mod pick;
mod pool;
mod server;

pub(crate) use connector::{AttemptError, ServerAddr};
pub(crate) use conns::{Conn, SendError};
pub(crate) use pick::Pick;
pub(crate) use pool::Upstream;
pub(crate) use server::ServerGuard;
