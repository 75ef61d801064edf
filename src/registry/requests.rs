//! What callers send the registry: handshake observations, admin
//! changes, list queries, and the commands they travel in.

use serde::Serialize;
use std::net::SocketAddr;
use tokio::sync::oneshot;

use crate::config::RenewalIdentity;

use super::{Device, DeviceStatus, DeviceView, RegistryError};

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
    /// What to record about a certificate the registry may not have.
    pub record: Record,
}

/// What a handshake asks the registry to record about its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Nothing new: a known certificate's counters (an unknown one is not
    /// recorded).
    Seen,
    /// A known certificate whose record lacks what only the certificate
    /// tells (its key, its authority key id): filled in from it.
    Fill,
    /// A first-seen certificate: a new device with this status (approved
    /// only when the handshake was admitted by `auto` or a rule).
    New(DeviceStatus),
    /// A renewal: the certificate joins the device of the certificate with
    /// this fingerprint and has that device's status; admitted, it
    /// supersedes the device's older certificates.
    Renewal {
        /// A certificate of the device (its current one when decided).
        of: [u8; 32],
    },
    /// A first-seen certificate whose identity several approved devices
    /// share: a new device with this status, flagged `ambiguous_identity`.
    Ambiguous(DeviceStatus),
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
    /// Seen in the last this many seconds.
    pub active_within: Option<i64>,
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
    /// The order of the results.
    pub sort: Sort,
    /// Reversed (newest or latest first).
    pub descending: bool,
}

/// What a device list is ordered by (ties by device id).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sort {
    /// First handshake of any of its certificates (never seen first).
    #[default]
    FirstSeen,
    /// Latest handshake of any of its certificates (never seen first).
    LastSeen,
    /// The current certificate's notAfter (unknown first).
    Expiry,
}

impl Sort {
    /// From the query parameter (`first_seen`, `last_seen`, `expiry`).
    pub fn parse(s: &str) -> Option<Sort> {
        match s {
            "first_seen" => Some(Sort::FirstSeen),
            "last_seen" => Some(Sort::LastSeen),
            "expiry" => Some(Sort::Expiry),
            _ => None,
        }
    }

    /// The query parameter's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::FirstSeen => "first_seen",
            Sort::LastSeen => "last_seen",
            Sort::Expiry => "expiry",
        }
    }
}

/// One page of devices.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// Matching devices in total.
    pub total: usize,
    /// Offset of the first device returned.
    pub offset: usize,
    /// The devices, by first seen (then id).
    pub devices: Vec<DeviceView>,
}

pub(super) enum Command {
    Change {
        fingerprints: Vec<String>,
        /// Certificates (DER) among them, so that a record made for one
        /// has its subject, issuer, serial and validity.
        certificates: Vec<Vec<u8>>,
        change: Change,
        who: String,
        reply: oneshot::Sender<Result<Vec<DeviceView>, RegistryError>>,
    },
    Get {
        fingerprint: String,
        reply: oneshot::Sender<Result<Option<Device>, RegistryError>>,
    },
    GetMany {
        keys: Vec<String>,
        reply: oneshot::Sender<Vec<Device>>,
    },
    Import {
        devices: Vec<Device>,
        who: String,
        reply: oneshot::Sender<Result<Vec<DeviceView>, RegistryError>>,
    },
    Expiry {
        active_within: i64,
        reply: oneshot::Sender<super::expiry::Forecast>,
    },
    Identities {
        identities: Vec<RenewalIdentity>,
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
