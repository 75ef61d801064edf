//! Pre-resolved metric handles for one listener, cloned into each
//! connection: a request does no label lookup.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::admission::Failure;

use super::gateway::Metrics;
use super::labels::{
    ClientAuthLabels, DecisionLabels, HandshakeLabels, ListenerLabel, PhaseLabels, ReasonLabels,
    RequestLabels, RequestTimeLabels, UpstreamErrorLabels,
};

impl Metrics {
    /// Pre-resolved handles for one listener forwarding to one upstream.
    pub fn listener(&self, listener: &str, upstream: &str) -> ListenerMetrics {
        let l = ListenerLabel {
            listener: listener.to_string(),
        };
        let code = |c: &str| {
            self.requests
                .get_or_create(&RequestLabels {
                    listener: listener.to_string(),
                    upstream: upstream.to_string(),
                    code: c.to_string(),
                })
                .clone()
        };
        self.zero_series(listener, upstream);
        ListenerMetrics {
            listener: listener.to_string(),
            upstream: upstream.to_string(),
            accepted: self.connections_accepted.get_or_create(&l).clone(),
            limit: self.connections_limit.get_or_create(&l).clone(),
            limit_reached: self.connections_limit_reached.get_or_create(&l).clone(),
            active: self.connections_active.get_or_create(&l).clone(),
            parked: self.connections_parked.get_or_create(&l).clone(),
            requests_by_class: [
                code("1xx"),
                code("2xx"),
                code("3xx"),
                code("4xx"),
                code("5xx"),
            ],
            handshakes: self.handshakes.clone(),
            handshake_failures: self.handshake_failures.clone(),
            upstream_errors: self.upstream_errors.clone(),
            closed_by_policy: self.closed_by_policy.clone(),
            decisions: self.decisions.clone(),
            client_auth: self.client_auth.clone(),
            sources_refused: self.sources_refused.get_or_create(&l).clone(),
            handshake_seconds: self.handshake_seconds.get_or_create(&l).clone(),
            conn_refused: self.conn_refused.clone(),
            timed_out: self.timed_out.clone(),
            request_seconds: self
                .request_seconds
                .get_or_create(&RequestTimeLabels {
                    listener: listener.to_string(),
                    upstream: upstream.to_string(),
                })
                .clone(),
            bytes_in: self.bytes_in.get_or_create(&l).clone(),
            bytes_out: self.bytes_out.get_or_create(&l).clone(),
        }
    }
}

/// The reasons, statuses and kinds whose series exist from the start (at
/// 0): what a dashboard of a healthy gateway plots.
const ZERO_FAILURES: [Failure; 9] = [
    Failure::NoCertificate,
    Failure::UnknownCa,
    Failure::Expired,
    Failure::BadCertificate,
    Failure::Revoked,
    Failure::Refused(crate::admission::Refusal::Unapproved),
    Failure::Refused(crate::admission::Refusal::Blocked),
    Failure::ProtocolVersion,
    Failure::Timeout,
];
const ZERO_CLIENT_AUTH: [(&str, &str); 4] = [
    ("authenticated", "none"),
    ("no_credentials", "none"),
    ("unapproved", "unapproved"),
    ("blocked", "blocked"),
];
const UPSTREAM_ERROR_KINDS: [&str; 6] = [
    "connect_failed",
    "connect_timeout",
    "response_timeout",
    "protocol",
    "queue_timeout",
    "all_down",
];

impl Metrics {
    fn zero_series(&self, listener: &str, upstream: &str) {
        for f in ZERO_FAILURES {
            self.handshake_failures
                .get_or_create(&ReasonLabels {
                    listener: listener.to_string(),
                    reason: f.as_str().to_string(),
                })
                .inc_by(0);
        }
        for (status, reason) in ZERO_CLIENT_AUTH {
            self.client_auth
                .get_or_create(&ClientAuthLabels {
                    listener: listener.to_string(),
                    status: status.to_string(),
                    reason: reason.to_string(),
                })
                .inc_by(0);
        }
        for kind in UPSTREAM_ERROR_KINDS {
            self.upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    upstream: upstream.to_string(),
                    kind: kind.to_string(),
                })
                .inc_by(0);
        }
        // The suite nearly every TLS 1.2 agent negotiates with an ECDSA
        // certificate; other suites appear as they are used.
        for resumed in ["false", "true"] {
            self.handshakes
                .get_or_create(&HandshakeLabels {
                    listener: listener.to_string(),
                    version: "1.2".into(),
                    cipher: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into(),
                    resumed: resumed.into(),
                })
                .inc_by(0);
        }
    }
}

/// Metric handles for one listener, cloned into each connection.
#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    listener: String,
    upstream: String,
    /// Connections accepted.
    pub accepted: Counter,
    /// The listener's connection cap.
    pub limit: Gauge,
    /// Times the listener was found full.
    pub limit_reached: Counter,
    /// Connections open now.
    pub active: Gauge,
    /// Open connections waiting for their next request without HTTP
    /// buffers.
    pub parked: Gauge,
    requests_by_class: [Counter; 5],
    handshakes: Family<HandshakeLabels, Counter>,
    handshake_failures: Family<ReasonLabels, Counter>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    closed_by_policy: Family<ReasonLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    client_auth: Family<ClientAuthLabels, Counter>,
    sources_refused: Counter,
    /// Admitted handshake durations.
    pub handshake_seconds: Histogram,
    conn_refused: Family<ReasonLabels, Counter>,
    timed_out: Family<PhaseLabels, Counter>,
    /// Request durations (head to end of response body).
    pub request_seconds: Histogram,
    /// Request body bytes.
    pub bytes_in: Counter,
    /// Response body bytes.
    pub bytes_out: Counter,
}

impl ListenerMetrics {
    /// Counts a client authentication outcome.
    pub fn client_auth(&self, status: &'static str, reason: &'static str) {
        self.client_auth
            .get_or_create(&ClientAuthLabels {
                listener: self.listener.clone(),
                status: status.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a connection closed at accept.
    pub fn connection_refused(&self, reason: &'static str) {
        self.conn_refused
            .get_or_create(&ReasonLabels {
                listener: self.listener.clone(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a connection closed by a timeout after its handshake.
    pub fn timed_out(&self, phase: &'static str) {
        self.timed_out
            .get_or_create(&PhaseLabels {
                listener: self.listener.clone(),
                phase: phase.to_string(),
            })
            .inc();
    }

    /// Counts a plain-HTTP connection from a source not allowed.
    pub fn source_refused(&self) {
        self.sources_refused.inc();
    }

    /// Counts an admission decision on a CA-valid certificate.
    pub fn decision(&self, decision: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                listener: self.listener.clone(),
                decision: decision.to_string(),
            })
            .inc();
    }

    /// Counts an open connection closed because its client is no longer
    /// admitted.
    pub fn closed_by_policy(&self, reason: &'static str) {
        self.closed_by_policy
            .get_or_create(&ReasonLabels {
                listener: self.listener.clone(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts an answered request by its status class.
    pub fn request(&self, status: u16) {
        let i = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests_by_class[i].inc();
    }

    /// Counts an admitted handshake.
    pub fn handshake(&self, version: &'static str, cipher: &'static str, resumed: bool) {
        self.handshakes
            .get_or_create(&HandshakeLabels {
                listener: self.listener.clone(),
                version: version.to_string(),
                cipher: cipher.to_string(),
                resumed: resumed.to_string(),
            })
            .inc();
    }

    /// Counts a failed or refused handshake.
    pub fn handshake_failure(&self, reason: Failure) {
        self.handshake_failures
            .get_or_create(&ReasonLabels {
                listener: self.listener.clone(),
                reason: reason.as_str().to_string(),
            })
            .inc();
    }

    /// Counts an upstream failure (`connect_failed`, `connect_timeout`,
    /// `response_timeout`, `protocol`, `queue_timeout`, `all_down`).
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                upstream: self.upstream.clone(),
                kind: kind.to_string(),
            })
            .inc();
    }
}
