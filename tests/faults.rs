//! Faults on the files certgate was started with: the last good state keeps
//! serving when certificate files vanish or a CRL turns to garbage, and the
//! failure is visible (error naming the file, reload metrics).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

const FAILURES: &str = "certgate_reloads_total{result=\"failure\"}";
const LAST_OK: &str = "certgate_config_last_reload_successful";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_cert_files_keep_the_last_good_cert_serving() {
    let mut pki = Pki::new();
    let device = pki.client("device-a", Kind::Good);
    let backend = Backend::start().await;
    let cb = ConfigBuilder::new(&pki, backend.addr);
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let client = no_resumption(&client_config(&pki, Some(&device), &[]));
    assert_eq!(
        get(addr, client.clone(), "/before", &[]).await.unwrap().0,
        200
    );

    let cert_pem = std::fs::read(&pki.server_cert).unwrap();
    let key_pem = std::fs::read(&pki.server_key).unwrap();
    std::fs::remove_file(&pki.server_cert).unwrap();
    std::fs::remove_file(&pki.server_key).unwrap();

    let err = gw.reload().await.unwrap_err().to_string();
    assert!(
        err.contains(&pki.server_cert.display().to_string()),
        "the error must name the missing file: {err}"
    );
    assert!(metric(&gw, FAILURES) >= 1.0);
    assert_eq!(metric(&gw, LAST_OK), 0.0);
    // New full handshakes still get the last good certificate.
    for i in 0..5 {
        let (s, _) = get(addr, client.clone(), &format!("/after/{i}"), &[])
            .await
            .unwrap();
        assert_eq!(s, 200);
    }

    // Files back: the next reload succeeds.
    std::fs::write(&pki.server_cert, cert_pem).unwrap();
    std::fs::write(&pki.server_key, key_pem).unwrap();
    // Files back as they were: the watcher sees it, and the failure signal
    // clears (the files on disk are again the ones in force).
    assert!(
        eventually(Duration::from_secs(3), || metric(&gw, LAST_OK) == 1.0).await,
        "restoring the files must clear last_reload_successful=0; metrics:\n{}",
        gw.metrics.encode()
    );
    assert_eq!(get(addr, client, "/restored", &[]).await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_replaced_with_garbage_keeps_the_old_crl_in_force() {
    let mut pki = Pki::new();
    let good = pki.client("device-a", Kind::Good);
    let revoked = pki.client("device-b", Kind::Good);
    let crl = pki.crl("clients", &[&revoked], true);
    let backend = Backend::start().await;
    let mut cb = ConfigBuilder::new(&pki, backend.addr);
    cb.crl = vec![crl.clone()];
    let gw = start_gateway(&cb.write(pki.dir.path())).await;
    let addr = gw.addr("agents").unwrap();
    let good_client = no_resumption(&client_config(&pki, Some(&good), &[]));
    let revoked_client = no_resumption(&client_config(&pki, Some(&revoked), &[]));
    let revoked_line =
        "certgate_tls_handshake_failures_total{listener=\"agents\",reason=\"revoked\"}";

    assert!(get(addr, revoked_client.clone(), "/b", &[]).await.is_err());
    assert_eq!(metric(&gw, revoked_line), 1.0);

    for garbage in [
        &b"-----BEGIN X509 CRL-----\nnot base64!\n-----END X509 CRL-----\n"[..],
        &b"\x30\x82\x01\x00 truncated DER"[..],
        &b""[..],
    ] {
        std::fs::write(&crl, garbage).unwrap();
        let err = gw.reload().await.unwrap_err().to_string();
        assert!(
            err.contains(&crl.display().to_string()),
            "the error must name the CRL file: {err}"
        );
        assert_eq!(metric(&gw, LAST_OK), 0.0);
        // The old CRL still refuses device-b; device-a is still admitted.
        let before = metric(&gw, revoked_line);
        assert!(get(addr, revoked_client.clone(), "/b", &[]).await.is_err());
        assert_eq!(metric(&gw, revoked_line), before + 1.0);
        assert_eq!(
            get(addr, good_client.clone(), "/a", &[]).await.unwrap().0,
            200
        );
    }
    assert_eq!(
        backend.count(),
        3,
        "only device-a's requests reached the backend"
    );
}
