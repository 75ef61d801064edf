//! certgate: a TLS-terminating reverse proxy gateway that admits only
//! devices with approved client certificates and forwards them to a
//! plain-HTTP management server.
//!
//! The public API is small: [`Gateway`] (start, reload, drain) from
//! [`Settings`] (a validated [`config`] file), its [`metrics`], the
//! [`error`] types, and the [`cli`] that `main.rs` runs. Everything else is
//! private to the crate, so `unreachable_pub` keeps it that way.
//!
//! # Layout
//!
//! Data flows one way (ARCHITECTURE.md draws it; `tests/layout.rs` checks
//! that no module imports one that imports it back):
//! `config` (TOML → validated [`Settings`]) → `reload` (build the runtime
//! state whole, plan, bind, swap) → `proxy` (accept → handshake →
//! connection → request → forward → upstream), with `tls` (certificates,
//! verifier) and `admission` (the verdict on a CA-valid certificate, from
//! the `registry` snapshot, and the one vocabulary of refusal reasons) on
//! the handshake path. `admin` serves the API and metrics and asks for
//! reloads through `control`; `gateway` starts and drains; `handover`
//! passes sockets to a new binary. Reporting: `metrics`, `readiness`,
//! `access`, `notify`. Leaf helpers: `identity`, `dn`, `clock`,
//! `shutdown`, `log_limit`. The CLI edge: `cli` (with the `devices` client) and `demo`.

mod access;
mod admin;
mod admission;
pub mod cli;
mod clock;
pub mod config;
mod control;
mod demo;
mod dn;
pub mod error;
pub mod gateway;
mod handover;
mod identity;
mod log_limit;
pub mod metrics;
mod notify;
mod proxy;
mod readiness;
mod registry;
mod reload;
mod revocation;
mod shutdown;
mod tls;

pub use config::Settings;
pub use error::{ConfigError, RunError};
pub use gateway::Gateway;

/// Entry points for the fuzz targets and benches, which exercise pieces
/// of the data path on their own. Not a stable API.
#[doc(hidden)]
pub mod internals {
    pub use crate::admission::{Policy, Verdict};
    pub use crate::identity::sha256_hex;
    pub use crate::proxy::framing::FramingScan;
    pub use crate::proxy::headers::{
        ClientFacts, ClientIdentity, ambiguous_framing, is_identity_header, is_upgrade,
        prepare_request,
    };
    pub use crate::registry::snapshot::Snapshot;
    pub use crate::registry::{
        Certificate, CertificateView, Device, DeviceStatus, DeviceStore, DeviceView, Registry,
        RegistryMetrics, Remote, RemoteChange, StoreError, fingerprint,
    };
    pub use crate::reload::QUIET;
    pub use crate::tls::hello::{Offered, offered};
}
