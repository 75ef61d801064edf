//! Decoding a stored device record never panics; a record that decodes
//! encodes back to one that decodes to the same device.
#![no_main]
use certgate::internals::Device;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = Device::decode(data) {
        let again = Device::decode(&d.encode()).expect("a re-encoded record decodes");
        assert_eq!(again, d);
    }
});
