//! Distinguished names as text: RFC 4514 strings for headers, logs and
//! the registry, and the Unicode value of a directory string attribute
//! for the allow rules. A leaf module: it depends on nothing in certgate.

use std::fmt::Write as _;

use x509_parser::der_parser::asn1_rs::Any;
use x509_parser::prelude::X509Certificate;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// Formats a certificate subject per RFC 4514 (last RDN first, `,`
/// separated, `+` within a multi-valued RDN, special characters escaped),
/// like nginx's `$ssl_client_s_dn`.
///
/// Hand-written: x509-parser's `Display` keeps encoding order and does not
/// escape, and a subject that can inject `,` or `=` into a header a backend
/// parses is exactly what we must not pass on. String values of every
/// directory string type (UTF8String, PrintableString, IA5String,
/// BMPString, UniversalString, T61String, ...) are converted to Unicode
/// first; non-ASCII is then written as `\XX` escapes of its UTF-8 bytes
/// (valid RFC 4514, and always a legal header value). An attribute type
/// without a short name is written as its dotted OID with the value as
/// `#` + hex of its whole BER encoding (RFC 4514 §2.4), as is a value that
/// is not a string.
pub(crate) fn rfc4514_subject(cert: &X509Certificate<'_>) -> String {
    rfc4514(cert.subject())
}

/// [`rfc4514_subject`] of any name (a subject, an issuer).
pub(crate) fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<_> = name.iter_rdn().collect();
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attr.attr_type().to_id_string();
            let name = short_name(&oid);
            out.push_str(name.unwrap_or(&oid));
            out.push('=');
            match (name, directory_string(attr.attr_value())) {
                (Some(_), Some(v)) => escape_dn_value(&mut out, &v),
                _ => {
                    out.push('#');
                    for b in ber_of(attr.attr_value()) {
                        let _ = write!(out, "{b:02x}");
                    }
                }
            }
        }
    }
    out
}

/// Short names of attribute types: RFC 4514 §3's table, then the RFC 4519
/// (and PKCS #9 `emailAddress`) descriptors OpenSSL prints for them.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.12" => "title",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.17" => "postalCode",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

/// The Unicode text of a directory string value, whatever its ASN.1
/// string type; `None` for other types or malformed contents.
fn directory_string(v: &Any<'_>) -> Option<String> {
    use x509_parser::der_parser::asn1_rs::{Class, Tag};
    if v.class() != Class::Universal || v.header.is_constructed() {
        return None;
    }
    let data = v.data;
    match v.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::VisibleString
        | Tag::NumericString => std::str::from_utf8(data).ok().map(str::to_string),
        // T.61 in practice carries Latin-1 (what OpenSSL assumes too).
        Tag::T61String => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            if !data.len().is_multiple_of(2) {
                return None;
            }
            let units = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        Tag::UniversalString => {
            if !data.len().is_multiple_of(4) {
                return None;
            }
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

/// The BER (here DER) encoding of a value: tag, length and contents.
fn ber_of(v: &Any<'_>) -> Vec<u8> {
    use x509_parser::der_parser::asn1_rs::ToDer as _;
    v.to_der_vec().unwrap_or_else(|_| v.data.to_vec())
}

fn escape_dn_value(out: &mut String, value: &str) {
    let bytes = value.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let first = i == 0;
        let last = i + 1 == bytes.len();
        match b {
            b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';' | b'=' => {
                out.push('\\');
                out.push(b as char);
            }
            b'#' if first => out.push_str("\\#"),
            b' ' if first || last => out.push_str("\\ "),
            0x21..=0x7e | b' ' => out.push(b as char),
            _ => {
                let _ = write!(out, "\\{b:02X}");
            }
        }
    }
}

/// The text of an attribute whose value is a directory string of any
/// ASN.1 string type (BMPString and UniversalString included); `None` for
/// other values.
pub(crate) fn attribute_text(attr: &AttributeTypeAndValue<'_>) -> Option<String> {
    directory_string(attr.attr_value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_values_are_escaped_and_ascii() {
        let mut s = String::new();
        escape_dn_value(&mut s, " a,b=c\u{e9}\n");
        assert_eq!(s, "\\ a\\,b\\=c\\C3\\A9\\0A");
    }
}
