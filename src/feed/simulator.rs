//! A deterministic market: the default feed, and the load source for benches.
//!
//! [`Simulator`] is pure: given a seed it produces the same sequence of events
//! every run. Each instrument has a mid price that follows a mean-reverting random
//! walk in steps of its level spacing, an L2 book of [`DEPTH`] levels a side around
//! it, trades that arrive in bursts and eat the top of the book, and size changes
//! throughout the book. Every book change is emitted as a [`BookDelta`], and every
//! change of the top as a [`Quote`], so the engine's view of the book always equals
//! the simulator's. [`run`] is the async shell that paces it at a target rate.

use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{EventBatch, FeedHealth, FeedState};
use crate::model::{
    AssetKind, BookDelta, Event, InstrumentId, InstrumentSpec, Instruments, Nanos, Payload, Price, Quote, Side, Size,
    Trade, now_nanos,
};

/// Levels kept on each side of every simulated book.
pub const DEPTH: usize = 20;

/// One simulated instrument: its name, where its price starts, and its increments.
#[derive(Debug, Clone)]
pub struct SimInstrument {
    pub symbol: &'static str,
    pub kind: AssetKind,
    /// Starting (and mean-reversion target) mid price, as a decimal.
    pub price: &'static str,
    pub tick: &'static str,
    pub lot: &'static str,
    /// Typical size of a book level, as a decimal.
    pub typical_size: &'static str,
}

const fn sim(
    symbol: &'static str,
    kind: AssetKind,
    price: &'static str,
    tick: &'static str,
    lot: &'static str,
    typical_size: &'static str,
) -> SimInstrument {
    SimInstrument { symbol, kind, price, tick, lot, typical_size }
}

/// The default universe: a dozen crypto pairs and a dozen US equities with
/// realistic prices, ticks and lot sizes.
pub const DEFAULT_UNIVERSE: &[SimInstrument] = &[
    sim("BTC-USD", AssetKind::Crypto, "64000.00", "0.01", "0.00001", "0.5"),
    sim("ETH-USD", AssetKind::Crypto, "3400.00", "0.01", "0.0001", "5"),
    sim("SOL-USD", AssetKind::Crypto, "150.00", "0.01", "0.001", "80"),
    sim("XRP-USD", AssetKind::Crypto, "0.6000", "0.0001", "1", "20000"),
    sim("DOGE-USD", AssetKind::Crypto, "0.12000", "0.00001", "1", "100000"),
    sim("ADA-USD", AssetKind::Crypto, "0.4500", "0.0001", "1", "30000"),
    sim("AVAX-USD", AssetKind::Crypto, "35.00", "0.01", "0.001", "200"),
    sim("LINK-USD", AssetKind::Crypto, "15.000", "0.001", "0.01", "800"),
    sim("DOT-USD", AssetKind::Crypto, "7.000", "0.001", "0.01", "1500"),
    sim("LTC-USD", AssetKind::Crypto, "80.00", "0.01", "0.0001", "60"),
    sim("BCH-USD", AssetKind::Crypto, "350.00", "0.01", "0.0001", "15"),
    sim("ATOM-USD", AssetKind::Crypto, "9.000", "0.001", "0.01", "1000"),
    sim("AAPL", AssetKind::Equity, "228.50", "0.01", "1", "300"),
    sim("MSFT", AssetKind::Equity, "415.20", "0.01", "1", "200"),
    sim("NVDA", AssetKind::Equity, "135.40", "0.01", "1", "800"),
    sim("AMZN", AssetKind::Equity, "186.30", "0.01", "1", "300"),
    sim("GOOGL", AssetKind::Equity, "165.80", "0.01", "1", "300"),
    sim("META", AssetKind::Equity, "520.10", "0.01", "1", "150"),
    sim("TSLA", AssetKind::Equity, "245.60", "0.01", "1", "400"),
    sim("JPM", AssetKind::Equity, "205.70", "0.01", "1", "200"),
    sim("V", AssetKind::Equity, "275.90", "0.01", "1", "150"),
    sim("SPY", AssetKind::Equity, "560.25", "0.01", "1", "1000"),
    sim("QQQ", AssetKind::Equity, "480.10", "0.01", "1", "800"),
    sim("AMD", AssetKind::Equity, "158.30", "0.01", "1", "400"),
];

/// Why a simulator universe could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("unknown simulator symbol {0:?} (known: {1})")]
    UnknownSymbol(String, String),
    #[error("bad simulator instrument {0}: {1}")]
    BadInstrument(&'static str, String),
    #[error(transparent)]
    Instrument(#[from] crate::model::InstrumentError),
}

/// Picks instruments from the default universe: all of them when `symbols` is empty.
pub fn select_universe(symbols: &[String]) -> Result<Vec<SimInstrument>, SimError> {
    if symbols.is_empty() {
        return Ok(DEFAULT_UNIVERSE.to_vec());
    }
    symbols
        .iter()
        .map(|wanted| {
            DEFAULT_UNIVERSE.iter().find(|s| s.symbol == wanted).cloned().ok_or_else(|| {
                let known: Vec<_> = DEFAULT_UNIVERSE.iter().map(|s| s.symbol).collect();
                SimError::UnknownSymbol(wanted.clone(), known.join(","))
            })
        })
        .collect()
}

/// A simulated instrument's market: the book is stored as sizes (in lots) at
/// `DEPTH` consecutive levels spaced `step` apart from the best price outward.
struct Market {
    id: InstrumentId,
    /// Level spacing in nano-units (a whole number of ticks, about half a basis point).
    step: i64,
    lot: i64,
    typical_lots: i64,
    /// Mean-reversion target of the best bid.
    mean_bid: i64,
    best_bid: i64,
    best_ask: i64,
    /// Spread at rest, in steps.
    base_spread_steps: i64,
    bids: [i64; DEPTH],
    asks: [i64; DEPTH],
    /// Trades left in the current burst and their aggressor side.
    burst: (u32, Side),
}

impl Market {
    fn quote(&self) -> Quote {
        Quote {
            bid: Price(self.best_bid),
            bid_size: Size(self.bids[0] * self.lot),
            ask: Price(self.best_ask),
            ask_size: Size(self.asks[0] * self.lot),
        }
    }
    fn bid_level(&self, i: usize) -> (Price, Size) {
        (Price(self.best_bid - i as i64 * self.step), Size(self.bids[i] * self.lot))
    }
    fn ask_level(&self, i: usize) -> (Price, Size) {
        (Price(self.best_ask + i as i64 * self.step), Size(self.asks[i] * self.lot))
    }
}

/// The pure simulator core.
pub struct Simulator {
    rng: ChaCha8Rng,
    markets: Vec<Market>,
    next_trade_id: u64,
}

impl Simulator {
    /// Registers `universe` in `instruments` (as venue `sim`) and seeds every book.
    pub fn new(universe: &[SimInstrument], instruments: &mut Instruments, seed: u64) -> Result<Self, SimError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut markets = Vec::with_capacity(universe.len());
        for spec in universe {
            let parse = |text: &str| {
                crate::model::parse_decimal(text).map_err(|e| SimError::BadInstrument(spec.symbol, e.to_string()))
            };
            let (price, tick, lot, typical) =
                (parse(spec.price)?, parse(spec.tick)?, parse(spec.lot)?, parse(spec.typical_size)?);
            let id = instruments.add(InstrumentSpec {
                symbol: spec.symbol.to_owned(),
                venue: "sim".to_owned(),
                kind: spec.kind,
                tick_size: Price(tick),
                lot_size: Size(lot),
            })?;
            // Half a basis point per level, at least one tick, a whole number of ticks.
            let step = ((price / 20_000) / tick).max(1) * tick;
            let best_bid = (price / tick) * tick;
            let typical_lots = (typical / lot).max(1);
            let mut market = Market {
                id,
                step,
                lot,
                typical_lots,
                mean_bid: best_bid,
                best_bid,
                best_ask: best_bid + step,
                base_spread_steps: 1,
                bids: [0; DEPTH],
                asks: [0; DEPTH],
                burst: (0, Side::Buy),
            };
            for i in 0..DEPTH {
                market.bids[i] = level_size(&mut rng, typical_lots, i);
                market.asks[i] = level_size(&mut rng, typical_lots, i);
            }
            markets.push(market);
        }
        Ok(Self { rng, markets, next_trade_id: 1 })
    }

    /// Events that describe every book in full (sent once at start, so the engine's
    /// books equal the simulator's from the first delta on).
    pub fn initial_events(&self, now: Nanos) -> Vec<Event> {
        let mut out = Vec::with_capacity(self.markets.len() * 2);
        for m in &self.markets {
            let delta = BookDelta {
                bids: (0..DEPTH).map(|i| m.bid_level(i)).collect(),
                asks: (0..DEPTH).map(|i| m.ask_level(i)).collect(),
            };
            out.push(Event::new(m.id, now, now, Payload::BookReset(delta)));
            out.push(Event::new(m.id, now, now, Payload::Quote(m.quote())));
        }
        out
    }

    /// Advances one instrument by one step and appends the resulting events (one to
    /// four) to `out`.
    pub fn step(&mut self, now: Nanos, out: &mut Vec<Event>) {
        if self.markets.is_empty() {
            return;
        }
        let index = self.rng.random_range(0..self.markets.len());
        let roll: f64 = self.rng.random();
        let market = &mut self.markets[index];
        if market.burst.0 > 0 || roll < 0.12 {
            if market.burst.0 == 0 {
                let side = if self.rng.random_bool(0.5) { Side::Buy } else { Side::Sell };
                market.burst = (self.rng.random_range(1..=6), side);
            }
            market.burst.0 -= 1;
            let side = market.burst.1;
            self.next_trade_id += 1;
            trade(&mut self.rng, market, side, self.next_trade_id, now, out);
        } else if roll < 0.45 {
            move_mid(&mut self.rng, market, now, out);
        } else {
            change_size(&mut self.rng, market, now, out);
        }
    }
}

fn level_size(rng: &mut ChaCha8Rng, typical_lots: i64, level: usize) -> i64 {
    // Deeper levels hold a little more, as on real books.
    let scale = typical_lots + typical_lots * level as i64 / 10;
    rng.random_range(1..=(2 * scale).max(1))
}

/// The aggressor takes part (or all) of the opposite top level; an emptied level is
/// replaced from behind and the spread widens until sizes refill it.
fn trade(rng: &mut ChaCha8Rng, m: &mut Market, side: Side, trade_id: u64, now: Nanos, out: &mut Vec<Event>) {
    let top = match side {
        Side::Buy => m.asks[0],
        Side::Sell => m.bids[0],
    };
    let lots = rng.random_range(1..=top.min(m.typical_lots).max(1)).min(top);
    let price = match side {
        Side::Buy => m.best_ask,
        Side::Sell => m.best_bid,
    };
    out.push(Event::new(
        m.id,
        now,
        now,
        Payload::Trade(Trade { price: Price(price), size: Size(lots * m.lot), side, trade_id }),
    ));
    let mut delta = BookDelta::default();
    match side {
        Side::Buy => {
            m.asks[0] -= lots;
            if m.asks[0] == 0 {
                delta.asks.push((Price(m.best_ask), Size::ZERO));
                m.asks.rotate_left(1);
                m.best_ask += m.step;
                m.asks[DEPTH - 1] = level_size(rng, m.typical_lots, DEPTH - 1);
                delta.asks.push(m.ask_level(DEPTH - 1));
            } else {
                delta.asks.push(m.ask_level(0));
            }
        }
        Side::Sell => {
            m.bids[0] -= lots;
            if m.bids[0] == 0 {
                delta.bids.push((Price(m.best_bid), Size::ZERO));
                m.bids.rotate_left(1);
                m.best_bid -= m.step;
                m.bids[DEPTH - 1] = level_size(rng, m.typical_lots, DEPTH - 1);
                delta.bids.push(m.bid_level(DEPTH - 1));
            } else {
                delta.bids.push(m.bid_level(0));
            }
        }
    }
    out.push(Event::new(m.id, now, now, Payload::Book(delta)));
    out.push(Event::new(m.id, now, now, Payload::Quote(m.quote())));
}

/// Shifts the whole book one step, drifting back towards the mean price.
fn move_mid(rng: &mut ChaCha8Rng, m: &mut Market, now: Nanos, out: &mut Vec<Event>) {
    // Mean reversion: the further from the mean (in steps), the likelier the way back.
    let distance = (m.best_bid - m.mean_bid) as f64 / m.step as f64;
    let p_up = (0.5 - distance * 0.002).clamp(0.05, 0.95);
    let up = rng.random_bool(p_up);
    let spread_steps = (m.best_ask - m.best_bid) / m.step;
    let mut delta = BookDelta::default();
    if up {
        // A new best bid one step higher; if the spread was one step, the best ask
        // is taken out and the ask side moves up too.
        m.best_bid += m.step;
        delta.bids.push((Price(m.best_bid - DEPTH as i64 * m.step), Size::ZERO));
        m.bids.rotate_right(1);
        m.bids[0] = level_size(rng, m.typical_lots, 0);
        delta.bids.push(m.bid_level(0));
        if spread_steps <= m.base_spread_steps {
            delta.asks.push((Price(m.best_ask), Size::ZERO));
            m.asks.rotate_left(1);
            m.best_ask += m.step;
            m.asks[DEPTH - 1] = level_size(rng, m.typical_lots, DEPTH - 1);
            delta.asks.push(m.ask_level(DEPTH - 1));
        }
    } else {
        m.best_ask -= m.step;
        delta.asks.push((Price(m.best_ask + DEPTH as i64 * m.step), Size::ZERO));
        m.asks.rotate_right(1);
        m.asks[0] = level_size(rng, m.typical_lots, 0);
        delta.asks.push(m.ask_level(0));
        if spread_steps <= m.base_spread_steps {
            delta.bids.push((Price(m.best_bid), Size::ZERO));
            m.bids.rotate_left(1);
            m.best_bid -= m.step;
            m.bids[DEPTH - 1] = level_size(rng, m.typical_lots, DEPTH - 1);
            delta.bids.push(m.bid_level(DEPTH - 1));
        }
    }
    out.push(Event::new(m.id, now, now, Payload::Book(delta)));
    out.push(Event::new(m.id, now, now, Payload::Quote(m.quote())));
}

/// A resting size changes somewhere in the book, most often near the top. A wide
/// spread (after trades emptied a level) is narrowed by a new level inside it.
fn change_size(rng: &mut ChaCha8Rng, m: &mut Market, now: Nanos, out: &mut Vec<Event>) {
    let spread_steps = (m.best_ask - m.best_bid) / m.step;
    let bid_side = rng.random_bool(0.5);
    let mut delta = BookDelta::default();
    if spread_steps > m.base_spread_steps {
        if bid_side {
            delta.bids.push((Price(m.best_bid - (DEPTH as i64 - 1) * m.step), Size::ZERO));
            m.best_bid += m.step;
            m.bids.rotate_right(1);
            m.bids[0] = level_size(rng, m.typical_lots, 0);
            delta.bids.push(m.bid_level(0));
        } else {
            delta.asks.push((Price(m.best_ask + (DEPTH as i64 - 1) * m.step), Size::ZERO));
            m.best_ask -= m.step;
            m.asks.rotate_right(1);
            m.asks[0] = level_size(rng, m.typical_lots, 0);
            delta.asks.push(m.ask_level(0));
        }
        out.push(Event::new(m.id, now, now, Payload::Book(delta)));
        out.push(Event::new(m.id, now, now, Payload::Quote(m.quote())));
        return;
    }
    // Level index skewed to the top: min of two uniforms.
    let level = rng.random_range(0..DEPTH).min(rng.random_range(0..DEPTH));
    let size = level_size(rng, m.typical_lots, level);
    if bid_side {
        m.bids[level] = size;
        delta.bids.push(m.bid_level(level));
    } else {
        m.asks[level] = size;
        delta.asks.push(m.ask_level(level));
    }
    out.push(Event::new(m.id, now, now, Payload::Book(delta)));
    if level == 0 {
        out.push(Event::new(m.id, now, now, Payload::Quote(m.quote())));
    }
}

/// Paces `sim` at `rate` events per second until `cancel` fires, sending batches to
/// the engine. When the engine falls behind, `send` waits: the simulator slows
/// down rather than queueing without bound. A stall never causes a catch-up burst
/// larger than 100 ms worth of events.
pub async fn run(
    mut sim: Simulator,
    rate: u64,
    tx: mpsc::Sender<EventBatch>,
    health: std::sync::Arc<FeedHealth>,
    cancel: CancellationToken,
) {
    health.set_state(FeedState::Live);
    if tx.send(sim.initial_events(now_nanos())).await.is_err() {
        return;
    }
    let started = tokio::time::Instant::now();
    let mut emitted: u64 = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let max_burst = (rate / 10).max(1);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        if due <= emitted {
            continue;
        }
        let wanted = due - emitted;
        if wanted > max_burst {
            emitted = due - max_burst;
        }
        let wanted = (due - emitted) as usize;
        let now = now_nanos();
        let mut batch = Vec::with_capacity(wanted + 4);
        while batch.len() < wanted {
            sim.step(now, &mut batch);
        }
        emitted += batch.len() as u64;
        health.record_messages(batch.len() as u64, now);
        tokio::select! {
            _ = cancel.cancelled() => break,
            sent = tx.send(batch) => if sent.is_err() { break },
        }
    }
    health.set_state(FeedState::Stopped);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Engine;
    use crate::model::Channel;

    fn events(seed: u64, steps: usize) -> (Instruments, Vec<Event>) {
        let mut instruments = Instruments::new();
        let mut sim = Simulator::new(DEFAULT_UNIVERSE, &mut instruments, seed).unwrap();
        let mut out = sim.initial_events(1);
        for _ in 0..steps {
            sim.step(1, &mut out);
        }
        (instruments, out)
    }

    #[test]
    fn same_seed_same_market() {
        assert_eq!(events(7, 2_000).1, events(7, 2_000).1);
        assert_ne!(events(7, 2_000).1, events(8, 2_000).1);
    }

    #[test]
    fn default_universe_has_crypto_and_equities() {
        let (instruments, _) = events(1, 0);
        let crypto = instruments.iter().filter(|i| i.kind == AssetKind::Crypto).count();
        assert!(crypto >= 12 && instruments.len() - crypto >= 12);
        assert_eq!(instruments.get(instruments.lookup("AAPL").unwrap()).price_decimals, 2);
    }

    /// The engine accepts every delta (never crossed, never negative), its top of
    /// book always equals the last quote, and prices stay near their start.
    #[test]
    fn books_stay_valid_and_match_quotes() {
        let (instruments, evs) = events(42, 200_000);
        let mut engine = Engine::new(&instruments, 10);
        let mut trades = 0;
        for mut event in evs {
            engine.apply(&mut event).expect("simulated delta must apply");
            match &event.payload {
                Payload::Quote(q) => {
                    let l2 = engine.l2(event.instrument);
                    assert_eq!(l2.best_bid(), Some((q.bid, q.bid_size)));
                    assert_eq!(l2.best_ask(), Some((q.ask, q.ask_size)));
                    assert!(q.bid < q.ask);
                }
                Payload::Trade(t) => {
                    trades += 1;
                    assert!(t.size.0 > 0);
                }
                Payload::Book(_) | Payload::BookReset(_) => {
                    let (bids, asks) = engine.l2(event.instrument).depth();
                    assert!(bids >= DEPTH - 1 && asks >= DEPTH - 1, "book depth {bids}/{asks}");
                }
                Payload::Candle(_) => unreachable!("feeds make no candles"),
            }
        }
        assert!(trades > 10_000);
        let reader = engine.reader();
        for (inst, spec) in instruments.iter().zip(DEFAULT_UNIVERSE) {
            let state = reader.load(inst.id);
            let start = crate::model::parse_decimal(spec.price).unwrap();
            let bid = state.quote.unwrap().value.bid.0;
            assert!((bid - start).abs() < start / 10, "{} drifted to {bid}", spec.symbol);
            assert!(state.seqs[Channel::Trades.index()] > 0);
        }
    }

    #[test]
    fn unknown_symbol_is_a_clear_error() {
        let err = select_universe(&["NOPE".into()]).unwrap_err();
        assert!(err.to_string().contains("NOPE") && err.to_string().contains("BTC-USD"));
        assert_eq!(select_universe(&["AAPL".into()]).unwrap().len(), 1);
    }
}
