//! Where a subscription starts, for every transport: a snapshot, a resume after
//! a client's `since` (checked against this run's sequence line, served from the
//! recent-history ring or from the store), or a start at a time (`since_time`).
//!
//! WebSocket, SSE and long-poll call [`start_stream`] for each (instrument,
//! channel) a request names; the fan-out queues what follows. A resume from the
//! store holds the live updates while it reads, then releases them behind the
//! history and a `live` marker (see [`Fanout::hold`]), so nothing is missed and
//! nothing repeats.

use std::sync::Arc;
use std::time::Duration;

use crate::codec::{Delivery, ErrorCode, RequestError};
use crate::fanout::{Fanout, Outbox, Resume};
use crate::model::{Channel, Event, InstrumentId, Instruments, Lookup, Nanos, SinceCheck, is_pattern};
use crate::store::writer::WriterStats;
use crate::store::{Store, StoreIds};

/// What sessions and request handlers need of the history store.
#[derive(Clone)]
pub struct HistoryAccess {
    pub store: Store,
    /// Store ids of this process's instruments.
    pub ids: Arc<StoreIds>,
    /// The writer's counters, when this server records history.
    pub writer: Option<Arc<WriterStats>>,
    /// Where the store's continuous sequence line began (ns): older rows came
    /// from runs whose sequences restarted and never continue a resume.
    pub line_started: Nanos,
    /// Levels a side in book snapshots (`--book-depth`), for those replay sends.
    pub book_depth: usize,
}

/// The instruments a request's names stand for, and what they could not.
#[derive(Debug, Default)]
pub struct Resolved<'a> {
    /// Each instrument once, in the order first named.
    pub ids: Vec<InstrumentId>,
    /// Names that are no symbol, alias or pattern of anything here.
    pub unknown: Vec<&'a str>,
    /// Names that are another spelling of several instruments.
    pub ambiguous: Vec<(&'a str, Vec<InstrumentId>)>,
    /// Names taken as another spelling of one instrument (name, instrument).
    pub aliases: Vec<(&'a str, InstrumentId)>,
    /// Instruments named outright (by symbol or alias) that the client may not
    /// use; a pattern's matches it may not use are left out instead.
    pub denied: Vec<InstrumentId>,
}

/// Resolves the names of a subscribe, an unsubscribe or a stream query, the
/// same way for every transport: a symbol is itself; a name with `*` is a
/// pattern over every instrument (`*`, `binance:*`, `*-USD`); another spelling
/// of exactly one instrument (`BTCUSDT` on Binance, `XBT/USD` on Kraken, any
/// case) is that instrument.
///
/// `allowed` says which instruments the client may use (its key's
/// entitlements): a pattern stands for those it matches and may use.
pub fn resolve_symbols<'a>(
    instruments: &Instruments,
    names: impl IntoIterator<Item = &'a str>,
    allowed: impl Fn(InstrumentId) -> bool,
) -> Resolved<'a> {
    let mut out = Resolved::default();
    let add = |ids: &mut Vec<InstrumentId>, id| {
        if !ids.contains(&id) {
            ids.push(id);
        }
    };
    for name in names {
        if is_pattern(name) {
            let matched = instruments.matching(name);
            if matched.is_empty() {
                out.unknown.push(name);
            }
            for id in matched.into_iter().filter(|&id| allowed(id)) {
                add(&mut out.ids, id);
            }
            continue;
        }
        match instruments.resolve(name) {
            Lookup::Symbol(id) | Lookup::Alias(id) if !allowed(id) => add(&mut out.denied, id),
            Lookup::Symbol(id) => add(&mut out.ids, id),
            Lookup::Alias(id) => {
                add(&mut out.ids, id);
                if !out.aliases.iter().any(|(n, _)| *n == name) {
                    out.aliases.push((name, id));
                }
            }
            Lookup::Ambiguous(ids) => out.ambiguous.push((name, ids)),
            Lookup::Unknown => out.unknown.push(name),
        }
    }
    out
}

impl Resolved<'_> {
    /// The errors naming what could not be resolved: one for every unknown
    /// name together, one per ambiguous name with the symbols to choose from.
    pub fn errors(&self, instruments: &Instruments, op: &str) -> Vec<RequestError> {
        let mut errors = Vec::new();
        if !self.unknown.is_empty() {
            let listed: Vec<_> = self.unknown.iter().take(20).copied().collect();
            let more = match self.unknown.len() - listed.len() {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            errors.push(RequestError::new(
                ErrorCode::UnknownSymbol,
                format!("no instrument {}{more} (GET /v1/instruments lists them)", listed.join(", ")),
                Some(op),
            ));
        }
        for (name, ids) in &self.ambiguous {
            errors.push(RequestError::new(ErrorCode::AmbiguousSymbol, instruments.ambiguity(name, ids), Some(op)));
        }
        errors
    }
}

/// Where the client asked one stream to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// A snapshot, then the updates after it.
    Snapshot,
    /// After this sequence, which the client saw in the run named by `epoch`
    /// (`None`: it did not say).
    Since { seq: u64, epoch: Option<u64> },
    /// The stored updates from this exchange time (ns) on, then live.
    Time(Nanos),
}

/// Most stored events one resume may replay; beyond it, a gap and a snapshot.
const HISTORY_RESUME_LIMIT: usize = 100_000;
/// How long a resume from history waits for the writer to store what the ring
/// no longer holds before it settles for a gap and a snapshot. Live updates are
/// held meanwhile, so waiting loses nothing; under load (CI, a busy machine) the
/// writer can trail by a second or more.
const STORE_CATCH_UP: Duration = Duration::from_secs(5);

/// Subscribes `outbox` to one stream from `start`. A `since_time` the server
/// cannot serve (no store) queues an error and a snapshot.
pub async fn start_stream(
    fanout: &Fanout,
    history: Option<&HistoryAccess>,
    outbox: &Arc<Outbox>,
    id: InstrumentId,
    channel: Channel,
    start: StartAt,
    delivery: Delivery,
) -> Resume {
    if let Some(source) = fanout.source() {
        wait_until_ready(source.want(id), fanout, id).await;
    }
    let check = match start {
        StartAt::Snapshot => None,
        StartAt::Since { seq, epoch } => Some(fanout.line().check(id, channel, seq, epoch)),
        StartAt::Time(at) => match history {
            // Candles are derived, not stored: they start from their snapshot.
            _ if !channel.is_stored() => None,
            // Announced as a resume from an earlier run is: the client has no
            // snapshot, so the `live` marker tells it this run's epoch.
            Some(history) => Some(SinceCheck::EarlierRun(seq_before_time(fanout, history, id, channel, at).await)),
            None => {
                let error = RequestError::new(
                    ErrorCode::BadSince,
                    "since_time needs a server that keeps history (--store); subscribed from a snapshot instead",
                    Some("subscribe"),
                );
                let symbol = &fanout.instruments().get(id).symbol;
                outbox.push_message(bytes::Bytes::from(outbox.format().encode_error(&error.about(symbol, channel))));
                None
            }
        },
    };
    match check {
        Some(SinceCheck::ThisRun(after) | SinceCheck::EarlierRun(after))
            if needs_history(fanout, history, id, channel, after) =>
        {
            let hold_from = fanout.hold(outbox, id, channel, delivery);
            let stored = read_history(history, id, channel, after, hold_from).await;
            fanout.release_hold(outbox, id, channel, after, &stored)
        }
        check => fanout.subscribe_checked(outbox, id, channel, check, delivery),
    }
}

/// Longest a stream waits for a cluster gateway to take its instrument from the bus.
const SOURCE_READY: Duration = Duration::from_secs(10);

/// Waits until the instrument's state is current (a cluster gateway has
/// restored it from the bus and caught up). Past [`SOURCE_READY`] the stream
/// starts anyway: the snapshot is what the gateway has, and when the
/// instrument catches up, the client is told of what it did not get (`gap`,
/// `book_invalidated`).
pub async fn wait_until_ready(mut ready: tokio::sync::watch::Receiver<bool>, fanout: &Fanout, id: InstrumentId) {
    if *ready.borrow() {
        return;
    }
    if tokio::time::timeout(SOURCE_READY, ready.wait_for(|ready| *ready)).await.is_err() {
        metrics::counter!("tickwire_bus_not_ready_total").increment(1);
        tracing::warn!(symbol = %fanout.instruments().get(id).symbol, "the instrument is not current on the bus yet; the stream starts from what this gateway has");
    }
}

/// The sequence a `since_time` of `at` resumes after: the one before the first
/// stored update at or after `at` in this store's line (or in the ring, when the
/// writer has not stored it yet); the current sequence when nothing is newer.
async fn seq_before_time(
    fanout: &Fanout,
    history: &HistoryAccess,
    id: InstrumentId,
    channel: Channel,
    at: Nanos,
) -> u64 {
    let store_id = history.ids.store_id(id);
    let stored =
        history.store.first_seq_at(store_id, channel, at, history.line_started).await.unwrap_or_else(|error| {
            tracing::warn!(%error, "since_time: the store could not be read; starting from the ring");
            None
        });
    match stored.or_else(|| fanout.first_ring_seq_at(id, channel, at)) {
        Some(first) => first.saturating_sub(1),
        None => fanout.current_seq(id, channel),
    }
}

/// Whether a resume after `after` must be served from stored history: there is
/// a store, it keeps this channel, and the ring no longer continues `after`.
fn needs_history(
    fanout: &Fanout,
    history: Option<&HistoryAccess>,
    id: InstrumentId,
    channel: Channel,
    after: u64,
) -> bool {
    // Candles are not stored: past the ring they resume with a gap and a snapshot.
    history.is_some() && channel.is_stored() && !fanout.ring_covers(id, channel, after)
}

/// Reads stored updates after `after` until they reach `upto` (where the held
/// live updates begin), waiting for the writer, which trails the live stream a
/// little. Returns what continues `after` without a hole;
/// [`Fanout::release_hold`] bridges what is missing from the ring when it can
/// (the writer is down or slow), else ends in a gap.
async fn read_history(
    history: Option<&HistoryAccess>,
    id: InstrumentId,
    channel: Channel,
    after: u64,
    upto: u64,
) -> Vec<Event> {
    let Some(history) = history else {
        return Vec::new();
    };
    let store_id = history.ids.store_id(id);
    let mut events: Vec<Event> = Vec::new();
    let mut last = after;
    let deadline = tokio::time::Instant::now() + STORE_CATCH_UP;
    while last < upto {
        let limit = HISTORY_RESUME_LIMIT.saturating_sub(events.len());
        if limit == 0 || tokio::time::Instant::now() >= deadline {
            break;
        }
        let read = match history.store.read_since(store_id, channel, last, history.line_started, limit).await {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(%error, "resume from history failed; the client gets a gap");
                break;
            }
        };
        let contiguous = read.iter().zip(last + 1..).take_while(|(e, seq)| e.seq == *seq).count();
        if contiguous < read.len() {
            // A hole in the store (a recorded gap): history cannot continue past it.
            events.extend(read.into_iter().take(contiguous));
            break;
        }
        match read.last() {
            Some(tail) => last = tail.seq,
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        events.extend(read);
    }
    for event in &mut events {
        event.instrument = id; // rows name the store's instrument id
    }
    if !events.is_empty() {
        metrics::counter!("tickwire_resumes_from_history_total").increment(1);
    }
    events
}
