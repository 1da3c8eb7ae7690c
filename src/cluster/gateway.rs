//! The gateway role's side of the bus: it takes an instrument from JetStream
//! only while a client wants it, mirrors the ingest node's state of it, and
//! fans out the ingest node's events under the ingest node's sequences.
//!
//! Per instrument in demand, one task follows an ordered consumer on
//! `{prefix}.{venue}.{symbol}.*`, starting at the later of (now − backfill) and
//! the instrument's last checkpoint, whichever is earlier: the events before the
//! first checkpoint fill the ring (so that a client moving from another gateway
//! resumes without a gap); the checkpoint restores the state; the events after
//! it are applied. The instrument is ready (a stream may start from it) once it
//! is restored and the consumer has caught up with the stream.
//!
//! One mirror task owns the [`Engine`] (as the engine task does on an ingest
//! node) and checks every event's sequence against what it published:
//! - a sequence already published is dropped (a consumer restarted, a
//!   republish): counted as a duplicate;
//! - a hole holds the stream's later events for up to [`HOLE_WAIT`]: an
//!   ingest node that republishes after a bus failure lands the missing events
//!   late, and they are then delivered in order; a hole that stays (the stream
//!   no longer holds the events, the ingest node dropped them) is told to
//!   subscribers as `gap` (`history_exhausted`); a book with a hole waits for
//!   the next checkpoint and is then sent as `book_invalidated` and a fresh
//!   snapshot;
//! - each checkpoint is also a check: a mirror that is behind it (events lost
//!   without a later one to show it) resynchronises from it the same way;
//! - a checkpoint of another epoch (the stream was recreated and sequences
//!   started again) replaces the sequence line and closes every client with
//!   1012, so that clients reconnect and are told `epoch_changed`.
//!
//! The ordered consumer itself notices missed deliveries (NATS disconnects, a
//! slow-consumer cut) and recreates itself where it left off, so a hole on the
//! bus is refilled from the stream before the sequence check ever sees it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::stream::Stream;
use futures_util::StreamExt;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::Bus;
use super::wire::{self, CHECKPOINT_TOKEN, channel_of_token, checkpoint_subject, instrument_filter};
use crate::book::{Checkpoint, Engine};
use crate::codec::close;
use crate::fanout::{EventSource, Fanout, Outbox, wake_all};
use crate::latency::EngineLatencies;
use crate::model::{Channel, Event, InstrumentId, Instruments, Payload, SequenceLine};

/// What a gateway's bus side counts beyond its metrics: what `/v1/feeds`
/// shows, and what rate-limits its warnings.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Messages from the stream's consumers.
    pub received: AtomicU64,
    pub bad_messages: AtomicU64,
}

enum MirrorItem {
    Event(Event),
    Checkpoint(InstrumentId, Box<Checkpoint>),
    CaughtUp(InstrumentId),
    Forget(InstrumentId),
}

/// An instrument the gateway takes from the bus.
struct Taken {
    cancel: CancellationToken,
    /// The last time a client asked for it (interest is kept a while after).
    wanted: Instant,
}

/// Items queued from the consumers to the mirror.
const MIRROR_QUEUE: usize = 8192;

/// The gateway's [`EventSource`]: instruments in demand, each followed on the bus.
pub struct BusSource {
    stream: Stream,
    bus: Bus,
    instruments: Arc<Instruments>,
    taken: Mutex<Vec<Option<Taken>>>,
    ready: Arc<[watch::Sender<bool>]>,
    mirror: mpsc::Sender<MirrorItem>,
    stop: CancellationToken,
    pub stats: Arc<GatewayStats>,
}

impl EventSource for BusSource {
    fn want(&self, id: InstrumentId) -> watch::Receiver<bool> {
        let mut taken = self.taken.lock();
        match &mut taken[id.index()] {
            Some(t) => t.wanted = Instant::now(),
            slot @ None => {
                let cancel = self.stop.child_token();
                *slot = Some(Taken { cancel: cancel.clone(), wanted: Instant::now() });
                metrics::gauge!("tickwire_bus_interest_instruments").increment(1.0);
                let inst = self.instruments.get(id);
                tracing::info!(symbol = %inst.symbol, "taking an instrument from the bus");
                tokio::spawn(follow(
                    self.stream.clone(),
                    self.bus.config.prefix.clone(),
                    self.bus.config.backfill,
                    id,
                    (inst.venue.to_string(), inst.symbol.to_string()),
                    self.mirror.clone(),
                    cancel,
                    self.stats.clone(),
                ));
            }
        }
        self.ready[id.index()].subscribe()
    }
}

impl BusSource {
    /// Starts the mirror over `engine` (which must be the engine `fanout` reads
    /// its state from) and returns the source to give the fan-out, plus the
    /// mirror and interest tasks.
    pub async fn start(
        bus: Bus,
        instruments: Arc<Instruments>,
        engine: Engine,
        stop: CancellationToken,
    ) -> Result<(Arc<BusSource>, MirrorStart), super::BusError> {
        let stream = bus.stream().await?;
        let (tx, rx) = mpsc::channel(MIRROR_QUEUE);
        let ready: Arc<[watch::Sender<bool>]> = (0..instruments.len()).map(|_| watch::channel(false).0).collect();
        let source = Arc::new(BusSource {
            stream,
            bus,
            instruments: instruments.clone(),
            taken: Mutex::new((0..instruments.len()).map(|_| None).collect()),
            ready: ready.clone(),
            mirror: tx,
            stop,
            stats: Arc::new(GatewayStats::default()),
        });
        Ok((source.clone(), MirrorStart { engine, rx, ready, source }))
    }

    /// The instruments taken now (`/v1/feeds`).
    pub fn taken(&self) -> Vec<InstrumentId> {
        let taken = self.taken.lock();
        (0..taken.len()).filter(|i| taken[*i].is_some()).map(|i| InstrumentId(i as u32)).collect()
    }

    /// Lets go of instruments no client has wanted for the configured linger.
    fn release_unwanted(&self, fanout: &Fanout) {
        let mut taken = self.taken.lock();
        for (index, slot) in taken.iter_mut().enumerate() {
            let Some(t) = slot else { continue };
            let id = InstrumentId(index as u32);
            if Channel::ALL.iter().any(|c| fanout.subscribers(id, *c) > 0) {
                t.wanted = Instant::now();
                continue;
            }
            if t.wanted.elapsed() < self.bus.config.linger {
                continue;
            }
            t.cancel.cancel();
            *slot = None;
            metrics::gauge!("tickwire_bus_interest_instruments").decrement(1.0);
            tracing::info!(symbol = %self.instruments.get(id).symbol, "no client wants the instrument: no longer taken from the bus");
            let _ = self.mirror.try_send(MirrorItem::Forget(id));
        }
    }
}

/// What the mirror task needs; [`MirrorStart::run`] is the task.
pub struct MirrorStart {
    engine: Engine,
    rx: mpsc::Receiver<MirrorItem>,
    ready: Arc<[watch::Sender<bool>]>,
    source: Arc<BusSource>,
}

/// What the mirror knows of one instrument.
#[derive(Debug, Clone, Copy, Default)]
struct Track {
    restored: bool,
    book_ok: bool,
    caught_up: bool,
    /// Last sequence given to the fan-out, per channel.
    published: [u64; Channel::COUNT],
}

/// How long a stream waits for events missing before later ones (a
/// republish after a bus failure lands them late) before it calls the hole a
/// gap: longer than the ingest node's acknowledgement timeout and reconnect.
const HOLE_WAIT: Duration = Duration::from_secs(5);
/// Most events held behind one hole; past it the hole is called at once.
const HOLE_MAX_EVENTS: usize = 100_000;

/// Events held behind a hole in one stream.
struct Hole {
    since: Instant,
    pending: BTreeMap<u64, Event>,
}

/// The mirror task's state: the engine, and what it published of each stream.
struct Mirror {
    engine: Engine,
    fanout: Arc<Fanout>,
    tracks: Vec<Track>,
    holes: FxHashMap<(InstrumentId, Channel), Hole>,
    ready: Arc<[watch::Sender<bool>]>,
    stats: Arc<GatewayStats>,
    wake: Vec<Arc<Outbox>>,
    latencies: EngineLatencies,
}

impl MirrorStart {
    /// Applies what the consumers deliver and fans it out, until `stop`.
    pub async fn run(self, fanout: Arc<Fanout>) {
        let MirrorStart { engine, mut rx, ready, source } = self;
        let stop = source.stop.clone();
        let mut mirror = Mirror {
            engine,
            latencies: EngineLatencies::new(fanout.instruments()),
            tracks: vec![Track::default(); fanout.instruments().len()],
            fanout,
            holes: FxHashMap::default(),
            ready,
            stats: source.stats.clone(),
            wake: Vec::new(),
        };
        let mut sweep = tokio::time::interval(Duration::from_millis(500));
        loop {
            let item = tokio::select! {
                _ = stop.cancelled() => return,
                _ = sweep.tick() => {
                    source.release_unwanted(&mirror.fanout);
                    mirror.call_old_holes();
                    wake_all(&mut mirror.wake);
                    continue;
                }
                item = rx.recv() => match item {
                    Some(item) => item,
                    None => return,
                },
            };
            let mut next = Some(item);
            // Everything queued now goes out before the writers are woken.
            for _ in 0..1024 {
                let Some(item) = next.take().or_else(|| rx.try_recv().ok()) else { break };
                mirror.apply(item);
            }
            wake_all(&mut mirror.wake);
        }
    }
}

impl Mirror {
    fn apply(&mut self, item: MirrorItem) {
        match item {
            MirrorItem::Event(event) => self.on_event(event),
            MirrorItem::Checkpoint(id, checkpoint) => self.on_checkpoint(id, &checkpoint),
            MirrorItem::CaughtUp(id) => {
                let t = &mut self.tracks[id.index()];
                t.caught_up = true;
                if t.restored {
                    self.ready[id.index()].send_replace(true);
                }
            }
            MirrorItem::Forget(id) => {
                self.tracks[id.index()] = Track::default();
                self.holes.retain(|(hid, _), _| *hid != id);
                self.fanout.clear_ring(id);
                self.ready[id.index()].send_replace(false);
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        let id = event.instrument;
        let channel = event.channel();
        let t = &mut self.tracks[id.index()];
        if event.seq <= t.published[channel.index()] {
            metrics::counter!("tickwire_bus_duplicates_total").increment(1);
            return;
        }
        if !t.restored {
            // Before the first checkpoint: recent history for the ring only
            // (nobody is subscribed until the instrument is ready).
            t.published[channel.index()] = event.seq;
            self.fanout.publish_deferred(&event, &mut self.wake);
            return;
        }
        let key = (id, channel);
        if let Some(hole) = self.holes.get_mut(&key) {
            hole.pending.insert(event.seq, event);
            if hole.pending.len() > HOLE_MAX_EVENTS {
                hole.since = Instant::now() - HOLE_WAIT;
            }
            self.drain(key);
            return;
        }
        if event.seq > t.published[channel.index()] + 1 {
            // Events missing: wait for them a while (they may come late).
            metrics::counter!("tickwire_bus_holes_total").increment(1);
            let pending = BTreeMap::from([(event.seq, event)]);
            self.holes.insert(key, Hole { since: Instant::now(), pending });
            return;
        }
        self.deliver(event);
    }

    /// Applies and publishes the next event of its stream.
    fn deliver(&mut self, mut event: Event) {
        let id = event.instrument;
        let channel = event.channel();
        let t = &mut self.tracks[id.index()];
        t.published[channel.index()] = event.seq;
        if channel == Channel::Book && !t.book_ok {
            return; // waits for the next checkpoint
        }
        if let Err(error) = self.engine.apply_sequenced(&mut event) {
            tracing::warn!(%error, "a bus event the mirror cannot apply; the book waits for the next checkpoint");
            t.book_ok = false;
            return;
        }
        self.latencies.record(&event);
        self.fanout.publish_deferred(&event, &mut self.wake);
    }

    /// Delivers what a hole held once it continues the stream.
    fn drain(&mut self, key: (InstrumentId, Channel)) {
        loop {
            let next = self.tracks[key.0.index()].published[key.1.index()] + 1;
            let Some(hole) = self.holes.get_mut(&key) else { return };
            let Some(entry) = hole.pending.first_entry() else {
                self.holes.remove(&key);
                return;
            };
            if *entry.key() < next {
                entry.remove(); // a duplicate
                continue;
            }
            if *entry.key() > next {
                return; // still missing
            }
            let event = entry.remove();
            self.deliver(event);
        }
    }

    /// Holes older than [`HOLE_WAIT`] are gaps: subscribers are told
    /// (`gap`; a book waits for the next checkpoint) and what follows flows.
    fn call_old_holes(&mut self) {
        let old: Vec<_> =
            self.holes.iter().filter(|(_, hole)| hole.since.elapsed() >= HOLE_WAIT).map(|(key, _)| *key).collect();
        for key @ (id, channel) in old {
            let Some(first) = self.holes.get(&key).and_then(|h| h.pending.keys().next().copied()) else {
                self.holes.remove(&key);
                continue;
            };
            let t = &mut self.tracks[id.index()];
            let from = t.published[channel.index()] + 1;
            tracing::warn!(
                symbol = %self.fanout.instruments().get(id).symbol,
                channel = channel.as_str(),
                from,
                to = first - 1,
                "events missing on the bus: told to subscribers as a gap"
            );
            metrics::counter!("tickwire_bus_gaps_total").increment(1);
            if channel == Channel::Book {
                t.book_ok = false;
            } else {
                self.fanout.publish_gap(id, channel, from, first - 1, &mut self.wake);
            }
            t.published[channel.index()] = first - 1;
            if let Some(hole) = self.holes.get_mut(&key) {
                hole.since = Instant::now(); // for a further hole behind this one
            }
            self.drain(key);
        }
    }

    fn on_checkpoint(&mut self, id: InstrumentId, checkpoint: &Checkpoint) {
        if checkpoint.epoch != self.fanout.line().epoch {
            metrics::counter!("tickwire_bus_epoch_changes_total").increment(1);
            tracing::error!(
                old = self.fanout.line().epoch,
                new = checkpoint.epoch,
                "the bus began a new sequence epoch (its stream was recreated): closing every client with 1012"
            );
            let count = self.fanout.instruments().len();
            self.fanout.replace_line(SequenceLine::with_epoch(checkpoint.epoch, vec![[0; Channel::COUNT]; count]));
            self.fanout.close_subscribers(close::SERVICE_RESTART, "sequences restarted; reconnect and resume");
            for t in self.tracks.iter_mut() {
                *t = Track { caught_up: t.caught_up, ..Track::default() };
            }
            self.holes.clear();
        }
        let t = &mut self.tracks[id.index()];
        if t.restored && self.holes.keys().any(|(hid, _)| *hid == id) {
            return; // events are late; a later checkpoint checks the state
        }
        let behind = Channel::ALL.iter().any(|c| t.published[c.index()] < checkpoint.seqs[c.index()]);
        if t.restored && t.book_ok && !behind {
            return; // consistent with what was applied
        }
        if let Err(error) = self.engine.restore(id, checkpoint) {
            self.stats.bad_messages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, "a checkpoint the mirror cannot apply");
            return;
        }
        if t.restored {
            metrics::counter!("tickwire_bus_resyncs_total").increment(1);
            for channel in Channel::ALL {
                let (from, to) = (t.published[channel.index()] + 1, checkpoint.seqs[channel.index()]);
                if channel != Channel::Book && to >= from {
                    self.fanout.publish_gap(id, channel, from, to, &mut self.wake);
                }
            }
            let book_seq = checkpoint.seqs[Channel::Book.index()];
            if book_seq > 0 && (!t.book_ok || book_seq > t.published[Channel::Book.index()]) {
                // Subscribers' books are wrong: `book_invalidated` and a fresh snapshot.
                let [seq, ts_event, ts_recv, ts_send] = checkpoint.book_clock;
                let reset = Event {
                    instrument: id,
                    seq,
                    ts_event,
                    ts_recv,
                    ts_send,
                    payload: Payload::BookReset(checkpoint.book.clone()),
                };
                self.fanout.publish_deferred(&reset, &mut self.wake);
            }
        }
        for (published, seq) in t.published.iter_mut().zip(checkpoint.seqs) {
            *published = (*published).max(seq);
        }
        t.restored = true;
        t.book_ok = true;
        if t.caught_up {
            self.ready[id.index()].send_replace(true);
        }
    }
}

/// Follows one instrument on the bus until `cancel`: recreates the consumer
/// (after a backoff) whenever it fails.
#[allow(clippy::too_many_arguments)]
async fn follow(
    stream: Stream,
    prefix: String,
    backfill: Duration,
    id: InstrumentId,
    (venue, symbol): (String, String),
    mirror: mpsc::Sender<MirrorItem>,
    cancel: CancellationToken,
    stats: Arc<GatewayStats>,
) {
    let checkpoints = checkpoint_subject(&prefix, &venue, &symbol);
    let filter = instrument_filter(&prefix, &venue, &symbol);
    let mut backoff = Duration::from_millis(100);
    // The last failure logged and when: a new kind of failure is always
    // logged, a repeat at most every 30 s.
    let mut reported: Option<(String, Instant)> = None;
    // The stream sequence of the last message handed to the mirror, and the
    // stream it was in: a new consumer continues after it.
    let mut last_seen = None;
    loop {
        let started = Instant::now();
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            outcome = follow_once(&stream, &checkpoints, &filter, backfill, id, &mirror, &stats, &mut last_seen) => outcome,
        };
        match outcome {
            Ok(()) => return, // the mirror is gone
            Err(error) => {
                metrics::counter!("tickwire_bus_consumer_restarts_total").increment(1);
                let repeat = reported.as_ref().is_some_and(|(last, at)| {
                    last.split(':').next() == error.split(':').next() && at.elapsed() < Duration::from_secs(30)
                });
                if !repeat {
                    tracing::warn!(%symbol, %error, retry_in = ?backoff, "following the instrument on the bus failed; retrying");
                    reported = Some((error, Instant::now()));
                }
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Where a consumer got to: the stream sequence of the last message handed to
/// the mirror, in the stream created at `created` (a stream deleted and
/// created again numbers its messages from 1 anew).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    created: time::OffsetDateTime,
    sequence: u64,
}

/// A consumer with nothing for this long is checked against the stream.
const IDLE_CHECK: Duration = Duration::from_secs(2);

/// One consumer's life: from the start point until it fails (`Err`) or the
/// mirror is gone (`Ok`).
#[allow(clippy::too_many_arguments)]
async fn follow_once(
    stream: &Stream,
    checkpoints: &str,
    filter: &str,
    backfill: Duration,
    id: InstrumentId,
    mirror: &mpsc::Sender<MirrorItem>,
    stats: &GatewayStats,
    last_seen: &mut Option<Position>,
) -> Result<(), String> {
    let created = stream.get_info().await.map_err(|e| format!("the stream cannot be read: {e}"))?.created;
    let last_in_stream = stream.get_last_raw_message_by_subject(filter).await.ok().map(|m| m.sequence);
    let deliver_policy = match (*last_seen, last_in_stream) {
        // Continue where the last consumer stopped (the same stream still has it).
        (Some(seen), Some(last)) if seen.created == created && seen.sequence <= last => {
            DeliverPolicy::ByStartSequence { start_sequence: seen.sequence + 1 }
        }
        // A first consumer, or the stream was recreated (its sequences started
        // again): from the last checkpoint, as a new gateway does.
        _ => {
            let checkpoint = stream
                .get_last_raw_message_by_subject(checkpoints)
                .await
                .map_err(|e| format!("no checkpoint of the instrument on the bus yet ({e})"))?;
            DeliverPolicy::ByStartTime { start_time: checkpoint.time.min(time::OffsetDateTime::now_utc() - backfill) }
        }
    };
    let consumer = stream
        .create_consumer(OrderedConfig { filter_subject: filter.to_string(), deliver_policy, ..Default::default() })
        .await
        .map_err(|e| format!("cannot create a consumer: {e}"))?;
    let mut messages = consumer.messages().await.map_err(|e| format!("cannot consume: {e}"))?;
    let mut caught_up = false;
    // Whether this consumer delivered anything yet.
    let mut delivered_any = false;
    loop {
        let message = match tokio::time::timeout(IDLE_CHECK, messages.next()).await {
            Ok(Some(message)) => message.map_err(|e| format!("consumer failed: {e}"))?,
            Ok(None) => return Err("the consumer ended".into()),
            Err(_) => {
                // Quiet, or stalled (a restarted server forgot the consumer):
                // the stream says which.
                match stream.get_last_raw_message_by_subject(filter).await {
                    Ok(last) if Some(last.sequence) != last_seen.map(|p| p.sequence) => {
                        let at = last_seen.map(|p| p.sequence);
                        return Err(format!("the consumer stalled at stream sequence {at:?}"));
                    }
                    Ok(_) => continue,
                    Err(error) => return Err(format!("the stream cannot be read: {error}")),
                }
            }
        };
        stats.received.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tickwire_bus_received_total").increment(1);
        let (pending, sequence, consumer_sequence) = message
            .info()
            .map(|info| (info.pending, info.stream_sequence, info.consumer_sequence))
            .unwrap_or((0, 0, 0));
        if consumer_sequence == 1 && delivered_any {
            // The client library recreated the consumer by itself (the
            // server lost it). When the stream itself was recreated, it
            // started at the old stream's sequence in the new one, which
            // would skip the new stream's first messages: start again here.
            let now = stream.get_info().await.map_err(|e| format!("the stream cannot be read: {e}"))?.created;
            if now != created {
                return Err("the stream was recreated: following it from its last checkpoint".into());
            }
        }
        delivered_any = true;
        let token = message.subject.rsplit('.').next().unwrap_or_default();
        let item = if token == CHECKPOINT_TOKEN {
            wire::decode_checkpoint(&message.payload).map(|cp| MirrorItem::Checkpoint(id, Box::new(cp)))
        } else {
            match channel_of_token(token) {
                Some(channel) => wire::decode_event(&message.payload, id).and_then(|event| {
                    if event.channel() == channel {
                        Ok(MirrorItem::Event(event))
                    } else {
                        Err(wire::WireError::Malformed)
                    }
                }),
                None => Err(wire::WireError::Malformed),
            }
        };
        match item {
            Ok(item) => {
                if mirror.send(item).await.is_err() {
                    return Ok(());
                }
            }
            Err(error) => {
                let bad = stats.bad_messages.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::counter!("tickwire_bus_bad_messages_total").increment(1);
                if bad.is_power_of_two() {
                    tracing::warn!(subject = %message.subject, %error, bad, "a bus message that does not decode: skipped");
                }
            }
        }
        *last_seen = Some(Position { created, sequence });
        if pending == 0 || sequence.is_multiple_of(64) {
            metrics::gauge!("tickwire_bus_consumer_pending", "filter" => filter.to_owned()).set(pending as f64);
        }
        if !caught_up && pending == 0 {
            caught_up = true;
            if mirror.send(MirrorItem::CaughtUp(id)).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// The cluster's epoch, once an ingest node has set it: waits (logging) until then.
pub async fn wait_for_epoch(bus: &Bus, stop: &CancellationToken) -> Option<u64> {
    let mut logged = false;
    loop {
        match bus.epoch().await {
            Ok(Some(epoch)) => return Some(epoch),
            Ok(None) if !logged => {
                tracing::warn!("no ingest node has started on this bus yet; waiting for its sequence epoch");
                logged = true;
            }
            Err(error) if !logged => {
                tracing::warn!(%error, "cannot read the bus's sequence epoch yet; retrying");
                logged = true;
            }
            _ => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
