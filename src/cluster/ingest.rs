//! The ingest role's side of the bus: every sequenced event, encoded once,
//! published to JetStream on its instrument's subject, and a checkpoint of
//! each changed instrument every `checkpoint_interval` (where a gateway starts).
//!
//! The engine task hands batches to the [`BusTap`] after the journal and before
//! its own fan-out; the tap never waits: when the publisher cannot keep up
//! (NATS away longer than its queue lasts), batches are dropped, counted
//! (`tickwire_bus_dropped_events_total`) and every instrument gets a checkpoint
//! at the next tick, so gateways see the hole by sequence, tell their clients
//! (`gap`, `book_invalidated`) and resynchronise from the checkpoint.
//!
//! Publishing is asynchronous with a bounded window of acknowledgements in
//! flight; every event carries `Nats-Msg-Id` = `symbol/channel/seq`, so an
//! event published twice (a restarted ingest) is stored once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::wire::{self, checkpoint_subject, event_subject};
use super::{Bus, BusError};
use crate::book::{Checkpoint, Engine};
use crate::model::{Channel, Event, InstrumentId, Instruments, SequenceLine, now_nanos};

/// Items queued from the engine to the publisher.
pub enum BusItem {
    Events(Vec<Event>),
    Checkpoint(InstrumentId, Box<Checkpoint>),
}

/// Batches the publisher may fall behind by before batches are dropped.
const QUEUE_ITEMS: usize = 4096;
/// Messages published and not yet acknowledged; past it, the publisher waits
/// for the oldest acknowledgement.
const ACKS_IN_FLIGHT: usize = 16 * 1024;
/// Every instrument gets a checkpoint at least this often, changed or not, so
/// that the stream's age limit never leaves a quiet instrument without one.
const CHECKPOINT_ALL_EVERY: Duration = Duration::from_secs(60);

/// What the publisher counts beyond its metrics (its warnings are rate-limited by them).
#[derive(Debug, Default)]
struct PublishStats {
    errors: AtomicU64,
    dropped: AtomicU64,
}

/// The engine's handle on the publisher.
pub struct BusTap {
    tx: mpsc::Sender<BusItem>,
    epoch: u64,
    interval: Duration,
    last_checkpoint: Instant,
    last_full: Instant,
    /// Instruments changed since their last checkpoint.
    dirty: Vec<bool>,
    stats: Arc<PublishStats>,
}

impl BusTap {
    /// Queues a sequenced batch for the bus; never waits.
    pub fn record(&mut self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        for event in events {
            self.dirty[event.instrument.index()] = true;
        }
        if let Err(error) = self.tx.try_send(BusItem::Events(events.to_vec())) {
            let lost = events.len() as u64;
            self.stats.dropped.fetch_add(lost, Ordering::Relaxed);
            metrics::counter!("tickwire_bus_dropped_events_total").increment(lost);
            if self.stats.dropped.load(Ordering::Relaxed) == lost {
                tracing::error!(
                    "the bus publisher is behind (or gone): events dropped from the bus; gateways resynchronise from the next checkpoints"
                );
            }
            if matches!(error, mpsc::error::TrySendError::Full(_)) {
                // Checkpoint everything as soon as there is room again.
                self.last_full = Instant::now() - CHECKPOINT_ALL_EVERY;
            }
        }
    }

    /// Publishes checkpoints of the instruments that changed, when they are due.
    pub fn checkpoint(&mut self, engine: &Engine) {
        let now = Instant::now();
        if now.duration_since(self.last_checkpoint) < self.interval {
            return;
        }
        let all = now.duration_since(self.last_full) >= CHECKPOINT_ALL_EVERY;
        if self.tx.capacity() < self.dirty.len() {
            return; // no room for them now; they stay due
        }
        self.last_checkpoint = now;
        if all {
            self.last_full = now;
        }
        for (index, dirty) in self.dirty.iter_mut().enumerate() {
            if !(*dirty || all) {
                continue;
            }
            *dirty = false;
            let id = InstrumentId(index as u32);
            let checkpoint = Box::new(engine.checkpoint(id, self.epoch));
            if self.tx.try_send(BusItem::Checkpoint(id, checkpoint)).is_err() {
                self.dirty[index] = true;
                break;
            }
        }
    }
}

/// Builds the tap and the publisher task.
pub fn publisher(
    bus: Bus,
    instruments: Arc<Instruments>,
    epoch: u64,
) -> (BusTap, impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = mpsc::channel(QUEUE_ITEMS);
    let stats = Arc::new(PublishStats::default());
    let long_ago = Instant::now() - CHECKPOINT_ALL_EVERY * 2;
    let tap = BusTap {
        tx,
        epoch,
        interval: bus.config.checkpoint_interval,
        last_checkpoint: long_ago,
        last_full: long_ago,
        dirty: vec![true; instruments.len()],
        stats: stats.clone(),
    };
    (tap, run_publisher(bus, instruments, rx, stats))
}

/// One message for the bus, kept until the stream has acknowledged it.
struct Outbound {
    subject: String,
    headers: Option<HeaderMap>,
    payload: Bytes,
}

/// A message sent and not yet acknowledged.
struct Sent {
    /// Names the acknowledgement (`{inbox}.{id}`); ids only grow.
    id: u64,
    at: Instant,
    message: Outbound,
}

/// An acknowledgement not come within this is a failure (see [`recover`]).
const ACK_TIMEOUT: Duration = Duration::from_secs(3);

/// Publishes queued items in order until the tap is dropped and the queue is drained.
///
/// Each message is published with a reply subject of this node's
/// acknowledgement inbox (one subscription for all of them, instead of a
/// request per message), and acknowledgements are matched in publish order,
/// which is the order the stream stores and answers in. When one fails (an
/// error, a skipped or late acknowledgement: the server went away, the stream
/// was deleted), everything not yet acknowledged is published again, in order,
/// once the connection and the stream are back: the stream drops what it
/// already holds by `Nats-Msg-Id`, so each event is stored once. What was lost
/// may then land behind later events; gateways wait for such late events
/// before they call a hole a gap.
async fn run_publisher(
    bus: Bus,
    instruments: Arc<Instruments>,
    mut rx: mpsc::Receiver<BusItem>,
    stats: Arc<PublishStats>,
) {
    let prefix = bus.config.prefix.clone();
    let subjects: Vec<[String; Channel::COUNT]> = instruments
        .iter()
        .map(|inst| Channel::ALL.map(|channel| event_subject(&prefix, &inst.venue, &inst.symbol, channel)))
        .collect();
    let checkpoints: Vec<String> =
        instruments.iter().map(|inst| checkpoint_subject(&prefix, &inst.venue, &inst.symbol)).collect();
    let inbox = bus.client.new_inbox();
    let mut acks = loop {
        match bus.client.subscribe(format!("{inbox}.*")).await {
            Ok(acks) => break acks,
            Err(error) => {
                tracing::warn!(%error, "cannot subscribe to publish acknowledgements; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let mut inflight: VecDeque<Sent> = VecDeque::new();
    let mut next_id = 0u64;
    let mut body = Vec::with_capacity(256);
    let mut open = true;
    let mut check = tokio::time::interval(Duration::from_millis(250));
    while open || !inflight.is_empty() {
        let item = tokio::select! {
            item = rx.recv(), if open && inflight.len() < ACKS_IN_FLIGHT => match item {
                Some(item) => item,
                None => {
                    open = false;
                    continue;
                }
            },
            Some(ack) = acks.next() => {
                let id = ack.subject.rsplit('.').next().and_then(|id| id.parse::<u64>().ok());
                let refused = ack.status.is_some() || memchr::memmem::find(&ack.payload, b"\"error\"").is_some();
                match (id, inflight.front()) {
                    (Some(id), Some(front)) if id == front.id && !refused => {
                        inflight.pop_front();
                        metrics::counter!("tickwire_bus_acked_total").increment(1);
                    }
                    // Older than what is in flight: a message published again since.
                    (Some(id), Some(front)) if id < front.id => {}
                    (None, _) | (_, None) => {}
                    _ => {
                        let why = if refused { String::from_utf8_lossy(&ack.payload).into_owned() } else { "an acknowledgement was skipped".into() };
                        failed(&stats, &why);
                        if !recover(&bus, &inbox, &mut next_id, &mut inflight, &stats, open).await {
                            return;
                        }
                    }
                }
                continue;
            }
            _ = check.tick() => {
                if inflight.front().is_some_and(|front| front.at.elapsed() > ACK_TIMEOUT) {
                    failed(&stats, "no acknowledgement in time");
                    if !recover(&bus, &inbox, &mut next_id, &mut inflight, &stats, open).await {
                        return;
                    }
                }
                continue;
            }
        };
        let messages: Vec<Outbound> = match item {
            BusItem::Events(events) => events
                .iter()
                .map(|event| {
                    body.clear();
                    wire::encode_event(&mut body, event);
                    let inst = instruments.get(event.instrument);
                    let mut headers = HeaderMap::new();
                    let id = format!("{}/{}/{}", inst.symbol, event.channel().as_str(), event.seq);
                    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
                    Outbound {
                        subject: subjects[event.instrument.index()][event.channel().index()].clone(),
                        headers: Some(headers),
                        payload: Bytes::copy_from_slice(&body),
                    }
                })
                .collect(),
            BusItem::Checkpoint(id, checkpoint) => {
                body.clear();
                wire::encode_checkpoint(&mut body, &checkpoint);
                vec![Outbound {
                    subject: checkpoints[id.index()].clone(),
                    headers: None,
                    payload: Bytes::copy_from_slice(&body),
                }]
            }
        };
        for message in messages {
            next_id += 1;
            let sent = Sent { id: next_id, at: Instant::now(), message };
            let result = publish(&bus, &inbox, &sent).await;
            inflight.push_back(sent);
            match result {
                Ok(()) => {
                    metrics::counter!("tickwire_bus_published_total").increment(1);
                }
                Err(error) => {
                    failed(&stats, &error);
                    if !recover(&bus, &inbox, &mut next_id, &mut inflight, &stats, open).await {
                        return;
                    }
                }
            }
        }
    }
}

async fn publish(bus: &Bus, inbox: &str, sent: &Sent) -> Result<(), String> {
    let message = &sent.message;
    let reply = format!("{inbox}.{}", sent.id);
    match &message.headers {
        Some(headers) => {
            bus.client
                .publish_with_reply_and_headers(
                    message.subject.clone(),
                    reply,
                    headers.clone(),
                    message.payload.clone(),
                )
                .await
        }
        None => bus.client.publish_with_reply(message.subject.clone(), reply, message.payload.clone()).await,
    }
    .map_err(|e| e.to_string())
}

/// After a failed publish: waits for the connection and the stream, then
/// publishes everything not acknowledged again, in order, under new ids.
/// Returns `false` when it gave up (shutting down with the bus away for
/// [`GIVE_UP_AFTER`]).
async fn recover(
    bus: &Bus,
    inbox: &str,
    next_id: &mut u64,
    inflight: &mut VecDeque<Sent>,
    stats: &PublishStats,
    open: bool,
) -> bool {
    let since = Instant::now();
    loop {
        let connected = bus.client.connection_state() == async_nats::connection::State::Connected;
        if connected {
            if let Err(error) = bus.stream().await {
                tracing::warn!(%error, "the bus stream is not there; retrying");
            } else {
                let mut all_sent = true;
                for sent in inflight.iter_mut() {
                    *next_id += 1;
                    sent.id = *next_id;
                    sent.at = Instant::now();
                    if let Err(error) = publish(bus, inbox, sent).await {
                        failed(stats, &error);
                        all_sent = false;
                        break;
                    }
                }
                if all_sent {
                    let count = inflight.len() as u64;
                    metrics::counter!("tickwire_bus_republished_total").increment(count);
                    tracing::info!(count, "republished what the bus had not acknowledged");
                    return true;
                }
            }
        }
        if !open && since.elapsed() > GIVE_UP_AFTER {
            tracing::error!(lost = inflight.len(), "shutting down with the bus away: events not on the bus");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How long a publisher that is shutting down waits for an absent bus.
const GIVE_UP_AFTER: Duration = Duration::from_secs(5);

fn failed(stats: &PublishStats, error: &str) {
    let errors = stats.errors.fetch_add(1, Ordering::Relaxed) + 1;
    metrics::counter!("tickwire_bus_publish_errors_total").increment(1);
    if errors.is_power_of_two() {
        tracing::warn!(error, errors, "publishing to the bus failed; what is not acknowledged is published again");
    }
}

/// The sequence line an ingest node continues: every stream after the last
/// sequence the bus holds for it (and after `store_bases`, when this node also
/// keeps history), in the cluster's epoch. A new (empty) stream starts a new epoch.
pub async fn continue_line(
    bus: &Bus,
    instruments: &Instruments,
    store_bases: Option<&SequenceLine>,
) -> Result<SequenceLine, BusError> {
    let mut stream = bus.stream().await?;
    let info = stream
        .info()
        .await
        .map_err(|e| BusError::Stream { stream: bus.config.stream.clone(), message: e.to_string() })?;
    let empty = info.state.messages == 0;
    let epoch = match bus.epoch().await? {
        Some(epoch) if !empty => epoch,
        _ => {
            let epoch = (now_nanos() / 1_000).max(1);
            tracing::info!(epoch, "the bus stream is new: a new sequence epoch");
            epoch
        }
    };
    let mut bases = vec![[0u64; Channel::COUNT]; instruments.len()];
    if !empty {
        for inst in instruments.iter() {
            for channel in Channel::ALL {
                let subject = event_subject(&bus.config.prefix, &inst.venue, &inst.symbol, channel);
                if let Ok(message) = stream.get_last_raw_message_by_subject(&subject).await {
                    match wire::event_seq(&message.payload) {
                        Ok(seq) => bases[inst.id.index()][channel.index()] = seq,
                        Err(error) => tracing::warn!(%subject, %error, "last bus message unreadable"),
                    }
                }
            }
        }
    }
    if let Some(stored) = store_bases {
        for (base, stored) in bases.iter_mut().zip(stored.bases()) {
            for (b, s) in base.iter_mut().zip(stored) {
                *b = (*b).max(*s);
            }
        }
    }
    Ok(SequenceLine::with_epoch(epoch, bases))
}
