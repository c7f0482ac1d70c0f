//! Any datagram: `FrameRepr::parse` must not panic, and whatever it accepts
//! must emit again and parse to the same value.
#![no_main]

use castlog::wire::{Frame, FrameRepr, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(data);
    // Most random inputs stop at the CRC; reseal a copy so that the body
    // parsers see the fuzzer's bytes too.
    if data.len() >= HEADER_LEN {
        let mut sealed = data.to_vec();
        let len = sealed.len() as u32;
        let mut f = Frame::new_unchecked(&mut sealed[..]);
        f.set_magic(castlog::wire::MAGIC);
        f.set_version(castlog::wire::VERSION);
        f.set_frame_len(len);
        f.fill_checksum();
        check(&sealed);
    }
});

fn check(data: &[u8]) {
    if let Ok(repr) = FrameRepr::parse(data) {
        let bytes = repr.to_vec().expect("a parsed frame emits");
        assert_eq!(FrameRepr::parse(&bytes), Ok(repr));
    }
}
