//! Trust material as a real device PKI has it: a root with sub-CAs, CRLs
//! per CA, device certificates with key usages, and the mistakes admins
//! make with them. Each test makes its PKI with rcgen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use http::StatusCode;
use rcgen::{
    CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// A CA made in the test: self-signed, or signed by `parent`.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    serial: Vec<u8>,
    pem: String,
}

fn ca(cn: &str, serial: u8, parent: Option<&Ca>) -> Ca {
    let mut p = ca_params(cn);
    let s = vec![0x40, serial];
    p.serial_number = Some(SerialNumber::from_slice(&s));
    p.not_before = now() - time::Duration::days(10);
    p.not_after = now() + time::Duration::days(365);
    let key = KeyPair::generate().unwrap();
    let issuer = match parent {
        None => CertifiedIssuer::self_signed(p, key).unwrap(),
        Some(parent) => CertifiedIssuer::signed_by(p, key, &parent.issuer).unwrap(),
    };
    let pem = issuer.pem();
    Ca {
        issuer,
        serial: s,
        pem,
    }
}

/// A device certificate from `by`, written to `dir` with its chain
/// (`with_chain`: the CAs the device sends after its own certificate).
struct Device {
    cert: ClientCert,
}

fn device(
    dir: &Path,
    cn: &str,
    serial: u8,
    by: &Ca,
    with_chain: &[&Ca],
    key_usages: Vec<KeyUsagePurpose>,
) -> Device {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = key_usages;
    let s = vec![0x20, serial];
    p.serial_number = Some(SerialNumber::from_slice(&s));
    p.not_before = now() - time::Duration::days(1);
    p.not_after = now() + time::Duration::days(30);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &by.issuer).unwrap();
    let mut pem = cert.pem();
    for c in with_chain {
        pem.push_str(&c.pem);
    }
    let cert_path = dir.join(format!("{cn}.pem"));
    let key_path = dir.join(format!("{cn}.key"));
    std::fs::write(&cert_path, pem).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    Device {
        cert: ClientCert {
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
            serial: s,
        },
    }
}

/// A CRL signed by `by`, revoking `serials`.
fn crl(
    dir: &Path,
    name: &str,
    by: &CertifiedIssuer<'static, KeyPair>,
    serials: &[&[u8]],
) -> PathBuf {
    write_crl(&dir.join(name), by, serials, true)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The client config of a device: its whole PEM file (leaf + chain).
fn device_client(pki: &Pki, d: &Device) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&pki.server_ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(&d.cert.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&d.cert.key).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

/// The count of handshake failures with `reason`, once it reaches
/// `expected` (the gateway counts a refusal just after the client has read
/// its alert) or after 2 s.
async fn failures(gw: &certgate::Gateway, reason: &str, expected: f64) -> f64 {
    let line =
        format!("certgate_tls_handshake_failures_total{{listener=\"agents\",reason=\"{reason}\"}}");
    eventually(std::time::Duration::from_secs(2), || {
        metric(gw, &line) >= expected
    })
    .await;
    metric(gw, &line)
}

fn sign_usages() -> Vec<KeyUsagePurpose> {
    vec![KeyUsagePurpose::DigitalSignature]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_ca_revoked_by_the_roots_crl_takes_its_devices_with_it() {
    let pki = Pki::new();
    let dir = pki.dir.path();
    let root = ca("Fleet Root CA", 1, None);
    let revoked_sub = ca("Fleet Sub CA East", 2, Some(&root));
    let good_sub = ca("Fleet Sub CA West", 3, Some(&root));
    let root_pem = write(dir, "root.pem", &root.pem);
    let root_crl = crl(dir, "root.crl", &root.issuer, &[&revoked_sub.serial]);
    // Devices send their sub-CA; only the root is configured.
    let east = device(
        dir,
        "east-1",
        1,
        &revoked_sub,
        &[&revoked_sub],
        sign_usages(),
    );
    let west = device(dir, "west-1", 2, &good_sub, &[&good_sub], sign_usages());

    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.ca = vec![root_pem.clone()];
    cb.crl = vec![root_crl.clone()];
    let gw = start_gateway(&cb.write(dir)).await;
    let addr = gw.addr("agents").unwrap();

    let (s, _) = get(addr, device_client(&pki, &west), "/west", &[])
        .await
        .expect("a device of the sub-CA the root did not revoke is admitted");
    assert_eq!(s, 200);
    let refused = get(addr, device_client(&pki, &east), "/east", &[]).await;
    assert!(
        refused.is_err(),
        "a device of a revoked sub-CA was admitted"
    );
    assert_eq!(
        backend.count(),
        1,
        "only the west device reached the backend"
    );
    assert_eq!(
        failures(&gw, "ca_revoked", 1.0).await,
        1.0,
        "the refusal says a CA of the chain is revoked: {}",
        gw.metrics.encode()
    );
    drop(gw);

    // The same with the sub-CA configured beside the root and the device
    // sending only its own certificate: the sub-CA is then part of the
    // path, not a trust anchor of its own.
    let bundle = write(
        dir,
        "bundle.pem",
        &format!("{}{}", root.pem, revoked_sub.pem),
    );
    let east_alone = device(dir, "east-2", 3, &revoked_sub, &[], sign_usages());
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.ca = vec![bundle];
    cb.crl = vec![root_crl];
    let gw = start_gateway(&cb.write(dir)).await;
    let addr = gw.addr("agents").unwrap();
    assert!(
        get(addr, device_client(&pki, &east_alone), "/east-alone", &[])
            .await
            .is_err(),
        "a device of a revoked sub-CA from the bundle was admitted"
    );
    assert_eq!(
        failures(&gw, "ca_revoked", 1.0).await,
        1.0,
        "{}",
        gw.metrics.encode()
    );

    // The log line names the revoked certificate of the chain.
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.ca = vec![root_pem];
    cb.crl = vec![dir.join("root.crl")];
    let cfg = cb.write(dir);
    let proc_ = spawn_certgate(&cfg);
    let _ = get(proc_.addr, device_client(&pki, &east), "/east", &[]).await;
    let names_it = |log: &str| {
        log.lines().any(|l| {
            l.contains("TLS handshake refused")
                && l.contains("ca_revoked")
                && l.contains("certificate #2 of the chain (\"CN=Fleet Sub CA East\"")
                && l.contains("revoked by the CRL of \"CN=Fleet Root CA\"")
        })
    };
    let found = eventually(std::time::Duration::from_secs(5), || {
        names_it(&proc_.log.lock().unwrap())
    })
    .await;
    assert!(
        found,
        "the log names the revoked sub-CA:\n{}",
        proc_.log.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_cas_own_crl_still_revokes_its_devices() {
    let pki = Pki::new();
    let dir = pki.dir.path();
    let root = ca("Root", 1, None);
    let sub = ca("Sub", 2, Some(&root));
    let lost = device(dir, "lost-laptop", 1, &sub, &[&sub], sign_usages());
    let kept = device(dir, "kept-laptop", 2, &sub, &[&sub], sign_usages());
    let bundle = write(dir, "bundle.pem", &format!("{}{}", root.pem, sub.pem));
    let sub_crl = crl(dir, "sub.crl", &sub.issuer, &[&lost.cert.serial]);
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.ca = vec![bundle];
    cb.crl = vec![sub_crl];
    let gw = start_gateway(&cb.write(dir)).await;
    let addr = gw.addr("agents").unwrap();
    let (s, _) = get(addr, device_client(&pki, &kept), "/", &[])
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert!(
        get(addr, device_client(&pki, &lost), "/", &[])
            .await
            .is_err()
    );
    assert_eq!(
        failures(&gw, "revoked", 1.0).await,
        1.0,
        "{}",
        gw.metrics.encode()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cas_crl_never_changes_another_cas_devices() {
    let pki = Pki::new();
    let dir = pki.dir.path();
    let a = ca("Site A CA", 1, None);
    let b = ca("Site B CA", 2, None);
    let a_good = device(dir, "a-good", 1, &a, &[], sign_usages());
    let a_revoked = device(dir, "a-revoked", 2, &a, &[], sign_usages());
    let b_device = device(dir, "b-device", 3, &b, &[], sign_usages());
    let a_pem = write(dir, "a.pem", &a.pem);
    let b_pem = write(dir, "b.pem", &b.pem);
    let a_crl = crl(dir, "a.crl", &a.issuer, &[&a_revoked.cert.serial]);

    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.ca = vec![a_pem.clone(), b_pem.clone()];
    cb.crl = vec![a_crl.clone()];
    let gw = start_gateway(&cb.write(dir)).await;
    let addr = gw.addr("agents").unwrap();
    for (d, path) in [(&a_good, "/a-good"), (&b_device, "/b-device")] {
        let (s, _) = get(addr, device_client(&pki, d), path, &[])
            .await
            .unwrap_or_else(|e| panic!("{path} must be admitted: {e}"));
        assert_eq!(s, 200, "{path}");
    }
    assert!(
        get(addr, device_client(&pki, &a_revoked), "/a-revoked", &[])
            .await
            .is_err()
    );
    assert_eq!(
        failures(&gw, "revoked", 1.0).await,
        1.0,
        "{}",
        gw.metrics.encode()
    );
    assert_eq!(failures(&gw, "unknown_revocation_status", 0.0).await, 0.0);
    drop(gw);

    // require_crl: check names the CA without one, and run refuses to start.
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.ca = vec![a_pem, b_pem];
    cb.crl = vec![a_crl];
    cb.extra_client_auth = "require_crl = true\n".into();
    let cfg = cb.write(dir);
    let err = certgate_fails("check", &cfg);
    assert!(
        err.contains("require_crl = true")
            && err.contains("CN=Site B CA")
            && !err.contains("CN=Site A CA"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_certificate_that_may_not_sign_is_refused_with_its_own_reason() {
    let pki = Pki::new();
    let dir = pki.dir.path();
    let root = ca("Device CA", 1, None);
    let enc_only = device(
        dir,
        "encipher-only",
        1,
        &root,
        &[],
        vec![KeyUsagePurpose::KeyEncipherment],
    );
    let signer = device(dir, "signer", 2, &root, &[], sign_usages());
    let no_ku = device(dir, "no-key-usage", 3, &root, &[], vec![]);
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.ca = vec![write(dir, "ca.pem", &root.pem)];
    let gw = start_gateway(&cb.write(dir)).await;
    let addr = gw.addr("agents").unwrap();
    for d in [&signer, &no_ku] {
        let (s, _) = get(addr, device_client(&pki, d), "/", &[]).await.unwrap();
        assert_eq!(s, 200);
    }
    let e = get(addr, device_client(&pki, &enc_only), "/", &[]).await;
    assert!(
        e.is_err(),
        "a keyUsage without digitalSignature was admitted"
    );
    assert_eq!(
        failures(&gw, "key_usage", 1.0).await,
        1.0,
        "{}",
        gw.metrics.encode()
    );
    assert_eq!(backend.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_that_does_not_verify_is_refused_by_check_and_reload() {
    let mut pki = Pki::new();
    let dir = pki.dir.path().to_path_buf();
    let device = pki.client("device-a", Kind::Good);
    // Signed by another key under the trusted CA's exact name, and from a
    // CA certgate does not trust at all.
    let forged_ca = ca("test client CA", 9, None);
    let forged = crl(&dir, "forged.crl", &forged_ca.issuer, &[&device.serial]);
    let stranger = ca("Some Other CA", 8, None);
    let foreign = crl(&dir, "foreign.crl", &stranger.issuer, &[]);

    let backend = Backend::start().await;
    for (file, expect) in [
        (&forged, "signature does not verify"),
        (&foreign, "not one of the client CAs"),
    ] {
        let mut cb = ConfigBuilder::new(&pki, backend.addr);
        cb.crl = vec![file.clone()];
        let err = certgate_fails("check", &cb.write(&dir));
        assert!(
            err.contains(expect)
                && err.contains("client_auth.crl[0]")
                && err.contains(&file.display().to_string()),
            "{err}"
        );
    }
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.crl = vec![forged.clone()];
    assert!(certgate_fails("check", &cb.write(&dir)).contains("CN=test client CA"));

    // On reload: the forged CRL replaces a good one; it is refused and the
    // old state stays in force (the device is still admitted).
    let good = pki.crl("client-ca.crl", &[], true);
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.crl = vec![good.clone()];
    let gw = start_gateway(&cb.write(&dir)).await;
    let addr = gw.addr("agents").unwrap();
    let admin = gw.admin_addr().unwrap();
    let client = no_resumption(&client_config(&pki, Some(&device), &[]));
    assert_eq!(get(addr, client.clone(), "/", &[]).await.unwrap().0, 200);
    std::fs::copy(&forged, &good).unwrap();
    let (s, v) = admin_call(admin, "POST", "/api/reload", None, None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v.to_string().contains("signature does not verify"), "{v}");
    assert_eq!(
        get(addr, client, "/still", &[]).await.unwrap().0,
        200,
        "the old CRL stays in force"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_catches_the_lockouts_an_admin_makes() {
    let mut pki = Pki::new();
    let dir = pki.dir.path().to_path_buf();
    let backend = Backend::start().await;

    // The server certificate given as the client CA.
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.ca = vec![pki.server_cert.clone()];
    let err = certgate_fails("check", &cb.write(&dir));
    assert!(
        err.contains("client_auth.ca[0]")
            && err.contains("is not a CA certificate")
            && err.contains("CN=localhost"),
        "{err}"
    );

    // Expired and not-yet-valid server certificates; one expiring soon
    // passes with a warning.
    let server_ca = ca("Server CA", 1, None);
    for (name, from, to, expect) in [
        ("expired", -30, -1, Some("expired on")),
        ("future", 2, 30, Some("is not valid before")),
        ("soon", -1, 5, None),
    ] {
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.not_before = now() + time::Duration::days(from);
        p.not_after = now() + time::Duration::days(to);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &server_ca.issuer).unwrap();
        let mut cb = ConfigBuilder::new(&pki, backend.addr);
        cb.cert = write(&dir, &format!("{name}.pem"), &cert.pem());
        cb.key = write(&dir, &format!("{name}.key"), &key.serialize_pem());
        let cfg = cb.write(&dir);
        match expect {
            Some(e) => {
                let err = certgate_fails("check", &cfg);
                assert!(
                    err.contains(e) && err.contains("tls.certificate[0].cert"),
                    "{name}: {err}"
                );
            }
            None => {
                let out = std::process::Command::new(certgate_bin())
                    .args(["check", "--config"])
                    .arg(&cfg)
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "{stderr}");
                assert!(
                    stderr.contains("warning") && stderr.contains("CN=soon"),
                    "{stderr}"
                );
            }
        }
    }

    // A registry whose directory cannot be created.
    let blocker = write(&dir, "not-a-dir", "a file where a directory should be");
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_top = format!(
        "[registry]\npath = \"{}\"\n",
        blocker.join("data/devices.redb").display()
    );
    let err = certgate_fails("check", &cb.write(&dir));
    assert!(
        err.contains("registry.path") && err.contains("is a file, not a directory"),
        "{err}"
    );
    let err = certgate_fails("run", &cb.write(&dir));
    assert!(err.contains("registry"), "{err}");

    // On reload alike: the server certificate given as the client CA is
    // refused and the device keeps being admitted.
    let device = pki.client("device-a", Kind::Good);
    let cb = ConfigBuilder::new(&pki, backend.addr);
    let gw = start_gateway(&cb.write(&dir)).await;
    let addr = gw.addr("agents").unwrap();
    let client = no_resumption(&client_config(&pki, Some(&device), &[]));
    assert_eq!(get(addr, client.clone(), "/", &[]).await.unwrap().0, 200);
    let mut bad = ConfigBuilder::new(&pki, backend.addr);
    bad.ca = vec![pki.server_cert.clone()];
    // Same admin and listener addresses as the running gateway.
    bad.listen = addr.to_string();
    let text = bad.render().replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{}\"", gw.admin_addr().unwrap()),
    );
    std::fs::write(dir.join("certgate.toml"), text).unwrap();
    let (s, v) = admin_call(gw.admin_addr().unwrap(), "POST", "/api/reload", None, None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v.to_string().contains("is not a CA certificate"), "{v}");
    assert_eq!(get(addr, client, "/still", &[]).await.unwrap().0, 200);
}
