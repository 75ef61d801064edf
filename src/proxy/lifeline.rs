//! What ties a connection to its listener's life: the stop signal it
//! watches and the drain guard it holds until it is done.

use tokio::sync::{mpsc, watch};

/// Handed from the accept loop to every connection task, and from a
/// connection to each tunnel it opens. The accept loop's owner waits until
/// every `drain` clone has dropped.
#[derive(Debug, Clone)]
pub(super) struct Lifeline {
    /// Turns true when the listener stops (shutdown, or removed by reload).
    pub(super) stop: watch::Receiver<bool>,
    /// Held while the connection (or a tunnel it opened) is alive.
    pub(super) drain: mpsc::Sender<()>,
}
