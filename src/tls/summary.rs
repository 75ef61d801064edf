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

impl CertSummary {
    /// The summary of a DER certificate; `None` when it is not X.509.
    pub(crate) fn from_der(der: &[u8]) -> Option<CertSummary> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, x509) = X509Certificate::from_der(der).ok()?;
        Some(CertSummary {
            fingerprint: crate::identity::sha256_hex(der),
            subject: crate::dn::rfc4514_subject(&x509),
            not_after: x509.validity().not_after.timestamp(),
        })
    }
}
