//! Binance spot: trades, best bid/offer and the L2 book over the combined-stream
//! WebSocket, with the depth snapshot over REST.
//!
//! Docs: <https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams>
//! (streams, `SUBSCRIBE`, limits, "How to manage a local order book correctly") and
//! <https://developers.binance.com/docs/binance-spot-api-docs/rest-api/market-data-endpoints#order-book>
//! (`GET /api/v3/depth`).
//!
//! Per symbol we subscribe `<symbol>@trade`, `<symbol>@bookTicker` and
//! `<symbol>@depth@100ms` on `/stream` (each message wrapped as
//! `{"stream":…,"data":…}`), in `SUBSCRIBE` messages the shell paces under Binance's
//! limit of 5 client messages per second per connection.
//!
//! Book sync follows Binance's numbered procedure ([`DepthSync`]): buffer the diffs,
//! fetch `/api/v3/depth?limit=1000` (weight 50), drop buffered diffs with
//! `u <= lastUpdateId`, refetch when the snapshot is older than the first buffered
//! diff (`lastUpdateId + 1 < U`), then apply diffs whose `U` is exactly the previous
//! `u + 1`; any other `U` is a gap and starts the procedure again. Update ids are
//! per symbol, not per connection, so the same rules make a connection switch
//! (24-hour limit, `serverShutdown`) seamless: diffs and trades seen on both
//! connections are dropped by id.
//!
//! Instruments: `binance:BASE-QUOTE` (the quote asset split off by a list of
//! common quote assets, else `binance:SYMBOL`), tick and lot [`VENUE_INCREMENT`]
//! (Binance sends prices and sizes with 8 decimals).
//!
//! [`VENUE_INCREMENT`]: super::VENUE_INCREMENT

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::l2::LocalBook;
use super::wire::{J, JsonScratch, ParseError, millis_to_nanos, non_negative};
use super::{Action, Venue};
use crate::model::{BookDelta, Event, InstrumentId, Nanos, Payload, Price, Quote, Side, Size, Trade};

/// Depth snapshot size asked of `/api/v3/depth` (weight 50 at 501-1000).
pub const DEPTH_LIMIT: u32 = 1000;
/// Streams per `SUBSCRIBE` message.
const STREAMS_PER_SUBSCRIBE: usize = 30;
/// Diffs kept while waiting for a snapshot; older ones are dropped (the snapshot
/// check then asks for a newer snapshot).
const MAX_BUFFERED_DIFFS: usize = 10_000;

/// Quote assets recognised when naming `BTCUSDT` as `BTC-USDT`, longest first.
const QUOTE_ASSETS: &[&str] =
    &["FDUSD", "USDT", "USDC", "TUSD", "BUSD", "EURI", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL", "JPY", "GBP", "DAI"];

/// Our symbol for a Binance symbol: `BTCUSDT` → `binance:BTC-USDT`.
pub fn instrument_symbol(venue_symbol: &str) -> String {
    let upper = venue_symbol.to_ascii_uppercase();
    for quote in QUOTE_ASSETS {
        if let Some(base) = upper.strip_suffix(quote)
            && !base.is_empty()
        {
            return format!("binance:{base}-{quote}");
        }
    }
    format!("binance:{upper}")
}

/// Binance's own name for a symbol given as `BTCUSDT`, `btcusdt` or `BTC-USDT`.
pub fn venue_symbol(given: &str) -> String {
    given.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_uppercase()
}

/// One diff of `<symbol>@depth`.
///
/// ```json
/// {"e":"depthUpdate","E":1672515782136,"s":"BNBBTC","U":157,"u":160,
///  "b":[["0.0024","10"]],"a":[["0.0026","100"]]}
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthDiff {
    /// `U`: first update id in the event.
    pub first: u64,
    /// `u`: final update id in the event.
    pub last: u64,
    /// `E`, in nanoseconds.
    pub ts_event: Nanos,
    pub delta: BookDelta,
}

/// Where a symbol's book stands in Binance's sync procedure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncState {
    /// Buffering diffs; `requested` once a snapshot fetch is under way.
    Buffering { requested: bool },
    /// In sync; `last` is the last applied update id.
    Live { last: u64 },
}

/// What the caller must do after feeding [`DepthSync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncSignal {
    None,
    /// Fetch a REST snapshot.
    FetchSnapshot,
    /// The book was wrong and has been withdrawn; fetch a snapshot.
    Resync(&'static str),
}

/// Binance's local order book procedure for one symbol. Pure.
#[derive(Debug, Clone)]
pub struct DepthSync {
    state: SyncState,
    buffer: VecDeque<DepthDiff>,
    book: LocalBook,
    /// Whether the engine holds a book from us that a withdrawal must clear.
    published: bool,
}

impl Default for DepthSync {
    fn default() -> Self {
        Self {
            state: SyncState::Buffering { requested: false },
            buffer: VecDeque::new(),
            book: LocalBook::default(),
            published: false,
        }
    }
}

impl DepthSync {
    pub fn is_live(&self) -> bool {
        matches!(self.state, SyncState::Live { .. })
    }

    pub fn book(&self) -> &LocalBook {
        &self.book
    }

    /// Takes one diff; appends a `Book` event when it applies.
    pub fn on_diff(&mut self, diff: DepthDiff, id: InstrumentId, ts_recv: Nanos, out: &mut Vec<Event>) -> SyncSignal {
        match self.state {
            SyncState::Live { last } => {
                if diff.last <= last {
                    return SyncSignal::None;
                }
                if diff.first > last + 1 {
                    self.withdraw(id, ts_recv, out);
                    self.buffer.push_back(diff);
                    self.state = SyncState::Buffering { requested: true };
                    return SyncSignal::Resync("update id gap");
                }
                if self.book.apply(&diff.delta).is_err() {
                    self.withdraw(id, ts_recv, out);
                    self.state = SyncState::Buffering { requested: true };
                    return SyncSignal::Resync("diff crosses the book");
                }
                self.state = SyncState::Live { last: diff.last };
                out.push(Event::new(id, diff.ts_event, ts_recv, Payload::Book(diff.delta)));
                SyncSignal::None
            }
            SyncState::Buffering { requested } => {
                if self.buffer.len() >= MAX_BUFFERED_DIFFS {
                    self.buffer.pop_front();
                }
                self.buffer.push_back(diff);
                if requested {
                    SyncSignal::None
                } else {
                    self.state = SyncState::Buffering { requested: true };
                    SyncSignal::FetchSnapshot
                }
            }
        }
    }

    /// Takes a REST snapshot; on success appends one `BookReset` with the snapshot
    /// and every buffered diff after it folded in.
    pub fn on_snapshot(
        &mut self,
        last_update_id: u64,
        levels: &BookDelta,
        id: InstrumentId,
        ts_recv: Nanos,
        out: &mut Vec<Event>,
    ) -> SyncSignal {
        if self.is_live() {
            return SyncSignal::None;
        }
        while self.buffer.front().is_some_and(|d| d.last <= last_update_id) {
            self.buffer.pop_front();
        }
        if self.buffer.front().is_some_and(|d| d.first > last_update_id + 1) {
            // The snapshot is older than the diffs we hold: ask for a newer one.
            return SyncSignal::FetchSnapshot;
        }
        if self.book.reset(levels).is_err() {
            self.book.clear();
            return SyncSignal::FetchSnapshot;
        }
        let mut last = last_update_id;
        let mut ts_event = ts_recv;
        while let Some(diff) = self.buffer.pop_front() {
            if diff.first > last + 1 || self.book.apply(&diff.delta).is_err() {
                self.book.clear();
                self.buffer.clear();
                self.buffer.push_back(diff);
                return SyncSignal::FetchSnapshot;
            }
            last = diff.last;
            ts_event = diff.ts_event;
        }
        self.state = SyncState::Live { last };
        self.published = true;
        out.push(Event::new(id, ts_event, ts_recv, Payload::BookReset(self.book.to_delta())));
        SyncSignal::None
    }

    /// Forgets the book (and tells the engine, if it had one from us).
    pub fn withdraw(&mut self, id: InstrumentId, ts_recv: Nanos, out: &mut Vec<Event>) {
        self.book.clear();
        self.buffer.clear();
        self.state = SyncState::Buffering { requested: false };
        super::withdraw_book(&mut self.published, id, ts_recv, out);
    }
}

struct SymbolState {
    venue: String,
    instrument: InstrumentId,
    depth: DepthSync,
    last_trade_id: Option<u64>,
    last_bbo_id: Option<u64>,
}

/// The Binance spot protocol for a set of symbols.
pub struct Binance {
    json: JsonScratch,
    symbols: Vec<SymbolState>,
    by_symbol: FxHashMap<String, usize>,
    next_request_id: u64,
}

impl Binance {
    /// `symbols`: Binance symbol (`BTCUSDT`) and the instrument it feeds.
    pub fn new(symbols: Vec<(String, InstrumentId)>) -> Self {
        let by_symbol = symbols.iter().enumerate().map(|(i, (s, _))| (s.clone(), i)).collect();
        let symbols = symbols
            .into_iter()
            .map(|(venue, instrument)| SymbolState {
                venue,
                instrument,
                depth: DepthSync::default(),
                last_trade_id: None,
                last_bbo_id: None,
            })
            .collect();
        Self { json: JsonScratch::default(), symbols, by_symbol, next_request_id: 1 }
    }

    /// The sync state of the `index`-th symbol (for tests).
    pub fn depth(&self, index: usize) -> &DepthSync {
        &self.symbols[index].depth
    }

    fn signal(&mut self, index: usize, signal: SyncSignal, actions: &mut Vec<Action>) {
        let symbol = &self.symbols[index];
        let fetch =
            || Action::Fetch { key: index, path: format!("/api/v3/depth?symbol={}&limit={DEPTH_LIMIT}", symbol.venue) };
        match signal {
            SyncSignal::None => {}
            SyncSignal::FetchSnapshot => actions.push(fetch()),
            SyncSignal::Resync(reason) => {
                actions.push(Action::Resync { symbol: symbol.venue.clone(), reason });
                actions.push(fetch());
            }
        }
    }
}

fn levels(side: J<'_, '_>, field: &'static str) -> Result<Vec<(Price, Size)>, ParseError> {
    if !side.is_array() {
        return Err(ParseError::Field(field));
    }
    side.items()
        .map(|level| {
            let mut it = level.items();
            let price = it.next().and_then(|v| v.str()).ok_or(ParseError::Field(field))?;
            let size = it.next().and_then(|v| v.str()).ok_or(ParseError::Field(field))?;
            Ok((Price(non_negative(price.as_bytes(), field)?), Size(non_negative(size.as_bytes(), field)?)))
        })
        .collect()
}

/// What one Binance message carried, before it meets per-symbol state.
enum Parsed {
    Trade(usize, Nanos, Trade),
    Quote(usize, u64, Quote),
    Diff(usize, DepthDiff),
    Shutdown,
    Ignored,
}

fn parse_message(root: J<'_, '_>, by_symbol: &FxHashMap<String, usize>) -> Result<Parsed, ParseError> {
    let data = root.get("data").unwrap_or(root);
    if data.get("e").is_none() && (root.get("result").is_some() || root.get("id").is_some()) {
        if let Some(error) = root.get("error") {
            tracing::warn!(
                code = error.get("code").and_then(|c| c.u64()),
                msg = error.get("msg").and_then(|m| m.str()),
                "binance refused a request"
            );
        }
        return Ok(Parsed::Ignored);
    }
    let lookup = |data: J<'_, '_>| -> Result<usize, ParseError> {
        let symbol = data.req_str("s")?;
        by_symbol.get(symbol).copied().ok_or_else(|| ParseError::UnknownSymbol(symbol.to_owned()))
    };
    match data.get("e").and_then(|e| e.str()) {
        Some("trade") => {
            let index = lookup(data)?;
            let trade = Trade {
                price: Price(non_negative(data.req_str("p")?.as_bytes(), "p")?),
                size: Size(non_negative(data.req_str("q")?.as_bytes(), "q")?),
                // `m`: the buyer is the maker, so the seller was the aggressor.
                side: if data.req("m")?.bool().ok_or(ParseError::Field("m"))? { Side::Sell } else { Side::Buy },
                trade_id: data.req_u64("t")?,
            };
            Ok(Parsed::Trade(index, millis_to_nanos(data.req_u64("T")?), trade))
        }
        Some("depthUpdate") => {
            let index = lookup(data)?;
            let diff = DepthDiff {
                first: data.req_u64("U")?,
                last: data.req_u64("u")?,
                ts_event: millis_to_nanos(data.req_u64("E")?),
                delta: BookDelta { bids: levels(data.req("b")?, "b")?, asks: levels(data.req("a")?, "a")? },
            };
            Ok(Parsed::Diff(index, diff))
        }
        Some("serverShutdown") => Ok(Parsed::Shutdown),
        Some(_) => Ok(Parsed::Ignored),
        // bookTicker carries no event type and, on spot, no time: Binance
        // documents its payload as `u`, `s`, `b`, `B`, `a`, `A` only
        // (<https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams#individual-symbol-book-ticker-streams>;
        // the futures stream's `E` and `T` are not sent on spot), so a quote's
        // venue time is its receipt time.
        None => {
            let index = lookup(data)?;
            let quote = Quote {
                bid: Price(non_negative(data.req_str("b")?.as_bytes(), "b")?),
                bid_size: Size(non_negative(data.req_str("B")?.as_bytes(), "B")?),
                ask: Price(non_negative(data.req_str("a")?.as_bytes(), "a")?),
                ask_size: Size(non_negative(data.req_str("A")?.as_bytes(), "A")?),
            };
            Ok(Parsed::Quote(index, data.req_u64("u")?, quote))
        }
    }
}

/// Parses `GET /api/v3/depth`:
///
/// ```json
/// {"lastUpdateId":1027024,"bids":[["4.00000000","431.00000000"]],"asks":[["4.00000200","12.00000000"]]}
/// ```
pub fn parse_snapshot(json: &mut JsonScratch, body: &[u8]) -> Result<(u64, BookDelta), ParseError> {
    json.parse(body, false, |root| {
        Ok((
            root.req_u64("lastUpdateId")?,
            BookDelta { bids: levels(root.req("bids")?, "bids")?, asks: levels(root.req("asks")?, "asks")? },
        ))
    })?
}

impl Venue for Binance {
    fn venue(&self) -> &'static str {
        "binance"
    }

    /// Binance has no application heartbeat; its server pings every 20 seconds
    /// (Binance spot WebSocket Streams, "WebSocket Limits"), the only frame a quiet
    /// stream guarantees: one and a half ping intervals without a frame is a dead
    /// connection.
    fn stale_limit(&self) -> std::time::Duration {
        std::time::Duration::from_secs(30)
    }

    fn subscriptions(&mut self) -> Vec<String> {
        let streams: Vec<String> = self
            .symbols
            .iter()
            .flat_map(|s| {
                let lower = s.venue.to_ascii_lowercase();
                [format!("{lower}@trade"), format!("{lower}@bookTicker"), format!("{lower}@depth@100ms")]
            })
            .collect();
        streams
            .chunks(STREAMS_PER_SUBSCRIBE)
            .map(|chunk| {
                let id = self.next_request_id;
                self.next_request_id += 1;
                let params: Vec<String> = chunk.iter().map(|s| format!("\"{s}\"")).collect();
                format!(r#"{{"method":"SUBSCRIBE","params":[{}],"id":{id}}}"#, params.join(","))
            })
            .collect()
    }

    fn on_connection_start(&mut self) {}

    fn on_message(
        &mut self,
        text: &[u8],
        ts_recv: Nanos,
        out: &mut Vec<Event>,
        actions: &mut Vec<Action>,
    ) -> Result<(), ParseError> {
        let by_symbol = &self.by_symbol;
        let parsed = self.json.parse(text, false, |root| parse_message(root, by_symbol))??;
        match parsed {
            Parsed::Trade(index, ts_event, trade) => {
                let symbol = &mut self.symbols[index];
                if symbol.last_trade_id.is_some_and(|last| trade.trade_id <= last) {
                    return Ok(());
                }
                symbol.last_trade_id = Some(trade.trade_id);
                out.push(Event::new(symbol.instrument, ts_event, ts_recv, Payload::Trade(trade)));
            }
            Parsed::Quote(index, update_id, quote) => {
                let symbol = &mut self.symbols[index];
                if symbol.last_bbo_id.is_some_and(|last| update_id <= last) {
                    return Ok(());
                }
                symbol.last_bbo_id = Some(update_id);
                out.push(Event::new(symbol.instrument, ts_recv, ts_recv, Payload::Quote(quote)));
            }
            Parsed::Diff(index, diff) => {
                let symbol = &mut self.symbols[index];
                let signal = symbol.depth.on_diff(diff, symbol.instrument, ts_recv, out);
                self.signal(index, signal, actions);
            }
            Parsed::Shutdown => actions.push(Action::Rotate),
            Parsed::Ignored => {}
        }
        Ok(())
    }

    fn on_rest(
        &mut self,
        key: usize,
        body: &[u8],
        ts_recv: Nanos,
        out: &mut Vec<Event>,
        actions: &mut Vec<Action>,
    ) -> Result<(), ParseError> {
        let Some(symbol) = self.symbols.get_mut(key) else { return Ok(()) };
        let signal = match parse_snapshot(&mut self.json, body) {
            Ok((last_update_id, levels)) => {
                symbol.depth.on_snapshot(last_update_id, &levels, symbol.instrument, ts_recv, out)
            }
            Err(error) => {
                self.signal(key, SyncSignal::FetchSnapshot, actions);
                return Err(error);
            }
        };
        self.signal(key, signal, actions);
        Ok(())
    }

    fn on_disconnect(&mut self, ts_recv: Nanos, out: &mut Vec<Event>) {
        for symbol in &mut self.symbols {
            symbol.depth.withdraw(symbol.instrument, ts_recv, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: InstrumentId = InstrumentId(0);

    fn px(text: &str) -> Price {
        Price::parse(text).unwrap()
    }
    fn sz(text: &str) -> Size {
        Size::parse(text).unwrap()
    }

    fn binance() -> Binance {
        Binance::new(vec![("BNBBTC".into(), ID), ("BTCUSDT".into(), InstrumentId(1))])
    }

    fn feed(b: &mut Binance, text: &str) -> (Vec<Event>, Vec<Action>) {
        let (mut out, mut actions) = (Vec::new(), Vec::new());
        b.on_message(text.as_bytes(), 42, &mut out, &mut actions).unwrap();
        (out, actions)
    }

    fn diff(first: u64, last: u64, bids: &[(&str, &str)], asks: &[(&str, &str)]) -> String {
        let side =
            |l: &[(&str, &str)]| l.iter().map(|(p, q)| format!(r#"["{p}","{q}"]"#)).collect::<Vec<_>>().join(",");
        format!(
            r#"{{"stream":"bnbbtc@depth@100ms","data":{{"e":"depthUpdate","E":1672515782136,"s":"BNBBTC","U":{first},"u":{last},"b":[{}],"a":[{}]}}}}"#,
            side(bids),
            side(asks)
        )
    }

    #[test]
    fn names() {
        assert_eq!(instrument_symbol("BTCUSDT"), "binance:BTC-USDT");
        assert_eq!(instrument_symbol("bnbbtc"), "binance:BNB-BTC");
        assert_eq!(instrument_symbol("XYZ"), "binance:XYZ");
        assert_eq!(venue_symbol("btc-usdt"), "BTCUSDT");
    }

    #[test]
    fn trade_and_book_ticker_from_the_documented_payloads() {
        let mut b = binance();
        let (out, _) = feed(
            &mut b,
            r#"{"stream":"bnbbtc@trade","data":{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}}"#,
        );
        assert_eq!(
            out,
            [Event::new(
                ID,
                1_672_515_782_136_000_000,
                42,
                Payload::Trade(Trade { price: px("0.001"), size: sz("100"), side: Side::Sell, trade_id: 12345 })
            )]
        );
        // The same trade again (seen on a second connection) is dropped.
        assert!(
            feed(
                &mut b,
                r#"{"e":"trade","E":1,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":1,"m":false,"M":true}"#
            )
            .0
            .is_empty()
        );
        let (out, _) = feed(
            &mut b,
            r#"{"stream":"btcusdt@bookTicker","data":{"u":400900217,"s":"BTCUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}}"#,
        );
        assert_eq!(
            out,
            [Event::new(
                InstrumentId(1),
                42,
                42,
                Payload::Quote(Quote {
                    bid: px("25.3519"),
                    bid_size: sz("31.21"),
                    ask: px("25.3652"),
                    ask_size: sz("40.66")
                })
            )]
        );
        assert!(feed(&mut b, r#"{"result":null,"id":1}"#).0.is_empty());
        assert_eq!(
            feed(&mut b, r#"{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}"#).1,
            [Action::Rotate]
        );
    }

    #[test]
    fn garbage_and_unknown_symbols_are_errors() {
        let mut b = binance();
        let (mut out, mut actions) = (Vec::new(), Vec::new());
        for bad in [
            &b"{not json"[..],
            br#"{"e":"trade","s":"NOPE","t":1}"#,
            br#"{"e":"trade","s":"BNBBTC","t":1,"p":"1e5","q":"1","T":1,"m":true}"#,
            br#"{"e":"trade","s":"BNBBTC","t":1,"p":"-1","q":"1","T":1,"m":true}"#,
        ] {
            assert!(b.on_message(bad, 0, &mut out, &mut actions).is_err());
        }
        assert!(out.is_empty() && actions.is_empty());
    }

    #[test]
    fn book_sync_follows_the_documented_procedure() {
        let mut b = binance();
        // Diffs before any snapshot are buffered; the first asks for a snapshot.
        let (out, actions) = feed(&mut b, &diff(157, 160, &[("0.0024", "10")], &[("0.0026", "100")]));
        assert!(out.is_empty());
        assert_eq!(actions, [Action::Fetch { key: 0, path: "/api/v3/depth?symbol=BNBBTC&limit=1000".into() }]);
        let (_, actions) = feed(&mut b, &diff(161, 161, &[("0.0023", "5")], &[]));
        assert!(actions.is_empty(), "one fetch at a time");
        // A snapshot older than the first buffered diff is refused: fetch again.
        let (mut out, mut actions) = (Vec::new(), Vec::new());
        b.on_rest(
            0,
            br#"{"lastUpdateId":150,"bids":[["0.0020","1"]],"asks":[["0.0030","1"]]}"#,
            50,
            &mut out,
            &mut actions,
        )
        .unwrap();
        assert!(out.is_empty());
        assert!(matches!(actions[..], [Action::Fetch { key: 0, .. }]));
        // A good snapshot: 157..160 is dropped (u <= 160), 161 applies on top.
        let (mut out, mut actions) = (Vec::new(), Vec::new());
        b.on_rest(
            0,
            br#"{"lastUpdateId":160,"bids":[["0.0024","10"]],"asks":[["0.0026","100"]]}"#,
            51,
            &mut out,
            &mut actions,
        )
        .unwrap();
        assert!(actions.is_empty());
        let expected = BookDelta {
            bids: vec![(px("0.0024"), sz("10")), (px("0.0023"), sz("5"))],
            asks: vec![(px("0.0026"), sz("100"))],
        };
        assert_eq!(out, [Event::new(ID, 1_672_515_782_136_000_000, 51, Payload::BookReset(expected))]);
        // Live: a stale diff is ignored, the next one applies.
        assert!(feed(&mut b, &diff(158, 161, &[("0.0001", "1")], &[])).0.is_empty());
        let (out, _) = feed(&mut b, &diff(162, 163, &[("0.0024", "0")], &[]));
        assert_eq!(out[0].payload, Payload::Book(BookDelta { bids: vec![(px("0.0024"), Size::ZERO)], asks: vec![] }));
        // A gap withdraws the book and asks for a new snapshot.
        let (out, actions) = feed(&mut b, &diff(170, 171, &[], &[]));
        assert_eq!(out[0].payload, Payload::BookReset(BookDelta::default()));
        assert_eq!(actions[0], Action::Resync { symbol: "BNBBTC".into(), reason: "update id gap" });
        assert!(matches!(actions[1], Action::Fetch { key: 0, .. }));
        assert!(!b.depth(0).is_live());
    }

    #[test]
    fn crossing_diff_resyncs_instead_of_passing_on() {
        let mut b = binance();
        feed(&mut b, &diff(10, 10, &[], &[]));
        let (mut out, mut actions) = (Vec::new(), Vec::new());
        b.on_rest(0, br#"{"lastUpdateId":10,"bids":[["1.0","1"]],"asks":[["2.0","1"]]}"#, 1, &mut out, &mut actions)
            .unwrap();
        let (out, actions) = feed(&mut b, &diff(11, 11, &[("3.0", "1")], &[]));
        assert_eq!(out, [Event::new(ID, 42, 42, Payload::BookReset(BookDelta::default()))]);
        assert!(matches!(actions[0], Action::Resync { reason: "diff crosses the book", .. }));
    }

    #[test]
    fn subscriptions_are_chunked() {
        let mut b = binance();
        let subs = b.subscriptions();
        assert_eq!(
            subs,
            [
                r#"{"method":"SUBSCRIBE","params":["bnbbtc@trade","bnbbtc@bookTicker","bnbbtc@depth@100ms","btcusdt@trade","btcusdt@bookTicker","btcusdt@depth@100ms"],"id":1}"#
            ]
        );
    }

    /// Applies what the sync emits to the engine's own book type.
    fn apply_to(l2: &mut crate::book::L2Book, out: &[Event]) -> Result<(), String> {
        for event in out {
            match &event.payload {
                Payload::Book(delta) => l2.apply(delta).map_err(|e| e.to_string())?,
                Payload::BookReset(levels) => {
                    let mut fresh = crate::book::L2Book::default();
                    fresh.apply(levels).map_err(|e| e.to_string())?;
                    *l2 = fresh;
                }
                _ => {}
            }
        }
        Ok(())
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A diff `skip` ids after the last one (0: contiguous), spanning `span` ids.
        Diff { skip: u64, span: u64, bids: Vec<(i64, i64)>, asks: Vec<(i64, i64)> },
        /// A diff the venue already sent (ids at or below the last).
        Stale,
        /// A REST snapshot at the venue's current id.
        Snapshot { bids: Vec<(i64, i64)>, asks: Vec<(i64, i64)> },
    }

    fn levels_strategy() -> impl proptest::strategy::Strategy<Value = Vec<(i64, i64)>> {
        proptest::collection::vec((90i64..110, 0i64..4), 0..4)
    }

    fn op_strategy() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (prop_oneof![4 => Just(0u64), 1 => 1u64..3], 1u64..3, levels_strategy(), levels_strategy())
                .prop_map(|(skip, span, bids, asks)| Op::Diff { skip, span, bids, asks }),
            1 => Just(Op::Stale),
            2 => (levels_strategy(), levels_strategy()).prop_map(|(bids, asks)| Op::Snapshot { bids, asks }),
        ]
    }

    fn delta(bids: &[(i64, i64)], asks: &[(i64, i64)]) -> BookDelta {
        let side =
            |l: &[(i64, i64)]| l.iter().map(|&(p, s)| (Price::from_units(p), Size(s * crate::model::SCALE))).collect();
        BookDelta { bids: side(bids), asks: side(asks) }
    }

    proptest::proptest! {
        /// Whatever the venue sends (gaps, repeats, crossing diffs, crossed
        /// snapshots), every event the sync emits applies to the engine's book, that
        /// book is never crossed or negative, and while in sync it equals the venue
        /// book the sync keeps.
        #[test]
        fn venue_sync_never_emits_a_bad_book(ops in proptest::collection::vec(op_strategy(), 1..80)) {
            let mut sync = DepthSync::default();
            let mut l2 = crate::book::L2Book::default();
            let mut venue_id = 0u64;
            for op in ops {
                let mut out = Vec::new();
                match op {
                    Op::Diff { skip, span, bids, asks } => {
                        let first = venue_id + 1 + skip;
                        venue_id = first + span - 1;
                        let diff = DepthDiff { first, last: venue_id, ts_event: 0, delta: delta(&bids, &asks) };
                        sync.on_diff(diff, ID, 0, &mut out);
                    }
                    Op::Stale => {
                        let diff = DepthDiff { first: venue_id.saturating_sub(1), last: venue_id, ts_event: 0, delta: delta(&[(100, 1)], &[]) };
                        sync.on_diff(diff, ID, 0, &mut out);
                    }
                    Op::Snapshot { bids, asks } => {
                        sync.on_snapshot(venue_id, &delta(&bids, &asks), ID, 0, &mut out);
                    }
                }
                proptest::prop_assert!(apply_to(&mut l2, &out).is_ok(), "engine refused {:?}", out);
                if let (Some(b), Some(a)) = (l2.best_bid(), l2.best_ask()) {
                    proptest::prop_assert!(b.0 < a.0);
                }
                let (bids, asks) = l2.top(usize::MAX);
                proptest::prop_assert!(bids.iter().chain(&asks).all(|(_, s)| s.0 > 0));
                if sync.is_live() {
                    let venue = sync.book().to_delta();
                    proptest::prop_assert_eq!((bids, asks), (venue.bids, venue.asks));
                } else {
                    proptest::prop_assert_eq!(l2.depth(), (0, 0), "an unsynced book is withdrawn");
                }
            }
        }
    }
}
