//! Golden bytes, round trips, framing and malformed input.

use super::*;

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
        topic: long_topic.into(),
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
