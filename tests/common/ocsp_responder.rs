//! A real OCSP responder on loopback: `openssl ocsp` answers each request
//! from an `openssl ca`-style index, signing with a delegated responder
//! certificate (id-kp-OCSPSigning, issued by the client CA). OpenSSL's own
//! `-port` listens on every address, so each request is handed to it
//! through a small HTTP front bound to 127.0.0.1 (`../shared/RECIPES.md`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};

use super::{ClientCert, Pki, hex, now, utc_stamp};

pub struct OcspResponder {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    dir: PathBuf,
}

/// Who signs the responder's answers.
pub enum Signer {
    /// A responder certificate the client CA issued for id-kp-OCSPSigning.
    Delegated,
    /// The client CA itself.
    Ca,
    /// A certificate the client CA issued without id-kp-OCSPSigning: its
    /// answers must be refused.
    WithoutOcspSigning,
}

/// How the responder knows a certificate.
pub enum Known<'a> {
    Good(&'a ClientCert),
    Revoked(&'a ClientCert),
}

fn index_line(c: &ClientCert, revoked: bool) -> String {
    let exp = utc_stamp(now() + time::Duration::days(30));
    let rev = if revoked {
        utc_stamp(now() - time::Duration::hours(1))
    } else {
        String::new()
    };
    format!(
        "{}\t{exp}\t{rev}\t{}\tunknown\t/CN=device\n",
        if revoked { "R" } else { "V" },
        hex(&c.serial).to_uppercase()
    )
}

fn write_index(dir: &std::path::Path, known: &[Known<'_>]) {
    let mut index = String::new();
    for k in known {
        index.push_str(&match k {
            Known::Good(c) => index_line(c, false),
            Known::Revoked(c) => index_line(c, true),
        });
    }
    std::fs::write(dir.join("index.txt"), index).unwrap();
}

impl OcspResponder {
    /// Starts a responder that knows `known` (every other serial is
    /// "unknown").
    pub async fn start(pki: &Pki, known: &[Known<'_>]) -> OcspResponder {
        Self::start_signed(pki, known, Signer::Delegated).await
    }

    /// A responder whose answers `signer` signs.
    pub async fn start_signed(pki: &Pki, known: &[Known<'_>], signer: Signer) -> OcspResponder {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir: PathBuf = pki
            .dir
            .path()
            .join(format!("ocsp-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir).unwrap();
        write_index(&dir, known);
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "test OCSP responder");
        p.extended_key_usages = match signer {
            Signer::WithoutOcspSigning => vec![ExtendedKeyUsagePurpose::ClientAuth],
            _ => vec![ExtendedKeyUsagePurpose::OcspSigning],
        };
        p.not_before = now() - time::Duration::days(1);
        p.not_after = now() + time::Duration::days(30);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, pki.client_issuer()).unwrap();
        match signer {
            Signer::Ca => {
                std::fs::copy(&pki.client_ca, dir.join("ocsp.crt")).unwrap();
                std::fs::write(
                    dir.join("ocsp.key"),
                    pki.client_issuer().key().serialize_pem(),
                )
                .unwrap();
            }
            _ => {
                std::fs::write(dir.join("ocsp.crt"), cert.pem()).unwrap();
                std::fs::write(dir.join("ocsp.key"), key.serialize_pem()).unwrap();
            }
        }
        std::fs::copy(&pki.client_ca, dir.join("ca.crt")).unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let index_dir = dir.clone();
        let seq = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (dir, hits, seq) = (dir.clone(), h.clone(), seq.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (dir, hits, seq) = (dir.clone(), hits.clone(), seq.clone());
                        async move {
                            hits.fetch_add(1, Ordering::Relaxed);
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let n = seq.fetch_add(1, Ordering::Relaxed);
                            let reqf = dir.join(format!("req-{n}.der"));
                            let respf = dir.join(format!("resp-{n}.der"));
                            std::fs::write(&reqf, &body).unwrap();
                            let out = tokio::process::Command::new("openssl")
                                .current_dir(&dir)
                                .args(["ocsp", "-index", "index.txt", "-rsigner", "ocsp.crt"])
                                .args(["-rkey", "ocsp.key", "-CA", "ca.crt", "-ndays", "1"])
                                .arg("-reqin")
                                .arg(&reqf)
                                .arg("-respout")
                                .arg(&respf)
                                .output()
                                .await
                                .unwrap();
                            assert!(
                                out.status.success(),
                                "openssl ocsp: {}",
                                String::from_utf8_lossy(&out.stderr)
                            );
                            let resp = std::fs::read(&respf).unwrap();
                            Ok::<_, Infallible>(
                                http::Response::builder()
                                    .header("content-type", "application/ocsp-response")
                                    .body(Full::new(Bytes::from(resp)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        OcspResponder {
            addr,
            hits,
            task,
            dir: index_dir,
        }
    }

    /// From now on the responder knows `known` (and nothing else).
    pub fn know(&self, known: &[Known<'_>]) {
        write_index(&self.dir, known);
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    /// Stops answering: the port refuses connections from now on.
    pub fn go_away(&self) {
        self.task.abort();
    }
}
