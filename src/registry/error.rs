//! Registry errors, in the words the admin API answers with.

use std::path::PathBuf;
use thiserror::Error;

use super::StoreError;

/// A registry operation failed.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// No such device.
    #[error("no device with fingerprint {0}")]
    NotFound(String),
    /// Not a fingerprint.
    #[error("\"{0}\" is not a fingerprint; give the 64 hex digits of the certificate's SHA-256")]
    BadFingerprint(String),
    /// An import names something certgate cannot take.
    #[error("nothing was imported: {0}")]
    BadImport(String),
    /// The store refused the write: nothing changed.
    #[error("the change was NOT saved: {0}")]
    Store(#[from] StoreError),
    /// The audit log cannot be opened for appending: nothing changed (a
    /// change that could not be audited is not made).
    #[error(
        "the change was NOT saved: the audit log {path} cannot be opened for appending: {message} \
         (check the directory's permissions and free space)"
    )]
    AuditUnavailable {
        /// The audit log.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The change is saved but the audit log could not be written.
    #[error("the change was saved, but the audit log {path} could not be written: {message}")]
    Audit {
        /// The audit log.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The registry task is gone (shutting down).
    #[error("the registry is shutting down")]
    Closed,
}
