//! What certgate reports about the certificates and CRLs it loaded
//! (expiry gauges, staleness, warnings).

/// What we report about a loaded certificate.
#[derive(Debug, Clone)]
pub struct CertSummary {
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    /// Subject, RFC 4514.
    pub subject: String,
    /// Expiry, seconds since the Unix epoch.
    pub not_after: i64,
}
