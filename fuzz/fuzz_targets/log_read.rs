//! The log reader and recovery on hostile segment files. First input byte:
//! - even: the rest of the input *is* the first segment file;
//! - odd: a valid log of a few records is written through the API, then the
//!   input's bytes are XORed over its segment (in 3-byte steps: position u16,
//!   mask u8) and it is cut at a length from the input.
//! Then the directory is reopened and every record is read; the log must
//! open, read and accept an append, or return an error: never panic.
#![no_main]

use std::path::PathBuf;

use castlog::log::{LogConfig, LogDir, NewRecord};
use castlog::wire::{NodeId, Offset};
use libfuzzer_sys::fuzz_target;

const TOPIC: &str = "md.fuzz";
const NODE: NodeId = NodeId(0x0102_0304_0506_0708);

fn scratch() -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("castlog-fuzz-log-{}", std::process::id()))
}

fn segment_path(dir: &std::path::Path) -> PathBuf {
    dir.join("topics")
        .join(TOPIC)
        .join(format!("{:016x}", NODE.0))
        .join("00000000000000000000.seg")
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    let dir = scratch();
    let _ = std::fs::remove_dir_all(&dir);
    let seg = segment_path(&dir);
    std::fs::create_dir_all(seg.parent().expect("has parent")).expect("scratch dir");
    if mode % 2 == 0 {
        std::fs::write(&seg, rest).expect("write segment");
    } else {
        {
            let mut logs = LogDir::open(&dir, LogConfig::default()).expect("fresh dir opens");
            let log = logs.log(TOPIC, NODE).expect("fresh log");
            let values: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; usize::from(i) * 7]).collect();
            let batch: Vec<NewRecord<'_>> = values
                .iter()
                .map(|v| NewRecord {
                    timestamp_ms: 1,
                    key: b"k",
                    value: v,
                })
                .collect();
            log.append_batch(1, &batch).expect("append");
            log.flush(1).expect("flush");
        }
        let mut bytes = std::fs::read(&seg).expect("segment written");
        for step in rest.chunks_exact(3) {
            let at = usize::from(u16::from_be_bytes([step[0], step[1]]));
            let len = bytes.len().max(1);
            if let Some(b) = bytes.get_mut(at % len) {
                *b ^= step[2];
            }
        }
        if let Some(&cut) = rest.last() {
            if cut & 1 == 1 {
                let keep = bytes.len().saturating_sub(usize::from(cut >> 1));
                bytes.truncate(keep);
            }
        }
        std::fs::write(&seg, &bytes).expect("rewrite segment");
    }
    if let Ok(mut logs) = LogDir::open(&dir, LogConfig::default()) {
        if let Ok(log) = logs.log(TOPIC, NODE) {
            let mut from = log.earliest_offset();
            let end = log.next_offset();
            while from < end {
                match log.read(from, 4096) {
                    Ok(batch) if !batch.is_empty() => {
                        let records = batch.records().expect("read records are checked");
                        assert_eq!(records.len(), batch.count);
                        assert!(batch.next_offset > from);
                        from = batch.next_offset;
                    }
                    _ => break,
                }
            }
            let _ = log.read(Offset(u64::MAX - 1), 4096);
            let _ = log.append(2, 2, b"after", b"recovery");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
});
