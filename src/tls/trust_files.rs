//! The client CAs and CRLs of a listener, read and checked once per
//! (re)load, and the client-certificate verifier built from them.

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use std::collections::HashMap;
use std::sync::Arc;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::admission::Policy;
use crate::config::{ClientAuthMode, ConfigPath, TlsSettings};
use crate::error::ConfigError;

use super::chain_cache::ChainCache;
use super::digest::finish;
use super::files::{file_error, read_crls, read_pem_certs};
use super::{CertSummary, CrlSummary, rfc4514_subject, trust};
use crate::identity::sha256_hex;

/// The client CA and CRL files of a listener, read once per (re)load.
pub(super) struct TrustFiles {
    pub(super) cas: Vec<(String, ConfigPath, Vec<CertificateDer<'static>>)>,
    /// Each CRL with the config key and file it came from.
    pub(super) crls: Vec<(String, ConfigPath, CertificateRevocationListDer<'static>)>,
    pub(super) summaries: Vec<CrlSummary>,
    pub(super) digest: [u8; 32],
}

pub(super) type Verified = (Option<Arc<dyn ClientCertVerifier>>, Vec<CertSummary>);

impl TrustFiles {
    pub(super) fn read(
        listener: &str,
        settings: &TlsSettings,
        policy: Option<&Policy>,
    ) -> Result<TrustFiles, ConfigError> {
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        if let Some(p) = policy {
            digest.update(
                format!(
                    "policy:registry={};approval={:?};rules={:?};",
                    p.registry.is_some(),
                    p.approval,
                    p.rules
                )
                .as_bytes(),
            );
        }
        for v in &settings.versions {
            digest.update(format!("{v:?};").as_bytes());
        }
        digest.update(
            format!(
                "cache={};tickets={};mode={:?};",
                settings.session_cache, settings.session_tickets, settings.client_auth.mode
            )
            .as_bytes(),
        );
        digest.update(
            format!(
                "crl_stale={:?};require_crl={};",
                settings.client_auth.crl_stale, settings.client_auth.require_crl
            )
            .as_bytes(),
        );
        let mut files = TrustFiles {
            cas: Vec::new(),
            crls: Vec::new(),
            summaries: Vec::new(),
            digest: [0; 32],
        };
        if settings.client_auth.mode == ClientAuthMode::Off {
            files.digest = finish(digest);
            return Ok(files);
        }
        let mut errors = Vec::new();
        for (i, path) in settings.client_auth.ca.iter().enumerate() {
            let ctx = format!("listener \"{listener}\": client_auth.ca[{i}]");
            match read_pem_certs(&ctx, path) {
                Ok(certs) => {
                    // A certificate that is no CA here (the server's own, a
                    // device's) would refuse every device at handshake time.
                    for (j, c) in certs.iter().enumerate() {
                        if let Ok((_, x509)) = X509Certificate::from_der(c)
                            && let Some(why) = trust::not_a_ca(&x509)
                        {
                            errors.push(file_error(
                                ctx.clone(),
                                path,
                                format!(
                                    "certificate #{} (\"{}\") is not a CA certificate: {why}. \
                                     client_auth.ca must hold the CA that issues the device \
                                     certificates, not a server or device certificate",
                                    j + 1,
                                    rfc4514_subject(&x509)
                                ),
                            ));
                        }
                    }
                    digest.update(b"ca;");
                    for c in &certs {
                        digest.update(c);
                    }
                    files.cas.push((ctx, path.clone(), certs));
                }
                Err(e) => errors.push(e),
            }
        }
        for (i, path) in settings.client_auth.crl.iter().enumerate() {
            let ctx = format!("listener \"{listener}\": client_auth.crl[{i}]");
            match read_crls(&ctx, path) {
                Ok(c) => {
                    digest.update(b"crl;");
                    for crl in &c {
                        digest.update(crl);
                        if let Ok((_, parsed)) =
                            x509_parser::revocation_list::CertificateRevocationList::from_der(crl)
                        {
                            files.summaries.push(CrlSummary {
                                issuer: parsed.issuer().to_string(),
                                next_update: parsed.next_update().map(|t| t.timestamp()),
                            });
                        }
                    }
                    files
                        .crls
                        .extend(c.into_iter().map(|crl| (ctx.clone(), path.clone(), crl)));
                }
                Err(e) => errors.push(e),
            }
        }
        // A CRL is used only once it is known to come from one of these
        // CAs: one that does not verify would refuse that CA's whole fleet
        // at handshake time (RFC 5280 §6.3.3 (f)).
        let all_cas: Vec<CertificateDer<'static>> = files
            .cas
            .iter()
            .flat_map(|(_, _, certs)| certs.iter().cloned())
            .collect();
        for (ctx, path, crl) in &files.crls {
            if let Err(why) = trust::verify_crl(crl, &all_cas) {
                errors.push(file_error(ctx.clone(), path, why));
            }
        }
        if settings.client_auth.require_crl {
            let crls: Vec<_> = files.crls.iter().map(|(_, _, c)| c.clone()).collect();
            for subject in trust::without_crl(&all_cas, &crls) {
                errors.push(ConfigError::Invalid {
                    context: format!("listener \"{listener}\": client_auth.crl"),
                    message: format!(
                        "require_crl = true, but no CRL is configured for the CA \"{subject}\"; \
                         add its CRL to crl = [...] (or set require_crl = false to leave that \
                         CA's devices unchecked)"
                    ),
                });
            }
        }
        if let Some(e) = ConfigError::from_list(errors) {
            return Err(e);
        }
        files.digest = finish(digest);
        Ok(files)
    }

    pub(super) fn verifier(
        &self,
        listener: &str,
        settings: &TlsSettings,
        provider: Arc<CryptoProvider>,
    ) -> Result<Verified, ConfigError> {
        if settings.client_auth.mode == ClientAuthMode::Off {
            return Ok((None, Vec::new()));
        }
        let mut errors = Vec::new();
        let mut roots = RootCertStore::empty();
        let mut trusted = Vec::new();
        let all: Vec<CertificateDer<'static>> = self
            .cas
            .iter()
            .flat_map(|(_, _, certs)| certs.iter().cloned())
            .collect();
        let (anchors, intermediates) = trust::split_anchors(&all);
        for (ctx, path, certs) in &self.cas {
            for (j, c) in certs.iter().enumerate() {
                // A CA issued by another configured CA is not an anchor: it
                // is validated and revocation-checked as part of the path.
                if !anchors.contains(c) {
                    if let Ok((_, x509)) = X509Certificate::from_der(c) {
                        trusted.push(CertSummary {
                            fingerprint: sha256_hex(c),
                            subject: rfc4514_subject(&x509),
                            not_after: x509.validity().not_after.timestamp(),
                        });
                    }
                    continue;
                }
                if let Err(e) = roots.add(c.clone()) {
                    errors.push(file_error(
                        ctx.clone(),
                        path,
                        format!("certificate #{} is not usable as a CA ({e})", j + 1),
                    ));
                } else if let Ok((_, x509)) = X509Certificate::from_der(c) {
                    trusted.push(CertSummary {
                        fingerprint: sha256_hex(c),
                        subject: rfc4514_subject(&x509),
                        not_after: x509.validity().not_after.timestamp(),
                    });
                }
            }
        }
        if let Some(e) = ConfigError::from_list(errors) {
            return Err(e);
        }

        let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            // Name every configured CA in the CertificateRequest, as when
            // they were all anchors: clients (SChannel) pick their
            // certificate by these names.
            .add_root_hint_subjects(intermediates.iter().filter_map(|c| {
                X509Certificate::from_der(c)
                    .ok()
                    .map(|(_, x)| rustls::DistinguishedName::from(x.subject().as_raw().to_vec()))
            }));
        if settings.client_auth.mode == ClientAuthMode::Observe {
            // Ask for a certificate, admit without one.
            builder = builder.allow_unauthenticated();
        }
        let crls: Vec<CertificateRevocationListDer<'static>> =
            self.crls.iter().map(|(_, _, c)| c.clone()).collect();
        if !crls.is_empty() {
            // Every certificate of the path is checked against its issuer's
            // CRL (RFC 5280 §6.3), so a revoked sub-CA takes its devices
            // with it. Revocation is decided per CA: a CA without a CRL is
            // not checked unless require_crl, and never changes what happens
            // to another CA's devices.
            builder = builder.with_crls(crls.iter().cloned());
            if !settings.client_auth.require_crl {
                builder = builder.allow_unknown_revocation_status();
            }
            if settings.client_auth.crl_stale == crate::config::CrlStale::FailClosed {
                // A CRL past nextUpdate refuses its CA's devices: a stale CRL
                // may hide revocations.
                builder = builder.enforce_revocation_expiration();
            }
        }
        let verifier = builder.build().map_err(|e| ConfigError::Invalid {
            context: format!("listener \"{listener}\": client_auth"),
            message: format!("cannot build the client-certificate verifier: {e}"),
        })?;
        // Verified chains are remembered until the earliest nextUpdate of
        // these CRLs at most (a stale CRL must be noticed).
        let crl_deadline = self.summaries.iter().filter_map(|c| c.next_update).min();
        let verifier: Arc<dyn ClientCertVerifier> = Arc::new(ChainCache {
            inner: verifier,
            intermediates,
            revoked: trust::RevokedIndex::new(&crls),
            crl_deadline,
            verified: std::sync::Mutex::new(HashMap::new()),
        });
        Ok((Some(verifier), trusted))
    }
}
