//! The state the registry handle and its writer task share: the snapshot
//! handshakes read, the queues to the writer, the metrics.

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, watch};

use super::Observation;
use super::requests::Command;
use super::snapshot::Snapshot;

/// Registry metrics.
#[derive(Debug, Clone, Default)]
pub struct RegistryMetrics {
    /// Devices by status (gauge values set by the writer).
    pub devices: [prometheus_client::metrics::gauge::Gauge; 3],
    /// Handshake updates dropped because the queue was full.
    pub dropped: Counter,
    /// Store writes that failed.
    pub write_errors: Counter,
    /// Renewals matched to a device: inherited, blocked, ambiguous
    /// (`certgate_device_renewals_total{result}`).
    pub renewals: [Counter; 3],
    /// Active approved devices whose certificate expires within 7, 30, 90
    /// days with no successor (`certgate_device_certificates_expiring`).
    pub expiring: [prometheus_client::metrics::gauge::Gauge; 3],
}

pub(super) struct Shared {
    pub(super) snapshot: ArcSwap<Snapshot>,
    /// Bumped when a device loses admission (blocked, unblocked back to
    /// pending, forgotten): open connections re-check themselves.
    pub(super) revocations: watch::Sender<u64>,
    pub(super) updates: mpsc::Sender<Observation>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) metrics: RegistryMetrics,
    /// The audit log's file (the console reads it back).
    pub(super) audit_path: std::path::PathBuf,
    /// The shared registry's readiness tables (PostgreSQL backend).
    pub(super) fleet: Option<std::sync::Arc<super::postgres::readiness::FleetReadiness>>,
}
