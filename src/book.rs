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
    BookDelta, Channel, Event, InstrumentId, Instruments, Nanos, Payload, Price, Quote, Size, Trade, now_nanos,
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

/// Running statistics since the gateway started (open, high, low, volume).
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
}

fn set_level<K: Ord>(side: &mut BTreeMap<K, Size>, key: K, size: Size) {
    if size.is_zero() {
        side.remove(&key);
    } else {
        side.insert(key, size);
    }
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

/// The single writer of instrument state. Pure code: no tasks, no I/O.
pub struct Engine {
    states: Arc<[ArcSwap<InstrumentState>]>,
    books: Vec<L2Book>,
    /// How many levels a side the published book state keeps.
    depth: usize,
}

impl Engine {
    /// `depth` is the number of levels per side that book snapshots carry.
    pub fn new(instruments: &Instruments, depth: usize) -> Self {
        let states: Arc<[ArcSwap<InstrumentState>]> =
            (0..instruments.len()).map(|_| ArcSwap::from_pointee(InstrumentState::default())).collect();
        Self { states, books: vec![L2Book::default(); instruments.len()], depth }
    }

    pub fn reader(&self) -> StateReader {
        StateReader { states: self.states.clone() }
    }

    /// Sequences `event`, stamps `ts_send`, and publishes the new state. Returns an
    /// error (and changes nothing) for an event the book cannot accept.
    pub fn apply(&mut self, event: &mut Event) -> Result<(), BookError> {
        let index = event.instrument.index();
        let Some(slot) = self.states.get(index) else {
            return Err(BookError::UnknownInstrument(event.instrument.0));
        };
        match &event.payload {
            Payload::Book(delta) => self.books[index].apply(delta)?,
            Payload::BookReset(levels) => {
                let mut fresh = L2Book::default();
                fresh.apply(levels)?;
                self.books[index] = fresh;
            }
            Payload::Quote(_) | Payload::Trade(_) => {}
        }
        let current = slot.load();
        let mut next = InstrumentState::clone(&current);
        let channel = event.channel().index();
        next.seqs[channel] += 1;
        event.seq = next.seqs[channel];
        event.ts_send = now_nanos().max(event.ts_recv);
        fn stamp<T>(value: T, event: &Event) -> Stamped<T> {
            Stamped { value, seq: event.seq, ts_event: event.ts_event, ts_recv: event.ts_recv, ts_send: event.ts_send }
        }
        match &event.payload {
            Payload::Quote(quote) => next.quote = Some(stamp(*quote, event)),
            Payload::Trade(trade) => {
                next.last_trade = Some(stamp(*trade, event));
                next.stats = Some(match next.stats {
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
        slot.store(Arc::new(next));
        Ok(())
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
        assert_eq!(state.seqs, [2, 1, 0]);
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
}
