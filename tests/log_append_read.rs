//! Append and read back: segment rolls, start positions, batches, cursors,
//! replicas with holes, retention with an injected clock, 10,000 topics.

use std::ops::Range;
use std::time::{Duration, Instant};

use castlog::log::{
    Appended, Cursor, Error, FsyncPolicy, LogConfig, LogDir, NewRecord, ReadBatch, StartPosition,
    TopicLog,
};
use castlog::wire::{NodeId, Offset, RecordRepr, TopicId};

const NODE: NodeId = NodeId(0xabcd);

fn small_segments() -> LogConfig {
    LogConfig {
        segment_max_bytes: 1024,
        index_interval_bytes: 128,
        fsync: FsyncPolicy::Never,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("k{i}").into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    let len = (i * 7919 % 300) as usize;
    (0..len).map(|j| (i as u8).wrapping_add(j as u8)).collect()
}

fn append_n(log: &mut TopicLog, n: u64) {
    for i in 0..n {
        let off = log
            .append(1_000 + i, 1_000 + i, &key(i), &value(i))
            .unwrap();
        assert_eq!(off, Offset(i));
    }
}

/// (offset, key, value) of records read back.
type Read = Vec<(u64, Vec<u8>, Vec<u8>)>;

/// Every record from `from` to the tail, reading `max_bytes` at a time.
fn read_all(log: &mut TopicLog, from: Offset, max_bytes: usize) -> (Read, Vec<Range<Offset>>) {
    let mut out = Vec::new();
    let mut holes = Vec::new();
    let mut at = from;
    loop {
        let batch = log.read(at, max_bytes).unwrap();
        if let Some(h) = batch.hole.clone() {
            holes.push(h);
        }
        for r in batch.records().unwrap() {
            assert_eq!(r.topic, TopicId(0));
            out.push((r.offset.0, r.key.to_vec(), r.value.to_vec()));
        }
        if batch.count == 0 && batch.hole.is_none() {
            break;
        }
        at = batch.next_offset;
        if at >= log.next_offset() {
            break;
        }
    }
    (out, holes)
}

fn check_dense(records: &[(u64, Vec<u8>, Vec<u8>)], from: u64, to: u64) {
    assert_eq!(records.len() as u64, to - from, "record count");
    for (n, (off, k, v)) in records.iter().enumerate() {
        let i = from + n as u64;
        assert_eq!(*off, i);
        assert_eq!(k, &key(i), "key of {i}");
        assert_eq!(v, &value(i), "value of {i}");
    }
}

#[test]
fn records_read_back_across_segment_rolls_from_every_start_position() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = LogDir::open(tmp.path(), small_segments()).unwrap();
    let log = dir.log("md.prices", NODE).unwrap();
    append_n(log, 300);
    assert!(
        log.segment_count() > 10,
        "segments: {}",
        log.segment_count()
    );
    assert_eq!(log.earliest_offset(), Offset(0));
    assert_eq!(log.next_offset(), Offset(300));

    let earliest = StartPosition::Earliest.resolve(log);
    let (all, holes) = read_all(log, earliest, 700);
    check_dense(&all, 0, 300);
    assert!(holes.is_empty());

    for from in 0..300 {
        let batch = log.read(Offset(from), 1).unwrap();
        assert_eq!(batch.count, 1, "at least one record even over budget");
        let r = batch.records().unwrap().next().unwrap();
        assert_eq!(r.offset, Offset(from));
        assert_eq!(r.value, &value(from)[..]);
        assert_eq!(batch.next_offset, Offset(from + 1));
    }
    for max in [1, 50, 333, 4096, 1 << 20] {
        let (all, _) = read_all(log, Offset(123), max);
        check_dense(&all, 123, 300);
    }
    let latest = StartPosition::Latest.resolve(log);
    let tail = log.read(latest, 4096).unwrap();
    assert_eq!(
        (tail.count, tail.next_offset, tail.hole),
        (0, Offset(300), None)
    );
    let past = log.read(Offset(10_000), 4096).unwrap();
    assert_eq!(past.count, 0);
}

#[test]
fn read_budget_is_respected_after_the_first_record() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = LogDir::open(
        tmp.path(),
        LogConfig {
            fsync: FsyncPolicy::Never,
            ..LogConfig::default()
        },
    )
    .unwrap();
    let log = dir.log("t", NODE).unwrap();
    for i in 0..100u64 {
        log.append(0, 0, b"", &[i as u8; 100]).unwrap();
    }
    let batch = log.read(Offset(0), 1000).unwrap();
    assert!(batch.bytes.len() <= 1000);
    assert_eq!(batch.count, 1000 / 126);
}

#[test]
fn batch_append_assigns_contiguous_offsets_with_one_write() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = LogDir::open(tmp.path(), small_segments()).unwrap();
    let log = dir.log("t", NODE).unwrap();
    log.append(0, 0, b"a", b"first").unwrap();
    let values: Vec<Vec<u8>> = (0..50).map(|i| vec![i as u8; 10]).collect();
    let batch: Vec<NewRecord<'_>> = values
        .iter()
        .map(|v| NewRecord {
            timestamp_ms: 5,
            key: b"b",
            value: v,
        })
        .collect();
    let before = log.stats().batches_appended;
    let range = log.append_batch(0, &batch).unwrap();
    assert_eq!(range, Offset(1)..Offset(51));
    assert_eq!(log.stats().batches_appended, before + 1);
    assert_eq!(log.append_batch(0, &[]).unwrap(), Offset(51)..Offset(51));
    let b = log.read(Offset(1), 1 << 20).unwrap();
    assert_eq!(b.count, 50);
    for (i, r) in b.records().unwrap().enumerate() {
        assert_eq!(r.value, &values[i][..]);
    }
}

#[test]
fn cursor_follows_the_tail_as_records_arrive() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = LogDir::open(tmp.path(), small_segments()).unwrap();
    let log = dir.log("t", NODE).unwrap();
    append_n(log, 3);
    let mut from_start = Cursor::new(log, StartPosition::Earliest);
    let mut from_latest = Cursor::new(log, StartPosition::Latest);
    assert_eq!(from_start.poll(log, 1 << 20).unwrap().count, 3);
    assert_eq!(from_latest.poll(log, 1 << 20).unwrap().count, 0);
    let mut seen = Vec::new();
    for i in 3..200u64 {
        log.append(0, 0, &key(i), &value(i)).unwrap();
        if i % 7 == 0 {
            let b = from_latest.poll(log, 1 << 20).unwrap();
            seen.extend(b.records().unwrap().map(|r| r.offset.0));
            assert_eq!(from_latest.position(), log.next_offset());
        }
    }
    let b = from_latest.poll(log, 1 << 20).unwrap();
    seen.extend(b.records().unwrap().map(|r| r.offset.0));
    assert_eq!(seen, (3..200).collect::<Vec<_>>());
    assert_eq!(from_latest.poll(log, 1 << 20).unwrap().count, 0);
    assert_eq!(from_start.position(), Offset(3));
}

#[test]
fn reopened_log_keeps_records_and_continues_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut dir = LogDir::open(tmp.path(), small_segments()).unwrap();
        append_n(dir.log("t", NODE).unwrap(), 100);
    }
    let mut dir = LogDir::open(tmp.path(), small_segments()).unwrap();
    assert_eq!(dir.logs(), vec![("t".to_string(), NODE)]);
    let log = dir.log("t", NODE).unwrap();
    assert_eq!(log.next_offset(), Offset(100));
    assert_eq!(
        log.append(0, 0, &key(100), &value(100)).unwrap(),
        Offset(100)
    );
    let (all, _) = read_all(log, Offset(0), 4096);
    check_dense(&all, 0, 101);
    assert_eq!(
        dir.stats().indexes_rebuilt,
        0,
        "sealed segments' indexes were written at roll"
    );
}

#[test]
fn replica_keeps_source_offsets_ignores_duplicates_and_reports_holes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = LogDir::open(tmp.path(), small_segments()).unwrap();
    let log = dir.log("t", NodeId(7)).unwrap();
    let rec = |o: u64| RecordRepr {
        topic: TopicId(9),
        offset: Offset(o),
        timestamp_ms: o,
        key: b"k",
        value: b"v",
    };
    assert_eq!(
        log.append_replica(0, &rec(0)).unwrap(),
        Appended::Stored(Offset(0))
    );
    assert_eq!(
        log.append_replica(0, &rec(1)).unwrap(),
        Appended::Stored(Offset(1))
    );
    assert_eq!(log.append_replica(0, &rec(1)).unwrap(), Appended::Duplicate);
    assert_eq!(log.append_replica(0, &rec(0)).unwrap(), Appended::Duplicate);
    assert_eq!(
        log.append_replica(0, &rec(5)).unwrap(),
        Appended::StoredAfterGap {
            offset: Offset(5),
            gap: Offset(2)..Offset(5)
        }
    );
    assert_eq!(
        log.append_replica(0, &rec(6)).unwrap(),
        Appended::Stored(Offset(6))
    );
    assert_eq!(log.next_offset(), Offset(7));
    assert_eq!(log.stats().records_duplicate, 2);
    assert_eq!(log.stats().offsets_skipped, 3);

    let first = log.read(Offset(0), 1 << 20).unwrap();
    assert_eq!(
        (first.count, first.next_offset, first.hole.clone()),
        (2, Offset(2), None),
        "a batch stops before a hole"
    );
    let second = log.read(Offset(2), 1 << 20).unwrap();
    assert_eq!(second.hole, Some(Offset(2)..Offset(5)));
    assert_eq!(
        second
            .records()
            .unwrap()
            .map(|r| r.offset.0)
            .collect::<Vec<_>>(),
        vec![5, 6]
    );
    let inside = log.read(Offset(3), 1 << 20).unwrap();
    assert_eq!(inside.hole, Some(Offset(3)..Offset(5)));

    let stored = log
        .append_replica_batch(0, [rec(6), rec(7), rec(8), rec(10)])
        .unwrap();
    assert_eq!(stored, 3);
    assert_eq!(log.next_offset(), Offset(11));
    // 7, 8 and 10 share one frame; the hole inside it is still reported.
    let b = log.read(Offset(7), 1 << 20).unwrap();
    assert_eq!(
        b.records().unwrap().map(|r| r.offset.0).collect::<Vec<_>>(),
        vec![7, 8]
    );
    let b = log.read(b.next_offset, 1 << 20).unwrap();
    assert_eq!(b.hole, Some(Offset(9)..Offset(10)));
    assert_eq!(
        b.records().unwrap().map(|r| r.offset.0).collect::<Vec<_>>(),
        vec![10]
    );
    assert_eq!(log.stats().offsets_skipped, 4);
}

#[test]
fn late_joiner_log_starts_where_it_joined() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = LogDir::open(tmp.path(), small_segments()).unwrap();
    let log = dir.log("t", NodeId(7)).unwrap();
    let r = RecordRepr {
        topic: TopicId(1),
        offset: Offset(1000),
        timestamp_ms: 0,
        key: b"",
        value: b"x",
    };
    assert_eq!(
        log.append_replica(0, &r).unwrap(),
        Appended::Stored(Offset(1000))
    );
    assert_eq!(log.earliest_offset(), Offset(1000));
    assert_eq!(log.next_offset(), Offset(1001));
    match log.read(Offset(5), 100) {
        Err(Error::BelowRetention {
            requested,
            earliest,
        }) => {
            assert_eq!((requested, earliest), (Offset(5), Offset(1000)));
        }
        other => panic!("expected BelowRetention, got {other:?}"),
    }
    drop(dir);
    let mut dir = LogDir::open(tmp.path(), small_segments()).unwrap();
    let log = dir.log("t", NodeId(7)).unwrap();
    assert_eq!(log.earliest_offset(), Offset(1000));
    assert_eq!(log.read(Offset(1000), 100).unwrap().count, 1);
}

#[test]
fn segment_rolls_by_age_of_its_first_record() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_max_age_ms: 1_000,
        ..small_segments()
    };
    let mut dir = LogDir::open(
        tmp.path(),
        LogConfig {
            segment_max_bytes: 1 << 20,
            ..config
        },
    )
    .unwrap();
    let log = dir.log("t", NODE).unwrap();
    log.append(10_000, 10_000, b"", b"a").unwrap();
    log.append(10_999, 10_999, b"", b"b").unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(11_000, 11_000, b"", b"c").unwrap();
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log.stats().segments_rolled, 1);
}

#[test]
fn retention_by_age_deletes_old_segments_and_reads_below_get_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: Some(10_000),
        ..small_segments()
    };
    let mut dir = LogDir::open(tmp.path(), config).unwrap();
    let log = dir.log("t", NODE).unwrap();
    for i in 0..200u64 {
        // one record per "second" of injected clock
        log.append(i * 1000, i * 1000, &key(i), &value(i)).unwrap();
    }
    let segments = log.segment_count();
    let report = dir.apply_retention(199_000).unwrap();
    assert!(report.segments_deleted > 0);
    let log = dir.log("t", NODE).unwrap();
    assert_eq!(
        log.segment_count(),
        segments - report.segments_deleted as usize
    );
    let earliest = log.earliest_offset();
    // Records 0..=189 are expired at 199_000; 190 when the segment holding
    // 189 ends with it (where segments end depends on the frame size).
    assert!(
        earliest > Offset(150) && earliest <= Offset(190),
        "earliest {earliest}"
    );
    assert_eq!(report.logs_trimmed, vec![("t".to_string(), NODE, earliest)]);
    match log.read(Offset(0), 100) {
        Err(Error::BelowRetention {
            requested,
            earliest: e,
        }) => {
            assert_eq!((requested, e), (Offset(0), earliest));
        }
        other => panic!("expected BelowRetention, got {other:?}"),
    }
    let (rest, _) = read_all(log, earliest, 4096);
    check_dense(&rest, earliest.0, 200);
    // Far in the future everything but the active segment goes.
    dir.apply_retention(u64::MAX / 2).unwrap();
    let log = dir.log("t", NODE).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.next_offset(), Offset(200));
}

#[test]
fn retention_by_size_keeps_the_log_under_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(5_000),
        ..small_segments()
    };
    let mut dir = LogDir::open(tmp.path(), config).unwrap();
    append_n(dir.log("t", NODE).unwrap(), 300);
    let before = dir.log("t", NODE).unwrap().size_bytes();
    let report = dir.apply_retention(0).unwrap();
    let log = dir.log("t", NODE).unwrap();
    assert_eq!(before - log.size_bytes(), report.bytes_deleted);
    assert!(log.size_bytes() <= 5_000, "size {}", log.size_bytes());
    assert!(log.size_bytes() > 5_000 - 1024);
    assert_eq!(dir.stats().segments_deleted, report.segments_deleted);
}

#[test]
fn retention_applies_to_closed_logs_without_opening_them() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(3_000),
        max_open_logs: 1,
        ..small_segments()
    };
    let mut dir = LogDir::open(tmp.path(), config).unwrap();
    append_n(dir.log("a", NODE).unwrap(), 100);
    append_n(dir.log("b", NODE).unwrap(), 100); // closes "a"
    assert_eq!(dir.open_logs(), 1);
    let report = dir.apply_retention(0).unwrap();
    assert_eq!(report.logs_trimmed.len(), 2);
    assert_eq!(dir.stats().logs_opened, 2, "retention opened nothing");
    let a = dir.log("a", NODE).unwrap();
    assert!(a.size_bytes() <= 3_000);
    let earliest = a.earliest_offset();
    let (rest, _) = read_all(a, earliest, 4096);
    check_dense(&rest, earliest.0, 100);
}

#[test]
fn per_topic_config_overrides_the_default() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = LogDir::open(tmp.path(), small_segments()).unwrap();
    dir.set_config_for(
        "short",
        LogConfig {
            retention_bytes: Some(2_000),
            ..small_segments()
        },
    );
    append_n(dir.log("short", NODE).unwrap(), 100);
    append_n(dir.log("long", NODE).unwrap(), 100);
    dir.apply_retention(0).unwrap();
    assert!(dir.log("short", NODE).unwrap().earliest_offset() > Offset(0));
    assert_eq!(dir.log("long", NODE).unwrap().earliest_offset(), Offset(0));
}

#[test]
fn odd_topic_names_are_stored_safely_and_listed_back() {
    let tmp = tempfile::tempdir().unwrap();
    let names = ["..", "a/b", "../../etc", "with space", "ünï", "x%41"];
    {
        let mut dir = LogDir::open(tmp.path(), small_segments()).unwrap();
        for n in names {
            dir.log(n, NODE)
                .unwrap()
                .append(0, 0, b"", n.as_bytes())
                .unwrap();
        }
        assert!(matches!(dir.log("", NODE), Err(Error::InvalidTopic { .. })));
    }
    for entry in std::fs::read_dir(tmp.path()).unwrap() {
        assert_eq!(
            entry.unwrap().file_name(),
            "topics",
            "nothing escaped the data dir"
        );
    }
    let mut dir = LogDir::open(tmp.path(), small_segments()).unwrap();
    let mut listed: Vec<String> = dir.logs().into_iter().map(|(t, _)| t).collect();
    listed.sort();
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    for n in names {
        let b = dir.log(n, NODE).unwrap().read(Offset(0), 100).unwrap();
        assert_eq!(b.records().unwrap().next().unwrap().value, n.as_bytes());
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn ten_thousand_topic_logs_open_quickly_with_bounded_descriptors() {
    // tmpfs when there is one: creating 20,000 directories on a busy disk
    // takes longer than the rest of the suite, and it is not what is tested.
    let tmp = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::Builder::new()
            .prefix("castlog-10k")
            .tempdir_in("/dev/shm")
            .unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let config = LogConfig {
        max_open_logs: 64,
        ..small_segments()
    };
    {
        let mut dir = LogDir::open(tmp.path(), config.clone()).unwrap();
        for t in 0..10_000u64 {
            let topic = format!("topic.{t}");
            dir.log(&topic, NodeId(t % 3))
                .unwrap()
                .append(0, 0, b"", &t.to_be_bytes())
                .unwrap();
            assert!(dir.open_logs() <= 64);
        }
    }
    let fds_before = open_fds();
    let start = Instant::now();
    let mut dir = LogDir::open(tmp.path(), config).unwrap();
    let opened_in = start.elapsed();
    assert_eq!(dir.logs().len(), 10_000);
    assert!(
        opened_in < Duration::from_secs(2),
        "LogDir::open took {opened_in:?}"
    );
    assert_eq!(dir.stats().logs_opened, 0, "open is lazy");
    for t in (0..10_000u64).step_by(7) {
        let topic = format!("topic.{t}");
        let log = dir.log(&topic, NodeId(t % 3)).unwrap();
        let b = log.read(Offset(0), 100).unwrap();
        assert_eq!(b.records().unwrap().next().unwrap().value, &t.to_be_bytes());
    }
    assert!(dir.open_logs() <= 64);
    let fds = open_fds();
    assert!(fds <= fds_before + 2 * 64 + 4, "fds {fds_before} -> {fds}");
    let start = Instant::now();
    dir.apply_retention(u64::MAX / 2).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "retention pass took {:?}",
        start.elapsed()
    );
}

#[test]
fn read_into_reuses_the_callers_buffer() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = LogDir::open(tmp.path(), small_segments()).unwrap();
    let log = dir.log("t", NODE).unwrap();
    append_n(log, 50);
    let mut batch = ReadBatch::default();
    log.read_into(Offset(0), 1 << 20, &mut batch).unwrap();
    let cap = batch.bytes.capacity();
    log.read_into(Offset(10), 1 << 20, &mut batch).unwrap();
    assert_eq!(batch.bytes.capacity(), cap);
    assert_eq!(batch.records().unwrap().next().unwrap().offset, Offset(10));
}

#[test]
fn fsync_policies_count_their_syncs() {
    let tmp = tempfile::tempdir().unwrap();
    for (policy, expect) in [
        (FsyncPolicy::Always, 10),
        (FsyncPolicy::Never, 0),
        (FsyncPolicy::Interval(Duration::from_millis(100)), 3),
    ] {
        let mut dir = LogDir::open(
            tmp.path(),
            LogConfig {
                fsync: policy,
                ..LogConfig::default()
            },
        )
        .unwrap();
        let log = dir.log(&format!("{policy:?}"), NODE).unwrap();
        for i in 0..10u64 {
            // appends at 0, 50, ..., 450 ms: interval syncs at 100, 200/250..,
            log.append(1000 + i * 50, 0, b"", b"x").unwrap();
        }
        let syncs = log.stats().fsyncs;
        match policy {
            FsyncPolicy::Interval(_) => assert!((3..=5).contains(&syncs), "{policy:?}: {syncs}"),
            _ => assert_eq!(syncs, expect, "{policy:?}"),
        }
        dir.flush(10_000).unwrap();
    }
}

#[test]
fn large_batch_frames_read_back_from_any_offset_and_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_max_bytes: 1 << 20,
        ..small_segments()
    };
    let mut dir = LogDir::open(tmp.path(), config).unwrap();
    let log = dir.log("big", NODE).unwrap();
    let values: Vec<Vec<u8>> = (0..3000u64)
        .map(|i| vec![i as u8; 1000 + (i % 7) as usize])
        .collect();
    for chunk in values.chunks(300).enumerate() {
        let batch: Vec<NewRecord<'_>> = chunk
            .1
            .iter()
            .map(|v| NewRecord {
                timestamp_ms: 1,
                key: b"k",
                value: v,
            })
            .collect();
        let r = log.append_batch(0, &batch).unwrap();
        assert_eq!(r.start, Offset(chunk.0 as u64 * 300));
    }
    assert!(log.segment_count() >= 3);
    for (from, budget) in [
        (0, 1 << 20),
        (0, 100),
        (1, 70_000),
        (63, 64 << 10),
        (64, 200_000),
        (1500, 1 << 16),
        (2999, 1 << 20),
    ] {
        let mut at = Offset(from);
        let mut mine = Cursor::new(log, StartPosition::Offset(at));
        loop {
            let b = mine.poll(log, budget).unwrap();
            if b.count == 0 {
                break;
            }
            assert!(
                b.count == 1 || b.bytes.len() <= budget,
                "budget {budget}: {} bytes",
                b.bytes.len()
            );
            assert_eq!(b.hole, None);
            for r in b.records().unwrap() {
                assert_eq!(r.offset, at, "from {from} budget {budget}");
                assert_eq!(r.value, &values[at.0 as usize][..]);
                at = at.next();
            }
        }
        assert_eq!(at, Offset(3000), "from {from} budget {budget}");
    }
}
