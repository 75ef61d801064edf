//! One CRL, parsed once into what revocation decisions need: issuer,
//! number, validity window, scope, delta indicator and the revoked serials.
//!
//! Parsing refuses what certgate cannot apply correctly rather than
//! applying it wrongly: indirect CRLs, CRLs partitioned by reason and
//! attribute-certificate CRLs (the same set rustls-webpki refuses), and an
//! unknown critical extension (RFC 5280 §5.2).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use x509_parser::num_bigint::BigUint;
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_CRL_NUMBER,
    OID_X509_EXT_DELTA_CRL_INDICATOR, OID_X509_EXT_FRESHEST_CRL,
    OID_X509_EXT_ISSUER_DISTRIBUTION_POINT,
};
use x509_parser::prelude::{
    CRLDistributionPoints, DistributionPointName, FromDer, GeneralName, ParsedExtension,
};
use x509_parser::revocation_list::CertificateRevocationList;

/// Why bytes are not a CRL certgate can use.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CrlError {
    /// Not DER (or PEM) of a CRL.
    #[error("not a valid CRL ({0})")]
    Parse(String),
    /// A scope certgate does not apply (indirect, by reason, attributes).
    #[error(
        "the CRL is {0}, which certgate does not support; publish a complete CRL for the CA \
         (the default in AD CS, OpenSSL and step-ca)"
    )]
    Unsupported(&'static str),
    /// A critical extension certgate does not know (RFC 5280 §5.2: such a
    /// CRL must not be used).
    #[error("the CRL has a critical extension certgate does not know ({0}), so it may not be used")]
    UnknownCritical(String),
}

/// Which certificates a CRL speaks for (its issuingDistributionPoint).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct Scope {
    /// Only end-entity certificates.
    pub(crate) only_user: bool,
    /// Only CA certificates.
    pub(crate) only_ca: bool,
    /// The distribution point's URIs (none: every certificate of the
    /// issuer, as far as names go).
    pub(crate) uris: Vec<String>,
}

/// A parsed CRL. The revoked serials are kept as DER INTEGER contents
/// without leading zero bytes, the form [`normalize_serial`] gives.
#[derive(Debug, Clone)]
pub(crate) struct Crl {
    /// The bytes as received (DER).
    pub(crate) der: Arc<[u8]>,
    /// The issuer name, DER.
    pub(crate) issuer_raw: Vec<u8>,
    /// The issuer name, RFC 4514.
    pub(crate) issuer: String,
    /// The authorityKeyIdentifier, when present.
    pub(crate) authority_key_id: Option<Vec<u8>>,
    /// The cRLNumber, when present.
    pub(crate) number: Option<BigUint>,
    /// thisUpdate, Unix seconds.
    pub(crate) this_update: i64,
    /// nextUpdate, Unix seconds (optional in v1 CRLs).
    pub(crate) next_update: Option<i64>,
    /// A delta CRL's BaseCRLNumber (deltaCRLIndicator).
    pub(crate) delta_base: Option<BigUint>,
    /// The issuingDistributionPoint scope.
    pub(crate) scope: Scope,
    /// Where the delta CRLs of this (base) CRL are published (Freshest CRL).
    pub(crate) freshest: Vec<String>,
    /// Revoked serials (a delta's removeFromCRL entries are in `removed`).
    pub(crate) revoked: HashSet<Vec<u8>>,
    /// A delta CRL's removeFromCRL entries: no longer revoked (a hold
    /// released, RFC 5280 §5.3.1).
    pub(crate) removed: HashSet<Vec<u8>>,
}

/// A serial as DER INTEGER content without leading zero bytes, so that two
/// encoders' spellings of one serial compare equal.
pub(crate) fn normalize_serial(raw: &[u8]) -> Vec<u8> {
    let start = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    raw[start..].to_vec()
}

/// The URIs of a list of general names.
fn uris(names: &[GeneralName<'_>]) -> Vec<String> {
    names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_string()),
            _ => None,
        })
        .collect()
}

/// The full-name URIs of distribution points (CRL DP, Freshest CRL) that
/// point at a complete CRL of the certificate's own issuer.
pub(crate) fn distribution_point_uris(points: &CRLDistributionPoints<'_>) -> Vec<String> {
    points
        .iter()
        .filter(|p| p.crl_issuer.is_none() && p.reasons.is_none())
        .filter_map(|p| match &p.distribution_point {
            Some(DistributionPointName::FullName(names)) => Some(uris(names)),
            _ => None,
        })
        .flatten()
        .collect()
}

impl Crl {
    /// Parses DER bytes.
    pub(crate) fn parse(der: &[u8]) -> Result<Crl, CrlError> {
        let (rest, crl) =
            CertificateRevocationList::from_der(der).map_err(|e| CrlError::Parse(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CrlError::Parse(format!(
                "{} bytes of trailing data after the CRL",
                rest.len()
            )));
        }
        let mut out = Crl {
            der: Arc::from(der),
            issuer_raw: crl.issuer().as_raw().to_vec(),
            issuer: crate::dn::rfc4514(crl.issuer()),
            authority_key_id: None,
            number: None,
            this_update: crl.last_update().timestamp(),
            next_update: crl.next_update().map(|t| t.timestamp()),
            delta_base: None,
            scope: Scope::default(),
            freshest: Vec::new(),
            revoked: HashSet::new(),
            removed: HashSet::new(),
        };
        for ext in crl.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::CRLNumber(n) => out.number = Some(n.clone()),
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    out.authority_key_id = aki.key_identifier.as_ref().map(|k| k.0.to_vec());
                }
                ParsedExtension::IssuingDistributionPoint(idp) => {
                    if idp.indirect_crl {
                        return Err(CrlError::Unsupported("an indirect CRL"));
                    }
                    if idp.only_some_reasons.is_some() {
                        return Err(CrlError::Unsupported("partitioned by revocation reason"));
                    }
                    if idp.only_contains_attribute_certs {
                        return Err(CrlError::Unsupported("for attribute certificates"));
                    }
                    out.scope = Scope {
                        only_user: idp.only_contains_user_certs,
                        only_ca: idp.only_contains_ca_certs,
                        uris: match &idp.distribution_point {
                            Some(DistributionPointName::FullName(names)) => uris(names),
                            _ => Vec::new(),
                        },
                    };
                }
                _ if ext.oid == OID_X509_EXT_DELTA_CRL_INDICATOR => {
                    // BaseCRLNumber ::= CRLNumber (an INTEGER).
                    let (_, n) = x509_parser::der_parser::der::parse_der_integer(ext.value)
                        .map_err(|e| CrlError::Parse(format!("deltaCRLIndicator: {e}")))?;
                    let bytes = n
                        .as_slice()
                        .map_err(|e| CrlError::Parse(format!("deltaCRLIndicator: {e}")))?;
                    out.delta_base = Some(BigUint::from_bytes_be(bytes));
                }
                _ if ext.oid == OID_X509_EXT_FRESHEST_CRL => {
                    if let Ok((_, points)) = CRLDistributionPoints::from_der(ext.value) {
                        out.freshest = distribution_point_uris(&points);
                    }
                }
                _ if ext.oid == OID_X509_EXT_CRL_NUMBER
                    || ext.oid == OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER
                    || ext.oid == OID_X509_EXT_ISSUER_DISTRIBUTION_POINT =>
                {
                    return Err(CrlError::Parse(format!(
                        "its {} extension does not parse",
                        ext.oid
                    )));
                }
                _ if ext.critical => return Err(CrlError::UnknownCritical(ext.oid.to_id_string())),
                _ => {}
            }
        }
        let mut entries: HashMap<Vec<u8>, bool> = HashMap::new();
        for r in crl.iter_revoked_certificates() {
            let remove = r
                .reason_code()
                .is_some_and(|(_, code)| code.0 == REMOVE_FROM_CRL);
            entries.insert(normalize_serial(r.raw_serial()), remove);
        }
        for (serial, remove) in entries {
            if remove && out.delta_base.is_some() {
                out.removed.insert(serial);
            } else if !remove {
                out.revoked.insert(serial);
            }
        }
        Ok(out)
    }

    /// Whether this is a delta CRL.
    pub(crate) fn is_delta(&self) -> bool {
        self.delta_base.is_some()
    }

    /// The CRL number as text (decimal), or "none".
    pub(crate) fn number_text(&self) -> String {
        self.number
            .as_ref()
            .map_or_else(|| "none".into(), |n| n.to_string())
    }
}

/// The removeFromCRL reason code (RFC 5280 §5.3.1).
const REMOVE_FROM_CRL: u8 = 8;

/// The CRLs in a file or an HTTP answer: PEM (`X509 CRL` blocks) or one
/// DER CRL.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::CertificateRevocationListDer;
    use rustls::pki_types::pem::PemObject;
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let mut v = Vec::new();
        for item in CertificateRevocationListDer::pem_slice_iter(bytes) {
            v.push(
                item.map_err(|e| format!("malformed PEM CRL ({e})"))?
                    .as_ref()
                    .to_vec(),
            );
        }
        if v.is_empty() {
            return Err("contains no CRL (-----BEGIN X509 CRL----- or DER)".into());
        }
        Ok(v)
    } else if bytes.is_empty() {
        Err("is empty; expected a PEM or DER X.509 CRL".into())
    } else if bytes[0] != 0x30 {
        // Not a DER SEQUENCE: an error page or a wrong URL, most likely.
        let head: String = String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Err(format!(
            "is not a CRL ({} bytes starting \"{head}\": an error page or a wrong URL?)",
            bytes.len()
        ))
    } else {
        Ok(vec![bytes.to_vec()])
    }
}
