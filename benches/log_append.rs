//! Append throughput of the topic log next to the raw write limit measured
//! in the same run: the same number of bytes as the log wrote (its frames:
//! headers, records, trailers) written to a fresh file with `std::fs` in
//! 1 MiB writes from one reused buffer, with the same sync policy (for
//! `always`: as many write + fdatasync pairs as the log made). MB/s count
//! the bytes the log wrote. Ratio = raw MB/s / log MB/s, the median of the
//! per-pair ratios; target for `never`: <= 2. "raw-same" writes the same
//! bytes in the log's own write sizes (one write per append call, after a
//! 24-byte header): what the kernel costs for that write pattern alone.
//! Each run is also timed in CPU time (this thread's
//! `CLOCK_THREAD_CPUTIME_ID`), and the "cpu" ratios are medians of per-pair
//! CPU-time ratios: on a shared machine the wall clock also counts the time
//! other processes held the CPU. (For `always` the CPU ratio says little:
//! the time goes waiting for the disk.)
//!
//! `cargo bench --bench log_append`; `CASTLOG_BENCH_MB=<n>` sets the bytes per
//! case (default 64); `CASTLOG_BENCH_ONLY=never|interval-1s|always` runs one
//! policy, `CASTLOG_BENCH_VALUE_LEN=64|1024` one record size and
//! `CASTLOG_BENCH_BATCHED=1` only the batched cases (for profiling).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

#[path = "common/timer.rs"]
mod timer;
use timer::Timer;

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
            let per_kib = |kib: usize| {
                kib * 1024 / (value_len + RECORD_HEADER + KEY.len() + FRAME_HEADER_LEN)
            };
            // Batches of about 64 KiB (the most a datagram carries, so what
            // the daemon appends at most), and for `never` also of about
            // 1 MiB: the raw limit's own write size.
            let mut batches = vec![1, per_kib(64)];
            if policy == FsyncPolicy::Never {
                batches.push(per_kib(1024));
            }
            for batch in batches {
                cases.push(Case {
                    policy,
                    value_len,
                    batch,
                });
            }
        }
    }
    println!(
        "{:<12} {:>6} {:>6} {:>12} {:>10} {:>10} {:>8} {:>8} {:>13} {:>9}",
        "fsync",
        "value",
        "batch",
        "records/s",
        "log MB/s",
        "raw MB/s",
        "raw/log",
        "cpu",
        "raw-same MB/s",
        "same cpu"
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

/// `reps` (log, raw) pairs (`CASTLOG_BENCH_REPS`, default 5; 1 for
/// `always`), the order inside a pair alternating; MB/s columns are the best
/// run, ratios the median of the per-pair ratios (the machine is shared, so
/// single runs are noisy).
fn run(c: &Case, mb: usize) {
    let reps = if c.policy == FsyncPolicy::Always {
        1
    } else {
        std::env::var("CASTLOG_BENCH_REPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5usize)
            .max(1)
    };
    let mut best = [0.0f64; 4];
    let mut ratios = Vec::new();
    let mut cpu_ratios = Vec::new();
    let mut same_ratios = Vec::new();
    let mut shape = None;
    for rep in 0..reps {
        // Pair 0 runs the log first and learns the bytes and write count
        // (the same for every run of a case); odd pairs run raw first.
        let (r, cpu, s) = run_once(c, mb, if rep % 2 == 1 { shape } else { None });
        shape = Some(s);
        for (b, v) in best.iter_mut().zip(r) {
            *b = b.max(v);
        }
        ratios.push(r[2] / r[1]);
        // CPU seconds: log / raw is raw MB/s / log MB/s.
        cpu_ratios.push(cpu[0] / cpu[1]);
        same_ratios.push(cpu[0] / cpu[2]);
    }
    ratios.sort_by(f64::total_cmp);
    cpu_ratios.sort_by(f64::total_cmp);
    same_ratios.sort_by(f64::total_cmp);
    println!(
        "{:<12} {:>6} {:>6} {:>12.0} {:>10.1} {:>10.1} {:>8.2} {:>8.2} {:>13.1} {:>9.2}",
        name(c.policy),
        c.value_len,
        c.batch,
        best[0],
        best[1],
        best[2],
        ratios[ratios.len() / 2],
        cpu_ratios[cpu_ratios.len() / 2],
        best[3],
        same_ratios[same_ratios.len() / 2],
    );
}

/// What a log run wrote: (bytes, writes, fsyncs).
type Shape = (u64, u64, u64);

/// One log run and the raw runs of the same bytes (with `raw_first`, raw
/// goes first, sized from an earlier log run): [records/s, log MB/s, raw
/// MB/s (1 MiB writes), raw MB/s (the log's own write sizes)], and the CPU
/// seconds of the log, raw and raw-same runs.
fn run_once(c: &Case, mb: usize, raw_first: Option<Shape>) -> ([f64; 4], [f64; 3], Shape) {
    let frame_len = FRAME_HEADER_LEN + RECORD_HEADER + KEY.len() + c.value_len;
    let mut records = mb * (1 << 20) / frame_len;
    let mut time_budget = Duration::from_secs(60);
    if c.policy == FsyncPolicy::Always {
        // fdatasync per append: bounded by time instead of bytes.
        records = records.min(20_000);
        time_budget = Duration::from_secs(3);
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let raw_dir = tempfile::tempdir().expect("temp dir");
    let config = LogConfig {
        fsync: c.policy,
        retention_ms: None,
        ..LogConfig::default()
    };
    let log_run = |tmp: &Path| -> (f64, f64, f64, Shape) {
        let mut dir = LogDir::open(tmp, config.clone()).expect("open log dir");
        let log = dir.log("bench", NodeId(1)).expect("open log");
        let value = vec![0x5au8; c.value_len];
        let batch: Vec<NewRecord<'_>> = (0..c.batch)
            .map(|_| NewRecord {
                timestamp_ms: 1,
                key: KEY,
                value: &value,
            })
            .collect();
        let timer = Timer::start();
        let start = timer.started();
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
        let (elapsed, cpu) = timer.seconds();
        let stats = log.stats().clone();
        (
            done as f64 / elapsed,
            stats.bytes_appended as f64 / elapsed / 1e6,
            cpu,
            (stats.bytes_appended, stats.batches_appended, stats.fsyncs),
        )
    };
    let raw_runs = |(bytes, writes, syncs): Shape| {
        (
            raw_write(raw_dir.path(), bytes as usize, c, syncs, None),
            raw_write(raw_dir.path(), bytes as usize, c, syncs, Some(writes)),
        )
    };
    let ((raw, raw_cpu), (same, same_cpu), (recs, log_mbps, log_cpu, shape)) =
        if let Some(shape) = raw_first {
            let (raw, same) = raw_runs(shape);
            (raw, same, log_run(tmp.path()))
        } else {
            let log = log_run(tmp.path());
            let (raw, same) = raw_runs(log.3);
            (raw, same, log)
        };
    (
        [recs, log_mbps, raw, same],
        [log_cpu, raw_cpu, same_cpu],
        shape,
    )
}

/// Writes `total` bytes to a fresh file after a 24-byte write (the segment
/// header), in 1 MiB writes (`never`, `interval`), or in the log's write size
/// with an fdatasync after each (`always`); with `writes`, in as many equal
/// writes as the log made instead (the log's own write sizes and positions).
/// Returns (MB/s, CPU seconds).
fn raw_write(
    dir: &Path,
    total: usize,
    c: &Case,
    log_syncs: u64,
    writes: Option<u64>,
) -> (f64, f64) {
    let path = dir.join("raw.bin");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("raw file");
    let chunk_len = match (c.policy, writes) {
        (_, Some(w)) => total.div_ceil(w.max(1) as usize),
        (FsyncPolicy::Always, None) => total / (log_syncs.max(1) as usize),
        _ => 1 << 20,
    }
    .max(1);
    let chunk = vec![0x5au8; chunk_len.max(24)];
    // The log wrote its segment header before its timer started, too.
    f.write_all(&chunk[..24]).expect("raw write");
    let timer = Timer::start();
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
    let (wall, cpu) = timer.seconds();
    drop(f);
    let _ = std::fs::remove_file(&path);
    (total as f64 / wall / 1e6, cpu)
}
