//! Kraken spot WebSocket v2: trades, best bid/offer and the L2 book with its CRC32
//! checksum.
//!
//! Docs: <https://docs.kraken.com/api/docs/websocket-v2/book>,
//! <https://docs.kraken.com/api/docs/websocket-v2/trade>,
//! <https://docs.kraken.com/api/docs/websocket-v2/ticker> and the checksum guide
//! <https://docs.kraken.com/api/docs/guides/spot-ws-book-v2>.
//!
//! We subscribe `book` (depth [`Kraken::depth`], snapshot), `trade` (snapshot, so a
//! reconnect fills its hole with the last trades; trades already seen are dropped
//! by `trade_id`) and `ticker` with `event_trigger: "bbo"`.
//!
//! Kraken v2 sends prices and quantities as JSON numbers whose trailing zeros are
//! significant (`"qty": 0.10000000`), and its book checksum is a CRC32 over that
//! exact text. Every number is therefore read from the raw message bytes (see
//! [`wire`](super::wire)) and never through a float: the fixed-point value comes
//! from the text, and each book level keeps its checksum digits (the text without
//! the decimal point and leading zeros).
//!
//! Book sync: a `snapshot` replaces the book, an `update` changes levels (`qty` 0
//! removes one); after each update the book is truncated to the subscribed depth,
//! as Kraken does, and the levels that fall off are sent to the engine as removals.
//! Then the CRC32 of the top ten asks (ascending) and bids (descending), price then
//! quantity, must equal `checksum`; when it does not (or the book would cross), the
//! book is withdrawn (`BookReset` with no levels) and the symbol's `book` is
//! unsubscribed and subscribed again for a fresh snapshot.
//!
//! Instruments: `kraken:BTC-USD` for `BTC/USD`, tick and lot [`VENUE_INCREMENT`].
//!
//! [`VENUE_INCREMENT`]: super::VENUE_INCREMENT

use std::cmp::Reverse;
use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::wire::{J, JsonScratch, ParseError, decimal, parse_rfc3339_nanos};
use super::{Action, Venue};
use crate::model::{BookDelta, DecimalErrorKind, Event, InstrumentId, Nanos, Payload, Price, Quote, Side, Size, Trade};

/// Levels per side in the checksum.
const CHECKSUM_LEVELS: usize = 10;
/// Book depths Kraken accepts.
pub const DEPTHS: [u32; 5] = [10, 25, 100, 500, 1000];

/// Our symbol for a Kraken pair: `BTC/USD` → `kraken:BTC-USD`.
pub fn instrument_symbol(pair: &str) -> String {
    format!("kraken:{}", pair.to_ascii_uppercase().replace('/', "-"))
}

/// Kraken's name for a pair given as `BTC/USD` or `BTC-USD`.
pub fn venue_symbol(given: &str) -> String {
    given.to_ascii_uppercase().replace('-', "/")
}

/// The names Kraken's older APIs (REST, WebSocket v1) give a pair, which
/// traders still type: `XBT/USD` for `BTC/USD`, `XDG/USD` for `DOGE/USD`.
pub fn legacy_names(pair: &str) -> Vec<String> {
    let legacy: String = pair
        .split('/')
        .map(|asset| match asset {
            "BTC" => "XBT",
            "DOGE" => "XDG",
            other => other,
        })
        .collect::<Vec<_>>()
        .join("/");
    if legacy == pair { Vec::new() } else { vec![legacy] }
}

/// The checksum form of a number's text: without the point and leading zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digits {
    len: u8,
    buf: [u8; 31],
}

impl Digits {
    pub fn from_text(text: &[u8]) -> Option<Digits> {
        let mut buf = [0u8; 31];
        let mut len = 0usize;
        for &b in text {
            match b {
                b'.' => {}
                b'0' if len == 0 => {}
                b'0'..=b'9' => {
                    *buf.get_mut(len)? = b;
                    len += 1;
                }
                _ => return None,
            }
        }
        Some(Digits { len: len as u8, buf })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

/// A price level with the checksum text of its price and quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub price: Price,
    pub qty: Size,
    price_digits: Digits,
    qty_digits: Digits,
}

/// Reads `{"price": 45283.5, "qty": 0.10000000}`.
fn level(value: J<'_, '_>) -> Result<Level, ParseError> {
    let price_text = value.req("price")?.raw().ok_or(ParseError::Field("price"))?;
    let qty_text = value.req("qty")?.raw().ok_or(ParseError::Field("qty"))?;
    let price = decimal(price_text, "price")?;
    let qty = decimal(qty_text, "qty")?;
    if price < 0 || qty < 0 {
        return Err(ParseError::Number { field: "price", kind: DecimalErrorKind::InvalidChar });
    }
    let bad = |field| ParseError::Number { field, kind: DecimalErrorKind::InvalidChar };
    Ok(Level {
        price: Price(price),
        qty: Size(qty),
        price_digits: Digits::from_text(price_text).ok_or(bad("price"))?,
        qty_digits: Digits::from_text(qty_text).ok_or(bad("qty"))?,
    })
}

/// Why a Kraken book was found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KrakenBookFault {
    Checksum { expected: u32, computed: u32 },
    Crossed,
}

/// One pair's book as Kraken keeps it: at most `depth` levels a side. Pure.
#[derive(Debug, Clone, Default)]
pub struct KrakenBook {
    bids: BTreeMap<Reverse<Price>, Level>,
    asks: BTreeMap<Price, Level>,
}

impl KrakenBook {
    /// CRC32 of the top ten asks then bids, as Kraken computes it.
    pub fn checksum(&self) -> u32 {
        let mut crc = crc32fast::Hasher::new();
        for level in self.asks.values().take(CHECKSUM_LEVELS).chain(self.bids.values().take(CHECKSUM_LEVELS)) {
            crc.update(level.price_digits.as_bytes());
            crc.update(level.qty_digits.as_bytes());
        }
        crc.finalize()
    }

    fn set(&mut self, bid: bool, level: Level) {
        match (bid, level.qty.is_zero()) {
            (true, true) => drop(self.bids.remove(&Reverse(level.price))),
            (true, false) => drop(self.bids.insert(Reverse(level.price), level)),
            (false, true) => drop(self.asks.remove(&level.price)),
            (false, false) => drop(self.asks.insert(level.price, level)),
        }
    }

    /// Applies levels in order, truncates to `depth`, and returns the net change
    /// (with the truncated levels as removals). Checks crossing and `checksum`.
    pub fn apply(
        &mut self,
        bids: &[Level],
        asks: &[Level],
        depth: usize,
        checksum: u32,
    ) -> Result<BookDelta, KrakenBookFault> {
        let mut delta = BookDelta::default();
        for l in bids {
            self.set(true, *l);
            delta.bids.push((l.price, l.qty));
        }
        for l in asks {
            self.set(false, *l);
            delta.asks.push((l.price, l.qty));
        }
        while self.bids.len() > depth {
            if let Some((Reverse(price), _)) = self.bids.pop_last() {
                delta.bids.push((price, Size::ZERO));
            }
        }
        while self.asks.len() > depth {
            if let Some((price, _)) = self.asks.pop_last() {
                delta.asks.push((price, Size::ZERO));
            }
        }
        if let (Some((Reverse(bid), _)), Some((ask, _))) = (self.bids.first_key_value(), self.asks.first_key_value())
            && bid >= ask
        {
            return Err(KrakenBookFault::Crossed);
        }
        let computed = self.checksum();
        if computed != checksum {
            return Err(KrakenBookFault::Checksum { expected: checksum, computed });
        }
        Ok(delta)
    }

    pub fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
    }

    pub fn to_delta(&self) -> BookDelta {
        BookDelta {
            bids: self.bids.values().map(|l| (l.price, l.qty)).collect(),
            asks: self.asks.values().map(|l| (l.price, l.qty)).collect(),
        }
    }

    pub fn depth(&self) -> (usize, usize) {
        (self.bids.len(), self.asks.len())
    }
}

struct Pair {
    symbol: String,
    instrument: InstrumentId,
    book: KrakenBook,
    live: bool,
    published: bool,
    last_trade_id: Option<u64>,
}

impl Pair {
    fn withdraw(&mut self, ts_recv: Nanos, out: &mut Vec<Event>) {
        self.book.clear();
        self.live = false;
        super::withdraw_book(&mut self.published, self.instrument, ts_recv, out);
    }
}

/// The Kraken v2 protocol for a set of pairs.
pub struct Kraken {
    json: JsonScratch,
    pairs: Vec<Pair>,
    by_symbol: FxHashMap<String, usize>,
    depth: u32,
    next_req_id: u64,
    bids: Vec<Level>,
    asks: Vec<Level>,
    trades: Vec<(usize, Nanos, Trade)>,
}

fn ts_or(value: Option<J<'_, '_>>, fallback: Nanos) -> Result<Nanos, ParseError> {
    match value.and_then(|v| v.str()) {
        None => Ok(fallback),
        Some(text) => parse_rfc3339_nanos(text).ok_or(ParseError::Timestamp("timestamp")),
    }
}

impl Kraken {
    /// `pairs`: Kraken pair (`BTC/USD`) and the instrument it feeds; `depth` one of
    /// [`DEPTHS`].
    pub fn new(pairs: Vec<(String, InstrumentId)>, depth: u32) -> Self {
        let by_symbol = pairs.iter().enumerate().map(|(i, (s, _))| (s.clone(), i)).collect();
        let pairs = pairs
            .into_iter()
            .map(|(symbol, instrument)| Pair {
                symbol,
                instrument,
                book: KrakenBook::default(),
                live: false,
                published: false,
                last_trade_id: None,
            })
            .collect();
        let depth = if DEPTHS.contains(&depth) { depth } else { 10 };
        Self {
            json: JsonScratch::default(),
            pairs,
            by_symbol,
            depth,
            next_req_id: 1,
            bids: Vec::new(),
            asks: Vec::new(),
            trades: Vec::new(),
        }
    }

    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// The book of the `index`-th pair and whether it is in sync (for tests).
    pub fn book(&self, index: usize) -> (&KrakenBook, bool) {
        (&self.pairs[index].book, self.pairs[index].live)
    }

    fn request(&mut self, method: &str, params: &str) -> String {
        let id = self.next_req_id;
        self.next_req_id += 1;
        format!(r#"{{"method":"{method}","params":{params},"req_id":{id}}}"#)
    }

    fn book_params(&self, symbols: &[&str]) -> String {
        let list: Vec<String> = symbols.iter().map(|s| format!("\"{s}\"")).collect();
        format!(r#"{{"channel":"book","symbol":[{}],"depth":{},"snapshot":true}}"#, list.join(","), self.depth)
    }
}

impl Venue for Kraken {
    fn venue(&self) -> &'static str {
        "kraken"
    }

    /// Kraken sends a `heartbeat` about once a second when a connection has no
    /// other update (docs.kraken.com/api/docs/websocket-v2/heartbeat): three
    /// missed in a row is a dead connection.
    fn stale_limit(&self) -> std::time::Duration {
        std::time::Duration::from_secs(3)
    }

    fn subscriptions(&mut self) -> Vec<String> {
        let symbols: Vec<String> = self.pairs.iter().map(|p| format!("\"{}\"", p.symbol)).collect();
        let list = symbols.join(",");
        let names: Vec<&str> = self.pairs.iter().map(|p| p.symbol.as_str()).collect();
        let book = self.book_params(&names);
        vec![
            self.request("subscribe", &book),
            self.request("subscribe", &format!(r#"{{"channel":"trade","symbol":[{list}],"snapshot":true}}"#)),
            self.request("subscribe", &format!(r#"{{"channel":"ticker","symbol":[{list}],"event_trigger":"bbo"}}"#)),
        ]
    }

    fn on_connection_start(&mut self) {}

    fn on_message(
        &mut self,
        text: &[u8],
        ts_recv: Nanos,
        out: &mut Vec<Event>,
        actions: &mut Vec<Action>,
    ) -> Result<(), ParseError> {
        let depth = self.depth as usize;
        let Self { json, pairs, by_symbol, bids, asks, trades, .. } = self;
        let lookup = |entry: J<'_, '_>| -> Result<usize, ParseError> {
            let symbol = entry.req_str("symbol")?;
            by_symbol.get(symbol).copied().ok_or_else(|| ParseError::UnknownSymbol(symbol.to_owned()))
        };
        let mut faults: Vec<(usize, &'static str)> = Vec::new();
        json.parse(text, true, |root| -> Result<(), ParseError> {
            let Some(channel) = root.get("channel").and_then(|c| c.str()) else {
                // Method responses: subscribe acks, pongs, errors.
                if root.get("success").and_then(|s| s.bool()) == Some(false) {
                    tracing::warn!(error = root.get("error").and_then(|e| e.str()), "kraken refused a request");
                }
                return Ok(());
            };
            let kind = root.get("type").and_then(|t| t.str());
            let data = root.get("data");
            match channel {
                // {"channel":"book","type":"update","data":[{"symbol":"BTC/USD",
                //   "bids":[{"price":45283.5,"qty":0.10000000}],"asks":[],"checksum":3310070434,
                //   "timestamp":"2023-10-06T17:35:55.440295Z"}]}
                "book" => {
                    let snapshot = match kind {
                        Some("snapshot") => true,
                        Some("update") => false,
                        _ => return Err(ParseError::Field("type")),
                    };
                    for entry in data.ok_or(ParseError::Field("data"))?.items() {
                        let index = lookup(entry)?;
                        bids.clear();
                        asks.clear();
                        for l in entry.get("bids").into_iter().flat_map(|b| b.items()) {
                            bids.push(level(l)?);
                        }
                        for l in entry.get("asks").into_iter().flat_map(|a| a.items()) {
                            asks.push(level(l)?);
                        }
                        let checksum =
                            u32::try_from(entry.req_u64("checksum")?).map_err(|_| ParseError::Field("checksum"))?;
                        let ts_event = ts_or(entry.get("timestamp"), ts_recv)?;
                        let pair = &mut pairs[index];
                        if snapshot {
                            pair.book.clear();
                        } else if !pair.live {
                            continue;
                        }
                        match pair.book.apply(bids, asks, depth, checksum) {
                            Ok(delta) if snapshot => {
                                pair.live = true;
                                pair.published = true;
                                let _ = delta;
                                out.push(Event::new(
                                    pair.instrument,
                                    ts_event,
                                    ts_recv,
                                    Payload::BookReset(pair.book.to_delta()),
                                ));
                            }
                            Ok(delta) => out.push(Event::new(pair.instrument, ts_event, ts_recv, Payload::Book(delta))),
                            Err(fault) => {
                                pair.withdraw(ts_recv, out);
                                faults.push((
                                    index,
                                    match fault {
                                        KrakenBookFault::Checksum { .. } => "checksum mismatch",
                                        KrakenBookFault::Crossed => "book crossed",
                                    },
                                ));
                            }
                        }
                    }
                }
                // {"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy",
                //   "price":63211.5,"qty":0.00250000,"ord_type":"market","trade_id":74112345,"timestamp":"…"}]}
                "trade" => {
                    trades.clear();
                    for entry in data.ok_or(ParseError::Field("data"))?.items() {
                        let index = lookup(entry)?;
                        let side = match entry.req_str("side")? {
                            "buy" => Side::Buy,
                            "sell" => Side::Sell,
                            _ => return Err(ParseError::Field("side")),
                        };
                        let price = entry.req_decimal_num("price")?;
                        let qty = entry.req_decimal_num("qty")?;
                        if price < 0 || qty < 0 {
                            return Err(ParseError::Number { field: "price", kind: DecimalErrorKind::InvalidChar });
                        }
                        let trade =
                            Trade { price: Price(price), size: Size(qty), side, trade_id: entry.req_u64("trade_id")? };
                        trades.push((index, ts_or(entry.get("timestamp"), ts_recv)?, trade));
                    }
                    trades.sort_by_key(|(index, _, t)| (*index, t.trade_id));
                    for &(index, ts_event, trade) in trades.iter() {
                        let pair = &mut pairs[index];
                        if pair.last_trade_id.is_some_and(|last| trade.trade_id <= last) {
                            continue;
                        }
                        pair.last_trade_id = Some(trade.trade_id);
                        out.push(Event::new(pair.instrument, ts_event, ts_recv, Payload::Trade(trade)));
                    }
                }
                // {"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":63211.4,
                //   "bid_qty":0.51000000,"ask":63211.5,"ask_qty":1.25000000, …,"timestamp":"…"}]}
                "ticker" => {
                    for entry in data.ok_or(ParseError::Field("data"))?.items() {
                        let index = lookup(entry)?;
                        let quote = Quote {
                            bid: Price(entry.req_decimal_num("bid")?),
                            bid_size: Size(entry.req_decimal_num("bid_qty")?),
                            ask: Price(entry.req_decimal_num("ask")?),
                            ask_size: Size(entry.req_decimal_num("ask_qty")?),
                        };
                        if quote.bid.0 < 0 || quote.ask.0 < 0 || quote.bid_size.0 < 0 || quote.ask_size.0 < 0 {
                            return Err(ParseError::Number { field: "bid", kind: DecimalErrorKind::InvalidChar });
                        }
                        let ts_event = ts_or(entry.get("timestamp"), ts_recv)?;
                        out.push(Event::new(pairs[index].instrument, ts_event, ts_recv, Payload::Quote(quote)));
                    }
                }
                // heartbeat, status, instrument: nothing to normalise.
                _ => {}
            }
            Ok(())
        })??;
        for (index, reason) in faults {
            let symbol = self.pairs[index].symbol.clone();
            let params = self.book_params(&[&symbol]);
            let unsubscribe = params.replace(r#","snapshot":true"#, "");
            actions.push(Action::Resync { symbol, reason });
            let unsubscribe = self.request("unsubscribe", &unsubscribe);
            let subscribe = self.request("subscribe", &params);
            actions.push(Action::Send(unsubscribe));
            actions.push(Action::Send(subscribe));
        }
        Ok(())
    }

    fn on_disconnect(&mut self, ts_recv: Nanos, out: &mut Vec<Event>) {
        for pair in &mut self.pairs {
            pair.withdraw(ts_recv, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: InstrumentId = InstrumentId(0);
    /// Kraken's published checksum example (expected CRC32 3310070434).
    const VECTOR: &str = include_str!("../../tests/fixtures/kraken/book_snapshot_checksum_vector.json");

    fn px(text: &str) -> Price {
        Price::parse(text).unwrap()
    }
    fn sz(text: &str) -> Size {
        Size::parse(text).unwrap()
    }

    fn feed(k: &mut Kraken, text: &str) -> (Vec<Event>, Vec<Action>) {
        let (mut out, mut actions) = (Vec::new(), Vec::new());
        k.on_message(text.as_bytes(), 9, &mut out, &mut actions).unwrap();
        (out, actions)
    }

    #[test]
    fn legacy_names_are_the_x_spellings() {
        assert_eq!(legacy_names("BTC/USD"), vec!["XBT/USD".to_owned()]);
        assert_eq!(legacy_names("DOGE/BTC"), vec!["XDG/XBT".to_owned()]);
        assert!(legacy_names("ETH/USD").is_empty());
    }

    #[test]
    fn digits_drop_the_point_and_leading_zeros() {
        assert_eq!(Digits::from_text(b"0.00100000").unwrap().as_bytes(), b"100000");
        assert_eq!(Digits::from_text(b"45281.0").unwrap().as_bytes(), b"452810");
        assert!(Digits::from_text(b"1e5").is_none());
    }

    #[test]
    fn published_checksum_vector_matches() {
        let mut k = Kraken::new(vec![("BTC/USD".into(), ID)], 10);
        let (out, actions) = feed(&mut k, VECTOR);
        assert!(actions.is_empty(), "{actions:?}");
        let Payload::BookReset(book) = &out[0].payload else { panic!("{out:?}") };
        assert_eq!(book.bids[0], (px("45283.5"), sz("0.1")));
        assert_eq!(book.asks[9], (px("45299.5"), sz("0.18772827")));
        assert_eq!(out[0].ts_event, parse_rfc3339_nanos("2023-10-06T17:35:55.440295Z").unwrap());
        assert_eq!(k.book(0).0.checksum(), 3_310_070_434);
    }

    #[test]
    fn trailing_zeros_matter_to_the_checksum() {
        // The same values with the trailing zeros dropped change the text and so the checksum.
        let mut k = Kraken::new(vec![("BTC/USD".into(), ID)], 10);
        let (out, actions) = feed(&mut k, &VECTOR.replace("0.10000000", "0.1"));
        assert!(out.is_empty());
        assert_eq!(actions[0], Action::Resync { symbol: "BTC/USD".into(), reason: "checksum mismatch" });
    }

    #[test]
    fn update_truncates_to_depth_and_checks() {
        let mut k = Kraken::new(vec![("BTC/USD".into(), ID)], 10);
        feed(&mut k, VECTOR);
        // A new best bid pushes the worst bid (45276.6) out of the top ten.
        let mut expected = k.book(0).0.clone();
        let new = level_of("45284.0", "1.00000000");
        let delta = expected.apply(&[new], &[], 10, 0).map(|_| ()).unwrap_err();
        assert!(matches!(delta, KrakenBookFault::Checksum { .. }));
        let checksum = expected.checksum();
        let update = format!(
            r#"{{"channel":"book","type":"update","data":[{{"symbol":"BTC/USD","bids":[{{"price":45284.0,"qty":1.00000000}}],"asks":[],"checksum":{checksum},"timestamp":"2023-10-06T17:35:56.000000Z"}}]}}"#
        );
        let (out, actions) = feed(&mut k, &update);
        assert!(actions.is_empty());
        assert_eq!(
            out[0].payload,
            Payload::Book(BookDelta { bids: vec![(px("45284"), sz("1")), (px("45276.6"), Size::ZERO)], asks: vec![] })
        );
        assert_eq!(k.book(0).0.depth(), (10, 10));
        // A wrong checksum withdraws the book and resubscribes.
        let (out, actions) = feed(&mut k, &update.replace(&checksum.to_string(), "1"));
        assert_eq!(out, [Event::new(ID, 9, 9, Payload::BookReset(BookDelta::default()))]);
        assert_eq!(
            actions[1..],
            [
                Action::Send(r#"{"method":"unsubscribe","params":{"channel":"book","symbol":["BTC/USD"],"depth":10},"req_id":1}"#.into()),
                Action::Send(r#"{"method":"subscribe","params":{"channel":"book","symbol":["BTC/USD"],"depth":10,"snapshot":true},"req_id":2}"#.into()),
            ]
        );
        // Updates before the new snapshot are dropped.
        assert!(feed(&mut k, &update).0.is_empty());
    }

    fn level_of(price: &str, qty: &str) -> Level {
        Level {
            price: px(price),
            qty: sz(qty),
            price_digits: Digits::from_text(price.as_bytes()).unwrap(),
            qty_digits: Digits::from_text(qty.as_bytes()).unwrap(),
        }
    }

    #[test]
    fn trades_and_ticker_from_raw_numbers() {
        let mut k = Kraken::new(vec![("BTC/USD".into(), ID)], 10);
        let (out, _) = feed(
            &mut k,
            r#"{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":63211.5,"qty":0.00250000,"ord_type":"market","trade_id":74112345,"timestamp":"2024-05-01T12:00:06.123456Z"},{"symbol":"BTC/USD","side":"sell","price":63211.6,"qty":0.10000000,"ord_type":"market","trade_id":74112346,"timestamp":"2024-05-01T12:00:06.123456Z"}]}"#,
        );
        let t = parse_rfc3339_nanos("2024-05-01T12:00:06.123456Z").unwrap();
        assert_eq!(
            out,
            [
                Event::new(
                    ID,
                    t,
                    9,
                    Payload::Trade(Trade {
                        price: px("63211.5"),
                        size: sz("0.0025"),
                        side: Side::Buy,
                        trade_id: 74_112_345
                    })
                ),
                Event::new(
                    ID,
                    t,
                    9,
                    Payload::Trade(Trade {
                        price: px("63211.6"),
                        size: sz("0.1"),
                        side: Side::Sell,
                        trade_id: 74_112_346
                    })
                ),
            ]
        );
        let (out, _) = feed(
            &mut k,
            r#"{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":63211.4,"bid_qty":0.51000000,"ask":63211.5,"ask_qty":1.25000000,"last":63211.5,"volume":1843.29170012,"vwap":62987.1,"low":62010.0,"high":63500.0,"change":812.3,"change_pct":1.30,"timestamp":"2024-05-01T12:00:06.123456Z"}]}"#,
        );
        assert_eq!(
            out,
            [Event::new(
                ID,
                t,
                9,
                Payload::Quote(Quote {
                    bid: px("63211.4"),
                    bid_size: sz("0.51"),
                    ask: px("63211.5"),
                    ask_size: sz("1.25")
                })
            )]
        );
        for ignored in [
            r#"{"channel": "heartbeat"}"#,
            r#"{"method": "pong", "req_id": 101, "time_in": "2024-05-01T12:00:05.000100Z", "time_out": "2024-05-01T12:00:05.000140Z"}"#,
            r#"{"channel": "status", "type": "update", "data": [{"version": "2.0.10", "system": "online", "api_version": "v2", "connection_id": 12393906104898154338}]}"#,
        ] {
            assert_eq!(feed(&mut k, ignored), (vec![], vec![]));
        }
    }

    #[test]
    fn subscriptions() {
        let mut k = Kraken::new(vec![("BTC/USD".into(), ID), ("ETH/USD".into(), InstrumentId(1))], 25);
        assert_eq!(
            k.subscriptions(),
            [
                r#"{"method":"subscribe","params":{"channel":"book","symbol":["BTC/USD","ETH/USD"],"depth":25,"snapshot":true},"req_id":1}"#,
                r#"{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD","ETH/USD"],"snapshot":true},"req_id":2}"#,
                r#"{"method":"subscribe","params":{"channel":"ticker","symbol":["BTC/USD","ETH/USD"],"event_trigger":"bbo"},"req_id":3}"#,
            ]
        );
        assert_eq!(instrument_symbol("btc/usd"), "kraken:BTC-USD");
        assert_eq!(venue_symbol("BTC-USD"), "BTC/USD");
    }

    fn levels_json(levels: &[(i64, i64, usize)]) -> String {
        // Prices with one decimal, quantities with 0-8 significant trailing zeros.
        let items: Vec<String> = levels
            .iter()
            .map(|&(p, q, zeros)| format!(r#"{{"price":{p}.5,"qty":{q}.{}}}"#, "0".repeat(zeros.max(1))))
            .collect();
        items.join(",")
    }

    proptest::proptest! {
        /// Random updates, some with the right checksum and some without: every
        /// emitted event applies to the engine's book, which never crosses, never
        /// holds more than the depth, and equals the venue book while in sync.
        #[test]
        fn venue_sync_never_emits_a_bad_book(updates in proptest::collection::vec((
            proptest::collection::vec((90i64..104, 0i64..3, 0usize..8), 0..4),
            proptest::collection::vec((96i64..110, 0i64..3, 0usize..8), 0..4),
            proptest::bool::weighted(0.8),
        ), 1..40)) {
            let mut k = Kraken::new(vec![("BTC/USD".into(), ID)], 10);
            let mut l2 = crate::book::L2Book::default();
            let snapshot = r#"{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD","bids":[{"price":95.5,"qty":1.0}],"asks":[{"price":105.5,"qty":1.0}],"checksum":CHECK}]}"#;
            let check = {
                let mut probe = KrakenBook::default();
                let _ = probe.apply(&[level_of("95.5", "1.0")], &[level_of("105.5", "1.0")], 10, 0);
                probe.checksum()
            };
            let mut messages = vec![snapshot.replace("CHECK", &check.to_string())];
            for (bids, asks, right) in updates {
                let (b, a) = (levels_json(&bids), levels_json(&asks));
                // The right checksum is what the venue's book would hash to after the update.
                let mut probe = k.book(0).0.clone();
                let parse = |l: &[(i64, i64, usize)]| -> Vec<Level> {
                    l.iter().map(|&(p, q, z)| level_of(&format!("{p}.5"), &format!("{q}.{}", "0".repeat(z.max(1))))).collect()
                };
                let checksum = match probe.apply(&parse(&bids), &parse(&asks), 10, 0) {
                    Err(KrakenBookFault::Checksum { computed, .. }) if right => computed,
                    _ => 7,
                };
                messages.push(format!(r#"{{"channel":"book","type":"update","data":[{{"symbol":"BTC/USD","bids":[{b}],"asks":[{a}],"checksum":{checksum}}}]}}"#));
                for message in messages.drain(..) {
                    let (mut out, mut actions) = (Vec::new(), Vec::new());
                    k.on_message(message.as_bytes(), 1, &mut out, &mut actions).unwrap();
                    for event in &out {
                        let applied = match &event.payload {
                            Payload::Book(d) => l2.apply(d),
                            Payload::BookReset(d) => { l2 = crate::book::L2Book::default(); l2.apply(d) }
                            _ => Ok(()),
                        };
                        proptest::prop_assert!(applied.is_ok(), "engine refused {:?}", event);
                    }
                }
                if let (Some(b), Some(a)) = (l2.best_bid(), l2.best_ask()) {
                    proptest::prop_assert!(b.0 < a.0);
                }
                let (venue, live) = k.book(0);
                if live {
                    let d = venue.to_delta();
                    proptest::prop_assert_eq!(l2.top(usize::MAX), (d.bids, d.asks));
                    proptest::prop_assert!(venue.depth().0 <= 10 && venue.depth().1 <= 10);
                } else {
                    proptest::prop_assert_eq!(l2.depth(), (0, 0));
                    // The venue would answer the resubscribe with a fresh snapshot.
                    messages.push(snapshot.replace("CHECK", &check.to_string()));
                }
            }
        }
    }
}
