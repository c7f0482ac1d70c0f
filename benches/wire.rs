//! Encoding and decoding one full batched DATA datagram (1400-byte MTU) of
//! 64-byte and 1 KiB records: the per-datagram cost of `wire` on the hot path.
//!
//! Encode = write the records into a batch buffer (`RecordRepr::emit`) and
//! emit the frame (`FrameRepr::emit`: copy, validation, CRC). Decode =
//! `FrameRepr::parse` (header checks, CRC, batch validation) and iterating the
//! records. Throughput is in records; bytes per second follow from the frame
//! sizes printed at the start.
//!
//! Run: `cargo bench --bench wire`.

use castlog::wire::{
    records_capacity, Body, DataPayload, DataRepr, Flags, FrameRepr, NodeId, Offset, RecordRepr,
    Seq, SessionId, TopicId,
};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

const MTU: usize = 1400;

/// As many records of `value_len` bytes as fit in one datagram.
fn records(value: &[u8]) -> Vec<RecordRepr<'_>> {
    let one = RecordRepr {
        topic: TopicId(1),
        offset: Offset(0),
        timestamp_ms: 1_764_000_000_000,
        key: b"",
        value,
    };
    let n = records_capacity(MTU) / one.buffer_len();
    (0..n as u64)
        .map(|i| RecordRepr {
            offset: Offset(i),
            ..one
        })
        .collect()
}

fn encode(recs: &[RecordRepr<'_>], batch: &mut Vec<u8>, out: &mut [u8]) -> usize {
    batch.clear();
    for r in recs {
        r.emit_to_vec(batch).unwrap();
    }
    let repr = FrameRepr::new(
        NodeId(7),
        SessionId(9),
        Flags::default(),
        Body::Data(DataRepr {
            seq: Seq(12345),
            payload: DataPayload::Records {
                count: recs.len() as u16,
                bytes: batch,
            },
        }),
    );
    repr.emit(out).unwrap()
}

fn bench_data(c: &mut Criterion) {
    let mut group = c.benchmark_group("data_frame");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for value_len in [64usize, 1024] {
        let value = vec![0xabu8; value_len];
        let recs = records(&value);
        let mut batch = Vec::with_capacity(MTU);
        let mut out = vec![0u8; MTU];
        let len = encode(&recs, &mut batch, &mut out);
        let frame = out[..len].to_vec();
        eprintln!(
            "value {value_len} B: {} records per frame, frame {len} B",
            recs.len()
        );
        group.throughput(Throughput::Elements(recs.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode", value_len), &recs, |b, recs| {
            b.iter(|| encode(black_box(recs), &mut batch, &mut out))
        });
        group.bench_with_input(BenchmarkId::new("decode", value_len), &frame, |b, f| {
            b.iter(|| {
                let repr = FrameRepr::parse(black_box(f)).unwrap();
                let mut sum = 0usize;
                if let Body::Data(d) = &repr.body {
                    for r in d.records() {
                        sum += r.value.len();
                    }
                }
                sum
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_data);
criterion_main!(benches);
