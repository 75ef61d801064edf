//! The raw-head framing scan: never panics or loops, whatever the bytes,
//! and the verdict does not depend on how the stream was split into reads.
#![no_main]
use certgate::internals::FramingScan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else {
        return;
    };
    let (mut whole, found_whole) = FramingScan::new((), 8192);
    whole.feed(bytes);
    let (mut split, found_split) = FramingScan::new((), 8192);
    for piece in bytes.chunks(usize::from(step).max(1)) {
        split.feed(piece);
    }
    for i in 0..8 {
        assert_eq!(found_whole.ambiguous(i), found_split.ambiguous(i), "request {i}");
    }
});
