//! Prometheus metrics, with the official `prometheus-client`.
//!
//! Label values are bounded: listener and upstream names from the config,
//! fixed reason and status-class words. Never a peer address or a device
//! fingerprint. Hot paths hold pre-resolved handles ([`ListenerMetrics`]) so
//! a request does no label lookup.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::admission::Failure;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    listener: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdminRefusedLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    listener: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    listener: String,
    version: String,
    cipher: String,
    resumed: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: String,
    upstream: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    upstream: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    listener: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientAuthLabels {
    listener: String,
    status: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    upstream: String,
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CrlLabels {
    listener: String,
    issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    listener: String,
    role: String,
    subject: String,
}

/// One certificate whose expiry is exported.
#[derive(Debug, Clone)]
pub struct CertExpiry {
    /// Listener that serves or trusts it.
    pub listener: String,
    /// `server` (served to clients) or `client_ca` (trusted for devices).
    pub role: &'static str,
    /// Subject, RFC 4514.
    pub subject: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// All metric families of one gateway process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections_accepted: Family<ListenerLabel, Counter>,
    connections_limit: Family<ListenerLabel, Gauge>,
    connections_limit_reached: Family<ListenerLabel, Counter>,
    connections_active: Family<ListenerLabel, Gauge>,
    handshakes: Family<HandshakeLabels, Counter>,
    handshake_failures: Family<ReasonLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    closed_by_policy: Family<ReasonLabels, Counter>,
    reloads: Family<ResultLabel, Counter>,
    last_reload_ok: Gauge,
    last_reload_success: Gauge,
    cert_not_after: Family<CertLabels, Gauge>,
    devices: Family<StatusLabel, Gauge>,
    decisions: Family<DecisionLabels, Counter>,
    registry_dropped: Counter,
    registry_write_errors: Counter,
    client_auth: Family<ClientAuthLabels, Counter>,
    sources_refused: Family<ListenerLabel, Counter>,
    admin_refused: Family<AdminRefusedLabel, Counter>,
    readiness_dropped: Counter,
    server_up: Family<ServerLabels, Gauge>,
    crl_next_update: Family<CrlLabels, Gauge>,
    crl_stale: Family<CrlLabels, Gauge>,
    crl_state: std::sync::Mutex<Vec<(CrlLabels, Option<i64>)>>,
    handshake_seconds: Family<ListenerLabel, Histogram>,
    conn_refused: Family<ReasonLabels, Counter>,
    timed_out: Family<PhaseLabels, Counter>,
    request_seconds: Family<RequestTimeLabels, Histogram>,
    bytes_in: Family<ListenerLabel, Counter>,
    bytes_out: Family<ListenerLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestTimeLabels {
    listener: String,
    upstream: String,
}

fn seconds_histogram() -> Histogram {
    // 0.5 ms .. ~65 s: handshakes are milliseconds, requests up to the
    // response timeout.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Process metrics read from /proc at scrape time (prometheus-client has
/// no process collector).
#[derive(Debug)]
struct ProcessCollector {
    start: i64,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let rss_kib: i64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count())
            .unwrap_or(0) as i64;
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // utime and stime are fields 14 and 15, after the ")" that ends the
        // command name; the clock tick is 100 Hz on Linux.
        let cpu = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect::<Vec<_>>())
            .map(|f| {
                let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                (t(11) + t(12)) / 100.0
            })
            .unwrap_or(0.0);
        let rss = ConstGauge::new(rss_kib * 1024);
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory",
            "Resident memory",
            Some(&Unit::Bytes),
            rss.metric_type(),
        )?)?;
        let open = ConstGauge::new(fds);
        open.encode(encoder.encode_descriptor(
            "process_open_fds",
            "Open file descriptors",
            None,
            open.metric_type(),
        )?)?;
        let cpu = ConstCounter::new(cpu);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "User and system CPU time",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let start = ConstGauge::new(self.start);
        start.encode(encoder.encode_descriptor(
            "process_start_time",
            "Start time, seconds since the Unix epoch",
            Some(&Unit::Seconds),
            start.metric_type(),
        )?)?;
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("certgate");
        let connections_accepted = Family::<ListenerLabel, Counter>::default();
        registry.register(
            "connections_accepted",
            "TCP connections accepted",
            connections_accepted.clone(),
        );
        let connections_limit = Family::<ListenerLabel, Gauge>::default();
        registry.register(
            "connections_limit",
            "The listener's max_connections; beyond it new connections wait in the kernel backlog",
            connections_limit.clone(),
        );
        let connections_limit_reached = Family::<ListenerLabel, Counter>::default();
        registry.register(
            "connections_limit_reached",
            "Times a listener was full (max_connections open) and stopped accepting until a connection closed",
            connections_limit_reached.clone(),
        );
        let connections_active = Family::<ListenerLabel, Gauge>::default();
        registry.register(
            "connections_active",
            "Connections currently open",
            connections_active.clone(),
        );
        let handshakes = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "Completed TLS handshakes that were admitted",
            handshakes.clone(),
        );
        let handshake_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or were refused, by reason",
            handshake_failures.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by status class",
            requests.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Requests that got no usable response from the upstream, by kind",
            upstream_errors.clone(),
        );
        let closed_by_policy = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_closed_by_policy",
            "Open connections closed because a reload stopped admitting their client (CA, CRL or policy change), by reason",
            closed_by_policy.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reloads",
            "Reloads attempted (file change, SIGHUP, admin call), by result",
            reloads.clone(),
        );
        let last_reload_ok = Gauge::default();
        registry.register(
            "config_last_reload_successful",
            "Whether the last reload attempt succeeded (1) or was refused (0)",
            last_reload_ok.clone(),
        );
        let last_reload_success = Gauge::default();
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the configuration in force was loaded, seconds since the Unix epoch",
            last_reload_success.clone(),
        );
        let cert_not_after = Family::<CertLabels, Gauge>::default();
        registry.register(
            "certificate_not_after_timestamp_seconds",
            "Expiry of each served certificate and trusted client CA, seconds since the Unix epoch",
            cert_not_after.clone(),
        );
        let devices = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "devices",
            "Devices in the registry, by status",
            devices.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "registry_decisions",
            "Admission decisions on CA-valid client certificates: approved, auto, rule (admitted); unapproved, blocked, not_allowed (refused)",
            decisions.clone(),
        );
        let registry_dropped = Counter::default();
        registry.register(
            "registry_updates_dropped",
            "Handshake updates (first/last seen) dropped because the registry queue was full",
            registry_dropped.clone(),
        );
        let registry_write_errors = Counter::default();
        registry.register(
            "registry_write_errors",
            "Device store writes that failed",
            registry_write_errors.clone(),
        );
        let client_auth = Family::<ClientAuthLabels, Counter>::default();
        registry.register(
            "client_auth",
            "Client authentication outcomes: status authenticated, unapproved, blocked, no_credentials or failed, with the reason",
            client_auth.clone(),
        );
        let sources_refused = Family::<ListenerLabel, Counter>::default();
        registry.register(
            "plain_http_sources_refused",
            "Connections to a plain-HTTP listener from a source outside its allow_from (answered 403)",
            sources_refused.clone(),
        );
        let admin_refused = Family::<AdminRefusedLabel, Counter>::default();
        registry.register(
            "admin_requests_refused",
            "Admin API requests refused before they ran: reason host (Host names another site: DNS rebinding), origin or fetch_site (sent by another site's page), content_type (a form or text body), token (missing or wrong bearer token)",
            admin_refused.clone(),
        );
        let readiness_dropped = Counter::default();
        registry.register(
            "readiness_events_dropped",
            "Connection classifications not counted in the readiness report because its queue was full",
            readiness_dropped.clone(),
        );
        let server_up = Family::<ServerLabels, Gauge>::default();
        registry.register(
            "upstream_server_up",
            "Whether an upstream server is in rotation (1): passing its health check and not taken out after failed connects",
            server_up.clone(),
        );
        let crl_next_update = Family::<CrlLabels, Gauge>::default();
        registry.register(
            "crl_next_update_timestamp_seconds",
            "nextUpdate of each loaded CRL, seconds since the Unix epoch",
            crl_next_update.clone(),
        );
        let crl_stale = Family::<CrlLabels, Gauge>::default();
        registry.register(
            "crl_stale",
            "Whether a loaded CRL is past its nextUpdate (1) or current (0)",
            crl_stale.clone(),
        );
        let handshake_seconds = Family::<ListenerLabel, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "tls_handshake_duration",
            "Time from accept to the end of an admitted TLS handshake",
            Unit::Seconds,
            handshake_seconds.clone(),
        );
        let conn_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at accept, before TLS, by reason (per_source_limit, handshake_rate)",
            conn_refused.clone(),
        );
        let timed_out = Family::<PhaseLabels, Counter>::default();
        registry.register(
            "connections_timed_out",
            "Connections closed by a timeout after the handshake, by phase (request_header: a slow or stalled request head; idle: no request for idle_timeout, or none on a keep-alive connection within request_header_timeout)",
            timed_out.clone(),
        );
        let request_seconds = Family::<RequestTimeLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from request head to the end of the response body",
            Unit::Seconds,
            request_seconds.clone(),
        );
        let bytes_in = Family::<ListenerLabel, Counter>::default();
        registry.register_with_unit(
            "http_request_body",
            "Request body bytes received from clients",
            Unit::Bytes,
            bytes_in.clone(),
        );
        let bytes_out = Family::<ListenerLabel, Counter>::default();
        registry.register_with_unit(
            "http_response_body",
            "Response body bytes sent to clients",
            Unit::Bytes,
            bytes_out.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector {
            start: crate::clock::now_unix(),
        }));
        for r in ["success", "failure"] {
            reloads
                .get_or_create(&ResultLabel { result: r.into() })
                .inc_by(0);
        }
        // A gauge at 1 rather than an OpenMetrics `info` metric: the
        // Prometheus text parser (promtool, older scrapers) does not know
        // the `info` type.
        let info = Family::<BuildLabels, Gauge>::default();
        info.get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .set(1);
        registry.register("build_info", "certgate build information", info);
        Metrics {
            registry,
            connections_accepted,
            connections_limit,
            connections_limit_reached,
            connections_active,
            handshakes,
            handshake_failures,
            requests,
            upstream_errors,
            closed_by_policy,
            reloads,
            last_reload_ok,
            last_reload_success,
            cert_not_after,
            devices,
            decisions,
            registry_dropped,
            registry_write_errors,
            client_auth,
            sources_refused,
            admin_refused,
            readiness_dropped,
            server_up,
            crl_next_update,
            crl_stale,
            crl_state: std::sync::Mutex::new(Vec::new()),
            handshake_seconds,
            conn_refused,
            timed_out,
            request_seconds,
            bytes_in,
            bytes_out,
        }
    }

    /// Replaces the CRL series: (listener, issuer, nextUpdate).
    pub fn set_crls(&self, crls: &[(String, String, Option<i64>)]) {
        self.crl_next_update.clear();
        self.crl_stale.clear();
        let state: Vec<(CrlLabels, Option<i64>)> = crls
            .iter()
            .map(|(l, i, n)| {
                (
                    CrlLabels {
                        listener: l.clone(),
                        issuer: i.clone(),
                    },
                    *n,
                )
            })
            .collect();
        for (labels, next) in &state {
            if let Some(n) = next {
                self.crl_next_update.get_or_create(labels).set(*n);
            }
        }
        if let Ok(mut s) = self.crl_state.lock() {
            *s = state;
        }
        self.update_crl_staleness();
    }

    /// Staleness depends on the clock, not on a reload: computed at scrape.
    fn update_crl_staleness(&self) {
        let now = crate::clock::now_unix();
        if let Ok(s) = self.crl_state.lock() {
            for (labels, next) in s.iter() {
                let stale = next.is_some_and(|n| n < now);
                self.crl_stale.get_or_create(labels).set(i64::from(stale));
            }
        }
    }

    /// The up gauges of an upstream's servers, in order. Servers start as
    /// in rotation; health checks and failed connects change them.
    pub fn server_up(&self, upstream: &str, servers: &[std::net::SocketAddr]) -> Vec<Gauge> {
        servers
            .iter()
            .map(|s| {
                self.server_up
                    .get_or_create(&ServerLabels {
                        upstream: upstream.to_string(),
                        server: s.to_string(),
                    })
                    .clone()
            })
            .collect()
    }

    /// Drops the up gauge of a server a reload removed from `upstream`.
    pub fn forget_server(&self, upstream: &str, server: std::net::SocketAddr) {
        self.server_up.remove(&ServerLabels {
            upstream: upstream.to_string(),
            server: server.to_string(),
        });
    }

    /// Counts an admin request refused with `reason`.
    pub fn admin_refused(&self, reason: &'static str) {
        self.admin_refused
            .get_or_create(&AdminRefusedLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The counter of dropped readiness events.
    pub fn readiness_dropped(&self) -> Counter {
        self.readiness_dropped.clone()
    }

    /// Handles for the device registry.
    pub fn registry(&self) -> crate::registry::RegistryMetrics {
        let status = |s: &str| {
            self.devices
                .get_or_create(&StatusLabel { status: s.into() })
                .clone()
        };
        crate::registry::RegistryMetrics {
            devices: [status("pending"), status("approved"), status("blocked")],
            dropped: self.registry_dropped.clone(),
            write_errors: self.registry_write_errors.clone(),
        }
    }

    /// Records the configuration loaded at start as a successful load.
    pub fn loaded(&self, unix_seconds: i64) {
        self.last_reload_ok.set(1);
        self.last_reload_success.set(unix_seconds);
    }

    /// Counts a reload attempt.
    pub fn reload(&self, ok: bool, unix_seconds: i64) {
        let result = if ok { "success" } else { "failure" };
        self.reloads
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
        if ok {
            self.loaded(unix_seconds);
        } else {
            self.last_reload_ok.set(0);
        }
    }

    /// Replaces the certificate expiry series with `certs`: series of
    /// certificates no longer loaded disappear.
    pub fn set_certificates(&self, certs: &[CertExpiry]) {
        self.cert_not_after.clear();
        for c in certs {
            self.cert_not_after
                .get_or_create(&CertLabels {
                    listener: c.listener.clone(),
                    role: c.role.into(),
                    subject: c.subject.clone(),
                })
                .set(c.not_after);
        }
    }

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
        ListenerMetrics {
            listener: listener.to_string(),
            upstream: upstream.to_string(),
            accepted: self.connections_accepted.get_or_create(&l).clone(),
            limit: self.connections_limit.get_or_create(&l).clone(),
            limit_reached: self.connections_limit_reached.get_or_create(&l).clone(),
            active: self.connections_active.get_or_create(&l).clone(),
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

    /// The Prometheus text format (0.0.4) of every metric, for scrapers and
    /// tools that do not ask for OpenMetrics (promtool, curl): counter
    /// families are named with their `_total` suffix, and the OpenMetrics
    /// `# UNIT` and `# EOF` lines are left out. Hand-written because
    /// prometheus-client only speaks OpenMetrics.
    pub fn encode_text(&self) -> String {
        let om = self.encode();
        let counters: std::collections::HashSet<&str> = om
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(om.len());
        for line in om.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
                let rest = line.strip_prefix(p)?;
                let (name, tail) = rest.split_once(' ')?;
                counters
                    .contains(name)
                    .then(|| format!("{p}{name}_total {tail}"))
            });
            match renamed {
                Some(l) => out.push_str(&l),
                None => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }

    /// The text exposition format (OpenMetrics) of every metric.
    pub fn encode(&self) -> String {
        self.update_crl_staleness();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
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
