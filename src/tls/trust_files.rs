//! The client CAs and CRLs of a listener, read and checked once per
//! (re)load, and the client-certificate verifier built from them.

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use std::collections::HashMap;
use std::sync::Arc;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::admission::Policy;
use crate::config::{ClientAuthMode, ConfigPath, TlsSettings};
use crate::error::ConfigError;

use super::chain_cache::ChainCache;
use super::path::PathVerifier;
use crate::revocation::crl::distribution_point_uris;
use crate::revocation::signer::signer;
use crate::revocation::{self, Cache, Crl, Inputs, Loaded, Revocation, RevocationSet};

use super::digest::finish;
use super::files::{file_error, read_crls, read_pem_certs};
use super::{CertSummary, rfc4514_subject, trust};

/// The client CA and CRL files of a listener, read once per (re)load.
pub(super) struct TrustFiles {
    pub(super) cas: Vec<(String, ConfigPath, Vec<CertificateDer<'static>>)>,
    /// What the revocation state is built from (CRL files verified, URLs,
    /// the cache); none with client auth off.
    pub(super) inputs: Option<Arc<Inputs>>,
    /// Digest of what the verifier depends on: the CAs and the policy, not
    /// the CRLs, which change under a running verifier.
    pub(super) digest: [u8; 32],
}

pub(super) type Verified = (
    Option<Arc<dyn ClientCertVerifier>>,
    Vec<CertSummary>,
    Option<Arc<ChainCache>>,
);

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
                    "policy:registry={};approval={:?};rules={:?};renewal={:?};",
                    p.registry.is_some(),
                    p.approval,
                    p.rules,
                    p.renewal
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
        let mut files = TrustFiles {
            cas: Vec::new(),
            inputs: None,
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
        // A CRL is used only once it is known to come from one of these
        // CAs: one that does not verify would refuse that CA's whole fleet
        // at handshake time (RFC 5280 §6.3.3 (f)).
        let all_cas: Vec<CertificateDer<'static>> = files
            .cas
            .iter()
            .flat_map(|(_, _, certs)| certs.iter().cloned())
            .collect();
        let mut loaded: Vec<Loaded> = Vec::new();
        for (i, path) in settings.client_auth.crl.iter().enumerate() {
            let ctx = format!("listener \"{listener}\": client_auth.crl[{i}]");
            let ders = match read_crls(&ctx, path) {
                Ok(c) => c,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            for der in ders {
                let checked = Crl::parse(&der)
                    .map_err(|e| e.to_string())
                    .and_then(|crl| signer(&crl, &all_cas).map(|k| (crl, k)));
                match checked {
                    Ok((crl, key)) => loaded.push(Loaded {
                        crl: Arc::new(crl),
                        signer: key,
                        source: Arc::from(path.written.as_str()),
                    }),
                    Err(why) => errors.push(file_error(ctx.clone(), path, why)),
                }
            }
        }
        let ca = &settings.client_auth;
        let mut urls = ca.crl_urls.clone();
        if ca.crl_from_certificates {
            // A CA certificate's distribution point is where its issuer
            // publishes the CRL that would revoke it (a sub-CA's, the root's).
            for c in &all_cas {
                for u in cert_crl_uris(c) {
                    if !urls.contains(&u) {
                        urls.push(u);
                    }
                }
            }
        }
        let cache = ca
            .crl_cache_dir
            .as_ref()
            .filter(|_| ca.fetches_crls())
            .map(|d| Cache::new(&d.resolved));
        let cached = match &cache {
            Some(c) => revocation::cached(listener, c, &urls, ca.crl_from_certificates, &all_cas),
            None => revocation::Cached::default(),
        };
        // A delta CRL file without its base would silently check nothing
        // the admin meant; say which files disagree.
        let (_, problems) = RevocationSet::build(&loaded, ca.require_crl, ca.crl_stale);
        for p in problems {
            errors.push(ConfigError::Invalid {
                context: format!("listener \"{listener}\": client_auth.crl"),
                message: p.to_string(),
            });
        }
        if ca.require_crl && !ca.fetches_crls() {
            for subject in trust::without_crl(&all_cas, &loaded) {
                errors.push(ConfigError::Invalid {
                    context: format!("listener \"{listener}\": client_auth.crl"),
                    message: format!(
                        "require_crl = true, but no CRL is configured for the CA \"{subject}\"; \
                         add its CRL to crl = [...] or its URL to crl_urls (or set \
                         require_crl = false to leave that CA's devices unchecked)"
                    ),
                });
            }
        }
        files.inputs = Some(Arc::new(Inputs {
            listener: listener.to_string(),
            cas: all_cas,
            files: loaded,
            urls,
            cached: cached.loaded,
            cached_issuers: cached.issuers,
            cached_device_urls: cached.device_urls,
            from_certificates: ca.crl_from_certificates,
            refresh: ca.crl_refresh,
            cache,
            require: ca.require_crl,
            stale: ca.crl_stale,
            ocsp: ca.ocsp,
            ocsp_url: ca.ocsp_url.clone(),
            ocsp_timeout: ca.ocsp_timeout,
        }));
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
            return Ok((None, Vec::new(), None));
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
                    trusted.extend(CertSummary::from_der(c));
                    continue;
                }
                if let Err(e) = roots.add(c.clone()) {
                    errors.push(file_error(
                        ctx.clone(),
                        path,
                        format!("certificate #{} is not usable as a CA ({e})", j + 1),
                    ));
                } else {
                    trusted.extend(CertSummary::from_der(c));
                }
            }
        }
        if let Some(e) = ConfigError::from_list(errors) {
            return Err(e);
        }

        let anchors: Vec<CertificateDer<'static>> = anchors;
        let paths = PathVerifier {
            anchors: anchors
                .iter()
                .filter_map(|c| {
                    webpki::anchor_from_trusted_cert(c)
                        .ok()
                        .map(|a| a.to_owned())
                })
                .collect(),
            anchor_certs: anchors
                .iter()
                .filter(|c| webpki::anchor_from_trusted_cert(c).is_ok())
                .cloned()
                .collect(),
            algs: provider.signature_verification_algorithms.all,
        };
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
        // No CRLs here: revocation is checked by ChainCache against the
        // listener's RevocationSet, which changes without a new verifier.
        let verifier = builder.build().map_err(|e| ConfigError::Invalid {
            context: format!("listener \"{listener}\": client_auth"),
            message: format!("cannot build the client-certificate verifier: {e}"),
        })?;
        let Some(inputs) = self.inputs.clone() else {
            return Ok((None, trusted, None));
        };
        let set = inputs.initial_set();
        let revocation = Revocation::new(inputs, set);
        let chains = Arc::new(ChainCache {
            inner: verifier,
            paths,
            intermediates,
            revocation,
            verified: std::sync::Mutex::new(HashMap::new()),
            by_device: std::sync::Mutex::new(HashMap::new()),
        });
        let verifier: Arc<dyn ClientCertVerifier> = chains.clone();
        Ok((Some(verifier), trusted, Some(chains)))
    }
}

/// The CRL distribution point URIs of a certificate.
fn cert_crl_uris(der: &[u8]) -> Vec<String> {
    let Ok((_, x)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    x.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::prelude::ParsedExtension::CRLDistributionPoints(p) => {
                Some(distribution_point_uris(p))
            }
            _ => None,
        })
        .unwrap_or_default()
}
