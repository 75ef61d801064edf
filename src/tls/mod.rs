//! TLS policy: the crypto provider (versions and suites), loading server
//! certificates and keys, the SNI certificate store, the client-certificate
//! verifier (CA chain, CRL) and the device identity taken from a verified
//! certificate.
//!
//! Everything here is built whole from [`TlsSettings`](crate::config::TlsSettings)
//! into a [`ListenerTls`] and then only read: a connection takes the current
//! `ListenerTls` at accept and keeps it. This module does file I/O only while
//! building.
//!
//! # Layout
//! - [`provider`]: versions and suites.
//! - `files`, `sni`: server certificates and keys, chosen by SNI.
//! - `trust_files`, [`trust`]: client CAs and CRLs, checked at load; the verifier.
//! - `path`, `chain_cache`, `policy_verifier`, `sessions` (over
//!   `session_cache`): what runs in the
//!   handshake (path validation, revocation against the listener's
//!   [`crate::revocation`] set, admission).
//! - [`note`], [`failure`]: what a handshake tells its connection task.
//! - [`state`]: one listener's TLS state, built whole.

pub(crate) mod admin;
mod alert;
mod chain_cache;
mod delegate;
mod digest;
pub(crate) mod failure;
mod files;
pub(crate) mod hello;
pub(crate) mod key_kind;
pub(crate) mod note;
mod path;
mod policy_verifier;
pub(crate) mod provider;
mod session_cache;
mod sessions;
mod sni;
pub(crate) mod state;
pub(crate) mod stream;
pub(crate) mod summary;
pub(crate) mod trust;
mod trust_files;

pub(crate) use crate::dn::rfc4514_subject;
pub(crate) use failure::{failure_detail, failure_reason, reverify};
pub(crate) use note::{HANDSHAKE, HandshakeNote};
pub(crate) use provider::crypto_provider;
pub(crate) use sni::offers_only_cbc;
pub(crate) use state::ListenerTls;
pub(crate) use summary::CertSummary;
