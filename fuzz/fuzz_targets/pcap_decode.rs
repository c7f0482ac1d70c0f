//! Any file as a packet capture: `decode_pcap` returns frames or an error,
//! never panics, and every frame it returns formats as text and JSON.
//! The input also gets a valid pcap header (Ethernet, Linux SLL/SLL2, null)
//! or a pcapng section and interface block in front, so the fuzzer spends
//! its time in the blocks, packets, IP, UDP and castlog layers.
#![no_main]

use castlog::decode::{decode_pcap, write_frames};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(data);
    let [selector, rest @ ..] = data else {
        return;
    };
    let linktype: u32 = match selector % 4 {
        0 => 1,
        1 => 113,
        2 => 276,
        _ => 0,
    };
    if selector & 0x80 != 0 {
        // pcapng: section header block, interface block, then the input.
        let mut file = Vec::with_capacity(48 + rest.len());
        file.extend(0x0a0d_0d0au32.to_le_bytes());
        file.extend(28u32.to_le_bytes());
        file.extend(0x1a2b_3c4du32.to_le_bytes());
        file.extend(1u16.to_le_bytes());
        file.extend(0u16.to_le_bytes());
        file.extend([0xff; 8]);
        file.extend(28u32.to_le_bytes());
        file.extend(1u32.to_le_bytes());
        file.extend(20u32.to_le_bytes());
        file.extend((linktype as u16).to_le_bytes());
        file.extend(0u16.to_le_bytes());
        file.extend(0u32.to_le_bytes());
        file.extend(20u32.to_le_bytes());
        file.extend_from_slice(rest);
        check(&file);
        return;
    }
    let mut file = Vec::with_capacity(24 + rest.len());
    file.extend(0xa1b2_c3d4u32.to_le_bytes());
    file.extend(2u16.to_le_bytes());
    file.extend(4u16.to_le_bytes());
    file.extend([0u8; 8]);
    file.extend(65535u32.to_le_bytes());
    file.extend(linktype.to_le_bytes());
    file.extend_from_slice(rest);
    check(&file);
});

fn check(bytes: &[u8]) {
    if let Ok(frames) = decode_pcap(bytes) {
        let mut out = Vec::new();
        write_frames(&frames, false, &mut out).expect("write to a vec");
        write_frames(&frames, true, &mut out).expect("write to a vec");
    }
}
