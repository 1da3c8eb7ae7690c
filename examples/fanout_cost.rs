//! The per-event fan-out cost, for counting instructions under callgrind:
//! `fanout_cost SUBSCRIBERS EVENTS` subscribes SUBSCRIBERS JSON outboxes to one
//! instrument's quotes and trades, then publishes EVENTS simulator events of
//! that instrument. `benches/instructions.sh` runs it under
//! `valgrind --tool=callgrind --toggle-collect=…publish…`, so only the publishing
//! is counted, and compares with `benches/baseline-instructions.json`.

use std::sync::Arc;

use tickwire::book::Engine;
use tickwire::codec::{Delivery, Format};
use tickwire::fanout::{Fanout, OutboxConfig};
use tickwire::feed::simulator::{DEFAULT_UNIVERSE, Simulator};
use tickwire::model::{Channel, Instruments, Payload};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("SUBSCRIBERS EVENTS as numbers"));
    let (subscribers, count) = (args.next().unwrap_or(1_000), args.next().unwrap_or(50));
    let mut instruments = Instruments::new();
    let mut sim = Simulator::new(DEFAULT_UNIVERSE, &mut instruments, 1).expect("the simulator's universe");
    let instruments = Arc::new(instruments);
    let mut engine = Engine::new(&instruments, 20);
    let fanout = Fanout::new(instruments.clone(), engine.reader(), OutboxConfig::default());
    for mut e in sim.initial_events(1) {
        engine.apply(&mut e).expect("initial book");
    }
    let mut events = Vec::new();
    while events.len() < count {
        let mut batch = Vec::new();
        sim.step(1, &mut batch);
        events.extend(batch.into_iter().filter(|e| e.instrument.0 == 0 && !matches!(e.payload, Payload::Book(_))));
    }
    events.truncate(count);
    let id = events[0].instrument;
    let outboxes: Vec<_> = (0..subscribers).map(|_| fanout.outbox(Format::Json)).collect();
    for outbox in &outboxes {
        fanout.subscribe(outbox, id, Channel::Quotes, None, Delivery::SnapshotOnLag);
        fanout.subscribe(outbox, id, Channel::Trades, None, Delivery::SnapshotOnLag);
    }
    // Under callgrind with instrumentation off until here (the setup is slow to
    // simulate), the guard script switches it on, then tells us to go on.
    if std::env::var_os("FANOUT_COST_WAIT").is_some() {
        println!("ready");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).expect("the go-ahead on stdin");
    }
    // Queues stay far below any slow-consumer bound over a few events, so the
    // writers need not drain (under callgrind, draining would cost minutes).
    let mut delivered = 0;
    for mut event in events {
        engine.apply(&mut event).expect("a simulator event");
        delivered += publish(&fanout, &event);
    }
    assert_eq!(delivered, count * subscribers, "every subscriber was offered every event");
    println!("{subscribers} subscribers, {count} events published");
}

/// The counted part (callgrind's `--toggle-collect` names this function).
#[inline(never)]
fn publish(fanout: &Fanout, event: &tickwire::model::Event) -> usize {
    fanout.publish(event)
}
