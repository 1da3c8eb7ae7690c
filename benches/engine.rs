//! The engine task's per-event work: sequencing, the L2 book, live candles, and
//! publishing into the fan-out (ring and per-format encoding for nobody: the
//! common case of an instrument no client watches), over simulator events in
//! batches of 64, as the engine task receives them.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickwire::book::Engine;
use tickwire::fanout::{Fanout, OutboxConfig};
use tickwire::feed::simulator::{DEFAULT_UNIVERSE, Simulator};
use tickwire::model::{Event, Instruments};

const BATCH: usize = 64;

fn engine(c: &mut Criterion) {
    let mut instruments = Instruments::new();
    let mut sim = Simulator::new(DEFAULT_UNIVERSE, &mut instruments, 1).unwrap();
    let instruments = Arc::new(instruments);
    let start: u64 = 1_700_000_000_000_000_000;
    let initial = sim.initial_events(start);
    // 64k events, 20 µs of exchange time apart: candles of every width roll over.
    let mut events: Vec<Event> = Vec::new();
    let mut now = start;
    while events.len() < 65_536 {
        now += 20_000;
        sim.step(now, &mut events);
    }

    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("apply_64k_events", |b| {
        b.iter_batched(
            || {
                let mut engine = Engine::new(&instruments, 20);
                for mut e in initial.clone() {
                    engine.apply(&mut e).unwrap();
                }
                (engine, events.clone())
            },
            |(mut engine, events)| {
                let mut derived = Vec::new();
                for batch in events.chunks(BATCH) {
                    for event in batch {
                        let mut event = event.clone();
                        black_box(engine.apply(&mut event).is_ok());
                    }
                    engine.drain_candles(&mut derived);
                    derived.clear();
                }
                engine
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.bench_function("apply_and_publish_64k_events", |b| {
        b.iter_batched(
            || {
                let mut engine = Engine::new(&instruments, 20);
                for mut e in initial.clone() {
                    engine.apply(&mut e).unwrap();
                }
                let fanout = Fanout::new(instruments.clone(), engine.reader(), OutboxConfig::default());
                (engine, fanout, events.clone())
            },
            |(mut engine, fanout, events)| {
                let mut derived = Vec::new();
                let mut wake = Vec::new();
                for batch in events.chunks(BATCH) {
                    for event in batch {
                        let mut event = event.clone();
                        if engine.apply(&mut event).is_ok() {
                            fanout.publish_deferred(&event, &mut wake);
                        }
                    }
                    engine.drain_candles(&mut derived);
                    for event in derived.drain(..) {
                        fanout.publish_deferred(&event, &mut wake);
                    }
                }
                (engine, fanout)
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(6));
    targets = engine
}
criterion_main!(benches);
