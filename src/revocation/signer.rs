//! Which CA signed a CRL: a CRL is used only once its signature verifies
//! against the key of a CA it may speak for (RFC 5280 §6.3.3 (f)), and that
//! CA may sign CRLs (keyUsage cRLSign, §4.2.1.3).

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::identity::sha256;

use super::crl::Crl;

/// The SHA-256 of a CA's SubjectPublicKeyInfo: which key signed a CRL, and
/// which key issued a certificate of a verified path.
pub(crate) type KeyId = [u8; 32];

/// The key id of a certificate's public key.
pub(crate) fn key_id(cert: &X509Certificate<'_>) -> KeyId {
    sha256(cert.public_key().raw)
}

/// Finds the CA among `cas` whose key signed `crl`, and returns that key's
/// id. The error says which CA the CRL claims and why none verifies, in
/// the words an admin can act on.
pub(crate) fn signer(crl: &Crl, cas: &[CertificateDer<'_>]) -> Result<KeyId, String> {
    let (_, parsed) = CertificateRevocationList::from_der(&crl.der)
        .map_err(|e| format!("not a valid CRL ({e})"))?;
    let named: Vec<X509Certificate<'_>> = cas
        .iter()
        .filter_map(|c| X509Certificate::from_der(c).ok().map(|(_, x)| x))
        .filter(|x| x.subject().as_raw() == crl.issuer_raw.as_slice())
        .collect();
    if named.is_empty() {
        return Err(format!(
            "this CRL is issued by \"{}\", which is not one of the client CAs \
             (client_auth.ca); add that CA's certificate to a ca bundle, or remove the CRL",
            crl.issuer
        ));
    }
    let mut why = String::new();
    for ca in &named {
        if let Ok(Some(ku)) = ca.key_usage()
            && !ku.value.crl_sign()
        {
            why = "that CA's keyUsage does not allow cRLSign".into();
            continue;
        }
        match parsed.verify_signature(ca.public_key()) {
            Ok(()) => return Ok(key_id(ca)),
            Err(e) => why = e.to_string(),
        }
    }
    Err(format!(
        "this CRL claims to be issued by \"{}\", but its signature does not verify \
         against that CA's key ({why}); it was signed by another key (a renewed or a \
         different CA of the same name?). Get the CRL that CA publishes",
        crl.issuer
    ))
}
