//! Header rewriting on any request head httparse accepts: never panics, and
//! whatever identity headers the client sent, the backend sees only
//! certgate's (here: an anonymous client, so none but X-Client-Verify).
#![no_main]
use certgate::internals::{ClientFacts, ambiguous_framing, is_identity_header, prepare_request};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut slots);
    if !matches!(req.parse(data), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let mut headers = HeaderMap::new();
    for h in req.headers.iter() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            headers.append(n, v);
        }
    }
    let _ = ambiguous_framing(&headers);
    let facts = ClientFacts {
        forwarded_for: HeaderValue::from_static("192.0.2.1"),
        proto: HeaderValue::from_static("https"),
        verify: HeaderValue::from_static("NONE"),
        identity: None,
    };
    let upgrade = certgate::internals::is_upgrade(&headers);
    prepare_request(&mut headers, &facts, None, upgrade);
    // certgate's own values, once each; every other identity header gone.
    let ours = [
        ("x-client-verify", "NONE"),
        ("x-forwarded-for", "192.0.2.1"),
        ("x-forwarded-proto", "https"),
    ];
    for (name, value) in &headers {
        if is_identity_header(name) {
            let want = ours.iter().find(|(n, _)| *n == name.as_str());
            assert!(want.is_some(), "spoofed {name} survived");
            assert_eq!(Some(value.as_bytes()), want.map(|(_, v)| v.as_bytes()), "{name}");
        }
    }
    for (n, _) in ours {
        assert_eq!(headers.get_all(n).iter().count(), 1, "{n}");
    }
});
