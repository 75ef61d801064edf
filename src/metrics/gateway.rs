//! The metric families of one gateway process, created and registered
//! once, and what the controller, the admin API and the registry set.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry, Unit};

use super::labels::{
    AdminRefusedLabel, BuildLabels, CertLabels, ClientAuthLabels, CrlFetchLabels, CrlLabels,
    CrlSourceLabel, DecisionLabels, HandshakeLabels, ListenerLabel, PhaseLabels, ReasonLabels,
    RenewalLabel, RequestLabels, RequestTimeLabels, ResultLabel, ServerLabels, StatusLabel,
    UpstreamErrorLabels, WithinLabel,
};
use super::process::ProcessCollector;

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

/// All metric families of one gateway process.
#[derive(Debug)]
pub struct Metrics {
    pub(super) registry: Registry,
    pub(super) connections_accepted: Family<ListenerLabel, Counter>,
    pub(super) connections_limit: Family<ListenerLabel, Gauge>,
    pub(super) connections_limit_reached: Family<ListenerLabel, Counter>,
    pub(super) connections_active: Family<ListenerLabel, Gauge>,
    pub(super) connections_parked: Family<ListenerLabel, Gauge>,
    pub(super) handshakes: Family<HandshakeLabels, Counter>,
    pub(super) handshake_failures: Family<ReasonLabels, Counter>,
    pub(super) requests: Family<RequestLabels, Counter>,
    pub(super) upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub(super) closed_by_policy: Family<ReasonLabels, Counter>,
    pub(super) reloads: Family<ResultLabel, Counter>,
    pub(super) last_reload_ok: Gauge,
    pub(super) last_reload_success: Gauge,
    pub(super) cert_not_after: Family<CertLabels, Gauge>,
    /// The certificates behind `cert_not_after`, for the console.
    certificates: std::sync::Mutex<Vec<CertExpiry>>,
    pub(super) devices: Family<StatusLabel, Gauge>,
    pub(super) decisions: Family<DecisionLabels, Counter>,
    pub(super) registry_dropped: Counter,
    pub(super) registry_write_errors: Counter,
    pub(super) device_renewals: Family<RenewalLabel, Counter>,
    pub(super) certificates_expiring: Family<WithinLabel, Gauge>,
    pub(super) client_auth: Family<ClientAuthLabels, Counter>,
    pub(super) sources_refused: Family<ListenerLabel, Counter>,
    pub(super) admin_refused: Family<AdminRefusedLabel, Counter>,
    pub(super) readiness_dropped: Counter,
    pub(super) server_up: Family<ServerLabels, Gauge>,
    pub(super) crl_next_update: Family<CrlLabels, Gauge>,
    pub(super) crl_stale: Family<CrlLabels, Gauge>,
    pub(super) crl_state: std::sync::Mutex<Vec<(CrlLabels, Option<i64>)>>,
    pub(super) crl_number: Family<CrlLabels, Gauge>,
    pub(super) crl_fetches: Family<CrlFetchLabels, Counter>,
    pub(super) crl_last_success: Family<CrlSourceLabel, Gauge>,
    pub(super) ocsp_answers: Family<ResultLabel, Counter>,
    pub(super) handshake_seconds: Family<ListenerLabel, Histogram>,
    pub(super) conn_refused: Family<ReasonLabels, Counter>,
    pub(super) timed_out: Family<PhaseLabels, Counter>,
    pub(super) request_seconds: Family<RequestTimeLabels, Histogram>,
    pub(super) bytes_in: Family<ListenerLabel, Counter>,
    pub(super) bytes_out: Family<ListenerLabel, Counter>,
}

fn seconds_histogram() -> Histogram {
    // 0.5 ms .. ~65 s: handshakes are milliseconds, requests up to the
    // response timeout.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Registers a metric that starts empty (a family, a counter, a gauge).
fn add<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    add_metric(registry, name, help, None, M::default())
}

/// Registers `metric`, with its unit if it has one.
fn add_metric<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: M,
) -> M {
    match unit {
        Some(u) => registry.register_with_unit(name, help, u, metric.clone()),
        None => registry.register(name, help, metric.clone()),
    }
    metric
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
        let mut metrics = Metrics {
            connections_accepted: add(
                &mut registry,
                "connections_accepted",
                "TCP connections accepted",
            ),
            connections_limit: add(
                &mut registry,
                "connections_limit",
                "The listener's max_connections; beyond it new connections wait in the kernel backlog",
            ),
            connections_limit_reached: add(
                &mut registry,
                "connections_limit_reached",
                "Times a listener was full (max_connections open) and stopped accepting until a connection closed",
            ),
            connections_active: add(
                &mut registry,
                "connections_active",
                "Connections currently open",
            ),
            connections_parked: add(
                &mut registry,
                "connections_parked",
                "Open keep-alive connections idle long enough to hold no HTTP buffers while they wait for their next request",
            ),
            handshakes: add(
                &mut registry,
                "tls_handshakes",
                "Completed TLS handshakes that were admitted",
            ),
            handshake_failures: add(
                &mut registry,
                "tls_handshake_failures",
                "TLS handshakes that failed or were refused, by reason",
            ),
            requests: add(
                &mut registry,
                "http_requests",
                "HTTP requests answered, by status class",
            ),
            upstream_errors: add(
                &mut registry,
                "upstream_errors",
                "Requests that got no usable response from the upstream, by kind",
            ),
            closed_by_policy: add(
                &mut registry,
                "connections_closed_by_policy",
                "Open connections closed because a reload stopped admitting their client (CA, CRL or policy change), by reason",
            ),
            reloads: add(
                &mut registry,
                "reloads",
                "Reloads attempted (file change, SIGHUP, admin call), by result",
            ),
            last_reload_ok: add(
                &mut registry,
                "config_last_reload_successful",
                "Whether the last reload attempt succeeded (1) or was refused (0)",
            ),
            last_reload_success: add(
                &mut registry,
                "config_last_reload_success_timestamp_seconds",
                "When the configuration in force was loaded, seconds since the Unix epoch",
            ),
            certificates: std::sync::Mutex::new(Vec::new()),
            cert_not_after: add(
                &mut registry,
                "certificate_not_after_timestamp_seconds",
                "Expiry of each served certificate and trusted client CA, seconds since the Unix epoch",
            ),
            devices: add(
                &mut registry,
                "devices",
                "Devices in the registry, by status",
            ),
            decisions: add(
                &mut registry,
                "registry_decisions",
                "Admission decisions on CA-valid client certificates: approved, auto, rule, renewal (admitted); unapproved, blocked, not_allowed, superseded (refused)",
            ),
            registry_dropped: add(
                &mut registry,
                "registry_updates_dropped",
                "Handshake updates (first/last seen) dropped because the registry queue was full",
            ),
            registry_write_errors: add(
                &mut registry,
                "registry_write_errors",
                "Device store writes that failed",
            ),
            device_renewals: add(
                &mut registry,
                "device_renewals",
                "Certificates not seen before that the renewal rule matched to a device: inherited (joined an approved or pending device), blocked (a blocked device's renewal), ambiguous (several approved devices share the identity; nothing inherited)",
            ),
            certificates_expiring: add(
                &mut registry,
                "device_certificates_expiring",
                "Approved devices seen in the last 30 days whose current certificate expires within 7d, 30d or 90d and that have no successor yet",
            ),
            client_auth: add(
                &mut registry,
                "client_auth",
                "Client authentication outcomes: status authenticated, unapproved, blocked, no_credentials or failed, with the reason",
            ),
            sources_refused: add(
                &mut registry,
                "plain_http_sources_refused",
                "Connections to a plain-HTTP listener from a source outside its allow_from (answered 403)",
            ),
            admin_refused: add(
                &mut registry,
                "admin_requests_refused",
                "Admin API requests refused before they ran: reason host (Host names another site: DNS rebinding), origin or fetch_site (sent by another site's page), content_type (a form or text body), token (missing or wrong bearer token)",
            ),
            readiness_dropped: add(
                &mut registry,
                "readiness_events_dropped",
                "Connection classifications not counted in the readiness report because its queue was full",
            ),
            server_up: add(
                &mut registry,
                "upstream_server_up",
                "Whether an upstream server is in rotation (1): passing its health check and not taken out after failed connects",
            ),
            crl_next_update: add(
                &mut registry,
                "crl_next_update_timestamp_seconds",
                "nextUpdate of each loaded CRL, seconds since the Unix epoch",
            ),
            crl_stale: add(
                &mut registry,
                "crl_stale",
                "Whether a loaded CRL is past its nextUpdate (1) or current (0)",
            ),
            crl_number: add(
                &mut registry,
                "crl_number",
                "cRLNumber of the CRL in force for each issuer (the base CRL's; with a delta, the delta's)",
            ),
            crl_fetches: add(
                &mut registry,
                "crl_fetch",
                "CRL fetches by source URL and result: updated, not_modified, unchanged, or why the answer was refused (connect_error, timeout, http_status, too_large, redirects, http_error, bad_crl, bad_signature, older, not_a_crl_for_this_listener)",
            ),
            ocsp_answers: add(
                &mut registry,
                "ocsp_answers",
                "OCSP lookups about device certificates by result: good, revoked, unknown, or error (no valid answer: the responder is down, slow, or its answer does not verify)",
            ),
            crl_last_success: add(
                &mut registry,
                "crl_last_success_timestamp",
                "When each CRL source last answered with a usable CRL (or confirmed it unchanged), seconds since the Unix epoch",
            ),
            handshake_seconds: add_metric(
                &mut registry,
                "tls_handshake_duration",
                "Time from accept to the end of an admitted TLS handshake",
                Some(Unit::Seconds),
                Family::<ListenerLabel, Histogram>::new_with_constructor(
                    seconds_histogram as fn() -> Histogram,
                ),
            ),
            conn_refused: add(
                &mut registry,
                "connections_refused",
                "Connections closed at accept, before TLS, by reason (per_source_limit, handshake_rate, proxy_from, proxy_header)",
            ),
            timed_out: add(
                &mut registry,
                "connections_timed_out",
                "Connections closed by a timeout after the handshake, by phase (request_header: a slow or stalled request head; idle: no request for idle_timeout, or none on a keep-alive connection within request_header_timeout)",
            ),
            request_seconds: add_metric(
                &mut registry,
                "http_request_duration",
                "Time from request head to the end of the response body",
                Some(Unit::Seconds),
                Family::<RequestTimeLabels, Histogram>::new_with_constructor(
                    seconds_histogram as fn() -> Histogram,
                ),
            ),
            bytes_in: add_metric(
                &mut registry,
                "http_request_body",
                "Request body bytes received from clients",
                Some(Unit::Bytes),
                Family::<ListenerLabel, Counter>::default(),
            ),
            bytes_out: add_metric(
                &mut registry,
                "http_response_body",
                "Response body bytes sent to clients",
                Some(Unit::Bytes),
                Family::<ListenerLabel, Counter>::default(),
            ),
            crl_state: std::sync::Mutex::new(Vec::new()),
            // Moved in below, once everything is registered on it.
            registry: Registry::default(),
        };
        registry.register_collector(Box::new(ProcessCollector {
            start: crate::clock::now_unix(),
        }));
        // A gauge at 1 rather than an OpenMetrics `info` metric: the
        // Prometheus text parser (promtool, older scrapers) does not know
        // the `info` type.
        let info = Family::<BuildLabels, Gauge>::default();
        info.get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION").to_string(),
            commit: env!("CERTGATE_COMMIT").to_string(),
        })
        .set(1);
        registry.register("build_info", "certgate build information", info);
        metrics.registry = registry;
        for r in ["success", "failure"] {
            metrics
                .reloads
                .get_or_create(&ResultLabel { result: r.into() })
                .inc_by(0);
        }
        // Present from the start, so a dashboard panel or a rate() over
        // them shows 0 on a healthy gateway instead of "No data".
        for r in ["good", "revoked", "unknown", "error"] {
            metrics
                .ocsp_answers
                .get_or_create(&ResultLabel { result: r.into() })
                .inc_by(0);
        }
        metrics
    }

    /// Replaces the CRL series of every listener: (listener, issuer,
    /// nextUpdate, cRLNumber). Listeners not named lose theirs.
    pub fn set_crls(&self, crls: &[(String, String, Option<i64>, Option<i64>)]) {
        self.replace_crls(|_| true, crls);
    }

    /// Replaces the CRL series of one listener (a fetched CRL changed).
    pub fn set_listener_crls(&self, listener: &str, crls: &[(String, Option<i64>, Option<i64>)]) {
        let rows: Vec<(String, String, Option<i64>, Option<i64>)> = crls
            .iter()
            .map(|(i, n, num)| (listener.to_string(), i.clone(), *n, *num))
            .collect();
        self.replace_crls(|l| l.listener == listener, &rows);
    }

    fn replace_crls(
        &self,
        replaced: impl Fn(&CrlLabels) -> bool,
        crls: &[(String, String, Option<i64>, Option<i64>)],
    ) {
        let Ok(mut state) = self.crl_state.lock() else {
            return;
        };
        for (labels, _) in state.iter().filter(|(l, _)| replaced(l)) {
            self.crl_next_update.remove(labels);
            self.crl_stale.remove(labels);
            self.crl_number.remove(labels);
        }
        state.retain(|(l, _)| !replaced(l));
        for (l, i, next, number) in crls {
            let labels = CrlLabels {
                listener: l.clone(),
                issuer: i.clone(),
            };
            if let Some(n) = next {
                self.crl_next_update.get_or_create(&labels).set(*n);
            }
            if let Some(n) = number {
                self.crl_number.get_or_create(&labels).set(*n);
            }
            state.push((labels, *next));
        }
        drop(state);
        self.update_crl_staleness();
    }

    /// Counts one CRL fetch of `source` with its `result`.
    pub fn crl_fetched(&self, source: &str, result: &str) {
        self.crl_fetched_by(source, result, 1);
    }

    /// Counts `n` CRL fetches of `source` with its `result` (0 creates the
    /// series).
    pub fn crl_fetched_by(&self, source: &str, result: &str, n: u64) {
        self.crl_fetches
            .get_or_create(&CrlFetchLabels {
                source: source.to_string(),
                result: result.to_string(),
            })
            .inc_by(n);
    }

    /// Counts one OCSP lookup with its result.
    pub fn ocsp_answered(&self, result: &str) {
        self.ocsp_answers
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// Records when `source` last gave a usable answer.
    pub fn crl_success(&self, source: &str, at: i64) {
        self.crl_last_success
            .get_or_create(&CrlSourceLabel {
                source: source.to_string(),
            })
            .set(at);
    }

    /// Staleness depends on the clock, not on a reload: computed at scrape.
    pub(super) fn update_crl_staleness(&self) {
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
            renewals: ["inherited", "blocked", "ambiguous"].map(|r| {
                self.device_renewals
                    .get_or_create(&RenewalLabel { result: r.into() })
                    .clone()
            }),
            expiring: ["7d", "30d", "90d"].map(|w| {
                self.certificates_expiring
                    .get_or_create(&WithinLabel { within: w.into() })
                    .clone()
            }),
        }
    }

    /// Records the configuration loaded at start as a successful load.
    pub fn loaded(&self, unix_seconds: i64) {
        self.last_reload_ok.set(1);
        self.last_reload_success.set(unix_seconds);
    }

    /// The served certificates and trusted client CAs, with their expiry.
    pub fn certificates(&self) -> Vec<CertExpiry> {
        self.certificates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the last reload attempt succeeded, and when the config in
    /// force was loaded (Unix seconds).
    pub fn last_reload(&self) -> (bool, i64) {
        (
            self.last_reload_ok.get() == 1,
            self.last_reload_success.get(),
        )
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
        *self.certificates.lock().unwrap_or_else(|p| p.into_inner()) = certs.to_vec();
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
}
