//! Choosing the server certificate per ClientHello: by SNI (exact name,
//! then a `*.` wildcard one label deep, then the default for clients that
//! send none), and within the name by key type — the certificate this
//! client can use with a suite both sides support, ECDSA first.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::admission::Failure;

use super::HANDSHAKE;
use super::hello::is_grease;
use super::key_kind::KeyKind;

/// One certificate as configured: its key, its place in
/// `[[listener.tls.certificate]]` (for messages) and its kind.
#[derive(Debug, Clone)]
pub(super) struct Served {
    pub(super) key: Arc<CertifiedKey>,
    pub(super) index: usize,
    pub(super) kind: KeyKind,
}

/// The certificates of one name (or of the default): at most one per key
/// type, kept in [`KeyKind::PREFERENCE`] order.
#[derive(Debug, Clone, Default)]
pub(super) struct CertSet(Vec<Served>);

impl CertSet {
    /// Adds `s`; the certificate already holding its key type, if any, is
    /// returned instead (a config error for names, ignored for the default).
    fn insert(&mut self, s: &Served) -> Result<(), usize> {
        if let Some(other) = self.0.iter().find(|o| o.kind == s.kind) {
            return Err(other.index);
        }
        self.0.push(s.clone());
        self.0.sort_by_key(|o| o.kind);
        Ok(())
    }

    /// The key types held.
    pub(super) fn kinds(&self) -> impl Iterator<Item = KeyKind> + '_ {
        self.0.iter().map(|s| s.kind)
    }

    /// The certificate for a client that can verify `schemes` (rustls has
    /// already narrowed them to the suites both sides support), preferring
    /// ECDSA. When none fits, the reason is noted for the handshake's log
    /// and the first certificate is returned: the handshake then fails as
    /// rustls decides, explained by the note.
    fn choose(
        &self,
        schemes: &[SignatureScheme],
        suites: &[rustls::CipherSuite],
    ) -> Option<Arc<CertifiedKey>> {
        if let Some(s) = self
            .0
            .iter()
            .find(|s| s.key.key.choose_scheme(schemes).is_some())
        {
            return Some(s.key.clone());
        }
        let reason = missing(self, schemes, suites);
        let _ = HANDSHAKE.try_with(|n| n.borrow_mut().no_usable_certificate = reason);
        self.0.first().map(|s| s.key.clone())
    }
}

/// Why no certificate of `set` fits the client: the key type it needs and
/// the set lacks, or (offering no suite certgate supports at all) only the
/// CBC suites of legacy stacks.
fn missing(
    set: &CertSet,
    schemes: &[SignatureScheme],
    suites: &[rustls::CipherSuite],
) -> Option<Failure> {
    let needed: Vec<KeyKind> = KeyKind::PREFERENCE
        .into_iter()
        .filter(|k| schemes.iter().any(|s| k.signs(*s)))
        .collect();
    if needed.is_empty() {
        let codes: Vec<u16> = suites.iter().map(|&s| u16::from(s)).collect();
        return offers_only_cbc(&codes).then_some(Failure::LegacyCbcOnly);
    }
    let held: Vec<KeyKind> = set.kinds().collect();
    needed
        .into_iter()
        .find(|k| !held.contains(k))
        .map(|k| match k {
            KeyKind::Ecdsa => Failure::NeedsEcdsaCertificate,
            KeyKind::Rsa => Failure::NeedsRsaCertificate,
            KeyKind::Ed25519 => Failure::NeedsEd25519Certificate,
        })
}

/// True when the client offers suites but none of them is an AEAD one
/// (GCM, CCM, ChaCha20-Poly1305): such a client can use no AEAD-only
/// gateway, whatever its certificates. Decided on the IANA code points
/// (TLS Cipher Suites registry), not on rustls's names: rustls only names
/// the suites it knows. Signalling values are not suites.
pub(crate) fn offers_only_cbc(suites: &[u16]) -> bool {
    let real: Vec<u16> = suites
        .iter()
        .copied()
        .filter(|&c| c != 0x00ff && c != 0x5600 && !is_grease(c))
        .collect();
    !real.is_empty() && !real.iter().any(|&c| is_aead(c))
}

/// AEAD cipher suites by IANA code point (RFC 5288 and 5487 GCM, RFC 5289
/// ECDHE GCM, RFC 6209 ARIA GCM, RFC 6367 Camellia GCM, RFC 6655 and 7251
/// CCM, RFC 7905 ChaCha20, RFC 8442 ECDHE_PSK, and the TLS 1.3 suites).
fn is_aead(c: u16) -> bool {
    matches!(c,
        0x009c..=0x00ad
        | 0x1301..=0x1305
        | 0xc02b..=0xc032
        | 0xc050..=0xc063
        | 0xc06a..=0xc071
        | 0xc07a..=0xc08d
        | 0xc09c..=0xc0af
        | 0xcca8..=0xccae
        | 0xd001..=0xd005)
}

/// The server certificates of one listener, by name and key type.
#[derive(Debug)]
pub(super) struct SniResolver {
    pub(super) default: CertSet,
    pub(super) exact: HashMap<String, CertSet>,
    pub(super) wildcard: HashMap<String, CertSet>,
}

/// Two certificates of the same key type claim the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Clash {
    /// The name both claim.
    pub(super) name: String,
    /// Their places in `[[listener.tls.certificate]]`.
    pub(super) first: usize,
    pub(super) second: usize,
    /// Their key type.
    pub(super) kind: KeyKind,
}

impl SniResolver {
    /// Indexes `certs` (each with the names it serves). The default for
    /// clients without SNI holds the first certificate of each key type,
    /// in config order. Order does not otherwise matter: within a name the
    /// key type decides. `None` when there is no certificate.
    pub(super) fn new(
        certs: Vec<(Served, Vec<String>)>,
    ) -> Result<Option<SniResolver>, Vec<Clash>> {
        let mut default = CertSet::default();
        let mut exact: HashMap<String, CertSet> = HashMap::new();
        let mut wildcard: HashMap<String, CertSet> = HashMap::new();
        let mut clashes = Vec::new();
        for (served, names) in &certs {
            let _ = default.insert(served);
            let mut seen = std::collections::HashSet::new();
            for name in names {
                if !seen.insert(name.as_str()) {
                    continue;
                }
                let entry = match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()),
                    None => exact.entry(name.clone()),
                };
                let set = match entry {
                    Entry::Occupied(o) => o.into_mut(),
                    Entry::Vacant(v) => v.insert(CertSet::default()),
                };
                if let Err(first) = set.insert(served) {
                    clashes.push(Clash {
                        name: name.clone(),
                        first,
                        second: served.index,
                        kind: served.kind,
                    });
                }
            }
        }
        if !clashes.is_empty() {
            return Err(clashes);
        }
        if default.0.is_empty() {
            return Ok(None);
        }
        Ok(Some(SniResolver {
            default,
            exact,
            wildcard,
        }))
    }

    /// The set serving `sni`.
    fn set_for(&self, sni: Option<&str>) -> &CertSet {
        let Some(sni) = sni else {
            return &self.default;
        };
        // rustls hands us the name already lowercased and validated.
        if let Some(s) = self.exact.get(sni) {
            return s;
        }
        if let Some((_, parent)) = sni.split_once('.')
            && let Some(s) = self.wildcard.get(parent)
        {
            return s;
        }
        &self.default
    }

    /// What `check` and `run` warn about on a TLS 1.2 listener: a name (or
    /// the default for clients without SNI) with an RSA certificate only,
    /// which Windows 7 / 8.1 agents cannot use with AES-GCM, or with an
    /// ECDSA certificate only, which RSA-only stacks cannot use.
    pub(super) fn key_type_warnings(&self) -> Vec<String> {
        let mut sets: Vec<(String, &CertSet)> = self
            .exact
            .iter()
            .map(|(n, s)| (format!("\"{n}\""), s))
            .chain(self.wildcard.iter().map(|(n, s)| (format!("\"*.{n}\""), s)))
            .collect();
        sets.sort_by(|a, b| a.0.cmp(&b.0));
        sets.insert(0, ("clients without SNI".to_string(), &self.default));
        let mut out = Vec::new();
        for (name, set) in sets {
            let kinds: Vec<KeyKind> = set.kinds().collect();
            if kinds == [KeyKind::Rsa] {
                out.push(format!(
                    "{name} is served with an RSA certificate only: Windows 7 / 8.1 (and Server \
                     2008 R2 / 2012 R2) agents cannot connect (their AES-GCM suites need ECDSA); \
                     add an ECDSA P-256 certificate for the same names"
                ));
            } else if kinds == [KeyKind::Ecdsa] {
                out.push(format!(
                    "{name} is served with an ECDSA certificate only: agents whose TLS stack has \
                     no ECDSA (some embedded and older Java/OpenSSL builds) cannot connect; add \
                     an RSA certificate for the same names if the fleet has such agents"
                ));
            }
        }
        out
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.set_for(hello.server_name())
            .choose(hello.signature_schemes(), hello.cipher_suites())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cbc_only_offers_are_told_from_aead_offers_rustls_lacks() {
        // OpenSSL "AES128-SHA:AES256-SHA" plus the renegotiation SCSV.
        assert!(offers_only_cbc(&[0x002f, 0x0035, 0x00ff]));
        // Windows 7's ECDHE_RSA CBC suites with a GREASE value.
        assert!(offers_only_cbc(&[0x0a0a, 0xc013, 0xc014]));
        // Static-RSA and DHE GCM are AEAD: "no shared cipher", not CBC-only.
        assert!(!offers_only_cbc(&[0x009c, 0x009d, 0x00ff]));
        assert!(!offers_only_cbc(&[0x009e, 0x009f]));
        assert!(!offers_only_cbc(&[0xc02b, 0xc013]));
        assert!(!offers_only_cbc(&[0x00ff]), "no real suite at all");
        assert!(!offers_only_cbc(&[]));
    }
}
