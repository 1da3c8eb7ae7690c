//! JSON encoding: one update, and a batch frame built from ready fragments.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickwire::codec::json::encode_update;
use tickwire::fanout::{Encoded, Item, build_frames};
use tickwire::feed::simulator::{DEFAULT_UNIVERSE, Simulator};
use tickwire::model::{Channel, Event, InstrumentId, Instruments, Payload};

fn sample_events() -> (Instruments, Vec<Event>) {
    let mut instruments = Instruments::new();
    let mut sim = Simulator::new(DEFAULT_UNIVERSE, &mut instruments, 1).unwrap();
    let mut events = Vec::new();
    while events.len() < 10_000 {
        sim.step(1_700_000_000_000_000_000, &mut events);
    }
    for (seq, e) in events.iter_mut().enumerate() {
        e.seq = seq as u64 + 1;
        e.ts_send = e.ts_recv + 1_000;
    }
    (instruments, events)
}

fn encode(c: &mut Criterion) {
    let (instruments, events) = sample_events();
    let mut group = c.benchmark_group("json_encode_update");
    for (name, pick) in [
        ("quote", (|p: &Payload| matches!(p, Payload::Quote(_))) as fn(&Payload) -> bool),
        ("trade", |p| matches!(p, Payload::Trade(_))),
        ("book_delta", |p| matches!(p, Payload::Book(_))),
    ] {
        let event = events.iter().find(|e| pick(&e.payload)).unwrap().clone();
        let inst = instruments.get(event.instrument);
        let mut buf = Vec::with_capacity(256);
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                encode_update(&mut buf, inst, black_box(&event));
                black_box(buf.len())
            })
        });
    }
    group.finish();

    // A batch of 100 updates: joining pre-encoded fragments versus encoding afresh.
    let batch: Vec<&Event> = events.iter().take(100).collect();
    let items: Vec<Item> = batch
        .iter()
        .map(|e| {
            let mut buf = Vec::new();
            encode_update(&mut buf, instruments.get(e.instrument), e);
            Item::Update(Arc::new(Encoded {
                instrument: e.instrument,
                channel: e.channel(),
                seq: e.seq,
                json: Bytes::from(buf),
            }))
        })
        .collect();
    let mut group = c.benchmark_group("json_batch_100");
    group.throughput(Throughput::Elements(100));
    group.bench_function("from_fragments", |b| {
        let mut frames = Vec::new();
        b.iter(|| {
            frames.clear();
            build_frames(black_box(&items), 256 << 10, &mut frames);
            black_box(frames.len())
        })
    });
    group.bench_function("encode_afresh", |b| {
        let mut out = Vec::with_capacity(32 << 10);
        b.iter(|| {
            out.clear();
            out.extend_from_slice(tickwire::codec::json::BATCH_OPEN);
            for (i, e) in batch.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                encode_update(&mut out, instruments.get(e.instrument), e);
            }
            out.extend_from_slice(tickwire::codec::json::BATCH_CLOSE);
            black_box(out.len())
        })
    });
    group.finish();
    let _ = (Channel::Quotes, InstrumentId(0));
}

criterion_group!(benches, encode);
criterion_main!(benches);
