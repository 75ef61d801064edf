//! Which gateway the CLI talks to, and with which token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, anyhow};

use crate::config::Settings;

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Admin listener address.
    pub addr: SocketAddr,
    /// Bearer token, if the gateway has a token file.
    pub token: Option<String>,
    /// HTTPS, when the admin listener has `[admin.tls]`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Target {
    /// From the gateway's config file: `[admin] listen` (a wildcard address
    /// is reached on loopback) and the first token of `token_file`.
    pub(crate) fn from_config(
        path: &Path,
        client: Option<&(PathBuf, PathBuf)>,
    ) -> anyhow::Result<Target> {
        let settings = Settings::load(path)?;
        let admin = settings.admin.as_ref().ok_or_else(|| {
            anyhow!(
                "{} has no [admin] table; the devices command talks to the admin API",
                path.display()
            )
        })?;
        let mut addr = admin.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let token = match &admin.token_file {
            Some(t) => Some(first_token(&t.resolved)?),
            None => None,
        };
        let tls = match &admin.tls {
            Some(t) => Some(Arc::new(client_config(&t.cert.resolved, client)?)),
            None => None,
        };
        if admin.client_auth.is_some() && client.is_none() {
            anyhow::bail!(
                "{}: the admin listener asks for an admin client certificate ([admin.client_auth]); \
                 give --client-cert and --client-key",
                path.display()
            );
        }
        Ok(Target { addr, token, tls })
    }
}

/// TLS to the admin listener, trusting exactly the certificate its config
/// names (the CLI runs beside the gateway and reads the same file, so no
/// CA is needed); with the admin client certificate when given.
fn client_config(
    server_cert: &Path,
    client: Option<&(PathBuf, PathBuf)>,
) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let leaf = CertificateDer::pem_file_iter(server_cert)
        .with_context(|| {
            format!(
                "cannot read the admin certificate {}",
                server_cert.display()
            )
        })?
        .next()
        .ok_or_else(|| anyhow!("{} contains no certificate", server_cert.display()))?
        .with_context(|| format!("{} is not a PEM certificate", server_cert.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            leaf,
            path: server_cert.to_path_buf(),
            provider,
        }));
    Ok(match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("cannot read {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("{} is not a PEM private key", key.display()))?;
            builder.with_client_auth_cert(chain, key).with_context(|| {
                format!("the key given for {} does not match it", cert.display())
            })?
        }
    })
}

/// Accepts the one certificate the config names (its signatures checked
/// as any server's).
#[derive(Debug)]
struct Pinned {
    leaf: rustls::pki_types::CertificateDer<'static>,
    path: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the admin listener presented another certificate than {} (reloaded since?)",
                self.path.display()
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The first token of a token file (`name:token` lines).
pub(crate) fn first_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once(':').map_or(l, |(_, t)| t).trim().to_string())
        .ok_or_else(|| anyhow!("token file {} contains no token", path.display()))
}
