//! A PKI made with rcgen per test: CAs, device certificates of every kind,
//! server pairs, CRLs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A client certificate written to disk.
#[derive(Clone, Debug)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
    pub serial: Vec<u8>,
}

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub server_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_ca: PathBuf,
    client_issuer: CertifiedIssuer<'static, KeyPair>,
    server_issuer: CertifiedIssuer<'static, KeyPair>,
    next_serial: u8,
    /// CRL distribution points written into device certificates made from
    /// now on.
    pub device_crl_uris: Vec<String>,
    /// The OCSP responder (authorityInfoAccess) written into device
    /// certificates made from now on.
    pub device_ocsp_url: Option<String>,
}

/// A server certificate and its key, as PEM, plus the leaf DER.
pub struct ServerPair {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

/// Parameters of a CA certificate named `cn` (CA:TRUE, keyCertSign, cRLSign).
pub fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

pub fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// How a client certificate should be made.
pub enum Kind {
    Good,
    Expired,
    NotYetValid,
    SelfSigned,
    ForeignCa,
    /// Signed by a different key under the trusted CA's exact name: a
    /// forged CA.
    ForgedCa,
    /// Valid now, expiring in the given number of seconds.
    ExpiresIn(i64),
    /// Valid from the given number of seconds from now (negative: in the
    /// past) for 90 days: a renewal is issued later than the `Good`
    /// certificate it renews (valid from a day ago, for 30 days).
    ValidFrom(i64),
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let server_ca =
            CertifiedIssuer::self_signed(ca_params("test server CA"), KeyPair::generate().unwrap())
                .unwrap();
        let mut p =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "localhost");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().unwrap();
        let server = p.signed_by(&server_key, &server_ca).unwrap();
        let client_issuer =
            CertifiedIssuer::self_signed(ca_params("test client CA"), KeyPair::generate().unwrap())
                .unwrap();

        let w = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let server_ca_path = w("server-ca.pem", &server_ca.pem());
        let server_ca = server_ca;
        let server_cert = w("server.pem", &server.pem());
        let server_key = w("server.key", &server_key.serialize_pem());
        let client_ca = w("client-ca.pem", &client_issuer.pem());
        Pki {
            server_ca: server_ca_path,
            server_cert,
            server_key,
            client_ca,
            client_issuer,
            server_issuer: server_ca,
            dir,
            next_serial: 1,
            device_crl_uris: Vec::new(),
            device_ocsp_url: None,
        }
    }

    /// A new server certificate for localhost (its own key) from the server
    /// CA, as PEM; nothing is written.
    pub fn server_pair(&self, cn: &str) -> ServerPair {
        self.server_pair_with(cn, KeyPair::generate().unwrap())
    }

    /// Like [`Pki::server_pair`], with an RSA-2048 key.
    pub fn server_pair_rsa(&self, cn: &str) -> ServerPair {
        self.server_pair_with(cn, rsa_key())
    }

    /// A server certificate for localhost with `key`, from the server CA.
    pub fn server_pair_with(&self, cn: &str, key: KeyPair) -> ServerPair {
        let mut p =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &self.server_issuer).unwrap();
        ServerPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// Replaces the client CA with a new one (a new key and name) and
    /// returns its PEM; devices issued from now on chain to it. The file
    /// `client_ca` is not touched.
    pub fn new_client_ca(&mut self, cn: &str) -> String {
        self.client_issuer =
            CertifiedIssuer::self_signed(ca_params(cn), KeyPair::generate().unwrap()).unwrap();
        self.client_issuer.pem()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues a client certificate of the given kind, named `cn`.
    pub fn client(&mut self, cn: &str, kind: Kind) -> ClientCert {
        let mut name = rcgen::DistinguishedName::new();
        name.push(DnType::OrganizationName, "Fleet");
        name.push(DnType::CommonName, cn);
        self.client_named(cn, name, kind)
    }

    /// Issues a client certificate with the subject `name`, written to
    /// `file.pem` / `file.key`.
    pub fn client_named(
        &mut self,
        file: &str,
        name: rcgen::DistinguishedName,
        kind: Kind,
    ) -> ClientCert {
        self.client_with_key(file, name, kind, KeyPair::generate().unwrap())
    }

    /// A good device certificate with an RSA-2048 key (what AD CS machine
    /// templates and most MDMs issue to Windows and Java agents).
    pub fn client_rsa(&mut self, cn: &str) -> ClientCert {
        let mut name = rcgen::DistinguishedName::new();
        name.push(DnType::OrganizationName, "Fleet");
        name.push(DnType::CommonName, cn);
        self.client_with_key(cn, name, Kind::Good, rsa_key())
    }

    /// Issues a client certificate for `key`.
    pub fn client_with_key(
        &mut self,
        file: &str,
        name: rcgen::DistinguishedName,
        kind: Kind,
        key: KeyPair,
    ) -> ClientCert {
        let cn = file;
        let serial = vec![0x10, self.next_serial];
        self.next_serial += 1;
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = name;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        p.not_before = now() - time::Duration::days(1);
        p.not_after = now() + time::Duration::days(30);
        if let Some(url) = &self.device_ocsp_url {
            p.custom_extensions.push(super::ocsp_aia(url));
        }
        if !self.device_crl_uris.is_empty() {
            p.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: self.device_crl_uris.clone(),
            }];
        }
        match kind {
            Kind::Expired => {
                p.not_before = now() - time::Duration::days(30);
                p.not_after = now() - time::Duration::days(1);
            }
            Kind::NotYetValid => {
                p.not_before = now() + time::Duration::days(1);
                p.not_after = now() + time::Duration::days(30);
            }
            Kind::ExpiresIn(secs) => {
                p.not_after = now() + time::Duration::seconds(secs);
            }
            Kind::ValidFrom(secs) => {
                p.not_before = now() + time::Duration::seconds(secs);
                p.not_after = p.not_before + time::Duration::days(90);
            }
            _ => {}
        }
        let cert = match kind {
            Kind::SelfSigned => p.self_signed(&key).unwrap(),
            Kind::ForeignCa | Kind::ForgedCa => {
                let name = if matches!(kind, Kind::ForgedCa) {
                    "test client CA"
                } else {
                    "some other CA"
                };
                let foreign =
                    CertifiedIssuer::self_signed(ca_params(name), KeyPair::generate().unwrap())
                        .unwrap();
                p.signed_by(&key, &foreign).unwrap()
            }
            _ => p.signed_by(&key, &self.client_issuer).unwrap(),
        };
        let cert_path = self.path(&format!("{cn}.pem"));
        let key_path = self.path(&format!("{cn}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        ClientCert {
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
            serial,
        }
    }

    /// `n` distinct device certificates from the client CA (one shared key,
    /// distinct names and serials), as client configs; nothing is written.
    pub fn many_clients(&self, n: usize) -> Vec<Arc<rustls::ClientConfig>> {
        self.fleet(n, |i| format!("burst-{i}"), -86_400, 1 << 40)
            .into_iter()
            .map(|(cfg, _)| cfg)
            .collect()
    }

    /// `n` device certificates from the client CA (one shared key), named
    /// `O=Fleet, CN=<cn(i)>`, valid from `valid_from_secs` from now for 30
    /// days, serials from `serial_base`: client configs (no resumption)
    /// with each certificate's DER; nothing is written.
    pub fn fleet(
        &self,
        n: usize,
        cn: impl Fn(usize) -> String,
        valid_from_secs: i64,
        serial_base: u64,
    ) -> Vec<(Arc<rustls::ClientConfig>, Vec<u8>)> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.server_ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let roots = Arc::new(roots);
        let key = KeyPair::generate().unwrap();
        let key_der = key.serialize_der();
        (0..n)
            .map(|i| {
                let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
                p.distinguished_name = rcgen::DistinguishedName::new();
                p.distinguished_name.push(DnType::OrganizationName, "Fleet");
                p.distinguished_name.push(DnType::CommonName, cn(i));
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                p.serial_number = Some(SerialNumber::from(serial_base + i as u64));
                p.not_before = now() + time::Duration::seconds(valid_from_secs);
                p.not_after = p.not_before + time::Duration::days(30);
                let cert = p.signed_by(&key, &self.client_issuer).unwrap();
                let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots.clone())
                    .with_client_auth_cert(
                        vec![cert.der().clone()],
                        PrivateKeyDer::try_from(key_der.clone()).unwrap(),
                    )
                    .unwrap();
                cfg.resumption = rustls::client::Resumption::disabled();
                (Arc::new(cfg), cert.der().to_vec())
            })
            .collect()
    }

    /// Writes a CRL from the client CA whose nextUpdate has passed.
    pub fn stale_crl(&self, name: &str) -> PathBuf {
        let params = CertificateRevocationListParams {
            this_update: now() - time::Duration::days(8),
            next_update: now() - time::Duration::hours(1),
            crl_number: SerialNumber::from(2u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.client_issuer).unwrap();
        let path = self.path(name);
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path
    }

    /// Writes a CRL from the client CA revoking `revoked`; returns its path.
    /// The client CA (to sign CRLs built with [`super::build_crl`]).
    pub fn client_issuer(&self) -> &CertifiedIssuer<'static, KeyPair> {
        &self.client_issuer
    }

    pub fn crl(&self, name: &str, revoked: &[&ClientCert], pem: bool) -> PathBuf {
        let serials: Vec<&[u8]> = revoked.iter().map(|c| c.serial.as_slice()).collect();
        write_crl(&self.path(name), &self.client_issuer, &serials, pem)
    }
}

/// Writes a CRL signed by `by` revoking `serials` (valid from an hour ago
/// for a week) to `path`, as PEM or DER; returns the path.
pub fn write_crl(
    path: &Path,
    by: &CertifiedIssuer<'static, KeyPair>,
    serials: &[&[u8]],
    pem: bool,
) -> PathBuf {
    let params = CertificateRevocationListParams {
        this_update: now() - time::Duration::hours(1),
        next_update: now() + time::Duration::days(7),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from_slice(s),
                revocation_time: now() - time::Duration::minutes(5),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(by).unwrap();
    if pem {
        std::fs::write(path, crl.pem().unwrap()).unwrap();
    } else {
        std::fs::write(path, crl.der().as_ref()).unwrap();
    }
    path.to_path_buf()
}

/// An RSA-2048 key pair.
pub fn rsa_key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap()
}
