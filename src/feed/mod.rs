//! Sources of market data. Each turns its input into [`model::Event`]s and sends
//! them in batches to the engine over a bounded channel; when the engine falls
//! behind, the feed waits. Every feed reports its health through [`FeedHealth`].
//!
//! - [`simulator`]: the built-in deterministic market.
//! - [`binance`], [`coinbase`], [`kraken`], [`okx`]: pure venue protocols ([`Venue`]):
//!   subscribe messages, simd-json parsing ([`wire`]), normalisation and each
//!   venue's book synchronisation, unit-tested and benched from byte slices.
//! - [`supervisor`]: the async shell that connects, paces, reconnects, fetches REST
//!   snapshots and rotates connections for any [`Venue`].
//!
//! [`model::Event`]: crate::model::Event

pub mod binance;
pub mod coinbase;
pub mod kraken;
pub mod l2;
pub mod okx;
pub mod reference;
pub mod replay;
pub mod simulator;
pub mod supervisor;
pub mod wire;

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::model::{AssetKind, BookDelta, Event, InstrumentId, InstrumentSpec, Nanos, Payload, Price, Size, now_nanos};
pub use wire::ParseError;

/// Emits the empty `BookReset` that withdraws a published venue book (clients get
/// `book_invalidated` and an empty book until the venue is synchronised again),
/// once: `published` is cleared.
pub fn withdraw_book(published: &mut bool, id: InstrumentId, ts_recv: Nanos, out: &mut Vec<Event>) {
    if std::mem::take(published) {
        out.push(Event::new(id, ts_recv, ts_recv, Payload::BookReset(BookDelta::default())));
    }
}

/// What a venue's pure protocol state machine asks its connection shell
/// ([`supervisor`]) to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this text message to the venue (the shell paces client messages).
    Send(String),
    /// GET `path` from the venue's REST base URL and hand the body to
    /// [`Venue::on_rest`] with `key` (retried with backoff until it succeeds or the
    /// connection ends).
    Fetch { key: usize, path: String },
    /// A book was found wrong (gap, checksum, crossed) and a resync has started.
    Resync { symbol: String, reason: &'static str },
    /// The venue announced it will close this connection: open a replacement,
    /// switch to it, then close this one.
    Rotate,
    /// Drop this connection and connect again.
    Reconnect(&'static str),
}

/// A venue's protocol: subscribe messages, parsing, normalisation and book sync.
/// Pure code: no tasks and no I/O; the [`supervisor`] drives it.
pub trait Venue: Send + 'static {
    /// Short name (`binance`, …) for logs.
    fn venue(&self) -> &'static str;
    /// Longest a healthy connection stays silent: a small multiple of the frame
    /// cadence the venue guarantees (its heartbeat, or its ping). Past it the
    /// connection is presumed dead: its books are withdrawn for clients
    /// (`book_invalidated`) and it is replaced. `--feed-stale-ms` overrides it.
    fn stale_limit(&self) -> std::time::Duration;
    /// For a venue that closes a connection it has nothing to push on unless the
    /// client speaks (OKX, after 30 s): the text to send once the connection has
    /// been silent this long (OKX: `ping` after 20 s; it answers `pong`). The
    /// shell sends it no later than two thirds of the stale limit, so that the
    /// answer can arrive before the connection is judged dead. `None` (the
    /// default): the venue keeps its connections busy itself.
    fn keepalive(&self) -> Option<(std::time::Duration, &'static str)> {
        None
    }
    /// Messages that subscribe everything on a new connection.
    fn subscriptions(&mut self) -> Vec<String>;
    /// A connection became the one whose messages are processed: reset whatever
    /// the venue numbers per connection.
    fn on_connection_start(&mut self);
    /// One text message from the venue.
    fn on_message(
        &mut self,
        text: &[u8],
        ts_recv: Nanos,
        out: &mut Vec<Event>,
        actions: &mut Vec<Action>,
    ) -> Result<(), ParseError>;
    /// The body of a REST response asked for with [`Action::Fetch`].
    fn on_rest(
        &mut self,
        key: usize,
        body: &[u8],
        ts_recv: Nanos,
        out: &mut Vec<Event>,
        actions: &mut Vec<Action>,
    ) -> Result<(), ParseError> {
        let _ = (key, body, ts_recv, out, actions);
        Ok(())
    }
    /// The connection is gone: every book the venue published is withdrawn
    /// (`BookReset` with no levels) until it is synchronised again.
    fn on_disconnect(&mut self, ts_recv: Nanos, out: &mut Vec<Event>);
}

/// Tick and lot size of a venue instrument whose reference data was not read
/// ([`reference`]: `--venue-reference off`, or the venue could not be reached):
/// 1e-8, the finest increment Binance, Coinbase, Kraken or OKX quotes a spot
/// price or size in, so that nothing is truncated; only trailing zeros show.
pub const VENUE_INCREMENT: i64 = 10;

/// The instrument a venue feed registers for one of its symbols.
pub fn venue_instrument(symbol: String, venue: &str) -> InstrumentSpec {
    InstrumentSpec {
        symbol,
        venue: venue.to_owned(),
        kind: AssetKind::Crypto,
        tick_size: Price(VENUE_INCREMENT),
        lot_size: Size(VENUE_INCREMENT),
    }
}

/// Events a feed hands to the engine in one message.
pub type EventBatch = Vec<Event>;

/// Where a feed's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FeedState {
    Connecting = 0,
    Live = 1,
    Reconnecting = 2,
    Stopped = 3,
}

impl FeedState {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedState::Connecting => "connecting",
            FeedState::Live => "live",
            FeedState::Reconnecting => "reconnecting",
            FeedState::Stopped => "stopped",
        }
    }
    fn from_u8(value: u8) -> Self {
        match value {
            1 => FeedState::Live,
            2 => FeedState::Reconnecting,
            3 => FeedState::Stopped,
            _ => FeedState::Connecting,
        }
    }
}

/// Counters a feed updates and `/healthz`, `/v1/feeds` and `/metrics` read.
/// Plain atomics: the feed never waits for a reader.
#[derive(Debug)]
pub struct FeedHealth {
    pub name: String,
    state: AtomicU8,
    messages: AtomicU64,
    last_message_ns: AtomicU64,
    resyncs: AtomicU64,
    parse_errors: AtomicU64,
    reconnects: AtomicU64,
    started_ns: Nanos,
    /// No frame for this long and the feed is presumed dead (venue feeds).
    stale_limit_ms: Option<u64>,
    /// The instruments this feed publishes.
    instruments: Vec<String>,
    /// The last fault (connection lost or refused, unparsable message, book
    /// resync), for the operator; none before the first.
    last_error: parking_lot::Mutex<Option<String>>,
}

/// A point-in-time copy of [`FeedHealth`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedHealthView {
    pub name: String,
    pub state: &'static str,
    pub messages: u64,
    /// Milliseconds since the last message, `None` before the first.
    pub last_message_age_ms: Option<u64>,
    /// The last fault, `None` before the first.
    pub last_error: Option<String>,
    /// Average since the feed started.
    pub messages_per_sec: f64,
    pub resyncs: u64,
    pub parse_errors: u64,
    pub reconnects: u64,
    /// Not live: what clients hold of its instruments is not current.
    pub stale: bool,
    /// The silence after which the feed is presumed dead (venue feeds).
    pub stale_limit_ms: Option<u64>,
    pub instruments: Vec<String>,
}

impl FeedHealth {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            state: AtomicU8::new(FeedState::Connecting as u8),
            messages: AtomicU64::new(0),
            last_message_ns: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            parse_errors: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            started_ns: now_nanos(),
            stale_limit_ms: None,
            instruments: Vec::new(),
            last_error: parking_lot::Mutex::new(None),
        }
    }

    /// Remembers `what` as the feed's last fault.
    pub fn record_error(&self, what: impl std::fmt::Display) {
        *self.last_error.lock() = Some(what.to_string());
    }

    /// Names the instruments this feed publishes and its stale limit, for `/v1/feeds`.
    pub fn describing(mut self, instruments: Vec<String>, stale_limit: Option<std::time::Duration>) -> Self {
        self.instruments = instruments;
        self.stale_limit_ms = stale_limit.map(|d| d.as_millis() as u64);
        self
    }

    pub fn set_state(&self, state: FeedState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn state(&self) -> FeedState {
        FeedState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn record_messages(&self, count: u64, at: Nanos) {
        self.messages.fetch_add(count, Ordering::Relaxed);
        self.last_message_ns.store(at, Ordering::Relaxed);
        metrics::counter!("tickwire_feed_messages_total", "feed" => self.name.clone()).increment(count);
    }

    pub fn record_parse_error(&self) {
        self.parse_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tickwire_feed_parse_errors_total", "feed" => self.name.clone()).increment(1);
    }

    pub fn record_resync(&self) {
        self.resyncs.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tickwire_feed_resyncs_total", "feed" => self.name.clone()).increment(1);
    }

    pub fn record_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tickwire_feed_reconnects_total", "feed" => self.name.clone()).increment(1);
    }

    pub fn view(&self) -> FeedHealthView {
        let now = now_nanos();
        let messages = self.messages.load(Ordering::Relaxed);
        let last = self.last_message_ns.load(Ordering::Relaxed);
        let elapsed_s = (now.saturating_sub(self.started_ns) as f64 / 1e9).max(1e-3);
        FeedHealthView {
            name: self.name.clone(),
            state: self.state().as_str(),
            messages,
            last_message_age_ms: (last != 0).then(|| now.saturating_sub(last) / 1_000_000),
            last_error: self.last_error.lock().clone(),
            messages_per_sec: (messages as f64 / elapsed_s * 10.0).round() / 10.0,
            resyncs: self.resyncs.load(Ordering::Relaxed),
            parse_errors: self.parse_errors.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            stale: self.state() != FeedState::Live,
            stale_limit_ms: self.stale_limit_ms,
            instruments: self.instruments.clone(),
        }
    }
}
