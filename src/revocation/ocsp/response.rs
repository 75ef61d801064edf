//! Checking an OCSP answer (RFC 6960 §3.2, §4.2): a successful basic
//! response, signed by the device's issuer or by a responder certificate
//! that issuer signed for id-kp-OCSPSigning, about our CertID, inside its
//! thisUpdate / nextUpdate window.

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponse, OcspResponseStatus, ResponderId};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::revocation::crl::normalize_serial;

use super::request::Query;

/// id-pkix-ocsp-basic.
const BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
/// Clock skew allowed on thisUpdate.
const SKEW: i64 = 300;

/// What the responder says about the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CertState {
    /// Not revoked.
    Good,
    /// Revoked.
    Revoked,
    /// The responder does not know it.
    Unknown,
}

impl CertState {
    /// The word for logs and the admin API.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CertState::Good => "good",
            CertState::Revoked => "revoked",
            CertState::Unknown => "unknown",
        }
    }
}

/// A verified answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer {
    /// The status.
    pub(crate) state: CertState,
    /// thisUpdate, Unix seconds.
    pub(crate) this_update: i64,
    /// nextUpdate, when given.
    pub(crate) next_update: Option<i64>,
}

fn sha1(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

fn secs(t: &x509_ocsp::OcspGeneralizedTime) -> i64 {
    i64::try_from(t.0.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

/// Whether `id` names the certificate `cert`.
fn names(id: &ResponderId, cert: &X509Certificate<'_>) -> bool {
    match id {
        ResponderId::ByName(n) => n
            .to_der()
            .is_ok_and(|d| d.as_slice() == cert.subject().as_raw()),
        ResponderId::ByKey(k) => {
            k.as_bytes() == sha1(&cert.public_key().subject_public_key.data).as_slice()
        }
    }
}

/// Checks `body` as the answer to `q` at `now`.
pub(crate) fn verify(body: &[u8], q: &Query, now: i64) -> Result<Answer, String> {
    let resp = OcspResponse::from_der(body).map_err(|e| format!("not an OCSP response ({e})"))?;
    if resp.response_status != OcspResponseStatus::Successful {
        return Err(format!(
            "the responder answered {:?} instead of a status",
            resp.response_status
        ));
    }
    let bytes = resp
        .response_bytes
        .ok_or("the responder's answer carries no response")?;
    if bytes.response_type != BASIC {
        return Err(format!("unsupported response type {}", bytes.response_type));
    }
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| format!("not a basic OCSP response ({e})"))?;
    let (_, issuer) = X509Certificate::from_der(&q.issuer)
        .map_err(|e| format!("the issuer certificate does not parse ({e})"))?;

    // Who signed it: the issuer itself, or a responder certificate the
    // issuer delegated OCSP signing to (§4.2.2.2).
    let id = &basic.tbs_response_data.responder_id;
    let delegated: Vec<Vec<u8>> = basic
        .certs
        .iter()
        .flatten()
        .filter_map(|c| c.to_der().ok())
        .collect();
    let signer_der: Option<&[u8]> = if names(id, &issuer) {
        None
    } else {
        let found = delegated
            .iter()
            .find(|d| X509Certificate::from_der(d).is_ok_and(|(_, c)| names(id, &c)));
        let Some(d) = found else {
            return Err(
                "the answer is signed by a responder that is neither the device's CA \
                        nor a certificate it carries"
                    .into(),
            );
        };
        let (_, c) = X509Certificate::from_der(d).map_err(|e| e.to_string())?;
        c.verify_signature(Some(issuer.public_key())).map_err(|_| {
            "the responder's certificate is not signed by the device's CA".to_string()
        })?;
        let eku = c.extended_key_usage().ok().flatten();
        if !eku.is_some_and(|e| e.value.ocsp_signing) {
            return Err("the responder's certificate lacks id-kp-OCSPSigning".into());
        }
        let v = c.validity();
        if now < v.not_before.timestamp() || now > v.not_after.timestamp() {
            return Err("the responder's certificate is not valid now".into());
        }
        Some(d.as_slice())
    };
    let signer = match signer_der {
        Some(d) => X509Certificate::from_der(d).map_err(|e| e.to_string())?.1,
        None => issuer.clone(),
    };
    let tbs = basic
        .tbs_response_data
        .to_der()
        .map_err(|e| e.to_string())?;
    let alg_der = basic
        .signature_algorithm
        .to_der()
        .map_err(|e| e.to_string())?;
    let (_, alg) = x509_parser::x509::AlgorithmIdentifier::from_der(&alg_der)
        .map_err(|e| format!("signature algorithm ({e})"))?;
    let sig = x509_parser::der_parser::asn1_rs::BitString::new(
        basic.signature.unused_bits(),
        basic.signature.raw_bytes(),
    );
    x509_parser::verify::verify_signature(signer.public_key(), &alg, &sig, &tbs)
        .map_err(|e| format!("the answer's signature does not verify ({e})"))?;

    // The answer about our certificate.
    let ours = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|r| {
            r.cert_id.issuer_name_hash == q.cert_id.issuer_name_hash
                && r.cert_id.issuer_key_hash == q.cert_id.issuer_key_hash
                && normalize_serial(r.cert_id.serial_number.as_bytes())
                    == normalize_serial(q.cert_id.serial_number.as_bytes())
        })
        .ok_or("the answer is about another certificate")?;
    let this_update = secs(&ours.this_update);
    let next_update = ours.next_update.as_ref().map(secs);
    if this_update > now + SKEW {
        return Err("the answer's thisUpdate is in the future (check the clocks)".into());
    }
    if next_update.is_some_and(|n| n < now) {
        return Err("the answer is past its nextUpdate (a stale responder cache?)".into());
    }
    let state = match ours.cert_status {
        CertStatus::Good(_) => CertState::Good,
        CertStatus::Revoked(_) => CertState::Revoked,
        CertStatus::Unknown(_) => CertState::Unknown,
    };
    Ok(Answer {
        state,
        this_update,
        next_update,
    })
}
