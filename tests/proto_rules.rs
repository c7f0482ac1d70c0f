//! Scripted dialogues: one protocol rule each, frames in at a time, exact
//! frames (or silence) out. Two `Node`s are wired by hand so each test can
//! drop, hold or forge exactly the datagrams it is about.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use castlog::proto::{Dest, Event, GroupConfig, GroupId, Node, NodeId, Offset, ReplayOutcome};
use castlog::wire::{
    Body, Flags, FrameRepr, NcfRepr, RecordRepr, ReplayStatus, Seq, SeqRange, StatusRepr,
};

const G: GroupId = GroupId(0);

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 7500))
}

fn node(id: u64, cfg: &GroupConfig, now: Instant) -> Node {
    let mut n = Node::new(NodeId(id), &format!("n{id}"), id);
    n.add_group(now, G, cfg.clone());
    n
}

/// Makes `n` more receivers (nodes 100.., at 10.0.0.100..) live at `a`, as
/// their STATUS for `a`'s session does.
fn add_live_receivers(a: &mut Node, t: Instant, n: u8) {
    for k in 0..n {
        let status = FrameRepr::new(
            NodeId(100 + u64::from(k)),
            a.session(G).unwrap(),
            Flags::default(),
            Body::Status(StatusRepr {
                source: a.id(),
                next_expected: Seq(0),
                receive_window: 1 << 20,
            }),
        )
        .to_vec()
        .unwrap();
        a.handle_datagram(t, addr(100 + k), None, &status);
    }
}

/// Everything a node wants to send now.
fn drain(n: &mut Node, _now: Instant) -> Vec<(Dest, Vec<u8>)> {
    std::iter::from_fn(|| n.poll_transmit())
        .map(|(dest, frame)| (dest, frame.to_vec()))
        .collect()
}

fn events(n: &mut Node) -> Vec<Event> {
    std::iter::from_fn(|| n.poll_event()).collect()
}

fn kind(bytes: &[u8]) -> String {
    match FrameRepr::parse(bytes).map(|f| f.body) {
        Ok(Body::Data(d)) => format!("DATA {}", d.seq.0),
        Ok(b) => format!("{:?}", b.frame_type()),
        Err(e) => format!("bad {e}"),
    }
}

fn data_seqs(frames: &[(Dest, Vec<u8>)]) -> Vec<(Dest, Vec<u8>)> {
    frames
        .iter()
        .filter(|(_, b)| kind(b).starts_with("DATA"))
        .cloned()
        .collect()
}

/// A source with one record per datagram, a receiver that has heard the
/// session start; returns (source, receiver, the DATA frames).
fn setup(cfg: &GroupConfig, records: u64, t0: Instant) -> (Node, Node, Vec<Vec<u8>>) {
    let mut a = node(1, cfg, t0);
    let mut b = node(2, cfg, t0);
    a.handle_timeout(t0);
    for (_, f) in drain(&mut a, t0) {
        b.handle_datagram(t0, addr(1), Some(G), &f);
    }
    let mut frames = Vec::new();
    for o in 0..records {
        a.publish(t0, G, "t", Offset(o), 0, b"k", b"value").unwrap();
        a.flush(t0);
        for (_, f) in data_seqs(&drain(&mut a, t0)) {
            frames.push(f);
        }
    }
    (a, b, frames)
}

#[test]
fn gap_is_naked_after_a_random_delay_and_repaired_by_the_source() {
    let t0 = Instant::now();
    let cfg = GroupConfig::default();
    let (mut a, mut b, frames) = setup(&cfg, 3, t0);
    // Several receivers: the repair serves them all, so it goes to the group.
    add_live_receivers(&mut a, t0, 2);
    drain(&mut a, t0);
    b.handle_datagram(t0, addr(1), Some(G), &frames[0]);
    b.handle_datagram(t0, addr(1), Some(G), &frames[2]); // seq 1 lost
    drain(&mut b, t0);
    let t1 = t0 + cfg.nak_delay_max + Duration::from_millis(1);
    b.handle_timeout(t1);
    let naks: Vec<_> = drain(&mut b, t1)
        .into_iter()
        .filter(|(_, f)| kind(f) == "Nak")
        .collect();
    assert_eq!(naks.len(), 1, "exactly one NAK after the delay");
    assert_eq!(
        naks[0].0,
        Dest::Peer(addr(1)),
        "NAKs go unicast to the source"
    );
    a.handle_datagram(t1, addr(2), None, &naks[0].1);
    let answer = drain(&mut a, t1);
    let sent: Vec<(Dest, String)> = answer.iter().map(|(d, f)| (*d, kind(f))).collect();
    assert_eq!(
        sent,
        vec![
            (Dest::Group(G), "Ncf".to_string()),
            (Dest::Group(G), "DATA 1".to_string())
        ],
        "NCF to the group, then the repair"
    );
    let repair = &answer[1].1;
    assert!(FrameRepr::parse(repair)
        .unwrap()
        .header
        .flags
        .contains(Flags::REPAIR));
    b.handle_datagram(t1, addr(1), Some(G), repair);
    let offsets = delivered_offsets(&events(&mut b));
    assert_eq!(offsets, vec![0, 1, 2]);
}

#[test]
fn nak_is_suppressed_when_the_sources_ncf_is_heard_first() {
    let t0 = Instant::now();
    let cfg = GroupConfig::default();
    let (a, mut b, frames) = setup(&cfg, 3, t0);
    b.handle_datagram(t0, addr(1), Some(G), &frames[0]);
    b.handle_datagram(t0, addr(1), Some(G), &frames[2]);
    drain(&mut b, t0);
    // Another receiver's NAK made the source confirm seq 1 to the group.
    let ncf = FrameRepr::new(
        a.id(),
        a.session(G).unwrap(),
        Flags::default(),
        Body::Ncf(NcfRepr {
            ranges: vec![SeqRange {
                start: Seq(1),
                end: Seq(2),
            }],
        }),
    )
    .to_vec()
    .unwrap();
    b.handle_datagram(t0, addr(1), Some(G), &ncf);
    let t1 = t0 + cfg.nak_delay_max + Duration::from_millis(1);
    b.handle_timeout(t1);
    let naks = drain(&mut b, t1)
        .into_iter()
        .filter(|(_, f)| kind(f) == "Nak")
        .count();
    assert_eq!(naks, 0, "the NAK is suppressed");
    assert_eq!(b.stats().naks_suppressed, 1);
}

#[test]
fn duplicate_naks_within_the_linger_get_one_repair() {
    let t0 = Instant::now();
    let cfg = GroupConfig::default();
    let (mut a, mut b, frames) = setup(&cfg, 2, t0);
    add_live_receivers(&mut a, t0, 3);
    drain(&mut a, t0);
    b.handle_datagram(t0, addr(1), Some(G), &frames[1]);
    let t1 = t0 + cfg.nak_delay_max + Duration::from_millis(1);
    b.handle_timeout(t1);
    let nak = drain(&mut b, t1)
        .into_iter()
        .find(|(_, f)| kind(f) == "Nak")
        .unwrap()
        .1;
    a.handle_datagram(t1, addr(2), None, &nak);
    a.handle_datagram(t1, addr(3), None, &nak);
    a.handle_datagram(t1 + cfg.repair_linger / 2, addr(4), None, &nak);
    let repairs = drain(&mut a, t1)
        .into_iter()
        .filter(|(_, f)| kind(f) == "DATA 0")
        .count();
    assert_eq!(repairs, 1);
    assert_eq!(a.stats().naks_coalesced, 2);
    // After the linger, a new NAK is a new round and gets a new repair.
    let t2 = t1 + cfg.repair_linger + Duration::from_millis(1);
    a.handle_datagram(t2, addr(2), None, &nak);
    assert_eq!(
        drain(&mut a, t2)
            .into_iter()
            .filter(|(_, f)| kind(f) == "DATA 0")
            .count(),
        1
    );
}

#[test]
fn nak_below_the_window_is_answered_unrecoverable_and_becomes_a_gap() {
    let t0 = Instant::now();
    let cfg = GroupConfig {
        retransmit_window_bytes: 200,
        ..GroupConfig::default()
    };
    let (mut a, mut b, frames) = setup(&cfg, 10, t0);
    // No receiver acknowledged, so the small window let seq 0 go.
    b.handle_datagram(t0, addr(1), Some(G), &frames[9]);
    let t1 = t0 + cfg.nak_delay_max + Duration::from_millis(1);
    b.handle_timeout(t1);
    let nak = drain(&mut b, t1)
        .into_iter()
        .find(|(_, f)| kind(f) == "Nak")
        .unwrap()
        .1;
    a.handle_datagram(t1, addr(2), None, &nak);
    let answer = drain(&mut a, t1);
    let unrec = answer
        .iter()
        .find(|(_, f)| kind(f) == "Unrecoverable")
        .expect("UNRECOVERABLE sent");
    assert_eq!(unrec.0, Dest::Peer(addr(2)));
    b.handle_datagram(t1, addr(1), None, &unrec.1);
    for (_, f) in answer.iter().filter(|(_, f)| kind(f).starts_with("DATA")) {
        b.handle_datagram(t1, addr(1), Some(G), f);
    }
    let mut ev = events(&mut b);
    // The lost seq 0 held the topic's in-band declaration: the next
    // heartbeat's topic advertisement names it.
    let th = t1 + cfg.heartbeat_interval_max;
    a.handle_timeout(th);
    for (_, f) in drain(&mut a, th)
        .iter()
        .filter(|(_, f)| kind(f) == "Heartbeat")
    {
        b.handle_datagram(th, addr(1), Some(G), f);
    }
    ev.extend(events(&mut b));
    assert!(
        ev.iter().any(|e| matches!(e, Event::Gap { .. })),
        "an explicit gap, never a silent hole: {ev:?}"
    );
    assert!(delivered_offsets(&ev).contains(&9));
    // And the receiver stops asking.
    let t2 = t1 + Duration::from_secs(2);
    b.handle_timeout(t2);
    assert_eq!(
        drain(&mut b, t2)
            .into_iter()
            .filter(|(_, f)| kind(f) == "Nak")
            .count(),
        0
    );
}

#[test]
fn publish_is_acknowledged_only_when_every_live_receiver_has_it() {
    let t0 = Instant::now();
    let cfg = GroupConfig::default();
    let (mut a, mut b, _) = setup(&cfg, 0, t0);
    // b acknowledges the (empty) session, so a knows one live receiver.
    b.handle_timeout(t0);
    for (_, f) in drain(&mut b, t0) {
        a.handle_datagram(t0, addr(2), None, &f);
    }
    events(&mut a);
    let ticket = a.publish(t0, G, "t", Offset(0), 0, b"", b"x").unwrap();
    a.flush(t0);
    let data = data_seqs(&drain(&mut a, t0));
    assert!(
        !events(&mut a)
            .iter()
            .any(|e| matches!(e, Event::Acked { .. })),
        "not acked before the receiver has it"
    );
    b.handle_datagram(t0, addr(1), Some(G), &data[0].1);
    let t1 = t0 + cfg.status_interval;
    b.handle_timeout(t1);
    for (_, f) in drain(&mut b, t1) {
        a.handle_datagram(t1, addr(2), None, &f);
    }
    assert!(events(&mut a).contains(&Event::Acked { group: G, ticket }));
}

/// Answers every replay request `a` heard from an in-memory log of encoded
/// records (index = offset), as the daemon does from its log.
fn serve_replays(a: &mut Node, log: &[Vec<u8>], now: Instant) {
    for e in events(a) {
        if let Event::ReplayRead(serve) = e {
            let mut bytes = Vec::new();
            let mut next = serve.from.0;
            let end = (log.len() as u64).min(serve.to.0);
            while next < end && bytes.len() < serve.max_bytes as usize {
                bytes.extend_from_slice(&log[next as usize]);
                next += 1;
            }
            let status = if next >= end {
                ReplayStatus::ReachedEnd
            } else {
                ReplayStatus::ChunkDone
            };
            a.supply_replay_chunk(
                now,
                &serve,
                &bytes,
                castlog::proto::replay_end(status, Offset(next), Offset(0)),
            );
        }
    }
}

#[test]
fn replay_streams_a_log_range_in_chunks_in_offset_order() {
    let t0 = Instant::now();
    let cfg = GroupConfig::default();
    let mut a = node(1, &cfg, t0);
    let mut b = node(2, &cfg, t0);
    drain(&mut a, t0);
    drain(&mut b, t0);
    let log: Vec<Vec<u8>> = (0..5000u64)
        .map(|o| {
            let mut v = Vec::new();
            let value = vec![o as u8; 100];
            RecordRepr {
                topic: Default::default(),
                offset: Offset(o),
                timestamp_ms: 0,
                key: b"",
                value: &value,
            }
            .emit_to_vec(&mut v)
            .unwrap();
            v
        })
        .collect();
    let id = b.request_replay(t0, addr(1), NodeId(1), "t", Offset(10), Offset(u64::MAX));
    let mut got = Vec::new();
    let mut done = None;
    let mut now = t0;
    for _round in 0..200 {
        for (_, f) in drain(&mut b, now) {
            a.handle_datagram(now, addr(2), None, &f);
        }
        serve_replays(&mut a, &log, now);
        for (i, (_, f)) in drain(&mut a, now).into_iter().enumerate() {
            // Lose one datagram of the first chunk: the client re-asks.
            if _round == 0 && i == 3 {
                continue;
            }
            b.handle_datagram(now, addr(1), None, &f);
        }
        for e in events(&mut b) {
            match e {
                Event::ReplayRecords {
                    id: rid, records, ..
                } => {
                    assert_eq!(rid, id);
                    for r in castlog::wire::Records::count_checked(&records).unwrap() {
                        got.push(r.offset.0);
                    }
                }
                Event::ReplayDone { outcome, .. } => done = Some(outcome),
                _ => {}
            }
        }
        if done.is_some() {
            break;
        }
        now += Duration::from_millis(1);
        b.handle_timeout(now);
    }
    assert_eq!(
        done,
        Some(ReplayOutcome::Complete {
            next_offset: Offset(5000)
        })
    );
    assert_eq!(got, (10..5000).collect::<Vec<_>>());
}

#[test]
fn data_is_paced_by_the_rate_limit() {
    let t0 = Instant::now();
    let cfg = GroupConfig {
        rate_limit_bytes_per_sec: 1_000_000,
        ..GroupConfig::default()
    };
    let mut a = node(1, &cfg, t0);
    drain(&mut a, t0);
    for o in 0..100u64 {
        a.publish(t0, G, "t", Offset(o), 0, b"", &[1u8; 1000])
            .unwrap();
    }
    a.flush(t0);
    // 100 KB at 1 MB/s: about 10 ms of burst now, the rest over ~90 ms.
    let now_count = data_seqs(&drain(&mut a, t0)).len();
    assert!(now_count < 30, "{now_count} datagrams went out at once");
    let mut total = now_count;
    let mut t = t0;
    while total < 100 {
        t = a.poll_timeout().unwrap().max(t);
        a.handle_timeout(t);
        total += data_seqs(&drain(&mut a, t)).len();
        assert!(t < t0 + Duration::from_secs(1), "pacing stalled");
    }
    let took = t - t0;
    assert!(
        took >= Duration::from_millis(70) && took <= Duration::from_millis(130),
        "100 KB took {took:?} at 1 MB/s"
    );
}

#[test]
fn replay_carries_records_larger_than_a_datagram_in_pieces_despite_loss() {
    let t0 = Instant::now();
    let cfg = GroupConfig::default();
    let mut a = node(1, &cfg, t0);
    let mut b = node(2, &cfg, t0);
    drain(&mut a, t0);
    drain(&mut b, t0);
    let sizes = [10usize, 300_000, 20, 70_000, 5];
    let log: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(o, &n)| {
            let mut v = Vec::new();
            let value: Vec<u8> = (0..n).map(|i| (i * 7 + o) as u8).collect();
            RecordRepr {
                topic: Default::default(),
                offset: Offset(o as u64),
                timestamp_ms: 0,
                key: b"k",
                value: &value,
            }
            .emit_to_vec(&mut v)
            .unwrap();
            v
        })
        .collect();
    b.request_replay(t0, addr(1), NodeId(1), "t", Offset(0), Offset(u64::MAX));
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut done = None;
    let mut now = t0;
    let mut dropped = 0;
    let mut k = 0u64;
    for _ in 0..2000 {
        for (_, f) in drain(&mut b, now) {
            a.handle_datagram(now, addr(2), None, &f);
        }
        serve_replays(&mut a, &log, now);
        for (_, f) in drain(&mut a, now) {
            k += 1;
            // Lose every 37th datagram: pieces of the large records too.
            if k % 37 == 0 {
                dropped += 1;
                continue;
            }
            b.handle_datagram(now, addr(1), None, &f);
        }
        for e in events(&mut b) {
            match e {
                Event::ReplayRecords { records, .. } => {
                    for r in castlog::wire::Records::count_checked(&records).unwrap() {
                        assert_eq!(r.offset.0, got.len() as u64, "in offset order, once");
                        got.push(r.value.to_vec());
                    }
                }
                Event::ReplayDone { outcome, .. } => done = Some(outcome),
                _ => {}
            }
        }
        if done.is_some() {
            break;
        }
        now += Duration::from_millis(50);
        b.handle_timeout(now);
    }
    assert!(dropped > 5);
    assert_eq!(
        done,
        Some(ReplayOutcome::Complete {
            next_offset: Offset(5)
        })
    );
    assert_eq!(got.len(), 5);
    for (o, v) in got.iter().enumerate() {
        assert_eq!(v.len(), sizes[o]);
        assert!(
            v.iter().enumerate().all(|(i, b)| *b == (i * 7 + o) as u8),
            "record {o} intact"
        );
    }
}

#[test]
fn frames_of_a_replaced_session_are_dropped_not_taken_for_a_new_one() {
    let t0 = Instant::now();
    let cfg = GroupConfig::default();
    let (_a, mut b, frames) = setup(&cfg, 2, t0);
    b.handle_datagram(t0, addr(1), Some(G), &frames[0]);
    // The source restarts: same node id, new session.
    let mut a2 = Node::new(NodeId(1), "n1", 99);
    a2.add_group(t0, G, cfg.clone());
    a2.handle_timeout(t0);
    for (_, f) in drain(&mut a2, t0) {
        b.handle_datagram(t0, addr(1), Some(G), &f);
    }
    events(&mut b);
    // A late (or captured and replayed) frame of the old session.
    b.handle_datagram(t0, addr(1), Some(G), &frames[1]);
    let ev = events(&mut b);
    assert!(
        !ev.iter()
            .any(|e| matches!(e, Event::SourceUp { .. } | Event::Deliver { .. })),
        "{ev:?}"
    );
    assert_eq!(b.stats().datagrams_stale_session, 1);
}

#[test]
fn a_full_receive_buffer_still_takes_the_repair_it_waits_for() {
    let t0 = Instant::now();
    let cfg = GroupConfig {
        receive_window_bytes: 600,
        ..GroupConfig::default()
    };
    let (mut a, mut b, frames) = setup(&cfg, 12, t0);
    // seq 0 lost; 1.. fill the buffer until it refuses new data.
    for f in &frames[1..] {
        b.handle_datagram(t0, addr(1), Some(G), f);
    }
    assert!(b.stats().out_of_window_dropped > 0, "the buffer filled up");
    let t1 = t0 + cfg.nak_delay_max + Duration::from_millis(1);
    b.handle_timeout(t1);
    for (_, f) in drain(&mut b, t1)
        .into_iter()
        .filter(|(_, f)| kind(f) == "Nak")
    {
        a.handle_datagram(t1, addr(2), None, &f);
    }
    for (_, f) in drain(&mut a, t1)
        .into_iter()
        .filter(|(_, f)| kind(f).starts_with("DATA"))
    {
        b.handle_datagram(t1, addr(1), Some(G), &f);
    }
    let delivered = delivered_offsets(&events(&mut b)).len();
    assert!(
        delivered >= 2,
        "the head repair was taken and the buffer drained ({delivered} delivered)"
    );
}

/// A DATA frame of one record from a made-up (node, session).
fn forged_data(node: u64, session: u32) -> Vec<u8> {
    use castlog::wire::{Body, DataPayload, DataRepr, Flags, SessionId, TopicId};
    let record = RecordRepr {
        topic: TopicId(1),
        offset: Offset(0),
        timestamp_ms: 0,
        key: b"",
        value: b"forged",
    };
    let mut bytes = vec![0u8; record.buffer_len()];
    record.emit(&mut bytes).unwrap();
    let data = DataRepr {
        seq: Seq(5),
        payload: DataPayload::Records {
            count: 1,
            bytes: &bytes,
        },
    };
    FrameRepr::new(
        castlog::wire::NodeId(node),
        SessionId(session),
        Flags::default(),
        Body::Data(data),
    )
    .to_vec()
    .unwrap()
}

#[test]
fn sessions_past_the_limit_are_refused_and_counted_until_silent_ones_are_forgotten() {
    use castlog::proto::MAX_RECEIVERS;
    let t0 = Instant::now();
    let cfg = GroupConfig::default();
    let mut b = node(2, &cfg, t0);
    let flood = MAX_RECEIVERS as u64 + 500;
    for k in 0..flood {
        b.handle_datagram(t0, addr(9), Some(G), &forged_data(1_000 + k, k as u32));
    }
    let ups = events(&mut b)
        .iter()
        .filter(|e| matches!(e, Event::SourceUp { .. }))
        .count();
    assert_eq!(ups, MAX_RECEIVERS);
    assert_eq!(b.stats().sessions_refused, 500);
    // A real source is locked out while the flood is live...
    let (mut a, _, frames) = setup(&cfg, 1, t0);
    b.handle_datagram(t0, addr(1), Some(G), &frames[0]);
    assert_eq!(b.stats().sessions_refused, 501);
    // ...and gets in once the made-up sessions have gone silent.
    let t1 = t0 + cfg.liveness_timeout + Duration::from_millis(10);
    b.handle_timeout(t1);
    b.handle_timeout(t1);
    events(&mut b);
    a.handle_timeout(t1);
    for (_, f) in drain(&mut a, t1) {
        b.handle_datagram(t1, addr(1), Some(G), &f);
    }
    b.handle_datagram(t1, addr(1), Some(G), &frames[0]);
    let delivered = delivered_offsets(&events(&mut b));
    assert_eq!(delivered, vec![0]);
    assert_eq!(b.stats().sessions_refused, 501);
}

/// Offsets of every delivered record, in delivery order.
fn delivered_offsets(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .flat_map(|e| match e {
            Event::Deliver { records, .. } => records.iter().map(|r| r.offset.0).collect(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn a_gap_is_reported_before_the_buffered_records_after_it() {
    let t0 = Instant::now();
    let cfg = GroupConfig {
        retransmit_window_bytes: 200,
        ..GroupConfig::default()
    };
    let (mut a, mut b, frames) = setup(&cfg, 10, t0);
    b.handle_datagram(t0, addr(1), Some(G), &frames[0]);
    for f in &frames[2..] {
        b.handle_datagram(t0, addr(1), Some(G), f); // seq 1 lost
    }
    let before = delivered_offsets(&events(&mut b));
    assert_eq!(before, vec![0]);
    let t1 = t0 + cfg.nak_delay_max + Duration::from_millis(1);
    b.handle_timeout(t1);
    let nak = drain(&mut b, t1)
        .into_iter()
        .find(|(_, f)| kind(f) == "Nak")
        .expect("a NAK for seq 1")
        .1;
    a.handle_datagram(t1, addr(2), None, &nak);
    let unrec = drain(&mut a, t1)
        .into_iter()
        .find(|(_, f)| kind(f) == "Unrecoverable")
        .expect("seq 1 left the small window")
        .1;
    b.handle_datagram(t1, addr(1), None, &unrec);
    let ev = events(&mut b);
    let gap = ev.iter().position(|e| matches!(e, Event::Gap { .. }));
    let deliver = ev.iter().position(|e| matches!(e, Event::Deliver { .. }));
    assert!(gap.is_some() && deliver.is_some(), "{ev:?}");
    // A daemon that fills gaps from a log must know of the gap before the
    // records after it reach the log.
    assert!(
        gap < deliver,
        "gap after the records that follow it: {ev:?}"
    );
    assert_eq!(delivered_offsets(&ev), (2..10).collect::<Vec<_>>());
}

#[test]
fn a_single_receivers_repair_comes_unicast_without_an_ncf() {
    let t0 = Instant::now();
    let cfg = GroupConfig::default();
    let (mut a, mut b, frames) = setup(&cfg, 3, t0);
    add_live_receivers(&mut a, t0, 1);
    drain(&mut a, t0);
    b.handle_datagram(t0, addr(1), Some(G), &frames[0]);
    b.handle_datagram(t0, addr(1), Some(G), &frames[2]); // seq 1 lost
    drain(&mut b, t0);
    let t1 = t0 + cfg.nak_delay_max + Duration::from_millis(1);
    b.handle_timeout(t1);
    let nak = drain(&mut b, t1)
        .into_iter()
        .find(|(_, f)| kind(f) == "Nak")
        .expect("a NAK")
        .1;
    a.handle_datagram(t1, addr(2), None, &nak);
    // Nobody else to serve or to suppress: the repair goes to the NAKer's
    // unicast socket (read at once, not behind the group's data).
    let sent: Vec<(Dest, String)> = drain(&mut a, t1)
        .into_iter()
        .map(|(d, f)| (d, kind(&f)))
        .collect();
    assert_eq!(sent, vec![(Dest::Peer(addr(2)), "DATA 1".to_string())]);
}
