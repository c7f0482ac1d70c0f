//! Hostile-input properties of `wire`: random bytes, and valid frames that
//! were mutated and then given a fresh CRC (so the mutation reaches the body
//! parsers instead of stopping at the checksum), never make
//! `FrameRepr::parse` panic; whatever parses re-emits to something that
//! parses to the same value; and every generated Repr survives
//! `parse(emit(x)) == x`. Also: parsing DATA does not allocate.
//!
//! Case counts stay at proptest's default (256) so the suite stays fast;
//! raise them for a soak run with `PROPTEST_CASES=100000 cargo test --test
//! wire_fuzzish`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use castlog::wire::{
    AnnounceKind, AnnounceRepr, Body, DataPayload, DataRepr, Extension, Flags, FragmentRepr, Frame,
    FrameRepr, HeartbeatRepr, NakRepr, NcfRepr, NodeId, Offset, RecordRepr, ReplayDataRepr,
    ReplayEndRepr, ReplayRequestRepr, ReplayStatus, Seq, SeqRange, SessionId, StatusRepr,
    TopicAdvert, TopicId, UnrecoverableRepr, HEADER_LEN,
};
use proptest::prelude::*;

/// An owned description of one frame, from which a borrowing `FrameRepr` is
/// built (proptest values must own their data).
#[derive(Debug, Clone)]
struct OwnedFrame {
    node: u64,
    session: u32,
    flags: u16,
    body: OwnedBody,
}

#[derive(Debug, Clone)]
enum OwnedBody {
    Data {
        seq: u64,
        count: u16,
        records: Vec<u8>,
    },
    Fragment {
        seq: u64,
        total_len: u32,
        frag_offset: u32,
        chunk: Vec<u8>,
    },
    Heartbeat {
        next_seq: u64,
        lowest_repairable: u64,
        interval_ms: u32,
        topics: Vec<(u32, u64, String)>,
    },
    Nak {
        source: u64,
        ranges: Vec<SeqRange>,
    },
    Ncf {
        ranges: Vec<SeqRange>,
    },
    Unrecoverable {
        lowest_repairable: u64,
        ranges: Vec<SeqRange>,
    },
    Status {
        source: u64,
        next_expected: u64,
        receive_window: u32,
    },
    ReplayRequest {
        request_id: u32,
        log_node: u64,
        from: u64,
        to: u64,
        max_bytes: u32,
        topic: String,
    },
    ReplayData {
        request_id: u32,
        count: u16,
        records: Vec<u8>,
    },
    ReplayEnd {
        request_id: u32,
        status: u8,
        next_offset: u64,
        earliest_offset: u64,
    },
    Announce {
        kind: u8,
        name: String,
        extensions: Vec<u8>,
    },
    Unknown {
        frame_type: u8,
        payload: Vec<u8>,
    },
}

impl OwnedFrame {
    fn repr(&self) -> FrameRepr<'_> {
        let body = match &self.body {
            OwnedBody::Data {
                seq,
                count,
                records,
            } => Body::Data(DataRepr {
                seq: Seq(*seq),
                payload: DataPayload::Records {
                    count: *count,
                    bytes: records,
                },
            }),
            OwnedBody::Fragment {
                seq,
                total_len,
                frag_offset,
                chunk,
            } => Body::Data(DataRepr {
                seq: Seq(*seq),
                payload: DataPayload::Fragment(FragmentRepr {
                    total_len: *total_len,
                    frag_offset: *frag_offset,
                    chunk,
                }),
            }),
            OwnedBody::Heartbeat {
                next_seq,
                lowest_repairable,
                interval_ms,
                topics,
            } => Body::Heartbeat(HeartbeatRepr {
                next_seq: Seq(*next_seq),
                lowest_repairable: Seq(*lowest_repairable),
                interval_ms: *interval_ms,
                topics: topics
                    .iter()
                    .map(|(id, next, name)| TopicAdvert {
                        topic: TopicId(*id),
                        next_offset: Offset(*next),
                        name,
                    })
                    .collect(),
            }),
            OwnedBody::Nak { source, ranges } => Body::Nak(NakRepr {
                source: NodeId(*source),
                ranges: ranges.clone(),
            }),
            OwnedBody::Ncf { ranges } => Body::Ncf(NcfRepr {
                ranges: ranges.clone(),
            }),
            OwnedBody::Unrecoverable {
                lowest_repairable,
                ranges,
            } => Body::Unrecoverable(UnrecoverableRepr {
                lowest_repairable: Seq(*lowest_repairable),
                ranges: ranges.clone(),
            }),
            OwnedBody::Status {
                source,
                next_expected,
                receive_window,
            } => Body::Status(StatusRepr {
                source: NodeId(*source),
                next_expected: Seq(*next_expected),
                receive_window: *receive_window,
            }),
            OwnedBody::ReplayRequest {
                request_id,
                log_node,
                from,
                to,
                max_bytes,
                topic,
            } => Body::ReplayRequest(ReplayRequestRepr {
                request_id: *request_id,
                log_node: NodeId(*log_node),
                from: Offset(*from),
                to: Offset(*to),
                max_bytes: *max_bytes,
                topic,
            }),
            OwnedBody::ReplayData {
                request_id,
                count,
                records,
            } => Body::ReplayData(ReplayDataRepr {
                request_id: *request_id,
                count: *count,
                records,
                fragment: None,
            }),
            OwnedBody::ReplayEnd {
                request_id,
                status,
                next_offset,
                earliest_offset,
            } => Body::ReplayEnd(ReplayEndRepr {
                request_id: *request_id,
                status: ReplayStatus::from_code(*status),
                next_offset: Offset(*next_offset),
                earliest_offset: Offset(*earliest_offset),
            }),
            OwnedBody::Announce {
                kind,
                name,
                extensions,
            } => Body::Announce(AnnounceRepr {
                kind: AnnounceKind::from_code(*kind),
                name,
                extensions,
            }),
            OwnedBody::Unknown {
                frame_type,
                payload,
            } => Body::Unknown {
                frame_type: *frame_type,
                payload,
            },
        };
        FrameRepr::new(
            NodeId(self.node),
            SessionId(self.session),
            Flags(self.flags),
            body,
        )
    }
}

fn record_batch() -> impl Strategy<Value = (u16, Vec<u8>)> {
    let record = (
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..12),
        proptest::collection::vec(any::<u8>(), 0..80),
    );
    proptest::collection::vec(record, 0..8).prop_map(|recs| {
        let mut out = Vec::new();
        for (topic, offset, ts, key, value) in &recs {
            let r = RecordRepr {
                topic: TopicId(*topic),
                offset: Offset(*offset),
                timestamp_ms: *ts,
                key,
                value,
            };
            r.emit_to_vec(&mut out).unwrap();
        }
        (recs.len() as u16, out)
    })
}

fn ranges() -> impl Strategy<Value = Vec<SeqRange>> {
    proptest::collection::vec((0..u64::MAX / 2, 1..u64::MAX / 2), 0..6).prop_map(|v| {
        v.into_iter()
            .map(|(start, len)| SeqRange {
                start: Seq(start),
                end: Seq(start + len),
            })
            .collect()
    })
}

fn sorted_pair() -> impl Strategy<Value = (u64, u64)> {
    (any::<u64>(), any::<u64>()).prop_map(|(a, b)| (a.min(b), a.max(b)))
}

fn extensions() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..20)),
        0..4,
    )
    .prop_map(|exts| {
        let mut out = Vec::new();
        for (kind, value) in &exts {
            Extension { kind: *kind, value }
                .emit_to_vec(&mut out)
                .unwrap();
        }
        out
    })
}

fn owned_body() -> impl Strategy<Value = OwnedBody> {
    prop_oneof![
        (any::<u64>(), record_batch()).prop_map(|(seq, (count, records))| OwnedBody::Data {
            seq,
            count,
            records
        }),
        (
            any::<u64>(),
            0..1u32 << 26,
            0..1u32 << 20,
            proptest::collection::vec(any::<u8>(), 0..200)
        )
            .prop_map(|(seq, extra, frag_offset, chunk)| OwnedBody::Fragment {
                seq,
                total_len: frag_offset + chunk.len() as u32 + extra,
                frag_offset,
                chunk,
            }),
        (
            sorted_pair(),
            any::<u32>(),
            proptest::collection::vec((any::<u32>(), any::<u64>(), "\\PC{0,12}"), 0..5)
        )
            .prop_map(|((lo, hi), interval_ms, topics)| OwnedBody::Heartbeat {
                next_seq: hi,
                lowest_repairable: lo,
                interval_ms,
                topics,
            }),
        (any::<u64>(), ranges()).prop_map(|(source, ranges)| OwnedBody::Nak { source, ranges }),
        ranges().prop_map(|ranges| OwnedBody::Ncf { ranges }),
        (any::<u64>(), ranges()).prop_map(|(lowest_repairable, ranges)| {
            OwnedBody::Unrecoverable {
                lowest_repairable,
                ranges,
            }
        }),
        (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(
            |(source, next_expected, receive_window)| OwnedBody::Status {
                source,
                next_expected,
                receive_window,
            }
        ),
        (
            any::<u32>(),
            any::<u64>(),
            sorted_pair(),
            any::<u32>(),
            "\\PC{0,20}"
        )
            .prop_map(|(request_id, log_node, (from, to), max_bytes, topic)| {
                OwnedBody::ReplayRequest {
                    request_id,
                    log_node,
                    from,
                    to,
                    max_bytes,
                    topic,
                }
            }),
        (any::<u32>(), record_batch()).prop_map(|(request_id, (count, records))| {
            OwnedBody::ReplayData {
                request_id,
                count,
                records,
            }
        }),
        (any::<u32>(), any::<u8>(), any::<u64>(), any::<u64>()).prop_map(
            |(request_id, status, next_offset, earliest_offset)| OwnedBody::ReplayEnd {
                request_id,
                status,
                next_offset,
                earliest_offset,
            }
        ),
        (any::<u8>(), "\\PC{0,16}", extensions()).prop_map(|(kind, name, extensions)| {
            OwnedBody::Announce {
                kind,
                name,
                extensions,
            }
        }),
        (
            prop_oneof![Just(0u8), 11u8..=255],
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(frame_type, payload)| OwnedBody::Unknown {
                frame_type,
                payload
            }),
    ]
}

fn owned_frame() -> impl Strategy<Value = OwnedFrame> {
    (any::<u64>(), any::<u32>(), any::<u16>(), owned_body()).prop_map(
        |(node, session, flags, body)| OwnedFrame {
            node,
            session,
            flags,
            body,
        },
    )
}

/// One way to damage a frame's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Set { at: usize, value: u8 },
    Truncate { len: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..8usize).prop_map(|(at, len)| Mutation::Remove { at, len }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len();
    match m {
        Mutation::Flip { at, mask } => bytes[at % n] ^= mask,
        Mutation::Set { at, value } => bytes[at % n] = *value,
        Mutation::Truncate { len } => bytes.truncate(len % n),
        Mutation::Insert { at, bytes: ins } => {
            let at = at % (n + 1);
            bytes.splice(at..at, ins.iter().copied());
        }
        Mutation::Remove { at, len } => {
            let at = at % n;
            let end = (at + len).min(n);
            bytes.drain(at..end);
        }
    }
}

/// Makes the damaged bytes pass the header checks again (frame_len and CRC,
/// when the fixed header is intact), so that the body parsers see them.
fn reseal(bytes: &mut [u8]) {
    if bytes.len() < HEADER_LEN {
        return;
    }
    let len = bytes.len() as u32;
    let mut f = Frame::new_unchecked(bytes);
    f.set_frame_len(len);
    f.fill_checksum();
}

/// Whatever parses must re-emit, and the re-emitted bytes must parse to the
/// same value: the parser accepts nothing the emitter cannot write.
fn check_reemits(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(repr) = FrameRepr::parse(bytes) {
        let again = repr.to_vec();
        prop_assert!(again.is_ok(), "{repr:?} parsed but does not emit");
        let again = again.unwrap();
        prop_assert_eq!(FrameRepr::parse(&again), Ok(repr));
    }
    Ok(())
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = FrameRepr::parse(&bytes);
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_panic(
        frame_type in 0u8..=12,
        flags in 0u16..8,
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = vec![0u8; HEADER_LEN];
        bytes.extend_from_slice(&body);
        {
            let mut f = Frame::new_unchecked(&mut bytes[..]);
            f.set_magic(castlog::wire::MAGIC);
            f.set_version(castlog::wire::VERSION);
            f.set_frame_type(frame_type.into());
            f.set_flags(Flags(flags));
            f.set_header_len(HEADER_LEN as u16);
        }
        reseal(&mut bytes);
        check_reemits(&bytes)?;
    }

    #[test]
    fn generated_frames_round_trip(frame in owned_frame()) {
        let repr = frame.repr();
        let bytes = repr.to_vec();
        prop_assert!(bytes.is_ok(), "{:?}", bytes);
        let bytes = bytes.unwrap();
        prop_assert_eq!(bytes.len(), repr.buffer_len());
        prop_assert_eq!(FrameRepr::parse(&bytes), Ok(repr));
    }

    #[test]
    fn mutated_frames_never_panic(
        frame in owned_frame(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = frame.repr().to_vec().unwrap();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        // Without a fresh CRC, damage must be caught by the header checks.
        if bytes != frame.repr().to_vec().unwrap() {
            prop_assert!(FrameRepr::parse(&bytes).is_err());
        }
        reseal(&mut bytes);
        check_reemits(&bytes)?;
    }

    #[test]
    fn every_truncation_of_a_generated_frame_is_an_error(frame in owned_frame()) {
        let bytes = frame.repr().to_vec().unwrap();
        for len in 0..bytes.len() {
            prop_assert!(FrameRepr::parse(&bytes[..len]).is_err(), "len {}", len);
        }
    }
}

/// Counts allocations made by the current thread, so the test below is not
/// disturbed by tests running in parallel.
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn parsing_data_and_iterating_its_records_does_not_allocate() {
    let (count, records) = {
        let mut out = Vec::new();
        for i in 0..20u64 {
            RecordRepr {
                topic: TopicId(1),
                offset: Offset(i),
                timestamp_ms: i,
                key: b"key",
                value: &[7u8; 40],
            }
            .emit_to_vec(&mut out)
            .unwrap();
        }
        (20u16, out)
    };
    let batch = OwnedFrame {
        node: 1,
        session: 2,
        flags: 0,
        body: OwnedBody::Data {
            seq: 9,
            count,
            records,
        },
    }
    .repr()
    .to_vec()
    .unwrap();
    let fragment = OwnedFrame {
        node: 1,
        session: 2,
        flags: 0,
        body: OwnedBody::Fragment {
            seq: 10,
            total_len: 1000,
            frag_offset: 0,
            chunk: vec![1; 500],
        },
    }
    .repr()
    .to_vec()
    .unwrap();

    let before = ALLOCATIONS.with(Cell::get);
    let mut seen = 0u64;
    for bytes in [&batch, &fragment] {
        let repr = FrameRepr::parse(bytes).unwrap();
        if let Body::Data(d) = &repr.body {
            for r in d.records() {
                seen += r.offset.0;
            }
        }
    }
    let after = ALLOCATIONS.with(Cell::get);
    assert_eq!(seen, (0..20).sum::<u64>());
    assert_eq!(after - before, 0, "parsing DATA allocated");
}
