//! The device registry: who has tried to connect, and whether each device is
//! pending, approved or blocked.
//!
//! Handshakes never touch the store or wait on a writer: they read an
//! immutable status snapshot ([`Registry::status`], one `ArcSwap` load and a
//! hash lookup). What a handshake learns (a first-seen device, a connection,
//! a refusal) goes to the writer task through a bounded queue; a full queue
//! drops the update (counted), never the handshake. Administrator changes
//! go through the same writer, are committed durably before they are
//! acknowledged, written to the audit log, and published in a new snapshot.
//!
//! A device is a lineage of certificates: its first one and each renewal
//! that a listener's renewal rule matched to it. The status belongs to the
//! device, so a renewed certificate keeps the approval (or the block).
//!
//! # Layout
//! - [`device`]: the device, its certificates, its status, its view.
//! - `requests`, [`error`]: what callers send and get back.
//! - `snapshot`: what handshakes read (statuses, the renewal index).
//! - `shared`, `handle`: the handle and the shared state.
//! - `writer`: the single writer task (store, audit log).
//! - `backend`: the store the settings name, and store calls off the
//!   async workers.
//! - `expiry`: the fleet's expiry forecast.
//! - [`store`], `migrate`: the embedded redb store and its schema 1.
//! - `postgres`: the store several gateways share.

mod backend;
pub(crate) mod device;
pub(crate) mod error;
pub(crate) mod expiry;
mod handle;
mod migrate;
pub(crate) mod postgres;
mod requests;
mod shared;
pub(crate) mod snapshot;
pub(crate) mod store;
mod writer;

pub use crate::identity::fingerprint;
pub(crate) use device::parse_fingerprint;
pub use device::{Certificate, CertificateView, Device, DeviceStatus, DeviceView};
pub(crate) use error::RegistryError;
pub(crate) use expiry::Forecast;
pub use handle::Registry;
pub(crate) use handle::warn_if_changed;
pub(crate) use requests::{Change, Observation, Page, Query, Record, Sort};
pub use shared::RegistryMetrics;
pub(crate) use snapshot::{Candidate, Snapshot};
pub(crate) use store::RedbStore;
pub use store::{DeviceStore, Remote, RemoteChange, StoreError};
