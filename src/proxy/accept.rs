//! The accept loop: connection cap, the balancer's PROXY header
//! (`proxy_header`, read in the connection's task), per-source limits and
//! handshake rate (`source_limits`) on the client's address, before any
//! TLS work.

use super::ListenerShared;
use super::connection::serve_http;
use super::handshake::connection;
use super::lifeline::Lifeline;
use super::plain::plain;
use super::proxy_header;
use super::source_limits::{HandshakeRates, SourceCounts, SourceSlot};
use super::state::ListenerState;
use crate::log_limit::LogLimit;
use crate::shutdown::stopped;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
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
    // Shared with the tasks of proxied connections, which learn their
    // client's address only from its header.
    let limits = Arc::new(Limits {
        rates: Mutex::new(HandshakeRates::default()),
        sources: Arc::new(SourceCounts::default()),
        log: LogLimit::default(),
    });
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
        if let Some(proxy) = &state.proxy
            && !proxy
                .from
                .iter()
                .any(|n| n.contains(&peer.ip().to_canonical()))
        {
            state.metrics.connection_refused("proxy_from");
            if limits.log.should_log() {
                info!(listener = %state.name, %peer,
                    "connection from an address not in proxy_from (this listener takes connections \
                     only from its balancers); closed before TLS (further refusals are counted in \
                     certgate_connections_refused_total, logged at most once a second)");
            }
            drop(tcp);
            continue;
        }
        let proxied = state.proxy.is_some();
        let admitted = if proxied {
            None
        } else {
            match limits.admit(&state, peer) {
                Some(slot) => Some(slot),
                None => {
                    drop(tcp);
                    continue;
                }
            }
        };
        let shared = shared.clone();
        let lifeline = Lifeline {
            stop: stop.clone(),
            drain: drain.clone(),
        };
        let limits = proxied.then(|| limits.clone());
        tokio::spawn(async move {
            let mut tcp = tcp;
            let (peer, slot) = match (admitted, &state.proxy) {
                (Some(slot), _) => (peer, slot),
                (None, Some(proxy)) => {
                    let Some(limits) = limits else { return };
                    // Boxed, as every await of this task: a task is as large
                    // as its largest state, and it lives as long as the
                    // connection.
                    let client = match Box::pin(proxy_header::read(
                        &mut tcp,
                        proxy.version,
                        state.limits.handshake_timeout,
                    ))
                    .await
                    {
                        Ok(Some(client)) => client,
                        // The balancer's own connection: a health check
                        // closes without a byte; anything else is served
                        // under the balancer's address.
                        Ok(None) => {
                            if !Box::pin(proxy_header::sends_data(
                                &tcp,
                                state.limits.handshake_timeout,
                            ))
                            .await
                            {
                                drop(permit);
                                return;
                            }
                            peer
                        }
                        Err(e) => {
                            state.metrics.connection_refused("proxy_header");
                            if limits.log.should_log() {
                                info!(listener = %state.name, balancer = %peer, error = %e,
                                    "PROXY header refused; connection closed before TLS (further \
                                     refusals are counted in certgate_connections_refused_total, \
                                     logged at most once a second)");
                            }
                            drop(permit);
                            return;
                        }
                    };
                    match limits.admit(&state, client) {
                        Some(slot) => (client, slot),
                        None => {
                            drop(permit);
                            return;
                        }
                    }
                }
                (None, None) => return,
            };
            let metrics = state.metrics.clone();
            metrics.active.inc();
            let _ = tcp.set_nodelay(true);
            match state.tls.clone() {
                // The handshake's future ends before serving starts, so
                // what it held is not kept for the connection's life. Each
                // boxed future is made in its own statement: a temporary of
                // the awaiting statement would keep its slot in this task.
                Some(tls) => {
                    let handshake = Box::pin(connection(tcp, peer, (shared, state, tls), lifeline));
                    if let Some(ready) = handshake.await {
                        let serving = Box::pin(serve_http(ready));
                        serving.await;
                    }
                }
                None => {
                    let accepted = Box::pin(plain(tcp, peer, (shared, state), lifeline));
                    if let Some(ready) = accepted.await {
                        let serving = Box::pin(serve_http(ready));
                        serving.await;
                    }
                }
            }
            metrics.active.dec();
            drop(slot);
            drop(permit);
        });
    }
}

/// The per-source limits, on the client's address (the TCP peer, or the
/// one a PROXY header names).
struct Limits {
    rates: Mutex<HandshakeRates>,
    sources: Arc<SourceCounts>,
    log: LogLimit,
}

impl Limits {
    /// The client's slot, or `None` (counted, logged) when a limit refuses
    /// it.
    fn admit(&self, state: &ListenerState, peer: SocketAddr) -> Option<Option<SourceSlot>> {
        let rate = state.limits.handshake_rate_per_source;
        let rate_ok = rate == 0
            || self
                .rates
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .admit(peer.ip(), rate);
        if !rate_ok {
            state.metrics.connection_refused("handshake_rate");
            if self.log.should_log() {
                info!(listener = %state.name, %peer, rate = state.limits.handshake_rate_per_source,
                    "too many new connections per second from this source (handshake_rate_per_source); \
                     closed before TLS (further refusals are counted in certgate_connections_refused_total, \
                     logged at most once a second)");
            }
            return None;
        }
        let slot = self
            .sources
            .admit(peer.ip(), state.limits.max_connections_per_source);
        if slot.is_none() {
            state.metrics.connection_refused("per_source_limit");
            if self.log.should_log() {
                info!(listener = %state.name, %peer, limit = state.limits.max_connections_per_source,
                    "too many connections from this source (max_connections_per_source); closed before TLS \
                     (further refusals are counted in certgate_connections_refused_total, logged at most once a second)");
            }
        }
        slot
    }
}
