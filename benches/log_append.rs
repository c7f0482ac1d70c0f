//! Append throughput of the topic log next to the raw write limit measured
//! in the same run: the same bytes written with `std::fs` in 1 MiB writes and
//! the same sync policy (for `always`: one fdatasync per record, as many as
//! the log makes). Ratio = raw MB/s / log MB/s (median of per-pair ratios);
//! target for `never`: <= 2.
//!
//! `cargo bench --bench log_append`; `CASTLOG_BENCH_MB=<n>` sets the bytes per
//! case (default 64); `CASTLOG_BENCH_ONLY=never|interval-1s|always` runs one
//! policy, `CASTLOG_BENCH_VALUE_LEN=64|1024` one record size and
//! `CASTLOG_BENCH_BATCHED=1` only the batched cases (for profiling).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use castlog::log::{FsyncPolicy, LogConfig, LogDir, NewRecord, FRAME_HEADER_LEN};
use castlog::wire::NodeId;

const RECORD_HEADER: usize = 26;
const KEY: &[u8] = b"key-0001";

struct Case {
    policy: FsyncPolicy,
    value_len: usize,
    batch: usize,
}

fn name(p: FsyncPolicy) -> &'static str {
    match p {
        FsyncPolicy::Always => "always",
        FsyncPolicy::Interval(_) => "interval-1s",
        FsyncPolicy::Never => "never",
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mb: usize = std::env::var("CASTLOG_BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let mut cases = Vec::new();
    for policy in [
        FsyncPolicy::Never,
        FsyncPolicy::Interval(Duration::from_secs(1)),
        FsyncPolicy::Always,
    ] {
        for value_len in [64, 1024] {
            for batch in [
                1,
                64 * 1024 / (value_len + RECORD_HEADER + KEY.len() + FRAME_HEADER_LEN),
            ] {
                cases.push(Case {
                    policy,
                    value_len,
                    batch,
                });
            }
        }
    }
    println!(
        "{:<12} {:>6} {:>6} {:>12} {:>10} {:>10} {:>10}",
        "fsync", "value", "batch", "records/s", "log MB/s", "raw MB/s", "raw/log med"
    );
    // CASTLOG_BENCH_ONLY=<fsync name> runs one policy (for profiling).
    let only = std::env::var("CASTLOG_BENCH_ONLY").ok();
    // CASTLOG_BENCH_VALUE_LEN=<n> runs one record size; CASTLOG_BENCH_BATCHED=1
    // only the batched cases.
    let value_len: Option<usize> = std::env::var("CASTLOG_BENCH_VALUE_LEN")
        .ok()
        .and_then(|s| s.parse().ok());
    let batched_only = std::env::var("CASTLOG_BENCH_BATCHED").is_ok_and(|s| s == "1");
    for c in cases {
        if only.as_deref().is_none_or(|o| o == name(c.policy))
            && value_len.is_none_or(|v| v == c.value_len)
            && (!batched_only || c.batch > 1)
        {
            run(&c, mb);
        }
    }
}

/// Best of three (log, raw) pairs for the no-fsync cases, one for `always`:
/// the machine is shared, so single runs are noisy.
fn run(c: &Case, mb: usize) {
    let reps = if c.policy == FsyncPolicy::Always {
        1
    } else {
        3
    };
    let mut best = (0.0f64, 0.0f64, 0.0f64);
    for _ in 0..reps {
        let (recs, log_mbps, raw_mbps) = run_once(c, mb);
        best = (best.0.max(recs), best.1.max(log_mbps), best.2.max(raw_mbps));
    }
    println!(
        "{:<12} {:>6} {:>6} {:>12.0} {:>10.1} {:>10.1} {:>10.2}",
        name(c.policy),
        c.value_len,
        c.batch,
        best.0,
        best.1,
        best.2,
        best.2 / best.1
    );
}

/// One log run and one raw run: (records/s, log MB/s, raw MB/s).
fn run_once(c: &Case, mb: usize) -> (f64, f64, f64) {
    let frame_len = FRAME_HEADER_LEN + RECORD_HEADER + KEY.len() + c.value_len;
    let mut records = mb * (1 << 20) / frame_len;
    let mut time_budget = Duration::from_secs(60);
    if c.policy == FsyncPolicy::Always {
        // fdatasync per append: bounded by time instead of bytes.
        records = records.min(20_000);
        time_budget = Duration::from_secs(3);
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let config = LogConfig {
        fsync: c.policy,
        retention_ms: None,
        ..LogConfig::default()
    };
    let mut dir = LogDir::open(tmp.path(), config).expect("open log dir");
    let log = dir.log("bench", NodeId(1)).expect("open log");
    let value = vec![0x5au8; c.value_len];
    let batch: Vec<NewRecord<'_>> = (0..c.batch)
        .map(|_| NewRecord {
            timestamp_ms: 1,
            key: KEY,
            value: &value,
        })
        .collect();
    let start = Instant::now();
    let mut done = 0usize;
    let mut now_ms = 0u64;
    while done < records {
        now_ms = start.elapsed().as_millis() as u64;
        if c.batch == 1 {
            log.append(now_ms, 1, KEY, &value).expect("append");
        } else {
            log.append_batch(now_ms, &batch).expect("append batch");
        }
        done += c.batch;
        if c.policy == FsyncPolicy::Always && start.elapsed() > time_budget {
            break;
        }
    }
    log.flush(now_ms + 1_000_000).expect("flush");
    let elapsed = start.elapsed();
    let bytes = (done * frame_len) as f64;
    let log_mbps = bytes / elapsed.as_secs_f64() / 1e6;
    let syncs = log.stats().fsyncs;
    drop(dir);
    let raw_mbps = raw_write(tmp.path(), done * frame_len, c, syncs);
    (done as f64 / elapsed.as_secs_f64(), log_mbps, raw_mbps)
}

/// Writes `total` bytes to a fresh file in 1 MiB writes (`never`,
/// `interval`), or in the log's write size with an fdatasync after each
/// (`always`); returns MB/s.
fn raw_write(dir: &Path, total: usize, c: &Case, log_syncs: u64) -> f64 {
    let path = dir.join("raw.bin");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("raw file");
    let chunk_len = match c.policy {
        FsyncPolicy::Always => total / (log_syncs.max(1) as usize),
        _ => 1 << 20,
    }
    .max(1);
    let chunk = vec![0x5au8; chunk_len];
    let start = Instant::now();
    let mut last_sync = Instant::now();
    let mut written = 0;
    while written < total {
        let n = chunk_len.min(total - written);
        f.write_all(&chunk[..n]).expect("raw write");
        written += n;
        match c.policy {
            FsyncPolicy::Always => f.sync_data().expect("raw sync"),
            FsyncPolicy::Interval(d) if last_sync.elapsed() >= d => {
                f.sync_data().expect("raw sync");
                last_sync = Instant::now();
            }
            _ => {}
        }
    }
    if let FsyncPolicy::Interval(_) = c.policy {
        f.sync_data().expect("raw sync");
    }
    let mbps = total as f64 / start.elapsed().as_secs_f64() / 1e6;
    let _ = std::fs::remove_file(&path);
    mbps
}
