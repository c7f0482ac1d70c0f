//! A record batch as the log and REPLAY_DATA store it (no count):
//! `Records::count_checked` must not panic, and the records it yields must
//! re-encode to exactly the input bytes.
#![no_main]

use castlog::wire::{RecordRepr, Records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = RecordRepr::parse(data);
    if let Ok(records) = Records::count_checked(data) {
        let n = records.len();
        let mut out = Vec::with_capacity(data.len());
        let mut seen = 0;
        for r in records {
            r.emit_to_vec(&mut out).expect("a parsed record emits");
            let _ = r.declaration();
            seen += 1;
        }
        assert_eq!(seen, n);
        assert_eq!(out, data);
        assert!(Records::new_checked(data, n).is_ok());
    }
});
