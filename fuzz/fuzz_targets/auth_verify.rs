//! `auth::verify` on arbitrary datagrams never panics and accepts only a
//! datagram that sealing its frame again (with the key it names) reproduces
//! byte for byte; `split` never panics; any reframed input seals and
//! verifies back to itself.
#![no_main]

use castlog::wire::auth::{seal, split, verify, GroupKeys, Key};
use castlog::wire::{Frame, FrameRepr, HEADER_LEN, MAGIC, VERSION};
use libfuzzer_sys::fuzz_target;

fn keys() -> GroupKeys {
    GroupKeys::new(
        Key::new(&[0x5a; 32]).expect("32-byte key"),
        Some(Key::new(&[0xa5; 32]).expect("32-byte key")),
    )
}

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    if let Ok(inner) = verify(data, &keys) {
        let resealed = [keys.current.clone()]
            .into_iter()
            .chain(keys.previous.clone())
            .any(|k| {
                let mut again = inner.to_vec();
                seal(&mut again, &GroupKeys::new(k, None)).is_ok() && again == data
            });
        assert!(resealed, "accepted a datagram no key seals: {data:?}");
    }
    let _ = split(data);
    // Give the input a valid frame header and CRC, then seal and verify it.
    if data.len() >= HEADER_LEN {
        let mut frame = data.to_vec();
        let len = frame.len() as u32;
        let mut f = Frame::new_unchecked(&mut frame[..]);
        f.set_magic(MAGIC);
        f.set_version(VERSION);
        f.set_frame_len(len);
        f.fill_checksum();
        if seal(&mut frame, &keys).is_ok() {
            let inner = verify(&frame, &keys).expect("a sealed frame verifies");
            assert_eq!(inner.len(), data.len());
            let _ = FrameRepr::parse(inner);
        }
    }
});
