//! certgate: a TLS-terminating reverse proxy gateway that admits only
//! devices with approved client certificates and forwards them to a
//! plain-HTTP management server.
//!
//! Data flows one way (ARCHITECTURE.md draws it; `tests/layout.rs` checks
//! that no module imports one that imports it back):
//! [`config`] (TOML → validated [`config::Settings`]) → [`reload`] (build
//! the runtime state whole, bind, swap) → [`proxy`] (accept → handshake →
//! connection → request → upstream), with [`tls`] (certificates, verifier)
//! and [`admission`] (the verdict on a CA-valid certificate, from the
//! [`registry`] snapshot) on the handshake path. [`admin`] serves the API and
//! metrics and asks for reloads through [`control`]; [`gateway`] starts and
//! drains; [`handover`] passes sockets to a new binary. Reporting:
//! [`metrics`], [`readiness`], [`access`], [`notify`]. Leaf helpers:
//! [`identity`], [`dn`], [`clock`], [`shutdown`], [`log_limit`]. The CLI edge: [`devices`],
//! [`demo`] and `main.rs`.

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
pub mod log_limit;
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
