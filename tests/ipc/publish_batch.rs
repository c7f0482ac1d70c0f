//! Publish batching on the client side: consecutive publishes of one topic,
//! mode and timeout with consecutive request ids share a PUBLISH frame up to
//! the cap; anything else starts a new one. Checked on the frame layer
//! (`OpenPublish`, `PublishBatch`) and through a `Client` against the fake
//! daemon (which frames arrived, and every answer with its offset).

use super::fake_daemon::{FakeDaemon, PublishFrame};
use super::*;

fn publish<'a>(request_id: u64, topic: &'a str, key: &'a [u8], value: &'a [u8]) -> PublishRef<'a> {
    PublishRef {
        request_id,
        mode: PublishMode::Sync,
        timeout_ms: 1000,
        timestamp_ms: 0,
        topic,
        key,
        value,
    }
}

/// The golden PUBLISH frame (two records of "md", sync, 1000 ms).
fn golden() -> (PublishBatch, Vec<u8>) {
    let entries: [(u64, &[u8], &[u8]); 2] = [(5, b"k", b"abc"), (0, b"", b"z")];
    let batch = PublishBatch::new(
        PublishMode::Sync,
        1000,
        "md",
        0x0102_0304_0506_0708,
        &entries,
    )
    .unwrap();
    let bytes = batch.frame().to_vec();
    (batch, bytes)
}

/// The golden frame with its `count` set to `count` (length kept).
fn with_count(count: u32) -> Vec<u8> {
    let (_, mut frame) = golden();
    // length 4, kind 1, mode 1, timeout 4, "md" 4, first id 8: count at 22.
    frame[22..26].copy_from_slice(&count.to_be_bytes());
    frame
}

#[test]
fn a_publish_frame_gives_each_entry_the_next_request_id_and_slices_of_itself() {
    let (batch, bytes) = golden();
    assert_eq!(batch.len(), 2);
    assert_eq!(batch.value_bytes(), 4);
    let entries: Vec<PublishEntry<'_>> = batch.entries().collect();
    assert_eq!(
        entries,
        [
            PublishEntry {
                request_id: 0x0102_0304_0506_0708,
                timestamp_ms: 5,
                key: b"k",
                value: b"abc",
            },
            PublishEntry {
                request_id: 0x0102_0304_0506_0709,
                timestamp_ms: 0,
                key: b"",
                value: b"z",
            },
        ]
    );
    assert_eq!(batch.entry(1), Some(entries[1]));
    assert_eq!(batch.entry(2), None);
    let (key, value) = batch.payload(0).unwrap();
    assert_eq!((&key[..], &value[..]), (&b"k"[..], &b"abc"[..]));
    // Zero-copy: the value points into the frame.
    let frame = batch.frame().as_ptr_range();
    assert!(frame.contains(&value.as_ptr()));
    assert_eq!(batch.payload(2), None);
    // Request ids wrap rather than overflow.
    let wrapping = PublishBatch::new(
        PublishMode::Async,
        0,
        "t",
        u64::MAX,
        &[(0, b"", b"a"), (0, b"", b"b")],
    )
    .unwrap();
    let ids: Vec<u64> = wrapping.entries().map(|e| e.request_id).collect();
    assert_eq!(ids, [u64::MAX, 0]);
    assert_eq!(bytes.len(), batch.frame().len());
}

#[test]
fn a_publish_frame_whose_count_disagrees_with_its_bytes_is_malformed() {
    assert!(Request::parse(&Bytes::from(with_count(2))).is_ok());
    // Says 3 records, holds 2: the third runs past the end.
    assert!(matches!(
        Request::parse(&Bytes::from(with_count(3))),
        Err(castlog::wire::Error::Truncated { .. })
    ));
    // A count no frame could hold is refused without reserving for it.
    assert!(matches!(
        Request::parse(&Bytes::from(with_count(u32::MAX))),
        Err(castlog::wire::Error::Truncated { .. })
    ));
    // Says 1 record, holds 2: bytes left over.
    assert!(matches!(
        Request::parse(&Bytes::from(with_count(1))),
        Err(castlog::wire::Error::BadLength { .. })
    ));
    // A batch of nothing is a client bug, not an empty publish.
    let mut empty = with_count(0);
    empty.truncate(26);
    empty[..4].copy_from_slice(&22u32.to_be_bytes());
    assert!(matches!(
        Request::parse(&Bytes::from(empty)),
        Err(castlog::wire::Error::Malformed { .. })
    ));
    // A value length above 64 MiB in the second entry.
    let mut huge = with_count(2);
    // entry 0 is 18 bytes from 26; entry 1: timestamp 8, key_len 2, value_len.
    huge[26 + 18 + 10..26 + 18 + 14].copy_from_slice(&(MAX_VALUE_LEN as u32 + 1).to_be_bytes());
    assert!(matches!(
        Request::parse(&Bytes::from(huge)),
        Err(castlog::wire::Error::Malformed { .. })
    ));
}

#[test]
fn a_publish_frame_cut_at_every_length_never_parses() {
    let (_, bytes) = golden();
    for len in 0..bytes.len() {
        assert_eq!(frame_len(&bytes[..len]), Ok(None), "len {len}");
        assert!(Request::parse(&Bytes::copy_from_slice(&bytes[..len])).is_err());
        // The same bytes with the length field saying so: checked parsing,
        // a typed error, never a panic.
        if len >= 5 {
            let mut short = bytes[..len].to_vec();
            short[..4].copy_from_slice(&((len - 4) as u32).to_be_bytes());
            assert!(Request::parse(&Bytes::from(short)).is_err(), "len {len}");
        }
    }
}

#[test]
fn an_open_publish_frame_grows_into_the_same_bytes_as_the_whole_batch() {
    let (batch, bytes) = golden();
    let mut out = vec![0xee; 3];
    let first = PublishRef {
        timestamp_ms: 5,
        ..publish(0x0102_0304_0506_0708, "md", b"k", b"abc")
    };
    let mut open = OpenPublish::start(&mut out, &first).unwrap();
    assert_eq!(open.start_pos(), 3);
    let second = publish(0x0102_0304_0506_0709, "md", b"", b"z");
    assert_eq!(open.append(&mut out, &second, 1 << 16), Ok(true));
    assert_eq!(open.count(), 2);
    assert_eq!(out[..3], [0xee; 3]);
    assert_eq!(out[3..], bytes[..]);
    assert_eq!(
        Request::parse(&Bytes::copy_from_slice(&out[3..])),
        Ok(Request::Publish(batch))
    );
}

#[test]
fn an_open_publish_frame_refuses_what_does_not_belong_and_leaves_the_buffer_alone() {
    let mut out = Vec::new();
    let mut open = OpenPublish::start(&mut out, &publish(7, "md", b"k", b"abc")).unwrap();
    let before = out.clone();
    let next = publish(8, "md", b"", b"z");
    let other_topic = publish(8, "me", b"", b"z");
    let other_mode = PublishRef {
        mode: PublishMode::Async,
        ..next
    };
    let other_timeout = PublishRef {
        timeout_ms: 999,
        ..next
    };
    let skipped_id = publish(9, "md", b"", b"z");
    let same_id = publish(7, "md", b"", b"z");
    for p in [other_topic, other_mode, other_timeout, skipped_id, same_id] {
        assert_eq!(open.append(&mut out, &p, 1 << 16), Ok(false), "{p:?}");
        assert_eq!(out, before, "{p:?}");
    }
    // Past the cap: the body is 40 bytes now, the next entry 15.
    assert_eq!(open.append(&mut out, &next, 40 + 14), Ok(false));
    assert_eq!(out, before);
    // Something queued after the frame: it is no longer the last.
    out.push(0);
    assert_eq!(open.append(&mut out, &next, 1 << 16), Ok(false));
    out.pop();
    // A record the layout cannot carry is an error, not a new frame.
    let long_key = vec![0u8; 70_000];
    assert!(open
        .append(&mut out, &publish(8, "md", &long_key, b""), usize::MAX)
        .is_err());
    assert!(OpenPublish::start(&mut out, &publish(8, "md", &long_key, b"")).is_err());
    assert_eq!(out, before);
    assert_eq!(open.append(&mut out, &next, 40 + 15), Ok(true));
    assert_eq!(open.count(), 2);
}

#[test]
fn one_way_publishes_join_whatever_their_request_id() {
    let oneway = |request_id| PublishRef {
        mode: PublishMode::OneWay,
        timeout_ms: 0,
        ..publish(request_id, "md", b"", b"v")
    };
    let mut out = Vec::new();
    let mut open = OpenPublish::start(&mut out, &oneway(0)).unwrap();
    for _ in 0..3 {
        assert_eq!(open.append(&mut out, &oneway(0), 1 << 16), Ok(true));
    }
    let Ok(Request::Publish(batch)) = Request::parse(&Bytes::from(out)) else {
        panic!("a publish frame")
    };
    assert_eq!(batch.len(), 4);
    assert_eq!(batch.mode, PublishMode::OneWay);
}

/// Waits until every async publish of `c` completed; returns (request id,
/// offset) in arrival order.
fn completions(c: &mut Client) -> Vec<(u64, u64)> {
    let mut done = Vec::new();
    while c.pending_completions() > 0 {
        for x in c.wait_completions(Duration::from_secs(5)).unwrap() {
            done.push((x.request_id, x.result.unwrap().0));
        }
    }
    done
}

fn frame(topic: &str, mode: PublishMode, first_request_id: u64, count: usize) -> PublishFrame {
    PublishFrame {
        topic: topic.into(),
        mode,
        timeout_ms: if mode == PublishMode::Sync { 5000 } else { 0 },
        first_request_id,
        count,
    }
}

#[test]
fn many_async_publishes_travel_in_few_frames_and_each_gets_its_offset() {
    let daemon = FakeDaemon::start();
    let mut c = daemon.client();
    let n = 50_000u64;
    let value = [7u8; 64];
    let ids: Vec<u64> = (0..n)
        .map(|_| c.publish_async("md.a", None, &value).unwrap())
        .collect();
    let done = completions(&mut c);
    let expected: Vec<(u64, u64)> = ids.iter().copied().zip(0..n).collect();
    assert_eq!(done, expected);
    drop(c);
    let report = daemon.stop();
    let frames = &report.publish_frames;
    // 78 bytes per entry: a 64 KiB frame holds 840 of them, and each
    // automatic flush (every 256 KiB) closes one frame early.
    let bound = n * 78 / (64 << 10) + n * 78 / (256 << 10) + 2;
    assert!(frames.len() as u64 <= bound, "{} frames", frames.len());
    let mut next_id = ids[0];
    for f in frames {
        assert_eq!((f.topic.as_str(), f.mode), ("md.a", PublishMode::Async));
        assert_eq!(f.first_request_id, next_id, "ids continue across frames");
        next_id += f.count as u64;
    }
    assert_eq!(next_id, ids[0] + n);
}

#[test]
fn topics_modes_sync_calls_flushes_and_large_records_split_frames() {
    use PublishMode::{Async, OneWay, Sync};
    let daemon = FakeDaemon::start();
    let mut c = daemon.client();
    let mut async_ids = Vec::new();
    for _ in 0..3 {
        async_ids.push(c.publish_async("md.a", None, b"a").unwrap());
    }
    for _ in 0..2 {
        async_ids.push(c.publish_async("md.b", Some(b"k"), b"b").unwrap());
    }
    for _ in 0..2 {
        c.publish_oneway("md.a", None, b"o").unwrap();
    }
    async_ids.push(c.publish_async("md.a", None, b"a").unwrap());
    let synced = c
        .publish_sync("md.a", None, b"s", Duration::from_secs(5))
        .unwrap();
    for _ in 0..2 {
        async_ids.push(c.publish_async("md.a", None, b"a").unwrap());
    }
    c.flush().unwrap();
    async_ids.push(c.publish_async("md.a", None, b"a").unwrap());
    // A record above the cap travels alone; the next one starts anew.
    let big = vec![1u8; 100 * 1024];
    async_ids.push(c.publish_async("md.a", None, &big).unwrap());
    async_ids.push(c.publish_async("md.a", None, b"a").unwrap());
    c.ping().unwrap();
    let done = completions(&mut c);
    drop(c);
    let report = daemon.stop();
    // md.a: 3 async (0..3), 2 one-way (3, 4), 1 async (5), sync (6), then 7..
    assert_eq!(synced, Offset(6));
    let ids = &async_ids;
    let expected: Vec<(u64, u64)> = [
        (ids[0], 0),
        (ids[1], 1),
        (ids[2], 2),
        (ids[3], 0),
        (ids[4], 1),
        (ids[5], 5),
        (ids[6], 7),
        (ids[7], 8),
        (ids[8], 9),
        (ids[9], 10),
        (ids[10], 11),
    ]
    .into();
    assert_eq!(done, expected);
    assert_eq!(
        report.publish_frames,
        [
            frame("md.a", Async, ids[0], 3),
            frame("md.b", Async, ids[3], 2),
            frame("md.a", OneWay, 0, 2),
            frame("md.a", Async, ids[5], 1),
            frame("md.a", Sync, ids[5] + 1, 1),
            frame("md.a", Async, ids[6], 2),
            frame("md.a", Async, ids[8], 1),
            frame("md.a", Async, ids[9], 1),
            frame("md.a", Async, ids[10], 1),
        ]
    );
}

#[test]
fn refused_publishes_of_a_batch_each_get_their_failure() {
    let daemon = FakeDaemon::start();
    let mut c = daemon.client();
    let ids: Vec<u64> = (0..5)
        .map(|_| c.publish_async("nope", None, b"x").unwrap())
        .collect();
    let mut failed = Vec::new();
    while c.pending_completions() > 0 {
        for x in c.wait_completions(Duration::from_secs(5)).unwrap() {
            assert!(matches!(
                x.result,
                Err(client::Error::UnknownTopicRule { .. })
            ));
            failed.push(x.request_id);
        }
    }
    assert_eq!(failed, ids);
    drop(c);
    assert_eq!(daemon.stop().publish_frames.len(), 1);
}
