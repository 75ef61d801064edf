//! Device registries written by earlier certgates must keep every device's
//! status, label and audit trail when today's certgate opens them, so
//! upgrading the binary never locks the fleet out or lets a blocked device
//! back in:
//! - tests/fixtures/registry-v1: schema 1 (one record per certificate),
//!   written by the code of 2026-12-02 before lineages; it is migrated.
//! - tests/fixtures/registry-v2: schema 2 (devices with lineages), written
//!   by the ignored generator below with the code that introduced it; it
//!   holds a device that renewed.
//!
//! The fixtures' CA and device certificates are valid until 2046 and carry
//! their (test-only) keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use rcgen::{CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, KeyPair};

fn fixture(schema: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/registry-v{schema}"))
}

/// The renewal the schema-2 fixture's approved device made (file stem).
const RENEWED: &str = "agent-approved-renewed";

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

/// Opens a copy of fixture `schema` and checks what every device kept.
async fn opens_and_keeps_everything(schema: u32) -> (tempfile::TempDir, Pki, certgate::Gateway) {
    let backend = Backend::start().await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture(schema)).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let gw = start_gateway(&config(&pki, backend.addr, dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let admin = gw.admin_addr().unwrap();
    let (s, list) = admin_call(admin, "GET", "/api/devices", None, None).await;
    assert_eq!(s, http::StatusCode::OK, "{list}");
    assert_eq!(list["total"], DEVICES.len(), "one device per agent: {list}");
    for (stem, status, label) in DEVICES {
        let d = device(dir.path(), stem);
        let fp = sha256_hex(&d.der);
        let (s, v) = admin_call(admin, "GET", &format!("/api/devices/{fp}"), None, None).await;
        assert_eq!(s, http::StatusCode::OK, "{stem}: {v}");
        assert_eq!(v["status"], *status, "{stem}: {v}");
        assert_eq!(v["label"].as_str(), *label, "{stem}: {v}");
        assert!(
            v["id"].as_str().is_some_and(|id| fp.starts_with(id)),
            "{stem}: {v}"
        );
        // A certificate the fixture's device renewed is refused once the
        // default supersede_grace (7 days) has passed since then.
        let superseded_past_grace = v["certificates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["fingerprint"] == fp.as_str())
            .filter_map(|c| c["superseded_at"].as_i64())
            .any(|at| at + 7 * 86_400 <= now().unix_timestamp());
        let cfg = no_resumption(&client_config(&pki, Some(&d), &[b"http/1.1"]));
        let served = admitted(addr, cfg).await.is_ok();
        assert_eq!(
            served,
            *status == "approved" && !superseded_past_grace,
            "{stem} ({status})"
        );
    }
    let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    for action in ["approve", "block", "label"] {
        assert!(
            audit.contains(&format!("\"action\":\"{action}\"")),
            "{action} missing from the audit log:\n{audit}"
        );
    }
    (dir, pki, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_written_by_the_previous_version_keeps_every_status_label_and_audit_line() {
    let (dir, _pki, gw) = opens_and_keeps_everything(1).await;
    // The schema-1 file is kept for a downgrade.
    assert!(dir.path().join("devices.redb.schema1-backup").exists());
    // A migrated record gets what only the certificate tells (its key)
    // when the certificate is next seen.
    let admin = gw.admin_addr().unwrap();
    let fp = sha256_hex(&device(dir.path(), "agent-approved").der);
    let mut filled = false;
    for _ in 0..50 {
        let (_, v) = admin_call(admin, "GET", &format!("/api/devices/{fp}"), None, None).await;
        if v["certificates"][0]["key"]
            .as_str()
            .is_some_and(|k| k.len() == 64)
        {
            filled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(filled, "the migrated record never got its key");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_lineages_keeps_every_device_and_its_renewals() {
    let (dir, pki, gw) = opens_and_keeps_everything(2).await;
    assert!(!dir.path().join("devices.redb.schema1-backup").exists());
    let renewed = device(dir.path(), RENEWED);
    let fp = sha256_hex(&renewed.der);
    let admin = gw.admin_addr().unwrap();
    let (_, v) = admin_call(admin, "GET", &format!("/api/devices/{fp}"), None, None).await;
    assert_eq!(v["status"], "approved", "{v}");
    assert_eq!(v["certificates"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v["fingerprint"], fp.as_str(), "the renewal is current: {v}");
    let cfg = no_resumption(&client_config(&pki, Some(&renewed), &[b"http/1.1"]));
    assert!(admitted(gw.addr("agents").unwrap(), cfg).await.is_ok());
    gw.shutdown().await;
}

/// Writes tests/fixtures/registry-v2 with the current code, including a
/// device that renewed. Run it by hand with the code that writes a schema,
/// and keep its output, before a change to the registry's format (then
/// make it write the next schema's directory):
/// `cargo nextest run --test registry_fixture --run-ignored only`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn make_the_registry_fixture() {
    let out = fixture(2);
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
                device_action(admin, &fp, "approve").await;
            }
            "blocked" => {
                device_action(admin, &fp, "block").await;
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
    // The approved device renews: same subject, new key, later notBefore.
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::OrganizationName, "Fixture Fleet");
    p.distinguished_name
        .push(DnType::CommonName, "agent-approved");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x21, 1]));
    p.not_before = now() - time::Duration::hours(1);
    p.not_after = far;
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca).unwrap();
    std::fs::write(out.join(format!("{RENEWED}.pem")), cert.pem()).unwrap();
    std::fs::write(out.join(format!("{RENEWED}.key")), key.serialize_pem()).unwrap();
    let renewed = device(&out, RENEWED);
    let cfg = no_resumption(&client_config(&pki, Some(&renewed), &[b"http/1.1"]));
    assert!(admitted(addr, cfg).await.is_ok(), "the renewal inherits");
    let fp = sha256_hex(&renewed.der);
    let mut joined = false;
    for _ in 0..50 {
        let (_, v) = admin_call(admin, "GET", &format!("/api/devices/{fp}"), None, None).await;
        if v["certificates"].as_array().map(Vec::len) == Some(2) {
            joined = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(joined);
    assert!(gw.shutdown().await);
}
