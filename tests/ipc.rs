//! The client <-> daemon IPC: golden bytes and round trips for every frame,
//! framing split at every byte, malformed input, and a real `IpcServer` on a
//! mio loop (a small fake daemon in a thread) with real `Client`s against it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use castlog::client::{self, Client, ConsumeMode, Message, StartFrom};
use castlog::daemon::ipc::{ConnId, IpcServer, IpcStats};
use castlog::wire::ipc::{
    frame_len, take_frame, Commit, Delivery, DeliveryRef, Failure, FailureKind, GapNotice,
    GapReason, Publish, PublishMode, Request, Response, Subscribe, MAX_FRAME_BODY_LEN,
    MAX_VALUE_LEN,
};
use castlog::wire::{NodeId, Offset};

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn golden_requests() -> Vec<(Request, Vec<u8>)> {
    vec![
        (
            Request::Publish(Publish {
                request_id: 0x0102_0304_0506_0708,
                mode: PublishMode::Sync,
                timeout_ms: 1000,
                timestamp_ms: 5,
                topic: "md".into(),
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"abc"),
            }),
            hex("00 00 00 24  01  01 02 03 04 05 06 07 08  02  00 00 03 e8
                 00 00 00 00 00 00 00 05  00 02  00 01  00 00 00 03  6d 64  6b  61 62 63"),
        ),
        (
            Request::Publish(Publish {
                request_id: 0,
                mode: PublishMode::OneWay,
                timeout_ms: 0,
                timestamp_ms: 0,
                topic: "t".into(),
                key: Bytes::new(),
                value: Bytes::new(),
            }),
            hex("00 00 00 1f  01  00 00 00 00 00 00 00 00  00  00 00 00 00
                 00 00 00 00 00 00 00 00  00 01  00 00  00 00 00 00  74"),
        ),
        (
            Request::Subscribe(Subscribe {
                sub_id: 7,
                pattern: "md.*".into(),
                from: StartFrom::Offset(Offset(258)),
                group: Some("g1".into()),
                mode: ConsumeMode::Clustering,
            }),
            hex(
                "00 00 00 19  02  00 00 00 07  03  00 00 00 00 00 00 01 02  00
                 00 04 6d 64 2e 2a  00 02 67 31",
            ),
        ),
        (
            Request::Subscribe(Subscribe {
                sub_id: 1,
                pattern: "*".into(),
                from: StartFrom::Latest,
                group: None,
                mode: ConsumeMode::Broadcast,
            }),
            hex(
                "00 00 00 14  02  00 00 00 01  01  00 00 00 00 00 00 00 00  01
                 00 01 2a  00 00",
            ),
        ),
        (
            Request::Unsubscribe { sub_id: 7 },
            hex("00 00 00 05  03  00 00 00 07"),
        ),
        (
            Request::Commit(Commit {
                group: "g1".into(),
                topic: "md".into(),
                source: NodeId(0xab),
                offset: Offset(9),
            }),
            hex(
                "00 00 00 19  04  00 00 00 00 00 00 00 ab  00 00 00 00 00 00 00 09
                 00 02 67 31  00 02 6d 64",
            ),
        ),
        (Request::Stats, hex("00 00 00 01  05")),
        (
            Request::Ping { nonce: 3 },
            hex("00 00 00 09  06  00 00 00 00 00 00 00 03"),
        ),
    ]
}

fn golden_responses() -> Vec<(Response, Vec<u8>)> {
    vec![
        (
            Response::Published {
                request_id: 1,
                offset: Offset(258),
            },
            hex("00 00 00 11  81  00 00 00 00 00 00 00 01  00 00 00 00 00 00 01 02"),
        ),
        (
            Response::PublishFailed {
                request_id: 2,
                failure: Failure {
                    kind: FailureKind::Timeout {
                        waiting_for: vec!["h2".into(), "h3".into()],
                    },
                    message: "ack timeout".into(),
                },
            },
            hex("00 00 00 21  82  00 00 00 00 00 00 00 02  03
                 00 0b 61 63 6b 20 74 69 6d 65 6f 75 74  00 02  00 02 68 32  00 02 68 33"),
        ),
        (
            Response::PublishFailed {
                request_id: 2,
                failure: Failure {
                    kind: FailureKind::RecordTooLarge { size: 100, max: 64 },
                    message: "big".into(),
                },
            },
            hex(
                "00 00 00 1f  82  00 00 00 00 00 00 00 02  02  00 03 62 69 67
                 00 00 00 00 00 00 00 64  00 00 00 00 00 00 00 40",
            ),
        ),
        (
            Response::PublishFailed {
                request_id: 4,
                failure: Failure {
                    kind: FailureKind::UnknownTopicRule,
                    message: "x".into(),
                },
            },
            hex("00 00 00 0d  82  00 00 00 00 00 00 00 04  01  00 01 78"),
        ),
        (
            Response::Record(Delivery {
                sub_id: 7,
                topic: "md".into(),
                source: NodeId(0xab),
                source_name: Some("h1".into()),
                offset: Offset(258),
                timestamp_ms: 5,
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"abc"),
            }),
            hex("00 00 00 2f  83  00 00 00 07  00 00 00 00 00 00 00 ab
                 00 00 00 00 00 00 01 02  00 00 00 00 00 00 00 05
                 00 02  00 02  00 01  00 00 00 03  6d 64  68 31  6b  61 62 63"),
        ),
        (
            Response::Gap(GapNotice {
                sub_id: 7,
                topic: "md".into(),
                source: NodeId(0xab),
                from: Offset(10),
                to: Offset(20),
                reason: GapReason::Retention,
            }),
            hex("00 00 00 22  84  00 00 00 07  00 00 00 00 00 00 00 ab
                 00 00 00 00 00 00 00 0a  00 00 00 00 00 00 00 14  01  00 02 6d 64"),
        ),
        (
            Response::Subscribed { sub_id: 7 },
            hex("00 00 00 05  85  00 00 00 07"),
        ),
        (
            Response::SubscribeFailed {
                sub_id: 7,
                failure: Failure {
                    kind: FailureKind::InvalidRequest,
                    message: "bad".into(),
                },
            },
            hex("00 00 00 0b  86  00 00 00 07  06  00 03 62 61 64"),
        ),
        (
            Response::Stats { json: "{}".into() },
            hex("00 00 00 03  87  7b 7d"),
        ),
        (
            Response::Pong { nonce: 3 },
            hex("00 00 00 09  88  00 00 00 00 00 00 00 03"),
        ),
    ]
}

#[test]
fn every_request_emits_and_parses_its_golden_bytes() {
    for (repr, golden) in golden_requests() {
        assert_eq!(repr.buffer_len(), golden.len(), "{repr:?}");
        let mut out = Vec::new();
        assert_eq!(repr.emit_to_vec(&mut out), Ok(golden.len()), "{repr:?}");
        assert_eq!(out, golden, "{repr:?}");
        let mut slice = vec![0u8; golden.len()];
        assert_eq!(repr.emit(&mut slice), Ok(golden.len()), "{repr:?}");
        assert_eq!(slice, golden, "emit into a slice, {repr:?}");
        assert_eq!(Request::parse(&Bytes::from(golden)), Ok(repr));
    }
}

#[test]
fn every_response_emits_and_parses_its_golden_bytes() {
    for (repr, golden) in golden_responses() {
        assert_eq!(repr.buffer_len(), golden.len(), "{repr:?}");
        let mut out = Vec::new();
        assert_eq!(repr.emit_to_vec(&mut out), Ok(golden.len()), "{repr:?}");
        assert_eq!(out, golden, "{repr:?}");
        let mut slice = vec![0u8; golden.len()];
        assert_eq!(repr.emit(&mut slice), Ok(golden.len()), "{repr:?}");
        assert_eq!(slice, golden, "emit into a slice, {repr:?}");
        assert_eq!(Response::parse(&Bytes::from(golden)), Ok(repr));
    }
}

#[test]
fn varied_frames_round_trip() {
    let big = Bytes::from(vec![0xa5u8; 1 << 20]);
    let requests = vec![
        Request::Publish(Publish {
            request_id: u64::MAX,
            mode: PublishMode::Async,
            timeout_ms: u32::MAX,
            timestamp_ms: u64::MAX,
            topic: "prix.€".into(),
            key: Bytes::from(vec![0u8; 65535]),
            value: big.clone(),
        }),
        Request::Subscribe(Subscribe {
            sub_id: u32::MAX,
            pattern: "a".into(),
            from: StartFrom::Committed,
            group: Some("grüppe".into()),
            mode: ConsumeMode::Broadcast,
        }),
        Request::Subscribe(Subscribe {
            sub_id: 0,
            pattern: "b.*".into(),
            from: StartFrom::Earliest,
            group: None,
            mode: ConsumeMode::Clustering,
        }),
    ];
    for r in requests {
        let mut out = Vec::new();
        r.emit_to_vec(&mut out).unwrap();
        assert_eq!(Request::parse(&Bytes::from(out)).unwrap(), r);
    }
    let failures = [
        FailureKind::Backpressure,
        FailureKind::Log,
        FailureKind::Timeout {
            waiting_for: vec![],
        },
    ];
    let mut responses: Vec<Response> = failures
        .into_iter()
        .map(|kind| Response::PublishFailed {
            request_id: 9,
            failure: Failure {
                kind,
                message: "m".into(),
            },
        })
        .collect();
    responses.push(Response::Record(Delivery {
        sub_id: 1,
        topic: "t".into(),
        source: NodeId(u64::MAX),
        source_name: None,
        offset: Offset(u64::MAX),
        timestamp_ms: 0,
        key: Bytes::new(),
        value: big,
    }));
    responses.push(Response::Gap(GapNotice {
        sub_id: 1,
        topic: "t".into(),
        source: NodeId(1),
        from: Offset(0),
        to: Offset(1),
        reason: GapReason::Unknown(200),
    }));
    for r in responses {
        let mut out = Vec::new();
        r.emit_to_vec(&mut out).unwrap();
        assert_eq!(Response::parse(&Bytes::from(out)).unwrap(), r);
    }
}

#[test]
fn unknown_failure_code_keeps_its_message_and_skips_its_tail() {
    // code 0x2a, message "new", then a tail this build does not know.
    let frame = hex("00 00 00 13  82  00 00 00 00 00 00 00 01  2a  00 03 6e 65 77  de ad be ef");
    assert_eq!(
        Response::parse(&Bytes::from(frame)),
        Ok(Response::PublishFailed {
            request_id: 1,
            failure: Failure {
                kind: FailureKind::Unknown(0x2a),
                message: "new".into(),
            },
        })
    );
}

fn all_golden_bytes() -> (Vec<u8>, usize) {
    let mut stream = Vec::new();
    let mut count = 0;
    for (_, g) in golden_requests() {
        stream.extend_from_slice(&g);
        count += 1;
    }
    (stream, count)
}

fn decode_chunks(chunks: &[&[u8]]) -> Vec<Request> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(frame) = take_frame(&mut buf).unwrap() {
            out.push(Request::parse(&frame).unwrap());
        }
    }
    assert!(buf.is_empty());
    out
}

#[test]
fn a_stream_split_at_every_byte_boundary_decodes_the_same() {
    let (stream, count) = all_golden_bytes();
    let whole = decode_chunks(&[&stream]);
    assert_eq!(whole.len(), count);
    for cut in 0..=stream.len() {
        let (a, b) = stream.split_at(cut);
        assert_eq!(decode_chunks(&[a, b]), whole, "cut at {cut}");
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(decode_chunks(&bytes), whole);
}

#[test]
fn truncated_frames_wait_for_more_bytes_and_never_parse() {
    for (_, golden) in golden_requests() {
        for len in 0..golden.len() {
            assert_eq!(frame_len(&golden[..len]), Ok(None), "len {len}");
            let part = Bytes::copy_from_slice(&golden[..len]);
            assert!(Request::parse(&part).is_err());
        }
    }
}

#[test]
fn malformed_frames_are_errors() {
    let cases = [
        // zero length: not even a kind byte
        hex("00 00 00 00"),
        // unknown request kind
        hex("00 00 00 01  7f"),
        // a response kind sent as a request
        hex("00 00 00 05  85  00 00 00 07"),
        // trailing byte after a ping
        hex("00 00 00 0a  06  00 00 00 00 00 00 00 03  00"),
        // unknown publish mode 9
        hex("00 00 00 1f  01  00 00 00 00 00 00 00 00  09  00 00 00 00
             00 00 00 00 00 00 00 00  00 01  00 00  00 00 00 00  74"),
        // topic not UTF-8
        hex("00 00 00 1f  01  00 00 00 00 00 00 00 00  00  00 00 00 00
             00 00 00 00 00 00 00 00  00 01  00 00  00 00 00 00  ff"),
        // key length past the end
        hex("00 00 00 1f  01  00 00 00 00 00 00 00 00  00  00 00 00 00
             00 00 00 00 00 00 00 00  00 01  00 09  00 00 00 00  74"),
        // unknown start position
        hex("00 00 00 14  02  00 00 00 01  09  00 00 00 00 00 00 00 00  01  00 01 2a  00 00"),
    ];
    for case in cases {
        let bytes = Bytes::from(case.clone());
        assert!(Request::parse(&bytes).is_err(), "{case:02x?}");
    }
    // A length above the maximum is refused before any body arrives.
    let over = (MAX_FRAME_BODY_LEN as u32 + 1).to_be_bytes();
    assert!(frame_len(&over).is_err());
    // A value length above 64 MiB is refused even if the frame is in range.
    let mut publish = hex("00 00 00 00  01  00 00 00 00 00 00 00 00  01  00 00 00 00
                           00 00 00 00 00 00 00 00  00 01  00 00");
    publish.extend_from_slice(&(MAX_VALUE_LEN as u32 + 1).to_be_bytes());
    publish.push(b't');
    let body_len = (publish.len() - 4) as u32;
    publish[..4].copy_from_slice(&body_len.to_be_bytes());
    assert!(Request::parse(&Bytes::from(publish)).is_err());
}

#[test]
fn random_bytes_never_panic_the_decoder() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (golden, _) = all_golden_bytes();
    for _ in 0..20_000 {
        // Mutate a valid stream so that many cases get past the header.
        let mut bytes = golden.clone();
        let flips = 1 + next() % 4;
        for _ in 0..flips {
            let i = (next() as usize) % bytes.len();
            bytes[i] = next() as u8;
        }
        let cut = (next() as usize) % (bytes.len() + 1);
        let mut buf = BytesMut::from(&bytes[..cut]);
        while let Ok(Some(frame)) = take_frame(&mut buf) {
            let _ = Request::parse(&frame);
            let _ = Response::parse(&frame);
        }
    }
}

#[test]
fn emit_refuses_what_the_layout_cannot_carry() {
    let long_topic = "t".repeat(70_000);
    let p = Request::Publish(Publish {
        request_id: 1,
        mode: PublishMode::Async,
        timeout_ms: 0,
        timestamp_ms: 0,
        topic: long_topic,
        key: Bytes::new(),
        value: Bytes::new(),
    });
    let mut out = vec![1, 2, 3];
    assert!(p.emit_to_vec(&mut out).is_err());
    assert_eq!(
        out,
        vec![1, 2, 3],
        "a failed emit leaves the buffer as it was"
    );
    assert!(Request::Disconnected.emit_to_vec(&mut out).is_err());
    let empty_group = Request::Subscribe(Subscribe {
        sub_id: 1,
        pattern: "*".into(),
        from: StartFrom::Latest,
        group: Some(String::new()),
        mode: ConsumeMode::Clustering,
    });
    assert!(empty_group.emit_to_vec(&mut out).is_err());
}

// ---------------------------------------------------------------------------
// A fake daemon: IpcServer on a mio loop in a thread. It gives offsets per
// topic, refuses topic "nope" (unknown rule) and sync publishes on "slow"
// (timeout naming h2 and h3), forwards every publish to matching
// subscriptions, and opens a "gappy" subscription with a gap notice.

struct FakeDaemon {
    path: PathBuf,
    _dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<FakeReport>>,
}

#[derive(Debug, Default)]
struct FakeReport {
    stats: IpcStats,
    disconnects: usize,
    commits: Vec<Commit>,
    /// Largest output backlog seen on any connection.
    max_backlog: usize,
    /// Backlog of every connection at the end.
    final_backlog: usize,
}

impl FakeDaemon {
    fn start() -> FakeDaemon {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = {
            let path = path.clone();
            let stop = stop.clone();
            std::thread::spawn(move || run_fake(&path, &stop, ready_tx))
        };
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        FakeDaemon {
            path,
            _dir: dir,
            stop,
            handle: Some(handle),
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.path).unwrap()
    }

    fn stop(mut self) -> FakeReport {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => topic.starts_with(prefix),
        None => pattern == topic,
    }
}

fn run_fake(path: &Path, stop: &AtomicBool, ready: std::sync::mpsc::Sender<()>) -> FakeReport {
    let mut poll = mio::Poll::new().unwrap();
    let mut server = IpcServer::bind(path, poll.registry(), mio::Token(100)).unwrap();
    ready.send(()).unwrap();
    let mut events = mio::Events::with_capacity(256);
    let mut requests: Vec<(ConnId, Request)> = Vec::new();
    let mut next_offset: HashMap<String, u64> = HashMap::new();
    let mut subs: Vec<(ConnId, u32, String)> = Vec::new();
    let mut report = FakeReport::default();
    while !stop.load(Ordering::SeqCst) {
        poll.poll(&mut events, Some(Duration::from_millis(5)))
            .unwrap();
        for event in events.iter() {
            assert!(server.owns(event.token()));
            server.handle_event(poll.registry(), event, &mut requests);
        }
        for (conn, request) in requests.drain(..) {
            match request {
                Request::Publish(p) => {
                    let refuse = if p.topic == "nope" {
                        Some(FailureKind::UnknownTopicRule)
                    } else if p.topic == "slow" && p.mode == PublishMode::Sync {
                        Some(FailureKind::Timeout {
                            waiting_for: vec!["h2".into(), "h3".into()],
                        })
                    } else {
                        None
                    };
                    if let Some(kind) = refuse {
                        if p.mode != PublishMode::OneWay {
                            let failure = Failure {
                                kind,
                                message: format!("refused {}", p.topic),
                            };
                            server.send(
                                conn,
                                &Response::PublishFailed {
                                    request_id: p.request_id,
                                    failure,
                                },
                            );
                        }
                        continue;
                    }
                    let next = next_offset.entry(p.topic.clone()).or_insert(0);
                    let offset = Offset(*next);
                    *next += 1;
                    if p.mode != PublishMode::OneWay {
                        server.send(
                            conn,
                            &Response::Published {
                                request_id: p.request_id,
                                offset,
                            },
                        );
                    }
                    for (sub_conn, sub_id, pattern) in &subs {
                        if matches(pattern, &p.topic) {
                            server.send_record(
                                *sub_conn,
                                &DeliveryRef {
                                    sub_id: *sub_id,
                                    topic: &p.topic,
                                    source: NodeId(0xab),
                                    source_name: Some("h1"),
                                    offset,
                                    timestamp_ms: 1_700_000_000_000,
                                    key: &p.key,
                                    value: &p.value,
                                },
                            );
                        }
                    }
                }
                Request::Subscribe(s) => {
                    if s.pattern.contains('[') {
                        server.send(
                            conn,
                            &Response::SubscribeFailed {
                                sub_id: s.sub_id,
                                failure: Failure {
                                    kind: FailureKind::InvalidRequest,
                                    message: "bad pattern".into(),
                                },
                            },
                        );
                        continue;
                    }
                    server.send(conn, &Response::Subscribed { sub_id: s.sub_id });
                    if s.pattern == "gappy" {
                        server.send(
                            conn,
                            &Response::Gap(GapNotice {
                                sub_id: s.sub_id,
                                topic: "gappy".into(),
                                source: NodeId(0xab),
                                from: Offset(0),
                                to: Offset(5),
                                reason: GapReason::Retention,
                            }),
                        );
                    }
                    subs.push((conn, s.sub_id, s.pattern));
                }
                Request::Unsubscribe { sub_id } => {
                    subs.retain(|(c, id, _)| !(*c == conn && *id == sub_id));
                }
                Request::Commit(c) => report.commits.push(c),
                Request::Stats => {
                    let json = format!(
                        "{{\"connections_accepted\":{}}}",
                        server.stats().connections_accepted
                    );
                    server.send(conn, &Response::Stats { json });
                }
                Request::Ping { nonce } => server.send(conn, &Response::Pong { nonce }),
                Request::Disconnected => {
                    report.disconnects += 1;
                    subs.retain(|(c, _, _)| *c != conn);
                }
            }
        }
        server.flush(poll.registry());
        for (conn, _, _) in &subs {
            report.max_backlog = report.max_backlog.max(server.backlog(*conn));
        }
    }
    report.final_backlog = subs.iter().map(|(c, _, _)| server.backlog(*c)).sum();
    report.stats = server.stats().clone();
    report
}

#[test]
fn async_publishes_in_batches_complete_in_order() {
    let daemon = FakeDaemon::start();
    let mut c = daemon.client();
    let n = 20_000u64;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            c.publish_async("md.a", None, format!("v{i}").as_bytes())
                .unwrap(),
        );
    }
    let mut offsets = Vec::new();
    while c.pending_completions() > 0 {
        for done in c.wait_completions(Duration::from_secs(5)).unwrap() {
            assert_eq!(done.request_id, ids[offsets.len()]);
            offsets.push(done.result.unwrap().0);
        }
    }
    assert_eq!(offsets, (0..n).collect::<Vec<_>>());
    drop(c);
    let report = daemon.stop();
    assert_eq!(report.stats.frames_received, n);
    assert_eq!(report.stats.frames_malformed, 0);
    // Batching: far fewer reads than frames would show as bytes per frame;
    // the fake daemon saw every byte.
    assert!(report.stats.bytes_received > n * 30);
}

#[test]
fn sync_and_oneway_publishes_reach_the_daemon() {
    let daemon = FakeDaemon::start();
    let mut c = daemon.client();
    for _ in 0..100 {
        c.publish_oneway("md.b", Some(b"k"), b"v").unwrap();
    }
    c.ping().unwrap();
    let offset = c
        .publish_sync("md.b", None, b"v", Duration::from_secs(5))
        .unwrap();
    assert_eq!(offset, Offset(100));
}

#[test]
fn refusals_arrive_as_typed_errors() {
    let daemon = FakeDaemon::start();
    let mut c = daemon.client();
    match c.publish_sync("nope", None, b"v", Duration::from_secs(5)) {
        Err(client::Error::UnknownTopicRule { message }) => assert!(message.contains("nope")),
        other => panic!("expected UnknownTopicRule, got {other:?}"),
    }
    match c.publish_sync("slow", None, b"v", Duration::from_secs(5)) {
        Err(client::Error::Timeout { waiting_for }) => assert_eq!(waiting_for, ["h2", "h3"]),
        other => panic!("expected Timeout, got {other:?}"),
    }
    let id = c.publish_async("nope", None, b"v").unwrap();
    let done = c.wait_completions(Duration::from_secs(5)).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].request_id, id);
    assert!(matches!(
        done[0].result,
        Err(client::Error::UnknownTopicRule { .. })
    ));
    let too_big = vec![0u8; MAX_VALUE_LEN + 1];
    assert!(matches!(
        c.publish_async("md", None, &too_big),
        Err(client::Error::RecordTooLarge { .. })
    ));
    assert!(matches!(
        c.subscribe("bad[", StartFrom::Latest, None, ConsumeMode::Broadcast),
        Err(client::Error::Rejected { .. })
    ));
}

#[test]
fn subscribers_get_records_in_order_and_gap_notices() {
    let daemon = FakeDaemon::start();
    let mut sub = daemon.client();
    let id = sub
        .subscribe(
            "md.*",
            StartFrom::Earliest,
            Some("g"),
            ConsumeMode::Clustering,
        )
        .unwrap();
    let gappy = sub
        .subscribe("gappy", StartFrom::Earliest, None, ConsumeMode::Broadcast)
        .unwrap();
    let mut publisher = daemon.client();
    let n = 5_000u64;
    for i in 0..n {
        publisher
            .publish_oneway("md.c", Some(b"key"), format!("{i}").as_bytes())
            .unwrap();
    }
    publisher.publish_oneway("other", None, b"x").unwrap();
    publisher.ping().unwrap();

    let mut got = Vec::new();
    let mut gaps = Vec::new();
    while (got.len() as u64) < n {
        match sub.next_message(Duration::from_secs(5)).unwrap() {
            Some(Message::Record(r)) => {
                assert_eq!(r.subscription, id);
                assert_eq!(r.topic, "md.c");
                assert_eq!(r.source, NodeId(0xab));
                assert_eq!(r.source_name.as_deref(), Some("h1"));
                assert_eq!(&r.key[..], b"key");
                assert_eq!(r.value, format!("{}", r.offset.0).as_bytes());
                got.push(r.offset.0);
            }
            Some(Message::Gap(g)) => gaps.push(g),
            None => panic!("no record after {} of {n}", got.len()),
        }
    }
    assert_eq!(got, (0..n).collect::<Vec<_>>());
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].subscription, gappy);
    assert_eq!((gaps[0].from, gaps[0].to), (Offset(0), Offset(5)));
    assert_eq!(sub.next_message(Duration::from_millis(50)).unwrap(), None);

    sub.commit("g", "md.c", NodeId(0xab), Offset(n)).unwrap();
    sub.ping().unwrap();
    let stats = sub.stats_json().unwrap();
    assert!(stats.contains("connections_accepted"), "{stats}");
    drop(sub);
    drop(publisher);
    std::thread::sleep(Duration::from_millis(50));
    let report = daemon.stop();
    assert_eq!(
        report.commits,
        vec![Commit {
            group: "g".into(),
            topic: "md.c".into(),
            source: NodeId(0xab),
            offset: Offset(n),
        }]
    );
    assert_eq!(report.disconnects, 2);
}

#[test]
fn a_large_record_crosses_intact() {
    let daemon = FakeDaemon::start();
    let mut c = daemon.client();
    c.subscribe("big", StartFrom::Latest, None, ConsumeMode::Broadcast)
        .unwrap();
    let value: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let offset = c
        .publish_sync("big", Some(b"k"), &value, Duration::from_secs(10))
        .unwrap();
    match c.next_message(Duration::from_secs(10)).unwrap() {
        Some(Message::Record(r)) => {
            assert_eq!(r.offset, offset);
            assert!(r.value == value[..], "value differs");
        }
        other => panic!("expected the record, got {other:?}"),
    }
}

#[test]
fn malformed_input_closes_only_that_connection() {
    let daemon = FakeDaemon::start();
    let mut good = daemon.client();
    for garbage in [
        hex("ff ff ff ff 01"),
        hex("00 00 00 01 7f"),
        hex("00 00 00 00"),
    ] {
        let mut raw = UnixStream::connect(&daemon.path).unwrap();
        raw.write_all(&garbage).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        // The daemon closes the connection: EOF (or a reset), no answer.
        match raw.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
    }
    // A frame cut short by a client that goes away is a plain disconnect.
    let mut raw = UnixStream::connect(&daemon.path).unwrap();
    raw.write_all(&hex("00 00 00 09 06 00 00")).unwrap();
    drop(raw);
    good.ping().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let report = daemon.stop();
    assert_eq!(report.stats.frames_malformed, 3);
    assert_eq!(report.disconnects, 4);
}

#[test]
fn connect_without_a_daemon_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.sock");
    match Client::connect(&path) {
        Err(e @ client::Error::DaemonNotRunning { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("none.sock") && text.contains("castlogd"),
                "{text}"
            );
        }
        other => panic!("expected DaemonNotRunning, got {other:?}"),
    }
}

#[test]
fn bind_replaces_a_stale_socket_but_not_a_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    // A stale socket file: bound, then its listener dropped.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let poll = mio::Poll::new().unwrap();
    let server = IpcServer::bind(&path, poll.registry(), mio::Token(1)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let err = IpcServer::bind(&path, poll.registry(), mio::Token(50)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(path.exists(), "a refused bind leaves the live socket alone");
    drop(server);
    assert!(!path.exists(), "drop removes the socket file");
    // A regular file at the path is never removed.
    std::fs::write(&path, b"not a socket").unwrap();
    assert!(IpcServer::bind(&path, poll.registry(), mio::Token(1)).is_err());
    assert!(path.exists());
}

// ---------------------------------------------------------------------------
// The castlog CLI against the fake daemon.

fn castlog(daemon_socket: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_castlog"));
    cmd.arg("--socket").arg(daemon_socket);
    cmd.env_remove("CASTLOG_SOCKET");
    cmd
}

fn run_with_stdin(mut cmd: std::process::Command, input: &[u8]) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn cli_pub_sends_one_record_per_stdin_line() {
    let daemon = FakeDaemon::start();
    let mut sub = daemon.client();
    sub.subscribe("cli.a", StartFrom::Latest, None, ConsumeMode::Broadcast)
        .unwrap();
    let mut cmd = castlog(&daemon.path);
    cmd.args(["pub", "cli.a", "--key", "k1"]);
    let out = run_with_stdin(cmd, b"one\n\ntwo\nthree-no-newline");
    assert!(out.status.success(), "{out:?}");
    let mut values = Vec::new();
    while let Some(Message::Record(r)) = sub.next_message(Duration::from_secs(5)).unwrap() {
        assert_eq!(&r.key[..], b"k1");
        values.push(String::from_utf8(r.value.to_vec()).unwrap());
        if values.len() == 4 {
            break;
        }
    }
    assert_eq!(values, ["one", "", "two", "three-no-newline"]);
}

#[test]
fn cli_pub_sync_prints_offsets_and_fails_on_a_refused_record() {
    let daemon = FakeDaemon::start();
    let mut cmd = castlog(&daemon.path);
    cmd.args(["pub", "cli.b", "--mode", "sync", "x", "y"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n1\n");

    let mut cmd = castlog(&daemon.path);
    cmd.args(["pub", "nope", "v"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no topic rule matches"), "{err}");

    let mut cmd = castlog(&daemon.path);
    cmd.args(["pub", "slow", "--mode", "sync", "v"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("h2, h3"));

    let mut cmd = castlog(&daemon.path);
    cmd.args(["pub", "cli.b", "--mode", "oneway", "z"]);
    assert!(cmd.output().unwrap().status.success());
}

#[test]
fn cli_sub_prints_json_lines_and_stops_after_count() {
    let daemon = FakeDaemon::start();
    let mut cmd = castlog(&daemon.path);
    cmd.args(["sub", "cli.*", "--json", "--count", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut publisher = daemon.client();
    // The subscriber starts at "latest": publish until it has seen two.
    let mut i = 0u8;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "castlog sub did not stop"
        );
        publisher
            .publish_oneway("cli.c", Some(b"k"), &[b'v', i])
            .unwrap();
        publisher.publish_oneway("cli.c", None, &[0xff, i]).unwrap();
        publisher.ping().unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let text_record = &lines[0];
    assert_eq!(text_record["topic"], "cli.c");
    assert_eq!(text_record["source"], "00000000000000ab");
    assert_eq!(text_record["source_name"], "h1");
    assert_eq!(text_record["key"], "k");
    assert_eq!(text_record["timestamp"], 1_700_000_000_000u64);
    assert!(text_record["value"].as_str().unwrap().starts_with('v'));
    let binary_record = &lines[1];
    assert_eq!(binary_record["key"], serde_json::Value::Null);
    assert!(binary_record.get("value").is_none());
    assert!(binary_record["value_base64"]
        .as_str()
        .unwrap()
        .starts_with("/w"));
    assert_eq!(
        binary_record["offset"].as_u64().unwrap(),
        text_record["offset"].as_u64().unwrap() + 1
    );
}

#[test]
fn cli_sub_reports_gaps_and_stops_when_idle() {
    let daemon = FakeDaemon::start();
    let mut cmd = castlog(&daemon.path);
    cmd.args(["sub", "gappy", "--json", "--idle-timeout", "0.2"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let gap: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(gap["gap"]["from"], 0);
    assert_eq!(gap["gap"]["to"], 5);
    assert_eq!(gap["gap"]["reason"], "retention");
    assert!(String::from_utf8_lossy(&out.stderr).contains("gap topic=gappy"));
}

#[test]
fn cli_stats_prints_counters_and_exit_code_says_no_daemon() {
    let daemon = FakeDaemon::start();
    let mut cmd = castlog(&daemon.path);
    cmd.arg("stats");
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("connections_accepted  "));

    let dir = tempfile::tempdir().unwrap();
    let mut cmd = castlog(&dir.path().join("absent.sock"));
    cmd.args(["pub", "t", "v"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("castlogd is not running"));
}

#[test]
fn cli_check_accepts_every_shipped_netconf_and_refuses_a_bad_one() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("netconf");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_castlog"))
        .arg("check")
        .args(&files)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[node]\nbogus = 1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_castlog"))
        .arg("check")
        .arg(&files[0])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:2:1: node.bogus"), "{err}");
}

#[test]
fn a_slow_subscriber_builds_a_backlog_that_drains_when_it_reads() {
    let daemon = FakeDaemon::start();
    let mut sub = daemon.client();
    sub.subscribe("slow.*", StartFrom::Latest, None, ConsumeMode::Broadcast)
        .unwrap();
    let mut publisher = daemon.client();
    let value = vec![7u8; 64 * 1024];
    let n = 200u64; // 12.5 MiB: far more than the socket buffers hold
    for _ in 0..n {
        publisher.publish_oneway("slow.a", None, &value).unwrap();
    }
    publisher.ping().unwrap();
    for expected in 0..n {
        match sub.next_message(Duration::from_secs(5)).unwrap() {
            Some(Message::Record(r)) => {
                assert_eq!(r.offset, Offset(expected));
                assert_eq!(r.value.len(), value.len());
            }
            other => panic!("expected record {expected}, got {other:?}"),
        }
    }
    sub.ping().unwrap();
    let report = daemon.stop();
    assert!(
        report.max_backlog > 1024 * 1024,
        "backlog {}",
        report.max_backlog
    );
    assert_eq!(report.final_backlog, 0);
}

#[test]
fn a_subscriber_that_stops_reading_is_reported_disconnected_on_write_failure() {
    let daemon = FakeDaemon::start();
    let mut raw = UnixStream::connect(&daemon.path).unwrap();
    let mut subscribe = Vec::new();
    Request::Subscribe(Subscribe {
        sub_id: 1,
        pattern: "gone".into(),
        from: StartFrom::Latest,
        group: None,
        mode: ConsumeMode::Broadcast,
    })
    .emit_to_vec(&mut subscribe)
    .unwrap();
    raw.write_all(&subscribe).unwrap();
    let mut reply = [0u8; 9];
    raw.read_exact(&mut reply).unwrap();
    assert_eq!(reply, hex("00 00 00 05 85 00 00 00 01")[..]);
    // Our write side stays open, so the daemon sees no EOF: only its next
    // write fails.
    raw.shutdown(std::net::Shutdown::Read).unwrap();
    let mut publisher = daemon.client();
    publisher.publish_oneway("gone", None, b"x").unwrap();
    publisher.ping().unwrap();
    publisher.publish_oneway("gone", None, b"y").unwrap();
    publisher.ping().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let report = daemon.stop();
    assert_eq!(report.disconnects, 1, "{report:?}");
    drop(raw);
}
