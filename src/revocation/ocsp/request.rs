//! An OCSP request for one device certificate (RFC 6960 §4.1): one CertID
//! (SHA-1 of the issuer's name and key, as RFC 5019 responders expect), no
//! nonce (so responders may answer from their cache), unsigned.

use der::Encode;
use der::asn1::{Null, ObjectIdentifier, OctetString};
use spki::AlgorithmIdentifierOwned;
use x509_cert::serial_number::SerialNumber;
use x509_ocsp::{CertId, OcspRequest, Request, TbsRequest};
use x509_parser::prelude::{FromDer, X509Certificate};

/// id-sha1 (the CertID hash every responder takes).
pub(super) const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");

/// What to ask and what the answer must be about.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    /// The responder.
    pub(crate) url: String,
    /// The request, DER.
    pub(crate) der: Vec<u8>,
    /// The CertID the answer must carry.
    pub(crate) cert_id: CertId,
    /// The issuer certificate (signs the answer, or the responder's
    /// certificate).
    pub(crate) issuer: Vec<u8>,
    /// The device certificate's issuer name, RFC 4514 (for the admin API).
    pub(crate) issuer_name: String,
}

fn sha1(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

/// The responder URLs a certificate names (authorityInfoAccess, id-ad-ocsp).
pub(crate) fn responders(cert: &X509Certificate<'_>) -> Vec<String> {
    use x509_parser::prelude::{GeneralName, ParsedExtension};
    let ocsp = x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP;
    cert.extensions()
        .iter()
        .filter_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityInfoAccess(aia) => Some(aia),
            _ => None,
        })
        .flat_map(|aia| aia.accessdescs.iter())
        .filter(|d| d.access_method == ocsp)
        .filter_map(|d| match &d.access_location {
            GeneralName::URI(u) if u.starts_with("http://") || u.starts_with("https://") => {
                Some((*u).to_string())
            }
            _ => None,
        })
        .collect()
}

/// The query for `device`, issued by `issuer`, to `url` (or the device's
/// AIA responder); `None` when there is no responder to ask.
pub(crate) fn query(device: &[u8], issuer: &[u8], url: Option<&str>) -> Option<Query> {
    let (_, dev) = X509Certificate::from_der(device).ok()?;
    let (_, iss) = X509Certificate::from_der(issuer).ok()?;
    let url = match url {
        Some(u) => u.to_string(),
        None => responders(&dev).into_iter().next()?,
    };
    let cert_id = CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: SHA1,
            parameters: Some(Null.into()),
        },
        issuer_name_hash: OctetString::new(sha1(dev.issuer().as_raw())).ok()?,
        issuer_key_hash: OctetString::new(sha1(&iss.public_key().subject_public_key.data)).ok()?,
        serial_number: SerialNumber::new(dev.raw_serial()).ok()?,
    };
    let request = OcspRequest {
        tbs_request: TbsRequest {
            version: Default::default(),
            requestor_name: None,
            request_list: vec![Request {
                req_cert: cert_id.clone(),
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    };
    Some(Query {
        url,
        der: request.to_der().ok()?,
        cert_id,
        issuer: issuer.to_vec(),
        issuer_name: crate::dn::rfc4514(dev.issuer()),
    })
}
