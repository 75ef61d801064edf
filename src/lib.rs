//! certgate: a TLS-terminating reverse proxy gateway that admits only
//! devices with approved client certificates and forwards them to a
//! plain-HTTP management server.
//!
//! Data flows one way: [`config`] (TOML → validated [`config::Settings`]) →
//! [`tls`] (certificates, verifier, identity) → [`gateway`] (binds and runs)
//! → [`proxy`] (accept, handshake, HTTP service, upstream pool). [`admin`]
//! serves metrics and health; [`metrics`] owns the metric families;
//! [`reload`] rebuilds and swaps the state on file change, SIGHUP or admin
//! call; [`handover`] passes listening sockets to a new binary.

pub mod access;
pub mod admin;
pub mod admission;
pub mod clock;
pub mod config;
pub mod control;
pub mod demo;
pub mod devices;
pub mod dn;
pub mod error;
pub mod gateway;
pub mod handover;
pub mod identity;
pub mod metrics;
pub mod notify;
pub mod proxy;
pub mod readiness;
pub mod registry;
pub mod reload;
pub mod shutdown;
pub mod tls;

pub use config::Settings;
pub use error::{ConfigError, RunError};
pub use gateway::Gateway;
