//! OCSP for device certificates against a real responder (`openssl ocsp`
//! answering from an index, signing with a delegated responder
//! certificate): good, revoked, unknown and responder down, under
//! `ocsp = "prefer"` and `"require"`, and a returning device served from
//! the cache while the responder is down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use rustls::AlertDescription;

struct Fixture {
    pki: Pki,
    good: ClientCert,
    revoked: ClientCert,
    stranger: ClientCert,
    responder: OcspResponder,
    _backend: Backend,
    gw: certgate::Gateway,
    addr: std::net::SocketAddr,
}

async fn fixture(mode: &str) -> Fixture {
    let backend = Backend::start().await;
    let mut pki = Pki::new();
    let good = pki.client("good-agent", Kind::Good);
    let revoked = pki.client("revoked-agent", Kind::Good);
    let stranger = pki.client("unknown-to-the-responder", Kind::Good);
    let responder =
        OcspResponder::start(&pki, &[Known::Good(&good), Known::Revoked(&revoked)]).await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_client_auth = format!(
        "ocsp = \"{mode}\"\nocsp_url = \"{}\"\nocsp_timeout = \"1s\"\n",
        responder.url()
    );
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    Fixture {
        pki,
        good,
        revoked,
        stranger,
        responder,
        _backend: backend,
        gw,
        addr,
    }
}

impl Fixture {
    fn cfg(&self, c: &ClientCert) -> std::sync::Arc<rustls::ClientConfig> {
        no_resumption(&client_config(&self.pki, Some(c), &[b"http/1.1"]))
    }

    fn answers(&self, result: &str) -> f64 {
        metric(
            &self.gw,
            &format!("certgate_ocsp_answers_total{{result=\"{result}\"}}"),
        )
    }

    /// The failures counted with `reason`, once at least one is (a refusal
    /// after the handshake is counted just after the connection closes).
    async fn failures(&self, reason: &str) -> f64 {
        let line = format!(
            "certgate_tls_handshake_failures_total{{listener=\"agents\",reason=\"{reason}\"}}"
        );
        metric_at_least(&self.gw, &line, 1.0).await;
        metric(&self.gw, &line)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_admits_good_and_unknown_refuses_revoked_and_admits_when_the_responder_is_down() {
    let f = fixture("prefer").await;
    // First connection of each device: answered by the responder.
    assert_eq!(admitted(f.addr, f.cfg(&f.good)).await, Ok(()));
    assert_eq!(f.answers("good"), 1.0);
    let first = admitted(f.addr, f.cfg(&f.revoked)).await;
    assert!(
        first.is_err(),
        "a device the responder says is revoked was served"
    );
    assert_eq!(f.answers("revoked"), 1.0);
    assert!(
        f.failures("revoked").await >= 1.0,
        "{}",
        f.gw.metrics.encode()
    );
    assert_eq!(
        admitted(f.addr, f.cfg(&f.stranger)).await,
        Ok(()),
        "unknown under prefer"
    );
    assert_eq!(f.answers("unknown"), 1.0);

    // Returning devices are decided from the cache, in the handshake: the
    // revoked one now gets certificate_revoked, and nobody asks again.
    let asked = f.responder.hits();
    assert_eq!(
        admitted(f.addr, f.cfg(&f.revoked)).await,
        Err(Some(AlertDescription::CertificateRevoked))
    );
    assert_eq!(admitted(f.addr, f.cfg(&f.good)).await, Ok(()));
    assert_eq!(
        f.responder.hits(),
        asked,
        "a returning device must not wait on the network"
    );

    // Responder down: a device not seen before is admitted on CRLs and the
    // registry alone, after ocsp_timeout at most.
    f.responder.go_away();
    let mut pki = f.pki;
    let newcomer = pki.client("newcomer", Kind::Good);
    let cfg = no_resumption(&client_config(&pki, Some(&newcomer), &[b"http/1.1"]));
    let t = Instant::now();
    assert_eq!(admitted(f.addr, cfg).await, Ok(()));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    f.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_refuses_revoked_unknown_and_unanswered_devices_but_serves_a_returning_one_from_the_cache()
 {
    let f = fixture("require").await;
    assert_eq!(admitted(f.addr, f.cfg(&f.good)).await, Ok(()));
    assert!(admitted(f.addr, f.cfg(&f.revoked)).await.is_err());
    assert!(
        admitted(f.addr, f.cfg(&f.stranger)).await.is_err(),
        "unknown under require"
    );
    assert!(
        f.failures("ocsp_unknown").await >= 1.0,
        "{}",
        f.gw.metrics.encode()
    );
    // Returning: refused in the handshake, from the cache.
    assert!(admitted(f.addr, f.cfg(&f.stranger)).await.is_err());

    // Responder down: the good device, seen before, is still served (its
    // answer is valid for a day) without waiting; a new one is refused.
    f.responder.go_away();
    let t = Instant::now();
    assert_eq!(admitted(f.addr, f.cfg(&f.good)).await, Ok(()));
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "a returning device waited {:?} (ocsp_timeout is 1 s)",
        t.elapsed()
    );
    let mut pki = f.pki;
    let newcomer = pki.client("newcomer", Kind::Good);
    let cfg = no_resumption(&client_config(&pki, Some(&newcomer), &[b"http/1.1"]));
    assert!(admitted(f.addr, cfg).await.is_err());
    assert!(
        eventually(Duration::from_secs(5), || metric(
            &f.gw,
            "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"ocsp_unavailable\"}"
        ) >= 1.0)
        .await,
        "{}",
        f.gw.metrics.encode()
    );
    assert!(
        eventually(Duration::from_secs(5), || metric(
            &f.gw,
            "certgate_ocsp_answers_total{result=\"error\"}"
        ) >= 1.0)
        .await
    );
    f.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_responder_named_in_the_certificate_is_asked_and_only_answers_signed_for_ocsp_count() {
    let backend = Backend::start().await;
    let mut pki = Pki::new();
    // Answers signed by the CA itself, from the responder the device
    // certificate names (authorityInfoAccess; no ocsp_url).
    let ca_signed = OcspResponder::start_signed(&pki, &[], Signer::Ca).await;
    pki.device_ocsp_url = Some(ca_signed.url());
    let named = pki.client("names-its-responder", Kind::Good);
    ca_signed.know(&[Known::Good(&named)]);
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_client_auth = "ocsp = \"require\"\nocsp_timeout = \"2s\"\n".into();
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let cfg = |c: &ClientCert| no_resumption(&client_config(&pki, Some(c), &[b"http/1.1"]));
    assert_eq!(admitted(addr, cfg(&named)).await, Ok(()));
    assert!(ca_signed.hits() >= 1);
    assert_eq!(
        metric(&gw, "certgate_ocsp_answers_total{result=\"good\"}"),
        1.0,
        "{}",
        gw.metrics.encode()
    );
    gw.shutdown().await;

    // A responder whose certificate the CA issued, but not for OCSP
    // signing: its "good" is worth nothing; under require the device is
    // refused.
    let bogus =
        OcspResponder::start_signed(&pki, &[Known::Good(&named)], Signer::WithoutOcspSigning).await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.extra_client_auth = format!(
        "ocsp = \"require\"\nocsp_url = \"{}\"\nocsp_timeout = \"2s\"\n",
        bogus.url()
    );
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    assert!(admitted(addr, cfg(&named)).await.is_err());
    assert!(bogus.hits() >= 1);
    assert_eq!(
        metric(&gw, "certgate_ocsp_answers_total{result=\"error\"}"),
        1.0
    );
    assert!(
        metric_at_least(
            &gw,
            "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"ocsp_unavailable\"}",
            1.0
        )
        .await
    );
    gw.shutdown().await;
}
