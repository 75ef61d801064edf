//! Every default value of the config, in one place (the annotated
//! config and the README table name the same).

use std::time::Duration;

/// Default TLS handshake timeout: long enough for a slow device on a bad
/// link, short enough that idle half-open sockets do not pile up.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a client has to send a complete request head (HTTP/1) and,
/// on a keep-alive connection, to start its next request.
pub const DEFAULT_REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a connection may sit with no request in flight and no I/O.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default limit on a request head (request line + headers), in bytes.
pub const DEFAULT_MAX_REQUEST_HEADER_BYTES: usize = 64 * 1024;
/// Default limit on the number of request headers.
pub const DEFAULT_MAX_REQUEST_HEADERS: usize = 100;
/// Default cap on concurrent connections per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default TCP connect timeout toward a backend server.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a backend has to send its response head.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time an idle pooled backend connection is kept.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Default number of idle pooled connections kept per upstream.
pub const DEFAULT_POOL_MAX_IDLE: usize = 256;
/// Default cap on requests in flight to one upstream. A legacy backend that
/// thousands of agents reach at once after an outage must not be handed
/// thousands of new connections in the same second (nginx's backend here
/// runs out of worker connections); beyond the cap requests queue.
pub const DEFAULT_UPSTREAM_MAX_CONNECTIONS: usize = 512;
/// Default time a request may wait for an upstream connection slot.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default consecutive connect failures after which a server of a
/// multi-server upstream is taken out of rotation (nginx's `max_fails`).
pub const DEFAULT_MAX_FAILS: u32 = 1;
/// Default time an ejected server stays out of rotation before it gets
/// a request again (nginx's `fail_timeout`).
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time between two active health checks of a server.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// Default time one health check may take.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Default longest request target (nginx refuses longer ones with 414 at
/// its default 8 KiB header buffers too).
pub const DEFAULT_MAX_URI_BYTES: usize = 8192;
/// Default time in-flight requests get to finish after SIGTERM/SIGINT.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How often an instance of a shared registry reads it whole again.
pub const DEFAULT_RESYNC_EVERY: Duration = Duration::from_secs(600);
/// Default capacity of the registry's update queue.
pub const DEFAULT_UPDATE_QUEUE: usize = 65_536;
/// File name of the audit log when `registry.audit_log` is not given.
pub const AUDIT_LOG_NAME: &str = "audit.log";
/// Default number of TLS 1.2 sessions kept for session-ID resumption: one
/// per agent of a 50,000-agent fleet, because Windows 7 SChannel, Java 8
/// and Safari resume only this way (no tickets). A cached session costs
/// about 1 KB plus the device certificate (`benches/session_cache.rs`:
/// 56 MiB for 50,000 ECDSA devices, 75 MiB for RSA ones) and is only spent
/// as agents connect.
pub const DEFAULT_SESSION_CACHE: usize = 50_000;
/// How often a fetched CRL is fetched again at most apart (and sooner when
/// its nextUpdate comes first).
pub const DEFAULT_CRL_REFRESH: Duration = Duration::from_secs(3600);
/// The folder for fetched CRLs when `crl_cache_dir` is not set, next to
/// `registry.path`.
pub const CRL_CACHE_NAME: &str = "crl-cache";
/// How long the first connection of a new device waits for OCSP.
pub const DEFAULT_OCSP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after its current certificate expired a device may still
/// renew into its lineage (`renewal_grace`).
pub const DEFAULT_RENEWAL_GRACE: Duration = Duration::from_secs(30 * 86_400);
/// How long a device's old certificate is still admitted once its
/// renewal has been used (`supersede_grace`).
pub const DEFAULT_SUPERSEDE_GRACE: Duration = Duration::from_secs(7 * 86_400);
/// Largest CRL response accepted, in bytes.
pub const CRL_MAX_BYTES: usize = 16 * 1024 * 1024;

// hyper refuses a read buffer smaller than this; a smaller header limit
// would otherwise panic at startup.
pub(super) const MIN_HEADER_BYTES: usize = 8 * 1024;

// ---------------------------------------------------------------------------
// Raw TOML shape
// ---------------------------------------------------------------------------
