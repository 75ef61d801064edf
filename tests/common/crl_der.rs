//! CRLs built field by field (DER written here, signed with the CA's rcgen
//! key), for what rcgen cannot make: delta CRLs (deltaCRLIndicator),
//! removeFromCRL entries, any CRL number and validity window.

use rcgen::{CertifiedIssuer, KeyPair, SigningKey};
use x509_parser::prelude::{FromDer, X509Certificate};

/// What a CRL says.
pub struct CrlSpec {
    pub number: u64,
    /// `Some(n)`: a delta CRL for base CRL number `n` or later.
    pub delta_base: Option<u64>,
    /// thisUpdate / nextUpdate, seconds from now.
    pub this_update: i64,
    pub next_update: i64,
    /// Revoked serials.
    pub revoked: Vec<Vec<u8>>,
    /// removeFromCRL entries (delta CRLs).
    pub removed: Vec<Vec<u8>>,
    /// Where its delta CRLs are published (Freshest CRL).
    pub freshest: Option<String>,
}

impl CrlSpec {
    /// A base CRL numbered `number`, valid from an hour ago for a day.
    pub fn base(number: u64, revoked: &[&[u8]]) -> CrlSpec {
        CrlSpec {
            number,
            delta_base: None,
            this_update: -3600,
            next_update: 86_400,
            revoked: revoked.iter().map(|s| s.to_vec()).collect(),
            removed: Vec::new(),
            freshest: None,
        }
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn integer(bytes: &[u8]) -> Vec<u8> {
    let mut b: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    if b.is_empty() || b[0] & 0x80 != 0 {
        b.insert(0, 0);
    }
    tlv(0x02, &b)
}

fn uint(n: u64) -> Vec<u8> {
    integer(&n.to_be_bytes())
}

/// `t` as UTCTime text (YYMMDDHHMMSSZ), as CRLs and `openssl ca` indexes
/// write it.
pub fn utc_stamp(t: time::OffsetDateTime) -> String {
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        t.year() % 100,
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn utc(offset: i64) -> Vec<u8> {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(offset);
    tlv(0x17, utc_stamp(t).as_bytes())
}

fn extension(oid: &[u8], critical: bool, value: Vec<u8>) -> Vec<u8> {
    let mut parts = vec![tlv(0x06, oid)];
    if critical {
        parts.push(vec![0x01, 0x01, 0xff]);
    }
    parts.push(tlv(0x04, &value));
    seq(&parts)
}

const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const CRL_NUMBER: &[u8] = &[0x55, 0x1d, 0x14];
const DELTA_CRL_INDICATOR: &[u8] = &[0x55, 0x1d, 0x1b];
const REASON_CODE: &[u8] = &[0x55, 0x1d, 0x15];
const FRESHEST_CRL: &[u8] = &[0x55, 0x1d, 0x2e];

/// The DER of `spec`, signed by `by` (an ECDSA P-256 CA, as rcgen makes by
/// default).
pub fn build_crl(spec: &CrlSpec, by: &CertifiedIssuer<'static, KeyPair>) -> Vec<u8> {
    let (_, ca) = X509Certificate::from_der(by.der()).unwrap();
    let issuer = ca.subject().as_raw().to_vec();
    let alg = seq(&[tlv(0x06, ECDSA_SHA256)]);
    let mut entries = Vec::new();
    for s in &spec.revoked {
        entries.push(seq(&[integer(s), utc(-300)]));
    }
    for s in &spec.removed {
        let reason = extension(REASON_CODE, false, tlv(0x0a, &[8]));
        entries.push(seq(&[integer(s), utc(-300), seq(&[reason])]));
    }
    let mut exts = vec![extension(CRL_NUMBER, false, uint(spec.number))];
    if let Some(base) = spec.delta_base {
        exts.push(extension(DELTA_CRL_INDICATOR, true, uint(base)));
    }
    if let Some(url) = &spec.freshest {
        // CRLDistributionPoints: one point, fullName, one URI.
        let point = seq(&[tlv(0xa0, &tlv(0xa0, &tlv(0x86, url.as_bytes())))]);
        exts.push(extension(FRESHEST_CRL, false, seq(&[point])));
    }
    let mut tbs = vec![
        uint(1),
        alg.clone(),
        issuer,
        utc(spec.this_update),
        utc(spec.next_update),
    ];
    if !entries.is_empty() {
        tbs.push(seq(&entries));
    }
    tbs.push(tlv(0xa0, &seq(&exts)));
    let tbs = seq(&tbs);
    let sig = by.key().sign(&tbs).unwrap();
    let mut bits = vec![0u8];
    bits.extend(sig);
    seq(&[tbs, alg, tlv(0x03, &bits)])
}

/// An authorityInfoAccess extension naming `url` as the OCSP responder
/// (id-ad-ocsp), for device certificates made with rcgen.
pub fn ocsp_aia(url: &str) -> rcgen::CustomExtension {
    const ID_AD_OCSP: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
    let access = seq(&[tlv(0x06, ID_AD_OCSP), tlv(0x86, url.as_bytes())]);
    rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], seq(&[access]))
}
