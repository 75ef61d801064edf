//! What the verifier learned during one handshake, passed to the task
//! that runs it.

use crate::admission::{Failure, Verdict};

tokio::task_local! {
    /// What the verifier learned during one handshake, for the connection
    /// task that runs it: the accept future runs inside `HANDSHAKE.scope`.
    /// rustls's verifier API has no per-connection context, and the peer
    /// address (for logs and the registry) is only known to that task.
    pub static HANDSHAKE: std::cell::RefCell<HandshakeNote>;
}

/// See [`HANDSHAKE`].
#[derive(Debug, Default)]
pub(crate) struct HandshakeNote {
    /// Fingerprint of the client certificate the verifier saw.
    pub fingerprint: Option<[u8; 32]>,
    /// The policy verdict, when the certificate passed CA validation.
    pub verdict: Option<Verdict>,
    /// The certificate, kept when the registry may need to create a record.
    pub der: Option<Vec<u8>>,
    /// Why CA validation (chain, validity, CRL) failed, if it did.
    pub ca_failure: Option<Failure>,
    /// Why no server certificate fitted the client (a key type it needs
    /// and the name lacks, or only CBC suites offered), noted by the
    /// certificate resolver.
    pub no_usable_certificate: Option<Failure>,
    /// Fingerprint of the device whose stored session (cache entry or
    /// ticket) this handshake resumes.
    pub resumed: Option<[u8; 32]>,
    /// A device not seen before whose OCSP answer is on its way: the
    /// connection waits for it (up to the timeout) before serving.
    pub ocsp_wait: Option<OcspWait>,
}

/// An OCSP answer to wait for after the handshake, and what to do without
/// one.
#[derive(Debug)]
pub(crate) struct OcspWait {
    /// The lookup.
    pub pending: crate::revocation::ocsp::Pending,
    /// `ocsp`.
    pub mode: crate::config::OcspMode,
    /// `ocsp_timeout`.
    pub timeout: std::time::Duration,
}
