//! The LISTEN connection: wakes the writer when another instance
//! announces a change, and every few seconds anyway (a poll, in case a
//! notification was lost). After it reconnects, the next sync reads
//! everything: notifications sent while it was away are gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator as _;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::config::PostgresSettings;

/// How often the writer syncs without a notification.
const POLL_EVERY: Duration = Duration::from_secs(5);
/// How long to wait before connecting again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Starts the thread; it ends when nobody listens to `wake` any more.
pub(super) fn spawn(
    settings: PostgresSettings,
    wake: Arc<watch::Sender<u64>>,
    needs_full: Arc<AtomicBool>,
) {
    let spawned = std::thread::Builder::new()
        .name("certgate-registry-listen".into())
        .spawn(move || run(&settings, &wake, &needs_full));
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the shared registry's listener; changes of other gateways arrive with the periodic resync only");
    }
}

fn run(settings: &PostgresSettings, wake: &watch::Sender<u64>, needs_full: &AtomicBool) {
    let bump = || wake.send_modify(|n| *n = n.wrapping_add(1));
    let mut reported = false;
    while wake.receiver_count() > 0 {
        let mut client = match super::connect::connect(settings).and_then(|mut c| {
            c.batch_execute(&format!("LISTEN {}", super::CHANNEL))
                .map(|_| c)
                .map_err(|e| super::connect::unreachable(settings, &e))
        }) {
            Ok(c) => c,
            Err(e) => {
                if !reported {
                    warn!(error = %e, "the shared registry's change feed is down; retrying every second");
                    reported = true;
                }
                std::thread::sleep(RETRY_AFTER);
                continue;
            }
        };
        reported = false;
        needs_full.store(true, Ordering::Release);
        bump();
        let mut polled = Instant::now();
        loop {
            if wake.receiver_count() == 0 {
                return;
            }
            let mut n = 0usize;
            let broken = {
                let mut notes = client.notifications();
                let mut it = notes.timeout_iter(Duration::from_millis(500));
                loop {
                    match it.next() {
                        Ok(Some(note)) => {
                            debug!(version = note.payload(), "shared registry changed");
                            n += 1;
                            // Wake at once, then take what else arrived.
                            bump();
                        }
                        Ok(None) => break false,
                        Err(e) => {
                            warn!(error = %e, "the shared registry's change feed broke; reconnecting");
                            break true;
                        }
                    }
                }
            };
            if broken || client.is_closed() {
                break;
            }
            if n == 0 && polled.elapsed() >= POLL_EVERY {
                polled = Instant::now();
                bump();
            }
        }
        std::thread::sleep(RETRY_AFTER);
    }
}
