//! Prometheus metrics, with the official `prometheus-client`.
//!
//! Label values are bounded: listener and upstream names from the config,
//! fixed reason and status-class words. Never a peer address or a device
//! fingerprint. Hot paths hold pre-resolved handles ([`ListenerMetrics`]) so
//! a request does no label lookup.

//! # Layout
//!
//! - `gateway` — [`Metrics`]: every family, registered once.
//! - `listener` — [`ListenerMetrics`]: one listener's handles.
//! - `labels` — the label sets; `process` — /proc at scrape time.
//! - `text` — OpenMetrics and the Prometheus text format.

mod gateway;
mod labels;
mod listener;
mod process;
mod text;

pub use gateway::{CertExpiry, Metrics};
pub use listener::ListenerMetrics;
