//! Golden bytes, round trips, framing and malformed input.

use super::*;

fn golden_requests() -> Vec<(Request, Vec<u8>)> {
    vec![
        (publish_golden(), publish_golden_bytes()),
        (
            Request::Publish(
                PublishBatch::new(PublishMode::OneWay, 0, "t", 0, &[(0, b"", b"")]).unwrap(),
            ),
            hex(
                "00 00 00 23  07  00  00 00 00 00  00 01 74  00 00 00 00 00 00 00 00  00 00 00 01
                 00 00 00 00 00 00 00 00  00 00  00 00 00 00",
            ),
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

fn publish_golden() -> Request {
    let entries: [(u64, &[u8], &[u8]); 2] = [(5, b"k", b"abc"), (0, b"", b"z")];
    Request::Publish(
        PublishBatch::new(
            PublishMode::Sync,
            1000,
            "md",
            0x0102_0304_0506_0708,
            &entries,
        )
        .unwrap(),
    )
}

fn publish_golden_bytes() -> Vec<u8> {
    hex(
        "00 00 00 37  07  02  00 00 03 e8  00 02 6d 64  01 02 03 04 05 06 07 08  00 00 00 02
         00 00 00 00 00 00 00 05  00 01  00 00 00 03  6b  61 62 63
         00 00 00 00 00 00 00 00  00 00  00 00 00 01  7a",
    )
}

fn records_golden() -> Response {
    Response::Records(RecordBatch {
        sub_id: 7,
        topic: "md".into(),
        source: NodeId(0xab),
        source_name: Some("h1".into()),
        records: vec![
            BatchRecord {
                offset: Offset(258),
                timestamp_ms: 5,
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"abc"),
            },
            BatchRecord {
                offset: Offset(259),
                timestamp_ms: 6,
                key: Bytes::new(),
                value: Bytes::from_static(b"z"),
            },
        ],
    })
}

fn records_golden_bytes() -> Vec<u8> {
    hex("00 00 00 4a  83  00 00 00 07  00 00 00 00 00 00 00 ab
         00 02 6d 64  00 02 68 31  00 00 00 02
         00 00 00 00 00 00 01 02  00 00 00 00 00 00 00 05  00 01  00 00 00 03  6b  61 62 63
         00 00 00 00 00 00 01 03  00 00 00 00 00 00 00 06  00 00  00 00 00 01  7a")
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
        (records_golden(), records_golden_bytes()),
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
        Request::Publish(
            PublishBatch::new(
                PublishMode::Async,
                u32::MAX,
                "prix.€",
                u64::MAX,
                &[
                    (u64::MAX, &[0u8; 65535], &big),
                    (0, b"", b""),
                    (1, b"k", b"v"),
                ],
            )
            .unwrap(),
        ),
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
    let record = |offset: u64, key: &[u8], value: Bytes| BatchRecord {
        offset: Offset(offset),
        timestamp_ms: offset.wrapping_mul(3),
        key: Bytes::copy_from_slice(key),
        value,
    };
    responses.push(Response::Records(RecordBatch {
        sub_id: 1,
        topic: "t".into(),
        source: NodeId(u64::MAX),
        source_name: None,
        records: vec![record(u64::MAX, b"", big)],
    }));
    responses.push(Response::Records(RecordBatch {
        sub_id: u32::MAX,
        topic: "prix.€".into(),
        source: NodeId(3),
        source_name: Some("hôte".into()),
        records: vec![
            record(0, b"k0", Bytes::from_static(b"v0")),
            record(1, b"", Bytes::new()),
            record(2, &[0u8; 65535], Bytes::from(vec![1u8; 64 * 1024 - 100])),
            record(3, b"k3", Bytes::from_static(b"v3")),
        ],
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
    for (_, golden) in golden_responses() {
        for len in 0..golden.len() {
            assert_eq!(frame_len(&golden[..len]), Ok(None), "len {len}");
            let part = Bytes::copy_from_slice(&golden[..len]);
            assert!(Response::parse(&part).is_err());
        }
    }
}

/// The RECORDS golden frame with its `count` set to `count` (length kept).
fn records_with_count(count: u32) -> Vec<u8> {
    let mut frame = records_golden_bytes();
    // length 4, kind 1, sub_id 4, source 8, "md" 4, "h1" 4: count at 25.
    frame[25..29].copy_from_slice(&count.to_be_bytes());
    frame
}

#[test]
fn a_records_frame_whose_count_disagrees_with_its_bytes_is_malformed() {
    let golden = Bytes::from(records_golden_bytes());
    assert!(Response::parse(&golden).is_ok());
    // Says 3 records, holds 2: the third runs past the end.
    assert!(matches!(
        Response::parse(&Bytes::from(records_with_count(3))),
        Err(castlog::wire::Error::Truncated { .. })
    ));
    // A count no frame could hold is refused without reserving for it.
    assert!(matches!(
        Response::parse(&Bytes::from(records_with_count(u32::MAX))),
        Err(castlog::wire::Error::Truncated { .. })
    ));
    // Says 1 record, holds 2: bytes left over.
    assert!(matches!(
        Response::parse(&Bytes::from(records_with_count(1))),
        Err(castlog::wire::Error::BadLength { .. })
    ));
    // A batch of nothing is a peer bug, not an empty delivery.
    let mut empty = records_golden_bytes();
    empty.truncate(29);
    empty[..4].copy_from_slice(&25u32.to_be_bytes());
    empty[25..29].copy_from_slice(&0u32.to_be_bytes());
    assert!(matches!(
        Response::parse(&Bytes::from(empty)),
        Err(castlog::wire::Error::Malformed { .. })
    ));
    // A value length above 64 MiB, even with a count that fits.
    let mut huge = records_golden_bytes();
    // entry 1: offset 8, timestamp 8, key_len 2, then value_len at 29 + 18.
    huge[47..51].copy_from_slice(&(MAX_VALUE_LEN as u32 + 1).to_be_bytes());
    assert!(matches!(
        Response::parse(&Bytes::from(huge)),
        Err(castlog::wire::Error::Malformed { .. })
    ));
    // The topic must be UTF-8.
    let mut bad_topic = records_golden_bytes();
    bad_topic[19] = 0xff;
    assert!(Response::parse(&Bytes::from(bad_topic)).is_err());
    let empty_batch = Response::Records(RecordBatch {
        sub_id: 1,
        topic: "t".into(),
        source: NodeId(1),
        source_name: None,
        records: Vec::new(),
    });
    let mut out = vec![9];
    assert!(empty_batch.emit_to_vec(&mut out).is_err());
    assert_eq!(out, [9], "a failed emit leaves the buffer as it was");
}

fn delivery<'a>(topic: &'a str, offset: u64, key: &'a [u8], value: &'a [u8]) -> DeliveryRef<'a> {
    DeliveryRef {
        sub_id: 7,
        topic,
        source: NodeId(0xab),
        source_name: Some("h1"),
        offset: Offset(offset),
        timestamp_ms: offset - 253,
        key,
        value,
    }
}

#[test]
fn an_open_records_frame_grows_into_the_same_bytes_as_the_whole_batch() {
    let mut out = vec![0xee; 3];
    let mut open = OpenRecords::start(&mut out, &delivery("md", 258, b"k", b"abc")).unwrap();
    assert_eq!(open.start_pos(), 3);
    assert_eq!(
        open.append(&mut out, &delivery("md", 259, b"", b"z"), 1 << 16),
        Ok(true)
    );
    assert_eq!(open.count(), 2);
    assert_eq!(out[..3], [0xee; 3]);
    assert_eq!(out[3..], records_golden_bytes()[..]);
    assert_eq!(
        Response::parse(&Bytes::copy_from_slice(&out[3..])),
        Ok(records_golden())
    );
}

#[test]
fn an_open_records_frame_refuses_what_does_not_belong_and_leaves_the_buffer_alone() {
    let mut out = Vec::new();
    let mut open = OpenRecords::start(&mut out, &delivery("md", 258, b"k", b"abc")).unwrap();
    let before = out.clone();
    let other_topic = delivery("me", 259, b"", b"z");
    let other_sub = DeliveryRef {
        sub_id: 8,
        ..delivery("md", 259, b"", b"z")
    };
    let other_source = DeliveryRef {
        source: NodeId(0xac),
        ..delivery("md", 259, b"", b"z")
    };
    let unnamed = DeliveryRef {
        source_name: None,
        ..delivery("md", 259, b"", b"z")
    };
    let renamed = DeliveryRef {
        source_name: Some("h12"),
        ..delivery("md", 259, b"", b"z")
    };
    for d in [other_topic, other_sub, other_source, unnamed, renamed] {
        assert_eq!(open.append(&mut out, &d, 1 << 16), Ok(false), "{d:?}");
        assert_eq!(out, before, "{d:?}");
    }
    // Past the cap: the body is 51 bytes now, the next entry 23.
    let next = delivery("md", 259, b"", b"z");
    assert_eq!(open.append(&mut out, &next, 51 + 22), Ok(false));
    assert_eq!(out, before);
    // Something queued after the frame: it is no longer the last.
    out.push(0);
    assert_eq!(open.append(&mut out, &next, 1 << 16), Ok(false));
    out.pop();
    // A record the layout cannot carry is an error, not a new frame.
    let long_key = vec![0u8; 70_000];
    assert!(open
        .append(&mut out, &delivery("md", 259, &long_key, b""), usize::MAX)
        .is_err());
    assert!(OpenRecords::start(&mut out, &delivery("md", 259, &long_key, b"")).is_err());
    assert_eq!(out, before);
    assert_eq!(open.append(&mut out, &next, 51 + 23), Ok(true));
    assert_eq!(open.count(), 2);
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
        // the one-record PUBLISH kind of earlier builds
        hex("00 00 00 1f  01  00 00 00 00 00 00 00 00  00  00 00 00 00
             00 00 00 00 00 00 00 00  00 01  00 00  00 00 00 00  74"),
        // unknown publish mode 9
        hex(
            "00 00 00 23  07  09  00 00 00 00  00 01 74  00 00 00 00 00 00 00 00  00 00 00 01
             00 00 00 00 00 00 00 00  00 00  00 00 00 00",
        ),
        // topic not UTF-8
        hex(
            "00 00 00 23  07  00  00 00 00 00  00 01 ff  00 00 00 00 00 00 00 00  00 00 00 01
             00 00 00 00 00 00 00 00  00 00  00 00 00 00",
        ),
        // key length past the end
        hex(
            "00 00 00 23  07  00  00 00 00 00  00 01 74  00 00 00 00 00 00 00 00  00 00 00 01
             00 00 00 00 00 00 00 00  00 09  00 00 00 00",
        ),
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
    let mut publish = hex(
        "00 00 00 00  07  01  00 00 00 00  00 01 74  00 00 00 00 00 00 00 00
                           00 00 00 01  00 00 00 00 00 00 00 00  00 00",
    );
    publish.extend_from_slice(&(MAX_VALUE_LEN as u32 + 1).to_be_bytes());
    publish.push(b'v');
    let body_len = (publish.len() - 4) as u32;
    publish[..4].copy_from_slice(&body_len.to_be_bytes());
    assert!(matches!(
        Request::parse(&Bytes::from(publish)),
        Err(castlog::wire::Error::Malformed { .. })
    ));
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
    let (mut golden, _) = all_golden_bytes();
    for (_, g) in golden_responses() {
        golden.extend_from_slice(&g);
    }
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
    let p = PublishRef {
        request_id: 1,
        mode: PublishMode::Async,
        timeout_ms: 0,
        timestamp_ms: 0,
        topic: &long_topic,
        key: b"",
        value: b"",
    };
    assert!(PublishBatch::new(PublishMode::Async, 0, &long_topic, 1, &[(0, b"", b"")]).is_err());
    assert!(PublishBatch::new(PublishMode::Async, 0, "t", 1, &[]).is_err());
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
