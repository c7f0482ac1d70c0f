//! The protocol core in a seeded lossy-network simulation (`proto::sim`).
//!
//! Every failure prints its seed and the one-line command that replays it.
//! `SIM_SEEDS=N` raises the number of short seeds for a soak run;
//! `SIM_SEED=S` runs just seed S in the seeded tests.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use castlog::proto::sim::{Link, Sim};
use castlog::proto::{Event, GroupConfig, Offset, PublishError, Rng, SeqRange};

struct Scenario {
    name: &'static str,
    seed: u64,
    receivers: usize,
    losses: Vec<f64>,
    duplicate: f64,
    reorder: f64,
    upstream_loss: f64,
    records: usize,
    /// Probability that a record is large (fragmented, up to 64 KiB).
    big: f64,
    cfg: GroupConfig,
}

impl Scenario {
    fn new(
        name: &'static str,
        seed: u64,
        receivers: usize,
        losses: &[f64],
        records: usize,
    ) -> Self {
        Scenario {
            name,
            seed,
            receivers,
            losses: losses.to_vec(),
            duplicate: 0.01,
            reorder: 0.01,
            upstream_loss: 0.0,
            records,
            big: 0.005,
            cfg: GroupConfig::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Outcome {
    delivered: Vec<usize>,
    naks_sent: u64,
    naks_at_source: u64,
    repairs_sent: u64,
    unique_lost: u64,
    worst_delay: Duration,
    gaps: usize,
}

struct Published {
    topic: usize,
    offset: u64,
    key: Vec<u8>,
    value: Vec<u8>,
}

fn value_size(rng: &mut Rng, big: f64) -> usize {
    if rng.chance(big) {
        1400 + rng.below(64 * 1024 - 1400) as usize
    } else if rng.chance(0.1) {
        200 + rng.below(1100) as usize
    } else {
        1 + rng.below(200) as usize
    }
}

fn rerun(s: &Scenario) -> String {
    format!(
        "scenario={} seed={} (replay: SIM_SEED={} cargo test --release --test sim -- {} --nocapture)",
        s.name, s.seed, s.seed, s.name
    )
}

fn run(s: &Scenario) -> Result<Outcome, String> {
    let start = Instant::now();
    let mut sim = Sim::new(s.seed, start);
    let src = sim.add_node(s.cfg.clone());
    for r in 0..s.receivers {
        let i = sim.add_node(s.cfg.clone());
        let loss = s.losses[r % s.losses.len()];
        sim.set_inbound(
            i,
            Link {
                loss,
                duplicate: s.duplicate,
                reorder: s.reorder,
                ..Link::default()
            },
        );
    }
    sim.set_upstream_loss(src, s.upstream_loss);
    // Receivers learn the session from its first heartbeat and start acking.
    sim.run_for(Duration::from_millis(20));

    let mut rng = Rng::from_seed(s.seed);
    let topics = ["md.a", "md.b", "ops.c"];
    let mut next_offset = [0u64; 3];
    let mut published: Vec<Published> = Vec::with_capacity(s.records);
    let mut published_at: BTreeMap<(usize, u64), Instant> = BTreeMap::new();
    let mut i = 0;
    let sim_deadline = sim.now() + Duration::from_secs(600);
    while i < s.records {
        // A burst, then some simulated time: batches fill under load.
        let burst = 1 + rng.below(64) as usize;
        for _ in 0..burst {
            if i >= s.records {
                break;
            }
            let topic = rng.below(3) as usize;
            let size = value_size(&mut rng, s.big);
            let value: Vec<u8> = (0..size).map(|_| rng.next_u32() as u8).collect();
            let key = format!("k{i}").into_bytes();
            let now = sim.now();
            let offset = next_offset[topic];
            match sim.node(src).publish(
                now,
                castlog::proto::sim::GROUP,
                topics[topic],
                Offset(offset),
                1_700_000_000_000 + i as u64,
                &key,
                &value,
            ) {
                Ok(_) => {
                    next_offset[topic] += 1;
                    published_at.insert((topic, offset), now);
                    published.push(Published {
                        topic,
                        offset,
                        key,
                        value,
                    });
                    i += 1;
                }
                Err(PublishError::Backpressure { .. }) => break,
                Err(e) => return Err(format!("publish failed: {e} {}", rerun(s))),
            }
        }
        let now = sim.now();
        sim.node(src).flush(now);
        sim.pump(src);
        sim.run_for(Duration::from_micros(200));
        if sim.now() > sim_deadline {
            return Err(format!(
                "publishing stalled (flow control never reopened) {}",
                rerun(s)
            ));
        }
    }

    let mut got: Vec<Vec<(usize, u64, Vec<u8>, Vec<u8>, Instant)>> = vec![Vec::new(); s.receivers];
    let mut out = Outcome::default();
    let finish_by = sim.now() + Duration::from_secs(120);
    loop {
        sim.run_for(Duration::from_millis(10));
        for r in 0..s.receivers {
            for (at, e) in sim.take_events(r + 1) {
                match e {
                    Event::Deliver { topic, records, .. } => {
                        let t = topics
                            .iter()
                            .position(|n| **n == *topic)
                            .ok_or(format!("unknown topic {topic}"))?;
                        for rec in records.iter() {
                            got[r].push((
                                t,
                                rec.offset.0,
                                rec.key.to_vec(),
                                rec.value.to_vec(),
                                at,
                            ));
                        }
                    }
                    Event::Gap {
                        seqs: SeqRange { start, end },
                        ..
                    } => {
                        out.gaps += 1;
                        return Err(format!(
                            "receiver {} reported a gap {}..{} {}",
                            r + 1,
                            start,
                            end,
                            rerun(s)
                        ));
                    }
                    _ => {}
                }
            }
        }
        if got.iter().all(|g| g.len() >= published.len()) || sim.now() > finish_by {
            break;
        }
    }
    // Exactly once, in order per topic, byte-identical.
    for (r, g) in got.iter().enumerate() {
        let mut by_topic: Vec<Vec<&(usize, u64, Vec<u8>, Vec<u8>, Instant)>> = vec![Vec::new(); 3];
        for d in g {
            by_topic[d.0].push(d);
        }
        let mut expect: Vec<Vec<&Published>> = vec![Vec::new(); 3];
        for p in &published {
            expect[p.topic].push(p);
        }
        for t in 0..3 {
            if by_topic[t].len() != expect[t].len() {
                let stats = sim.node(r + 1).stats().clone();
                return Err(format!(
                    "receiver {} topic {} delivered {} of {} records {}\n  receiver stats: {:?}",
                    r + 1,
                    topics[t],
                    by_topic[t].len(),
                    expect[t].len(),
                    rerun(s),
                    stats
                ));
            }
            for (d, p) in by_topic[t].iter().zip(&expect[t]) {
                if d.1 != p.offset || d.2 != p.key || d.3 != p.value {
                    return Err(format!(
                        "receiver {} topic {} offset {}: got offset {} (or different bytes) {}",
                        r + 1,
                        topics[t],
                        p.offset,
                        d.1,
                        rerun(s)
                    ));
                }
                if let Some(at) = published_at.get(&(t, p.offset)) {
                    out.worst_delay = out.worst_delay.max(d.4.saturating_duration_since(*at));
                }
            }
        }
        out.delivered.push(g.len());
    }
    for r in 0..s.receivers {
        out.naks_sent += sim.node(r + 1).stats().naks_sent;
    }
    let src_stats = sim.node(src).stats().clone();
    out.naks_at_source = src_stats.naks_received;
    out.repairs_sent = src_stats.repairs_sent;
    out.unique_lost = sim.net.data_original_lost_unique;
    Ok(out)
}

fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    if let Ok(s) = std::env::var("SIM_SEED") {
        if let Ok(seed) = s.parse() {
            return vec![seed];
        }
    }
    default.collect()
}

#[test]
fn eight_receivers_at_mixed_loss_get_100k_records_once_in_order() {
    for seed in seeds(1..4) {
        let s = Scenario::new(
            "eight_receivers_at_mixed_loss_get_100k_records_once_in_order",
            seed,
            8,
            &[0.0, 0.01, 0.05, 0.20],
            100_000,
        );
        let o = run(&s).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("seed={seed} {o:?}");
    }
}

#[test]
fn a_thousand_short_seeds_deliver_everything_once_in_order() {
    let n: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut failures = Vec::new();
    for seed in seeds(1000..1000 + n) {
        let mut s = Scenario::new(
            "a_thousand_short_seeds_deliver_everything_once_in_order",
            seed,
            4,
            &[0.0, 0.01, 0.05, 0.20],
            300,
        );
        s.big = 0.01;
        if let Err(e) = run(&s) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn nak_implosion_is_suppressed_among_32_receivers() {
    for seed in seeds(7..9) {
        let mut s = Scenario::new(
            "nak_implosion_is_suppressed_among_32_receivers",
            seed,
            32,
            &[0.0],
            10_000,
        );
        s.upstream_loss = 0.05;
        s.duplicate = 0.0;
        s.reorder = 0.0;
        s.big = 0.0;
        let o = run(&s).unwrap_or_else(|e| panic!("{e}"));
        let lost = o.unique_lost.max(1) as f64;
        let naks_per_loss = o.naks_at_source as f64 / lost;
        let repairs_per_loss = o.repairs_sent as f64 / lost;
        eprintln!("seed={seed} lost={} naks_at_source={} repairs={} naks/loss={naks_per_loss:.2} repairs/loss={repairs_per_loss:.2}", o.unique_lost, o.naks_at_source, o.repairs_sent);
        assert!(o.unique_lost > 20, "too little loss to judge {}", rerun(&s));
        assert!(
            naks_per_loss <= 3.0,
            "{naks_per_loss:.2} NAKs per lost datagram {}",
            rerun(&s)
        );
        assert!(
            repairs_per_loss <= 1.35,
            "{repairs_per_loss:.2} repairs per lost datagram {}",
            rerun(&s)
        );
    }
}

#[test]
fn repairs_stay_within_twice_the_unique_loss_at_5_percent() {
    for seed in seeds(20..23) {
        let mut s = Scenario::new(
            "repairs_stay_within_twice_the_unique_loss_at_5_percent",
            seed,
            8,
            &[0.05],
            5000,
        );
        s.duplicate = 0.0;
        s.reorder = 0.0;
        let o = run(&s).unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "seed={seed} lost={} repairs={}",
            o.unique_lost, o.repairs_sent
        );
        assert!(
            o.repairs_sent <= 2 * o.unique_lost,
            "repairs {} > 2 x unique lost {} {}",
            o.repairs_sent,
            o.unique_lost,
            rerun(&s)
        );
    }
}

#[test]
fn golden_summary_table_is_unchanged() {
    let mut table = String::from("seed  loss   delivered  naks_sent  repairs  worst_delay_ms\n");
    for seed in [1u64, 2, 3] {
        for loss in [0.0, 0.01, 0.05, 0.20] {
            let s = Scenario::new("golden_summary_table_is_unchanged", seed, 4, &[loss], 2000);
            let o = run(&s).unwrap_or_else(|e| panic!("{e}"));
            let _ = writeln!(
                table,
                "{seed:<5} {:<6} {:<10} {:<10} {:<8} {:.1}",
                format!("{:.0}%", loss * 100.0),
                o.delivered.iter().sum::<usize>(),
                o.naks_sent,
                o.repairs_sent,
                o.worst_delay.as_secs_f64() * 1000.0
            );
        }
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/sim_summary.txt");
    if std::env::var("UPDATE_GOLDEN").is_ok() || !std::path::Path::new(path).exists() {
        std::fs::write(path, &table).unwrap();
        eprintln!("wrote {path}");
        return;
    }
    let golden = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        golden, table,
        "simulation behaviour changed: review, then rerun with UPDATE_GOLDEN=1"
    );
}

#[test]
fn receiver_cut_off_past_the_window_gets_a_gap_not_a_hang() {
    let start = Instant::now();
    let cfg = GroupConfig {
        retransmit_window_bytes: 64 * 1024,
        flow_window_bytes: 32 * 1024,
        liveness_timeout: Duration::from_millis(500),
        ..GroupConfig::default()
    };
    let mut sim = Sim::new(99, start);
    let src = sim.add_node(cfg.clone());
    let r1 = sim.add_node(cfg.clone());
    let r2 = sim.add_node(cfg.clone());
    sim.run_for(Duration::from_millis(20));
    let publish = |sim: &mut Sim, from: u64, n: u64| {
        let mut o = from;
        while o < from + n {
            let now = sim.now();
            match sim.node(src).publish(
                now,
                castlog::proto::sim::GROUP,
                "t",
                Offset(o),
                0,
                b"",
                &[7u8; 500],
            ) {
                Ok(_) => o += 1,
                Err(_) => {
                    sim.node(src).flush(now);
                    sim.pump(src);
                    sim.run_for(Duration::from_millis(1));
                }
            }
        }
        let now = sim.now();
        sim.node(src).flush(now);
        sim.pump(src);
    };
    publish(&mut sim, 0, 100);
    sim.run_for(Duration::from_millis(100));
    // Cut r1 off entirely, longer than the liveness timeout, while far more
    // than the window is sent.
    sim.set_inbound(
        r1,
        Link {
            loss: 1.0,
            ..Link::default()
        },
    );
    sim.set_link(
        r1,
        src,
        Link {
            loss: 1.0,
            ..Link::default()
        },
    );
    publish(&mut sim, 100, 1000);
    sim.run_for(Duration::from_secs(1));
    sim.set_inbound(r1, Link::default());
    sim.set_link(r1, src, Link::default());
    publish(&mut sim, 1100, 50);
    sim.run_for(Duration::from_secs(2));
    let ev1 = sim.take_events(r1);
    let gaps = ev1
        .iter()
        .filter(|(_, e)| matches!(e, Event::Gap { .. }))
        .count();
    let last = delivered_offsets(&ev1).max();
    assert!(gaps >= 1, "no gap event for the cut-off receiver");
    assert_eq!(
        last,
        Some(1149),
        "the cut-off receiver must go on to the live stream"
    );
    assert!(sim.node(r1).stats().unrecoverable_received >= 1 || sim.node(r1).stats().seqs_lost > 0);
    let ev2 = sim.take_events(r2);
    let n2 = delivered_offsets(&ev2).count();
    assert_eq!(n2, 1150, "the healthy receiver gets everything");
}

#[test]
fn restarted_source_is_a_new_session_not_confused_with_the_old() {
    let start = Instant::now();
    let cfg = GroupConfig::default();
    let mut sim = Sim::new(5, start);
    let src = sim.add_node(cfg.clone());
    let r = sim.add_node(cfg.clone());
    sim.run_for(Duration::from_millis(20));
    for o in 0..50 {
        let now = sim.now();
        sim.node(src)
            .publish(
                now,
                castlog::proto::sim::GROUP,
                "t",
                Offset(o),
                0,
                b"",
                b"before",
            )
            .unwrap();
    }
    let now = sim.now();
    sim.node(src).flush(now);
    sim.pump(src);
    sim.run_for(Duration::from_millis(50));
    sim.restart_node(src, cfg);
    sim.run_for(Duration::from_millis(20));
    for o in 50..80 {
        let now = sim.now();
        sim.node(src)
            .publish(
                now,
                castlog::proto::sim::GROUP,
                "t",
                Offset(o),
                0,
                b"",
                b"after",
            )
            .unwrap();
    }
    let now = sim.now();
    sim.node(src).flush(now);
    sim.pump(src);
    sim.run_for(Duration::from_millis(100));
    let ev = sim.take_events(r);
    let replaced = ev
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                Event::SourceUp {
                    replaced: Some(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(
        replaced, 1,
        "the restart is recognised as a new session replacing the old"
    );
    let offsets: Vec<u64> = delivered_offsets(&ev).collect();
    assert_eq!(offsets, (0..80).collect::<Vec<_>>());
}

#[test]
fn silent_source_is_reported_gone() {
    let start = Instant::now();
    let cfg = GroupConfig {
        liveness_timeout: Duration::from_millis(300),
        ..GroupConfig::default()
    };
    let mut sim = Sim::new(6, start);
    let src = sim.add_node(cfg.clone());
    let r = sim.add_node(cfg);
    sim.run_for(Duration::from_millis(50));
    sim.set_link(
        src,
        r,
        Link {
            loss: 1.0,
            ..Link::default()
        },
    );
    sim.run_for(Duration::from_secs(1));
    let ev = sim.take_events(r);
    assert!(ev
        .iter()
        .any(|(_, e)| matches!(e, Event::SourceDown { .. })));
    let evs = sim.take_events(src);
    assert!(evs
        .iter()
        .any(|(_, e)| matches!(e, Event::ReceiverUp { .. })));
}

#[test]
fn garbage_datagrams_are_counted_and_dropped() {
    let start = Instant::now();
    let mut sim = Sim::new(8, start);
    let _src = sim.add_node(GroupConfig::default());
    let r = sim.add_node(GroupConfig::default());
    let mut rng = Rng::from_seed(3);
    for _ in 0..1000 {
        let len = rng.below(200) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u32() as u8).collect();
        sim.inject(r, &bytes);
    }
    assert_eq!(sim.node(r).stats().datagrams_malformed, 1000);
}

/// Offsets of every delivered record, in delivery order.
fn delivered_offsets(events: &[(Instant, Event)]) -> impl Iterator<Item = u64> + '_ {
    events.iter().flat_map(|(_, e)| match e {
        Event::Deliver { records, .. } => records.iter().map(|r| r.offset.0).collect(),
        _ => Vec::new(),
    })
}
