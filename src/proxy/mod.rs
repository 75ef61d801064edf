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
//! - `accept`: the accept loop and its limits ([`serve`]).
//! - `handshake`, `plain`: TLS and admission, or the plain-HTTP port.
//! - `connection`: an admitted connection until it closes; `recheck`
//!   cuts it off when its client is no longer admitted.
//! - [`service`], [`headers`], [`framing`]: each request.
//! - [`upstream`], `body`: forwarding to the backend servers.
//! - [`state`]: the listener state all of them read.

mod accept;
mod body;
mod connection;
pub mod framing;
mod handshake;
pub mod headers;
mod plain;
mod recheck;
pub mod service;
pub mod state;
pub mod upstream;

pub use accept::serve;
pub use recheck::Admission;
pub use state::{ListenerShared, ListenerState};
