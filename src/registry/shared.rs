//! The state the registry handle and its writer task share: the status
//! snapshot handshakes read, the queues to the writer, the metrics.

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use std::collections::HashMap;
use tokio::sync::{mpsc, watch};

use super::device::unhex32;
use super::requests::Command;
use super::{Device, DeviceStatus, Observation};

/// The handshake's view: fingerprint → status.
pub(crate) type StatusMap = HashMap<[u8; 32], DeviceStatus>;

/// Registry metrics.
#[derive(Debug, Clone, Default)]
pub struct RegistryMetrics {
    /// Devices by status (gauge values set by the writer).
    pub devices: [prometheus_client::metrics::gauge::Gauge; 3],
    /// Handshake updates dropped because the queue was full.
    pub dropped: Counter,
    /// Store writes that failed.
    pub write_errors: Counter,
}

pub(super) struct Shared {
    pub(super) statuses: ArcSwap<StatusMap>,
    /// Bumped when a device loses admission (blocked, unblocked back to
    /// pending, forgotten): open connections re-check themselves.
    pub(super) revocations: watch::Sender<u64>,
    pub(super) updates: mpsc::Sender<Observation>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) metrics: RegistryMetrics,
}

pub(super) fn status_map(records: &HashMap<String, Device>) -> StatusMap {
    records
        .values()
        .filter_map(|d| unhex32(&d.fingerprint).map(|k| (k, d.status)))
        .collect()
}
