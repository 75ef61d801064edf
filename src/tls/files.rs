//! Reading certificates, keys and CRLs from the files a config names, with
//! errors that name the key and the file.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::config::ConfigPath;
use crate::error::ConfigError;

use super::{CertSummary, rfc4514_subject};
use crate::identity::sha256_hex;

pub(super) fn file_error(
    context: String,
    path: &ConfigPath,
    what: impl std::fmt::Display,
) -> ConfigError {
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

pub(super) fn read_file(context: &str, path: &ConfigPath) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(&path.resolved).map_err(|e| {
        // The OS's own words only where ours do not already say it all.
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => {
                "file not found; put the file there, or correct the path".to_string()
            }
            std::io::ErrorKind::PermissionDenied => {
                "permission denied; make it readable by the user certgate runs as".to_string()
            }
            _ => format!("cannot be read ({e})"),
        };
        file_error(context.to_string(), path, hint)
    })
}

/// Reads every PEM certificate in a file, in order.
pub(super) fn read_pem_certs(
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

pub(super) type LoadedKey = (Arc<CertifiedKey>, CertSummary, Vec<String>);

/// Loads one cert/key pair and checks that they belong together.
pub(super) fn load_certified_key(
    listener: &str,
    index: usize,
    cert_path: &ConfigPath,
    key_path: &ConfigPath,
    provider: &CryptoProvider,
) -> Result<LoadedKey, ConfigError> {
    load_key_pair(
        format!("listener \"{listener}\": tls.certificate[{index}].cert"),
        format!("listener \"{listener}\": tls.certificate[{index}].key"),
        cert_path,
        key_path,
        provider,
    )
}

/// Loads a cert/key pair named by the config keys `cert_ctx` and
/// `key_ctx`, and checks that they belong together and are valid now.
pub(super) fn load_key_pair(
    cert_ctx: String,
    key_ctx: String,
    cert_path: &ConfigPath,
    key_path: &ConfigPath,
    provider: &CryptoProvider,
) -> Result<LoadedKey, ConfigError> {
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
pub(super) fn server_names(cert: &X509Certificate<'_>) -> Vec<String> {
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

/// Reads CRLs from a PEM file (one or more `X509 CRL` blocks) or a single
/// DER CRL; each is parsed by the caller.
pub(super) fn read_crls(context: &str, path: &ConfigPath) -> Result<Vec<Vec<u8>>, ConfigError> {
    let bytes = read_file(context, path)?;
    crate::revocation::crl::decode(&bytes).map_err(|e| {
        file_error(
            context.to_string(),
            path,
            format!("{e}; give a PEM or DER X.509 CRL"),
        )
    })
}
