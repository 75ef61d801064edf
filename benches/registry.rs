//! What the device registry adds to a handshake (the fingerprint of the
//! client certificate and a policy decision against a snapshot of 10,000
//! devices), and what the registry writer spends on each snapshot it
//! publishes (100,000 devices). Run: `cargo bench --bench registry`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::{Arc, Mutex};

use certgate::config::{
    AllowRules, Approval, ConfigPath, RegistrySettings, RenewalIdentity, RenewalSettings,
};
use certgate::internals::Policy;
use certgate::internals::{
    Certificate, Device, DeviceStatus, DeviceStore, Registry, RegistryMetrics, StoreError,
    fingerprint,
};
use criterion::{Criterion, criterion_group, criterion_main};

/// An in-memory store: the bench measures the handshake path, which never
/// touches the store anyway.
#[derive(Default)]
struct Memory(Mutex<Vec<Device>>);

impl DeviceStore for Memory {
    fn load(&self) -> Result<(Vec<Device>, Vec<StoreError>), StoreError> {
        Ok((self.0.lock().unwrap().clone(), Vec::new()))
    }
    fn put(&self, devices: &[Device]) -> Result<(), StoreError> {
        self.0.lock().unwrap().extend_from_slice(devices);
        Ok(())
    }
    fn delete(&self, _: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
}

fn device_cert(cn: &str, not_before_year: i32) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.not_before = rcgen::date_time_ymd(not_before_year, 1, 1);
    p.not_after = rcgen::date_time_ymd(not_before_year + 30, 1, 1);
    p.self_signed(&key).unwrap().der().to_vec()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let approved = device_cert("agent-approved", 2024);
    let renewed = device_cert("agent-approved", 2025);
    let unknown = device_cert("agent-new", 2024);
    let store = Memory::default();
    let mut devices: Vec<Device> = (0..10_000u32)
        .map(|i| {
            let fp = certgate::internals::sha256_hex(format!("device {i}").as_bytes());
            let mut c = Certificate::bare(fp.clone());
            // Each device has a subject, so the renewal index holds all
            // 10,000.
            c.subject = format!("CN=agent-{i}");
            c.issuer = "CN=agent-approved".into();
            Device::of(fp[..16].to_string(), c, DeviceStatus::Approved)
        })
        .collect();
    let fp = certgate::internals::sha256_hex(&approved);
    devices.push(Device::of(
        fp[..16].to_string(),
        Certificate::from_der(fp, &approved),
        DeviceStatus::Approved,
    ));
    store.put(&devices).unwrap();
    let dir = std::env::temp_dir();
    let path = |n: &str| ConfigPath {
        written: n.into(),
        resolved: dir.join(n),
    };
    let settings = RegistrySettings {
        path: path("unused.redb"),
        backend: certgate::config::RegistryBackend::Redb,
        approval: Approval::Manual,
        audit_log: path("unused-audit.log"),
        update_queue: 1024,
        renewal_identities: vec![RenewalIdentity::Subject],
    };
    let registry =
        Registry::with_store(Arc::new(store), &settings, RegistryMetrics::default()).unwrap();
    let policy = Policy {
        registry: Some(registry),
        approval: Approval::Manual,
        rules: AllowRules::default(),
        renewal: RenewalSettings::default(),
    };
    let with_rules = Policy {
        rules: AllowRules {
            cn: vec!["agent-*".into()],
            ..AllowRules::default()
        },
        ..policy.clone()
    };
    let fp_approved = fingerprint(&approved);
    let fp_unknown = fingerprint(&unknown);
    let fp_renewed = fingerprint(&renewed);

    let mut g = c.benchmark_group("registry check per handshake (10,000 devices)");
    g.bench_function("fingerprint + decide, approved device", |b| {
        b.iter(|| {
            let fp = fingerprint(black_box(&approved));
            black_box(policy.decide(&fp, &approved, &|_| false))
        })
    });
    g.bench_function("decide only, approved device", |b| {
        b.iter(|| black_box(policy.decide(black_box(&fp_approved), &approved, &|_| false)))
    });
    g.bench_function("decide only, first-seen device (refused, pending)", |b| {
        b.iter(|| black_box(policy.decide(black_box(&fp_unknown), &unknown, &|_| false)))
    });
    g.bench_function(
        "decide, first handshake of a renewed certificate (inherits approval)",
        |b| {
            b.iter(|| {
                let v = policy.decide(black_box(&fp_renewed), &renewed, &|_| false);
                assert!(matches!(v, certgate::internals::Verdict::Admit { .. }));
                black_box(v)
            })
        },
    );
    g.bench_function("decide, first-seen device matching an allow_cn rule", |b| {
        b.iter(|| black_box(with_rules.decide(black_box(&fp_unknown), &unknown, &|_| false)))
    });
    g.finish();

    // What the registry writer does at every change it publishes: the
    // whole snapshot (statuses and the renewal index) from its records.
    let fleet: Vec<Device> = (0..100_000u32)
        .map(|i| {
            let fp = certgate::internals::sha256_hex(format!("fleet {i}").as_bytes());
            let mut c = Certificate::bare(fp.clone());
            c.subject = format!("CN=agent-{i},O=Fleet");
            c.issuer = "CN=Fleet CA".into();
            c.key = fp.clone();
            c.serial = format!("{i:X}");
            Device::of(fp[..16].to_string(), c, DeviceStatus::Approved)
        })
        .collect();
    let mut g = c.benchmark_group("registry snapshot rebuild (writer, 100,000 devices)");
    g.sample_size(10);
    g.bench_function("statuses only (renewal off)", |b| {
        b.iter(|| black_box(certgate::internals::Snapshot::build(fleet.iter(), &[])))
    });
    g.bench_function("statuses and the same_subject index", |b| {
        b.iter(|| {
            black_box(certgate::internals::Snapshot::build(
                fleet.iter(),
                &[RenewalIdentity::Subject],
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
