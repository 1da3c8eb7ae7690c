//! Latest state of every instrument, sequencing, and L2 book maintenance.
//!
//! One owner (the engine task in `app`) feeds every event through [`Engine::apply`],
//! which assigns the per-instrument, per-channel sequence number, stamps `ts_send`,
//! maintains the L2 book, and publishes a fresh [`InstrumentState`] through
//! `arc-swap`. Readers (subscribe snapshots, REST) call [`StateReader::load`] and never
//! take a lock or wait for the writer. The engine stores the new state *before* the
//! event goes to the fan-out, which is what lets a subscriber pair a snapshot at
//! sequence `S` with exactly the deltas after `S`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::model::{
    BookDelta, Candle, CandleInterval, Channel, Event, InstrumentId, Instruments, Nanos, Payload, Price, Quote,
    SequenceLine, Size, Trade, now_nanos,
};

/// A value with the sequence and clocks of the event that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamped<T> {
    pub value: T,
    pub seq: u64,
    pub ts_event: Nanos,
    pub ts_recv: Nanos,
    pub ts_send: Nanos,
}

/// The top of an L2 book, best level first on each side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookLevels {
    pub seq: u64,
    pub ts_event: Nanos,
    pub ts_recv: Nanos,
    pub ts_send: Nanos,
    pub bids: Levels,
    pub asks: Levels,
}

/// Nanoseconds in a day: session statistics run per UTC day.
const DAY_NS: Nanos = 86_400 * 1_000_000_000;

/// Running statistics of the current UTC day, by exchange time (open, high,
/// low, volume): they start again with the first trade of a new day, and a
/// server with a store starts them from the day's stored trades
/// ([`Engine::seed_stats`]), so a restart does not zero them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    pub open: Price,
    pub high: Price,
    pub low: Price,
    pub volume: Size,
    pub trades: u64,
}

/// Everything a new subscriber or a REST caller needs to know about one instrument.
#[derive(Debug, Clone, Default)]
pub struct InstrumentState {
    /// Last sequence assigned per channel (index = `Channel::index`).
    pub seqs: [u64; Channel::COUNT],
    pub quote: Option<Stamped<Quote>>,
    pub last_trade: Option<Stamped<Trade>>,
    pub stats: Option<SessionStats>,
    /// Shared so that quote and trade updates do not copy the book.
    pub book: Arc<BookLevels>,
    /// The latest candle per interval (index = `CandleInterval::index`), as last
    /// published; shared for the same reason as `book`.
    pub candles: Arc<[Option<Stamped<Candle>>; CandleInterval::COUNT]>,
}

/// Why an event was refused by the book.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("instrument id {0} is not in the table")]
    UnknownInstrument(u32),
    #[error("negative size in book delta")]
    NegativeSize,
    #[error("book delta would cross the book (best bid {bid:?} >= best ask {ask:?})")]
    Crossed { bid: Price, ask: Price },
    #[error("candles are made by the engine, not accepted from a feed")]
    DerivedChannel,
}

/// Price levels of one side, best first.
pub type Levels = Vec<(Price, Size)>;

/// A full L2 book: price → size per side.
#[derive(Debug, Clone, Default)]
pub struct L2Book {
    bids: BTreeMap<std::cmp::Reverse<Price>, Size>,
    asks: BTreeMap<Price, Size>,
}

impl L2Book {
    /// Applies a delta atomically: either every level changes or, when the result
    /// would be negative or crossed, none does.
    pub fn apply(&mut self, delta: &BookDelta) -> Result<(), BookError> {
        if delta.bids.iter().chain(&delta.asks).any(|(_, s)| s.0 < 0) {
            return Err(BookError::NegativeSize);
        }
        let undo = self.clone_touched(delta);
        for &(price, size) in &delta.bids {
            set_level(&mut self.bids, std::cmp::Reverse(price), size);
        }
        for &(price, size) in &delta.asks {
            set_level(&mut self.asks, price, size);
        }
        if let (Some(bid), Some(ask)) = (self.best_bid(), self.best_ask())
            && bid.0 >= ask.0
        {
            self.restore(undo);
            return Err(BookError::Crossed { bid: bid.0, ask: ask.0 });
        }
        Ok(())
    }

    fn clone_touched(&self, delta: &BookDelta) -> BookDelta {
        BookDelta {
            bids: delta
                .bids
                .iter()
                .map(|&(p, _)| (p, self.bids.get(&std::cmp::Reverse(p)).copied().unwrap_or(Size::ZERO)))
                .collect(),
            asks: delta.asks.iter().map(|&(p, _)| (p, self.asks.get(&p).copied().unwrap_or(Size::ZERO))).collect(),
        }
    }

    fn restore(&mut self, undo: BookDelta) {
        for (price, size) in undo.bids.into_iter().rev() {
            set_level(&mut self.bids, std::cmp::Reverse(price), size);
        }
        for (price, size) in undo.asks.into_iter().rev() {
            set_level(&mut self.asks, price, size);
        }
    }

    pub fn best_bid(&self) -> Option<(Price, Size)> {
        self.bids.iter().next().map(|(p, s)| (p.0, *s))
    }

    pub fn best_ask(&self) -> Option<(Price, Size)> {
        self.asks.iter().next().map(|(p, s)| (*p, *s))
    }

    pub fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
    }

    /// The best `depth` levels of each side, best first.
    pub fn top(&self, depth: usize) -> (Levels, Levels) {
        (
            self.bids.iter().take(depth).map(|(p, s)| (p.0, *s)).collect(),
            self.asks.iter().take(depth).map(|(p, s)| (*p, *s)).collect(),
        )
    }

    pub fn depth(&self) -> (usize, usize) {
        (self.bids.len(), self.asks.len())
    }

    /// Every level of both sides, best first: the whole book, as a reset.
    pub fn full(&self) -> BookDelta {
        let (bids, asks) = self.top(usize::MAX);
        BookDelta { bids, asks }
    }
}

fn set_level<K: Ord>(side: &mut BTreeMap<K, Size>, key: K, size: Size) {
    if size.is_zero() {
        side.remove(&key);
    } else {
        side.insert(key, size);
    }
}

/// Everything the engine knows of one instrument, whole: what a node that
/// mirrors the engine from the bus (a cluster gateway) starts from before it
/// applies the sequenced events that follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The sequence line's epoch the sequences belong to.
    pub epoch: u64,
    /// Last sequence per channel (index = `Channel::index`).
    pub seqs: [u64; Channel::COUNT],
    pub quote: Option<Stamped<Quote>>,
    pub last_trade: Option<Stamped<Trade>>,
    pub stats: Option<SessionStats>,
    /// The whole L2 book (not only the published depth), at `book_clock`.
    pub book: BookDelta,
    /// `seq`, `ts_event`, `ts_recv`, `ts_send` of the book's last change.
    pub book_clock: [u64; 4],
    pub candles: [Option<Stamped<Candle>>; CandleInterval::COUNT],
}

/// Lock-free read access to the latest state of every instrument. Cheap to clone.
#[derive(Clone)]
pub struct StateReader {
    states: Arc<[ArcSwap<InstrumentState>]>,
}

impl StateReader {
    /// The latest state of `id`; never blocks.
    pub fn load(&self, id: InstrumentId) -> Arc<InstrumentState> {
        self.states[id.index()].load_full()
    }
}

/// How long after a bucket's end a quote or book event (rather than a trade of a
/// later bucket) closes the candle: venues stamp trades and quotes with clocks
/// that may differ a little, and a trade of the old bucket may still be on its way.
pub const CANDLE_CLOSE_GRACE_NS: Nanos = 1_000_000_000;

/// Live candles of one instrument, as the engine builds them from trades.
#[derive(Debug, Clone, Default)]
struct CandleWork {
    /// The open (or just closed) candle per interval.
    current: [Option<Candle>; CandleInterval::COUNT],
    /// Intervals whose candle changed since the last [`Engine::drain_candles`].
    dirty: [bool; CandleInterval::COUNT],
    /// Candles that closed since the last drain (their final value), oldest first.
    closed: Vec<Candle>,
    /// Clocks of the last event that touched the candles.
    ts_event: Nanos,
    ts_recv: Nanos,
}

/// The single writer of instrument state. Pure code: no tasks, no I/O.
pub struct Engine {
    states: Arc<[ArcSwap<InstrumentState>]>,
    books: Vec<L2Book>,
    /// How many levels a side the published book state keeps.
    depth: usize,
    candles: Vec<CandleWork>,
    /// Instruments with candle work for the next drain.
    candles_pending: Vec<InstrumentId>,
    /// Venue (index into `venue_clocks`) of each instrument.
    venue_of: Vec<usize>,
    /// Per venue: the latest exchange time seen on any of its instruments, and
    /// when the earliest of its open candles is due to close.
    venue_clocks: Vec<VenueClock>,
    /// Trades older than the open candle's bucket, left out of live candles.
    pub late_trades: u64,
}

/// A venue's exchange time, which closes the candles of its quiet instruments.
#[derive(Debug, Clone, Copy)]
struct VenueClock {
    now: Nanos,
    /// The earliest `end + CANDLE_CLOSE_GRACE_NS` among the venue's open candles.
    next_close: Nanos,
}

impl Engine {
    /// `depth` is the number of levels per side that book snapshots carry.
    pub fn new(instruments: &Instruments, depth: usize) -> Self {
        let states: Arc<[ArcSwap<InstrumentState>]> =
            (0..instruments.len()).map(|_| ArcSwap::from_pointee(InstrumentState::default())).collect();
        let mut venues: Vec<&str> = Vec::new();
        let venue_of = instruments
            .iter()
            .map(|inst| match venues.iter().position(|v| **v == *inst.venue) {
                Some(index) => index,
                None => {
                    venues.push(&inst.venue);
                    venues.len() - 1
                }
            })
            .collect();
        Self {
            states,
            books: vec![L2Book::default(); instruments.len()],
            depth,
            candles: vec![CandleWork::default(); instruments.len()],
            candles_pending: Vec::new(),
            venue_of,
            venue_clocks: vec![VenueClock { now: 0, next_close: Nanos::MAX }; venues.len()],
            late_trades: 0,
        }
    }

    pub fn reader(&self) -> StateReader {
        StateReader { states: self.states.clone() }
    }

    /// Starts every stream after its base in `line` (call before the first
    /// event): sequences continue where the store says the last run left off.
    pub fn continue_line(&mut self, line: &SequenceLine) {
        for (slot, base) in self.states.iter().zip(line.bases()) {
            let mut state = InstrumentState::clone(&slot.load());
            state.seqs = *base;
            let book = Arc::make_mut(&mut state.book);
            book.seq = base[Channel::Book.index()];
            slot.store(Arc::new(state));
        }
    }

    /// Sequences `event`, stamps `ts_send`, and publishes the new state. Returns an
    /// error (and changes nothing) for an event the book cannot accept.
    pub fn apply(&mut self, event: &mut Event) -> Result<(), BookError> {
        let index = event.instrument.index();
        if index >= self.states.len() {
            return Err(BookError::UnknownInstrument(event.instrument.0));
        }
        // Candles are the engine's own output (see `drain_candles`).
        if let Payload::Candle(_) = event.payload {
            return Err(BookError::DerivedChannel);
        }
        self.apply_to_book(index, &event.payload)?;
        self.track_candles(event);
        self.advance_venue_clock(event.instrument, event.ts_event);
        let slot = &self.states[index];
        let mut next = InstrumentState::clone(&slot.load());
        let channel = event.channel().index();
        next.seqs[channel] += 1;
        event.seq = next.seqs[channel];
        event.ts_send = now_nanos().max(event.ts_recv);
        self.store_state(index, next, event);
        Ok(())
    }

    /// Applies an event another engine has sequenced (a cluster gateway applies
    /// what the ingest node published): the sequence is the event's own, candles
    /// arrive made, and only `ts_send` is stamped here, where clients are served.
    pub fn apply_sequenced(&mut self, event: &mut Event) -> Result<(), BookError> {
        let index = event.instrument.index();
        if index >= self.states.len() {
            return Err(BookError::UnknownInstrument(event.instrument.0));
        }
        self.apply_to_book(index, &event.payload)?;
        let slot = &self.states[index];
        let mut next = InstrumentState::clone(&slot.load());
        next.seqs[event.channel().index()] = event.seq;
        event.ts_send = now_nanos().max(event.ts_recv);
        self.store_state(index, next, event);
        Ok(())
    }

    /// Changes the full L2 book of instrument `index` by a book payload (others
    /// leave it); atomically, as [`L2Book::apply`].
    fn apply_to_book(&mut self, index: usize, payload: &Payload) -> Result<(), BookError> {
        match payload {
            Payload::Book(delta) => self.books[index].apply(delta),
            Payload::BookReset(levels) => {
                let mut fresh = L2Book::default();
                fresh.apply(levels)?;
                self.books[index] = fresh;
                Ok(())
            }
            Payload::Quote(_) | Payload::Trade(_) | Payload::Candle(_) => Ok(()),
        }
    }

    /// The whole state of `id`, for a mirror to start from.
    /// Starts instrument `id`'s day statistics from what the store holds of
    /// today (before the first live trade); unknown ids are ignored.
    pub fn seed_stats(&mut self, id: InstrumentId, stats: SessionStats) {
        if let Some(slot) = self.states.get(id.index()) {
            let mut state = InstrumentState::clone(&slot.load());
            if state.stats.is_none() {
                state.stats = Some(stats);
                slot.store(Arc::new(state));
            }
        }
    }

    pub fn checkpoint(&self, id: InstrumentId, epoch: u64) -> Checkpoint {
        let state = self.states[id.index()].load();
        let book = &state.book;
        Checkpoint {
            epoch,
            seqs: state.seqs,
            quote: state.quote,
            last_trade: state.last_trade,
            stats: state.stats,
            book: self.books[id.index()].full(),
            book_clock: [book.seq, book.ts_event, book.ts_recv, book.ts_send],
            candles: *state.candles,
        }
    }

    /// Replaces the state of `id` with `checkpoint` (a mirror's start, or its
    /// resynchronisation after a hole in what it was sent).
    pub fn restore(&mut self, id: InstrumentId, checkpoint: &Checkpoint) -> Result<(), BookError> {
        let index = id.index();
        if index >= self.states.len() {
            return Err(BookError::UnknownInstrument(id.0));
        }
        let mut book = L2Book::default();
        book.apply(&checkpoint.book)?;
        let (bids, asks) = book.top(self.depth);
        self.books[index] = book;
        let [seq, ts_event, ts_recv, ts_send] = checkpoint.book_clock;
        self.states[index].store(Arc::new(InstrumentState {
            seqs: checkpoint.seqs,
            quote: checkpoint.quote,
            last_trade: checkpoint.last_trade,
            stats: checkpoint.stats,
            book: Arc::new(BookLevels { seq, ts_event, ts_recv, ts_send, bids, asks }),
            candles: Arc::new(checkpoint.candles),
        }));
        Ok(())
    }

    /// Stores `next` (whose sequences already count `event`) with what `event` changed.
    fn store_state(&self, index: usize, mut next: InstrumentState, event: &Event) {
        fn stamp<T>(value: T, event: &Event) -> Stamped<T> {
            Stamped { value, seq: event.seq, ts_event: event.ts_event, ts_recv: event.ts_recv, ts_send: event.ts_send }
        }
        match &event.payload {
            Payload::Quote(quote) => next.quote = Some(stamp(*quote, event)),
            Payload::Trade(trade) => {
                let day = |ts: Nanos| ts / DAY_NS;
                let same_day = match (&next.last_trade, &next.stats) {
                    (Some(previous), Some(_)) => day(previous.ts_event) == day(event.ts_event),
                    (None, Some(_)) => true, // seeded from the store for today
                    _ => false,
                };
                next.last_trade = Some(stamp(*trade, event));
                let current = if same_day { next.stats } else { None };
                next.stats = Some(match current {
                    None => SessionStats {
                        open: trade.price,
                        high: trade.price,
                        low: trade.price,
                        volume: trade.size,
                        trades: 1,
                    },
                    Some(s) => SessionStats {
                        open: s.open,
                        high: s.high.max(trade.price),
                        low: s.low.min(trade.price),
                        volume: Size(s.volume.0.saturating_add(trade.size.0)),
                        trades: s.trades + 1,
                    },
                });
            }
            Payload::Candle(candle) => {
                let mut candles = *next.candles;
                candles[candle.interval.index()] = Some(stamp(**candle, event));
                next.candles = Arc::new(candles);
            }
            Payload::Book(_) | Payload::BookReset(_) => {
                let (bids, asks) = self.books[index].top(self.depth);
                next.book = Arc::new(BookLevels {
                    seq: event.seq,
                    ts_event: event.ts_event,
                    ts_recv: event.ts_recv,
                    ts_send: event.ts_send,
                    bids,
                    asks,
                });
            }
        }
        self.states[index].store(Arc::new(next));
    }

    /// Folds a trade into the instrument's candles, and closes candles whose bucket
    /// the instrument's time has left (a trade of a later bucket at once, any other
    /// event [`CANDLE_CLOSE_GRACE_NS`] after the bucket's end).
    fn track_candles(&mut self, event: &Event) {
        let work = &mut self.candles[event.instrument.index()];
        let trade = match &event.payload {
            Payload::Trade(t) => Some(t),
            _ => None,
        };
        let mut touched = false;
        for interval in CandleInterval::ALL {
            let k = interval.index();
            if let Some(open) = &mut work.current[k]
                && !open.closed
            {
                let over = match trade {
                    Some(_) => event.ts_event >= open.end(),
                    None => event.ts_event >= open.end() + CANDLE_CLOSE_GRACE_NS,
                };
                if over {
                    open.closed = true;
                    work.closed.push(*open);
                    work.dirty[k] = false;
                    touched = true;
                }
            }
            let Some(t) = trade else { continue };
            let bucket = interval.bucket(event.ts_event);
            match &mut work.current[k] {
                Some(open) if open.start == bucket && !open.closed => open.add(t.price, t.size),
                Some(open) if open.start >= bucket => {
                    // Older than the open candle, or in a bucket already closed.
                    if k == 0 {
                        self.late_trades += 1;
                    }
                    continue;
                }
                current => {
                    let candle = Candle::open(interval, event.ts_event, t.price, t.size);
                    let clock = &mut self.venue_clocks[self.venue_of[event.instrument.index()]];
                    clock.next_close = clock.next_close.min(candle.end() + CANDLE_CLOSE_GRACE_NS);
                    *current = Some(candle);
                }
            }
            work.dirty[k] = true;
            touched = true;
        }
        if touched {
            work.ts_event = work.ts_event.max(event.ts_event);
            work.ts_recv = event.ts_recv;
            if !self.candles_pending.contains(&event.instrument) {
                self.candles_pending.push(event.instrument);
            }
        }
    }

    /// Moves the venue's clock to `ts_event`, and once it passes the earliest due
    /// close, closes every candle of the venue's instruments it has left behind:
    /// an instrument that stopped trading (and quoting) still gets its candles
    /// closed, by the time of the instruments around it. The venue's time, not
    /// the wall clock, so that a replayed past closes its candles as it plays.
    fn advance_venue_clock(&mut self, id: InstrumentId, ts_event: Nanos) {
        let venue = self.venue_of[id.index()];
        let clock = &mut self.venue_clocks[venue];
        clock.now = clock.now.max(ts_event);
        if clock.now < clock.next_close {
            return;
        }
        let now = clock.now;
        let mut next_close = Nanos::MAX;
        for (index, work) in self.candles.iter_mut().enumerate() {
            if self.venue_of[index] != venue {
                continue;
            }
            let mut closed_any = false;
            for k in 0..CandleInterval::COUNT {
                let Some(open) = &mut work.current[k] else { continue };
                if open.closed {
                    continue;
                }
                let due = open.end() + CANDLE_CLOSE_GRACE_NS;
                if now >= due {
                    open.closed = true;
                    work.closed.push(*open);
                    work.dirty[k] = false;
                    closed_any = true;
                } else {
                    next_close = next_close.min(due);
                }
            }
            let id = InstrumentId(index as u32);
            if closed_any && !self.candles_pending.contains(&id) {
                self.candles_pending.push(id);
            }
        }
        self.venue_clocks[venue].next_close = next_close;
    }

    /// Sequences and publishes the candles that changed since the last call, as
    /// events for the fan-out: closed candles first (their final value), then the
    /// open ones. The engine's task calls it once per feed batch, so a burst of
    /// trades costs one candle update per interval, not one per trade.
    pub fn drain_candles(&mut self, out: &mut Vec<Event>) {
        for id in self.candles_pending.drain(..) {
            let work = &mut self.candles[id.index()];
            let slot = &self.states[id.index()];
            let mut next = InstrumentState::clone(&slot.load());
            let mut candles = *next.candles;
            let ts_send = now_nanos().max(work.ts_recv);
            let dirty = work.dirty;
            work.dirty = [false; CandleInterval::COUNT];
            let open =
                CandleInterval::ALL.into_iter().filter(|i| dirty[i.index()]).filter_map(|i| work.current[i.index()]);
            for candle in work.closed.drain(..).chain(open) {
                let channel = Channel::candles(candle.interval);
                next.seqs[channel.index()] += 1;
                let event = Event {
                    instrument: id,
                    seq: next.seqs[channel.index()],
                    ts_event: work.ts_event,
                    ts_recv: work.ts_recv,
                    ts_send,
                    payload: Payload::Candle(Box::new(candle)),
                };
                candles[candle.interval.index()] = Some(Stamped {
                    value: candle,
                    seq: event.seq,
                    ts_event: event.ts_event,
                    ts_recv: event.ts_recv,
                    ts_send,
                });
                out.push(event);
            }
            next.candles = Arc::new(candles);
            slot.store(Arc::new(next));
        }
    }

    /// The full L2 book the engine keeps for `id` (for tests and diagnostics).
    pub fn l2(&self, id: InstrumentId) -> &L2Book {
        &self.books[id.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AssetKind, InstrumentSpec, Side};
    use proptest::prelude::*;

    fn table() -> Instruments {
        let mut t = Instruments::new();
        t.add(InstrumentSpec {
            symbol: "BTC-USD".into(),
            venue: "sim".into(),
            kind: AssetKind::Crypto,
            tick_size: Price::parse("0.01").unwrap(),
            lot_size: Size::parse("0.0001").unwrap(),
        })
        .unwrap();
        t
    }

    fn p(x: i64) -> Price {
        Price::from_units(x)
    }
    fn s(x: i64) -> Size {
        Size(x * crate::model::SCALE)
    }

    #[test]
    fn sequences_per_channel_and_publishes_state() {
        let instruments = table();
        let mut engine = Engine::new(&instruments, 10);
        let reader = engine.reader();
        let id = InstrumentId(0);
        let quote = Quote { bid: p(100), bid_size: s(1), ask: p(101), ask_size: s(2) };
        let mut e1 = Event::new(id, 1, 2, Payload::Quote(quote));
        let mut e2 = Event::new(id, 1, 2, Payload::Quote(quote));
        let trade = Trade { price: p(101), size: s(1), side: Side::Buy, trade_id: 7 };
        let mut e3 = Event::new(id, 1, 2, Payload::Trade(trade));
        engine.apply(&mut e1).unwrap();
        engine.apply(&mut e2).unwrap();
        engine.apply(&mut e3).unwrap();
        assert_eq!((e1.seq, e2.seq, e3.seq), (1, 2, 1));
        let state = reader.load(id);
        assert_eq!(state.seqs[..3], [2, 1, 0]);
        assert_eq!(state.quote.unwrap().seq, 2);
        assert_eq!(state.last_trade.unwrap().value.trade_id, 7);
        assert_eq!(state.stats.unwrap().trades, 1);
        assert!(e3.ts_send >= e3.ts_recv);
    }

    #[test]
    fn book_deltas_update_levels_and_refuse_crossing() {
        let instruments = table();
        let mut engine = Engine::new(&instruments, 2);
        let reader = engine.reader();
        let id = InstrumentId(0);
        let delta = BookDelta { bids: vec![(p(99), s(1)), (p(98), s(2)), (p(97), s(3))], asks: vec![(p(101), s(1))] };
        engine.apply(&mut Event::new(id, 0, 0, Payload::Book(delta))).unwrap();
        let book = reader.load(id).book.clone();
        assert_eq!(book.bids, vec![(p(99), s(1)), (p(98), s(2))]);
        assert_eq!(book.seq, 1);
        let crossing = BookDelta { bids: vec![(p(102), s(1))], asks: vec![] };
        let mut event = Event::new(id, 0, 0, Payload::Book(crossing));
        assert!(matches!(engine.apply(&mut event), Err(BookError::Crossed { .. })));
        assert_eq!(engine.l2(id).best_bid(), Some((p(99), s(1))), "a refused delta changes nothing");
        assert_eq!(reader.load(id).seqs[Channel::Book.index()], 1, "a refused delta takes no sequence");
        let removal = BookDelta { bids: vec![(p(99), Size::ZERO)], asks: vec![] };
        engine.apply(&mut Event::new(id, 0, 0, Payload::Book(removal))).unwrap();
        assert_eq!(engine.l2(id).best_bid(), Some((p(98), s(2))));
    }

    #[test]
    fn book_reset_replaces_the_whole_book() {
        let instruments = table();
        let mut engine = Engine::new(&instruments, 10);
        let id = InstrumentId(0);
        let first = BookDelta { bids: vec![(p(99), s(1)), (p(98), s(1))], asks: vec![(p(101), s(1))] };
        engine.apply(&mut Event::new(id, 0, 0, Payload::Book(first))).unwrap();
        let reset = BookDelta { bids: vec![(p(90), s(5))], asks: vec![(p(91), s(5))] };
        let mut event = Event::new(id, 0, 0, Payload::BookReset(reset));
        engine.apply(&mut event).unwrap();
        assert_eq!(event.seq, 2);
        assert_eq!(engine.l2(id).depth(), (1, 1));
        let book = engine.reader().load(id).book.clone();
        assert_eq!((book.bids.clone(), book.asks.clone(), book.seq), (vec![(p(90), s(5))], vec![(p(91), s(5))], 2));
        let crossed = BookDelta { bids: vec![(p(95), s(1))], asks: vec![(p(94), s(1))] };
        assert!(engine.apply(&mut Event::new(id, 0, 0, Payload::BookReset(crossed))).is_err());
        assert_eq!(engine.l2(id).depth(), (1, 1), "a refused reset keeps the old book");
    }

    proptest! {
        /// Whatever deltas arrive, the book never holds a negative size or a crossed top.
        #[test]
        fn book_never_crossed_or_negative(deltas in proptest::collection::vec(
            (proptest::collection::vec((90i64..110, -1i64..5), 0..4),
             proptest::collection::vec((90i64..110, -1i64..5), 0..4)), 1..60)) {
            let mut book = L2Book::default();
            for (bids, asks) in deltas {
                let delta = BookDelta {
                    bids: bids.into_iter().map(|(px, sz)| (p(px), s(sz))).collect(),
                    asks: asks.into_iter().map(|(px, sz)| (p(px), s(sz))).collect(),
                };
                let _ = book.apply(&delta);
                if let (Some(b), Some(a)) = (book.best_bid(), book.best_ask()) {
                    prop_assert!(b.0 < a.0);
                }
                let (bids, asks) = book.top(usize::MAX);
                prop_assert!(bids.iter().chain(&asks).all(|(_, s)| s.0 > 0));
            }
        }
    }

    /// (open, high, low, close, volume, trades) in nano-units.
    type Ohlcv = (i64, i64, i64, i64, i128, u64);

    /// Applies trades `(ts_ms, price, size)` and quotes between them, draining
    /// candles after every `batch` events; returns every candle event.
    fn run_candles(events: &[(u64, i64, i64, bool)], batch: usize) -> (Engine, Vec<Event>) {
        let instruments = table();
        let mut engine = Engine::new(&instruments, 10);
        let mut out = Vec::new();
        for (i, &(ts_ms, px, sz, is_trade)) in events.iter().enumerate() {
            let ts = ts_ms * 1_000_000;
            let payload = if is_trade {
                Payload::Trade(Trade { price: p(px), size: s(sz), side: Side::Buy, trade_id: i as u64 })
            } else {
                Payload::Quote(Quote { bid: p(px), bid_size: s(1), ask: p(px + 1), ask_size: s(1) })
            };
            engine.apply(&mut Event::new(InstrumentId(0), ts, ts, payload)).unwrap();
            if i % batch == batch - 1 {
                engine.drain_candles(&mut out);
            }
        }
        engine.drain_candles(&mut out);
        (engine, out)
    }

    fn candles_of(events: &[Event], interval: CandleInterval) -> Vec<Candle> {
        events
            .iter()
            .filter_map(|e| match &e.payload {
                Payload::Candle(c) if c.interval == interval => Some(**c),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn candles_close_on_a_later_trade_or_after_the_grace() {
        // Two trades in second 0, one in second 2; a quote at 3.5 s closes nothing
        // (grace), one at 4.0 s closes second 2.
        let (engine, out) = run_candles(
            &[(100, 10, 1, true), (900, 12, 2, true), (2_100, 9, 1, true), (3_500, 9, 0, false), (4_000, 9, 0, false)],
            1,
        );
        let second = candles_of(&out, CandleInterval::S1);
        let summary: Vec<(u64, Ohlcv, bool)> = second
            .iter()
            .map(|c| (c.start / 1_000_000_000, (c.open.0, c.high.0, c.low.0, c.close.0, c.volume, c.trades), c.closed))
            .collect();
        let (u, v) = (p(1).0, s(1).0 as i128);
        assert_eq!(
            summary,
            vec![
                (0, (10 * u, 10 * u, 10 * u, 10 * u, v, 1), false),
                (0, (10 * u, 12 * u, 10 * u, 12 * u, 3 * v, 2), false),
                (0, (10 * u, 12 * u, 10 * u, 12 * u, 3 * v, 2), true),
                (2, (9 * u, 9 * u, 9 * u, 9 * u, v, 1), false),
                (2, (9 * u, 9 * u, 9 * u, 9 * u, v, 1), true),
            ]
        );
        // Sequences are per channel and the state holds the last candle.
        let seqs: Vec<u64> = out.iter().filter(|e| e.channel() == Channel::Candles1s).map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        let state = engine.reader().load(InstrumentId(0));
        assert_eq!(state.seqs[Channel::Candles1s.index()], 5);
        assert_eq!(state.candles[CandleInterval::S1.index()].map(|c| c.value), second.last().copied());
        // The minute candle is still open and holds all three trades.
        let minute = candles_of(&out, CandleInterval::M1);
        assert_eq!(minute.last().map(|c| (c.trades, c.closed)), Some((3, false)));
    }

    /// An instrument that goes quiet still has its candles closed, by the time
    /// of the other instruments of its venue; another venue's time does not.
    #[test]
    fn quiet_instruments_candles_close_by_their_venues_time() {
        let mut instruments = table();
        for (symbol, venue) in [("ETH-USD", "sim"), ("XBT/USD", "kraken")] {
            instruments
                .add(InstrumentSpec {
                    symbol: symbol.into(),
                    venue: venue.into(),
                    kind: AssetKind::Crypto,
                    tick_size: Price::parse("0.01").unwrap(),
                    lot_size: Size::parse("0.0001").unwrap(),
                })
                .unwrap();
        }
        let mut engine = Engine::new(&instruments, 10);
        let mut out = Vec::new();
        let trade = |id: u32, ms: u64| {
            let payload = Payload::Trade(Trade { price: p(100), size: s(1), side: Side::Buy, trade_id: ms });
            Event::new(InstrumentId(id), ms * 1_000_000, ms * 1_000_000, payload)
        };
        let quote = |id: u32, ms: u64| {
            let payload = Payload::Quote(Quote { bid: p(100), bid_size: s(1), ask: p(101), ask_size: s(1) });
            Event::new(InstrumentId(id), ms * 1_000_000, ms * 1_000_000, payload)
        };
        engine.apply(&mut trade(0, 500)).unwrap(); // BTC-USD trades in second 0, then nothing
        engine.apply(&mut trade(2, 600)).unwrap(); // so does the Kraken instrument
        engine.drain_candles(&mut out);
        let open = |out: &[Event], id: u32| {
            out.iter()
                .filter(|e| e.instrument == InstrumentId(id))
                .filter_map(|e| match &e.payload {
                    Payload::Candle(c) if c.interval == CandleInterval::S1 => Some(c.closed),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(open(&out, 0), vec![false]);
        // ETH-USD (same venue) quotes on; within the grace nothing closes.
        out.clear();
        engine.apply(&mut quote(1, 1_900)).unwrap();
        engine.drain_candles(&mut out);
        assert!(open(&out, 0).is_empty());
        // Past the second's end and the grace: BTC-USD's 1 s candle closes, with
        // its own clocks; the Kraken instrument's stays open.
        engine.apply(&mut quote(1, 2_100)).unwrap();
        engine.drain_candles(&mut out);
        assert_eq!(open(&out, 0), vec![true]);
        assert!(open(&out, 2).is_empty());
        let closed = out.iter().find(|e| e.instrument == InstrumentId(0)).unwrap();
        assert_eq!(closed.ts_event, 500 * 1_000_000);
        assert!(engine.reader().load(InstrumentId(0)).candles[CandleInterval::S1.index()].unwrap().value.closed);
        // A later trade opens the next candle as usual.
        out.clear();
        engine.apply(&mut trade(0, 2_200)).unwrap();
        engine.drain_candles(&mut out);
        assert_eq!(open(&out, 0), vec![false]);
    }

    #[test]
    fn candles_refuse_late_trades_and_feed_candles() {
        let (mut engine, out) = run_candles(&[(5_000, 10, 1, true), (3_000, 11, 1, true)], 1);
        assert_eq!(engine.late_trades, 1);
        assert!(candles_of(&out, CandleInterval::S1).iter().all(|c| c.trades == 1));
        let candle = candles_of(&out, CandleInterval::S1)[0];
        let mut forged = Event::new(InstrumentId(0), 1, 1, Payload::Candle(Box::new(candle)));
        assert_eq!(engine.apply(&mut forged), Err(BookError::DerivedChannel));
    }

    proptest! {
        /// Whatever the batching, the final value of every live candle equals the
        /// candle the history API computes from the same trades.
        #[test]
        fn live_candles_equal_candles_built_from_history(
            steps in proptest::collection::vec((0u64..1_500, 1i64..100, 1i64..5, proptest::bool::weighted(0.7)), 1..200),
            batch in 1usize..40,
        ) {
            let mut ts = 0;
            let events: Vec<(u64, i64, i64, bool)> = steps
                .into_iter()
                .map(|(dt, px, sz, trade)| {
                    ts += dt;
                    (ts, px, sz, trade)
                })
                .collect();
            let (_, out) = run_candles(&events, batch);
            for interval in [CandleInterval::S1, CandleInterval::M1] {
                let mut builder = crate::store::reader::CandleBuilder::new(interval);
                for &(ts, px, sz, trade) in &events {
                    if trade {
                        builder.push(ts * 1_000_000, p(px), s(sz));
                    }
                }
                let expected: Vec<(u64, Ohlcv)> = builder
                    .finish(0)
                    .iter()
                    .map(|c| (c.start, (c.open.0, c.high.0, c.low.0, c.close.0, c.volume, c.trades)))
                    .collect();
                // The last value per bucket, as a client that keeps the latest sees it.
                let mut live: Vec<(u64, Ohlcv)> = Vec::new();
                for c in candles_of(&out, interval) {
                    let row = (c.start, (c.open.0, c.high.0, c.low.0, c.close.0, c.volume, c.trades));
                    match live.last_mut() {
                        Some(last) if last.0 == c.start => *last = row,
                        _ => live.push(row),
                    }
                }
                prop_assert_eq!(live, expected);
            }
        }
    }
}
