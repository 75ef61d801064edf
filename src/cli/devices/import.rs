//! Reading what to import: an export (JSON), a PEM bundle, or lines of
//! hex fingerprints.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::registry::parse_fingerprint;

/// What a file to import holds.
#[derive(Debug)]
pub(crate) enum Import {
    /// Devices as `certgate devices export` wrote them.
    Devices(serde_json::Value),
    /// Fingerprints to pre-approve.
    Fingerprints(Vec<String>),
    /// Certificates (DER) to pre-approve, each recorded with its details.
    Certificates(Vec<Vec<u8>>),
}

/// Reads a file to import: an export (a JSON array of devices), PEM
/// certificates (fingerprint of each), or lines of hex fingerprints (`#`
/// comments, colons allowed).
pub(crate) fn read_import(path: &Path) -> anyhow::Result<Import> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.trim_ascii_start().first() == Some(&b'[') {
        let v: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} looks like an export (JSON) but does not parse",
                path.display()
            )
        })?;
        return Ok(Import::Devices(v));
    }
    if bytes
        .windows(27)
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        let mut out = Vec::new();
        for (i, c) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
            let c = c.with_context(|| {
                format!("{}: certificate #{} is malformed", path.display(), i + 1)
            })?;
            out.push(c.to_vec());
        }
        return Ok(Import::Certificates(out));
    }
    read_fingerprints(path, &bytes).map(Import::Fingerprints)
}

fn read_fingerprints(path: &Path, bytes: &[u8]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let text = String::from_utf8_lossy(bytes);
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        // Allow "fingerprint<whitespace>anything" (e.g. an exported list).
        let word = line.split_whitespace().next().unwrap_or("");
        let fp = parse_fingerprint(word).ok_or_else(|| {
            anyhow!(
                "{} line {}: \"{word}\" is not a SHA-256 fingerprint (64 hex digits)",
                path.display(),
                i + 1
            )
        })?;
        out.push(fp);
    }
    Ok(out)
}
