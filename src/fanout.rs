//! Subscriptions, per-connection outboxes, and batching.
//!
//! The engine task calls [`Fanout::publish`] for every sequenced event. The event is
//! encoded once into an [`Encoded`] fragment, and a reference to it is pushed into
//! the [`Outbox`] of every connection subscribed to its instrument and channel. The
//! subscriber list of each (instrument, channel) is an `arc-swap`ped vector: the
//! publisher reads it without a lock; subscribe and unsubscribe copy it.
//!
//! Each connection's writer waits on its outbox, takes everything queued in one
//! [`Fanout::drain`], turns it into as few frames as possible ([`build_frames`]) and
//! writes them at once. While a write is in flight the outbox gathers: batches grow
//! under load and no timer ever delays an update at low load.
//!
//! Slow consumers are bounded ([`OutboxConfig`]). Past `conflate_after` queued
//! items, a quote replaces the queued quote of the same instrument (its sequence is
//! skipped by design) and a book delta is dropped in favour of a fresh book snapshot
//! taken when the writer next drains. Trades are never conflated: past
//! `max_queued`, the policy either drops them and announces the exact range with a
//! `gap` message, or closes the connection with code 4008. Every such decision is
//! counted in a metric.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use tokio::sync::Notify;

use crate::book::StateReader;
use crate::codec::close;
use crate::codec::json::{self, GapReason};
use crate::model::{Channel, Event, InstrumentId, Instruments, Payload};

/// What to do with a client whose outbox is full of trades it has not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SlowConsumerPolicy {
    /// Drop trades and tell the client exactly which sequences it lost.
    Gap,
    /// Close the connection with code 4008.
    Close,
}

/// Bounds of one connection's outbox.
#[derive(Debug, Clone, Copy)]
pub struct OutboxConfig {
    /// Queued items past which trades are dropped (or the client closed).
    pub max_queued: usize,
    /// Queued items past which quotes are conflated and books resnapshotted.
    pub conflate_after: usize,
    pub slow_consumer: SlowConsumerPolicy,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { max_queued: 8192, conflate_after: 1024, slow_consumer: SlowConsumerPolicy::Gap }
    }
}

/// One event, encoded once and shared by every subscriber.
#[derive(Debug)]
pub struct Encoded {
    pub instrument: InstrumentId,
    pub channel: Channel,
    pub seq: u64,
    /// The update object, ready to go inside a JSON batch.
    pub json: Bytes,
}

/// An entry of an outbox.
#[derive(Debug, Clone)]
pub enum Item {
    /// An update that goes into a batch frame.
    Update(Arc<Encoded>),
    /// A complete message (snapshot, gap, error, pong) sent as its own frame.
    Message(Bytes),
    /// A fresh book snapshot, taken when the writer drains (slow consumer).
    Resnapshot(InstrumentId),
}

#[derive(Debug, Default)]
struct SubState {
    /// Highest sequence queued (or covered by a snapshot) for this subscription.
    last_seq: u64,
    /// Where this subscription's quote sits in the queue (drain epoch, index).
    queued_quote: Option<(u64, usize)>,
    /// A book resnapshot is queued; deltas are dropped until it is taken.
    resnapshot_pending: bool,
    /// Trades dropped and not yet announced (inclusive range).
    gap: Option<(u64, u64)>,
}

#[derive(Debug, Default)]
struct OutboxInner {
    queue: Vec<Item>,
    /// Increments at each drain, so that queue indices from before are ignored.
    epoch: u64,
    subs: FxHashMap<(InstrumentId, Channel), SubState>,
    has_gaps: bool,
    close: Option<(u16, &'static str)>,
}

/// One connection's queue of pending items, filled by the engine and emptied by
/// the connection's writer.
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<OutboxInner>,
    wake: Notify,
    config: OutboxConfig,
}

impl Outbox {
    /// Waits until something is queued or a close is requested.
    pub async fn ready(&self) {
        self.wake.notified().await;
    }

    /// Asks the writer to close the connection with `code`; later pushes are ignored.
    pub fn request_close(&self, code: u16, reason: &'static str) {
        let mut inner = self.inner.lock();
        if inner.close.is_none() {
            inner.close = Some((code, reason));
        }
        drop(inner);
        self.wake.notify_one();
    }

    /// Queues a complete message (snapshot, error, pong…) behind everything queued.
    pub fn push_message(&self, message: Bytes) {
        let mut inner = self.inner.lock();
        inner.queue.push(Item::Message(message));
        let first = inner.queue.len() == 1;
        drop(inner);
        if first {
            self.wake.notify_one();
        }
    }

    /// Number of (instrument, channel) subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.inner.lock().subs.len()
    }

    /// Number of queued items (for tests and diagnostics).
    pub fn queued(&self) -> usize {
        self.inner.lock().queue.len()
    }
}

/// Counters of fan-out decisions, also exported as metrics.
#[derive(Debug, Default)]
pub struct FanoutStats {
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub conflated: AtomicU64,
    pub dropped_trades: AtomicU64,
    pub resnapshots: AtomicU64,
    pub slow_consumer_closes: AtomicU64,
}

/// The subscription registry and publisher.
pub struct Fanout {
    instruments: Arc<Instruments>,
    state: StateReader,
    /// Subscribers per (instrument, channel), at `instrument * Channel::COUNT + channel`.
    slots: Box<[ArcSwap<Vec<Arc<Outbox>>>]>,
    config: OutboxConfig,
    pub stats: FanoutStats,
}

impl Fanout {
    pub fn new(instruments: Arc<Instruments>, state: StateReader, config: OutboxConfig) -> Self {
        let slots = (0..instruments.len() * Channel::COUNT).map(|_| ArcSwap::from_pointee(Vec::new())).collect();
        Self { instruments, state, slots, config, stats: FanoutStats::default() }
    }

    pub fn instruments(&self) -> &Arc<Instruments> {
        &self.instruments
    }

    pub fn state(&self) -> &StateReader {
        &self.state
    }

    fn slot(&self, id: InstrumentId, channel: Channel) -> &ArcSwap<Vec<Arc<Outbox>>> {
        &self.slots[id.index() * Channel::COUNT + channel.index()]
    }

    /// A new, empty outbox for a connection.
    pub fn outbox(&self) -> Arc<Outbox> {
        Arc::new(Outbox { inner: Mutex::default(), wake: Notify::new(), config: self.config })
    }

    /// Number of subscribers of one instrument and channel.
    pub fn subscribers(&self, id: InstrumentId, channel: Channel) -> usize {
        self.slot(id, channel).load().len()
    }

    /// Encodes a sequenced event once and queues it for every subscriber.
    /// Returns the number of outboxes it was offered to.
    pub fn publish(&self, event: &Event) -> usize {
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        let subscribers = self.slot(event.instrument, event.channel()).load();
        if subscribers.is_empty() {
            return 0;
        }
        if let Payload::BookReset(_) = event.payload {
            let mut invalidated = Vec::with_capacity(96);
            json::encode_book_invalidated(&mut invalidated, &self.instruments.get(event.instrument).symbol, event.seq);
            let (_, snapshot) = self.snapshot_message(event.instrument, Channel::Book);
            let messages = [Bytes::from(invalidated), snapshot];
            for outbox in subscribers.iter() {
                self.offer_reset(outbox, event, &messages);
            }
            return subscribers.len();
        }
        let mut buf = Vec::with_capacity(192);
        json::encode_update(&mut buf, self.instruments.get(event.instrument), event);
        let encoded = Arc::new(Encoded {
            instrument: event.instrument,
            channel: event.channel(),
            seq: event.seq,
            json: Bytes::from(buf),
        });
        for outbox in subscribers.iter() {
            self.offer(outbox, &encoded);
        }
        self.stats.delivered.fetch_add(subscribers.len() as u64, Ordering::Relaxed);
        subscribers.len()
    }

    fn offer(&self, outbox: &Outbox, encoded: &Arc<Encoded>) {
        let mut guard = outbox.inner.lock();
        let OutboxInner { queue, epoch, subs, has_gaps, close } = &mut *guard;
        if close.is_some() {
            return;
        }
        let Some(sub) = subs.get_mut(&(encoded.instrument, encoded.channel)) else {
            return;
        };
        if encoded.seq <= sub.last_seq {
            return; // already covered by the snapshot this subscription started from
        }
        let previous = sub.last_seq;
        sub.last_seq = encoded.seq;
        let len = queue.len();
        let config = &outbox.config;
        match encoded.channel {
            Channel::Quotes => {
                if len >= config.conflate_after
                    && let Some((at_epoch, index)) = sub.queued_quote
                    && at_epoch == *epoch
                {
                    queue[index] = Item::Update(encoded.clone());
                    self.stats.conflated.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                sub.queued_quote = Some((*epoch, len));
                queue.push(Item::Update(encoded.clone()));
            }
            Channel::Book => {
                if sub.resnapshot_pending {
                    self.stats.conflated.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if len >= config.conflate_after {
                    sub.resnapshot_pending = true;
                    self.stats.resnapshots.fetch_add(1, Ordering::Relaxed);
                    queue.push(Item::Resnapshot(encoded.instrument));
                } else {
                    queue.push(Item::Update(encoded.clone()));
                }
            }
            Channel::Trades => {
                if len >= config.max_queued {
                    match config.slow_consumer {
                        SlowConsumerPolicy::Gap => {
                            let from = sub.gap.map_or(previous + 1, |(from, _)| from);
                            sub.gap = Some((from, encoded.seq));
                            *has_gaps = true;
                            self.stats.dropped_trades.fetch_add(1, Ordering::Relaxed);
                        }
                        SlowConsumerPolicy::Close => {
                            *close = Some((close::SLOW_CONSUMER, "slow consumer"));
                            self.stats.slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
                            drop(guard);
                            outbox.wake.notify_one();
                        }
                    }
                    return;
                }
                if let Some((from, to)) = sub.gap.take() {
                    queue.push(Item::Message(self.gap_message(encoded.instrument, from, to)));
                }
                queue.push(Item::Update(encoded.clone()));
            }
        }
        if len == 0 {
            drop(guard);
            outbox.wake.notify_one();
        }
    }

    /// A resynchronised book: the client's copy is wrong, so it gets a
    /// `book_invalidated` message and the fresh snapshot, whatever its lag.
    fn offer_reset(&self, outbox: &Outbox, event: &Event, messages: &[Bytes; 2]) {
        let mut inner = outbox.inner.lock();
        if inner.close.is_some() {
            return;
        }
        let Some(sub) = inner.subs.get_mut(&(event.instrument, Channel::Book)) else {
            return;
        };
        if event.seq <= sub.last_seq {
            return;
        }
        sub.last_seq = event.seq;
        sub.resnapshot_pending = false;
        let first = inner.queue.is_empty();
        inner.queue.retain(|item| !matches!(item, Item::Resnapshot(id) if *id == event.instrument));
        inner.queue.extend(messages.iter().cloned().map(Item::Message));
        drop(inner);
        if first {
            outbox.wake.notify_one();
        }
    }

    fn gap_message(&self, id: InstrumentId, from: u64, to: u64) -> Bytes {
        let mut out = Vec::with_capacity(128);
        let symbol = &self.instruments.get(id).symbol;
        json::encode_gap(&mut out, symbol, Channel::Trades, from, to, GapReason::SlowConsumer);
        Bytes::from(out)
    }

    fn snapshot_message(&self, id: InstrumentId, channel: Channel) -> (u64, Bytes) {
        let state = self.state.load(id);
        let mut out = Vec::with_capacity(256);
        json::encode_snapshot(&mut out, self.instruments.get(id), channel, &state);
        let seq = match channel {
            Channel::Book => state.book.seq,
            other => state.seqs[other.index()],
        };
        (seq, Bytes::from(out))
    }

    /// Subscribes `outbox` to one instrument and channel and queues a snapshot;
    /// deltas after the snapshot's sequence follow it. Subscribing again sends a
    /// fresh snapshot. Returns whether the subscription is new.
    pub fn subscribe(&self, outbox: &Arc<Outbox>, id: InstrumentId, channel: Channel) -> bool {
        // The outbox lock is held across registration and snapshot, so a delta
        // published meanwhile waits and then lands behind the snapshot, and one the
        // snapshot already covers is filtered by its sequence.
        let mut inner = outbox.inner.lock();
        let is_new = !inner.subs.contains_key(&(id, channel));
        if is_new {
            self.slot(id, channel).rcu(|list| {
                let mut next = Vec::with_capacity(list.len() + 1);
                next.extend(list.iter().cloned());
                next.push(outbox.clone());
                next
            });
        }
        let (seq, snapshot) = self.snapshot_message(id, channel);
        inner.subs.insert((id, channel), SubState { last_seq: seq, ..SubState::default() });
        inner.queue.push(Item::Message(snapshot));
        let first = inner.queue.len() == 1;
        drop(inner);
        if first {
            outbox.wake.notify_one();
        }
        is_new
    }

    /// Removes one subscription and whatever of it is still queued.
    pub fn unsubscribe(&self, outbox: &Arc<Outbox>, id: InstrumentId, channel: Channel) -> bool {
        let mut inner = outbox.inner.lock();
        if inner.subs.remove(&(id, channel)).is_none() {
            return false;
        }
        self.remove_from_slot(outbox, id, channel);
        inner.queue.retain(|item| match item {
            Item::Update(e) => (e.instrument, e.channel) != (id, channel),
            Item::Resnapshot(i) => !(channel == Channel::Book && *i == id),
            Item::Message(_) => true,
        });
        // Queue indices moved: forget every remembered quote position.
        inner.epoch += 1;
        true
    }

    fn remove_from_slot(&self, outbox: &Arc<Outbox>, id: InstrumentId, channel: Channel) {
        self.slot(id, channel).rcu(|list| list.iter().filter(|o| !Arc::ptr_eq(o, outbox)).cloned().collect::<Vec<_>>());
    }

    /// Removes every subscription of a closing connection.
    pub fn detach(&self, outbox: &Arc<Outbox>) {
        let mut inner = outbox.inner.lock();
        let keys: Vec<_> = inner.subs.keys().copied().collect();
        for (id, channel) in keys {
            self.remove_from_slot(outbox, id, channel);
        }
        inner.subs.clear();
        inner.queue.clear();
        inner.close.get_or_insert((close::NORMAL, "closed"));
    }

    /// Takes everything queued into `out` (which should be empty), materialising
    /// book resnapshots and pending gap notices. Returns a requested close, if any.
    pub fn drain(&self, outbox: &Outbox, out: &mut Vec<Item>) -> Option<(u16, &'static str)> {
        let mut inner = outbox.inner.lock();
        std::mem::swap(&mut inner.queue, out);
        inner.epoch += 1;
        for item in out.iter_mut() {
            if let Item::Resnapshot(id) = *item {
                let (seq, snapshot) = self.snapshot_message(id, Channel::Book);
                if let Some(sub) = inner.subs.get_mut(&(id, Channel::Book)) {
                    sub.last_seq = sub.last_seq.max(seq);
                    sub.resnapshot_pending = false;
                }
                *item = Item::Message(snapshot);
            }
        }
        if inner.has_gaps {
            inner.has_gaps = false;
            let mut gaps: Vec<_> =
                inner.subs.iter_mut().filter_map(|(key, sub)| sub.gap.take().map(|g| (key.0, g))).collect();
            gaps.sort_unstable_by_key(|(id, _)| *id);
            for (id, (from, to)) in gaps {
                out.push(Item::Message(self.gap_message(id, from, to)));
            }
        }
        inner.close
    }
}

/// Builds the frames for drained items: runs of updates become `batch` frames of at
/// most `max_frame_bytes` (a single larger update still gets its own frame);
/// messages go out as their own frames, in queue order.
pub fn build_frames(items: &[Item], max_frame_bytes: usize, frames: &mut Vec<Bytes>) {
    let mut batch: Vec<u8> = Vec::new();
    let flush = |batch: &mut Vec<u8>, frames: &mut Vec<Bytes>| {
        if !batch.is_empty() {
            batch.extend_from_slice(json::BATCH_CLOSE);
            frames.push(Bytes::from(std::mem::take(batch)));
        }
    };
    for item in items {
        match item {
            Item::Update(encoded) => {
                if !batch.is_empty() && batch.len() + encoded.json.len() + 2 > max_frame_bytes {
                    flush(&mut batch, frames);
                }
                if batch.is_empty() {
                    batch.reserve(json::BATCH_OPEN.len() + encoded.json.len() + 2);
                    batch.extend_from_slice(json::BATCH_OPEN);
                } else {
                    batch.push(b',');
                }
                batch.extend_from_slice(&encoded.json);
            }
            Item::Message(message) => {
                flush(&mut batch, frames);
                frames.push(message.clone());
            }
            Item::Resnapshot(_) => {} // materialised by `drain`
        }
    }
    flush(&mut batch, frames);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Engine;
    use crate::model::{AssetKind, BookDelta, InstrumentSpec, Price, Quote, Side, Size, Trade};

    fn setup(config: OutboxConfig) -> (Engine, Fanout) {
        let mut t = Instruments::new();
        for symbol in ["AAA", "BBB"] {
            t.add(InstrumentSpec {
                symbol: symbol.into(),
                venue: "sim".into(),
                kind: AssetKind::Equity,
                tick_size: Price::parse("0.01").unwrap(),
                lot_size: Size::parse("1").unwrap(),
            })
            .unwrap();
        }
        let engine = Engine::new(&t, 10);
        let fanout = Fanout::new(Arc::new(t), engine.reader(), config);
        (engine, fanout)
    }

    fn quote(px: i64) -> Payload {
        Payload::Quote(Quote {
            bid: Price::from_units(px),
            bid_size: Size(1),
            ask: Price::from_units(px + 1),
            ask_size: Size(1),
        })
    }

    fn trade(id: u64) -> Payload {
        Payload::Trade(Trade { price: Price::from_units(1), size: Size(1), side: Side::Buy, trade_id: id })
    }

    fn emit(engine: &mut Engine, fanout: &Fanout, id: u32, payload: Payload) {
        let mut event = Event::new(InstrumentId(id), 1, 1, payload);
        engine.apply(&mut event).unwrap();
        fanout.publish(&event);
    }

    fn drain_json(fanout: &Fanout, outbox: &Outbox) -> Vec<serde_json::Value> {
        let mut items = Vec::new();
        fanout.drain(outbox, &mut items);
        let mut frames = Vec::new();
        build_frames(&items, 1 << 20, &mut frames);
        frames.iter().map(|f| serde_json::from_slice(f).unwrap()).collect()
    }

    #[test]
    fn snapshot_first_then_deltas_in_one_batch() {
        let (mut engine, fanout) = setup(OutboxConfig::default());
        emit(&mut engine, &fanout, 0, quote(10));
        let outbox = fanout.outbox();
        assert!(fanout.subscribe(&outbox, InstrumentId(0), Channel::Quotes));
        emit(&mut engine, &fanout, 0, quote(11));
        emit(&mut engine, &fanout, 0, quote(12));
        emit(&mut engine, &fanout, 1, quote(50)); // not subscribed
        let frames = drain_json(&fanout, &outbox);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0]["type"], "snapshot");
        assert_eq!(frames[0]["seq"], 1);
        let seqs: Vec<_> =
            frames[1]["updates"].as_array().unwrap().iter().map(|u| u["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, vec![2, 3]);
        assert!(fanout.unsubscribe(&outbox, InstrumentId(0), Channel::Quotes));
        emit(&mut engine, &fanout, 0, quote(13));
        assert!(drain_json(&fanout, &outbox).is_empty());
        assert_eq!(fanout.subscribers(InstrumentId(0), Channel::Quotes), 0);
    }

    #[test]
    fn slow_consumer_quotes_conflate_and_trades_gap() {
        let config = OutboxConfig { max_queued: 8, conflate_after: 4, slow_consumer: SlowConsumerPolicy::Gap };
        let (mut engine, fanout) = setup(config);
        let outbox = fanout.outbox();
        fanout.subscribe(&outbox, InstrumentId(0), Channel::Quotes);
        fanout.subscribe(&outbox, InstrumentId(0), Channel::Trades);
        for i in 0..100 {
            emit(&mut engine, &fanout, 0, quote(10 + i));
            emit(&mut engine, &fanout, 0, trade(i as u64));
        }
        assert!(outbox.queued() <= 8 + 1, "queue stays bounded");
        let frames = drain_json(&fanout, &outbox);
        let updates: Vec<_> = frames
            .iter()
            .filter(|f| f["type"] == "batch")
            .flat_map(|f| f["updates"].as_array().unwrap().clone())
            .collect();
        let last_quote = updates.iter().rfind(|u| u["channel"] == "quotes").unwrap();
        assert_eq!(last_quote["seq"], 100, "the latest quote always survives conflation");
        let trade_seqs: Vec<u64> =
            updates.iter().filter(|u| u["channel"] == "trades").map(|u| u["seq"].as_u64().unwrap()).collect();
        let gap = frames.iter().find(|f| f["type"] == "gap").expect("a gap notice");
        let (from, to) = (gap["from_seq"].as_u64().unwrap(), gap["to_seq"].as_u64().unwrap());
        let mut covered: Vec<u64> = trade_seqs.clone();
        covered.extend(from..=to);
        covered.sort_unstable();
        assert_eq!(covered, (1..=100).collect::<Vec<_>>(), "every trade is delivered or announced missing");
        assert!(fanout.stats.dropped_trades.load(Ordering::Relaxed) > 0);
        assert!(fanout.stats.conflated.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn close_policy_requests_4008() {
        let config = OutboxConfig { max_queued: 4, conflate_after: 2, slow_consumer: SlowConsumerPolicy::Close };
        let (mut engine, fanout) = setup(config);
        let outbox = fanout.outbox();
        fanout.subscribe(&outbox, InstrumentId(0), Channel::Trades);
        for i in 0..10 {
            emit(&mut engine, &fanout, 0, trade(i));
        }
        let mut items = Vec::new();
        assert_eq!(fanout.drain(&outbox, &mut items).map(|c| c.0), Some(close::SLOW_CONSUMER));
    }

    #[test]
    fn lagging_book_gets_a_fresh_snapshot() {
        let config = OutboxConfig { max_queued: 100, conflate_after: 2, slow_consumer: SlowConsumerPolicy::Gap };
        let (mut engine, fanout) = setup(config);
        let outbox = fanout.outbox();
        fanout.subscribe(&outbox, InstrumentId(0), Channel::Book);
        for i in 1..=20 {
            let delta = BookDelta { bids: vec![(Price::from_units(i), Size(i))], asks: vec![] };
            emit(&mut engine, &fanout, 0, Payload::Book(delta));
        }
        let frames = drain_json(&fanout, &outbox);
        let last = frames.last().unwrap();
        assert_eq!(last["type"], "snapshot");
        assert_eq!(last["seq"], 20);
        assert_eq!(last["data"]["bids"].as_array().unwrap().len(), 10);
        emit(&mut engine, &fanout, 0, Payload::Book(BookDelta::default()));
        let frames = drain_json(&fanout, &outbox);
        assert_eq!(frames[0]["updates"][0]["seq"], 21, "deltas continue after the resnapshot");
    }

    #[test]
    fn book_reset_invalidates_then_snapshots() {
        let (mut engine, fanout) = setup(OutboxConfig::default());
        let outbox = fanout.outbox();
        fanout.subscribe(&outbox, InstrumentId(0), Channel::Book);
        let delta = BookDelta { bids: vec![(Price::from_units(10), Size(1))], asks: vec![] };
        emit(&mut engine, &fanout, 0, Payload::Book(delta));
        let reset =
            BookDelta { bids: vec![(Price::from_units(20), Size(2))], asks: vec![(Price::from_units(21), Size(2))] };
        emit(&mut engine, &fanout, 0, Payload::BookReset(reset));
        let frames = drain_json(&fanout, &outbox);
        let kinds: Vec<_> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["snapshot", "batch", "book_invalidated", "snapshot"]);
        assert_eq!(frames[3]["seq"], 2);
        assert_eq!(frames[3]["data"]["bids"][0][0], "20.00");
    }

    #[test]
    fn frames_respect_the_size_cap() {
        let items: Vec<Item> = (0..10)
            .map(|seq| {
                Item::Update(Arc::new(Encoded {
                    instrument: InstrumentId(0),
                    channel: Channel::Quotes,
                    seq,
                    json: Bytes::from(format!("{{\"seq\":{seq}}}")),
                }))
            })
            .collect();
        let mut frames = Vec::new();
        build_frames(&items, 60, &mut frames);
        assert!(frames.len() > 1);
        let total: usize = frames
            .iter()
            .map(|f| serde_json::from_slice::<serde_json::Value>(f).unwrap()["updates"].as_array().unwrap().len())
            .sum();
        assert_eq!(total, 10);
    }
}
