//! TLS policy: the crypto provider (versions and suites), loading server
//! certificates and keys, the SNI certificate store, the client-certificate
//! verifier (CA chain, CRL) and the device identity taken from a verified
//! certificate.
//!
//! Everything here is built whole from [`TlsSettings`] into a [`ListenerTls`]
//! and then only read: a connection takes the current `ListenerTls` at
//! accept and keeps it. This module does file I/O only while building.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use http::HeaderValue;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, ServerSessionMemoryCache,
    WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, RootCertStore, ServerConfig, SupportedCipherSuite};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

mod alert;
pub mod hello;
pub mod trust;

pub use crate::dn::rfc4514_subject;

use crate::config::{ClientAuthMode, ConfigPath, TlsSettings, TlsVersion};
use crate::error::ConfigError;
use crate::registry::{Policy, Verdict};

/// The crypto policy in one place (after linkerd2-proxy's `crypto.rs`): the
/// aws-lc-rs provider restricted to the configured versions. rustls has no
/// CBC, RC4, 3DES or static-RSA suites at all, so every remaining TLS 1.2
/// suite is ECDHE + AEAD; we only drop the versions that are not enabled.
pub fn crypto_provider(versions: &[TlsVersion]) -> CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    let v12 = versions.contains(&TlsVersion::V1_2);
    let v13 = versions.contains(&TlsVersion::V1_3);
    provider.cipher_suites.retain(|s| match s {
        SupportedCipherSuite::Tls12(_) => v12,
        SupportedCipherSuite::Tls13(_) => v13,
    });
    // Prefer AES-128-GCM with ECDSA: it is what fleet agents and the peer
    // gateways negotiate first, and the cheapest on AES-NI hardware.
    provider.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 1,
        _ => 2,
    });
    provider
}

fn protocol_versions(versions: &[TlsVersion]) -> Vec<&'static rustls::SupportedProtocolVersion> {
    versions
        .iter()
        .map(|v| match v {
            TlsVersion::V1_2 => &rustls::version::TLS12,
            TlsVersion::V1_3 => &rustls::version::TLS13,
        })
        .collect()
}

/// Everything a TLS listener needs, built once per (re)load and then shared
/// read-only by every connection accepted under it.
#[derive(Clone)]
pub struct ListenerTls {
    /// The rustls server config (certificates, verifier, session cache).
    pub server_config: Arc<ServerConfig>,
    /// The client-certificate verifier, kept so that resumed sessions can be
    /// re-verified: rustls restores a resumed session's client chain without
    /// calling the verifier.
    pub verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// The client-auth policy.
    pub mode: ClientAuthMode,
    /// `not_after` of each served certificate, for expiry reporting.
    pub served: Vec<CertSummary>,
    /// `not_after` of each trusted client CA, for expiry reporting.
    pub trusted: Vec<CertSummary>,
    /// Each CRL's issuer and `nextUpdate`, for staleness reporting.
    pub crls: Vec<CrlSummary>,
    /// Digest of everything the verifier and session store depend on
    /// (versions, cache size, mode, CA and CRL file bytes). Two states with
    /// the same digest verify clients identically, so a reload that only
    /// replaces server certificates keeps the verifier and session cache:
    /// a certificate rotation then costs the fleet no full handshakes.
    pub trust_digest: [u8; 32],
    /// Admission beyond CA validation (registry, allow rules); `None` when
    /// a CA-valid certificate is enough.
    pub policy: Option<Arc<Policy>>,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("mode", &self.mode)
            .field("served", &self.served)
            .finish_non_exhaustive()
    }
}

/// What we report about a loaded CRL.
#[derive(Debug, Clone)]
pub struct CrlSummary {
    /// Issuer, RFC 4514.
    pub issuer: String,
    /// `nextUpdate`, seconds since the Unix epoch (none if the CRL has no
    /// nextUpdate).
    pub next_update: Option<i64>,
}

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

impl ListenerTls {
    /// Loads every file `settings` names and builds the TLS state for the
    /// listener called `listener`. All file problems are reported together.
    ///
    /// With `previous` (the state being replaced on reload), the verifier
    /// and the session cache are carried over when nothing they depend on
    /// changed; otherwise both are new, so no session outlives the verifier
    /// generation it was created under.
    pub fn build(
        listener: &str,
        settings: &TlsSettings,
        previous: Option<&ListenerTls>,
        policy: Option<Policy>,
    ) -> Result<ListenerTls, ConfigError> {
        let provider = Arc::new(crypto_provider(&settings.versions));
        let mode = settings.client_auth.mode;
        let policy = policy
            .filter(|p| mode != ClientAuthMode::Off && !p.is_open())
            .map(Arc::new);
        let mut errors = Vec::new();

        let mut keys = Vec::new();
        let mut served = Vec::new();
        for (i, c) in settings.certificates.iter().enumerate() {
            match load_certified_key(listener, i, &c.cert, &c.key, &provider) {
                Ok((key, summary, names)) => {
                    keys.push((key, names));
                    served.push(summary);
                }
                Err(e) => errors.push(e),
            }
        }

        let trust = match TrustFiles::read(listener, settings, policy.as_deref()) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.extend(e.into_list());
                None
            }
        };
        let reuse = match (&trust, previous) {
            (Some(t), Some(p)) if p.trust_digest == t.digest => Some(p),
            _ => None,
        };
        let verified = match (&trust, reuse) {
            (_, Some(p)) => Some((p.verifier.clone(), p.trusted.clone())),
            (Some(t), None) => match t.verifier(listener, settings, provider.clone()) {
                Ok((v, trusted)) => {
                    let observe = mode == ClientAuthMode::Observe;
                    let v = match v {
                        Some(inner) if policy.is_some() || observe => {
                            Some(Arc::new(PolicyVerifier {
                                inner,
                                policy: policy.clone(),
                                observe,
                            })
                                as Arc<dyn ClientCertVerifier>)
                        }
                        v => v,
                    };
                    Some((v, trusted))
                }
                Err(e) => {
                    errors.extend(e.into_list());
                    None
                }
            },
            (None, None) => None,
        };
        if let Some(e) = ConfigError::from_list(errors) {
            return Err(e);
        }
        let (Some(trust), Some((verifier, trusted))) = (trust, verified) else {
            // Unreachable: every None above pushed an error.
            return Err(ConfigError::Invalid {
                context: format!("listener \"{listener}\": client_auth"),
                message: "cannot build the client-certificate verifier".into(),
            });
        };

        let resolver = SniResolver::new(keys).ok_or_else(|| ConfigError::Invalid {
            context: format!("listener \"{listener}\": tls.certificate"),
            message: "no usable certificate".into(),
        })?;

        let builder = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&protocol_versions(&settings.versions))
            .map_err(|e| ConfigError::Invalid {
                context: format!("listener \"{listener}\": tls.versions"),
                message: e.to_string(),
            })?;
        let builder = match &verifier {
            Some(v) => builder.with_client_cert_verifier(v.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.ignore_client_order = true;
        config.session_storage = match reuse {
            Some(p) => p.server_config.session_storage.clone(),
            None if settings.session_cache == 0 => Arc::new(NoServerSessionStorage {}),
            None => {
                let cache = ServerSessionMemoryCache::new(settings.session_cache);
                match &policy {
                    Some(p) => Arc::new(GuardedSessions {
                        inner: cache,
                        guard: SessionGuard { policy: p.clone() },
                    }),
                    None => cache,
                }
            }
        };
        // Tickets are sealed with keys that belong to this trust
        // generation: when the client CAs, CRLs or policy change, a new
        // ticketer makes every older ticket undecryptable, so those clients
        // do a full handshake under the new verifier (DESIGN.md). A ticket
        // that does decrypt is still re-verified after the handshake.
        if settings.session_tickets {
            config.ticketer = match reuse {
                Some(p) => p.server_config.ticketer.clone(),
                None => {
                    let inner = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| {
                        ConfigError::Invalid {
                            context: format!("listener \"{listener}\": tls.session_tickets"),
                            message: format!("cannot create the ticket key: {e}"),
                        }
                    })?;
                    match &policy {
                        Some(p) => Arc::new(GuardedTickets {
                            inner,
                            guard: SessionGuard { policy: p.clone() },
                        }),
                        None => inner,
                    }
                }
            };
        } else {
            config.send_tls13_tickets = 0;
        }

        Ok(ListenerTls {
            server_config: Arc::new(config),
            verifier,
            mode: settings.client_auth.mode,
            served,
            trusted,
            crls: trust.summaries.clone(),
            trust_digest: trust.digest,
            policy: reuse.map_or(policy, |p| p.policy.clone()),
        })
    }
}

fn file_error(context: String, path: &ConfigPath, what: impl std::fmt::Display) -> ConfigError {
    let shown = if path.resolved.as_os_str() == path.written.as_str() {
        path.written.clone()
    } else {
        format!("{} ({})", path.written, path.resolved.display())
    };
    ConfigError::File {
        context,
        message: format!("{shown}: {what}"),
    }
}

fn read_file(context: &str, path: &ConfigPath) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(&path.resolved).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => "file not found; check the path",
            std::io::ErrorKind::PermissionDenied => {
                "permission denied; make it readable by the certgate user"
            }
            _ => "cannot be read",
        };
        file_error(context.to_string(), path, format!("{hint} ({e})"))
    })
}

/// Reads every PEM certificate in a file, in order.
fn read_pem_certs(
    context: &str,
    path: &ConfigPath,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = read_file(context, path)?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        match item {
            Ok(c) => certs.push(c),
            Err(e) => {
                return Err(file_error(
                    context.to_string(),
                    path,
                    format!("malformed PEM certificate ({e})"),
                ));
            }
        }
    }
    if certs.is_empty() {
        return Err(file_error(
            context.to_string(),
            path,
            "contains no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    for (i, c) in certs.iter().enumerate() {
        if let Err(e) = X509Certificate::from_der(c) {
            return Err(file_error(
                context.to_string(),
                path,
                format!("certificate #{} is not valid X.509 ({e})", i + 1),
            ));
        }
    }
    Ok(certs)
}

type LoadedKey = (Arc<CertifiedKey>, CertSummary, Vec<String>);

/// Loads one cert/key pair and checks that they belong together.
fn load_certified_key(
    listener: &str,
    index: usize,
    cert_path: &ConfigPath,
    key_path: &ConfigPath,
    provider: &CryptoProvider,
) -> Result<LoadedKey, ConfigError> {
    let cert_ctx = format!("listener \"{listener}\": tls.certificate[{index}].cert");
    let key_ctx = format!("listener \"{listener}\": tls.certificate[{index}].key");
    let chain = read_pem_certs(&cert_ctx, cert_path);
    let key = read_file(&key_ctx, key_path).and_then(|bytes| {
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
            file_error(
                key_ctx.clone(),
                key_path,
                format!(
                    "no usable private key ({e}); expected a PKCS#8, PKCS#1 (RSA) or SEC1 (EC) PEM key"
                ),
            )
        })
    });
    let (chain, key) = match (chain, key) {
        (Ok(c), Ok(k)) => (c, k),
        (Err(a), Err(b)) => return Err(ConfigError::Many(vec![a, b])),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };

    let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
        file_error(
            key_ctx.clone(),
            key_path,
            format!("unsupported private key ({e}); use an RSA (2048+), ECDSA P-256/P-384 or Ed25519 key"),
        )
    })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(ConfigError::File {
                context: key_ctx,
                message: format!(
                    "{key_path} does not match {cert_path}; the key must be the one the \
                     first certificate in {cert_path} was issued for"
                ),
            });
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => return Err(file_error(cert_ctx, cert_path, e)),
    }

    let leaf = certified
        .cert
        .first()
        .ok_or_else(|| file_error(cert_ctx.clone(), cert_path, "contains no certificate"))?;
    let (_, x509) = X509Certificate::from_der(leaf).map_err(|e| {
        file_error(
            cert_ctx.clone(),
            cert_path,
            format!("not valid X.509 ({e})"),
        )
    })?;
    // An expired or not-yet-valid server certificate fails every agent's
    // handshake: refuse it here, where the admin is looking.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let validity = x509.validity();
    if validity.not_after.timestamp() <= now {
        return Err(file_error(
            cert_ctx,
            cert_path,
            format!(
                "the certificate \"{}\" expired on {}; every client would refuse it: \
                 install a renewed certificate",
                rfc4514_subject(&x509),
                validity.not_after
            ),
        ));
    }
    if validity.not_before.timestamp() > now {
        return Err(file_error(
            cert_ctx,
            cert_path,
            format!(
                "the certificate \"{}\" is not valid before {}; clients would refuse it \
                 until then: check this machine's clock, or install it when it becomes valid",
                rfc4514_subject(&x509),
                validity.not_before
            ),
        ));
    }
    let names = server_names(&x509);
    let summary = CertSummary {
        fingerprint: sha256_hex(leaf),
        subject: rfc4514_subject(&x509),
        not_after: x509.validity().not_after.timestamp(),
    };
    Ok((Arc::new(certified), summary, names))
}

/// DNS names a server certificate answers for: its SAN DNS entries, or its
/// CN when it has no SAN extension (old self-made certs).
fn server_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
        return names;
    }
    for cn in cert.subject().iter_common_name() {
        if let Some(s) = crate::dn::attribute_text(cn) {
            names.push(s.to_ascii_lowercase());
        }
    }
    names
}

/// Chooses the server certificate by SNI: exact name, then a `*.` wildcard
/// one label deep, then the first configured certificate. rustls's own
/// `ResolvesServerCertUsingSni` has no default for clients that send no
/// SNI (old agents, IP-address URLs), so we keep our own small map.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl SniResolver {
    fn new(keys: Vec<(Arc<CertifiedKey>, Vec<String>)>) -> Option<SniResolver> {
        let default = keys.first()?.0.clone();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (key, names) in keys {
            for name in names {
                // First certificate listed wins a name claimed twice.
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()),
                    None => exact.entry(name),
                }
                .or_insert_with(|| key.clone());
            }
        }
        Some(SniResolver {
            default,
            exact,
            wildcard,
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(sni) = hello.server_name() else {
            return Some(self.default.clone());
        };
        // rustls hands us the name already lowercased and validated.
        if let Some(k) = self.exact.get(sni) {
            return Some(k.clone());
        }
        if let Some((_, parent)) = sni.split_once('.')
            && let Some(k) = self.wildcard.get(parent)
        {
            return Some(k.clone());
        }
        Some(self.default.clone())
    }
}

/// The client CA and CRL files of a listener, read once per (re)load.
struct TrustFiles {
    cas: Vec<(String, ConfigPath, Vec<CertificateDer<'static>>)>,
    /// Each CRL with the config key and file it came from.
    crls: Vec<(String, ConfigPath, CertificateRevocationListDer<'static>)>,
    summaries: Vec<CrlSummary>,
    digest: [u8; 32],
}

type Verified = (Option<Arc<dyn ClientCertVerifier>>, Vec<CertSummary>);

impl TrustFiles {
    fn read(
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

    fn verifier(
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

fn finish(ctx: aws_lc_rs::digest::Context) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Reads CRLs from a PEM file (one or more `X509 CRL` blocks) or a single
/// DER CRL, and checks each parses.
fn read_crls(
    context: &str,
    path: &ConfigPath,
) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
    let bytes = read_file(context, path)?;
    let crls: Vec<CertificateRevocationListDer<'static>> =
        if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            let mut v = Vec::new();
            for item in CertificateRevocationListDer::pem_slice_iter(&bytes) {
                v.push(item.map_err(|e| {
                    file_error(
                        context.to_string(),
                        path,
                        format!("malformed PEM CRL ({e})"),
                    )
                })?);
            }
            v
        } else {
            vec![CertificateRevocationListDer::from(bytes)]
        };
    if crls.is_empty() {
        return Err(file_error(
            context.to_string(),
            path,
            "contains no CRL (-----BEGIN X509 CRL----- or DER)",
        ));
    }
    for c in &crls {
        if let Err(e) = x509_parser::revocation_list::CertificateRevocationList::from_der(c) {
            return Err(file_error(
                context.to_string(),
                path,
                format!("not a valid CRL ({e}); give a PEM or DER X.509 CRL"),
            ));
        }
    }
    Ok(crls)
}

/// Checks a resumed session's client chain again against the verifier of
/// the listener state it was accepted under (chain, validity at this
/// moment, CRL). rustls skips the verifier on resumption.
pub fn reverify(
    verifier: &dyn ClientCertVerifier,
    chain: &[CertificateDer<'_>],
) -> Result<(), rustls::Error> {
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or(rustls::Error::NoCertificatesPresented)?;
    verifier
        .verify_client_cert(leaf, intermediates, UnixTime::now())
        .map(|_| ())
}

/// A short, bounded label for why a handshake failed: used in logs and as
/// a metric label value, so it never contains peer data.
pub fn failure_reason(err: &rustls::Error) -> &'static str {
    use rustls::Error as E;
    match err {
        E::NoCertificatesPresented => "no_certificate",
        E::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::Revoked => "revoked",
            CertificateError::UnknownIssuer => "unknown_ca",
            CertificateError::BadSignature => "bad_signature",
            CertificateError::UnknownRevocationStatus => "unknown_revocation_status",
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => "crl_expired",
            CertificateError::BadEncoding => "bad_certificate",
            CertificateError::ApplicationVerificationFailure => "access_denied",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "invalid_purpose"
            }
            CertificateError::Other(o) => {
                match (o.0.as_ref() as &(dyn std::error::Error + 'static))
                    .downcast_ref::<trust::ChainError>()
                {
                    Some(c) => c.reason(),
                    None => "bad_certificate",
                }
            }
            _ => "bad_certificate",
        },
        E::PeerIncompatible(p) => match p {
            // A TLS 1.2 client that offers no ECDHE group can only use the
            // non-ECDHE suites we refuse: to the admin that is the same
            // problem as no common suite.
            rustls::PeerIncompatible::NoCipherSuitesInCommon
            | rustls::PeerIncompatible::NoKxGroupsInCommon => "no_shared_cipher",
            rustls::PeerIncompatible::NoSignatureSchemesInCommon => "no_shared_signature",
            rustls::PeerIncompatible::Tls12NotOffered
            | rustls::PeerIncompatible::Tls12NotOfferedOrEnabled
            | rustls::PeerIncompatible::SupportedVersionsExtensionRequired => "protocol_version",
            _ => "incompatible",
        },
        E::InvalidMessage(_) | E::InappropriateHandshakeMessage { .. } => "bad_message",
        E::AlertReceived(_) => "client_alert",
        E::PeerMisbehaved(_) => "peer_misbehaved",
        _ => "other",
    }
}

/// The sentence for the log about why a handshake failed: rustls's own
/// text, or certgate's for the checks it adds ([`trust::ChainError`]).
pub fn failure_detail(err: &rustls::Error) -> String {
    if let rustls::Error::InvalidCertificate(CertificateError::Other(o)) = err
        && let Some(c) =
            (o.0.as_ref() as &(dyn std::error::Error + 'static)).downcast_ref::<trust::ChainError>()
    {
        return c.to_string();
    }
    err.to_string()
}

/// The verified identity of a client certificate, computed once per
/// connection and attached to every request on it.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// Lowercase hex SHA-256 of the certificate DER: the device key.
    pub fingerprint: String,
    /// The same digest as bytes (the registry's key).
    pub fingerprint_bytes: [u8; 32],
    /// Subject DN, RFC 4514, ASCII only (non-ASCII bytes are `\XX` escaped).
    pub subject: String,
    /// Serial number, uppercase hex without leading zero bytes.
    pub serial: String,
    /// Pre-built header values, so requests only clone them.
    pub headers: IdentityHeaders,
}

/// Header values derived from a client certificate.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    /// `X-Client-Cert-Fingerprint`.
    pub fingerprint: HeaderValue,
    /// `X-Client-Cert-Subject`.
    pub subject: HeaderValue,
    /// `X-Client-Cert-Serial`.
    pub serial: HeaderValue,
    /// `Client-Cert` (RFC 9440): `:base64(DER):`.
    pub client_cert: HeaderValue,
}

impl PeerIdentity {
    /// Derives the identity of a (verified) client certificate. `None` only
    /// if the DER does not parse, which the verifier would have refused.
    pub fn from_der(der: &[u8]) -> Option<PeerIdentity> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let fingerprint_bytes = crate::registry::fingerprint(der);
        let fingerprint = sha256_hex_of(&fingerprint_bytes);
        let subject = rfc4514_subject(&cert);
        let serial = serial_hex(cert.raw_serial());
        let client_cert = format!(
            ":{}:",
            base64::engine::general_purpose::STANDARD.encode(der)
        );
        let headers = IdentityHeaders {
            fingerprint: HeaderValue::from_str(&fingerprint).ok()?,
            subject: HeaderValue::from_str(&subject).ok()?,
            serial: HeaderValue::from_str(&serial).ok()?,
            client_cert: HeaderValue::from_str(&client_cert).ok()?,
        };
        Some(PeerIdentity {
            fingerprint,
            fingerprint_bytes,
            subject,
            serial,
            headers,
        })
    }
}

/// The RFC 4514 subject of a certificate, if it parses.
pub fn subject_of(der: &[u8]) -> Option<String> {
    X509Certificate::from_der(der)
        .ok()
        .map(|(_, c)| rfc4514_subject(&c))
}

/// Lowercase hex of a 32-byte digest.
pub fn sha256_hex_of(digest: &[u8; 32]) -> String {
    hex_lower(digest)
}

/// Lowercase hex SHA-256 of `der`: how a device is keyed.
pub fn sha256_hex(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    hex_lower(digest.as_ref())
}

fn hex_lower(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A serial number as uppercase hex without leading zeros.
pub fn serial_hex(raw: &[u8]) -> String {
    // DER INTEGERs carry a leading 0x00 when the high bit is set; OpenSSL
    // (and so nginx's $ssl_client_serial) prints the number without it.
    let mut trimmed = raw;
    while trimmed.len() > 1 && trimmed[0] == 0 {
        trimmed = &trimmed[1..];
    }
    let mut s = String::with_capacity(trimmed.len() * 2);
    for b in trimmed {
        let _ = write!(s, "{b:02X}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_drops_sign_byte() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8F01");
        assert_eq!(serial_hex(&[0x00]), "00");
    }

    #[test]
    fn tls12_only_provider_has_only_ecdhe_aead_tls12_suites() {
        let p = crypto_provider(&[TlsVersion::V1_2]);
        assert!(!p.cipher_suites.is_empty());
        for s in &p.cipher_suites {
            assert_eq!(s.version(), &rustls::version::TLS12);
            let name = format!("{:?}", s.suite());
            assert!(name.contains("ECDHE") && (name.contains("GCM") || name.contains("CHACHA20")));
        }
    }
}

tokio::task_local! {
    /// What the verifier learned during one handshake, for the connection
    /// task that runs it: the accept future runs inside `HANDSHAKE.scope`.
    /// rustls's verifier API has no per-connection context, and the peer
    /// address (for logs and the registry) is only known to that task.
    pub static HANDSHAKE: std::cell::RefCell<HandshakeNote>;
}

/// See [`HANDSHAKE`].
#[derive(Debug, Default)]
pub struct HandshakeNote {
    /// Fingerprint of the client certificate the verifier saw.
    pub fingerprint: Option<[u8; 32]>,
    /// The policy verdict, when the certificate passed CA validation.
    pub verdict: Option<Verdict>,
    /// The certificate, kept when the registry may need to create a record.
    pub der: Option<Vec<u8>>,
    /// Why CA validation (chain, validity, CRL) failed, if it did.
    pub ca_failure: Option<&'static str>,
    /// Fingerprint of the device whose stored session (cache entry or
    /// ticket) this handshake resumes.
    pub resumed: Option<[u8; 32]>,
}

/// Remembers which client chains this verifier generation has already
/// validated (signatures up to a trusted CA, CRLs), so a device that
/// reconnects, resumed or not, costs a digest and a map lookup instead of a
/// signature verification (~65 µs of P-256 per chain, the largest part of a
/// resumed connection's CPU; benches/RESULTS.md).
///
/// Sound because the result depends only on the exact chain bytes (the key
/// is a SHA-256 over all of them), on the trust anchors and CRLs (fixed for
/// the life of this verifier: any change builds a new one with an empty
/// cache) and on time: an entry is used only before the earliest notAfter
/// in the chain and the earliest CRL nextUpdate. Failures are never cached.
/// The registry status and allow rules are decided on every handshake by
/// [`PolicyVerifier`], and possession of the key is proven by the handshake
/// signature, which rustls checks every time.
#[derive(Debug)]
struct ChainCache {
    inner: Arc<dyn ClientCertVerifier>,
    /// Configured CAs issued by another configured CA: offered to path
    /// building after the ones the client sends.
    intermediates: Vec<CertificateDer<'static>>,
    /// Which serials the CRLs revoke, to name the revoked certificate.
    revoked: trust::RevokedIndex,
    crl_deadline: Option<i64>,
    /// Chain digest → usable until (seconds since the epoch).
    verified: std::sync::Mutex<HashMap<[u8; 32], i64>>,
}

/// Entries kept at most; when full the cache starts over (one full
/// verification per device then, as without it).
const CHAIN_CACHE_MAX: usize = 65_536;

impl ChainCache {
    fn key(end_entity: &[u8], intermediates: &[CertificateDer<'_>]) -> [u8; 32] {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for c in std::iter::once(end_entity).chain(intermediates.iter().map(|c| c.as_ref())) {
            ctx.update(&(c.len() as u64).to_be_bytes());
            ctx.update(c);
        }
        finish(ctx)
    }

    /// Until when a verified chain may be trusted without verifying again.
    fn usable_until(&self, end_entity: &[u8], intermediates: &[CertificateDer<'_>]) -> Option<i64> {
        let mut until = self.crl_deadline.unwrap_or(i64::MAX);
        for c in std::iter::once(end_entity).chain(intermediates.iter().map(|c| c.as_ref())) {
            let (_, x509) = X509Certificate::from_der(c).ok()?;
            until = until.min(x509.validity().not_after.timestamp());
        }
        Some(until)
    }
}

impl ClientCertVerifier for ChainCache {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let key = Self::key(end_entity, intermediates);
        let now_s = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let hit = self
            .verified
            .lock()
            .map(|m| m.get(&key).is_some_and(|until| now_s < *until))
            .unwrap_or(false);
        if hit {
            return Ok(rustls::server::danger::ClientCertVerified::assertion());
        }
        let verified = if self.intermediates.is_empty() {
            self.inner
                .verify_client_cert(end_entity, intermediates, now)
        } else {
            let mut all = intermediates.to_vec();
            all.extend(self.intermediates.iter().cloned());
            self.inner.verify_client_cert(end_entity, &all, now)
        };
        let verified = match verified {
            Ok(v) => v,
            Err(rustls::Error::InvalidCertificate(CertificateError::Revoked)) => {
                let chain = std::iter::once(end_entity.as_ref())
                    .chain(intermediates.iter().map(|c| c.as_ref()))
                    .chain(self.intermediates.iter().map(|c| c.as_ref()));
                return Err(match self.revoked.revoked_ca(chain) {
                    Some(e) => e.into_rustls(),
                    None => rustls::Error::InvalidCertificate(CertificateError::Revoked),
                });
            }
            Err(e) => return Err(e),
        };
        // webpki checks the extended key usage, not the key usage: a
        // certificate that may not sign is refused here, before it is
        // remembered as verified.
        if let Some(e) = trust::key_usage_refusal(end_entity) {
            return Err(e.into_rustls());
        }
        if let Some(until) = self.usable_until(end_entity, intermediates)
            && now_s < until
            && let Ok(mut m) = self.verified.lock()
        {
            if m.len() >= CHAIN_CACHE_MAX {
                m.clear();
            }
            m.insert(key, until);
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// CA validation (the webpki verifier), then the admission policy: the
/// registry's status of the device and the allow rules. Runs inside the
/// handshake, so a refusal is a TLS alert (`access_denied`).
///
/// In `observe` mode nothing is refused: the verdict is only noted, so the
/// connection is admitted and classified.
#[derive(Debug)]
struct PolicyVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    policy: Option<Arc<Policy>>,
    observe: bool,
}

impl ClientCertVerifier for PolicyVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let fp = crate::registry::fingerprint(end_entity);
        let ca = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
        let verdict = match (&ca, &self.policy) {
            (Ok(_), Some(p)) => Some(p.decide(&fp, end_entity)),
            (Ok(_), None) => Some(Verdict::Admit {
                why: "ca",
                record: false,
            }),
            (Err(_), _) => None,
        };
        let ca_failure = ca.as_ref().err().map(failure_reason);
        let keep_der = matches!(
            verdict,
            Some(Verdict::Admit { record: true, .. })
                | Some(Verdict::Refuse {
                    record_pending: true,
                    ..
                })
        );
        let _ = HANDSHAKE.try_with(|n| {
            let mut n = n.borrow_mut();
            n.fingerprint = Some(fp);
            n.verdict = verdict;
            n.der = keep_der.then(|| end_entity.to_vec());
            n.ca_failure = ca_failure;
        });
        match verdict {
            // Observe softens the automatic verdicts (CA failures,
            // unapproved) into a report; an admin's block is refused in
            // every mode.
            Some(Verdict::Refuse { by_admin: true, .. }) => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
            _ if self.observe => Ok(rustls::server::danger::ClientCertVerified::assertion()),
            Some(Verdict::Refuse { .. }) => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
            _ => ca,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Tags a stored session (cache entry or ticket plaintext) with the
/// fingerprint of its client, and refuses to hand back a session whose
/// device is no longer admitted (blocked, un-approved): the client then
/// falls back to a full handshake, which the verifier refuses with an alert.
/// (Every resumed connection is also re-verified after the handshake, for
/// expiry and CRLs.)
#[derive(Debug)]
struct SessionGuard {
    policy: Arc<Policy>,
}

impl SessionGuard {
    fn tag(&self, value: &[u8]) -> Vec<u8> {
        // A resumed handshake never reaches the verifier; the fingerprint
        // of the session it resumed tags the ticket rustls issues then.
        let fp = HANDSHAKE
            .try_with(|n| {
                let n = n.borrow();
                n.fingerprint.or(n.resumed)
            })
            .ok()
            .flatten();
        let mut tagged = Vec::with_capacity(value.len() + 33);
        match fp {
            Some(fp) => {
                tagged.push(1);
                tagged.extend_from_slice(&fp);
            }
            None => tagged.push(0),
        }
        tagged.extend_from_slice(value);
        tagged
    }

    fn untag(&self, v: &[u8]) -> Option<Vec<u8>> {
        match v.split_first() {
            Some((1, rest)) if rest.len() >= 32 => {
                let mut fp = [0u8; 32];
                fp.copy_from_slice(&rest[..32]);
                if !self.policy.still_admits(&fp) {
                    return None;
                }
                let _ = HANDSHAKE.try_with(|n| n.borrow_mut().resumed = Some(fp));
                Some(rest[32..].to_vec())
            }
            Some((0, rest)) => Some(rest.to_vec()),
            _ => None,
        }
    }
}

/// The session-ID cache of a listener with an admission policy; see
/// [`SessionGuard`].
#[derive(Debug)]
struct GuardedSessions {
    inner: Arc<dyn rustls::server::StoresServerSessions>,
    guard: SessionGuard,
}

impl rustls::server::StoresServerSessions for GuardedSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, self.guard.tag(&value))
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.get(key).and_then(|v| self.guard.untag(&v))
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.take(key).and_then(|v| self.guard.untag(&v))
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

/// The ticketer of a listener with an admission policy: the ticket's
/// plaintext carries the same tag as a cache entry; see [`SessionGuard`].
#[derive(Debug)]
struct GuardedTickets {
    inner: Arc<dyn rustls::server::ProducesTickets>,
    guard: SessionGuard,
}

impl rustls::server::ProducesTickets for GuardedTickets {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(&self.guard.tag(plain))
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.inner
            .decrypt(cipher)
            .and_then(|v| self.guard.untag(&v))
    }
}
