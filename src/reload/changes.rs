//! What a reload changed, in the words the log line and the
//! `POST /api/reload` report use.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::ListenerSettings;
use crate::control::ReloadReport;
use crate::proxy::ListenerState;
use crate::tls::ListenerTls;

use super::plan::Stop;

/// Adds what changed for a listener that keeps its socket.
pub(super) fn describe_change(
    report: &mut ReloadReport,
    l: &ListenerSettings,
    before: &ListenerState,
    tls: &Option<Arc<ListenerTls>>,
    old_name: &str,
) {
    if old_name != l.name {
        report
            .changes
            .push(format!("listener \"{old_name}\" renamed to \"{}\"", l.name));
    }
    let served = |t: &ListenerTls| {
        t.served
            .iter()
            .map(|c| c.fingerprint.clone())
            .collect::<Vec<_>>()
    };
    match (&before.tls, tls) {
        (Some(a), Some(b)) => {
            if served(a) != served(b) {
                report.changes.push(format!(
                    "listener \"{}\": server certificate(s) replaced",
                    l.name
                ));
            }
            if a.trust_digest != b.trust_digest {
                report.changes.push(format!(
                    "listener \"{}\": client CA / CRL / TLS policy changed (open connections re-checked)",
                    l.name
                ));
            }
        }
        (None, None) => {}
        _ => report.changes.push(format!(
            "listener \"{}\": switched between TLS and plain HTTP",
            l.name
        )),
    }
    if before.upstream.settings.name != l.upstream {
        report.changes.push(format!(
            "listener \"{}\": upstream \"{}\" -> \"{}\"",
            l.name, before.upstream.settings.name, l.upstream
        ));
    }
    if before.limits != l.limits {
        report
            .changes
            .push(format!("listener \"{}\": limits changed", l.name));
    }
}

/// The report line for a running socket that stops.
pub(super) fn describe_stop(name: &str, addr: SocketAddr, why: Stop) -> String {
    match why {
        Stop::Moved => format!(
            "listener \"{name}\" moved from {addr} (that socket stops accepting and drains)"
        ),
        Stop::Removed => format!(
            "listener \"{name}\" on {addr} removed (stops accepting; open connections finish and close)"
        ),
    }
}
