//! Choosing the server certificate by SNI, with a default for clients that
//! send none.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// Chooses the server certificate by SNI: exact name, then a `*.` wildcard
/// one label deep, then the first configured certificate. rustls's own
/// `ResolvesServerCertUsingSni` has no default for clients that send no
/// SNI (old agents, IP-address URLs), so we keep our own small map.
#[derive(Debug)]
pub(super) struct SniResolver {
    pub(super) default: Arc<CertifiedKey>,
    pub(super) exact: HashMap<String, Arc<CertifiedKey>>,
    pub(super) wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl SniResolver {
    pub(super) fn new(keys: Vec<(Arc<CertifiedKey>, Vec<String>)>) -> Option<SniResolver> {
        let default = keys.first()?.0.clone();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (key, names) in keys {
            for name in names {
                // First certificate listed wins a name claimed twice.
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()),
                    None => exact.entry(name),
                }
                .or_insert_with(|| key.clone());
            }
        }
        Some(SniResolver {
            default,
            exact,
            wildcard,
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(sni) = hello.server_name() else {
            return Some(self.default.clone());
        };
        // rustls hands us the name already lowercased and validated.
        if let Some(k) = self.exact.get(sni) {
            return Some(k.clone());
        }
        if let Some((_, parent)) = sni.split_once('.')
            && let Some(k) = self.wildcard.get(parent)
        {
            return Some(k.clone());
        }
        Some(self.default.clone())
    }
}
