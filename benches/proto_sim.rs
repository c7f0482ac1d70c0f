//! The protocol alone, through the in-memory network: records per second of
//! CPU for one source and one receiver, at 0% and 5% loss. This measures the
//! state machines (batching, gap tracking, NAK/repair, delivery), not a
//! kernel path; `castlog bench` measures end to end.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use castlog::proto::sim::{Link, Sim, GROUP};
use castlog::proto::{Event, GroupConfig, Offset};

fn run(records: u64, size: usize, loss: f64) -> u64 {
    let mut sim = Sim::new(1, Instant::now());
    let src = sim.add_node(GroupConfig::default());
    let rx = sim.add_node(GroupConfig::default());
    sim.set_inbound(
        rx,
        Link {
            loss,
            ..Link::default()
        },
    );
    sim.run_for(Duration::from_millis(5));
    let value = vec![0x5au8; size];
    let mut o = 0;
    let mut delivered = 0;
    while o < records {
        for _ in 0..256 {
            let now = sim.now();
            if o >= records
                || sim
                    .node(src)
                    .publish(now, GROUP, "bench", Offset(o), 0, b"", &value)
                    .is_err()
            {
                break;
            }
            o += 1;
        }
        let now = sim.now();
        sim.node(src).flush(now);
        sim.pump(src);
        sim.run_for(Duration::from_micros(100));
        delivered += sim
            .take_events(rx)
            .iter()
            .map(|(_, e)| match e {
                Event::Deliver { records, .. } => records.len() as u64,
                _ => 0,
            })
            .sum::<u64>();
    }
    while delivered < records {
        sim.run_for(Duration::from_millis(5));
        delivered += sim
            .take_events(rx)
            .iter()
            .map(|(_, e)| match e {
                Event::Deliver { records, .. } => records.len() as u64,
                _ => 0,
            })
            .sum::<u64>();
    }
    delivered
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("proto_sim");
    g.sample_size(10);
    let n = 50_000u64;
    g.throughput(Throughput::Elements(n));
    for (size, loss) in [(64usize, 0.0f64), (64, 0.05), (1024, 0.0), (1024, 0.05)] {
        g.bench_function(format!("{size}B_loss{}pct", (loss * 100.0) as u32), |b| {
            b.iter(|| run(n, size, loss))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
