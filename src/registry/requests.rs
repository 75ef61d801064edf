//! What callers send the registry: handshake observations, admin
//! changes, list queries, and the commands they travel in.

use serde::Serialize;
use std::net::SocketAddr;
use tokio::sync::oneshot;

use super::{Device, DeviceStatus, RegistryError};

/// What a handshake reports to the registry.
#[derive(Debug)]
pub struct Observation {
    /// Certificate fingerprint.
    pub fingerprint: [u8; 32],
    /// The certificate, when the device may be new (to fill the record).
    pub der: Option<Vec<u8>>,
    /// Source address.
    pub peer: SocketAddr,
    /// When, Unix seconds.
    pub at: i64,
    /// Admitted, or refused with a reason.
    pub refused: Option<&'static str>,
    /// Status to record for a device not yet approved (or unknown).
    pub record: Option<DeviceStatus>,
}

/// An administrator's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Set status approved.
    Approve,
    /// Set status blocked.
    Block,
    /// Set status back to pending.
    Unblock,
    /// Delete the record.
    Forget,
    /// Set (or clear, with `None`) the label.
    Label(Option<String>),
}

impl Change {
    pub(super) fn action(&self) -> &'static str {
        match self {
            Change::Approve => "approve",
            Change::Block => "block",
            Change::Unblock => "unblock",
            Change::Forget => "forget",
            Change::Label(_) => "label",
        }
    }
}

/// A query for the device list.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only this status.
    pub status: Option<DeviceStatus>,
    /// Case-insensitive substring of fingerprint, subject, SANs, label or
    /// last peer.
    pub text: Option<String>,
    /// Only certificates expiring within this many seconds from now.
    pub expiring_within: Option<i64>,
    /// Skip this many results.
    pub offset: usize,
    /// At most this many results (default 100, max 1000).
    pub limit: Option<usize>,
}

/// One page of devices.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// Matching devices in total.
    pub total: usize,
    /// Offset of the first device returned.
    pub offset: usize,
    /// The devices, by first seen (then fingerprint).
    pub devices: Vec<Device>,
}

pub(super) enum Command {
    Change {
        fingerprints: Vec<String>,
        change: Change,
        who: String,
        reply: oneshot::Sender<Result<Vec<Device>, RegistryError>>,
    },
    Get {
        fingerprint: String,
        reply: oneshot::Sender<Option<Device>>,
    },
    List {
        query: Query,
        reply: oneshot::Sender<Page>,
    },
    Flush {
        reply: oneshot::Sender<Result<(), RegistryError>>,
    },
    Release {
        reply: oneshot::Sender<Result<(), RegistryError>>,
    },
    Reopen {
        reply: oneshot::Sender<Result<(), RegistryError>>,
    },
}
