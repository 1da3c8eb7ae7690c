//! OKX public WebSocket v5, spot: tickers, trades and the 400-level `books`
//! channel, kept right by its sequence ids, its CRC32 checksum (while OKX still
//! fills it in) and the crossing check.
//!
//! Docs (<https://www.okx.com/docs-v5/en/>): `#order-book-trading-market-data-ws-tickers-channel`,
//! `#order-book-trading-market-data-ws-trades-channel`,
//! `#order-book-trading-market-data-ws-order-book-channel` (with its "Sequence
//! ID" and "Checksum" sections), `#overview-websocket-connect` (limits and
//! `ping`) and `#overview-websocket-notification` (`notice` 64008).
//!
//! On `/ws/v5/public` we send one `subscribe` per channel, each listing every
//! instrument (`{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"},…]}`):
//! `books`, `trades`, `tickers`.
//!
//! Book sync, per instrument, by the documented rules: the first `books` push is
//! a `snapshot` (`prevSeqId` -1) that replaces the book (`BookReset`); each
//! `update` must name the last applied `seqId` as its `prevSeqId`. That one rule
//! also accepts OKX's two exceptions: a no-change heartbeat (about once a minute
//! on a quiet book: no levels, `seqId` equal to `prevSeqId`, which equals the last
//! `seqId`) and a sequence reset after maintenance (`seqId` below `prevSeqId`).
//! Levels are applied in order (size `"0"` removes one); then the book must not
//! be crossed, and the CRC32 of the top 25 bids and asks, interleaved
//! `bid:size:ask:size:…` over the exact text OKX sent, read as a signed 32-bit
//! integer, must equal `checksum`. Any other `prevSeqId`, a checksum mismatch or a
//! crossed book withdraws the book (`BookReset` with no levels, so clients get
//! `book_invalidated`), reports [`Action::Resync`] and unsubscribes and
//! resubscribes that instrument's `books`, which brings a fresh snapshot; updates
//! in between are dropped.
//!
//! OKX has announced that the checksum is going (API changelog, "Delist initial
//! snapshot and checksum field in order book channels", and the notice of 21 May
//! 2026: in production from 23 June 2026 the field stays but is always 0). A
//! checksum of 0 is therefore taken as "not sent" and only the sequence and
//! crossing checks apply; a book whose real CRC32 is 0 (one in 2³²) goes
//! unchecked once. The same changelog says the initial WebSocket snapshot will go
//! too, leaving the snapshot to `GET /api/v5/market/books`; this connector relies
//! on the WebSocket snapshot the channel documentation still describes, and a
//! `books` channel without one would leave the book withdrawn until the
//! book-sync timeout replaces the connection (docs/VENUES.md, "OKX").
//!
//! Liveness: OKX closes a connection it has pushed nothing on for 30 s and asks
//! the client to send `ping` (text) after N < 30 s of silence; it answers `pong`.
//! [`Venue::keepalive`] asks the shell for `ping` after 20 s, so a healthy
//! connection is never silent much longer than that, and [`Venue::stale_limit`]
//! is 30 s, one and a half of those intervals (as Binance's 30 s is of its 20 s
//! server ping), and OKX's own idle cut-off.
//!
//! Limits: 480 `subscribe`/`unsubscribe` requests per connection per hour. Every
//! request this state machine makes is counted over the last hour; a resync that
//! would go past [`REQUEST_BUDGET`] replaces the connection instead (which brings
//! every book fresh and a fresh allowance). A `notice` with code 64008 (sent
//! before a service upgrade closes the connection) asks the shell to rotate,
//! make-before-break; `seqId`s are the same on every connection and trades are
//! dropped by `tradeId` when seen twice.
//!
//! Instruments: `okx:BTC-USDT` for `BTC-USDT`, with OKX's `tickSz` and `lotSz`
//! read from its instruments endpoint at start ([`super::reference`]), or
//! [`VENUE_INCREMENT`] when that cannot be read.
//!
//! [`VENUE_INCREMENT`]: super::VENUE_INCREMENT

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use rustc_hash::FxHashMap;

use super::wire::{J, JsonScratch, ParseError, millis_to_nanos, non_negative};
use super::{Action, Venue};
use crate::model::{BookDelta, Event, InstrumentId, Nanos, Payload, Price, Quote, Side, Size, Trade};

/// Levels per side in the checksum.
pub const CHECKSUM_LEVELS: usize = 25;
/// `subscribe`/`unsubscribe`/`login` requests OKX allows a connection in an hour.
pub const REQUESTS_PER_HOUR: usize = 480;
/// Requests this connector spends in an hour before it replaces the connection
/// instead of resubscribing (a margin under [`REQUESTS_PER_HOUR`]).
pub const REQUEST_BUDGET: usize = 460;
/// Silence after which we send `ping` (OKX: "N less than 30" seconds).
pub const KEEPALIVE_AFTER: Duration = Duration::from_secs(20);
/// Instruments named in one `subscribe` (OKX caps a request's arguments at 64 KB).
const INSTRUMENTS_PER_REQUEST: usize = 100;
/// The channels subscribed, in order.
const CHANNELS: [&str; 3] = ["books", "trades", "tickers"];
const HOUR: Nanos = 3_600_000_000_000;

/// Our symbol for an OKX instrument: `BTC-USDT` → `okx:BTC-USDT`.
pub fn instrument_symbol(inst_id: &str) -> String {
    format!("okx:{}", inst_id.to_ascii_uppercase())
}

/// OKX's name (`instId`) for an instrument given as `BTC-USDT`, `btc-usdt` or `BTC/USDT`.
pub fn venue_symbol(given: &str) -> String {
    given.to_ascii_uppercase().replace('/', "-")
}

/// The exact text of a price or size as OKX sent it: the checksum is computed
/// over it (`"8477"` and `"8477.0"` hash differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Text {
    len: u8,
    buf: [u8; 31],
}

impl Text {
    fn new(text: &str) -> Option<Text> {
        let bytes = text.as_bytes();
        let mut buf = [0u8; 31];
        buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Text { len: bytes.len() as u8, buf })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

/// A price level with the text OKX sent for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub price: Price,
    pub size: Size,
    price_text: Text,
    size_text: Text,
}

impl Level {
    /// A level from OKX's price and size strings (`"8476.98"`, `"415"`).
    pub fn parse(price: &str, size: &str) -> Result<Level, ParseError> {
        let too_long = |field| ParseError::Number { field, kind: crate::model::DecimalErrorKind::Overflow };
        Ok(Level {
            price: Price(non_negative(price.as_bytes(), "price")?),
            size: Size(non_negative(size.as_bytes(), "size")?),
            price_text: Text::new(price).ok_or(too_long("price"))?,
            size_text: Text::new(size).ok_or(too_long("size"))?,
        })
    }
}

/// Reads `["8476.98", "415", "0", "13"]` (price, size, a deprecated field, orders).
fn level(value: J<'_, '_>, field: &'static str) -> Result<Level, ParseError> {
    let mut items = value.items();
    let price = items.next().and_then(|v| v.str()).ok_or(ParseError::Field(field))?;
    let size = items.next().and_then(|v| v.str()).ok_or(ParseError::Field(field))?;
    Level::parse(price, size)
}

fn levels(side: Option<J<'_, '_>>, field: &'static str, out: &mut Vec<Level>) -> Result<(), ParseError> {
    out.clear();
    let side = side.ok_or(ParseError::Field(field))?;
    if !side.is_array() {
        return Err(ParseError::Field(field));
    }
    for value in side.items() {
        out.push(level(value, field)?);
    }
    Ok(())
}

/// Why an OKX book was found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OkxBookFault {
    Checksum { expected: i32, computed: i32 },
    Crossed,
}

/// One instrument's book as OKX keeps it. Pure.
#[derive(Debug, Clone, Default)]
pub struct OkxBook {
    bids: BTreeMap<Reverse<Price>, Level>,
    asks: BTreeMap<Price, Level>,
}

impl OkxBook {
    /// Feeds `f` the pieces of the checked string: the top 25 bids and asks,
    /// alternately, `price:size` each, joined by `:`; where one side runs out the
    /// other goes on alone.
    fn checked_pieces(&self, mut f: impl FnMut(&[u8])) {
        let mut bids = self.bids.values().take(CHECKSUM_LEVELS);
        let mut asks = self.asks.values().take(CHECKSUM_LEVELS);
        let mut first = true;
        loop {
            let pair = [bids.next(), asks.next()];
            if pair.iter().all(Option::is_none) {
                return;
            }
            for level in pair.into_iter().flatten() {
                if !first {
                    f(b":");
                }
                first = false;
                f(level.price_text.as_bytes());
                f(b":");
                f(level.size_text.as_bytes());
            }
        }
    }

    /// The string OKX's checksum is the CRC32 of (`3366.1:7:3366.8:9:…`).
    pub fn check_string(&self) -> String {
        let mut text = Vec::new();
        self.checked_pieces(|piece| text.extend_from_slice(piece));
        String::from_utf8_lossy(&text).into_owned()
    }

    /// CRC32 of [`check_string`](Self::check_string), as the signed 32-bit
    /// integer OKX sends.
    pub fn checksum(&self) -> i32 {
        let mut crc = crc32fast::Hasher::new();
        self.checked_pieces(|piece| crc.update(piece));
        crc.finalize() as i32
    }

    fn set(&mut self, bid: bool, level: Level) {
        match (bid, level.size.is_zero()) {
            (true, true) => drop(self.bids.remove(&Reverse(level.price))),
            (true, false) => drop(self.bids.insert(Reverse(level.price), level)),
            (false, true) => drop(self.asks.remove(&level.price)),
            (false, false) => drop(self.asks.insert(level.price, level)),
        }
    }

    /// Applies levels in order, then checks crossing and, when given, the checksum.
    /// On a fault the book is left as changed so far: the caller clears it.
    pub fn apply(&mut self, bids: &[Level], asks: &[Level], checksum: Option<i32>) -> Result<(), OkxBookFault> {
        for level in bids {
            self.set(true, *level);
        }
        for level in asks {
            self.set(false, *level);
        }
        if let (Some((Reverse(bid), _)), Some((ask, _))) = (self.bids.first_key_value(), self.asks.first_key_value())
            && bid >= ask
        {
            return Err(OkxBookFault::Crossed);
        }
        if let Some(expected) = checksum {
            let computed = self.checksum();
            if computed != expected {
                return Err(OkxBookFault::Checksum { expected, computed });
            }
        }
        Ok(())
    }

    pub fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
    }

    /// Every level, best first, as a whole-book delta (for a `BookReset`).
    pub fn to_delta(&self) -> BookDelta {
        BookDelta {
            bids: self.bids.values().map(|l| (l.price, l.size)).collect(),
            asks: self.asks.values().map(|l| (l.price, l.size)).collect(),
        }
    }

    pub fn depth(&self) -> (usize, usize) {
        (self.bids.len(), self.asks.len())
    }
}

struct Instrument {
    inst_id: String,
    instrument: InstrumentId,
    book: OkxBook,
    /// `seqId` of the last book message applied; `None` until a snapshot.
    seq: Option<i64>,
    /// Whether the engine holds a book from us that a withdrawal must clear.
    published: bool,
    last_trade_id: Option<u64>,
}

impl Instrument {
    fn withdraw(&mut self, ts_recv: Nanos, out: &mut Vec<Event>) {
        self.book.clear();
        self.seq = None;
        super::withdraw_book(&mut self.published, self.instrument, ts_recv, out);
    }
}

/// `"1597026383085"` (milliseconds, as a string) in nanoseconds.
fn millis(entry: J<'_, '_>, field: &'static str) -> Result<Nanos, ParseError> {
    let text = entry.req_str(field)?;
    text.parse::<u64>().map(millis_to_nanos).map_err(|_| ParseError::Timestamp(field))
}

/// A ticker price or size: OKX leaves it empty when that side has no order.
fn ticker_decimal(entry: J<'_, '_>, field: &'static str) -> Result<i64, ParseError> {
    match entry.req_str(field)? {
        "" => Ok(0),
        text => non_negative(text.as_bytes(), field),
    }
}

fn request(op: &str, channel: &str, inst_ids: &[&str]) -> String {
    let args: Vec<String> = inst_ids.iter().map(|id| format!(r#"{{"channel":"{channel}","instId":"{id}"}}"#)).collect();
    format!(r#"{{"op":"{op}","args":[{}]}}"#, args.join(","))
}

/// The OKX v5 public protocol for a set of spot instruments.
pub struct Okx {
    json: JsonScratch,
    instruments: Vec<Instrument>,
    by_id: FxHashMap<String, usize>,
    /// When each `subscribe`/`unsubscribe` this connection sent went out, for
    /// the last hour.
    requests: VecDeque<Nanos>,
    /// Requests of the initial subscription, stamped with the next message's time.
    unstamped: usize,
    bids: Vec<Level>,
    asks: Vec<Level>,
    trades: Vec<(usize, Nanos, Trade)>,
}

/// What a message asked of the state machine beyond its events.
enum Followup {
    None,
    Rotate,
}

impl Okx {
    /// `instruments`: OKX `instId` (`BTC-USDT`) and the instrument it feeds.
    pub fn new(instruments: Vec<(String, InstrumentId)>) -> Self {
        let by_id = instruments.iter().enumerate().map(|(i, (s, _))| (s.clone(), i)).collect();
        let instruments = instruments
            .into_iter()
            .map(|(inst_id, instrument)| Instrument {
                inst_id,
                instrument,
                book: OkxBook::default(),
                seq: None,
                published: false,
                last_trade_id: None,
            })
            .collect();
        Self {
            json: JsonScratch::default(),
            instruments,
            by_id,
            requests: VecDeque::new(),
            unstamped: 0,
            bids: Vec::new(),
            asks: Vec::new(),
            trades: Vec::new(),
        }
    }

    /// The book of the `index`-th instrument and whether it is in sync (for tests).
    pub fn book(&self, index: usize) -> (&OkxBook, bool) {
        (&self.instruments[index].book, self.instruments[index].seq.is_some())
    }

    fn subscription_requests(&self) -> Vec<String> {
        let ids: Vec<&str> = self.instruments.iter().map(|i| i.inst_id.as_str()).collect();
        CHANNELS
            .iter()
            .flat_map(|channel| ids.chunks(INSTRUMENTS_PER_REQUEST).map(|chunk| request("subscribe", channel, chunk)))
            .collect()
    }

    /// Forgets requests older than an hour and stamps the initial subscription.
    fn count_requests(&mut self, now: Nanos) {
        for _ in 0..std::mem::take(&mut self.unstamped) {
            self.requests.push_back(now);
        }
        while self.requests.front().is_some_and(|&at| now.saturating_sub(at) >= HOUR) {
            self.requests.pop_front();
        }
    }

    /// Resubscribes the `index`-th instrument's book, or replaces the connection
    /// when the hour's request allowance is nearly spent.
    fn resync(&mut self, index: usize, reason: &'static str, now: Nanos, actions: &mut Vec<Action>) {
        let inst_id = self.instruments[index].inst_id.clone();
        actions.push(Action::Resync { symbol: inst_id.clone(), reason });
        if actions.iter().any(|a| matches!(a, Action::Reconnect(_))) {
            return;
        }
        self.count_requests(now);
        if self.requests.len() + 2 > REQUEST_BUDGET {
            actions.push(Action::Reconnect("OKX request limit (480 an hour) nearly spent: replacing the connection"));
            return;
        }
        self.requests.extend([now, now]);
        actions.push(Action::Send(request("unsubscribe", "books", &[&inst_id])));
        actions.push(Action::Send(request("subscribe", "books", &[&inst_id])));
    }
}

impl Venue for Okx {
    fn venue(&self) -> &'static str {
        "okx"
    }

    /// We ping after 20 s of silence and OKX answers at once, so a healthy
    /// connection is never quiet much longer: one and a half of those intervals
    /// (OKX's own idle cut-off) is a dead connection.
    fn stale_limit(&self) -> Duration {
        Duration::from_secs(30)
    }

    fn keepalive(&self) -> Option<(Duration, &'static str)> {
        Some((KEEPALIVE_AFTER, "ping"))
    }

    fn subscriptions(&mut self) -> Vec<String> {
        self.subscription_requests()
    }

    fn on_connection_start(&mut self) {
        self.requests.clear();
        self.unstamped = self.subscription_requests().len();
    }

    fn on_message(
        &mut self,
        text: &[u8],
        ts_recv: Nanos,
        out: &mut Vec<Event>,
        actions: &mut Vec<Action>,
    ) -> Result<(), ParseError> {
        // The answer to our keepalive is bare text, not JSON.
        if text == b"pong" {
            return Ok(());
        }
        self.count_requests(ts_recv);
        let Self { json, instruments, by_id, bids, asks, trades, .. } = self;
        let mut faults: Vec<(usize, &'static str)> = Vec::new();
        let followup = json.parse(text, false, |root| -> Result<Followup, ParseError> {
            if let Some(event) = root.get("event").and_then(|e| e.str()) {
                let code = root.get("code").and_then(|c| c.str());
                let msg = root.get("msg").and_then(|m| m.str());
                return Ok(match (event, code) {
                    // 60 s before a service upgrade closes this connection.
                    ("notice", Some("64008")) => Followup::Rotate,
                    ("error" | "notice", _) => {
                        tracing::warn!(event, code, msg, "okx says");
                        Followup::None
                    }
                    // subscribe / unsubscribe acknowledgements.
                    _ => Followup::None,
                });
            }
            let arg = root.req("arg")?;
            let channel = arg.req_str("channel")?;
            let inst_id = arg.req_str("instId")?;
            let index = by_id.get(inst_id).copied().ok_or_else(|| ParseError::UnknownSymbol(inst_id.to_owned()))?;
            let data = root.req("data")?;
            if !data.is_array() {
                return Err(ParseError::Field("data"));
            }
            match channel {
                // {"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{
                //   "asks":[["8476.98","415","0","13"]],"bids":[…],"ts":"1597026383085",
                //   "checksum":-855196043,"prevSeqId":123456,"seqId":123457}]}
                "books" => {
                    let snapshot = match root.req_str("action")? {
                        "snapshot" => true,
                        "update" => false,
                        _ => return Err(ParseError::Field("action")),
                    };
                    for entry in data.items() {
                        levels(entry.get("bids"), "bids", bids)?;
                        levels(entry.get("asks"), "asks", asks)?;
                        let ts_event = millis(entry, "ts")?;
                        let seq = entry.req_i64("seqId")?;
                        let prev = entry.req_i64("prevSeqId")?;
                        // 0: OKX no longer fills the checksum in (see the module doc).
                        let checksum = match entry.get("checksum").map(|c| c.i64()) {
                            None | Some(Some(0)) => None,
                            Some(Some(value)) => Some(i32::try_from(value).map_err(|_| ParseError::Field("checksum"))?),
                            Some(None) => return Err(ParseError::Field("checksum")),
                        };
                        let inst = &mut instruments[index];
                        if snapshot {
                            inst.book.clear();
                        } else {
                            match inst.seq {
                                // Waiting for the snapshot a resubscribe brings.
                                None => continue,
                                Some(last) if prev != last => {
                                    inst.withdraw(ts_recv, out);
                                    faults.push((index, "seqId gap"));
                                    continue;
                                }
                                Some(_) => {}
                            }
                        }
                        match inst.book.apply(bids, asks, checksum) {
                            Ok(()) => {
                                inst.seq = Some(seq);
                                if snapshot {
                                    inst.published = true;
                                    let levels = inst.book.to_delta();
                                    out.push(Event::new(
                                        inst.instrument,
                                        ts_event,
                                        ts_recv,
                                        Payload::BookReset(levels),
                                    ));
                                } else if !bids.is_empty() || !asks.is_empty() {
                                    let delta = BookDelta {
                                        bids: bids.iter().map(|l| (l.price, l.size)).collect(),
                                        asks: asks.iter().map(|l| (l.price, l.size)).collect(),
                                    };
                                    out.push(Event::new(inst.instrument, ts_event, ts_recv, Payload::Book(delta)));
                                }
                            }
                            Err(fault) => {
                                inst.withdraw(ts_recv, out);
                                faults.push((
                                    index,
                                    match fault {
                                        OkxBookFault::Checksum { .. } => "checksum mismatch",
                                        OkxBookFault::Crossed => "book crossed",
                                    },
                                ));
                            }
                        }
                    }
                }
                // {"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",
                //   "tradeId":"130639474","px":"42219.9","sz":"0.12060306","side":"buy",
                //   "ts":"1630048897897","count":"3","source":"0","seqId":1234}]}
                "trades" => {
                    trades.clear();
                    for entry in data.items() {
                        let trade_id: u64 =
                            entry.req_str("tradeId")?.parse().map_err(|_| ParseError::Field("tradeId"))?;
                        // The taker's side.
                        let side = match entry.req_str("side")? {
                            "buy" => Side::Buy,
                            "sell" => Side::Sell,
                            _ => return Err(ParseError::Field("side")),
                        };
                        let trade = Trade {
                            price: Price(non_negative(entry.req_str("px")?.as_bytes(), "px")?),
                            size: Size(non_negative(entry.req_str("sz")?.as_bytes(), "sz")?),
                            side,
                            trade_id,
                        };
                        trades.push((index, millis(entry, "ts")?, trade));
                    }
                    trades.sort_by_key(|(_, _, t)| t.trade_id);
                    for &(index, ts_event, trade) in trades.iter() {
                        let inst = &mut instruments[index];
                        if inst.last_trade_id.is_some_and(|last| trade.trade_id <= last) {
                            continue;
                        }
                        inst.last_trade_id = Some(trade.trade_id);
                        out.push(Event::new(inst.instrument, ts_event, ts_recv, Payload::Trade(trade)));
                    }
                }
                // {"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"instType":"SPOT",
                //   "instId":"BTC-USDT","last":"9999.99","askPx":"9999.99","askSz":"11",
                //   "bidPx":"8888.88","bidSz":"5",…,"ts":"1597026383085"}]}
                "tickers" => {
                    for entry in data.items() {
                        let quote = Quote {
                            bid: Price(ticker_decimal(entry, "bidPx")?),
                            bid_size: Size(ticker_decimal(entry, "bidSz")?),
                            ask: Price(ticker_decimal(entry, "askPx")?),
                            ask_size: Size(ticker_decimal(entry, "askSz")?),
                        };
                        let ts_event = millis(entry, "ts")?;
                        out.push(Event::new(instruments[index].instrument, ts_event, ts_recv, Payload::Quote(quote)));
                    }
                }
                _ => {}
            }
            Ok(Followup::None)
        })??;
        if let Followup::Rotate = followup {
            tracing::info!("okx announced a service upgrade: rotating the connection");
            actions.push(Action::Rotate);
        }
        for (index, reason) in faults {
            self.resync(index, reason, ts_recv, actions);
        }
        Ok(())
    }

    fn on_disconnect(&mut self, ts_recv: Nanos, out: &mut Vec<Event>) {
        for inst in &mut self.instruments {
            inst.withdraw(ts_recv, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DecimalErrorKind;

    const ID: InstrumentId = InstrumentId(0);
    /// OKX's documented full-snapshot example, as published (its checksum does
    /// not match its levels: see tests/fixtures/okx/README.md).
    const DOC_SNAPSHOT: &str = include_str!("../../tests/fixtures/okx/book_snapshot.json");
    const DOC_UPDATE: &str = include_str!("../../tests/fixtures/okx/book_update.json");
    const DOC_TICKERS: &str = include_str!("../../tests/fixtures/okx/tickers.json");
    const DOC_TRADES: &str = include_str!("../../tests/fixtures/okx/trades.json");
    const DOC_ACK: &str = include_str!("../../tests/fixtures/okx/subscribe_ack.json");
    const DOC_ERROR: &str = include_str!("../../tests/fixtures/okx/subscribe_error.json");
    const DOC_NOTICE: &str = include_str!("../../tests/fixtures/okx/notice.json");
    /// The CRC32 of the documented snapshot's levels (Python's `zlib.crc32`).
    const DOC_LEVELS_CHECKSUM: i32 = -2_102_840_145;

    fn px(text: &str) -> Price {
        Price::parse(text).unwrap()
    }
    fn sz(text: &str) -> Size {
        Size::parse(text).unwrap()
    }
    fn ms(ms: u64) -> Nanos {
        ms * 1_000_000
    }

    fn okx() -> Okx {
        Okx::new(vec![("BTC-USDT".into(), ID), ("ETH-USDT".into(), InstrumentId(1))])
    }

    fn feed(o: &mut Okx, text: &str) -> (Vec<Event>, Vec<Action>) {
        let (mut out, mut actions) = (Vec::new(), Vec::new());
        o.on_message(text.as_bytes(), 9, &mut out, &mut actions).unwrap();
        (out, actions)
    }

    /// The documented snapshot with the checksum its levels hash to.
    fn snapshot() -> String {
        DOC_SNAPSHOT.replace("-855196043", &DOC_LEVELS_CHECKSUM.to_string())
    }

    /// A `books` message; `checksum` 0 means "not sent".
    fn book(action: &str, prev: i64, seq: i64, bids: &[(&str, &str)], asks: &[(&str, &str)], checksum: i32) -> String {
        let side = |l: &[(&str, &str)]| {
            l.iter().map(|(p, s)| format!(r#"["{p}","{s}","0","1"]"#)).collect::<Vec<_>>().join(",")
        };
        format!(
            r#"{{"arg":{{"channel":"books","instId":"BTC-USDT"}},"action":"{action}","data":[{{"asks":[{}],"bids":[{}],"ts":"1597026383185","checksum":{checksum},"prevSeqId":{prev},"seqId":{seq}}}]}}"#,
            side(asks),
            side(bids)
        )
    }

    fn levels_of(pairs: &[(&str, &str)]) -> Vec<Level> {
        pairs.iter().map(|(p, s)| Level::parse(p, s).unwrap()).collect()
    }

    fn resync_actions(reason: &'static str) -> Vec<Action> {
        vec![
            Action::Resync { symbol: "BTC-USDT".into(), reason },
            Action::Send(r#"{"op":"unsubscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}"#.into()),
            Action::Send(r#"{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}"#.into()),
        ]
    }

    #[test]
    fn names() {
        assert_eq!(instrument_symbol("btc-usdt"), "okx:BTC-USDT");
        assert_eq!(venue_symbol("btc/usdt"), "BTC-USDT");
        assert_eq!(venue_symbol("ETH-USDT"), "ETH-USDT");
    }

    #[test]
    fn subscriptions_and_liveness() {
        let mut o = okx();
        assert_eq!(
            o.subscriptions(),
            [
                r#"{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"},{"channel":"books","instId":"ETH-USDT"}]}"#,
                r#"{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"},{"channel":"trades","instId":"ETH-USDT"}]}"#,
                r#"{"op":"subscribe","args":[{"channel":"tickers","instId":"BTC-USDT"},{"channel":"tickers","instId":"ETH-USDT"}]}"#,
            ]
        );
        assert_eq!(o.keepalive(), Some((Duration::from_secs(20), "ping")));
        assert_eq!(o.stale_limit(), Duration::from_secs(30));
        // Many instruments: OKX caps one request's arguments, so they are chunked.
        let many: Vec<(String, InstrumentId)> = (0..250).map(|i| (format!("T{i}-USDT"), InstrumentId(i))).collect();
        assert_eq!(Okx::new(many).subscriptions().len(), 9);
    }

    /// The "Checksum" section's two examples, to the letter, and the CRC32 values
    /// OKX published for exactly these strings (v3 documentation, same algorithm).
    #[test]
    fn documented_check_strings_and_values() {
        let mut even = OkxBook::default();
        even.apply(&levels_of(&[("3366.1", "7"), ("3366", "6")]), &levels_of(&[("3366.8", "9"), ("3368", "8")]), None)
            .unwrap();
        assert_eq!(even.check_string(), "3366.1:7:3366.8:9:3366:6:3368:8");
        assert_eq!(even.checksum(), -1_881_014_294);
        let mut odd = OkxBook::default();
        odd.apply(&levels_of(&[("3366.1", "7")]), &levels_of(&[("3366.8", "9"), ("3368", "8"), ("3372", "8")]), None)
            .unwrap();
        assert_eq!(odd.check_string(), "3366.1:7:3366.8:9:3368:8:3372:8");
        assert_eq!(odd.checksum(), 831_078_360);
        assert_eq!(OkxBook::default().checksum(), 0);
    }

    #[test]
    fn checksum_takes_the_top_25_of_each_side_and_the_text_as_sent() {
        let bids: Vec<String> = (0..30).map(|i| format!("{}", 1000 - i)).collect();
        let asks: Vec<String> = (0..30).map(|i| format!("{}.0", 1001 + i)).collect();
        let mut book = OkxBook::default();
        let bid_levels: Vec<Level> = bids.iter().map(|p| Level::parse(p, "1").unwrap()).collect();
        let ask_levels: Vec<Level> = asks.iter().map(|p| Level::parse(p, "1").unwrap()).collect();
        book.apply(&bid_levels, &ask_levels, None).unwrap();
        let string = book.check_string();
        assert_eq!(string.split(':').count(), 100);
        assert!(string.starts_with("1000:1:1001.0:1:999:1:1002.0:1"), "{string}");
        assert!(string.ends_with("976:1:1025.0:1"), "{string}");
        // "1001.0" and "1001" are the same price and a different text.
        let mut other = OkxBook::default();
        other.apply(&levels_of(&[("1000", "1")]), &levels_of(&[("1001", "1")]), None).unwrap();
        let mut same = OkxBook::default();
        same.apply(&levels_of(&[("1000", "1")]), &levels_of(&[("1001.0", "1")]), None).unwrap();
        assert_eq!(other.to_delta(), same.to_delta());
        assert_ne!(other.checksum(), same.checksum());
    }

    #[test]
    fn documented_snapshot_as_published_fails_its_checksum() {
        let mut o = okx();
        let (out, actions) = feed(&mut o, DOC_SNAPSHOT);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(actions, resync_actions("checksum mismatch"));
        assert!(!o.book(0).1);
    }

    #[test]
    fn documented_snapshot_then_update() {
        let mut o = okx();
        let (out, actions) = feed(&mut o, &snapshot());
        assert!(actions.is_empty(), "{actions:?}");
        let Payload::BookReset(levels) = &out[0].payload else { panic!("{out:?}") };
        assert_eq!((out[0].instrument, out[0].ts_event, out[0].ts_recv), (ID, ms(1_597_026_383_085), 9));
        assert_eq!(levels.bids.len(), 8);
        assert_eq!(levels.bids[0], (px("8476.97"), sz("256")));
        assert_eq!(levels.bids[7], (px("8446"), sz("95")));
        assert_eq!(levels.asks[0], (px("8476.98"), sz("415")));
        assert_eq!(levels.asks[7], (px("8506.96"), sz("100")));
        assert_eq!(o.book(0).0.checksum(), DOC_LEVELS_CHECKSUM);
        // The documented update repeats the same levels: nothing changes, and with
        // the right checksum it applies.
        let update = DOC_UPDATE.replace("-855196043", &DOC_LEVELS_CHECKSUM.to_string());
        let (out, actions) = feed(&mut o, &update);
        assert!(actions.is_empty());
        let Payload::Book(delta) = &out[0].payload else { panic!("{out:?}") };
        assert_eq!(delta.bids.len() + delta.asks.len(), 16);
        assert_eq!(o.book(0).0.to_delta(), *levels);
        // As published, its checksum does not match: withdrawn and resubscribed.
        let (out, actions) = feed(&mut o, &DOC_UPDATE.replace("123456", "123457").replace("123457}", "123458}"));
        assert_eq!(out, [Event::new(ID, 9, 9, Payload::BookReset(BookDelta::default()))]);
        assert_eq!(actions, resync_actions("checksum mismatch"));
    }

    /// The "Sequence ID" section's example, message by message.
    #[test]
    fn documented_sequence_rules() {
        let mut o = okx();
        let bid = [("100", "1")];
        let ask = [("101", "1")];
        let check = |bids: &[(&str, &str)], asks: &[(&str, &str)]| {
            let mut b = OkxBook::default();
            b.apply(&levels_of(bids), &levels_of(asks), None).unwrap();
            b.checksum()
        };
        // 1. Snapshot: prevSeqId -1, seqId 10.
        let (out, _) = feed(&mut o, &book("snapshot", -1, 10, &bid, &ask, check(&bid, &ask)));
        assert!(matches!(out[0].payload, Payload::BookReset(ref d) if d.bids.len() == 1));
        // 2. Normal update: 10 → 15.
        let (out, actions) =
            feed(&mut o, &book("update", 10, 15, &[("99", "2")], &[], check(&[("100", "1"), ("99", "2")], &ask)));
        assert!(actions.is_empty());
        assert_eq!(out[0].payload, Payload::Book(BookDelta { bids: vec![(px("99"), sz("2"))], asks: vec![] }));
        let now = check(&[("100", "1"), ("99", "2")], &ask);
        // 3. No update (heartbeat): 15 → 15, no levels, no event.
        assert_eq!(feed(&mut o, &book("update", 15, 15, &[], &[], now)), (vec![], vec![]));
        // 4. Sequence reset: 15 → 3.
        assert_eq!(feed(&mut o, &book("update", 15, 3, &[], &[], now)), (vec![], vec![]));
        // 5. Normal update after the reset: 3 → 5.
        let (out, actions) = feed(&mut o, &book("update", 3, 5, &[("99", "0")], &[], check(&bid, &ask)));
        assert!(actions.is_empty());
        assert_eq!(out[0].payload, Payload::Book(BookDelta { bids: vec![(px("99"), Size::ZERO)], asks: vec![] }));
        assert!(o.book(0).1);
        // A gap: prevSeqId 7 is not the last seqId (5).
        let (out, actions) = feed(&mut o, &book("update", 7, 9, &[("98", "1")], &[], 0));
        assert_eq!(out, [Event::new(ID, 9, 9, Payload::BookReset(BookDelta::default()))]);
        assert_eq!(actions, resync_actions("seqId gap"));
        assert!(!o.book(0).1);
        // Updates before the fresh snapshot are dropped; the snapshot restores it.
        assert_eq!(feed(&mut o, &book("update", 9, 11, &[("97", "1")], &[], 0)), (vec![], vec![]));
        let (out, _) = feed(&mut o, &book("snapshot", -1, 20, &[("100", "3")], &ask, 0));
        assert_eq!(
            out[0].payload,
            Payload::BookReset(BookDelta { bids: vec![(px("100"), sz("3"))], asks: vec![(px("101"), sz("1"))] })
        );
        assert!(o.book(0).1);
    }

    #[test]
    fn checksum_zero_is_not_checked_and_a_wrong_one_resyncs() {
        let mut o = okx();
        feed(&mut o, &snapshot());
        // OKX sends 0 since it stopped filling the checksum in: not checked.
        let (out, actions) = feed(&mut o, &book("update", 123456, 123457, &[("8476.96", "1")], &[], 0));
        assert!(actions.is_empty() && matches!(out[0].payload, Payload::Book(_)));
        let (out, actions) = feed(&mut o, &book("update", 123457, 123458, &[("8476.95", "1")], &[], 12345));
        assert_eq!(out, [Event::new(ID, 9, 9, Payload::BookReset(BookDelta::default()))]);
        assert_eq!(actions, resync_actions("checksum mismatch"));
    }

    #[test]
    fn crossing_update_resyncs_instead_of_passing_on() {
        let mut o = okx();
        feed(&mut o, &snapshot());
        let (out, actions) = feed(&mut o, &book("update", 123456, 123457, &[("8477", "1")], &[], 0));
        assert_eq!(out, [Event::new(ID, 9, 9, Payload::BookReset(BookDelta::default()))]);
        assert_eq!(actions, resync_actions("book crossed"));
    }

    #[test]
    fn documented_trades_and_tickers() {
        let mut o = okx();
        let (out, _) = feed(&mut o, DOC_TRADES);
        assert_eq!(
            out,
            [Event::new(
                ID,
                ms(1_630_048_897_897),
                9,
                Payload::Trade(Trade {
                    price: px("42219.9"),
                    size: sz("0.12060306"),
                    side: Side::Buy,
                    trade_id: 130_639_474
                })
            )]
        );
        // The same trade again (a second connection, a rotation) is dropped.
        assert!(feed(&mut o, DOC_TRADES).0.is_empty());
        let (out, _) = feed(&mut o, &DOC_TRADES.replace("130639474", "130639475").replace("\"buy\"", "\"sell\""));
        assert!(matches!(out[0].payload, Payload::Trade(Trade { side: Side::Sell, trade_id: 130_639_475, .. })));
        let (out, _) = feed(&mut o, DOC_TICKERS);
        assert_eq!(
            out,
            [Event::new(
                ID,
                ms(1_597_026_383_085),
                9,
                Payload::Quote(Quote { bid: px("8888.88"), bid_size: sz("5"), ask: px("9999.99"), ask_size: sz("11") })
            )]
        );
        // An empty side (no order there) is zero.
        let (out, _) =
            feed(&mut o, &DOC_TICKERS.replace(r#""bidPx":"8888.88","bidSz":"5""#, r#""bidPx":"","bidSz":"""#));
        assert!(matches!(out[0].payload, Payload::Quote(Quote { bid: Price(0), bid_size: Size(0), .. })));
        // Another instrument's data goes to its own instrument.
        let (out, _) = feed(&mut o, &DOC_TICKERS.replace("BTC-USDT", "ETH-USDT"));
        assert_eq!(out[0].instrument, InstrumentId(1));
    }

    #[test]
    fn acknowledgements_errors_pong_and_the_upgrade_notice() {
        let mut o = okx();
        for quiet in [
            DOC_ACK,
            DOC_ERROR,
            "pong",
            r#"{"event":"unsubscribe","arg":{"channel":"books","instId":"BTC-USDT"},"connId":"a4d3ae55"}"#,
        ] {
            assert_eq!(feed(&mut o, quiet), (vec![], vec![]), "{quiet}");
        }
        assert_eq!(feed(&mut o, DOC_NOTICE), (vec![], vec![Action::Rotate]));
    }

    #[test]
    fn garbage_is_an_error_and_the_state_machine_survives() {
        let mut o = okx();
        feed(&mut o, &snapshot());
        let (mut out, mut actions) = (Vec::new(), Vec::new());
        let cases: [(&str, Option<ParseError>); 12] = [
            ("{not json", None),
            ("", None),
            ("ping", None),
            (
                r#"{"arg":{"channel":"books","instId":"NOPE-USDT"},"action":"update","data":[]}"#,
                Some(ParseError::UnknownSymbol("NOPE-USDT".into())),
            ),
            (
                r#"{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"partial","data":[]}"#,
                Some(ParseError::Field("action")),
            ),
            (
                r#"{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":{}}"#,
                Some(ParseError::Field("data")),
            ),
            (
                r#"{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"asks":[["1e5","1"]],"bids":[],"ts":"1","checksum":0,"prevSeqId":123456,"seqId":123457}]}"#,
                Some(ParseError::Number { field: "price", kind: DecimalErrorKind::InvalidChar }),
            ),
            (
                r#"{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"asks":[["1","-1"]],"bids":[],"ts":"1","checksum":0,"prevSeqId":123456,"seqId":123457}]}"#,
                Some(ParseError::Number { field: "size", kind: DecimalErrorKind::InvalidChar }),
            ),
            (
                r#"{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"asks":[],"bids":[],"ts":"soon","checksum":0,"prevSeqId":123456,"seqId":123457}]}"#,
                Some(ParseError::Timestamp("ts")),
            ),
            (
                r#"{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"asks":[],"bids":[],"ts":"1","checksum":99999999999,"prevSeqId":123456,"seqId":123457}]}"#,
                Some(ParseError::Field("checksum")),
            ),
            (
                r#"{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"tradeId":"x","px":"1","sz":"1","side":"buy","ts":"1"}]}"#,
                Some(ParseError::Field("tradeId")),
            ),
            (
                r#"{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"tradeId":"1","px":"1","sz":"1","side":"up","ts":"1"}]}"#,
                Some(ParseError::Field("side")),
            ),
        ];
        for (bad, expected) in cases {
            let error = o.on_message(bad.as_bytes(), 9, &mut out, &mut actions).unwrap_err();
            if let Some(expected) = expected {
                assert_eq!(error, expected, "{bad}");
            }
        }
        assert!(out.is_empty() && actions.is_empty(), "{out:?} {actions:?}");
        // The book is still in sync: the next update in sequence applies.
        let (out, actions) = feed(&mut o, &book("update", 123456, 123457, &[("8476.96", "1")], &[], 0));
        assert!(actions.is_empty() && matches!(out[0].payload, Payload::Book(_)));
        // An update skipped as garbage leaves a hole the sequence check catches.
        let (_, actions) = feed(&mut o, &book("update", 123458, 123459, &[], &[], 0));
        assert_eq!(actions[0], Action::Resync { symbol: "BTC-USDT".into(), reason: "seqId gap" });
    }

    #[test]
    fn resyncs_past_the_hourly_request_allowance_replace_the_connection() {
        let mut o = okx();
        o.on_connection_start();
        let (mut out, mut actions) = (Vec::new(), Vec::new());
        let mut resubscribed = 0;
        let mut t = 1_000;
        // Each round: a snapshot, then a gap.
        loop {
            t += 1_000_000;
            actions.clear();
            o.on_message(
                book("snapshot", -1, 1, &[("1", "1")], &[("2", "1")], 0).as_bytes(),
                t,
                &mut out,
                &mut actions,
            )
            .unwrap();
            o.on_message(book("update", 5, 6, &[], &[], 0).as_bytes(), t, &mut out, &mut actions).unwrap();
            if actions.iter().any(|a| matches!(a, Action::Reconnect(_))) {
                break;
            }
            resubscribed += 1;
        }
        // 3 requests subscribed the connection; 2 per resync after that.
        assert_eq!(3 + 2 * resubscribed, REQUEST_BUDGET - 1);
        // An hour later the allowance is back.
        o.on_message(
            book("snapshot", -1, 1, &[("1", "1")], &[("2", "1")], 0).as_bytes(),
            t + HOUR,
            &mut out,
            &mut actions,
        )
        .unwrap();
        actions.clear();
        o.on_message(book("update", 5, 6, &[], &[], 0).as_bytes(), t + HOUR, &mut out, &mut actions).unwrap();
        assert_eq!(actions[1..], resync_actions("seqId gap")[1..]);
        // So is a new connection's.
        o.on_connection_start();
        assert_eq!(o.requests.len(), 0);
    }

    #[test]
    fn disconnect_withdraws_published_books_once() {
        let mut o = okx();
        feed(&mut o, &snapshot());
        let mut out = Vec::new();
        o.on_disconnect(5, &mut out);
        assert_eq!(out, [Event::new(ID, 5, 5, Payload::BookReset(BookDelta::default()))]);
        out.clear();
        o.on_disconnect(6, &mut out);
        assert!(out.is_empty());
        assert!(!o.book(0).1);
    }

    fn side_json(levels: &[(i64, i64, usize)]) -> String {
        // Prices with one decimal, sizes with 1-7 trailing zeros (their text matters).
        let items: Vec<String> = levels
            .iter()
            .map(|&(p, s, zeros)| format!(r#"["{p}.5","{s}.{}","0","1"]"#, "0".repeat(zeros.max(1))))
            .collect();
        items.join(",")
    }

    fn parse_side(levels: &[(i64, i64, usize)]) -> Vec<Level> {
        levels
            .iter()
            .map(|&(p, s, z)| Level::parse(&format!("{p}.5"), &format!("{s}.{}", "0".repeat(z.max(1)))).unwrap())
            .collect()
    }

    /// Feeds one message and applies what it emits to the engine's book type.
    fn deliver(o: &mut Okx, l2: &mut crate::book::L2Book, message: &str) -> Result<(), String> {
        let (mut out, mut actions) = (Vec::new(), Vec::new());
        o.on_message(message.as_bytes(), 1, &mut out, &mut actions).map_err(|e| e.to_string())?;
        for event in &out {
            match &event.payload {
                Payload::Book(d) => l2.apply(d),
                Payload::BookReset(d) => {
                    *l2 = crate::book::L2Book::default();
                    l2.apply(d)
                }
                _ => Ok(()),
            }
            .map_err(|e| format!("engine refused {event:?}: {e}"))?;
        }
        Ok(())
    }

    fn snapshot_at(seq: i64) -> String {
        let mut probe = OkxBook::default();
        probe.apply(&parse_side(&[(95, 1, 1)]), &parse_side(&[(105, 1, 1)]), None).unwrap();
        format!(
            r#"{{"arg":{{"channel":"books","instId":"BTC-USDT"}},"action":"snapshot","data":[{{"asks":[{}],"bids":[{}],"ts":"1","checksum":{},"prevSeqId":-1,"seqId":{seq}}}]}}"#,
            side_json(&[(105, 1, 1)]),
            side_json(&[(95, 1, 1)]),
            probe.checksum()
        )
    }

    proptest::proptest! {
        /// Random updates, some with the right checksum, some with a wrong one,
        /// some after a lost message, some crossing: every emitted event applies to
        /// the engine's book, which is never crossed, and equals the venue book
        /// while in sync; an unsynced book is withdrawn.
        #[test]
        fn venue_sync_never_emits_a_bad_book(updates in proptest::collection::vec((
            proptest::collection::vec((90i64..104, 0i64..3, 0usize..7), 0..4),
            proptest::collection::vec((96i64..110, 0i64..3, 0usize..7), 0..4),
            // 0: in order with the right checksum; 1: a wrong checksum; 2: after a lost message.
            proptest::prop_oneof![6 => proptest::strategy::Just(0u8), 1 => proptest::strategy::Just(1u8), 1 => proptest::strategy::Just(2u8)],
        ), 1..40)) {
            let mut o = Okx::new(vec![("BTC-USDT".into(), ID)]);
            let mut l2 = crate::book::L2Book::default();
            let mut venue_seq = 100i64;
            proptest::prop_assert_eq!(deliver(&mut o, &mut l2, &snapshot_at(venue_seq)), Ok(()));
            for (bids, asks, fault) in updates {
                let prev = if fault == 2 { venue_seq + 1 } else { venue_seq };
                venue_seq += 3;
                // The right checksum is what the venue's book hashes to after the update.
                let mut probe = o.book(0).0.clone();
                let checksum = match probe.apply(&parse_side(&bids), &parse_side(&asks), None) {
                    Ok(()) if fault == 1 => probe.checksum().wrapping_add(1),
                    Ok(()) => probe.checksum(),
                    Err(_) => 7,
                };
                let update = format!(
                    r#"{{"arg":{{"channel":"books","instId":"BTC-USDT"}},"action":"update","data":[{{"asks":[{}],"bids":[{}],"ts":"2","checksum":{checksum},"prevSeqId":{prev},"seqId":{venue_seq}}}]}}"#,
                    side_json(&asks),
                    side_json(&bids)
                );
                proptest::prop_assert_eq!(deliver(&mut o, &mut l2, &update), Ok(()));
                if let (Some(b), Some(a)) = (l2.best_bid(), l2.best_ask()) {
                    proptest::prop_assert!(b.0 < a.0);
                }
                let (venue, live) = o.book(0);
                if live {
                    let d = venue.to_delta();
                    proptest::prop_assert_eq!(l2.top(usize::MAX), (d.bids, d.asks));
                } else {
                    proptest::prop_assert_eq!(l2.depth(), (0, 0), "an unsynced book is withdrawn");
                    // The venue answers the resubscribe with a fresh snapshot.
                    venue_seq += 10;
                    proptest::prop_assert_eq!(deliver(&mut o, &mut l2, &snapshot_at(venue_seq)), Ok(()));
                    proptest::prop_assert!(o.book(0).1);
                }
            }
        }
    }
}
