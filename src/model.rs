//! The one market-data model every stage speaks.
//!
//! Prices and sizes are fixed-point integers in nano-units (1e-9), never floats:
//! `Price(64_123_500_000_000)` is 64123.5. Each instrument states how many decimals
//! its prices and sizes are shown with, so JSON carries exact decimal strings such as
//! `"64123.50"`. Timestamps are `u64` nanoseconds since the Unix epoch.

use std::fmt;
use std::sync::Arc;

/// Nano-units per whole unit: the scale of every [`Price`] and [`Size`].
pub const SCALE: i64 = 1_000_000_000;
/// Digits after the decimal point that the fixed-point scale can hold.
pub const MAX_DECIMALS: u8 = 9;

/// Nanoseconds since the Unix epoch.
pub type Nanos = u64;

/// Current wall-clock time in nanoseconds since the Unix epoch.
pub fn now_nanos() -> Nanos {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Parses a point in time: integer nanoseconds since the epoch, or RFC 3339
/// (`2025-06-01T12:00:00Z`, fractions allowed).
pub fn parse_time(text: &str) -> Result<Nanos, String> {
    let text = text.trim();
    if let Ok(ns) = text.parse::<u64>() {
        return Ok(ns);
    }
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{text:?} is neither nanoseconds since the epoch nor an RFC 3339 time ({e})"))?;
    let since = time.duration_since(std::time::UNIX_EPOCH).map_err(|_| format!("{text:?} is before 1970"))?;
    u64::try_from(since.as_nanos()).map_err(|_| format!("{text:?} is too far in the future"))
}

/// Why a decimal string could not become a fixed-point value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("empty number")]
    Empty,
    #[error("invalid character in number {0:?}")]
    InvalidChar(String),
    #[error("more than {MAX_DECIMALS} decimals in {0:?}")]
    TooPrecise(String),
    #[error("number {0:?} is out of range")]
    Overflow(String),
}

/// Parses an exact decimal (`"-12.3400"`, `"5"`, `".5"`) into nano-units.
///
/// Rejects exponents, more than nine decimals (no silent rounding) and overflow.
pub fn parse_decimal(text: &str) -> Result<i64, DecimalError> {
    parse_decimal_bytes(text.as_bytes()).map_err(|kind| kind.with_text(text))
}

/// The byte-slice core of [`parse_decimal`], for parsers that hold raw feed bytes.
pub fn parse_decimal_bytes(bytes: &[u8]) -> Result<i64, DecimalErrorKind> {
    let (negative, digits) = match bytes.first() {
        None => return Err(DecimalErrorKind::Empty),
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        Some(_) => (false, bytes),
    };
    if digits.is_empty() {
        return Err(DecimalErrorKind::Empty);
    }
    let mut whole: i64 = 0;
    let mut frac: i64 = 0;
    let mut frac_digits: u8 = 0;
    let mut seen_point = false;
    let mut seen_digit = false;
    for &b in digits {
        match b {
            b'0'..=b'9' => {
                seen_digit = true;
                let d = i64::from(b - b'0');
                if seen_point {
                    if frac_digits == MAX_DECIMALS {
                        // Trailing zeros beyond nine decimals lose nothing; anything else would.
                        if d != 0 {
                            return Err(DecimalErrorKind::TooPrecise);
                        }
                        continue;
                    }
                    frac = frac * 10 + d;
                    frac_digits += 1;
                } else {
                    whole = whole.checked_mul(10).and_then(|w| w.checked_add(d)).ok_or(DecimalErrorKind::Overflow)?;
                }
            }
            b'.' if !seen_point => seen_point = true,
            _ => return Err(DecimalErrorKind::InvalidChar),
        }
    }
    if !seen_digit {
        return Err(DecimalErrorKind::Empty);
    }
    let frac_nanos = frac * 10_i64.pow(u32::from(MAX_DECIMALS - frac_digits));
    let value = whole.checked_mul(SCALE).and_then(|w| w.checked_add(frac_nanos)).ok_or(DecimalErrorKind::Overflow)?;
    Ok(if negative { -value } else { value })
}

/// [`DecimalError`] without the offending text, for allocation-free parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalErrorKind {
    Empty,
    InvalidChar,
    TooPrecise,
    Overflow,
}

impl DecimalErrorKind {
    pub fn with_text(self, text: &str) -> DecimalError {
        let text = text.to_owned();
        match self {
            Self::Empty => DecimalError::Empty,
            Self::InvalidChar => DecimalError::InvalidChar(text),
            Self::TooPrecise => DecimalError::TooPrecise(text),
            Self::Overflow => DecimalError::Overflow(text),
        }
    }
}

/// Appends `nanos` as a decimal with exactly `decimals` digits after the point
/// (truncating finer digits, which an instrument's own values never have).
pub fn write_decimal(out: &mut Vec<u8>, nanos: i64, decimals: u8) {
    let decimals = decimals.min(MAX_DECIMALS);
    if nanos < 0 {
        out.push(b'-');
    }
    const POW10: [u64; 10] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000];
    let abs = nanos.unsigned_abs();
    let whole = abs / SCALE as u64;
    let frac = abs % SCALE as u64;
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(whole).as_bytes());
    if decimals > 0 {
        out.push(b'.');
        // Adding 10^decimals yields a fixed-width number whose leading 1 we skip:
        // the zero padding comes for free.
        let shown = frac / POW10[usize::from(MAX_DECIMALS - decimals)] + POW10[usize::from(decimals)];
        out.extend_from_slice(&buf.format(shown).as_bytes()[1..]);
    }
}

/// [`write_decimal`] for a wide amount (a sum of sizes, say).
pub fn write_decimal_wide(out: &mut Vec<u8>, nanos: i128, decimals: u8) {
    if let Ok(narrow) = i64::try_from(nanos) {
        return write_decimal(out, narrow, decimals);
    }
    let decimals = decimals.min(MAX_DECIMALS);
    if nanos < 0 {
        out.push(b'-');
    }
    let abs = nanos.unsigned_abs();
    let (whole, frac) = (abs / SCALE as u128, (abs % SCALE as u128) as u64);
    out.extend_from_slice(itoa::Buffer::new().format(whole).as_bytes());
    if decimals > 0 {
        out.push(b'.');
        let digits = format!("{frac:09}");
        out.extend_from_slice(&digits.as_bytes()[..usize::from(decimals)]);
    }
}

/// Formats `nanos` as a decimal string with `decimals` digits after the point.
pub fn format_decimal(nanos: i64, decimals: u8) -> String {
    let mut out = Vec::with_capacity(24);
    write_decimal(&mut out, nanos, decimals);
    String::from_utf8(out).unwrap_or_default()
}

/// Number of decimals needed to show `nanos` exactly (trailing zeros dropped).
pub fn decimals_of(nanos: i64) -> u8 {
    let mut frac = nanos.unsigned_abs() % SCALE as u64;
    if frac == 0 {
        return 0;
    }
    let mut decimals = MAX_DECIMALS;
    while frac.is_multiple_of(10) {
        frac /= 10;
        decimals -= 1;
    }
    decimals
}

/// A price in nano-units of the quote currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Price(pub i64);

/// A quantity in nano-units of the base asset (or shares).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub i64);

impl Price {
    pub fn parse(text: &str) -> Result<Self, DecimalError> {
        parse_decimal(text).map(Self)
    }
    pub fn from_units(units: i64) -> Self {
        Self(units * SCALE)
    }
}

impl Size {
    pub const ZERO: Size = Size(0);
    pub fn parse(text: &str) -> Result<Self, DecimalError> {
        parse_decimal(text).map(Self)
    }
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_decimal(self.0, decimals_of(self.0)))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_decimal(self.0, decimals_of(self.0)))
    }
}

/// Dense index of an instrument in the [`Instruments`] table; the key of every
/// per-instrument array on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstrumentId(pub u32);

impl InstrumentId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What kind of market an instrument trades in; decides simulator behaviour and
/// lets clients group symbols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AssetKind {
    Crypto,
    Equity,
}

/// A tradable instrument as Tickwire names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrument {
    pub id: InstrumentId,
    /// Client-facing symbol, venue-qualified where ambiguous (`binance:BTC-USDT`).
    pub symbol: Arc<str>,
    /// Source of the data (`sim`, `binance`, …).
    pub venue: Arc<str>,
    pub kind: AssetKind,
    /// Smallest price increment.
    pub tick_size: Price,
    /// Smallest size increment.
    pub lot_size: Size,
    /// Decimals prices are shown with (derived from the tick size).
    pub price_decimals: u8,
    /// Decimals sizes are shown with (derived from the lot size).
    pub size_decimals: u8,
}

impl Instrument {
    /// Whether a symbol pattern ([`glob_match`]) names this instrument: by its
    /// symbol, or, for an unqualified one, as `venue:symbol` (`sim:*`).
    pub fn matches(&self, pattern: &str) -> bool {
        glob_match(pattern, &self.symbol)
            || (!self.symbol.contains(':') && glob_match(pattern, &format!("{}:{}", self.venue, self.symbol)))
    }
}

/// Why an instrument definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstrumentError {
    #[error("symbol {0:?} must be 1-64 characters of A-Z a-z 0-9 : . _ - /")]
    BadSymbol(String),
    #[error("duplicate symbol {0:?}")]
    Duplicate(String),
    #[error("tick size and lot size of {0:?} must be positive")]
    BadIncrement(String),
}

/// Whether `symbol` is acceptable as an instrument name. The allowed characters
/// need no escaping in JSON, which lets the encoder copy symbols verbatim.
pub fn is_valid_symbol(symbol: &str) -> bool {
    !symbol.is_empty()
        && symbol.len() <= 64
        && symbol.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-' | b'/'))
}

/// The fixed table of instruments, indexed by [`InstrumentId`].
#[derive(Debug, Default)]
pub struct Instruments {
    list: Vec<Instrument>,
    by_symbol: rustc_hash::FxHashMap<Arc<str>, InstrumentId>,
    /// Other spellings, by [`alias_key`]: the symbol without its venue
    /// (`BTC-USDT` for `binance:BTC-USDT`), the venue's own (`BTCUSDT`,
    /// `XBT/USD`), any case and punctuation. One key may name several.
    aliases: rustc_hash::FxHashMap<Box<str>, Vec<InstrumentId>>,
}

/// What a name a client gave stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The instrument's own symbol.
    Symbol(InstrumentId),
    /// Another spelling of exactly one instrument.
    Alias(InstrumentId),
    /// Another spelling of several: the client must name one.
    Ambiguous(Vec<InstrumentId>),
    Unknown,
}

/// The key aliases are filed under: upper case, letters and digits only, so
/// that `btc/usdt`, `BTC-USDT` and `BTCUSDT` meet.
fn alias_key(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_uppercase()).collect()
}

/// Whether `text` matches `pattern`, where `*` stands for any run of
/// characters (none included) and everything else for itself, ignoring case.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it is tried against.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi].eq_ignore_ascii_case(&t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((star_p, star_t)) = star {
            pi = star_p + 1;
            ti = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Whether a requested name is a pattern (`*`, `binance:*`, `*-USD`) rather
/// than a symbol: no symbol contains `*`.
pub fn is_pattern(name: &str) -> bool {
    name.contains('*')
}

/// The parts of an instrument a feed declares; the table assigns the id.
#[derive(Debug, Clone)]
pub struct InstrumentSpec {
    pub symbol: String,
    pub venue: String,
    pub kind: AssetKind,
    pub tick_size: Price,
    pub lot_size: Size,
}

impl Instruments {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, spec: InstrumentSpec) -> Result<InstrumentId, InstrumentError> {
        if !is_valid_symbol(&spec.symbol) {
            return Err(InstrumentError::BadSymbol(spec.symbol));
        }
        if self.by_symbol.contains_key(spec.symbol.as_str()) {
            return Err(InstrumentError::Duplicate(spec.symbol));
        }
        if spec.tick_size.0 <= 0 || spec.lot_size.0 <= 0 {
            return Err(InstrumentError::BadIncrement(spec.symbol));
        }
        let id = InstrumentId(self.list.len() as u32);
        let symbol: Arc<str> = spec.symbol.into();
        self.list.push(Instrument {
            id,
            symbol: symbol.clone(),
            venue: spec.venue.into(),
            kind: spec.kind,
            tick_size: spec.tick_size,
            lot_size: spec.lot_size,
            price_decimals: decimals_of(spec.tick_size.0),
            size_decimals: decimals_of(spec.lot_size.0),
        });
        self.by_symbol.insert(symbol.clone(), id);
        self.add_alias(&symbol, id);
        if let Some((_, bare)) = symbol.split_once(':') {
            self.add_alias(bare, id);
        }
        Ok(id)
    }

    /// Files another spelling of instrument `id` (the venue's own name, say).
    pub fn add_alias(&mut self, alias: &str, id: InstrumentId) {
        let key = alias_key(alias);
        if key.is_empty() {
            return;
        }
        let ids = self.aliases.entry(key.into_boxed_str()).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }

    /// What `name` stands for: a symbol (exact), else an alias.
    pub fn resolve(&self, name: &str) -> Lookup {
        if let Some(id) = self.lookup(name) {
            return Lookup::Symbol(id);
        }
        match self.aliases.get(alias_key(name).as_str()).map(Vec::as_slice) {
            None | Some([]) => Lookup::Unknown,
            Some([id]) => Lookup::Alias(*id),
            Some(ids) => Lookup::Ambiguous(ids.to_vec()),
        }
    }

    /// The instruments whose symbol matches `pattern` (see [`glob_match`]);
    /// an unqualified symbol also matches as `venue:symbol`, so `sim:*`
    /// names the simulator's instruments.
    pub fn matching(&self, pattern: &str) -> Vec<InstrumentId> {
        self.list.iter().filter(|i| i.matches(pattern)).map(|i| i.id).collect()
    }

    pub fn get(&self, id: InstrumentId) -> &Instrument {
        &self.list[id.index()]
    }

    /// The symbols that a spelling `ids` of `name` may stand for, said for a
    /// client that must name one.
    pub fn ambiguity(&self, name: &str, ids: &[InstrumentId]) -> String {
        let choices: Vec<&str> = ids.iter().map(|&id| &*self.get(id).symbol).collect();
        format!("{name} may be any of {}: name one", choices.join(", "))
    }

    pub fn lookup(&self, symbol: &str) -> Option<InstrumentId> {
        self.by_symbol.get(symbol).copied()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Instrument> {
        self.list.iter()
    }
}

/// Aggressor side of a trade, or side of a book level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

/// Best bid and offer with their sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub bid: Price,
    pub bid_size: Size,
    pub ask: Price,
    pub ask_size: Size,
}

/// One execution on the venue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trade {
    pub price: Price,
    pub size: Size,
    /// The aggressor's side.
    pub side: Side,
    /// The venue's trade id.
    pub trade_id: u64,
}

/// Changed price levels of an L2 book; a level with size zero is removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BookDelta {
    pub bids: Vec<(Price, Size)>,
    pub asks: Vec<(Price, Size)>,
}

/// The width of a candle: the `candles.<interval>` channels and `GET /v1/candles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CandleInterval {
    S1 = 0,
    M1 = 1,
    M5 = 2,
    H1 = 3,
    D1 = 4,
}

impl CandleInterval {
    pub const ALL: [CandleInterval; 5] =
        [CandleInterval::S1, CandleInterval::M1, CandleInterval::M5, CandleInterval::H1, CandleInterval::D1];
    pub const COUNT: usize = 5;

    pub fn as_str(self) -> &'static str {
        match self {
            CandleInterval::S1 => "1s",
            CandleInterval::M1 => "1m",
            CandleInterval::M5 => "5m",
            CandleInterval::H1 => "1h",
            CandleInterval::D1 => "1d",
        }
    }

    pub fn parse(name: &str) -> Option<CandleInterval> {
        CandleInterval::ALL.into_iter().find(|i| i.as_str() == name)
    }

    /// Width in nanoseconds; buckets are aligned to the Unix epoch.
    pub fn nanos(self) -> Nanos {
        const S: Nanos = 1_000_000_000;
        match self {
            CandleInterval::S1 => S,
            CandleInterval::M1 => 60 * S,
            CandleInterval::M5 => 300 * S,
            CandleInterval::H1 => 3_600 * S,
            CandleInterval::D1 => 86_400 * S,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Start of the bucket holding `ts`.
    pub fn bucket(self, ts: Nanos) -> Nanos {
        ts - ts % self.nanos()
    }
}

/// OHLCV of the trades of one instrument whose `ts_event` falls in
/// `[start, start + interval)`, as the live `candles.<interval>` channels carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candle {
    pub interval: CandleInterval,
    pub start: Nanos,
    pub open: Price,
    pub high: Price,
    pub low: Price,
    pub close: Price,
    /// Sum of sizes in nano-units; wide, because a busy day overflows i64.
    pub volume: i128,
    pub trades: u64,
    /// The bucket is over: this is the candle's final value.
    pub closed: bool,
}

impl Candle {
    /// A candle opened by one trade.
    pub fn open(interval: CandleInterval, ts_event: Nanos, price: Price, size: Size) -> Self {
        Candle {
            interval,
            start: interval.bucket(ts_event),
            open: price,
            high: price,
            low: price,
            close: price,
            volume: i128::from(size.0),
            trades: 1,
            closed: false,
        }
    }

    /// Folds in one more trade of the same bucket.
    pub fn add(&mut self, price: Price, size: Size) {
        self.high = self.high.max(price);
        self.low = self.low.min(price);
        self.close = price;
        self.volume += i128::from(size.0);
        self.trades += 1;
    }

    /// End of the bucket (exclusive).
    pub fn end(&self) -> Nanos {
        self.start + self.interval.nanos()
    }
}

/// The streams a client can subscribe to for an instrument. Quotes, trades and
/// book come from the feeds and are stored; candles are derived from trades by
/// the engine and live only in the stream (and the recent-history ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Quotes = 0,
    Trades = 1,
    Book = 2,
    Candles1s = 3,
    Candles1m = 4,
    Candles5m = 5,
    Candles1h = 6,
    Candles1d = 7,
}

impl Channel {
    pub const ALL: [Channel; 8] = [
        Channel::Quotes,
        Channel::Trades,
        Channel::Book,
        Channel::Candles1s,
        Channel::Candles1m,
        Channel::Candles5m,
        Channel::Candles1h,
        Channel::Candles1d,
    ];
    pub const COUNT: usize = 8;
    /// The channels feeds produce and the store keeps (a table each).
    pub const STORED: [Channel; 3] = [Channel::Quotes, Channel::Trades, Channel::Book];
    pub const STORED_COUNT: usize = 3;

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Quotes => "quotes",
            Channel::Trades => "trades",
            Channel::Book => "book",
            Channel::Candles1s => "candles.1s",
            Channel::Candles1m => "candles.1m",
            Channel::Candles5m => "candles.5m",
            Channel::Candles1h => "candles.1h",
            Channel::Candles1d => "candles.1d",
        }
    }

    pub fn parse(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == name)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The candle channel of `interval`.
    pub fn candles(interval: CandleInterval) -> Channel {
        Channel::ALL[Channel::Candles1s.index() + interval.index()]
    }

    /// The interval of a candle channel.
    pub fn candle_interval(self) -> Option<CandleInterval> {
        self.index().checked_sub(Channel::Candles1s.index()).and_then(|i| CandleInterval::ALL.get(i).copied())
    }

    /// Whether the store keeps this channel (see [`Channel::STORED`]).
    pub fn is_stored(self) -> bool {
        self.index() < Channel::STORED_COUNT
    }

    /// Whether an update replaces the previous one entirely (quotes, candles), so
    /// that a lagging subscriber may skip to the latest.
    pub fn is_latest_value(self) -> bool {
        self == Channel::Quotes || self.candle_interval().is_some()
    }

    /// The channel names a client may use, for error messages.
    pub const NAMES: &'static str = "quotes, trades, book, candles.1s, candles.1m, candles.5m, candles.1h, candles.1d";
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Quote(Quote),
    Trade(Trade),
    /// Changed levels of the L2 book.
    Book(BookDelta),
    /// The whole L2 book, replacing whatever was there: the first book of a feed,
    /// or a resynchronisation after a gap or checksum failure. Subscribers get a
    /// `book_invalidated` message and a fresh snapshot.
    BookReset(BookDelta),
    /// The current (or, once `closed`, final) candle of one interval; made by the
    /// engine from trades, never by a feed. Boxed: it is rare and wide, and would
    /// otherwise grow every event (96 to 128 bytes).
    Candle(Box<Candle>),
}

impl Payload {
    pub fn channel(&self) -> Channel {
        match self {
            Payload::Quote(_) => Channel::Quotes,
            Payload::Trade(_) => Channel::Trades,
            Payload::Book(_) | Payload::BookReset(_) => Channel::Book,
            Payload::Candle(c) => Channel::candles(c.interval),
        }
    }
}

/// One normalised market event with its three clocks.
///
/// Feeds fill `ts_event` and `ts_recv` and leave `seq` and `ts_send` at zero; the
/// book stage, which owns each instrument, assigns `seq` (per instrument and
/// channel, starting at 1) and `ts_send` when it hands the event to the fan-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub instrument: InstrumentId,
    pub seq: u64,
    /// The venue's timestamp.
    pub ts_event: Nanos,
    /// When ingest received the message.
    pub ts_recv: Nanos,
    /// When the gateway published the event to the fan-out.
    pub ts_send: Nanos,
    pub payload: Payload,
}

impl Event {
    pub fn new(instrument: InstrumentId, ts_event: Nanos, ts_recv: Nanos, payload: Payload) -> Self {
        Self { instrument, seq: 0, ts_event, ts_recv, ts_send: 0, payload }
    }

    pub fn channel(&self) -> Channel {
        self.payload.channel()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(parse_decimal("64123.50").unwrap(), 64_123_500_000_000);
        assert_eq!(parse_decimal("0.000000001").unwrap(), 1);
        assert_eq!(parse_decimal("-1.5").unwrap(), -1_500_000_000);
        assert_eq!(parse_decimal(".5").unwrap(), 500_000_000);
        assert_eq!(parse_decimal("7").unwrap(), 7 * SCALE);
        assert_eq!(parse_decimal("1.0000000000").unwrap(), SCALE);
    }

    #[test]
    fn rejects_what_would_lose_precision_or_is_not_a_number() {
        assert!(matches!(parse_decimal(""), Err(DecimalError::Empty)));
        assert!(matches!(parse_decimal("-"), Err(DecimalError::Empty)));
        assert!(matches!(parse_decimal("."), Err(DecimalError::Empty)));
        assert!(matches!(parse_decimal("1e5"), Err(DecimalError::InvalidChar(_))));
        assert!(matches!(parse_decimal("1.2.3"), Err(DecimalError::InvalidChar(_))));
        assert!(matches!(parse_decimal("0.0000000001"), Err(DecimalError::TooPrecise(_))));
        assert!(matches!(parse_decimal("99999999999"), Err(DecimalError::Overflow(_))));
    }

    #[test]
    fn formats_with_instrument_decimals() {
        assert_eq!(format_decimal(64_123_500_000_000, 2), "64123.50");
        assert_eq!(format_decimal(421_000_000, 4), "0.4210");
        assert_eq!(format_decimal(-1_500_000_000, 1), "-1.5");
        assert_eq!(format_decimal(5 * SCALE, 0), "5");
        assert_eq!(format_decimal(1, 9), "0.000000001");
        assert_eq!(decimals_of(Price::parse("0.01").unwrap().0), 2);
        assert_eq!(decimals_of(SCALE), 0);
    }

    #[test]
    fn instrument_table_validates() {
        let mut table = Instruments::new();
        let spec = InstrumentSpec {
            symbol: "BTC-USD".into(),
            venue: "sim".into(),
            kind: AssetKind::Crypto,
            tick_size: Price::parse("0.01").unwrap(),
            lot_size: Size::parse("0.0001").unwrap(),
        };
        let id = table.add(spec.clone()).unwrap();
        assert_eq!(table.get(id).price_decimals, 2);
        assert_eq!(table.get(id).size_decimals, 4);
        assert_eq!(table.lookup("BTC-USD"), Some(id));
        assert!(matches!(table.add(spec.clone()), Err(InstrumentError::Duplicate(_))));
        let bad = InstrumentSpec { symbol: "BTC USD\"".into(), ..spec };
        assert!(matches!(table.add(bad), Err(InstrumentError::BadSymbol(_))));
    }

    proptest! {
        /// decimal string -> fixed point -> decimal string gives back the same text.
        #[test]
        fn decimal_round_trips(whole in 0i64..9_000_000_000, frac in 0u64..1_000_000_000, decimals in 0u8..=9, negative: bool) {
            let frac_digits = if decimals == 0 { String::new() } else {
                let f = frac % 10u64.pow(u32::from(decimals));
                format!(".{f:0width$}", width = decimals as usize)
            };
            let sign = if negative && (whole != 0 || !frac_digits.trim_start_matches('.').trim_start_matches('0').is_empty()) { "-" } else { "" };
            let text = format!("{sign}{whole}{frac_digits}");
            let nanos = parse_decimal(&text).unwrap();
            prop_assert_eq!(format_decimal(nanos, decimals), text);
        }

        /// Any nano value survives formatting with nine decimals and parsing back.
        #[test]
        fn nanos_round_trip(nanos in (i64::MIN + 1)..=i64::MAX) {
            let text = format_decimal(nanos, 9);
            prop_assert_eq!(parse_decimal(&text).unwrap(), nanos);
        }
    }
}

/// What a sequence number means in this run: the run's epoch and, per
/// (instrument, channel), the sequence the run started from.
///
/// Sequences never mean two things. With a store, every stored stream continues
/// from the highest sequence the store (or its journal) has seen, so a sequence
/// names one update across restarts; derived channels (candles) and a server
/// without a store start again at 1. The epoch (microseconds since the Unix epoch
/// at start: unique per run, exact in a JavaScript number) travels with every
/// snapshot, `live` marker and cursor, and comes back with `since`. A `since` of
/// this epoch is taken as it is; one of another run (or without an epoch) is
/// honoured only up to where this run's sequences began, since below that both
/// runs name the same updates; beyond it the client is told of the break
/// ([`SinceCheck::OtherRun`]).
#[derive(Debug, Clone)]
pub struct SequenceLine {
    pub epoch: u64,
    /// Per instrument (dense index): the last sequence of each channel before this run.
    bases: Vec<[u64; Channel::COUNT]>,
}

/// How a client's `since` relates to this run's sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinceCheck {
    /// From this run: resume after it.
    ThisRun(u64),
    /// From an earlier run, at or below where this run began: the sequence names
    /// the same update here, so resume after it (and tell the client this epoch).
    EarlierRun(u64),
    /// From another run, past where this run began (or another server): the
    /// sequences do not continue here; `from` is the first this run reassigned.
    /// `named`: the client said which run (without an epoch, a `since` ahead of
    /// the stream may just as well be a client's mistake).
    OtherRun { since: u64, from: u64, named: bool },
}

impl SequenceLine {
    /// A line that starts every stream at 1 (no store, or a replay).
    pub fn fresh(instruments: usize) -> Self {
        Self::continuing(vec![[0; Channel::COUNT]; instruments])
    }

    /// A line continuing from `bases` (per instrument, per channel), with a new epoch.
    pub fn continuing(bases: Vec<[u64; Channel::COUNT]>) -> Self {
        Self { epoch: (now_nanos() / 1_000).max(1), bases }
    }

    /// A line continuing from `bases` in a given epoch (a cluster's, kept on its bus).
    pub fn with_epoch(epoch: u64, bases: Vec<[u64; Channel::COUNT]>) -> Self {
        Self { epoch, bases }
    }

    /// The last sequence of a stream before this run (0 when it starts at 1).
    pub fn base(&self, id: InstrumentId, channel: Channel) -> u64 {
        self.bases.get(id.index()).map_or(0, |b| b[channel.index()])
    }

    pub fn bases(&self) -> &[[u64; Channel::COUNT]] {
        &self.bases
    }

    /// Places a client's `since` (with the epoch it came from, if it sent one).
    pub fn check(&self, id: InstrumentId, channel: Channel, since: u64, epoch: Option<u64>) -> SinceCheck {
        let base = self.base(id, channel);
        match epoch {
            Some(epoch) if epoch == self.epoch => SinceCheck::ThisRun(since),
            _ if since <= base => SinceCheck::EarlierRun(since),
            _ => SinceCheck::OtherRun { since, from: base + 1, named: epoch.is_some() },
        }
    }
}

#[cfg(test)]
mod sequence_line_tests {
    use super::*;

    #[test]
    fn a_since_from_another_run_is_honoured_only_up_to_this_runs_start() {
        let mut bases = vec![[0; Channel::COUNT]; 2];
        bases[1][Channel::Trades.index()] = 100;
        let line = SequenceLine::continuing(bases);
        let (a, b) = (InstrumentId(0), InstrumentId(1));
        assert_eq!(line.check(b, Channel::Trades, 150, Some(line.epoch)), SinceCheck::ThisRun(150));
        assert_eq!(line.check(b, Channel::Trades, 100, Some(line.epoch - 1)), SinceCheck::EarlierRun(100));
        assert_eq!(line.check(b, Channel::Trades, 90, None), SinceCheck::EarlierRun(90));
        assert_eq!(
            line.check(b, Channel::Trades, 101, None),
            SinceCheck::OtherRun { since: 101, from: 101, named: false }
        );
        assert_eq!(line.check(a, Channel::Trades, 5, Some(7)), SinceCheck::OtherRun { since: 5, from: 1, named: true });
        // Candles are never stored: their base is 0 and any foreign since is a break.
        assert_eq!(
            line.check(b, Channel::Candles1m, 3, None),
            SinceCheck::OtherRun { since: 3, from: 1, named: false }
        );
        assert_eq!(line.check(a, Channel::Quotes, 0, None), SinceCheck::EarlierRun(0));
    }
}

#[cfg(test)]
mod lookup_tests {
    use super::*;

    fn table(symbols: &[(&str, &str)]) -> Instruments {
        let mut t = Instruments::new();
        for (symbol, venue) in symbols {
            t.add(InstrumentSpec {
                symbol: (*symbol).into(),
                venue: (*venue).into(),
                kind: AssetKind::Crypto,
                tick_size: Price(1),
                lot_size: Size(1),
            })
            .unwrap();
        }
        t
    }

    #[test]
    fn globs_match_runs_of_any_characters_ignoring_case() {
        for (pattern, text, want) in [
            ("*", "binance:BTC-USDT", true),
            ("binance:*", "binance:BTC-USDT", true),
            ("binance:*", "kraken:BTC-USD", false),
            ("*-USD", "coinbase:ETH-USD", true),
            ("*-usd", "AAPL", false),
            ("*-usd", "BTC-USD", true),
            ("*-USD", "BTC-USDT", false),
            ("B*C*", "BTC-USD", true),
            ("*T*T*", "BTC-USDT", true),
            ("*T*T*T*", "BTC-USDT", false),
            ("AAPL", "AAPL", true),
            ("", "", true),
        ] {
            assert_eq!(glob_match(pattern, text), want, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn names_resolve_to_symbols_then_unique_aliases() {
        let mut t = table(&[("BTC-USD", "sim"), ("binance:BTC-USDT", "binance"), ("kraken:BTC-USD", "kraken")]);
        let kraken = InstrumentId(2);
        t.add_alias("XBT/USD", kraken);
        t.add_alias("BTCUSDT", InstrumentId(1));
        assert_eq!(t.resolve("BTC-USD"), Lookup::Symbol(InstrumentId(0)));
        assert_eq!(t.resolve("BTCUSDT"), Lookup::Alias(InstrumentId(1)));
        assert_eq!(t.resolve("btc-usdt"), Lookup::Alias(InstrumentId(1)));
        assert_eq!(t.resolve("XBT/USD"), Lookup::Alias(kraken));
        assert_eq!(t.resolve("kraken:btc-usd"), Lookup::Alias(kraken));
        // "BTCUSD" is the simulator's BTC-USD and Kraken's BTC-USD alike.
        assert_eq!(t.resolve("btcusd"), Lookup::Ambiguous(vec![InstrumentId(0), kraken]));
        assert_eq!(t.resolve("DOGE"), Lookup::Unknown);
        assert_eq!(t.resolve("--"), Lookup::Unknown);
        assert_eq!(t.matching("sim:*"), vec![InstrumentId(0)]);
        assert_eq!(t.matching("*-USD"), vec![InstrumentId(0), kraken]);
        assert_eq!(t.matching("nope:*"), Vec::<InstrumentId>::new());
    }
}
