//! Sequential replay of a large log from offset 0 (1 KiB and 64 B records)
//! next to the raw read limit measured in the same run: the same segment
//! files (same bytes, all of them) read back with `std::fs` in 1 MiB reads
//! into one reused buffer. Both run with a warm page cache (the log was just
//! written; every pass reads it all), in pairs, `CASTLOG_BENCH_REPS` times
//! (default 7), the order inside a pair alternating so that neither side
//! always runs second; MB/s columns are the best run, ratios (raw MB/s /
//! replay MB/s) the median of the per-pair ratios, since the machine may be
//! shared. Target <= 1.5. Each run is also timed in CPU time (this thread's
//! `CLOCK_THREAD_CPUTIME_ID`: user + system, on the CPU only), and "cpu
//! ratio" is the median of the per-pair ratios of CPU time: on a machine
//! shared with other jobs the wall clock also counts the time other
//! processes held the CPU, which the CPU clock does not. "raw+crc" adds
//! crc32fast over the raw buffers: the floor for any read that verifies a
//! CRC32 of every byte, as replay does (its ratio is in CPU time).
//! "@budget cpu": the raw read again in reads of the budget's size instead
//! of 1 MiB, as a CPU-time ratio to the replay (information only: the
//! target is against the 1 MiB reads).
//!
//! `cargo bench --bench log_read`; the log is 256 MiB unless
//! `CASTLOG_BENCH_READ_GIB=1` (the 1 GiB figure).

use std::io::Read;
use std::path::{Path, PathBuf};

#[path = "common/timer.rs"]
mod timer;
use timer::Timer;

use castlog::log::{Cursor, FsyncPolicy, LogConfig, LogDir, NewRecord, StartPosition};
use castlog::wire::NodeId;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let gib: f64 = std::env::var("CASTLOG_BENCH_READ_GIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.25);
    let total = (gib * (1u64 << 30) as f64) as u64;
    let reps: usize = std::env::var("CASTLOG_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7)
        .max(1);
    println!(
        "{:>6} {:>8} {:>8} {:>11} {:>11} {:>9} {:>10} {:>9} {:>12} {:>11} {:>12}",
        "value",
        "log MiB",
        "budget",
        "records/s",
        "replay MB/s",
        "raw MB/s",
        "raw/replay",
        "cpu ratio",
        "raw+crc MB/s",
        "floor (cpu)",
        "@budget cpu"
    );
    // CASTLOG_BENCH_VALUE_LEN=<n> runs one record size (for profiling).
    let sizes: Vec<usize> = match std::env::var("CASTLOG_BENCH_VALUE_LEN")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(n) => vec![n],
        None => vec![1024, 64],
    };
    for value_len in sizes {
        let tmp = tempfile::tempdir().expect("temp dir");
        let config = LogConfig {
            fsync: FsyncPolicy::Never,
            retention_ms: None,
            ..LogConfig::default()
        };
        let mut dir = LogDir::open(tmp.path(), config).expect("open");
        let log = dir.log("bench", NodeId(1)).expect("log");
        let value = vec![0xa5u8; value_len];
        let batch: Vec<NewRecord<'_>> = (0..256)
            .map(|_| NewRecord {
                timestamp_ms: 1,
                key: b"key",
                value: &value,
            })
            .collect();
        while log.size_bytes() < total {
            log.append_batch(0, &batch).expect("append");
        }
        let records = log.next_offset().0;
        let size = log.size_bytes();
        let seg_dir = log.path().to_path_buf();
        for budget in [256 << 10, 1 << 20] {
            let mut best_replay: f64 = 0.0;
            let mut best_raw: f64 = 0.0;
            let mut best_raw_crc: f64 = 0.0;
            let mut ratios = Vec::new();
            let mut cpu_ratios = Vec::new();
            let mut floor_ratios = Vec::new();
            let mut budget_ratios = Vec::new();
            for rep in 0..reps {
                let raw_first = rep % 2 == 0;
                let raw = if raw_first {
                    raw_read(&seg_dir, size, false, 1 << 20)
                } else {
                    (0.0, 0.0)
                };
                let log = dir.log("bench", NodeId(1)).expect("log");
                let start = Timer::start();
                let mut cursor = Cursor::new(log, StartPosition::Earliest);
                let mut n = 0u64;
                loop {
                    let b = cursor.poll(log, budget).expect("read");
                    if b.count == 0 {
                        break;
                    }
                    n += b.count as u64;
                }
                let (replay, replay_cpu) = start.rates(size);
                assert_eq!(n, records);
                let raw = if raw_first {
                    raw
                } else {
                    raw_read(&seg_dir, size, false, 1 << 20)
                };
                let (raw, raw_cpu) = raw;
                let (raw_crc, raw_crc_cpu) = raw_read(&seg_dir, size, true, 1 << 20);
                let (_, raw_budget_cpu) = raw_read(&seg_dir, size, false, budget);
                budget_ratios.push(raw_budget_cpu / replay_cpu);
                best_raw = best_raw.max(raw);
                best_raw_crc = best_raw_crc.max(raw_crc);
                best_replay = best_replay.max(replay);
                ratios.push(raw / replay);
                cpu_ratios.push(raw_cpu / replay_cpu);
                floor_ratios.push(raw_cpu / raw_crc_cpu);
            }
            ratios.sort_by(f64::total_cmp);
            cpu_ratios.sort_by(f64::total_cmp);
            floor_ratios.sort_by(f64::total_cmp);
            budget_ratios.sort_by(f64::total_cmp);
            println!(
                "{:>6} {:>8.0} {:>8} {:>11.0} {:>11.1} {:>9.1} {:>10.2} {:>9.2} {:>12.1} {:>11.2} {:>12.2}",
                value_len,
                size as f64 / (1 << 20) as f64,
                budget,
                records as f64 * best_replay * 1e6 / size as f64,
                best_replay,
                best_raw,
                ratios[ratios.len() / 2],
                cpu_ratios[cpu_ratios.len() / 2],
                best_raw_crc,
                floor_ratios[floor_ratios.len() / 2],
                budget_ratios[budget_ratios.len() / 2]
            );
        }
    }
}

/// Reads every segment file in `buf_len` reads; returns MB/s by the wall clock
/// and by CPU time. With `crc`, also runs crc32fast over every buffer: the
/// floor for any CRC-verified read.
fn raw_read(dir: &Path, expect: u64, crc: bool, buf_len: usize) -> (f64, f64) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    let mut buf = vec![0u8; buf_len];
    let start = Timer::start();
    let mut total = 0u64;
    for f in files {
        let mut file = std::fs::File::open(f).expect("open");
        loop {
            let n = file.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            total += n as u64;
            if crc {
                std::hint::black_box(crc32fast::hash(&buf[..n]));
            }
        }
    }
    assert_eq!(total, expect);
    start.rates(total)
}
