//! What travels on the bus: subjects and message bodies. Pure code over byte
//! slices, so that ingest, gateways and the store agree by construction.
//!
//! Subjects name venue, instrument and channel, so that a consumer takes
//! exactly what it needs with wildcards (`tw.binance.>`, `tw.*.*.trades`):
//! ```text
//! {prefix}.{venue}.{symbol}.{channel}      one sequenced event (channel: quotes,
//!                                          trades, book, candles_1s … candles_1d)
//! {prefix}.{venue}.{symbol}.checkpoint     the instrument's whole state at its
//!                                          sequences (where a gateway starts)
//! ```
//! Tokens are the symbol and venue as clients know them, with `.`, `*`, `>` and
//! white space (which NATS reserves) written as `_`.
//!
//! Bodies (little-endian):
//! ```text
//! event:      version u8 = 1 | kind u8 | seq u64 | ts_event u64 | ts_recv u64 | ts_send u64 | fields
//!   quote 0:  bid i64, bid_size i64, ask i64, ask_size i64
//!   trade 1:  price i64, size i64, side u8 (1 = sell), trade_id u64
//!   book 2, book reset 3: per side (bids, asks): count u32, then price i64, size i64
//!   candle 4: interval u8, start u64, open, high, low, close i64, volume i128, trades u64, closed u8
//! checkpoint: version u8 = 1 | kind u8 = 5 | epoch u64 | seqs 8 × u64
//!             | quote? | last trade? | stats? | book clock 4 × u64 | book (as above)
//!             | 5 × candle?    (each `?` is a presence byte, then clocks and fields)
//! ```

use crate::book::{Checkpoint, SessionStats, Stamped};
use crate::model::{
    BookDelta, Candle, CandleInterval, Channel, Event, InstrumentId, Payload, Price, Quote, Side, Size, Trade,
};

const VERSION: u8 = 1;
const KIND_QUOTE: u8 = 0;
const KIND_TRADE: u8 = 1;
const KIND_BOOK: u8 = 2;
const KIND_BOOK_RESET: u8 = 3;
const KIND_CANDLE: u8 = 4;
const KIND_CHECKPOINT: u8 = 5;

/// The last subject token of a checkpoint.
pub const CHECKPOINT_TOKEN: &str = "checkpoint";

/// Why a bus message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("bus message of version {0}, this node reads version 1")]
    Version(u8),
    #[error("bus message truncated or with trailing bytes")]
    Malformed,
    #[error("unknown bus message kind {0}")]
    Kind(u8),
}

/// A subject token for `name`: NATS reserves `.`, `*`, `>` and white space.
pub fn token(name: &str) -> String {
    name.chars().map(|c| if matches!(c, '.' | '*' | '>') || c.is_whitespace() { '_' } else { c }).collect()
}

/// The subject token of a channel (`candles.1s` → `candles_1s`).
pub fn channel_token(channel: Channel) -> String {
    token(channel.as_str())
}

/// The channel a subject token names.
pub fn channel_of_token(token: &str) -> Option<Channel> {
    Channel::ALL.into_iter().find(|c| channel_token(*c) == token)
}

/// The subject of one instrument's events on `channel`.
pub fn event_subject(prefix: &str, venue: &str, symbol: &str, channel: Channel) -> String {
    format!("{prefix}.{}.{}.{}", token(venue), token(symbol), channel_token(channel))
}

/// The subject of one instrument's checkpoints.
pub fn checkpoint_subject(prefix: &str, venue: &str, symbol: &str) -> String {
    format!("{prefix}.{}.{}.{CHECKPOINT_TOKEN}", token(venue), token(symbol))
}

/// Every subject of one instrument (a gateway's interest in it).
pub fn instrument_filter(prefix: &str, venue: &str, symbol: &str) -> String {
    format!("{prefix}.{}.{}.*", token(venue), token(symbol))
}

/// Appends the body of one sequenced event.
pub fn encode_event(out: &mut Vec<u8>, event: &Event) {
    out.push(VERSION);
    out.push(match &event.payload {
        Payload::Quote(_) => KIND_QUOTE,
        Payload::Trade(_) => KIND_TRADE,
        Payload::Book(_) => KIND_BOOK,
        Payload::BookReset(_) => KIND_BOOK_RESET,
        Payload::Candle(_) => KIND_CANDLE,
    });
    put_clock(out, [event.seq, event.ts_event, event.ts_recv, event.ts_send]);
    match &event.payload {
        Payload::Quote(q) => put_quote(out, q),
        Payload::Trade(t) => put_trade(out, t),
        Payload::Book(d) | Payload::BookReset(d) => put_book(out, d),
        Payload::Candle(c) => put_candle(out, c),
    }
}

/// Reads an event body; the subject names its instrument (`instrument`).
pub fn decode_event(bytes: &[u8], instrument: InstrumentId) -> Result<Event, WireError> {
    let mut r = Reader { bytes };
    let kind = r.header()?;
    let [seq, ts_event, ts_recv, ts_send] = r.clock()?;
    let payload = match kind {
        KIND_QUOTE => Payload::Quote(r.quote()?),
        KIND_TRADE => Payload::Trade(r.trade()?),
        KIND_BOOK => Payload::Book(r.book()?),
        KIND_BOOK_RESET => Payload::BookReset(r.book()?),
        KIND_CANDLE => Payload::Candle(Box::new(r.candle()?)),
        other => return Err(WireError::Kind(other)),
    };
    r.end()?;
    Ok(Event { instrument, seq, ts_event, ts_recv, ts_send, payload })
}

/// Appends the body of a checkpoint.
pub fn encode_checkpoint(out: &mut Vec<u8>, cp: &Checkpoint) {
    out.push(VERSION);
    out.push(KIND_CHECKPOINT);
    out.extend_from_slice(&cp.epoch.to_le_bytes());
    for seq in cp.seqs {
        out.extend_from_slice(&seq.to_le_bytes());
    }
    put_stamped(out, cp.quote.as_ref(), put_quote);
    put_stamped(out, cp.last_trade.as_ref(), put_trade);
    match &cp.stats {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            for v in [s.open.0, s.high.0, s.low.0, s.volume.0] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&s.trades.to_le_bytes());
        }
    }
    put_clock(out, cp.book_clock);
    put_book(out, &cp.book);
    for candle in &cp.candles {
        put_stamped(out, candle.as_ref(), put_candle);
    }
}

/// Reads a checkpoint body.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, WireError> {
    let mut r = Reader { bytes };
    match r.header()? {
        KIND_CHECKPOINT => {}
        other => return Err(WireError::Kind(other)),
    }
    let epoch = r.u64()?;
    let mut seqs = [0; Channel::COUNT];
    for seq in &mut seqs {
        *seq = r.u64()?;
    }
    let quote = r.stamped(Reader::quote)?;
    let last_trade = r.stamped(Reader::trade)?;
    let stats = match r.u8()? {
        0 => None,
        _ => Some(SessionStats {
            open: Price(r.i64()?),
            high: Price(r.i64()?),
            low: Price(r.i64()?),
            volume: Size(r.i64()?),
            trades: r.u64()?,
        }),
    };
    let book_clock = r.clock()?;
    let book = r.book()?;
    let mut candles = [None; CandleInterval::COUNT];
    for candle in &mut candles {
        *candle = r.stamped(Reader::candle)?;
    }
    r.end()?;
    Ok(Checkpoint { epoch, seqs, quote, last_trade, stats, book, book_clock, candles })
}

/// The sequence of an event body without decoding the rest (a node that only
/// needs to know where a stream stands).
pub fn event_seq(bytes: &[u8]) -> Result<u64, WireError> {
    let mut r = Reader { bytes };
    r.header()?;
    r.u64()
}

fn put_clock(out: &mut Vec<u8>, clock: [u64; 4]) {
    for v in clock {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_quote(out: &mut Vec<u8>, q: &Quote) {
    for v in [q.bid.0, q.bid_size.0, q.ask.0, q.ask_size.0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_trade(out: &mut Vec<u8>, t: &Trade) {
    out.extend_from_slice(&t.price.0.to_le_bytes());
    out.extend_from_slice(&t.size.0.to_le_bytes());
    out.push(u8::from(t.side == Side::Sell));
    out.extend_from_slice(&t.trade_id.to_le_bytes());
}

fn put_book(out: &mut Vec<u8>, d: &BookDelta) {
    for side in [&d.bids, &d.asks] {
        out.extend_from_slice(&(side.len() as u32).to_le_bytes());
        for (price, size) in side {
            out.extend_from_slice(&price.0.to_le_bytes());
            out.extend_from_slice(&size.0.to_le_bytes());
        }
    }
}

fn put_candle(out: &mut Vec<u8>, c: &Candle) {
    out.push(c.interval as u8);
    out.extend_from_slice(&c.start.to_le_bytes());
    for v in [c.open.0, c.high.0, c.low.0, c.close.0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&c.volume.to_le_bytes());
    out.extend_from_slice(&c.trades.to_le_bytes());
    out.push(u8::from(c.closed));
}

fn put_stamped<T>(out: &mut Vec<u8>, value: Option<&Stamped<T>>, put: fn(&mut Vec<u8>, &T)) {
    match value {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_clock(out, [s.seq, s.ts_event, s.ts_recv, s.ts_send]);
            put(out, &s.value);
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let (head, rest) = self.bytes.split_at_checked(N).ok_or(WireError::Malformed)?;
        self.bytes = rest;
        head.try_into().map_err(|_| WireError::Malformed)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        self.take().map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Result<i64, WireError> {
        self.take().map(i64::from_le_bytes)
    }
    fn end(&self) -> Result<(), WireError> {
        if self.bytes.is_empty() { Ok(()) } else { Err(WireError::Malformed) }
    }
    /// Checks the version; returns the kind.
    fn header(&mut self) -> Result<u8, WireError> {
        match self.u8()? {
            VERSION => self.u8(),
            other => Err(WireError::Version(other)),
        }
    }
    fn clock(&mut self) -> Result<[u64; 4], WireError> {
        Ok([self.u64()?, self.u64()?, self.u64()?, self.u64()?])
    }
    fn quote(&mut self) -> Result<Quote, WireError> {
        Ok(Quote {
            bid: Price(self.i64()?),
            bid_size: Size(self.i64()?),
            ask: Price(self.i64()?),
            ask_size: Size(self.i64()?),
        })
    }
    fn trade(&mut self) -> Result<Trade, WireError> {
        Ok(Trade {
            price: Price(self.i64()?),
            size: Size(self.i64()?),
            side: if self.u8()? == 1 { Side::Sell } else { Side::Buy },
            trade_id: self.u64()?,
        })
    }
    fn levels(&mut self) -> Result<Vec<(Price, Size)>, WireError> {
        let n = self.u32()? as usize;
        if n > self.bytes.len() / 16 {
            return Err(WireError::Malformed);
        }
        (0..n).map(|_| Ok((Price(self.i64()?), Size(self.i64()?)))).collect()
    }
    fn book(&mut self) -> Result<BookDelta, WireError> {
        Ok(BookDelta { bids: self.levels()?, asks: self.levels()? })
    }
    fn candle(&mut self) -> Result<Candle, WireError> {
        let interval = *CandleInterval::ALL.get(self.u8()? as usize).ok_or(WireError::Malformed)?;
        Ok(Candle {
            interval,
            start: self.u64()?,
            open: Price(self.i64()?),
            high: Price(self.i64()?),
            low: Price(self.i64()?),
            close: Price(self.i64()?),
            volume: i128::from_le_bytes(self.take()?),
            trades: self.u64()?,
            closed: self.u8()? == 1,
        })
    }
    fn stamped<T>(&mut self, read: fn(&mut Self) -> Result<T, WireError>) -> Result<Option<Stamped<T>>, WireError> {
        if self.u8()? == 0 {
            return Ok(None);
        }
        let [seq, ts_event, ts_recv, ts_send] = self.clock()?;
        Ok(Some(Stamped { value: read(self)?, seq, ts_event, ts_recv, ts_send }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(payload: Payload) -> Event {
        Event { instrument: InstrumentId(3), seq: 42, ts_event: 1, ts_recv: 2, ts_send: 3, payload }
    }

    fn candle() -> Candle {
        Candle {
            interval: CandleInterval::M5,
            start: 1_800_000_000_000_000_000,
            open: Price(10),
            high: Price(12),
            low: Price(9),
            close: Price(11),
            volume: i128::from(i64::MAX) * 3,
            trades: 7,
            closed: true,
        }
    }

    #[test]
    fn every_event_kind_comes_back_as_it_went() {
        let book = BookDelta { bids: vec![(Price(5), Size(1))], asks: vec![(Price(6), Size(0)), (Price(7), Size(2))] };
        for payload in [
            Payload::Quote(Quote { bid: Price(1), bid_size: Size(2), ask: Price(3), ask_size: Size(4) }),
            Payload::Trade(Trade { price: Price(-1), size: Size(5), side: Side::Sell, trade_id: u64::MAX }),
            Payload::Book(book.clone()),
            Payload::BookReset(book),
            Payload::Candle(Box::new(candle())),
        ] {
            let event = event(payload);
            let mut bytes = Vec::new();
            encode_event(&mut bytes, &event);
            assert_eq!(decode_event(&bytes, InstrumentId(3)), Ok(event.clone()));
            assert_eq!(event_seq(&bytes), Ok(42));
            // Any cut or extra byte is refused, never misread.
            for cut in 0..bytes.len() {
                assert!(decode_event(&bytes[..cut], InstrumentId(3)).is_err(), "cut at {cut}");
            }
            bytes.push(0);
            assert_eq!(decode_event(&bytes, InstrumentId(3)), Err(WireError::Malformed));
        }
    }

    #[test]
    fn a_checkpoint_comes_back_as_it_went() {
        let stamp = |value| Stamped { value, seq: 9, ts_event: 1, ts_recv: 2, ts_send: 3 };
        let cp = Checkpoint {
            epoch: 77,
            seqs: [1, 2, 3, 4, 5, 6, 7, 8],
            quote: Some(stamp(Quote { bid: Price(1), bid_size: Size(2), ask: Price(3), ask_size: Size(4) })),
            last_trade: None,
            stats: Some(SessionStats { open: Price(1), high: Price(5), low: Price(0), volume: Size(9), trades: 4 }),
            book: BookDelta { bids: vec![(Price(5), Size(1))], asks: vec![] },
            book_clock: [3, 4, 5, 6],
            candles: [
                None,
                Some(Stamped { value: candle(), seq: 1, ts_event: 2, ts_recv: 3, ts_send: 4 }),
                None,
                None,
                None,
            ],
        };
        let mut bytes = Vec::new();
        encode_checkpoint(&mut bytes, &cp);
        assert_eq!(decode_checkpoint(&bytes), Ok(cp));
        assert_eq!(decode_event(&bytes, InstrumentId(0)).unwrap_err(), WireError::Kind(KIND_CHECKPOINT));
        bytes[0] = 2;
        assert_eq!(decode_checkpoint(&bytes), Err(WireError::Version(2)));
    }

    #[test]
    fn subjects_name_venue_symbol_and_channel_in_tokens_nats_accepts() {
        assert_eq!(
            event_subject("tw", "binance", "binance:BTC-USDT", Channel::Trades),
            "tw.binance.binance:BTC-USDT.trades"
        );
        assert_eq!(event_subject("tw", "sim", "A.B *>", Channel::Candles1s), "tw.sim.A_B___.candles_1s");
        assert_eq!(checkpoint_subject("tw", "sim", "BTC-USD"), "tw.sim.BTC-USD.checkpoint");
        assert_eq!(instrument_filter("tw", "sim", "BTC-USD"), "tw.sim.BTC-USD.*");
        for channel in Channel::ALL {
            assert_eq!(channel_of_token(&channel_token(channel)), Some(channel));
        }
        assert_eq!(channel_of_token(CHECKPOINT_TOKEN), None);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_event(&bytes, InstrumentId(0));
            let _ = decode_checkpoint(&bytes);
            let _ = event_seq(&bytes);
        }
    }
}
