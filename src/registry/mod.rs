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
//! # Layout
//! - [`device`]: the record and its status.
//! - `requests`, [`error`]: what callers send and get back.
//! - `shared`, `handle`: the handle and the snapshot handshakes read.
//! - `writer`: the single writer task (store, audit log).
//! - [`store`]: the embedded redb store.

pub(crate) mod device;
pub(crate) mod error;
mod handle;
mod requests;
mod shared;
pub(crate) mod store;
mod writer;

pub use crate::identity::fingerprint;
pub(crate) use device::parse_fingerprint;
pub use device::{Device, DeviceStatus};
pub(crate) use error::RegistryError;
pub use handle::Registry;
pub(crate) use handle::warn_if_changed;
pub(crate) use requests::{Change, Observation, Page, Query};
pub use shared::RegistryMetrics;
pub(crate) use store::RedbStore;
pub use store::{DeviceStore, StoreError};
