//! Every body parser on arbitrary bytes, selected by the first input byte
//! (frame type) and the second (flags, for DATA's FRAGMENT bit): no panic;
//! whatever parses re-emits to bytes that parse to the same value.
#![no_main]

use castlog::wire::{Body, Flags, FrameType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [code, flags, body @ ..] = data else {
        return;
    };
    let frame_type = FrameType::from_code(*code % 12);
    let flags = Flags(u16::from(*flags));
    if let Ok(parsed) = Body::parse(frame_type, flags, body) {
        // Walk what the parsers hand out lazily.
        match &parsed {
            Body::Data(d) => {
                d.records().for_each(drop);
            }
            Body::ReplayData(r) => {
                r.records().for_each(drop);
            }
            Body::Announce(a) => {
                a.extensions().for_each(drop);
            }
            _ => {}
        }
        let mut buf = vec![0u8; parsed.buffer_len()];
        let n = parsed.emit(&mut buf).expect("a parsed body emits");
        assert_eq!(n, buf.len());
        let again = Body::parse(frame_type, flags, &buf).expect("an emitted body parses");
        assert_eq!(again, parsed);
    }
});
