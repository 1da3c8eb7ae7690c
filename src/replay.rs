//! Stored ticks streamed again at a chosen speed: to one WebSocket client
//! (`/v1/replay`), to the terminal (`tickwire replay`), or back into the pipeline
//! as a feed (`--feed replay:FROM..TO@SPEED`).
//!
//! A [`spawn_reader`] task reads the merged, exchange-time-ordered history in
//! chunks into a small bounded channel, so reading the store and encoding for
//! the client overlap; when the consumer is slower, the reader waits. [`Pacer`]
//! is the pure clock that maps exchange time to wall time at a speed.
//!
//! A replay of the book channel starts with the book: at the start and after
//! every seek, each instrument's book as it stood then ([`Store::book_at`]) goes
//! out as a `snapshot` in the live stream's shape, its deltas after it. A stored
//! reset goes out as the live stream sends one: `book_invalidated`, then a
//! snapshot. Where the store holds no book before the start, `book_invalidated`
//! (seq 0) says so and that instrument's deltas are withheld until a reset
//! brings a book ([`ReplayBooks`]), so no client applies deltas to nothing.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use rustc_hash::FxHashSet;

use crate::book::{BookLevels, InstrumentState, L2Book};
use crate::codec::Format;
use crate::model::{
    Channel, Event, Instrument, InstrumentId, Instruments, Nanos, Payload, SCALE, format_decimal, parse_decimal,
    write_decimal,
};
use crate::store::books::StoredBook;
use crate::store::reader::MergedHistory;
use crate::store::{Store, StoreError, StoreIds};

/// Events per chunk read from the store.
pub const CHUNK_EVENTS: usize = 8192;
/// Chunks the reader may be ahead of the consumer.
const CHUNKS_AHEAD: usize = 4;

/// How fast stored time passes: a factor of real time, or as fast as possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speed {
    Max,
    /// Stored nanoseconds per wall nanosecond, in nano-units (1e9 is real time).
    Factor(u64),
}

impl Speed {
    pub const REAL_TIME: Speed = Speed::Factor(SCALE as u64);
}

/// Why a speed was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad speed {0:?}: a positive factor such as 1, 0.5 or 10 (at most 1000000), or max")]
pub struct SpeedError(pub String);

impl FromStr for Speed {
    type Err = SpeedError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        let text = text.strip_suffix(['x', 'X']).unwrap_or(text);
        match parse_decimal(text) {
            Ok(nanos) if nanos > 0 && nanos <= 1_000_000 * SCALE => Ok(Speed::Factor(nanos as u64)),
            _ => Err(SpeedError(text.to_owned())),
        }
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speed::Max => f.write_str("max"),
            Speed::Factor(n) => {
                let text = format_decimal(*n as i64, 9);
                f.write_str(text.trim_end_matches('0').trim_end_matches('.'))
            }
        }
    }
}

/// A replay range `FROM..TO@SPEED` (the `--feed replay:` value without its prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayRange {
    pub from: Nanos,
    pub to: Nanos,
    pub speed: Speed,
}

impl FromStr for ReplayRange {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (range, speed) = match text.rsplit_once('@') {
            Some((range, speed)) => (range, speed.parse::<Speed>().map_err(|e| e.to_string())?),
            None => (text, Speed::REAL_TIME),
        };
        let (from, to) = range.split_once("..").ok_or_else(|| format!("{text:?} is not FROM..TO[@SPEED]"))?;
        let from = crate::store::parse_time(from)?;
        let to = crate::store::parse_time(to)?;
        if from >= to {
            return Err(format!("replay range {text:?} is empty: FROM must be before TO"));
        }
        Ok(ReplayRange { from, to, speed })
    }
}

/// Maps exchange time to wall time: the event at `origin_event` is due at
/// `origin_wall`, later ones `(ts - origin_event) / speed` after it.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    speed: Speed,
    origin_event: Nanos,
    origin_wall: Instant,
}

impl Pacer {
    pub fn new(speed: Speed, origin_event: Nanos, now: Instant) -> Self {
        Self { speed, origin_event, origin_wall: now }
    }

    /// When `ts_event` is due; `None` at max speed (always now).
    pub fn due(&self, ts_event: Nanos) -> Option<Instant> {
        match self.speed {
            Speed::Max => None,
            Speed::Factor(factor) => {
                let stored = u128::from(ts_event.saturating_sub(self.origin_event));
                let wall = stored * SCALE as u128 / u128::from(factor.max(1));
                Some(self.origin_wall + Duration::from_nanos(u64::try_from(wall).unwrap_or(u64::MAX / 2)))
            }
        }
    }

    /// Restarts the clock so that `ts_event` is due `now` (after a pause, a seek,
    /// or a change of speed).
    pub fn restart(&mut self, speed: Speed, ts_event: Nanos, now: Instant) {
        *self = Pacer::new(speed, ts_event, now);
    }

    pub fn speed(&self) -> Speed {
        self.speed
    }
}

/// What the reader task sends: chunks of events (process instrument ids), then
/// the channel closes at the end of the range. An error ends it early.
pub type Chunk = Result<Vec<Event>, StoreError>;

/// Reads `streams` (store instrument id, channel) in `[from, to)` in exchange-time
/// order, mapping instruments to this process's ids, into a bounded channel.
pub fn spawn_reader(
    store: Store,
    ids: Arc<StoreIds>,
    streams: Vec<(i64, Channel)>,
    from: Nanos,
    to: Nanos,
) -> (mpsc::Receiver<Chunk>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
    let task = tokio::spawn(async move {
        let mut history = match MergedHistory::open(store, &streams, from, to, CHUNK_EVENTS).await {
            Ok(history) => history,
            Err(error) => {
                let _ = tx.send(Err(error)).await;
                return;
            }
        };
        loop {
            let mut chunk = Vec::with_capacity(CHUNK_EVENTS);
            if let Err(error) = history.next_chunk(CHUNK_EVENTS, &mut chunk).await {
                let _ = tx.send(Err(error)).await;
                return;
            }
            if chunk.is_empty() {
                return;
            }
            chunk.retain_mut(|event| match ids.instrument(i64::from(event.instrument.0)) {
                Some(id) => {
                    event.instrument = id;
                    true
                }
                None => false,
            });
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    (rx, task)
}

/// The `epoch` of a replay's snapshots: its sequences are the stored ones and
/// belong to no live run, so they resume nothing.
pub const REPLAY_EPOCH: u64 = 0;

/// Appends a book `snapshot` message of `book` (the live stream's shape, at most
/// `depth` levels a side): the book at `book.seq`, deltas continuing at `seq + 1`.
pub fn encode_book_snapshot(format: Format, out: &mut Vec<u8>, inst: &Instrument, book: &StoredBook, depth: usize) {
    let (bids, asks) = book.book.top(depth);
    let levels =
        BookLevels { seq: book.seq, ts_event: book.ts_event, ts_recv: book.ts_recv, ts_send: book.ts_send, bids, asks };
    let state = InstrumentState { book: Arc::new(levels), ..InstrumentState::default() };
    format.encode_snapshot(out, inst, Channel::Book, &state, REPLAY_EPOCH);
}

/// What a replay sends for one stored event.
#[derive(Debug)]
pub enum Deliver {
    /// The event as an update.
    Update,
    /// Nothing: a book delta of an instrument whose book the client does not hold.
    Withhold,
    /// A stored reset: `book_invalidated`, then a snapshot of this book.
    Reset(StoredBook),
}

/// Which instruments' books the replay's client holds (it holds none of those
/// the store had no book of at the start or seek time).
#[derive(Debug, Default)]
pub struct ReplayBooks {
    unknown: FxHashSet<InstrumentId>,
}

impl ReplayBooks {
    /// The client was sent `id`'s book (`true`) or told there is none (`false`).
    pub fn started(&mut self, id: InstrumentId, known: bool) {
        if known {
            self.unknown.remove(&id);
        } else {
            self.unknown.insert(id);
        }
    }

    pub fn deliver(&mut self, event: &Event) -> Deliver {
        match &event.payload {
            Payload::BookReset(levels) => {
                let mut book = L2Book::default();
                if book.apply(levels).is_err() {
                    // The engine never stores a reset it refused; stay safe anyway.
                    self.unknown.insert(event.instrument);
                    return Deliver::Withhold;
                }
                self.unknown.remove(&event.instrument);
                Deliver::Reset(StoredBook {
                    seq: event.seq,
                    ts_event: event.ts_event,
                    ts_recv: event.ts_recv,
                    ts_send: event.ts_send,
                    book,
                })
            }
            Payload::Book(_) if self.unknown.contains(&event.instrument) => Deliver::Withhold,
            _ => Deliver::Update,
        }
    }
}

/// The books of `streams`' book channels at `at`, for the client: per instrument
/// (process id), its book, or `None` when the store holds none.
pub async fn books_at(
    store: &Store,
    ids: &StoreIds,
    streams: &[(i64, Channel)],
    at: Nanos,
) -> Result<Vec<(InstrumentId, Option<StoredBook>)>, StoreError> {
    let mut books = Vec::new();
    for &(store_id, channel) in streams {
        let Some(id) = ids.instrument(store_id) else { continue };
        if channel == Channel::Book && !books.iter().any(|(known, _)| *known == id) {
            books.push((id, store.book_at(store_id, at).await?));
        }
    }
    Ok(books)
}

/// Output formats of `tickwire replay` and the CSV history API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LineFormat {
    /// One JSON update object per line, as in the stream's batches; book
    /// snapshots and `book_invalidated` as whole messages.
    Jsonl,
    Csv,
}

/// Header of [`write_csv`] rows.
pub const CSV_HEADER: &str =
    "symbol,channel,seq,ts_event,ts_recv,ts_send,bid,bid_size,ask,ask_size,price,size,side,trade_id,bids,asks\n";

/// Appends one CSV row (see [`CSV_HEADER`]); fields a channel lacks are empty,
/// book levels are `price:size` pairs joined by `;`.
pub fn write_csv(out: &mut Vec<u8>, instruments: &Instruments, event: &Event) {
    let inst = instruments.get(event.instrument);
    out.extend_from_slice(inst.symbol.as_bytes());
    out.push(b',');
    out.extend_from_slice(event.channel().as_str().as_bytes());
    let mut buf = itoa::Buffer::new();
    for value in [event.seq, event.ts_event, event.ts_recv, event.ts_send] {
        out.push(b',');
        out.extend_from_slice(buf.format(value).as_bytes());
    }
    let (p, s) = (inst.price_decimals, inst.size_decimals);
    match &event.payload {
        Payload::Quote(q) => {
            for (value, decimals) in [(q.bid.0, p), (q.bid_size.0, s), (q.ask.0, p), (q.ask_size.0, s)] {
                out.push(b',');
                write_decimal(out, value, decimals);
            }
            out.extend_from_slice(b",,,,,,");
        }
        Payload::Trade(t) => {
            out.extend_from_slice(b",,,,,");
            write_decimal(out, t.price.0, p);
            out.push(b',');
            write_decimal(out, t.size.0, s);
            out.push(b',');
            out.extend_from_slice(t.side.as_str().as_bytes());
            out.push(b',');
            out.extend_from_slice(buf.format(t.trade_id).as_bytes());
            out.extend_from_slice(b",,");
        }
        Payload::Book(d) | Payload::BookReset(d) => {
            out.extend_from_slice(b",,,,,,,,,");
            for (i, side) in [&d.bids, &d.asks].into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                for (j, (price, size)) in side.iter().enumerate() {
                    if j > 0 {
                        out.push(b';');
                    }
                    write_decimal(out, price.0, p);
                    out.push(b':');
                    write_decimal(out, size.0, s);
                }
            }
        }
        // Candles are derived, never stored: no columns of their own.
        Payload::Candle(_) => out.extend_from_slice(b",,,,,,,,,,"),
    }
    out.push(b'\n');
}

/// Every (store id, channel) stream for `symbols` × `channels`, or the name of
/// the first unknown symbol.
pub fn streams_for(
    instruments: &Instruments,
    ids: &StoreIds,
    symbols: &[String],
    channels: &[Channel],
) -> Result<Vec<(i64, Channel)>, String> {
    let mut streams = Vec::new();
    for symbol in symbols {
        let id = instruments.lookup(symbol).ok_or_else(|| symbol.clone())?;
        for &channel in channels {
            streams.push((ids.store_id(id), channel));
        }
    }
    Ok(streams)
}

/// Writes a stored range to `out` as JSONL or CSV (the `tickwire replay` command).
/// JSONL opens with each book channel's book at `from` (a `snapshot` line, whole,
/// or `book_invalidated` when the store has none) and treats resets as the replay
/// socket does (see the module doc); CSV rows are the stored events as they are.
/// Returns the number of events written.
pub async fn print(
    store: Store,
    symbols: &[String],
    channels: &[Channel],
    range: ReplayRange,
    format: LineFormat,
    out: &mut (dyn std::io::Write + Send),
) -> Result<u64, ReplayError> {
    let (instruments, ids) = store.load_instruments().await?;
    let symbols: Vec<String> =
        if symbols.is_empty() { instruments.iter().map(|i| i.symbol.to_string()).collect() } else { symbols.to_vec() };
    let streams = streams_for(&instruments, &ids, &symbols, channels).map_err(ReplayError::UnknownSymbol)?;
    let mut books = ReplayBooks::default();
    let mut buf = Vec::with_capacity(1 << 20);
    if format == LineFormat::Jsonl {
        // JSONL starts with the books, as the replay socket does; CSV holds rows as stored.
        for (id, book) in books_at(&store, &ids, &streams, range.from).await? {
            let inst = instruments.get(id);
            match &book {
                Some(book) => encode_book_snapshot(Format::Json, &mut buf, inst, book, usize::MAX),
                None => Format::Json.encode_book_invalidated(&mut buf, &inst.symbol, 0),
            }
            buf.push(b'\n');
            books.started(id, book.is_some());
        }
    }
    let (mut rx, _reader) = spawn_reader(store, Arc::new(ids), streams, range.from, range.to);
    let mut pacer: Option<Pacer> = None;
    let mut written = 0;
    if format == LineFormat::Csv {
        out.write_all(CSV_HEADER.as_bytes())?;
    }
    while let Some(chunk) = rx.recv().await {
        for event in chunk? {
            let pacer = pacer.get_or_insert_with(|| Pacer::new(range.speed, event.ts_event, Instant::now()));
            if let Some(due) = pacer.due(event.ts_event)
                && due > Instant::now()
            {
                out.write_all(&buf)?;
                out.flush()?;
                buf.clear();
                tokio::time::sleep_until(due).await;
            }
            match format {
                LineFormat::Jsonl => {
                    let inst = instruments.get(event.instrument);
                    match books.deliver(&event) {
                        Deliver::Update => crate::codec::json::encode_update(&mut buf, inst, &event),
                        Deliver::Withhold => continue,
                        Deliver::Reset(book) => {
                            Format::Json.encode_book_invalidated(&mut buf, &inst.symbol, book.seq);
                            buf.push(b'\n');
                            encode_book_snapshot(Format::Json, &mut buf, inst, &book, usize::MAX);
                        }
                    }
                    buf.push(b'\n');
                }
                LineFormat::Csv => write_csv(&mut buf, &instruments, &event),
            }
            written += 1;
        }
        out.write_all(&buf)?;
        buf.clear();
    }
    out.flush()?;
    Ok(written)
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store knows no instrument {0}")]
    UnknownSymbol(String),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_parse_and_print() {
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("1".parse::<Speed>(), Ok(Speed::REAL_TIME));
        assert_eq!("0.5".parse::<Speed>(), Ok(Speed::Factor(500_000_000)));
        assert_eq!("10x".parse::<Speed>(), Ok(Speed::Factor(10_000_000_000)));
        for bad in ["0", "-1", "fast", "", "1e3", "2000000"] {
            assert!(bad.parse::<Speed>().is_err(), "{bad}");
        }
        assert_eq!(Speed::Factor(2_500_000_000).to_string(), "2.5");
        assert_eq!(Speed::REAL_TIME.to_string(), "1");
    }

    #[test]
    fn ranges_parse() {
        let r: ReplayRange = "1000..2000@max".parse().unwrap();
        assert_eq!((r.from, r.to, r.speed), (1000, 2000, Speed::Max));
        let r: ReplayRange = "2025-01-01T00:00:00Z..2025-01-02T00:00:00Z".parse().unwrap();
        assert_eq!(r.to - r.from, crate::store::DAY_NS);
        assert_eq!(r.speed, Speed::REAL_TIME);
        assert!("2000..1000".parse::<ReplayRange>().is_err());
        assert!("1000-2000".parse::<ReplayRange>().is_err());
        assert!("1..2@slow".parse::<ReplayRange>().is_err());
    }

    #[test]
    fn deltas_wait_for_a_book_and_resets_become_snapshots() {
        use crate::model::{BookDelta, Price, Size};
        let (a, b) = (InstrumentId(0), InstrumentId(1));
        let delta =
            |id| Event::new(id, 5, 5, Payload::Book(BookDelta { bids: vec![(Price(1), Size(1))], asks: vec![] }));
        let mut books = ReplayBooks::default();
        books.started(a, false);
        books.started(b, true);
        assert!(matches!(books.deliver(&delta(a)), Deliver::Withhold), "no book of a: its deltas wait");
        assert!(matches!(books.deliver(&delta(b)), Deliver::Update));
        let mut reset =
            Event::new(a, 6, 6, Payload::BookReset(BookDelta { bids: vec![(Price(2), Size(3))], asks: vec![] }));
        reset.seq = 9;
        match books.deliver(&reset) {
            Deliver::Reset(book) => assert_eq!((book.seq, book.book.best_bid()), (9, Some((Price(2), Size(3))))),
            other => panic!("a reset is a snapshot, not {other:?}"),
        }
        assert!(matches!(books.deliver(&delta(a)), Deliver::Update), "a's book is known from its reset on");
    }

    #[test]
    fn pacer_scales_exchange_time() {
        let now = Instant::now();
        let pacer = Pacer::new(Speed::Factor(2 * SCALE as u64), 1_000, now);
        assert_eq!(pacer.due(1_000), Some(now));
        assert_eq!(pacer.due(1_000 + 2_000_000_000), Some(now + Duration::from_secs(1)));
        assert_eq!(Pacer::new(Speed::Max, 0, now).due(u64::MAX), None);
    }
}
