//! Crash test: a child process (this same binary, re-executed with
//! `CASTLOG_CRASH_CHILD` set) appends in a loop and prints every offset that
//! `append`/`append_batch` returned; the parent kills it with SIGKILL at a
//! random point, reopens the log and checks that every acknowledged record is
//! present, intact and at its offset, and that offsets continue with no gap
//! and no reuse. Repeated `CASTLOG_CRASH_KILLS` times (default 200).
//!
//! Rerun a failure with the seed it prints:
//! `CASTLOG_CRASH_SEED=<seed> cargo test --release --test log_crash`.
//!
//! `harness = false` (see Cargo.toml): `main` is the parent unless the child
//! variable is set.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use castlog::log::{FsyncPolicy, LogConfig, LogDir, NewRecord};
use castlog::wire::{NodeId, Offset};

const TEST_NAME: &str = "kill_nine_never_loses_an_acknowledged_record";
const TOPIC: &str = "crash.test";
const NODE: NodeId = NodeId(1);

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn policy_for(round: u64) -> FsyncPolicy {
    match round % 8 {
        0 => FsyncPolicy::Always,
        1 | 5 => FsyncPolicy::Interval(Duration::from_millis(3)),
        _ => FsyncPolicy::Never,
    }
}

fn config_for(round: u64) -> LogConfig {
    LogConfig {
        segment_max_bytes: 16 * 1024,
        index_interval_bytes: 512,
        fsync: policy_for(round),
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// Value of the record at `offset` written in `round`: round, offset, then a
/// pattern, so a record at the wrong place or from the wrong run shows.
fn make_value(buf: &mut Vec<u8>, round: u64, offset: u64, filler: usize) {
    buf.clear();
    buf.extend_from_slice(&round.to_be_bytes());
    buf.extend_from_slice(&offset.to_be_bytes());
    buf.extend((0..filler).map(|j| (offset as usize * 31 + j) as u8));
}

fn check_value(value: &[u8], offset: u64) -> Result<u64, String> {
    if value.len() < 16 {
        return Err(format!("offset {offset}: value of {} bytes", value.len()));
    }
    let round = u64::from_be_bytes(value[0..8].try_into().unwrap());
    let stored = u64::from_be_bytes(value[8..16].try_into().unwrap());
    if stored != offset {
        return Err(format!("offset {offset}: record says offset {stored}"));
    }
    for (j, &b) in value[16..].iter().enumerate() {
        if b != (offset as usize * 31 + j) as u8 {
            return Err(format!("offset {offset}: filler byte {j} differs"));
        }
    }
    Ok(round)
}

fn child() {
    let dir = std::env::var("CASTLOG_CRASH_CHILD").unwrap();
    let round: u64 = std::env::var("CASTLOG_CRASH_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let mut rng = Rng(std::env::var("CASTLOG_CRASH_RNG").unwrap().parse().unwrap());
    let mut logs = LogDir::open(dir.as_ref(), config_for(round)).unwrap();
    let log = logs.log(TOPIC, NODE).unwrap();
    let mut out = std::io::stdout().lock();
    let started = Instant::now();
    let mut values: Vec<Vec<u8>> = (0..32).map(|_| Vec::new()).collect();
    let mut now_ms = 0u64;
    // The parent kills us long before this; it only bounds an orphan.
    while started.elapsed() < Duration::from_secs(20) {
        now_ms += 1;
        let next = log.next_offset().0;
        // Single appends and batches, mostly small records: many appends per
        // run, so the kill lands in appends, rolls and index writes alike.
        // (Torn tails are rare here since small writes complete as a whole;
        // tests/log_recovery.rs cuts the tail at every length instead.)
        let n = if rng.below(3) == 0 {
            1 + rng.below(20) as usize
        } else {
            1
        };
        for (i, v) in values.iter_mut().take(n).enumerate() {
            let filler = match rng.below(10) {
                0 => rng.below(3000) as usize,
                _ => rng.below(300) as usize,
            };
            make_value(v, round, next + i as u64, filler);
        }
        let (first, last) = if n == 1 {
            let o = log.append(now_ms, next, b"k", &values[0]).unwrap();
            (o, o)
        } else {
            let batch: Vec<NewRecord<'_>> = values[..n]
                .iter()
                .enumerate()
                .map(|(i, v)| NewRecord {
                    timestamp_ms: next + i as u64,
                    key: b"k",
                    value: v,
                })
                .collect();
            let r = log.append_batch(now_ms, &batch).unwrap();
            (r.start, Offset(r.end.0 - 1))
        };
        if writeln!(out, "A {} {}", first.0, last.0)
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

/// Offsets acknowledged so far: `acked[o]` is the round that acked offset o.
struct Acked(Vec<Option<u64>>);

impl Acked {
    fn record(&mut self, first: u64, last: u64, round: u64) -> Result<(), String> {
        for o in first..=last {
            let o = o as usize;
            if self.0.len() <= o {
                self.0.resize(o + 1, None);
            }
            if let Some(prev) = self.0[o] {
                return Err(format!(
                    "offset {o} acknowledged twice (rounds {prev} and {round}): reused"
                ));
            }
            self.0[o] = Some(round);
        }
        Ok(())
    }
}

/// Reopens the log and checks `[from, next)`: dense, intact, acked records
/// from the right round. Returns the recovered next offset and the torn
/// tail bytes recovery cut off.
fn verify(dir: &std::path::Path, acked: &Acked, from: u64) -> Result<(u64, u64), String> {
    let mut logs = LogDir::open(dir, config_for(2)).map_err(|e| e.to_string())?;
    let log = logs.log(TOPIC, NODE).map_err(|e| e.to_string())?;
    let next = log.next_offset().0;
    let acked_end = acked.0.len() as u64;
    if next < acked_end {
        return Err(format!(
            "next offset {next} but offsets up to {} were acknowledged",
            acked_end - 1
        ));
    }
    let mut at = Offset(from);
    while at.0 < next {
        let batch = log.read(at, 1 << 20).map_err(|e| e.to_string())?;
        if let Some(h) = batch.hole {
            return Err(format!("hole {h:?} in a log that never skips"));
        }
        for r in batch.records().map_err(|e| e.to_string())? {
            if r.offset != at {
                return Err(format!("expected offset {at}, read {}", r.offset));
            }
            let round = check_value(r.value, r.offset.0)?;
            if let Some(Some(acked_round)) = acked.0.get(r.offset.0 as usize) {
                if *acked_round != round {
                    return Err(format!(
                        "offset {at}: written in round {round}, acked in round {acked_round}"
                    ));
                }
            }
            at = at.next();
        }
        if batch.count == 0 {
            return Err(format!("empty read at {at} below next offset {next}"));
        }
    }
    let stats = logs.stats();
    if stats.corrupt_regions_found != 0 {
        return Err(format!("corruption reported after a plain kill: {stats:?}"));
    }
    Ok((next, stats.bytes_truncated))
}

fn parent() {
    let seed: u64 = std::env::var("CASTLOG_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    let kills: u64 = std::env::var("CASTLOG_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    println!("{TEST_NAME}: seed={seed} kills={kills}");
    println!("rerun: CASTLOG_CRASH_SEED={seed} cargo test --release --test log_crash");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked = Acked(Vec::new());
    let mut expected_next = 0u64;
    let started = Instant::now();
    let mut records_acked = 0u64;
    let mut torn_tails = 0u64;
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .env("CASTLOG_CRASH_CHILD", tmp.path())
            .env("CASTLOG_CRASH_ROUND", round.to_string())
            .env("CASTLOG_CRASH_RNG", (rng.next() | 1).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout);
        let target = match (rng.below(10), policy_for(round)) {
            (0, _) => 0,
            (_, FsyncPolicy::Always) => 1 + rng.below(10),
            _ => 1 + rng.below(300),
        };
        if target == 0 {
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
        }
        let mut line = String::new();
        let mut got = 0u64;
        let mut first_ack = None;
        let mut handle = |line: &str, first_ack: &mut Option<u64>| -> Result<(), String> {
            let mut parts = line.trim_end().split(' ');
            let (Some("A"), Some(a), Some(b)) = (parts.next(), parts.next(), parts.next()) else {
                return Ok(());
            };
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            first_ack.get_or_insert(a);
            records_acked += b - a + 1;
            acked.record(a, b, round)
        };
        while got < target {
            line.clear();
            if lines.read_line(&mut line).unwrap() == 0 || !line.ends_with('\n') {
                let status = child.wait().unwrap();
                panic!("seed={seed} round={round}: child ended early: {status}");
            }
            handle(&line, &mut first_ack)
                .unwrap_or_else(|e| panic!("seed={seed} round={round}: {e}"));
            got += 1;
        }
        // SIGKILL: no destructor, no flush, no fsync in the child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
        }
        child.wait().unwrap();
        // Lines already in the pipe were printed after their append
        // returned: they are acknowledged too. A cut last line is not.
        loop {
            line.clear();
            if lines.read_line(&mut line).unwrap() == 0 || !line.ends_with('\n') {
                break;
            }
            handle(&line, &mut first_ack)
                .unwrap_or_else(|e| panic!("seed={seed} round={round}: {e}"));
        }
        if let Some(first) = first_ack {
            assert_eq!(
                first, expected_next,
                "seed={seed} round={round}: first offset after restart is {first}, the log had recovered to {expected_next} (gap or reuse)"
            );
        }
        let full = round % 100 == 99 || round + 1 == kills;
        let from = if full {
            0
        } else {
            first_ack.unwrap_or(expected_next)
        };
        let (next, cut) = verify(tmp.path(), &acked, from)
            .unwrap_or_else(|e| panic!("seed={seed} round={round}: {e}"));
        expected_next = next;
        if cut > 0 {
            torn_tails += 1;
        }
    }
    let dir_bytes: u64 = walk_size(tmp.path());
    println!(
        "{TEST_NAME}: ok kills={kills} torn_tails_cut={torn_tails} records_acked={records_acked} next_offset={expected_next} log_bytes={dir_bytes} elapsed={:?}",
        started.elapsed()
    );
}

fn walk_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk_size(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    if std::env::var_os("CASTLOG_CRASH_CHILD").is_some() {
        child();
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{TEST_NAME}: test");
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| TEST_NAME.contains(f.as_str())) {
        println!("running 0 tests (filtered out: {TEST_NAME})");
        return;
    }
    println!("running 1 test");
    parent();
    println!("test {TEST_NAME} ... ok");
}
