//! Certificate rotation as real tools write files (rename, in place,
//! symlink swap), and what clients see during one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::*;

/// The usual test setup: a PKI with one good device "device-a", a backend,
/// and an in-process gateway in front of it.
pub struct Fixture {
    pub pki: Pki,
    pub device: ClientCert,
    pub backend: Backend,
    pub gw: certgate::Gateway,
    pub addr: SocketAddr,
}

impl Fixture {
    pub async fn start() -> Fixture {
        Fixture::with(|_| {}).await
    }

    /// Like [`Fixture::start`], with the config adjusted by `adjust`.
    pub async fn with(adjust: impl FnOnce(&mut ConfigBuilder)) -> Fixture {
        let mut pki = Pki::new();
        let device = pki.client("device-a", Kind::Good);
        let backend = Backend::start().await;
        let mut cb = ConfigBuilder::new(&pki, backend.addr);
        adjust(&mut cb);
        let gw = start_gateway(&cb.write(pki.dir.path())).await;
        let addr = gw.addr("agents").unwrap();
        Fixture {
            pki,
            device,
            backend,
            gw,
            addr,
        }
    }

    /// A client config presenting "device-a".
    pub fn device_client(&self) -> Arc<rustls::ClientConfig> {
        client_config(&self.pki, Some(&self.device), &[])
    }
}

/// How a tool replaces a certificate file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteStyle {
    /// Truncate and rewrite the file where it is (`cp`, `cat >`, many
    /// scripts). Through a symlink, this rewrites the target.
    InPlace,
    /// Write a temp file beside it, then rename it over the old one
    /// (certbot, editors, `install`).
    Rename,
    /// The Kubernetes secret-volume layout: `tls.crt -> ..data/tls.crt`,
    /// `..data -> ..<generation>`; an update writes a new generation
    /// directory and swaps the `..data` symlink.
    K8sSymlink,
}

pub const WRITE_STYLES: [WriteStyle; 3] = [
    WriteStyle::InPlace,
    WriteStyle::Rename,
    WriteStyle::K8sSymlink,
];

/// A directory holding `tls.crt` and `tls.key`, rewritten in any style.
pub struct CertSlot {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    generation: u32,
}

impl CertSlot {
    pub fn new(parent: &Path, pair: &ServerPair) -> CertSlot {
        let dir = parent.join("secret");
        std::fs::create_dir_all(&dir).unwrap();
        let slot = CertSlot {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            dir,
            generation: 0,
        };
        std::fs::write(&slot.cert, &pair.cert_pem).unwrap();
        std::fs::write(&slot.key, &pair.key_pem).unwrap();
        slot
    }

    /// Replaces cert and key in `style`.
    pub fn write(&mut self, style: WriteStyle, pair: &ServerPair) {
        match style {
            WriteStyle::InPlace => {
                std::fs::write(&self.cert, &pair.cert_pem).unwrap();
                std::fs::write(&self.key, &pair.key_pem).unwrap();
            }
            WriteStyle::Rename => {
                for (path, text) in [(&self.cert, &pair.cert_pem), (&self.key, &pair.key_pem)] {
                    let tmp = self.dir.join(format!(
                        ".{}.tmp",
                        path.file_name().unwrap().to_string_lossy()
                    ));
                    std::fs::write(&tmp, text).unwrap();
                    std::fs::rename(&tmp, path).unwrap();
                }
            }
            WriteStyle::K8sSymlink => {
                self.generation += 1;
                let gen_name = format!("..gen_{}", self.generation);
                let gen_dir = self.dir.join(&gen_name);
                std::fs::create_dir_all(&gen_dir).unwrap();
                std::fs::write(gen_dir.join("tls.crt"), &pair.cert_pem).unwrap();
                std::fs::write(gen_dir.join("tls.key"), &pair.key_pem).unwrap();
                let tmp = self.dir.join("..data_tmp");
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(&gen_name, &tmp).unwrap();
                std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
                for name in ["tls.crt", "tls.key"] {
                    let path = self.dir.join(name);
                    let is_link = std::fs::symlink_metadata(&path)
                        .map(|m| m.file_type().is_symlink())
                        .unwrap_or(false);
                    if !is_link {
                        let tmp = self.dir.join(format!(".{name}.link"));
                        let _ = std::fs::remove_file(&tmp);
                        std::os::unix::fs::symlink(format!("..data/{name}"), &tmp).unwrap();
                        std::fs::rename(&tmp, &path).unwrap();
                    }
                }
            }
        }
    }
}

/// A gateway whose server cert and key live in a [`CertSlot`], with two
/// server certificates to rotate between.
pub struct Rotation {
    pub pki: Pki,
    pub device: ClientCert,
    pub backend: Backend,
    pub pairs: [ServerPair; 2],
    pub slot: CertSlot,
    pub gw: certgate::Gateway,
    pub addr: SocketAddr,
    /// Presents "device-a" (session resumption on).
    pub client: Arc<rustls::ClientConfig>,
    /// Presents "device-a", never resumes: sees the cert served now.
    pub probe: Arc<rustls::ClientConfig>,
}

impl Rotation {
    /// Starts the gateway serving `pairs[0]`.
    pub async fn start() -> Rotation {
        let mut pki = Pki::new();
        let device = pki.client("device-a", Kind::Good);
        let backend = Backend::start().await;
        let pairs = [pki.server_pair("rotation A"), pki.server_pair("rotation B")];
        let slot = CertSlot::new(pki.dir.path(), &pairs[0]);
        let mut cb = ConfigBuilder::new(&pki, backend.addr);
        cb.cert = slot.cert.clone();
        cb.key = slot.key.clone();
        let gw = start_gateway(&cb.write(pki.dir.path())).await;
        let addr = gw.addr("agents").unwrap();
        let client = client_config(&pki, Some(&device), &[]);
        let probe = no_resumption(&client);
        Rotation {
            pki,
            device,
            backend,
            pairs,
            slot,
            gw,
            addr,
            client,
            probe,
        }
    }
}

/// Writes `pair` into `slot` in `style`, then polls with new handshakes
/// until it is served; how long that took, or `None` after `limit`.
pub async fn rotate(
    slot: &mut CertSlot,
    style: WriteStyle,
    pair: &ServerPair,
    addr: SocketAddr,
    probe: &Arc<rustls::ClientConfig>,
    limit: Duration,
) -> Option<Duration> {
    let written = std::time::Instant::now();
    slot.write(style, pair);
    wait_for_cert(addr, probe.clone(), &pair.der, written, limit).await
}
