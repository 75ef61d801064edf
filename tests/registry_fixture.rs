//! A device registry written by an earlier certgate (tests/fixtures/
//! registry-v1, made with the code of 2026-12-02 by the ignored test below)
//! must keep every device's status, label and audit trail when today's
//! certgate opens it, so upgrading the binary never locks the fleet out or
//! lets a blocked device back in. The fixture's CA and device certificates
//! are valid until 2046 and carry their (test-only) keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use rcgen::{CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, KeyPair};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/registry-v1")
}

/// (file stem, status the fixture holds, label)
const DEVICES: &[(&str, &str, Option<&str>)] = &[
    ("agent-approved", "approved", None),
    ("agent-labelled", "approved", Some("lab bench 3")),
    ("agent-blocked", "blocked", None),
    ("agent-pending", "pending", None),
];

fn device(dir: &Path, stem: &str) -> ClientCert {
    let cert = dir.join(format!("{stem}.pem"));
    let der = rustls::pki_types::pem::PemObject::from_pem_file(&cert).unwrap();
    ClientCert {
        key: dir.join(format!("{stem}.key")),
        cert,
        der,
        serial: Vec::new(),
    }
}

fn config(pki: &Pki, backend: std::net::SocketAddr, dir: &Path) -> PathBuf {
    let mut cb = ConfigBuilder::new(pki, backend);
    cb.ca = vec![dir.join("ca.pem")];
    cb.extra_top = registry_table(dir, "manual");
    cb.write(pki.dir.path())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_written_by_the_previous_version_keeps_every_status_label_and_audit_line() {
    let backend = Backend::start().await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let gw = start_gateway(&config(&pki, backend.addr, dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let admin = gw.admin_addr().unwrap();
    let (s, list) = admin_call(admin, "GET", "/api/devices", None, None).await;
    assert_eq!(s, http::StatusCode::OK, "{list}");
    for (stem, status, label) in DEVICES {
        let d = device(dir.path(), stem);
        let fp = sha256_hex(&d.der);
        let (s, v) = admin_call(admin, "GET", &format!("/api/devices/{fp}"), None, None).await;
        assert_eq!(s, http::StatusCode::OK, "{stem}: {v}");
        assert_eq!(v["status"], *status, "{stem}: {v}");
        assert_eq!(v["label"].as_str(), *label, "{stem}: {v}");
        let cfg = no_resumption(&client_config(&pki, Some(&d), &[b"http/1.1"]));
        let served = admitted(addr, cfg).await.is_ok();
        assert_eq!(served, *status == "approved", "{stem} ({status})");
    }
    let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    for action in ["approve", "block", "label"] {
        assert!(
            audit.contains(&format!("\"action\":\"{action}\"")),
            "{action} missing from the audit log:\n{audit}"
        );
    }
    gw.shutdown().await;
}

/// Writes tests/fixtures/registry-v1 with the current code. Run once, by
/// hand, before a change to the registry's format:
/// `cargo nextest run --test registry_fixture --run-ignored only`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn make_the_registry_fixture() {
    let out = fixture();
    std::fs::create_dir_all(&out).unwrap();
    let far = time::OffsetDateTime::from_unix_timestamp(2_400_000_000).unwrap(); // 2046
    let mut cap = ca_params("fixture device CA");
    cap.not_before = now() - time::Duration::days(1);
    cap.not_after = far;
    let ca = CertifiedIssuer::self_signed(cap, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(out.join("ca.pem"), ca.pem()).unwrap();
    for (i, (stem, ..)) in DEVICES.iter().enumerate() {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::OrganizationName, "Fixture Fleet");
        p.distinguished_name.push(DnType::CommonName, *stem);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x20, i as u8 + 1]));
        p.not_before = now() - time::Duration::days(1);
        p.not_after = far;
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca).unwrap();
        std::fs::write(out.join(format!("{stem}.pem")), cert.pem()).unwrap();
        std::fs::write(out.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
    }
    let backend = Backend::start().await;
    let pki = Pki::new();
    let gw = start_gateway(&config(&pki, backend.addr, &out)).await;
    let addr = gw.addr("agents").unwrap();
    let admin = gw.admin_addr().unwrap();
    for (stem, status, label) in DEVICES {
        let d = device(&out, stem);
        let cfg = no_resumption(&client_config(&pki, Some(&d), &[b"http/1.1"]));
        let _ = admitted(addr, cfg).await;
        let fp = sha256_hex(&d.der);
        for _ in 0..50 {
            let (s, _) = admin_call(admin, "GET", &format!("/api/devices/{fp}"), None, None).await;
            if s == http::StatusCode::OK {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        match *status {
            "approved" => {
                admin_call(
                    admin,
                    "POST",
                    &format!("/api/devices/{fp}/approve"),
                    None,
                    None,
                )
                .await;
            }
            "blocked" => {
                admin_call(
                    admin,
                    "POST",
                    &format!("/api/devices/{fp}/block"),
                    None,
                    None,
                )
                .await;
            }
            _ => {}
        }
        if let Some(l) = label {
            let (s, v) = admin_call(
                admin,
                "PUT",
                &format!("/api/devices/{fp}/label"),
                None,
                Some(serde_json::json!({"label": l})),
            )
            .await;
            assert_eq!(s, http::StatusCode::OK, "{v}");
        }
    }
    assert!(gw.shutdown().await);
}
