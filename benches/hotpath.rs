//! The per-connection and per-request functions on certgate's data path:
//! identity extraction (once per connection), the request header rewrite
//! (every request), the framing check (every request) and the ClientHello
//! version peek (only on refused handshakes). The policy decision has its
//! own bench (`benches/registry.rs`). Run: `cargo bench --bench hotpath`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use certgate::internals::ClientIdentity;
use certgate::internals::offered;
use certgate::internals::{ClientFacts, ambiguous_framing, prepare_request};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};

/// A device certificate like an agent's: P-256 key, CN/O/OU, a DNS SAN,
/// signed by a CA.
fn device_cert() -> Vec<u8> {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Fleet Device CA");
    let issuer =
        rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["agent-0042.fleet.example".into()]).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "agent-0042");
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "Fleet");
    p.distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, "laptops");
    p.serial_number = Some(rcgen::SerialNumber::from(0x1001u64));
    p.signed_by(&key, &issuer).unwrap().der().to_vec()
}

/// What an agent's check-in request carries, plus one spoofed identity
/// header and the hop-by-hop headers a client may send.
fn agent_request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "mgmt.example.com"),
        ("user-agent", "FleetAgent/7.4.2 (Windows NT 10.0)"),
        ("accept", "*/*"),
        ("content-type", "application/xml"),
        ("content-length", "512"),
        ("x-agent-id", "0042"),
        ("cookie", "session=abcdef0123456789"),
        ("connection", "keep-alive"),
        ("x-client-cert-subject", "CN=someone-else"),
    ] {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

/// A TLS 1.0 ClientHello record (what a legacy agent sends), for the
/// version peek on refused handshakes.
fn legacy_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x01]; // client_version TLS 1.0
    body.extend_from_slice(&[0u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0x00, 0x2f, 0x00, 0x35]); // 2 suites
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    let mut hs = vec![0x01, 0x00];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

fn bench(c: &mut Criterion) {
    let der = device_cert();
    c.bench_function(
        "identity: PeerIdentity::from_der (once per connection)",
        |b| b.iter(|| ClientIdentity::from_der(black_box(&der)).unwrap()),
    );

    let facts = ClientFacts {
        forwarded_for: HeaderValue::from_static("10.1.2.3"),
        proto: HeaderValue::from_static("https"),
        verify: HeaderValue::from_static("SUCCESS"),
        identity: ClientIdentity::from_der(&der),
    };
    let template = agent_request_headers();
    let host = HeaderValue::from_static("mgmt.example.com");
    c.bench_function("headers: clone + prepare_request (every request)", |b| {
        b.iter(|| {
            let mut h = template.clone();
            prepare_request(&mut h, black_box(&facts), Some(host.clone()), false);
            h
        })
    });
    c.bench_function("headers: clone only (baseline for the row above)", |b| {
        b.iter(|| black_box(&template).clone())
    });
    c.bench_function("headers: ambiguous_framing (every request)", |b| {
        b.iter(|| ambiguous_framing(black_box(&template)))
    });

    let hello = legacy_client_hello();
    c.bench_function(
        "hello: offered() on a TLS 1.0 ClientHello (refusals only)",
        |b| b.iter(|| offered(black_box(&hello))),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
