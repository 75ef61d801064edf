//! The ClientHello version peek never panics and never reads out of bounds,
//! and a prefix of the bytes never contradicts the whole: "not TLS" and an
//! SSL 2.0 hello stand once more bytes arrive, and a TLS verdict stays a
//! TLS verdict (extensions further on may raise the version offered).
#![no_main]
use certgate::internals::{Offered, offered};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let all = offered(data);
    for cut in [0, 1, 2, 3, 5, 9, 11, 43, data.len() / 2] {
        if cut > data.len() {
            continue;
        }
        match offered(&data[..cut]) {
            Offered::Incomplete => {}
            Offered::NotTls => assert_eq!(all, Offered::NotTls, "prefix of {cut} bytes"),
            part @ Offered::Ssl2Hello(_) => assert_eq!(all, part, "prefix of {cut} bytes"),
            Offered::Version(_) => {
                assert!(matches!(all, Offered::Version(_)), "prefix of {cut} bytes: {all:?}")
            }
        }
    }
});
