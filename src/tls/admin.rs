//! The admin listener's TLS (`[admin.tls]`, `[admin.client_auth]`): a
//! rustls server config built whole at every reload, like a listener's,
//! so a renewed admin certificate is served from the next handshake on.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;

use crate::config::{AdminSettings, TlsVersion};
use crate::error::ConfigError;

use super::CertSummary;
use super::files::{file_error, load_key_pair, read_crls, read_pem_certs};

/// The admin listener's TLS, as loaded.
#[derive(Debug)]
pub(crate) struct AdminTls {
    /// What each new admin connection's handshake uses.
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate served (expiry gauges and warnings).
    pub served: CertSummary,
    /// The CAs admin certificates must come from (empty: no client
    /// certificate asked for).
    pub trusted: Vec<CertSummary>,
}

impl AdminTls {
    /// Loads `[admin.tls]` (and `[admin.client_auth]`); `None` when the
    /// admin listener speaks plain HTTP. Every file problem is reported,
    /// each under its key.
    pub(crate) fn build(admin: &AdminSettings) -> Result<Option<AdminTls>, ConfigError> {
        let Some(tls) = &admin.tls else {
            return Ok(None);
        };
        // Browsers and curl speak TLS 1.3; the TLS 1.2-only rule is the
        // agents' listeners', not the admins'.
        let provider = Arc::new(super::crypto_provider(&[
            TlsVersion::V1_3,
            TlsVersion::V1_2,
        ]));
        let mut errors = Vec::new();
        let key = load_key_pair(
            "admin.tls.cert".into(),
            "admin.tls.key".into(),
            &tls.cert,
            &tls.key,
            &provider,
        )
        .map_err(|e| errors.push(e))
        .ok();
        let mut trusted = Vec::new();
        let verifier = match &admin.client_auth {
            None => None,
            Some(auth) => {
                let mut roots = RootCertStore::empty();
                for (i, path) in auth.ca.iter().enumerate() {
                    let ctx = format!("admin.client_auth.ca[{i}]");
                    match read_pem_certs(&ctx, path) {
                        Ok(certs) => {
                            for (j, c) in certs.into_iter().enumerate() {
                                trusted.extend(CertSummary::from_der(&c));
                                if let Err(e) = roots.add(c) {
                                    errors.push(file_error(
                                        ctx.clone(),
                                        path,
                                        format!(
                                            "certificate #{} is not usable as a CA ({e})",
                                            j + 1
                                        ),
                                    ));
                                }
                            }
                        }
                        Err(e) => errors.push(e),
                    }
                }
                let mut crls = Vec::new();
                for (i, path) in auth.crl.iter().enumerate() {
                    match read_crls(&format!("admin.client_auth.crl[{i}]"), path) {
                        Ok(list) => crls.extend(list.into_iter().map(Into::into)),
                        Err(e) => errors.push(e),
                    }
                }
                if roots.is_empty() {
                    None
                } else {
                    match WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider.clone(),
                    )
                    .with_crls(crls)
                    .build()
                    {
                        Ok(v) => Some(v),
                        Err(e) => {
                            errors.push(ConfigError::Invalid {
                                context: "admin.client_auth".into(),
                                message: format!("the CAs or CRLs cannot be used ({e})"),
                            });
                            None
                        }
                    }
                }
            }
        };
        if let Some(e) = ConfigError::from_list(errors) {
            return Err(e);
        }
        let Some((certified, served, _)) = key else {
            return Err(ConfigError::Invalid {
                context: "admin.tls".into(),
                message: "no certificate loaded".into(),
            });
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ConfigError::Invalid {
                context: "admin.tls".into(),
                message: e.to_string(),
            })?;
        let builder = match verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(AdminTls {
            config: Arc::new(config),
            served,
            trusted,
        }))
    }
}
