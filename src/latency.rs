//! Latency histograms for `/metrics`, per leg of an event's way through the
//! server, in Prometheus' histogram form (`_bucket{le=…}`, `_sum`, `_count`).
//!
//! The `metrics` crate's exporter keeps every sample until the next scrape,
//! which at hundreds of thousands of events a second (and no scraper) grows
//! without bound; these keep fixed buckets of atomic counters instead, so a
//! sample costs a bucket search and three relaxed additions, and memory never
//! grows.
//!
//! - `tickwire_exchange_to_receive_seconds{venue}`: the venue's timestamp to
//!   our receipt (`ts_recv - ts_event`), recorded by the engine;
//! - `tickwire_receive_to_send_seconds`: receipt to sequencing (`ts_send -
//!   ts_recv`, the figure every message carries), recorded by the engine;
//! - `tickwire_receive_to_write_seconds{transport}`: receipt to the moment the
//!   update's bytes are handed to the client's socket (the fan-out's queues and
//!   conflation included), recorded once per write of a connection for its
//!   oldest update.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::RwLock;

use crate::model::{Event, Instruments, Nanos};

/// Bucket upper bounds in nanoseconds: 1-2.5-5 steps from 10 µs to 10 s.
const BOUNDS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// One histogram: a count per bucket (the last one is `+Inf`), the sum and
/// the count of samples.
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    pub const fn new() -> Self {
        Self { buckets: [const { AtomicU64::new(0) }; BOUNDS_NS.len() + 1], sum_ns: AtomicU64::new(0) }
    }

    /// Records one sample of `ns` nanoseconds.
    pub fn record(&self, ns: u64) {
        let bucket = BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// The time from `from` to `to` (none when the clocks disagree by more
    /// than a minute either way: a venue clock that is off, not a latency).
    pub fn record_between(&self, from: Nanos, to: Nanos) {
        if from != 0 && to >= from && to - from < 60_000_000_000 {
            self.record(to - from);
        }
    }

    /// Samples recorded so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// Appends this histogram's lines for `name` with `labels` (`key="value"`
    /// pairs, comma-separated, or empty).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            let le = match BOUNDS_NS.get(i) {
                Some(&bound) => format!("{}", bound as f64 / 1e9),
                None => "+Inf".to_owned(),
            };
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_ns.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// A transport that writes updates to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Ws,
    Sse,
    Poll,
    Replay,
}

impl Transport {
    /// The live transports, whose receive->write is a latency.
    const LIVE: [Transport; 3] = [Transport::Ws, Transport::Sse, Transport::Poll];
    pub const ALL: [Transport; 4] = [Transport::Ws, Transport::Sse, Transport::Poll, Transport::Replay];

    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Poll => "poll",
            Transport::Replay => "replay",
        }
    }
}

/// What one transport has written: updates and bytes, since start.
#[derive(Debug)]
pub struct Written {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
}

impl Written {
    const fn new() -> Self {
        Self { messages: AtomicU64::new(0), bytes: AtomicU64::new(0) }
    }

    pub fn add(&self, messages: u64, bytes: u64) {
        self.messages.fetch_add(messages, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }
}

/// Every latency histogram of the process.
pub struct Latencies {
    /// Per venue, in the order venues were first seen.
    exchange_to_receive: RwLock<Vec<(String, &'static Histogram)>>,
    receive_to_send: Histogram,
    receive_to_write: [Histogram; 3],
    written: [Written; 4],
}

/// The process's histograms (one process, one set, as with the `metrics`
/// recorder).
pub static LATENCIES: Latencies = Latencies {
    exchange_to_receive: RwLock::new(Vec::new()),
    receive_to_send: Histogram::new(),
    receive_to_write: [const { Histogram::new() }; 3],
    written: [const { Written::new() }; 4],
};

impl Latencies {
    /// The exchange→receive histogram of `venue`, for the engine to keep per
    /// instrument (looked up once, not per event). Lives for the process.
    pub fn venue(&self, venue: &str) -> &'static Histogram {
        if let Some((_, histogram)) = self.exchange_to_receive.read().iter().find(|(v, _)| v == venue) {
            return histogram;
        }
        let mut venues = self.exchange_to_receive.write();
        if let Some((_, histogram)) = venues.iter().find(|(v, _)| v == venue) {
            return histogram;
        }
        let histogram: &'static Histogram = Box::leak(Box::default());
        venues.push((venue.to_owned(), histogram));
        histogram
    }

    /// Receipt to sequencing, for an event the engine has just stamped.
    pub fn receive_to_send(&self) -> &Histogram {
        &self.receive_to_send
    }

    /// Receipt to the socket, on a live `transport`.
    pub fn receive_to_write(&self, transport: Transport) -> &Histogram {
        &self.receive_to_write[(transport as usize).min(2)]
    }

    /// What `transport` has written.
    pub fn written(&self, transport: Transport) -> &Written {
        &self.written[transport as usize]
    }

    /// The histograms for `/v1/stats`: the bucket bounds in µs, and per leg
    /// the count of each bucket (not cumulative; the last is past 10 s), so a
    /// client can take quantiles over any window from two readings.
    pub fn stats(&self) -> serde_json::Value {
        let counts = |h: &Histogram| -> Vec<u64> { h.buckets.iter().map(|b| b.load(Relaxed)).collect() };
        let mut legs = serde_json::Map::new();
        let mut venues = vec![0u64; BOUNDS_NS.len() + 1];
        for (_, histogram) in self.exchange_to_receive.read().iter() {
            for (total, count) in venues.iter_mut().zip(counts(histogram)) {
                *total += count;
            }
        }
        legs.insert("exchange_to_receive".into(), venues.into());
        legs.insert("receive_to_send".into(), counts(&self.receive_to_send).into());
        for transport in Transport::LIVE {
            legs.insert(
                format!("receive_to_write_{}", transport.name()),
                counts(self.receive_to_write(transport)).into(),
            );
        }
        let bounds_us: Vec<u64> = BOUNDS_NS.iter().map(|ns| ns / 1_000).collect();
        serde_json::json!({ "bounds_us": bounds_us, "legs": legs })
    }

    /// Appends every histogram in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP tickwire_exchange_to_receive_seconds Venue timestamp to receipt by the feed.\n");
        out.push_str("# TYPE tickwire_exchange_to_receive_seconds histogram\n");
        for (venue, histogram) in self.exchange_to_receive.read().iter() {
            histogram.render(out, "tickwire_exchange_to_receive_seconds", &format!("venue=\"{venue}\""));
        }
        out.push_str("# HELP tickwire_receive_to_send_seconds Receipt to sequencing (ts_send - ts_recv).\n");
        out.push_str("# TYPE tickwire_receive_to_send_seconds histogram\n");
        self.receive_to_send.render(out, "tickwire_receive_to_send_seconds", "");
        out.push_str("# HELP tickwire_receive_to_write_seconds Receipt to the bytes handed to the client's socket.\n");
        out.push_str("# TYPE tickwire_receive_to_write_seconds histogram\n");
        for transport in Transport::LIVE {
            let labels = format!("transport=\"{}\"", transport.name());
            self.receive_to_write(transport).render(out, "tickwire_receive_to_write_seconds", &labels);
        }
    }
}

/// The engine's two legs, with each instrument's venue histogram looked up
/// once.
pub struct EngineLatencies {
    venue: Vec<&'static Histogram>,
}

impl EngineLatencies {
    pub fn new(instruments: &Instruments) -> Self {
        Self { venue: instruments.iter().map(|instrument| LATENCIES.venue(&instrument.venue)).collect() }
    }

    /// Records `event`'s exchange->receive and receive->send once it is
    /// sequenced and stamped.
    pub fn record(&self, event: &Event) {
        if let Some(histogram) = self.venue.get(event.instrument.index()) {
            histogram.record_between(event.ts_event, event.ts_recv);
        }
        LATENCIES.receive_to_send.record_between(event.ts_recv, event.ts_send);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_the_first_bucket_that_holds_them() {
        let histogram = Histogram::new();
        histogram.record(10_000); // exactly 10 µs: le="1e-5"
        histogram.record(10_001);
        histogram.record(20_000_000_000); // past 10 s: +Inf only
        let mut out = String::new();
        histogram.render(&mut out, "x", "leg=\"a\"");
        assert!(out.contains("x_bucket{leg=\"a\",le=\"0.00001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{leg=\"a\",le=\"0.000025\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{leg=\"a\",le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{leg=\"a\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{leg=\"a\"} 3\n"), "{out}");
        assert!(out.contains("x_sum{leg=\"a\"} 20.000020001\n"), "{out}");
        assert_eq!(histogram.count(), 3);
    }

    #[test]
    fn clocks_that_disagree_are_not_latencies() {
        let histogram = Histogram::new();
        histogram.record_between(0, 5); // no venue time
        histogram.record_between(10, 5); // venue clock ahead of ours
        histogram.record_between(1, 120_000_000_000); // two minutes
        assert_eq!(histogram.count(), 0);
        histogram.record_between(1_000, 3_000);
        assert_eq!(histogram.count(), 1);
    }

    #[test]
    fn a_venue_has_one_histogram() {
        let a = LATENCIES.venue("test-venue-a");
        let again = LATENCIES.venue("test-venue-a");
        assert!(std::ptr::eq(a, again));
        assert!(!std::ptr::eq(a, LATENCIES.venue("test-venue-b")));
    }
}
