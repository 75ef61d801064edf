//! The accept loop: connection cap, per-source limits and handshake rate
//! (`source_limits`), before any TLS work.

use super::ListenerShared;
use super::handshake::connection;
use super::lifeline::Lifeline;
use super::plain::plain;
use super::source_limits::{HandshakeRates, SourceCounts};
use crate::log_limit::LogLimit;
use crate::shutdown::stopped;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{info, warn};

/// Accepts connections until `stop` turns true. Each connection task
/// holds a clone of `drain`; the caller waits for all clones to drop.
pub(crate) async fn serve(
    listener: Arc<TcpListener>,
    shared: Arc<ListenerShared>,
    mut stop: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
) {
    let sources = Arc::new(SourceCounts::default());
    let mut rates = HandshakeRates::default();
    let refusal_log = LogLimit::default();
    let full_log = LogLimit::default();
    let mut cap = shared.current().limits.max_connections;
    let mut slots = Arc::new(Semaphore::new(cap));
    loop {
        let state = shared.current();
        if state.limits.max_connections != cap {
            // A reload changed the cap: new connections count against a new
            // semaphore; open ones keep the permit they hold.
            cap = state.limits.max_connections;
            slots = Arc::new(Semaphore::new(cap));
        }
        // Wait for a free slot before accepting: beyond the cap clients queue
        // in the kernel backlog instead of being accepted and dropped.
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                // Agents queued here see slow connects, not refusals: the
                // admin needs to hear it from certgate.
                state.metrics.limit_reached.inc();
                if full_log.should_log() {
                    warn!(listener = %state.name, max_connections = cap,
                        "listener full: max_connections open, new connections wait in the kernel backlog \
                         until one closes (raise [[listener]] max_connections if the host can take more; \
                         counted in certgate_connections_limit_reached_total)");
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                    _ = stopped(&mut stop) => return,
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE/ENFILE and friends: back off instead of spinning.
                    warn!(listener = %state.name, error = %e, "accept failed; retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return,
        };
        let state = shared.current();
        state.metrics.accepted.inc();
        if !rates.admit(peer.ip(), state.limits.handshake_rate_per_source) {
            state.metrics.connection_refused("handshake_rate");
            if refusal_log.should_log() {
                info!(listener = %state.name, %peer, rate = state.limits.handshake_rate_per_source,
                    "too many new connections per second from this source (handshake_rate_per_source); \
                     closed before TLS (further refusals are counted in certgate_connections_refused_total, \
                     logged at most once a second)");
            }
            drop(tcp);
            continue;
        }
        let Some(slot) = sources.admit(peer.ip(), state.limits.max_connections_per_source) else {
            state.metrics.connection_refused("per_source_limit");
            if refusal_log.should_log() {
                info!(listener = %state.name, %peer, limit = state.limits.max_connections_per_source,
                    "too many connections from this source (max_connections_per_source); closed before TLS \
                     (further refusals are counted in certgate_connections_refused_total, logged at most once a second)");
            }
            drop(tcp);
            continue;
        };
        let shared = shared.clone();
        let lifeline = Lifeline {
            stop: stop.clone(),
            drain: drain.clone(),
        };
        tokio::spawn(async move {
            let metrics = state.metrics.clone();
            metrics.active.inc();
            let _ = tcp.set_nodelay(true);
            match state.tls.clone() {
                Some(tls) => connection(tcp, peer, (shared, state, tls), lifeline).await,
                None => Box::pin(plain(tcp, peer, (shared, state), lifeline)).await,
            }
            metrics.active.dec();
            drop(slot);
            drop(permit);
        });
    }
}
