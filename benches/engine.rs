//! The engine task's per-event work: sequencing, the L2 book, live candles, and
//! publishing into the fan-out (ring and per-format encoding for nobody: the
//! common case of an instrument no client watches), over simulator events in
//! batches of 64, as the engine task receives them; and the same with the
//! write-ahead journal appended before each batch is published.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickwire::book::Engine;
use tickwire::fanout::{Fanout, OutboxConfig};
use tickwire::feed::simulator::{DEFAULT_UNIVERSE, Simulator};
use tickwire::model::{Event, Instruments};
use tickwire::store::journal::{self, JournalConfig};

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
    // The same, with each batch appended to the write-ahead journal before it is
    // published, as the engine task does when it records history: the cost the
    // journal adds to the hot path (one encode and one `write` per batch).
    group.bench_function("apply_journal_and_publish_64k_events", |b| {
        b.iter_batched(
            || {
                let mut engine = Engine::new(&instruments, 20);
                for mut e in initial.clone() {
                    engine.apply(&mut e).unwrap();
                }
                let fanout = Fanout::new(instruments.clone(), engine.reader(), OutboxConfig::default());
                let dir = ScratchDir::new();
                let config = JournalConfig { cap_bytes: 1 << 40, segment_bytes: 16 << 20 };
                let (appender, reader, _) = journal::open(&dir.0, config).unwrap();
                (engine, fanout, appender, reader, dir, events.clone())
            },
            |(mut engine, fanout, mut appender, reader, dir, events)| {
                let mut derived = Vec::new();
                let mut wake = Vec::new();
                let mut sequenced = Vec::with_capacity(BATCH);
                for batch in events.chunks(BATCH) {
                    sequenced.clear();
                    for event in batch {
                        let mut event = event.clone();
                        if engine.apply(&mut event).is_ok() {
                            sequenced.push(event);
                        }
                    }
                    appender.append(&sequenced, |id| id.0).unwrap();
                    for event in &sequenced {
                        fanout.publish_deferred(event, &mut wake);
                    }
                    engine.drain_candles(&mut derived);
                    for event in derived.drain(..) {
                        fanout.publish_deferred(&event, &mut wake);
                    }
                }
                (engine, fanout, appender, reader, dir)
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// A journal directory removed when dropped.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(std::env::temp_dir().join(format!("tickwire-bench-journal-{}-{n}", std::process::id())))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(6));
    targets = engine
}
criterion_main!(benches);
