//! Subscriptions, per-connection outboxes, batching, and the recent-history ring.
//!
//! The engine task calls [`Fanout::publish`] for every sequenced event. The event
//! goes into its instrument's recent-history ring (for resume), is encoded once per
//! format that has subscribers into an [`Encoded`] fragment, and a reference to it is
//! pushed into the [`Outbox`] of every connection subscribed to its instrument and
//! channel. The subscriber list of each (instrument, channel) is `arc-swap`ped: the
//! publisher reads it without a lock; subscribe and unsubscribe copy it.
//!
//! Each connection's writer waits on its outbox, takes everything queued in one
//! [`Fanout::drain`], turns it into as few frames as possible ([`frames`]) and
//! writes them at once. While a write is in flight the outbox gathers: batches grow
//! under load and no timer ever delays an update at low load.
//!
//! Slow consumers are bounded ([`OutboxConfig`]) according to each subscription's
//! [`Delivery`]:
//! - `snapshot_on_lag` (the default): past `conflate_after` queued items a quote
//!   replaces the queued quote of its instrument (its sequence is skipped by design)
//!   and a book delta gives way to a fresh book snapshot taken at drain; trades are
//!   never conflated: past `max_queued` they are dropped and the exact range is
//!   announced with a `gap` (or the connection is closed with 4008, per server policy);
//! - `full`: nothing is conflated; past `max_queued` the connection is closed with 4008;
//! - `conflate`: quotes and books are held and released (latest value, books as
//!   snapshots) on the connection's conflation tick; trades as `snapshot_on_lag`.
//!
//! Every such decision is counted.

use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use tokio::sync::Notify;

use crate::book::StateReader;
use crate::codec::json::{self, GapReason};
use crate::codec::{Delivery, ErrorCode, Format, RequestError, close, proto};
use crate::latency::Transport;
use crate::model::{Channel, Event, InstrumentId, Instruments, Nanos, Payload, SequenceLine, SinceCheck, now_nanos};

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

/// Depth of the recent-history ring kept per instrument (all channels together).
#[derive(Debug, Clone, Copy)]
pub struct RingConfig {
    /// Most events kept per instrument.
    pub depth: usize,
    /// Events older than this (by `ts_send`) are dropped, in nanoseconds.
    pub max_age_ns: u64,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self { depth: 10_000, max_age_ns: 60_000_000_000 }
    }
}

/// One event, encoded once per format and shared by every subscriber.
#[derive(Debug)]
pub struct Encoded {
    pub instrument: InstrumentId,
    pub channel: Channel,
    pub seq: u64,
    /// A value no later update may replace in a queue (a closed candle's final
    /// value), even where the channel is otherwise conflated.
    pub final_value: bool,
    /// When the event was received (for the receive->write histograms).
    pub ts_recv: Nanos,
    /// The batch fragment per [`Format`] (empty where no subscriber needed it).
    pub fragments: [Bytes; Format::COUNT],
}

impl Encoded {
    /// Encodes `event` in the given formats.
    pub fn new(instruments: &Instruments, event: &Event, formats: [bool; Format::COUNT]) -> Self {
        let inst = instruments.get(event.instrument);
        let mut fragments: [Bytes; Format::COUNT] = Default::default();
        for format in [Format::Json, Format::Proto] {
            if formats[format.index()] {
                let mut buf = Vec::with_capacity(if format == Format::Json { 192 } else { 48 });
                format.encode_update(&mut buf, inst, event);
                fragments[format.index()] = Bytes::from(buf);
            }
        }
        let final_value = matches!(&event.payload, Payload::Candle(c) if c.closed);
        Self {
            instrument: event.instrument,
            channel: event.channel(),
            seq: event.seq,
            final_value,
            ts_recv: event.ts_recv,
            fragments,
        }
    }
}

/// An entry of an outbox.
#[derive(Debug, Clone)]
pub enum Item {
    /// An update that goes into a batch frame.
    Update(Arc<Encoded>),
    /// A complete message (snapshot, gap, error, pong) sent as its own frame.
    Message(Bytes),
    /// A fresh book snapshot, taken when the writer drains (slow consumer, conflation).
    Resnapshot(InstrumentId),
    /// Bytes that are already a whole transport frame (a WebSocket ping or pong).
    Raw(Bytes),
}

#[derive(Debug)]
struct SubState {
    delivery: Delivery,
    /// Highest sequence queued (or covered by a snapshot) for this subscription.
    last_seq: u64,
    /// Where this subscription's quote sits in the queue: (drain epoch + 1,
    /// index). Stored plus one so that the pair has a niche and the option
    /// needs no tag of its own (see `sub_state_stays_small`).
    queued_quote: Option<(NonZeroU64, u32)>,
    /// A book resnapshot is queued; deltas are dropped until it is taken.
    resnapshot_pending: bool,
    /// Trades dropped and not yet announced (inclusive range). Boxed, like
    /// `held`: both are rare, and every offer reads this struct, so it stays
    /// small (one per subscription; see `sub_state_stays_small`).
    gap: Option<Box<(u64, u64)>>,
    /// `conflate`: the latest quote held for the next tick.
    held_quote: Option<Arc<Encoded>>,
    /// `conflate`: the book changed since the last snapshot sent.
    book_dirty: bool,
    /// A resume from stored history is under way: live updates wait here until
    /// the history before them is queued ([`Fanout::hold`]).
    held: Option<Box<Held>>,
}

/// Live updates held back while a resume reads stored history.
#[derive(Debug)]
struct Held {
    /// Sequence of the subscription's channel when the hold began: history must
    /// reach it, the held updates follow it.
    from: u64,
    /// Held updates, in order; all after `from` (`offer` filters by sequence).
    items: Vec<Item>,
    /// More arrived than an outbox may queue: the hold ends in a gap.
    overflowed: bool,
}

impl SubState {
    fn new(delivery: Delivery, last_seq: u64) -> Self {
        Self {
            delivery,
            last_seq,
            queued_quote: None,
            resnapshot_pending: false,
            gap: None,
            held_quote: None,
            book_dirty: false,
            held: None,
        }
    }
}

#[derive(Debug, Default)]
struct OutboxInner {
    queue: Vec<Item>,
    /// Increments at each drain, so that queue indices from before are ignored.
    epoch: u64,
    subs: FxHashMap<(InstrumentId, Channel), SubState>,
    has_gaps: bool,
    /// Shortest conflation interval among this connection's subscriptions.
    conflate_ms: Option<u32>,
    /// A `conflate` subscription was removed or replaced: `conflate_ms` is
    /// recomputed when next read.
    conflate_stale: bool,
    close: Option<(u16, &'static str)>,
}

impl OutboxInner {
    /// A `conflate` subscription makes the writer tick at its interval (the
    /// shortest of the connection's).
    fn note_delivery(&mut self, delivery: Delivery) {
        if let Delivery::Conflate { interval_ms } = delivery {
            self.conflate_ms = Some(self.conflate_ms.map_or(interval_ms, |ms| ms.min(interval_ms)));
        }
    }

    /// Notes that the subscription at `key` goes away or is replaced: if it
    /// was `conflate`, the connection's period may lengthen or end.
    fn forget_delivery(&mut self, key: (InstrumentId, Channel)) {
        if self.subs.get(&key).is_some_and(|sub| matches!(sub.delivery, Delivery::Conflate { .. })) {
            self.conflate_stale = true;
        }
    }

    fn conflate_ms(&mut self) -> Option<u32> {
        if std::mem::take(&mut self.conflate_stale) {
            self.conflate_ms = self
                .subs
                .values()
                .filter_map(|sub| match sub.delivery {
                    Delivery::Conflate { interval_ms } => Some(interval_ms),
                    _ => None,
                })
                .min();
        }
        self.conflate_ms
    }
}

/// One connection's queue of pending items, filled by the engine and emptied by
/// the connection's writer.
pub struct Outbox {
    inner: Mutex<OutboxInner>,
    wake: Notify,
    /// Set when a writer shard, not the connection's task, writes this outbox.
    notifier: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    config: OutboxConfig,
    format: Format,
    /// Which transport the connection is (for the operator's counts).
    transport: Transport,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("format", &self.format).field("sharded", &self.notifier.get().is_some()).finish()
    }
}

impl Outbox {
    /// Waits until something is queued or a close is requested.
    pub async fn ready(&self) {
        self.wake.notified().await;
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Asks the writer to close the connection with `code`; later pushes are ignored.
    pub fn request_close(&self, code: u16, reason: &'static str) {
        let mut inner = self.inner.lock();
        if inner.close.is_none() {
            inner.close = Some((code, reason));
        }
        drop(inner);
        self.signal();
    }

    /// Queues a complete message (snapshot, error, pong…) behind everything queued.
    pub fn push_message(&self, message: Bytes) {
        self.push(Item::Message(message));
    }

    /// Queues bytes that are already a complete transport frame (a WebSocket
    /// ping or pong), sent as they are, in order with everything else.
    pub fn push_raw(&self, frame: Bytes) {
        self.push(Item::Raw(frame));
    }

    /// Queues `item` unless a close was requested (nothing follows a close).
    fn push(&self, item: Item) {
        let mut inner = self.inner.lock();
        if inner.close.is_some() {
            return;
        }
        inner.queue.push(item);
        let first = inner.queue.len() == 1;
        drop(inner);
        if first {
            self.signal();
        }
    }

    /// Routes this outbox's wake-ups to `notify` (a writer shard) instead of the
    /// connection's own task; [`Self::ready`] then only hears [`Self::wake_task`].
    pub fn set_notifier(&self, notify: Box<dyn Fn() + Send + Sync>) {
        let _ = self.notifier.set(notify);
    }

    /// Tells whoever writes this outbox that something is queued or a close is due.
    pub fn signal(&self) {
        match self.notifier.get() {
            Some(notify) => notify(),
            None => self.wake.notify_one(),
        }
    }

    /// [`Self::signal`] when anything is queued.
    pub fn signal_if_queued(&self) {
        if !self.inner.lock().queue.is_empty() {
            self.signal();
        }
    }

    /// Wakes the connection's own task (see [`Self::ready`]).
    pub fn wake_task(&self) {
        self.wake.notify_one();
    }

    /// Whether a close was requested (by the server or for the client).
    pub fn closing(&self) -> bool {
        self.inner.lock().close.is_some()
    }

    /// Number of (instrument, channel) subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.inner.lock().subs.len()
    }

    /// Number of queued items (for tests and diagnostics).
    pub fn queued(&self) -> usize {
        self.inner.lock().queue.len()
    }

    /// The conflation tick this connection's writer should run, if any.
    pub fn conflate_ms(&self) -> Option<u32> {
        self.inner.lock().conflate_ms()
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
    pub resumed: AtomicU64,
    pub resume_gaps: AtomicU64,
}

/// Subscribers of one (instrument, channel), with how many speak each format.
#[derive(Debug, Default)]
struct Subscribers {
    list: Vec<Arc<Outbox>>,
    formats: [usize; Format::COUNT],
    /// A derived channel's events are kept in the ring until this time (ns)
    /// after its last subscriber left: a long-poll is subscribed only while a
    /// request waits, and its next poll resumes from the ring.
    kept_until: Nanos,
}

/// How long a derived channel (candles) stays in the ring after its last
/// subscriber left: longer than a long-poll's longest wait (60 s).
const DERIVED_KEPT_NS: Nanos = 90_000_000_000;

/// How a subscribe that names `since` was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// No `since`: a snapshot.
    Snapshot,
    /// The missed updates (this many) from the recent-history ring.
    Replayed(usize),
    /// The ring no longer held them: a gap and a fresh snapshot.
    Gap { from: u64, to: u64 },
    /// `since` is ahead of the stream (say, the server restarted and its sequences
    /// began again): a `bad_since` error, then a fresh snapshot.
    Ahead { since: u64, current: u64 },
}

/// Where [`Fanout::subscribe_locked`] starts a stream.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// A snapshot, then the updates after it.
    Snapshot,
    /// The updates after `since` from the ring (else a `history_exhausted` gap
    /// and a snapshot); `announce`: a `live` marker naming this run's epoch
    /// follows them (the client comes from stored history or an earlier run).
    After { since: u64, announce: bool },
    /// The client's sequences from `from` on name updates this run never sent:
    /// an `epoch_changed` gap and a snapshot.
    Break { from: u64 },
}

/// Recent events of one instrument, oldest first.
#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<Event>,
    /// Sequence of the last event recorded per channel (kept or since evicted):
    /// tells "nothing missed yet" apart from "the missed updates left the ring".
    last: [u64; Channel::COUNT],
}

/// The subscription registry, the recent-history rings, and the publisher.
/// Where a node that runs no engine gets an instrument's events (a cluster
/// gateway takes them from the bus only while its clients want them).
pub trait EventSource: Send + Sync {
    /// Starts taking `id` if not taken yet; the receiver turns `true` once its
    /// state is current, and a stream may start from it.
    fn want(&self, id: InstrumentId) -> tokio::sync::watch::Receiver<bool>;
}

pub struct Fanout {
    instruments: Arc<Instruments>,
    state: StateReader,
    /// Subscribers per (instrument, channel), at `instrument * Channel::COUNT + channel`.
    slots: Box<[ArcSwap<Subscribers>]>,
    /// Recent events per instrument, oldest first.
    rings: Box<[Mutex<Ring>]>,
    ring: RingConfig,
    config: OutboxConfig,
    /// What this run's sequences mean: its epoch, and where each stream began
    /// (swapped only when a cluster's bus starts a new epoch).
    line: ArcSwap<SequenceLine>,
    /// Where events come from when not from this process's engine (a cluster
    /// gateway): asked for each instrument before a stream starts.
    source: Option<Arc<dyn EventSource>>,
    pub default_delivery: Delivery,
    pub stats: FanoutStats,
}

impl Ring {
    /// Whether the ring holds every update of `channel` after `since`: they start
    /// at `since + 1`, follow one another without a hole, and reach the channel's
    /// last recorded sequence. (Events not recorded yet are still to be published,
    /// and reach a new subscription live.)
    fn continues(&self, channel: Channel, since: u64) -> bool {
        let mut expected = since + 1;
        for event in self.events.iter().filter(|e| e.channel() == channel && e.seq > since) {
            if event.seq != expected {
                return false; // evicted, or (derived channels) not kept while unwatched
            }
            expected += 1;
        }
        expected > self.last[channel.index()]
    }
}

impl Fanout {
    pub fn new(instruments: Arc<Instruments>, state: StateReader, config: OutboxConfig) -> Self {
        Self::with_ring(instruments, state, config, RingConfig::default())
    }

    pub fn with_ring(
        instruments: Arc<Instruments>,
        state: StateReader,
        config: OutboxConfig,
        ring: RingConfig,
    ) -> Self {
        let slots =
            (0..instruments.len() * Channel::COUNT).map(|_| ArcSwap::from_pointee(Subscribers::default())).collect();
        let rings = (0..instruments.len()).map(|_| Mutex::new(Ring::default())).collect();
        let line = SequenceLine::fresh(instruments.len());
        Self {
            instruments,
            state,
            slots,
            rings,
            ring,
            config,
            line: ArcSwap::from_pointee(line),
            source: None,
            default_delivery: Delivery::SnapshotOnLag,
            stats: FanoutStats::default(),
        }
    }

    /// Sets what this run's sequences mean (the engine must continue the same
    /// line): the rings know that each stream's updates up to its base were
    /// published by an earlier run, so a resume below it is not mistaken for
    /// "nothing missed".
    pub fn with_line(mut self, line: SequenceLine) -> Self {
        for (ring, base) in self.rings.iter().zip(line.bases()) {
            ring.lock().last = *base;
        }
        self.line = ArcSwap::from_pointee(line);
        self
    }

    /// Events come from `source` rather than from an engine in this process.
    pub fn with_source(mut self, source: Arc<dyn EventSource>) -> Self {
        self.source = Some(source);
        self
    }

    pub fn source(&self) -> Option<&Arc<dyn EventSource>> {
        self.source.as_ref()
    }

    pub fn line(&self) -> Arc<SequenceLine> {
        self.line.load_full()
    }

    /// A new sequence line (a cluster's bus started a new epoch): every ring is
    /// emptied, since its sequences belong to the old line.
    pub fn replace_line(&self, line: SequenceLine) {
        for (ring, base) in self.rings.iter().zip(line.bases()) {
            let mut ring = ring.lock();
            ring.events.clear();
            ring.last = *base;
        }
        self.line.store(Arc::new(line));
    }

    /// Empties one instrument's ring (a mirror that lets go of it: what it takes
    /// later starts a new stretch).
    pub fn clear_ring(&self, id: InstrumentId) {
        self.rings[id.index()].lock().events.clear();
    }

    /// Asks every connection with a subscription to close (`code`, `reason`).
    pub fn close_subscribers(&self, code: u16, reason: &'static str) {
        for slot in self.slots.iter() {
            for outbox in &slot.load().list {
                outbox.request_close(code, reason);
            }
        }
    }

    /// Tells every subscriber of one stream that `from..=to` will never be sent
    /// (a hole in what the bus delivered): a `gap` (`history_exhausted`) each.
    /// The ring keeps the hole, so a resume across it gets a gap too.
    pub fn publish_gap(&self, id: InstrumentId, channel: Channel, from: u64, to: u64, wake: &mut Vec<Arc<Outbox>>) {
        {
            let mut ring = self.rings[id.index()].lock();
            let last = &mut ring.last[channel.index()];
            *last = (*last).max(to);
        }
        let subscribers = self.slot(id, channel).load();
        for outbox in &subscribers.list {
            let mut guard = outbox.inner.lock();
            let inner = &mut *guard;
            if inner.close.is_some() {
                continue;
            }
            let Some(sub) = inner.subs.get_mut(&(id, channel)) else { continue };
            if to <= sub.last_seq {
                continue;
            }
            let first = from.max(sub.last_seq + 1);
            sub.last_seq = to;
            let message =
                Item::Message(self.gap_message(outbox.format, id, channel, first, to, GapReason::HistoryExhausted));
            if let Some(held) = &mut sub.held {
                held.items.push(message);
                continue;
            }
            if inner.queue.is_empty() {
                wake.push(outbox.clone());
            }
            inner.queue.push(message);
        }
    }

    pub fn instruments(&self) -> &Arc<Instruments> {
        &self.instruments
    }

    pub fn state(&self) -> &StateReader {
        &self.state
    }

    /// Subscriptions (connection x instrument x channel) held now, per
    /// transport (index: [`Transport`]; read for `/v1/stats`, not on the hot path).
    pub fn subscriptions_by_transport(&self) -> [usize; 4] {
        let mut counts = [0; 4];
        for slot in &self.slots {
            for outbox in &slot.load().list {
                counts[outbox.transport as usize] += 1;
            }
        }
        counts
    }

    fn slot(&self, id: InstrumentId, channel: Channel) -> &ArcSwap<Subscribers> {
        &self.slots[id.index() * Channel::COUNT + channel.index()]
    }

    /// A new, empty outbox for a connection speaking `format`.
    pub fn outbox(&self, format: Format) -> Arc<Outbox> {
        self.outbox_for(format, Transport::Ws)
    }

    /// A new, empty outbox for a connection of `transport` speaking `format`.
    pub fn outbox_for(&self, format: Format, transport: Transport) -> Arc<Outbox> {
        Arc::new(Outbox {
            inner: Mutex::default(),
            wake: Notify::new(),
            notifier: std::sync::OnceLock::new(),
            config: self.config,
            format,
            transport,
        })
    }

    /// Number of subscribers of one instrument and channel.
    pub fn subscribers(&self, id: InstrumentId, channel: Channel) -> usize {
        self.slot(id, channel).load().list.len()
    }

    /// [`Self::publish_deferred`] followed by the wake-ups.
    pub fn publish(&self, event: &Event) -> usize {
        let mut wake = Vec::new();
        let offered = self.publish_deferred(event, &mut wake);
        wake_all(&mut wake);
        offered
    }

    /// Records a sequenced event in its ring, encodes it once per format in use and
    /// queues it for every subscriber. Outboxes that were empty are added to `wake`
    /// instead of being woken at once: the engine wakes them after its whole batch,
    /// so a connection gets one frame (and one write) for everything the batch held
    /// for it. Returns the number of outboxes offered to.
    ///
    /// Derived channels (candles) are made for every instrument but watched by few:
    /// while nobody subscribes to one (and nobody has for [`DERIVED_KEPT_NS`]),
    /// its events are neither encoded nor kept in the ring; only their sequence is
    /// recorded, so a resume across that stretch gets a gap and a fresh snapshot
    /// (the latest candle) instead of a silent skip. The grace keeps long-polls,
    /// subscribed only while a request waits, resuming from the ring.
    /// A cluster gateway (events from a source) keeps them: it takes only the
    /// instruments its clients want, and a client moving from another gateway
    /// resumes its candles from the ring.
    pub fn publish_deferred(&self, event: &Event, wake: &mut Vec<Arc<Outbox>>) -> usize {
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        if !event.channel().is_stored() && self.source.is_none() && {
            let subscribers = self.slot(event.instrument, event.channel()).load();
            subscribers.list.is_empty() && event.ts_recv >= subscribers.kept_until
        } {
            self.rings[event.instrument.index()].lock().last[event.channel().index()] = event.seq;
            return 0;
        }
        self.remember(event);
        // Load the list again now that the event is in the ring: a subscriber
        // that resumed meanwhile read the ring before the event was there, but
        // registered before that read, so it is in this list (and one that
        // read the ring after has the event already: `offer` skips it).
        let subscribers = self.slot(event.instrument, event.channel()).load();
        if subscribers.list.is_empty() {
            return 0;
        }
        let formats = subscribers.formats.map(|n| n > 0);
        if let Payload::BookReset(_) = event.payload {
            let messages = [Format::Json, Format::Proto].map(|format| {
                if !formats[format.index()] {
                    return [Bytes::new(), Bytes::new()];
                }
                let mut invalidated = Vec::with_capacity(96);
                let symbol = &self.instruments.get(event.instrument).symbol;
                format.encode_book_invalidated(&mut invalidated, symbol, event.seq);
                let (_, snapshot) = self.snapshot_message(format, event.instrument, Channel::Book);
                [Bytes::from(invalidated), snapshot]
            });
            for outbox in &subscribers.list {
                self.offer_reset(outbox, event, &messages[outbox.format.index()], wake);
            }
            return subscribers.list.len();
        }
        let encoded = Arc::new(Encoded::new(&self.instruments, event, formats));
        for outbox in &subscribers.list {
            self.offer(outbox, &encoded, wake);
        }
        self.stats.delivered.fetch_add(subscribers.list.len() as u64, Ordering::Relaxed);
        subscribers.list.len()
    }

    fn remember(&self, event: &Event) {
        let mut ring = self.rings[event.instrument.index()].lock();
        ring.last[event.channel().index()] = event.seq;
        if self.ring.depth == 0 {
            return;
        }
        let oldest_kept = event.ts_send.saturating_sub(self.ring.max_age_ns);
        while ring.events.len() >= self.ring.depth || ring.events.front().is_some_and(|e| e.ts_send < oldest_kept) {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
    }

    fn offer(&self, outbox: &Arc<Outbox>, encoded: &Arc<Encoded>, wake: &mut Vec<Arc<Outbox>>) {
        let mut guard = outbox.inner.lock();
        let OutboxInner { queue, epoch, subs, has_gaps, close, .. } = &mut *guard;
        if close.is_some() {
            return;
        }
        let Some(sub) = subs.get_mut(&(encoded.instrument, encoded.channel)) else {
            return;
        };
        if encoded.seq <= sub.last_seq {
            return; // already covered by the snapshot or replay this subscription started from
        }
        let previous = sub.last_seq;
        sub.last_seq = encoded.seq;
        let config = &outbox.config;
        if let Some(held) = &mut sub.held {
            if held.items.len() < config.max_queued {
                held.items.push(Item::Update(encoded.clone()));
            } else {
                held.overflowed = true;
            }
            return;
        }
        let len = queue.len();
        let mut close_for_lag = false;
        match (sub.delivery, encoded.channel) {
            (Delivery::Full, _) => {
                if len >= config.max_queued {
                    close_for_lag = true;
                } else {
                    queue.push(Item::Update(encoded.clone()));
                }
            }
            (Delivery::Conflate { .. }, channel) if channel.is_latest_value() => {
                match sub.held_quote.replace(encoded.clone()) {
                    // A closed candle is never dropped: it goes out now.
                    Some(held) if held.final_value => queue.push(Item::Update(held)),
                    Some(_) => {
                        self.stats.conflated.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    None => return,
                }
            }
            (Delivery::Conflate { .. }, Channel::Book) => {
                if sub.book_dirty {
                    self.stats.conflated.fetch_add(1, Ordering::Relaxed);
                }
                sub.book_dirty = true;
                return;
            }
            (_, channel) if channel.is_latest_value() => {
                if len >= config.conflate_after
                    && let Some((at_epoch, index)) = sub.queued_quote
                    && at_epoch.get() == epoch.wrapping_add(1)
                {
                    queue[index as usize] = Item::Update(encoded.clone());
                    self.stats.conflated.fetch_add(1, Ordering::Relaxed);
                    if encoded.final_value {
                        sub.queued_quote = None;
                    }
                    return;
                }
                // A final value stays where it is; the next update queues behind it.
                sub.queued_quote = match (NonZeroU64::new(epoch.wrapping_add(1)), u32::try_from(len)) {
                    (Some(at_epoch), Ok(index)) if !encoded.final_value => Some((at_epoch, index)),
                    _ => None,
                };
                queue.push(Item::Update(encoded.clone()));
            }
            (_, Channel::Book) => {
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
            (_, _) => {
                // Trades (and nothing else reaches here): never conflated.
                if len >= config.max_queued {
                    match config.slow_consumer {
                        SlowConsumerPolicy::Gap => {
                            match &mut sub.gap {
                                Some(gap) => gap.1 = encoded.seq,
                                None => sub.gap = Some(Box::new((previous + 1, encoded.seq))),
                            }
                            *has_gaps = true;
                            self.stats.dropped_trades.fetch_add(1, Ordering::Relaxed);
                        }
                        SlowConsumerPolicy::Close => close_for_lag = true,
                    }
                } else {
                    if let Some((from, to)) = sub.gap.take().map(|gap| *gap) {
                        queue.push(Item::Message(self.gap_message(
                            outbox.format,
                            encoded.instrument,
                            Channel::Trades,
                            from,
                            to,
                            GapReason::SlowConsumer,
                        )));
                    }
                    queue.push(Item::Update(encoded.clone()));
                }
            }
        }
        if close_for_lag {
            *close = Some((close::SLOW_CONSUMER, "slow consumer"));
            self.stats.slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
            drop(guard);
            outbox.signal();
            return;
        }
        if len == 0 {
            wake.push(outbox.clone());
        }
    }

    /// A resynchronised book: the client's copy is wrong, so it gets a
    /// `book_invalidated` message and the fresh snapshot, whatever its lag.
    fn offer_reset(&self, outbox: &Arc<Outbox>, event: &Event, messages: &[Bytes; 2], wake: &mut Vec<Arc<Outbox>>) {
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
        sub.book_dirty = false;
        if let Some(held) = &mut sub.held {
            held.items.extend(messages.iter().cloned().map(Item::Message));
            return;
        }
        let first = inner.queue.is_empty();
        inner.queue.retain(|item| !matches!(item, Item::Resnapshot(id) if *id == event.instrument));
        inner.queue.extend(messages.iter().cloned().map(Item::Message));
        if first {
            wake.push(outbox.clone());
        }
    }

    fn gap_message(
        &self,
        format: Format,
        id: InstrumentId,
        channel: Channel,
        from: u64,
        to: u64,
        reason: GapReason,
    ) -> Bytes {
        let mut out = Vec::with_capacity(128);
        let symbol = &self.instruments.get(id).symbol;
        format.encode_gap(&mut out, symbol, channel, from, to, reason);
        Bytes::from(out)
    }

    fn snapshot_message(&self, format: Format, id: InstrumentId, channel: Channel) -> (u64, Bytes) {
        let state = self.state.load(id);
        let mut out = Vec::with_capacity(256);
        format.encode_snapshot(&mut out, self.instruments.get(id), channel, &state, self.line.load().epoch);
        let seq = match channel {
            Channel::Book => state.book.seq,
            other => state.seqs[other.index()],
        };
        (seq, Bytes::from(out))
    }

    /// Subscribes `outbox` to one instrument and channel. Without `since`, a
    /// snapshot is queued and deltas after its sequence follow. With `since`, the
    /// updates after it are replayed from the ring, or, when the ring no longer
    /// holds them, a `gap` and a fresh snapshot are queued. Subscribing again
    /// restarts the subscription the same way.
    ///
    /// The writer is not woken: a request that subscribes to many streams calls
    /// [`Outbox::signal_if_queued`] once at its end, so that its snapshots go out
    /// together rather than interleaved with the first streams' updates.
    pub fn subscribe(
        &self,
        outbox: &Arc<Outbox>,
        id: InstrumentId,
        channel: Channel,
        since: Option<u64>,
        delivery: Delivery,
    ) -> Resume {
        let mut inner = outbox.inner.lock();
        let start = since.map_or(Start::Snapshot, |since| Start::After { since, announce: false });
        self.subscribe_locked(outbox, &mut inner, id, channel, start, delivery)
    }

    /// Subscribes from where a client's `since` stands in this run's sequence
    /// line ([`SequenceLine::check`]): after it within this run; after it with a
    /// `live` marker that names this run's epoch when it came from an earlier run
    /// of the same line; and, when it names updates this run never published
    /// (another run past where this one began, or another server), a `gap`
    /// (`epoch_changed`) and a fresh snapshot, never this run's updates under
    /// sequences the client has seen.
    pub fn subscribe_checked(
        &self,
        outbox: &Arc<Outbox>,
        id: InstrumentId,
        channel: Channel,
        since: Option<SinceCheck>,
        delivery: Delivery,
    ) -> Resume {
        let mut inner = outbox.inner.lock();
        let start = match since {
            None => Start::Snapshot,
            Some(SinceCheck::ThisRun(since)) => Start::After { since, announce: false },
            Some(SinceCheck::EarlierRun(since)) => Start::After { since, announce: true },
            // Ahead of anything this stream has published, and no run named: as
            // likely a client's mistake as a restart, said as `bad_since` before
            // the fresh snapshot. (Naming another run, it is a restart.)
            Some(SinceCheck::OtherRun { since, named: false, .. }) if since > self.current_seq(id, channel) => {
                Start::After { since, announce: false }
            }
            Some(SinceCheck::OtherRun { from, .. }) => Start::Break { from },
        };
        self.subscribe_locked(outbox, &mut inner, id, channel, start, delivery)
    }

    /// [`Self::subscribe`] with the outbox already locked: registration and
    /// snapshot (or replay) happen under that lock, so an event published
    /// meanwhile waits and then lands behind them, and one already covered is
    /// filtered by its sequence. With `Start::After { announce: true }`, what
    /// came before `since` (stored history, an earlier run) is the client's
    /// already, and a `live` message marks the seam.
    fn subscribe_locked(
        &self,
        outbox: &Arc<Outbox>,
        inner: &mut OutboxInner,
        id: InstrumentId,
        channel: Channel,
        start: Start,
        delivery: Delivery,
    ) -> Resume {
        let (since, after_history, broken) = match start {
            Start::Snapshot => (None, false, None),
            Start::After { since, announce } => (Some(since), announce, None),
            Start::Break { from } => (None, false, Some(from)),
        };
        let current_seq = self.current_seq(id, channel);
        let ahead = since.filter(|&since| since > current_seq);
        let since = if ahead.is_some() { None } else { since };
        inner.forget_delivery((id, channel));
        if !inner.subs.contains_key(&(id, channel)) {
            self.add_to_slot(outbox, id, channel);
        }
        let replay = since.and_then(|since| self.ring_between(outbox.format, id, channel, since, u64::MAX));
        let outcome = match (since, replay) {
            (Some(since), Some((last_seq, updates))) => {
                let count = updates.len();
                inner.queue.extend(updates);
                if after_history {
                    // What the ring held was history too: the marker follows it.
                    let symbol = &self.instruments.get(id).symbol;
                    inner.queue.push(Item::Message(Bytes::from(outbox.format.encode_live(
                        symbol,
                        channel,
                        last_seq.max(since),
                        self.line.load().epoch,
                    ))));
                }
                inner.subs.insert((id, channel), SubState::new(delivery, last_seq.max(since)));
                self.stats.resumed.fetch_add(1, Ordering::Relaxed);
                Resume::Replayed(count)
            }
            (since, _) => {
                let (seq, snapshot) = self.snapshot_message(outbox.format, id, channel);
                let gap = match (since, broken) {
                    (Some(since), _) => Some((since + 1, GapReason::HistoryExhausted)),
                    (None, Some(from)) => Some((from, GapReason::EpochChanged)),
                    (None, None) => None,
                };
                let outcome = match gap {
                    Some((from, reason)) => {
                        self.stats.resume_gaps.fetch_add(1, Ordering::Relaxed);
                        let mut gap = Vec::with_capacity(128);
                        let symbol = &self.instruments.get(id).symbol;
                        outbox.format.encode_gap(&mut gap, symbol, channel, from, seq, reason);
                        inner.queue.push(Item::Message(Bytes::from(gap)));
                        Resume::Gap { from, to: seq }
                    }
                    None => match ahead {
                        Some(since) => {
                            // Said before the snapshot it explains.
                            let symbol = &self.instruments.get(id).symbol;
                            let error = RequestError::new(
                                ErrorCode::BadSince,
                                format!(
                                    "since {since} is ahead of {symbol} {} at {current_seq} (did the server \
                                     restart?); subscribed afresh from the snapshot that follows",
                                    channel.as_str()
                                ),
                                Some("subscribe"),
                            )
                            .about(symbol, channel);
                            inner.queue.push(Item::Message(Bytes::from(outbox.format.encode_error(&error))));
                            Resume::Ahead { since, current: current_seq }
                        }
                        None => Resume::Snapshot,
                    },
                };
                inner.subs.insert((id, channel), SubState::new(delivery, seq));
                inner.queue.push(Item::Message(snapshot));
                outcome
            }
        };
        inner.note_delivery(delivery);
        outcome
    }

    /// Whether the ring still holds every update of one channel after `since`.
    pub fn ring_covers(&self, id: InstrumentId, channel: Channel, since: u64) -> bool {
        let ring = self.rings[id.index()].lock();
        ring.continues(channel, since)
    }

    /// Starts a resume from stored history: subscribes `outbox` with its live
    /// updates held back, and returns the channel's sequence at this moment. The
    /// caller reads the store up to it (or up to where the ring continues) and
    /// ends the hold with [`Self::release_hold`]; held updates follow the history.
    pub fn hold(&self, outbox: &Arc<Outbox>, id: InstrumentId, channel: Channel, delivery: Delivery) -> u64 {
        let mut inner = outbox.inner.lock();
        let from = self.current_seq(id, channel);
        inner.forget_delivery((id, channel));
        if !inner.subs.contains_key(&(id, channel)) {
            self.add_to_slot(outbox, id, channel);
        }
        let mut sub = SubState::new(delivery, from);
        sub.held = Some(Box::new(Held { from, items: Vec::new(), overflowed: false }));
        inner.subs.insert((id, channel), sub);
        inner.note_delivery(delivery);
        from
    }

    /// Ends a hold: queues the stored updates after `since` (contiguous), the
    /// ring's updates between them and the hold point, a `live` marker, then the
    /// held live updates, each sequence once. When history cannot reach the hold
    /// point (the store lags too far, or too much was held), what did continue
    /// `since` is queued and the subscription restarts from there with a gap and
    /// a fresh snapshot, as [`Self::subscribe`] does.
    pub fn release_hold(
        &self,
        outbox: &Arc<Outbox>,
        id: InstrumentId,
        channel: Channel,
        since: u64,
        stored: &[Event],
    ) -> Resume {
        let mut formats = [false; Format::COUNT];
        formats[outbox.format.index()] = true;
        let mut guard = outbox.inner.lock();
        let inner = &mut *guard;
        let Some(held) = inner.subs.get_mut(&(id, channel)).and_then(|sub| sub.held.take()) else {
            return Resume::Snapshot; // unsubscribed meanwhile
        };
        let delivery = inner.subs[&(id, channel)].delivery;
        let mut last = since;
        let mut count = 0;
        for event in stored.iter().take_while(|e| e.seq <= held.from) {
            if event.seq != last + 1 {
                break;
            }
            debug_assert_eq!(event.instrument, id, "stored events carry the live instrument id");
            inner.queue.push(match &event.payload {
                Payload::BookReset(_) => Item::Resnapshot(id),
                _ => Item::Update(Arc::new(Encoded::new(&self.instruments, event, formats))),
            });
            last = event.seq;
            count += 1;
        }
        let ring_part = if last < held.from {
            self.ring_between(outbox.format, id, channel, last, held.from)
        } else {
            Some((last, Vec::new()))
        };
        let outcome = match ring_part {
            Some((_, ring_items)) if !held.overflowed => {
                let symbol = &self.instruments.get(id).symbol;
                inner.queue.push(Item::Message(Bytes::from(outbox.format.encode_live(
                    symbol,
                    channel,
                    last,
                    self.line.load().epoch,
                ))));
                count += ring_items.len() + held.items.len();
                inner.queue.extend(ring_items);
                inner.queue.extend(held.items);
                self.stats.resumed.fetch_add(1, Ordering::Relaxed);
                Resume::Replayed(count)
            }
            _ => self.subscribe_locked(
                outbox,
                inner,
                id,
                channel,
                Start::After { since: last, announce: last > since },
                delivery,
            ),
        };
        let wake = !inner.queue.is_empty();
        drop(guard);
        if wake {
            outbox.signal();
        }
        outcome
    }

    /// The first sequence of one channel in the ring whose exchange time is at or
    /// after `at`, when the ring holds one.
    pub fn first_ring_seq_at(&self, id: InstrumentId, channel: Channel, at: crate::model::Nanos) -> Option<u64> {
        let ring = self.rings[id.index()].lock();
        ring.events.iter().find(|e| e.channel() == channel && e.ts_event >= at).map(|e| e.seq)
    }

    /// The last sequence assigned to one channel.
    pub fn current_seq(&self, id: InstrumentId, channel: Channel) -> u64 {
        let current = self.state.load(id);
        match channel {
            Channel::Book => current.book.seq,
            other => current.seqs[other.index()],
        }
    }

    fn add_to_slot(&self, outbox: &Arc<Outbox>, id: InstrumentId, channel: Channel) {
        let format = outbox.format.index();
        self.slot(id, channel).rcu(|current| {
            let mut list = Vec::with_capacity(current.list.len() + 1);
            list.extend(current.list.iter().cloned());
            list.push(outbox.clone());
            let mut formats = current.formats;
            formats[format] += 1;
            Subscribers { list, formats, kept_until: current.kept_until }
        });
    }

    /// The ring's updates of one channel after `since` and up to `upto`, encoded
    /// for `format`, when the ring still holds every one of them; `None` when it
    /// does not. Also returns the last sequence included (`since` when none is).
    fn ring_between(
        &self,
        format: Format,
        id: InstrumentId,
        channel: Channel,
        since: u64,
        upto: u64,
    ) -> Option<(u64, Vec<Item>)> {
        let ring = self.rings[id.index()].lock();
        if !ring.continues(channel, since) {
            return None;
        }
        let missed = ring.events.iter().filter(|e| e.channel() == channel && e.seq > since && e.seq <= upto);
        let mut formats = [false; Format::COUNT];
        formats[format.index()] = true;
        let mut last = since;
        let items = missed
            .map(|event| {
                last = event.seq;
                match &event.payload {
                    // A reset in the missed range: the client's book must be replaced.
                    Payload::BookReset(_) => Item::Resnapshot(id),
                    _ => Item::Update(Arc::new(Encoded::new(&self.instruments, event, formats))),
                }
            })
            .collect();
        Some((last, items))
    }

    /// Removes one subscription and whatever of it is still queued.
    pub fn unsubscribe(&self, outbox: &Arc<Outbox>, id: InstrumentId, channel: Channel) -> bool {
        let mut inner = outbox.inner.lock();
        inner.forget_delivery((id, channel));
        if inner.subs.remove(&(id, channel)).is_none() {
            return false;
        }
        self.remove_from_slot(outbox, id, channel);
        inner.queue.retain(|item| match item {
            Item::Update(e) => (e.instrument, e.channel) != (id, channel),
            Item::Resnapshot(i) => !(channel == Channel::Book && *i == id),
            Item::Message(_) | Item::Raw(_) => true,
        });
        // Queue indices moved: forget every remembered quote position.
        inner.epoch += 1;
        true
    }

    fn remove_from_slot(&self, outbox: &Arc<Outbox>, id: InstrumentId, channel: Channel) {
        let format = outbox.format.index();
        self.slot(id, channel).rcu(|current| {
            let list: Vec<_> = current.list.iter().filter(|o| !Arc::ptr_eq(o, outbox)).cloned().collect();
            let mut formats = current.formats;
            if list.len() < current.list.len() {
                formats[format] -= 1;
            }
            let kept_until = if list.is_empty() && !channel.is_stored() {
                now_nanos().saturating_add(DERIVED_KEPT_NS)
            } else {
                current.kept_until
            };
            Subscribers { list, formats, kept_until }
        });
    }

    /// Takes a connection out of every subscriber list, keeping what it has
    /// queued (a closing connection still flushes it, then its close frame).
    /// A connection is taken out as soon as it starts closing, not when its
    /// socket is gone: each list change copies the list, so connections that
    /// linger subscribed make every other subscribe and unsubscribe slower
    /// (a connect-and-drop loop showed it: docs/BENCHMARKS.md, hostile mix).
    pub fn unsubscribe_all(&self, outbox: &Arc<Outbox>) {
        let mut inner = outbox.inner.lock();
        let keys: Vec<_> = inner.subs.keys().copied().collect();
        for (id, channel) in keys {
            self.remove_from_slot(outbox, id, channel);
        }
        inner.subs.clear();
    }

    /// Removes every subscription of a closing connection, and what it queued.
    pub fn detach(&self, outbox: &Arc<Outbox>) {
        self.unsubscribe_all(outbox);
        let mut inner = outbox.inner.lock();
        inner.queue.clear();
        inner.close.get_or_insert((close::NORMAL, "closed"));
    }

    /// Releases what `conflate` subscriptions held since the last tick: the latest
    /// quote of each instrument, and a fresh snapshot of each changed book.
    pub fn release_conflated(&self, outbox: &Outbox) {
        let mut guard = outbox.inner.lock();
        let OutboxInner { queue, subs, .. } = &mut *guard;
        let was_empty = queue.is_empty();
        for ((id, _), sub) in subs.iter_mut() {
            if let Some(quote) = sub.held_quote.take() {
                queue.push(Item::Update(quote));
            }
            if std::mem::take(&mut sub.book_dirty) {
                queue.push(Item::Resnapshot(*id));
            }
        }
        let wake = was_empty && !queue.is_empty();
        drop(guard);
        if wake {
            outbox.signal();
        }
    }

    /// Takes everything queued into `out` (which should be empty), materialising
    /// book resnapshots and pending gap notices. Returns a requested close, if any.
    pub fn drain(&self, outbox: &Outbox, out: &mut Vec<Item>) -> Option<(u16, &'static str)> {
        let mut inner = outbox.inner.lock();
        std::mem::swap(&mut inner.queue, out);
        inner.epoch += 1;
        // A book snapshot taken now covers every delta up to its sequence: any
        // queued behind it (a resume's history or ring part) would repeat them.
        let mut covered: Vec<(usize, InstrumentId, u64)> = Vec::new();
        for (index, item) in out.iter_mut().enumerate() {
            if let Item::Resnapshot(id) = *item {
                let (seq, snapshot) = self.snapshot_message(outbox.format, id, Channel::Book);
                if let Some(sub) = inner.subs.get_mut(&(id, Channel::Book)) {
                    sub.last_seq = sub.last_seq.max(seq);
                    sub.resnapshot_pending = false;
                }
                *item = Item::Message(snapshot);
                covered.push((index, id, seq));
            }
        }
        if !covered.is_empty() {
            let mut index = 0;
            out.retain(|item| {
                let keep = match item {
                    Item::Update(update) if update.channel == Channel::Book => {
                        !covered.iter().any(|&(at, id, seq)| at < index && id == update.instrument && update.seq <= seq)
                    }
                    _ => true,
                };
                index += 1;
                keep
            });
        }
        if inner.has_gaps {
            inner.has_gaps = false;
            let mut gaps: Vec<_> =
                inner.subs.iter_mut().filter_map(|(key, sub)| sub.gap.take().map(|g| (key.0, *g))).collect();
            gaps.sort_unstable_by_key(|(id, _)| *id);
            for (id, (from, to)) in gaps {
                out.push(Item::Message(self.gap_message(
                    outbox.format,
                    id,
                    Channel::Trades,
                    from,
                    to,
                    GapReason::SlowConsumer,
                )));
            }
        }
        inner.close
    }
}

/// Wakes the writers of `outboxes` (see [`Fanout::publish_deferred`]) and empties the list.
pub fn wake_all(outboxes: &mut Vec<Arc<Outbox>>) {
    for outbox in outboxes.drain(..) {
        outbox.signal();
    }
}

/// One frame's worth of drained items: a message on its own, a ready transport
/// frame, or a run of updates that becomes one batch.
#[derive(Debug, Clone, Copy)]
pub enum Frame<'a> {
    Message(&'a Bytes),
    Raw(&'a Bytes),
    /// Updates only; `body` is the sum of their fragments' lengths in the format.
    Batch {
        updates: &'a [Item],
        body: usize,
    },
}

impl Frame<'_> {
    /// Length of the frame's payload in `format`.
    pub fn payload_len(&self, format: Format) -> usize {
        match self {
            Frame::Message(bytes) | Frame::Raw(bytes) => bytes.len(),
            Frame::Batch { updates, body } => match format {
                Format::Json => {
                    body + updates.len().saturating_sub(1) + json::BATCH_OPEN.len() + json::BATCH_CLOSE.len()
                }
                Format::Proto => body + proto::batch_header_len(*body),
            },
        }
    }

    /// Appends the frame's payload to `out`.
    pub fn write_payload(&self, format: Format, out: &mut Vec<u8>) {
        match self {
            Frame::Message(bytes) | Frame::Raw(bytes) => out.extend_from_slice(bytes),
            Frame::Batch { updates, body } => {
                let fragments = updates.iter().filter_map(|item| match item {
                    Item::Update(encoded) => Some(&encoded.fragments[format.index()]),
                    _ => None,
                });
                match format {
                    Format::Json => {
                        out.extend_from_slice(json::BATCH_OPEN);
                        for (i, fragment) in fragments.enumerate() {
                            if i > 0 {
                                out.push(b',');
                            }
                            out.extend_from_slice(fragment);
                        }
                        out.extend_from_slice(json::BATCH_CLOSE);
                    }
                    Format::Proto => {
                        proto::batch_header(out, *body);
                        for fragment in fragments {
                            out.extend_from_slice(fragment);
                        }
                    }
                }
            }
        }
    }
}

/// Splits drained items into frames, in queue order: runs of updates become
/// batches of at most `max_frame_bytes` (a single larger update still gets its
/// own); messages and raw frames stand alone; resnapshots were materialised by
/// [`Fanout::drain`] and are skipped.
pub fn frames(items: &[Item], format: Format, max_frame_bytes: usize) -> impl Iterator<Item = Frame<'_>> {
    let mut start = 0;
    std::iter::from_fn(move || {
        loop {
            let item = items.get(start)?;
            match item {
                Item::Message(message) => {
                    start += 1;
                    return Some(Frame::Message(message));
                }
                Item::Raw(frame) => {
                    start += 1;
                    return Some(Frame::Raw(frame));
                }
                Item::Resnapshot(_) => start += 1,
                Item::Update(_) => {
                    // The longest run of updates from `start` that fits one frame.
                    let mut end = start;
                    let mut body = 0;
                    while let Some(Item::Update(encoded)) = items.get(end) {
                        let len = encoded.fragments[format.index()].len();
                        if end > start && body + len + (end - start) + 1 > max_frame_bytes {
                            break;
                        }
                        body += len;
                        end += 1;
                    }
                    let updates = &items[start..end];
                    start = end;
                    return Some(Frame::Batch { updates, body });
                }
            }
        }
    })
}

/// Builds the payload of each frame for drained items (see [`frames`]); raw
/// transport frames are left out (they only exist on WebSocket outboxes).
pub fn build_frames(items: &[Item], format: Format, max_frame_bytes: usize, out: &mut Vec<Bytes>) {
    for frame in frames(items, format, max_frame_bytes) {
        if let Frame::Raw(_) = frame {
            continue;
        }
        let mut payload = Vec::with_capacity(frame.payload_len(format));
        frame.write_payload(format, &mut payload);
        out.push(Bytes::from(payload));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Engine;
    use crate::model::{AssetKind, BookDelta, InstrumentSpec, Price, Quote, Side, Size, Trade};

    /// Every offer reads one `SubState`, from memory a writer on another core
    /// has just touched: it must fit one cache line (it was 120 bytes).
    #[test]
    fn sub_state_stays_small() {
        assert!(std::mem::size_of::<SubState>() <= 64, "SubState is {} bytes", std::mem::size_of::<SubState>());
    }

    fn setup(config: OutboxConfig) -> (Engine, Fanout) {
        setup_with_ring(config, RingConfig::default())
    }

    fn setup_with_ring(config: OutboxConfig, ring: RingConfig) -> (Engine, Fanout) {
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
        let fanout = Fanout::with_ring(Arc::new(t), engine.reader(), config, ring);
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

    /// Publishes a trade of instrument 0 at `ts`, then the candles it changed, as
    /// the engine task does after each feed batch.
    fn trade_with_candles(engine: &mut Engine, fanout: &Fanout, ts: u64, id: u64) {
        let mut event = Event::new(InstrumentId(0), ts, ts, trade(id));
        engine.apply(&mut event).unwrap();
        fanout.publish(&event);
        let mut candles = Vec::new();
        engine.drain_candles(&mut candles);
        for candle in &candles {
            fanout.publish(candle);
        }
    }

    fn drain_json(fanout: &Fanout, outbox: &Outbox) -> Vec<serde_json::Value> {
        let mut items = Vec::new();
        fanout.drain(outbox, &mut items);
        let mut frames = Vec::new();
        build_frames(&items, Format::Json, 1 << 20, &mut frames);
        frames.iter().map(|f| serde_json::from_slice(f).unwrap()).collect()
    }

    /// Publishes trades `range` of instrument 0 and returns them, as the store
    /// would hold them.
    fn trades(engine: &mut Engine, fanout: &Fanout, range: std::ops::RangeInclusive<u64>) -> Vec<Event> {
        range
            .map(|i| {
                let mut event = Event::new(InstrumentId(0), i, i, trade(i));
                engine.apply(&mut event).unwrap();
                fanout.publish(&event);
                event
            })
            .collect()
    }

    /// Trade sequences and message types a client got, in order.
    fn received(frames: &[serde_json::Value]) -> (Vec<u64>, Vec<String>) {
        let mut seqs = Vec::new();
        let mut kinds = Vec::new();
        for frame in frames {
            kinds.push(frame["type"].as_str().unwrap().to_owned());
            if frame["type"] == "batch" {
                seqs.extend(frame["updates"].as_array().unwrap().iter().map(|u| u["seq"].as_u64().unwrap()));
            }
        }
        (seqs, kinds)
    }

    const SMALL_RING: RingConfig = RingConfig { depth: 4, max_age_ns: u64::MAX };

    /// A resume from history holds live updates while the store is read: the
    /// stored part, the ring's bridge over what the writer has not stored yet, and
    /// the held updates arrive in order, each once, with a `live` marker at the seam.
    #[test]
    fn held_resume_stitches_store_ring_and_live() {
        let ring = RingConfig { depth: 8, max_age_ns: u64::MAX };
        let (mut engine, fanout) = setup_with_ring(OutboxConfig::default(), ring);
        let history = trades(&mut engine, &fanout, 1..=20);
        let outbox = fanout.outbox(Format::Json);
        let id = InstrumentId(0);
        assert!(!fanout.ring_covers(id, Channel::Trades, 5));
        let from = fanout.hold(&outbox, id, Channel::Trades, Delivery::SnapshotOnLag);
        assert_eq!(from, 20);
        trades(&mut engine, &fanout, 21..=25); // held
        assert_eq!(outbox.queued(), 0, "nothing goes out while held");
        // The writer trails: the store holds up to 18, the ring 18..=25.
        let outcome = fanout.release_hold(&outbox, id, Channel::Trades, 5, &history[5..18]);
        assert_eq!(outcome, Resume::Replayed(20));
        trades(&mut engine, &fanout, 26..=27);
        let (seqs, kinds) = received(&drain_json(&fanout, &outbox));
        assert_eq!(seqs, (6..=27).collect::<Vec<_>>());
        assert_eq!(kinds.iter().filter(|k| *k == "live").count(), 1);
        assert!(!kinds.iter().any(|k| k == "gap" || k == "snapshot"), "{kinds:?}");
    }

    /// A held `conflate` subscription starts the writer's conflation tick at once,
    /// as a plain subscribe does (else its quotes would wait for nothing).
    #[test]
    fn held_conflate_subscription_sets_the_tick() {
        let (_engine, fanout) = setup_with_ring(OutboxConfig::default(), SMALL_RING);
        let outbox = fanout.outbox(Format::Json);
        assert_eq!(outbox.conflate_ms(), None);
        fanout.hold(&outbox, InstrumentId(0), Channel::Quotes, Delivery::Conflate { interval_ms: 100 });
        assert_eq!(outbox.conflate_ms(), Some(100));
    }

    /// When neither store nor ring reaches the hold point, what history continued
    /// is delivered, then a gap for the rest and a fresh snapshot; no duplicate.
    /// The connection's period is the shortest of its `conflate` subscriptions,
    /// and lengthens or ends as they are unsubscribed or replaced.
    #[test]
    fn conflation_period_follows_the_subscriptions() {
        let (_engine, fanout) = setup(OutboxConfig::default());
        let outbox = fanout.outbox(Format::Json);
        let (a, b) = (InstrumentId(0), InstrumentId(1));
        fanout.subscribe(&outbox, a, Channel::Quotes, None, Delivery::Conflate { interval_ms: 50 });
        fanout.subscribe(&outbox, b, Channel::Quotes, None, Delivery::Conflate { interval_ms: 200 });
        assert_eq!(outbox.conflate_ms(), Some(50));
        fanout.unsubscribe(&outbox, a, Channel::Quotes);
        assert_eq!(outbox.conflate_ms(), Some(200));
        fanout.subscribe(&outbox, b, Channel::Quotes, None, Delivery::Full);
        assert_eq!(outbox.conflate_ms(), None);
    }

    #[test]
    fn held_resume_ends_in_a_gap_when_history_falls_short() {
        let (mut engine, fanout) = setup_with_ring(OutboxConfig::default(), SMALL_RING);
        let history = trades(&mut engine, &fanout, 1..=20);
        let outbox = fanout.outbox(Format::Json);
        let id = InstrumentId(0);
        fanout.hold(&outbox, id, Channel::Trades, Delivery::SnapshotOnLag);
        trades(&mut engine, &fanout, 21..=25); // the ring now holds 22..=25
        let outcome = fanout.release_hold(&outbox, id, Channel::Trades, 5, &history[5..10]);
        assert_eq!(outcome, Resume::Gap { from: 11, to: 25 });
        trades(&mut engine, &fanout, 26..=26);
        let frames = drain_json(&fanout, &outbox);
        let (seqs, kinds) = received(&frames);
        assert_eq!(seqs, vec![6, 7, 8, 9, 10, 26]);
        assert_eq!(kinds, ["batch", "gap", "snapshot", "batch"]);

        // Too much held (a queue's worth) also ends in a gap, though history is whole.
        let config = OutboxConfig { max_queued: 3, ..OutboxConfig::default() };
        let (mut engine, fanout) = setup_with_ring(config, SMALL_RING);
        let history = trades(&mut engine, &fanout, 1..=20);
        let outbox = fanout.outbox(Format::Json);
        fanout.hold(&outbox, id, Channel::Trades, Delivery::SnapshotOnLag);
        trades(&mut engine, &fanout, 21..=25);
        let outcome = fanout.release_hold(&outbox, id, Channel::Trades, 5, &history[5..]);
        assert_eq!(outcome, Resume::Gap { from: 21, to: 25 });
    }

    #[test]
    fn snapshot_first_then_deltas_in_one_batch() {
        let (mut engine, fanout) = setup(OutboxConfig::default());
        emit(&mut engine, &fanout, 0, quote(10));
        let outbox = fanout.outbox(Format::Json);
        assert_eq!(
            fanout.subscribe(&outbox, InstrumentId(0), Channel::Quotes, None, Delivery::SnapshotOnLag),
            Resume::Snapshot
        );
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
        let outbox = fanout.outbox(Format::Json);
        fanout.subscribe(&outbox, InstrumentId(0), Channel::Quotes, None, Delivery::SnapshotOnLag);
        fanout.subscribe(&outbox, InstrumentId(0), Channel::Trades, None, Delivery::SnapshotOnLag);
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

    /// Candle updates conflate like quotes for a lagging subscriber, but a closed
    /// candle's final value is never replaced, under either conflating policy.
    #[test]
    fn lagging_candle_subscribers_keep_every_closed_candle() {
        for delivery in [Delivery::SnapshotOnLag, Delivery::Conflate { interval_ms: 100 }] {
            let config = OutboxConfig { max_queued: 64, conflate_after: 2, slow_consumer: SlowConsumerPolicy::Gap };
            let (mut engine, fanout) = setup(config);
            let outbox = fanout.outbox(Format::Json);
            fanout.subscribe(&outbox, InstrumentId(0), Channel::Candles1s, None, delivery);
            fanout.subscribe(&outbox, InstrumentId(0), Channel::Trades, None, delivery);
            // Ten trades per second for five seconds.
            for i in 0..50u64 {
                trade_with_candles(&mut engine, &fanout, i * 100_000_000 + 1, i);
            }
            fanout.release_conflated(&outbox);
            let frames = drain_json(&fanout, &outbox);
            let closed: Vec<(u64, u64)> = frames
                .iter()
                .filter(|f| f["type"] == "batch")
                .flat_map(|f| f["updates"].as_array().unwrap().clone())
                .filter(|u| u["channel"] == "candles.1s" && u["closed"] == true)
                .map(|u| (u["start"].as_u64().unwrap() / 1_000_000_000, u["trades"].as_u64().unwrap()))
                .collect();
            assert_eq!(closed, vec![(0, 10), (1, 10), (2, 10), (3, 10)], "{delivery:?}");
            assert!(fanout.stats.conflated.load(Ordering::Relaxed) > 0, "{delivery:?}: open candles conflate");
        }
    }

    /// Candles made while nobody watched (for longer than the grace a
    /// long-poll needs) are not kept; a resume across them gets a gap and the
    /// latest candle, never the kept ones with a silent hole after them.
    #[test]
    fn resume_across_an_unwatched_candle_stretch_is_a_gap() {
        let (mut engine, fanout) = setup(OutboxConfig::default());
        let t0 = now_nanos() / 1_000_000_000 * 1_000_000_000;
        let second = |engine: &mut Engine, at: u64, i: u64| trade_with_candles(engine, &fanout, at + 1, i);
        let watcher = fanout.outbox(Format::Json);
        fanout.subscribe(&watcher, InstrumentId(0), Channel::Candles1s, None, Delivery::Full);
        for i in 0..3 {
            second(&mut engine, t0 + i * 1_000_000_000, i); // candles 1..=5 kept (open, closed+open, closed+open)
        }
        assert!(fanout.ring_covers(InstrumentId(0), Channel::Candles1s, 1));
        fanout.unsubscribe(&watcher, InstrumentId(0), Channel::Candles1s);
        for i in 3..5 {
            second(&mut engine, t0 + i * 1_000_000_000, i); // 6..=9 kept: within the grace
        }
        assert!(fanout.ring_covers(InstrumentId(0), Channel::Candles1s, 1), "a long-poll between requests resumes");
        let later = t0 + 2 * DERIVED_KEPT_NS;
        for i in 5..7 {
            second(&mut engine, later + i * 1_000_000_000, i); // 10..=13 not kept: past the grace
        }
        assert!(!fanout.ring_covers(InstrumentId(0), Channel::Candles1s, 1));
        let resumed = fanout.outbox(Format::Json);
        let outcome = fanout.subscribe(&resumed, InstrumentId(0), Channel::Candles1s, Some(1), Delivery::Full);
        assert_eq!(outcome, Resume::Gap { from: 2, to: 13 });
        let frames = drain_json(&fanout, &resumed);
        assert_eq!(frames[1]["type"], "snapshot");
        assert_eq!(frames[1]["data"]["start"], later + 6_000_000_000);
        // Candles of an unwatched instrument cost no ring space once the grace is over.
        assert!(fanout.rings[0].lock().events.iter().all(|e| e.channel().is_stored() || e.seq < 10));
    }

    #[test]
    fn close_policy_requests_4008() {
        let config = OutboxConfig { max_queued: 4, conflate_after: 2, slow_consumer: SlowConsumerPolicy::Close };
        let (mut engine, fanout) = setup(config);
        let outbox = fanout.outbox(Format::Json);
        fanout.subscribe(&outbox, InstrumentId(0), Channel::Trades, None, Delivery::SnapshotOnLag);
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
        let outbox = fanout.outbox(Format::Json);
        fanout.subscribe(&outbox, InstrumentId(0), Channel::Book, None, Delivery::SnapshotOnLag);
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
    fn a_resume_across_a_book_reset_never_repeats_what_its_snapshot_covers() {
        let (mut engine, fanout) = setup(OutboxConfig::default());
        let level = |px: i64, size: i64| BookDelta { bids: vec![(Price::from_units(px), Size(size))], asks: vec![] };
        emit(&mut engine, &fanout, 0, Payload::Book(level(10, 1)));
        emit(&mut engine, &fanout, 0, Payload::BookReset(level(20, 2)));
        emit(&mut engine, &fanout, 0, Payload::Book(level(19, 3)));
        emit(&mut engine, &fanout, 0, Payload::Book(level(18, 4)));
        // Resuming after seq 1: the ring holds the reset (a fresh snapshot, taken
        // at drain, when the book is at seq 5) and then deltas 3 to 5 it covers.
        let outbox = fanout.outbox(Format::Json);
        fanout.subscribe(&outbox, InstrumentId(0), Channel::Book, Some(1), Delivery::SnapshotOnLag);
        emit(&mut engine, &fanout, 0, Payload::Book(level(17, 5)));
        let frames = drain_json(&fanout, &outbox);
        let snapshot = frames.iter().find(|f| f["type"] == "snapshot").expect("a fresh snapshot");
        assert_eq!(snapshot["seq"], 5);
        let seqs = |frames: &[serde_json::Value]| -> Vec<u64> {
            frames
                .iter()
                .skip_while(|f| f["type"] != "snapshot")
                .filter(|f| f["type"] == "batch")
                .flat_map(|f| f["updates"].as_array().unwrap().iter().map(|u| u["seq"].as_u64().unwrap()))
                .collect()
        };
        assert!(seqs(&frames).is_empty(), "nothing the snapshot covers follows it: {frames:?}");
        emit(&mut engine, &fanout, 0, Payload::Book(level(16, 6)));
        let next = drain_json(&fanout, &outbox);
        assert_eq!(next[0]["updates"][0]["seq"], 6, "then the deltas after it");
    }

    #[test]
    fn book_reset_invalidates_then_snapshots() {
        let (mut engine, fanout) = setup(OutboxConfig::default());
        let outbox = fanout.outbox(Format::Json);
        fanout.subscribe(&outbox, InstrumentId(0), Channel::Book, None, Delivery::SnapshotOnLag);
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

    fn trade_seqs(frames: &[serde_json::Value]) -> Vec<u64> {
        frames
            .iter()
            .filter(|f| f["type"] == "batch")
            .flat_map(|f| f["updates"].as_array().unwrap().clone())
            .filter(|u| u["channel"] == "trades")
            .map(|u| u["seq"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn resume_replays_exactly_the_missed_updates() {
        let (mut engine, fanout) = setup(OutboxConfig::default());
        for i in 0..50 {
            emit(&mut engine, &fanout, 0, trade(i));
        }
        let outbox = fanout.outbox(Format::Json);
        let resumed = fanout.subscribe(&outbox, InstrumentId(0), Channel::Trades, Some(40), Delivery::SnapshotOnLag);
        assert_eq!(resumed, Resume::Replayed(10));
        emit(&mut engine, &fanout, 0, trade(50));
        let frames = drain_json(&fanout, &outbox);
        assert!(frames.iter().all(|f| f["type"] == "batch"), "no snapshot on a resume");
        assert_eq!(trade_seqs(&frames), (41..=51).collect::<Vec<_>>());
        // Caught up already: nothing replayed, live continues.
        let outbox = fanout.outbox(Format::Json);
        let resumed = fanout.subscribe(&outbox, InstrumentId(0), Channel::Trades, Some(51), Delivery::SnapshotOnLag);
        assert_eq!(resumed, Resume::Replayed(0));
        // Ahead of the stream: subscribed afresh, and the caller is told.
        let ahead = fanout.subscribe(&outbox, InstrumentId(1), Channel::Trades, Some(3), Delivery::SnapshotOnLag);
        assert_eq!(ahead, Resume::Ahead { since: 3, current: 0 });
    }

    #[test]
    fn resume_older_than_the_ring_gets_gap_and_snapshot() {
        let (mut engine, mut fanout) = setup(OutboxConfig::default());
        fanout.ring = RingConfig { depth: 20, max_age_ns: u64::MAX };
        for i in 0..100 {
            emit(&mut engine, &fanout, 0, trade(i));
        }
        let outbox = fanout.outbox(Format::Json);
        let resumed = fanout.subscribe(&outbox, InstrumentId(0), Channel::Trades, Some(10), Delivery::SnapshotOnLag);
        assert_eq!(resumed, Resume::Gap { from: 11, to: 100 });
        let frames = drain_json(&fanout, &outbox);
        assert_eq!(frames[0]["type"], "gap");
        assert_eq!((frames[0]["from_seq"].as_u64(), frames[0]["to_seq"].as_u64()), (Some(11), Some(100)));
        assert_eq!(frames[0]["reason"], "history_exhausted");
        assert_eq!((frames[1]["type"].as_str(), frames[1]["seq"].as_u64()), (Some("snapshot"), Some(100)));
    }

    /// Regression: a ring that holds only other channels' events must not pass off
    /// a resume as "nothing missed".
    #[test]
    fn resume_when_ring_holds_no_event_of_the_channel_is_a_gap() {
        let (mut engine, mut fanout) = setup(OutboxConfig::default());
        fanout.ring = RingConfig { depth: 8, max_age_ns: u64::MAX };
        for i in 0..20 {
            emit(&mut engine, &fanout, 0, trade(i));
        }
        for i in 0..20 {
            emit(&mut engine, &fanout, 0, quote(10 + i)); // evicts every trade
        }
        let outbox = fanout.outbox(Format::Json);
        let resumed = fanout.subscribe(&outbox, InstrumentId(0), Channel::Trades, Some(5), Delivery::SnapshotOnLag);
        assert_eq!(resumed, Resume::Gap { from: 6, to: 20 });
        let caught_up = fanout.subscribe(&outbox, InstrumentId(0), Channel::Trades, Some(20), Delivery::SnapshotOnLag);
        assert_eq!(caught_up, Resume::Replayed(0));
    }

    #[test]
    fn full_delivery_never_conflates_and_closes_when_too_far_behind() {
        let config = OutboxConfig { max_queued: 16, conflate_after: 4, slow_consumer: SlowConsumerPolicy::Gap };
        let (mut engine, fanout) = setup(config);
        let outbox = fanout.outbox(Format::Json);
        fanout.subscribe(&outbox, InstrumentId(0), Channel::Quotes, None, Delivery::Full);
        for i in 0..15 {
            emit(&mut engine, &fanout, 0, quote(10 + i));
        }
        let mut items = Vec::new();
        assert_eq!(fanout.drain(&outbox, &mut items), None);
        assert_eq!(items.len(), 16, "snapshot and all fifteen quotes, none conflated");
        for i in 0..40 {
            emit(&mut engine, &fanout, 0, quote(100 + i));
        }
        items.clear();
        assert_eq!(fanout.drain(&outbox, &mut items).map(|c| c.0), Some(close::SLOW_CONSUMER));
    }

    #[test]
    fn conflate_delivery_releases_latest_quote_and_book_on_tick() {
        let (mut engine, fanout) = setup(OutboxConfig::default());
        let outbox = fanout.outbox(Format::Json);
        let conflate = Delivery::Conflate { interval_ms: 100 };
        for channel in Channel::ALL {
            fanout.subscribe(&outbox, InstrumentId(0), channel, None, conflate);
        }
        assert_eq!(outbox.conflate_ms(), Some(100));
        drain_json(&fanout, &outbox); // the three snapshots
        for i in 0..10 {
            emit(&mut engine, &fanout, 0, quote(10 + i));
            emit(&mut engine, &fanout, 0, trade(i as u64));
            let delta = BookDelta { bids: vec![(Price::from_units(5 + i), Size(1))], asks: vec![] };
            emit(&mut engine, &fanout, 0, Payload::Book(delta));
        }
        let before_tick = drain_json(&fanout, &outbox);
        assert_eq!(trade_seqs(&before_tick).len(), 10, "trades are never held back");
        assert!(before_tick.iter().all(|f| f["type"] == "batch"), "no quote or book before the tick");
        fanout.release_conflated(&outbox);
        let after_tick = drain_json(&fanout, &outbox);
        let quote = after_tick.iter().find(|f| f["type"] == "batch").unwrap()["updates"][0].clone();
        assert_eq!((quote["channel"].as_str(), quote["seq"].as_u64()), (Some("quotes"), Some(10)));
        let book = after_tick.iter().find(|f| f["type"] == "snapshot").unwrap();
        assert_eq!((book["channel"].as_str(), book["seq"].as_u64()), (Some("book"), Some(10)));
    }

    /// A protobuf batch frame built from per-event fragments is byte for byte what
    /// prost encodes for the whole batch, and decodes to the same updates.
    #[test]
    fn proto_frame_from_fragments_equals_prost_encoding_of_the_batch() {
        use crate::codec::proto::{self, pb};
        use prost::Message;
        let (mut engine, fanout) = setup(OutboxConfig::default());
        let outbox = fanout.outbox(Format::Proto);
        for channel in Channel::ALL {
            fanout.subscribe(&outbox, InstrumentId(0), channel, None, Delivery::Full);
        }
        let mut items = Vec::new();
        fanout.drain(&outbox, &mut items);
        let mut expected = Vec::new();
        for i in 0..30 {
            let payload = match i % 3 {
                0 => quote(10 + i),
                1 => trade(i as u64),
                _ => Payload::Book(BookDelta {
                    bids: vec![(Price::from_units(i), Size(3)), (Price::from_units(i - 1), Size::ZERO)],
                    asks: vec![(Price::from_units(1000 + i), Size(2))],
                }),
            };
            let mut event = Event::new(InstrumentId(0), 1_700_000_000_000_000_000, 1_700_000_000_000_150_000, payload);
            engine.apply(&mut event).unwrap();
            fanout.publish(&event);
            expected.push(proto::update(fanout.instruments.get(event.instrument), &event));
        }
        items.clear();
        fanout.drain(&outbox, &mut items);
        let mut frames = Vec::new();
        build_frames(&items, Format::Proto, 1 << 20, &mut frames);
        assert_eq!(frames.len(), 1);
        let whole = pb::ServerMessage { kind: Some(pb::server_message::Kind::Batch(pb::Batch { updates: expected })) };
        assert_eq!(frames[0].as_ref(), whole.encode_to_vec().as_slice());
        assert_eq!(pb::ServerMessage::decode(frames[0].as_ref()).unwrap(), whole);
    }

    #[test]
    fn frames_respect_the_size_cap() {
        let items: Vec<Item> = (0..10)
            .map(|seq| {
                Item::Update(Arc::new(Encoded {
                    instrument: InstrumentId(0),
                    channel: Channel::Quotes,
                    seq,
                    final_value: false,
                    ts_recv: 0,
                    fragments: [Bytes::from(format!("{{\"seq\":{seq}}}")), Bytes::new()],
                }))
            })
            .collect();
        let mut frames = Vec::new();
        build_frames(&items, Format::Json, 60, &mut frames);
        assert!(frames.len() > 1);
        let total: usize = frames
            .iter()
            .map(|f| serde_json::from_slice::<serde_json::Value>(f).unwrap()["updates"].as_array().unwrap().len())
            .sum();
        assert_eq!(total, 10);
    }
}
