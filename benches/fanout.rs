//! Fan-out: one event into the outboxes of 10,000 subscribers.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickwire::book::Engine;
use tickwire::codec::{Delivery, Format};
use tickwire::fanout::{Fanout, OutboxConfig};
use tickwire::feed::simulator::{DEFAULT_UNIVERSE, Simulator};
use tickwire::model::{Channel, Instruments, Payload};

fn fanout(c: &mut Criterion) {
    let mut instruments = Instruments::new();
    let mut sim = Simulator::new(DEFAULT_UNIVERSE, &mut instruments, 1).unwrap();
    let instruments = Arc::new(instruments);
    let mut engine = Engine::new(&instruments, 20);
    let fanout = Fanout::new(instruments.clone(), engine.reader(), OutboxConfig::default());
    for mut e in sim.initial_events(1) {
        engine.apply(&mut e).unwrap();
    }
    // Quotes and trades of one instrument, as the simulator makes them.
    let mut events = Vec::new();
    while events.len() < 4096 {
        let mut batch = Vec::new();
        sim.step(1, &mut batch);
        events.extend(batch.into_iter().filter(|e| e.instrument.0 == 0 && !matches!(e.payload, Payload::Book(_))));
    }
    let id = events[0].instrument;

    let mut group = c.benchmark_group("fanout_publish");
    for subscribers in [1_000usize, 10_000] {
        let outboxes: Vec<_> = (0..subscribers).map(|_| fanout.outbox(Format::Json)).collect();
        for outbox in &outboxes {
            fanout.subscribe(outbox, id, Channel::Quotes, None, Delivery::SnapshotOnLag);
            fanout.subscribe(outbox, id, Channel::Trades, None, Delivery::SnapshotOnLag);
        }
        let mut drained = Vec::new();
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_function(format!("one_event_to_{subscribers}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let mut event = events[i as usize % events.len()].clone();
                    engine.apply(&mut event).unwrap();
                    let start = Instant::now();
                    black_box(fanout.publish(&event));
                    total += start.elapsed();
                    // Writers drain between events (not timed), as live sessions do.
                    for outbox in &outboxes {
                        drained.clear();
                        fanout.drain(outbox, &mut drained);
                    }
                }
                total
            })
        });
        for outbox in &outboxes {
            fanout.detach(outbox);
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(4));
    targets = fanout
}
criterion_main!(benches);
