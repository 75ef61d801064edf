//! The last good CRL of each fetched source, on disk (`crl_cache_dir`), so
//! that a restart while the CA is unreachable still enforces it. One DER
//! file and one small JSON file (URL, ETag, Last-Modified, when fetched)
//! per source; each written to a temporary name and renamed, so a crash
//! leaves the previous copy.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::identity::{hex_lower, sha256};

/// What is kept beside a cached CRL.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// The source URL (the file name is its digest).
    pub(crate) url: String,
    /// The `ETag` the server gave it.
    pub(crate) etag: Option<String>,
    /// The `Last-Modified` the server gave it.
    pub(crate) last_modified: Option<String>,
    /// When it was fetched (or last confirmed unchanged), Unix seconds.
    pub(crate) fetched_at: i64,
    /// For a source a device certificate named: the issuer certificate
    /// (base64 DER) whose key signs it, so that after a restart the CRL
    /// is verified and enforced before that device is seen again.
    #[serde(default)]
    pub(crate) issuer: Option<String>,
    /// How a source not in `crl_urls` was found: `device_certificate` or
    /// `freshest_crl` (none for a configured one).
    #[serde(default)]
    pub(crate) learned: Option<String>,
}

/// The cache folder of a listener.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache in `dir` (created on first write).
    pub(crate) fn new(dir: &Path) -> Cache {
        Cache {
            dir: dir.to_path_buf(),
        }
    }

    fn stem(&self, url: &str) -> PathBuf {
        let digest = sha256(url.as_bytes());
        self.dir.join(hex_lower(&digest[..16]))
    }

    /// The cached CRL bytes and metadata of `url`, if any. A missing or
    /// unreadable entry is the same as none: the CRL is fetched.
    pub(crate) fn load(&self, url: &str) -> Option<(Vec<u8>, Meta)> {
        let stem = self.stem(url);
        let der = std::fs::read(stem.with_extension("crl")).ok()?;
        let meta: Meta = std::fs::read(stem.with_extension("json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|m: &Meta| m.url == url)?;
        Some((der, meta))
    }

    /// Every cached source: (URL, CRL bytes, metadata).
    pub(crate) fn entries(&self) -> Vec<(Vec<u8>, Meta)> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in dir.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let Some(meta) = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
            else {
                continue;
            };
            if let Some((der, meta)) = self.load(&meta.url) {
                out.push((der, meta));
            }
        }
        out.sort_by(|a, b| a.1.url.cmp(&b.1.url));
        out
    }

    /// Stores a verified CRL and its metadata.
    pub(crate) fn store(&self, url: &str, der: &[u8], meta: &Meta) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let stem = self.stem(url);
        write_atomic(&stem.with_extension("crl"), der)?;
        let json = serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?;
        write_atomic(&stem.with_extension("json"), &json)
    }

    /// The folder, for messages.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
