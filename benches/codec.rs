//! Encoding, per format: one update, bytes per update, and a batch frame built
//! from ready fragments versus the same batch encoded afresh.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use tickwire::codec::Format;
use tickwire::codec::proto::pb;
use tickwire::fanout::{Encoded, Item, build_frames};
use tickwire::feed::simulator::{DEFAULT_UNIVERSE, Simulator};
use tickwire::model::{Event, Instruments, Payload};

fn sample_events() -> (Instruments, Vec<Event>) {
    let mut instruments = Instruments::new();
    let mut sim = Simulator::new(DEFAULT_UNIVERSE, &mut instruments, 1).unwrap();
    let mut events = Vec::new();
    while events.len() < 10_000 {
        sim.step(1_763_900_000_000_000_000, &mut events);
    }
    for (seq, e) in events.iter_mut().enumerate() {
        e.seq = seq as u64 + 1;
        // Realistic clocks: received 150 µs after the venue stamped it, published 20 µs later.
        e.ts_recv = e.ts_event + 150_000;
        e.ts_send = e.ts_recv + 20_000;
    }
    (instruments, events)
}

/// Picks one kind of event out of the sample.
type Kind = (&'static str, fn(&Payload) -> bool);

const KINDS: [Kind; 3] = [
    ("quote", |p| matches!(p, Payload::Quote(_))),
    ("trade", |p| matches!(p, Payload::Trade(_))),
    ("book_delta", |p| matches!(p, Payload::Book(_))),
];

fn encode(c: &mut Criterion) {
    let (instruments, events) = sample_events();
    let mut group = c.benchmark_group("encode_update");
    group.throughput(Throughput::Elements(1));
    for format in [Format::Json, Format::Proto] {
        for (name, pick) in KINDS {
            let event = events.iter().find(|e| pick(&e.payload)).unwrap().clone();
            let inst = instruments.get(event.instrument);
            let mut buf = Vec::with_capacity(256);
            format.encode_update(&mut buf, inst, &event);
            println!("bytes_per_update/{format:?}/{name}: {} bytes (in a batch)", buf.len());
            group.bench_function(format!("{format:?}/{name}").to_lowercase(), |b| {
                b.iter(|| {
                    buf.clear();
                    format.encode_update(&mut buf, inst, black_box(&event));
                    black_box(buf.len())
                })
            });
        }
    }
    group.finish();

    // A batch of 100 updates: joining pre-encoded fragments versus encoding afresh.
    let batch: Vec<&Event> = events.iter().take(100).collect();
    let items: Vec<Item> =
        batch.iter().map(|e| Item::Update(Arc::new(Encoded::new(&instruments, e, [true, true])))).collect();
    let mut group = c.benchmark_group("batch_100");
    group.throughput(Throughput::Elements(100));
    for format in [Format::Json, Format::Proto] {
        let mut frames = Vec::new();
        group.bench_function(format!("{format:?}/from_fragments").to_lowercase(), |b| {
            b.iter(|| {
                frames.clear();
                build_frames(black_box(&items), format, 256 << 10, &mut frames);
                black_box(frames.len())
            })
        });
    }
    group.bench_function("json/encode_afresh", |b| {
        let mut out = Vec::with_capacity(32 << 10);
        b.iter(|| {
            out.clear();
            out.extend_from_slice(tickwire::codec::json::BATCH_OPEN);
            for (i, e) in batch.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                Format::Json.encode_update(&mut out, instruments.get(e.instrument), e);
            }
            out.extend_from_slice(tickwire::codec::json::BATCH_CLOSE);
            black_box(out.len())
        })
    });
    group.bench_function("proto/encode_afresh", |b| {
        b.iter(|| {
            let updates =
                batch.iter().map(|e| tickwire::codec::proto::update(instruments.get(e.instrument), e)).collect();
            let message = pb::ServerMessage { kind: Some(pb::server_message::Kind::Batch(pb::Batch { updates })) };
            black_box(message.encode_to_vec().len())
        })
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
