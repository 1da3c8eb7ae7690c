//! The write-ahead journal: every stored event is on local disk before any
//! client is sent it.
//!
//! The engine appends one record per feed batch ([`JournalAppender::append`],
//! one `write` into the page cache) before it fans the batch out, so a process
//! crash at any moment loses nothing a client was sent; the writer forces the
//! appends to disk together every sync interval (group commit), which bounds
//! what a power loss can take to one interval. The history writer tails the
//! journal ([`JournalReader`]) into the database and deletes each segment once
//! all of it is stored. A new process first stores what the last one left.
//!
//! Segments `{id:010}.wal` hold records; each record holds one batch of events:
//! ```text
//! magic "TWJ1" (4) | payload length u32 LE (4) | CRC-32 of the payload u32 LE (4) | payload
//! payload: count u32, then per event: instrument u32 (store id), seq u64, ts_event u64,
//!          ts_recv u64, ts_send u64, kind u8, kind's fields (all little-endian)
//! ```
//! A record whose header or checksum does not hold (a torn tail after a crash)
//! ends the readable part of its segment: it is counted and skipped. Encoding and
//! decoding are pure functions over byte slices; the appender and reader are the
//! thin file shells around them.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::model::{BookDelta, Event, InstrumentId, Payload, Price, Quote, Side, Size, Trade};

const MAGIC: &[u8; 4] = b"TWJ1";
const HEADER: usize = 12;
/// Largest payload a record may claim; anything larger is corruption.
const MAX_PAYLOAD: usize = 256 << 20;

const KIND_QUOTE: u8 = 0;
const KIND_TRADE: u8 = 1;
const KIND_BOOK: u8 = 2;
const KIND_BOOK_RESET: u8 = 3;

/// Appends one record holding `events` to `out`.
pub fn encode_record(out: &mut Vec<u8>, events: &[Event]) {
    encode_record_mapped(out, events, |id| id.0);
}

/// [`encode_record`] with each event's instrument id written as `store_id` maps it.
pub fn encode_record_mapped(out: &mut Vec<u8>, events: &[Event], store_id: impl Fn(InstrumentId) -> u32) {
    let start = out.len();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0; 8]);
    let payload_start = out.len();
    // Candles are derived, never stored (the writer's tap drops them already).
    let stored = || events.iter().filter(|e| e.channel().is_stored());
    out.extend_from_slice(&(stored().count() as u32).to_le_bytes());
    for event in stored() {
        out.extend_from_slice(&store_id(event.instrument).to_le_bytes());
        for v in [event.seq, event.ts_event, event.ts_recv, event.ts_send] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        match &event.payload {
            Payload::Quote(q) => {
                out.push(KIND_QUOTE);
                for v in [q.bid.0, q.bid_size.0, q.ask.0, q.ask_size.0] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            Payload::Trade(t) => {
                out.push(KIND_TRADE);
                for v in [t.price.0, t.size.0] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.push(u8::from(t.side == Side::Sell));
                out.extend_from_slice(&t.trade_id.to_le_bytes());
            }
            Payload::Book(d) | Payload::BookReset(d) => {
                out.push(if matches!(event.payload, Payload::BookReset(_)) { KIND_BOOK_RESET } else { KIND_BOOK });
                for side in [&d.bids, &d.asks] {
                    out.extend_from_slice(&(side.len() as u32).to_le_bytes());
                    for (price, size) in side {
                        out.extend_from_slice(&price.0.to_le_bytes());
                        out.extend_from_slice(&size.0.to_le_bytes());
                    }
                }
            }
            Payload::Candle(_) => unreachable!("filtered above"),
        }
    }
    let payload_len = (out.len() - payload_start) as u32;
    let crc = crc32fast::hash(&out[payload_start..]);
    out[start + 4..start + 8].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// What a look at the bytes at a record boundary found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, valid record of this many bytes.
    Record { events: Vec<Event>, len: usize },
    /// Not enough bytes for the record its header announces (a torn tail, or
    /// still being written).
    Incomplete,
    /// Bytes that are not a record (bad magic, length or checksum).
    Corrupt,
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.bytes.split_at_checked(N)?;
        self.bytes = rest;
        head.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_le_bytes)
    }
    fn levels(&mut self) -> Option<Vec<(Price, Size)>> {
        let n = self.u32()? as usize;
        if n > self.bytes.len() / 16 {
            return None;
        }
        (0..n).map(|_| Some((Price(self.i64()?), Size(self.i64()?)))).collect()
    }
}

fn decode_payload(payload: &[u8]) -> Option<Vec<Event>> {
    let mut c = Cursor { bytes: payload };
    let count = c.u32()? as usize;
    let mut events = Vec::with_capacity(count.min(payload.len() / 37));
    for _ in 0..count {
        let instrument = InstrumentId(c.u32()?);
        let (seq, ts_event, ts_recv, ts_send) = (c.u64()?, c.u64()?, c.u64()?, c.u64()?);
        let payload = match c.u8()? {
            KIND_QUOTE => Payload::Quote(Quote {
                bid: Price(c.i64()?),
                bid_size: Size(c.i64()?),
                ask: Price(c.i64()?),
                ask_size: Size(c.i64()?),
            }),
            KIND_TRADE => Payload::Trade(Trade {
                price: Price(c.i64()?),
                size: Size(c.i64()?),
                side: if c.u8()? == 1 { Side::Sell } else { Side::Buy },
                trade_id: c.u64()?,
            }),
            kind @ (KIND_BOOK | KIND_BOOK_RESET) => {
                let delta = BookDelta { bids: c.levels()?, asks: c.levels()? };
                if kind == KIND_BOOK { Payload::Book(delta) } else { Payload::BookReset(delta) }
            }
            _ => return None,
        };
        events.push(Event { instrument, seq, ts_event, ts_recv, ts_send, payload });
    }
    c.bytes.is_empty().then_some(events)
}

/// Decodes the record at the start of `bytes`.
pub fn decode_record(bytes: &[u8]) -> Decoded {
    if bytes.len() < HEADER {
        return if MAGIC.starts_with(&bytes[..bytes.len().min(4)]) { Decoded::Incomplete } else { Decoded::Corrupt };
    }
    if &bytes[..4] != MAGIC {
        return Decoded::Corrupt;
    }
    let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if len > MAX_PAYLOAD {
        return Decoded::Corrupt;
    }
    let Some(payload) = bytes.get(HEADER..HEADER + len) else { return Decoded::Incomplete };
    if crc32fast::hash(payload) != crc {
        return Decoded::Corrupt;
    }
    match decode_payload(payload) {
        Some(events) => Decoded::Record { events, len: HEADER + len },
        None => Decoded::Corrupt,
    }
}

/// Journal segment files are named `{id:010}.wal`; ids grow by one.
const SEGMENT_SUFFIX: &str = "wal";
/// A journal written by versions before segments: read first, then deleted.
const LEGACY_FILE: &str = "journal.bin";

/// One segment as the reader sees it.
#[derive(Debug, Clone)]
struct Segment {
    id: u64,
    path: PathBuf,
    /// Bytes of whole records appended (the reader never reads past it).
    len: u64,
    /// No more appends will come (an older segment, or one left by a previous process).
    sealed: bool,
}

/// What the appender and the reader share.
#[derive(Debug, Default)]
struct Shared {
    segments: Mutex<VecDeque<Segment>>,
    /// Bytes in segments not yet deleted (the cap is checked against it).
    bytes: AtomicU64,
    /// Woken on every append and when the appender goes away.
    appended: Notify,
    closed: AtomicBool,
    /// Files with appends not yet forced to disk.
    unsynced: Mutex<Vec<Arc<File>>>,
}

/// Opens the journal in `dir`: the segments a previous process left (to be
/// written to the store first) and a new segment for this one. One process per
/// journal: a second one is refused.
pub fn open(dir: &Path, config: JournalConfig) -> std::io::Result<(JournalAppender, JournalReader, Leftovers)> {
    std::fs::create_dir_all(dir)?;
    let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("journal.lock"))?;
    lock.try_lock().map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::WouldBlock, "the journal is in use by another tickwire process")
    })?;
    let mut segments: Vec<Segment> = Vec::new();
    let legacy = dir.join(LEGACY_FILE);
    if legacy.exists() {
        let len = std::fs::metadata(&legacy)?.len();
        segments.push(Segment { id: 0, path: legacy, len, sealed: true });
    }
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let id = path
            .extension()
            .filter(|ext| *ext == SEGMENT_SUFFIX)
            .and_then(|_| path.file_stem()?.to_str()?.parse::<u64>().ok());
        if let Some(id) = id {
            found.push((id, path));
        }
    }
    found.sort();
    for (id, path) in found {
        let len = std::fs::metadata(&path)?.len();
        segments.push(Segment { id, path, len, sealed: true });
    }
    // What earlier runs left: the highest sequence of every stream in it, so
    // that this run's sequences continue past it even before it is stored.
    let mut leftovers = Leftovers::default();
    for segment in &segments {
        leftovers.bytes += segment.len;
        let bytes = std::fs::read(&segment.path)?;
        let mut at = 0;
        while at < bytes.len() {
            match decode_record(&bytes[at..]) {
                Decoded::Record { events, len } => {
                    for event in &events {
                        let head = leftovers.heads.entry((event.instrument.0, event.channel())).or_insert(0);
                        *head = (*head).max(event.seq);
                    }
                    leftovers.events += events.len() as u64;
                    at += len;
                }
                Decoded::Incomplete | Decoded::Corrupt => break,
            }
        }
    }
    let next_id = segments.last().map_or(1, |s| s.id + 1);
    let shared = Arc::new(Shared::default());
    shared.bytes.store(leftovers.bytes, Ordering::Relaxed);
    let first = segments.first().map_or(next_id, |s| s.id);
    *shared.segments.lock() = segments.into();
    let mut appender = JournalAppender {
        dir: dir.to_path_buf(),
        config,
        shared: shared.clone(),
        file: None,
        id: next_id,
        len: 0,
        buf: Vec::new(),
        _lock: Arc::new(lock),
    };
    appender.roll()?;
    let reader = JournalReader { shared, at: (first, 0), _lock: appender._lock.clone() };
    Ok((appender, reader, leftovers))
}

/// What a previous process left in the journal.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub bytes: u64,
    pub events: u64,
    /// Highest sequence per (store instrument id, channel).
    pub heads: std::collections::HashMap<(u32, crate::model::Channel), u64>,
}

/// Settings of the journal.
#[derive(Debug, Clone, Copy)]
pub struct JournalConfig {
    /// The journal never holds more than this many bytes; beyond, an append is refused.
    pub cap_bytes: u64,
    /// A segment is closed and a new one begun past this many bytes, so that
    /// written segments can be deleted while appends go on.
    pub segment_bytes: u64,
}

/// The engine's end: appends a record per batch before the batch is fanned out.
#[derive(Debug)]
pub struct JournalAppender {
    dir: PathBuf,
    config: JournalConfig,
    shared: Arc<Shared>,
    file: Option<Arc<File>>,
    id: u64,
    len: u64,
    buf: Vec<u8>,
    _lock: Arc<File>,
}

/// Why an append did not reach the journal.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the journal is full ({0} bytes)")]
    Full(u64),
    #[error("journal write failed: {0}")]
    Io(#[from] std::io::Error),
}

impl JournalAppender {
    /// Appends `events` (instrument ids mapped by `store_id`) as one record, with
    /// one `write`: once it returns, a process crash cannot lose them. Returns
    /// the bytes appended (0 when no event is stored).
    pub fn append(&mut self, events: &[Event], store_id: impl Fn(InstrumentId) -> u32) -> Result<u64, AppendError> {
        if !events.iter().any(|e| e.channel().is_stored()) {
            return Ok(0);
        }
        self.buf.clear();
        encode_record_mapped(&mut self.buf, events, store_id);
        let size = self.buf.len() as u64;
        if self.shared.bytes.load(Ordering::Relaxed) + size > self.config.cap_bytes {
            return Err(AppendError::Full(self.config.cap_bytes));
        }
        if self.len > 0 && self.len + size > self.config.segment_bytes {
            self.roll()?;
        }
        let file = self.file.as_ref().ok_or_else(|| std::io::Error::other("no journal segment open"))?;
        (&**file).write_all(&self.buf)?;
        self.len += size;
        self.shared.bytes.fetch_add(size, Ordering::Relaxed);
        {
            let mut segments = self.shared.segments.lock();
            if let Some(current) = segments.back_mut().filter(|s| s.id == self.id) {
                current.len = self.len;
            }
        }
        {
            let mut unsynced = self.shared.unsynced.lock();
            if !unsynced.last().is_some_and(|f| Arc::ptr_eq(f, file)) {
                unsynced.push(file.clone());
            }
        }
        self.shared.appended.notify_one();
        Ok(size)
    }

    /// Seals the current segment and starts the next.
    fn roll(&mut self) -> std::io::Result<()> {
        let id = if self.file.is_some() { self.id + 1 } else { self.id };
        let path = self.dir.join(format!("{id:010}.{SEGMENT_SUFFIX}"));
        let file = Arc::new(OpenOptions::new().create(true).append(true).open(&path)?);
        let mut segments = self.shared.segments.lock();
        if let Some(current) = segments.back_mut() {
            current.sealed = true;
        }
        segments.push_back(Segment { id, path, len: 0, sealed: false });
        drop(segments);
        self.file = Some(file);
        self.id = id;
        self.len = 0;
        Ok(())
    }
}

impl Drop for JournalAppender {
    fn drop(&mut self) {
        if let Some(current) = self.shared.segments.lock().back_mut() {
            current.sealed = true;
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.appended.notify_one();
    }
}

/// A position in the journal: (segment id, byte offset in it).
pub type Position = (u64, u64);

/// The writer's end: reads records in order, deletes what has been stored.
#[derive(Debug)]
pub struct JournalReader {
    shared: Arc<Shared>,
    at: Position,
    _lock: Arc<File>,
}

/// What [`JournalReader::read`] returned.
#[derive(Debug, Default)]
pub struct ReadBatch {
    pub events: Vec<Event>,
    /// The position after these events; pass to [`JournalReader::consumed`] once
    /// they are safely in the database.
    pub next: Position,
    /// Bytes skipped as corrupt or torn (the tail a crash left).
    pub skipped: u64,
}

impl JournalReader {
    /// Reads whole records from the cursor until about `max_events` events. The
    /// cursor does not move until [`Self::consumed`].
    pub fn read(&self, max_events: usize) -> std::io::Result<ReadBatch> {
        let segments: Vec<Segment> =
            self.shared.segments.lock().iter().filter(|s| s.id >= self.at.0).cloned().collect();
        let mut batch = ReadBatch { next: self.at, ..ReadBatch::default() };
        for segment in segments {
            if batch.events.len() >= max_events {
                break;
            }
            let start = if segment.id == batch.next.0 { batch.next.1 } else { 0 };
            if start >= segment.len {
                if segment.sealed {
                    batch.next = (segment.id + 1, 0);
                    continue;
                }
                break;
            }
            let file = File::open(&segment.path)?;
            let mut offset = start;
            let mut header = [0u8; HEADER];
            while offset < segment.len && batch.events.len() < max_events {
                let left = (segment.len - offset) as usize;
                let head_len = left.min(HEADER);
                file.read_exact_at(&mut header[..head_len], offset)?;
                let claimed = if head_len == HEADER && &header[..4] == MAGIC {
                    u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize
                } else {
                    0
                };
                let want = (HEADER + claimed.min(MAX_PAYLOAD)).min(left);
                let mut record = vec![0u8; want];
                file.read_exact_at(&mut record, offset)?;
                match decode_record(&record) {
                    Decoded::Record { events, len } => {
                        batch.events.extend(events);
                        offset += len as u64;
                    }
                    Decoded::Incomplete | Decoded::Corrupt => {
                        // A torn or damaged tail: nothing after it can be trusted.
                        batch.skipped += segment.len - offset;
                        offset = segment.len;
                    }
                }
            }
            batch.next =
                if offset >= segment.len && segment.sealed { (segment.id + 1, 0) } else { (segment.id, offset) };
            if !segment.sealed {
                break;
            }
        }
        Ok(batch)
    }

    /// Marks everything before `next` as stored; deletes the segments wholly before it.
    pub fn consumed(&mut self, next: Position) -> std::io::Result<()> {
        self.at = next;
        let mut done = Vec::new();
        {
            let mut segments = self.shared.segments.lock();
            while let Some(first) = segments.front() {
                if first.sealed && first.id < next.0 {
                    done.extend(segments.pop_front());
                } else {
                    break;
                }
            }
        }
        for segment in done {
            std::fs::remove_file(&segment.path)?;
            self.shared.bytes.fetch_sub(segment.len, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Bytes appended and not yet deleted (stored segments are deleted whole).
    pub fn pending_bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Whether records wait after the cursor.
    pub fn has_unread(&self) -> bool {
        self.shared.segments.lock().iter().any(|s| s.id > self.at.0 || (s.id == self.at.0 && s.len > self.at.1))
    }

    /// Bytes of records after the cursor.
    pub fn unread_bytes(&self) -> u64 {
        self.shared
            .segments
            .lock()
            .iter()
            .map(|s| match s.id.cmp(&self.at.0) {
                std::cmp::Ordering::Less => 0,
                std::cmp::Ordering::Equal => s.len.saturating_sub(self.at.1),
                std::cmp::Ordering::Greater => s.len,
            })
            .sum()
    }

    /// Whether the appender (the engine) has gone: no more appends will come.
    pub fn appender_gone(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Whether the appender is gone and nothing waits after the cursor.
    pub fn finished(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire) && !self.has_unread()
    }

    /// Waits for the next append (or the appender's end).
    pub async fn appended(&self) {
        self.shared.appended.notified().await;
    }

    /// Files with appends not yet forced to disk (group commit: the caller syncs
    /// them together, off the hot path).
    pub fn take_unsynced(&self) -> Vec<Arc<File>> {
        std::mem::take(&mut *self.shared.unsynced.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u64) -> Vec<Event> {
        (1..=n)
            .map(|i| {
                let payload = match i % 3 {
                    0 => Payload::Quote(Quote { bid: Price(1), bid_size: Size(2), ask: Price(3), ask_size: Size(4) }),
                    1 => Payload::Trade(Trade { price: Price(-7), size: Size(9), side: Side::Sell, trade_id: i }),
                    _ => Payload::BookReset(BookDelta { bids: vec![(Price(5), Size(6))], asks: vec![] }),
                };
                Event {
                    instrument: InstrumentId(3),
                    seq: i,
                    ts_event: i * 10,
                    ts_recv: i * 11,
                    ts_send: i * 12,
                    payload,
                }
            })
            .collect()
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        encode_record(&mut buf, &sample(10));
        let Decoded::Record { events, len } = decode_record(&buf) else { panic!("not a record") };
        assert_eq!(events, sample(10));
        assert_eq!(len, buf.len());
    }

    #[test]
    fn torn_and_damaged_records_are_detected() {
        let mut buf = Vec::new();
        encode_record(&mut buf, &sample(4));
        for cut in 0..buf.len() {
            assert_eq!(decode_record(&buf[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
        for flip in 0..buf.len() {
            let mut bad = buf.clone();
            bad[flip] ^= 0x40;
            assert!(!matches!(decode_record(&bad), Decoded::Record { .. }), "flip at {flip} went unnoticed");
        }
    }

    fn config(cap_bytes: u64, segment_bytes: u64) -> JournalConfig {
        JournalConfig { cap_bytes, segment_bytes }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tickwire-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn appends_are_read_in_order_across_segments_and_deleted_once_stored() {
        let dir = temp_dir("segments");
        let (mut appender, mut reader, leftovers) = open(&dir, config(1 << 20, 600)).unwrap();
        assert_eq!(leftovers.events, 0);
        for n in [5, 3, 4, 6] {
            assert!(appender.append(&sample(n), |id| id.0).unwrap() > 0);
        }
        assert!(reader.take_unsynced().len() >= 2, "each segment appended to is synced");
        let mut seen = Vec::new();
        while reader.has_unread() {
            let batch = reader.read(4).unwrap();
            assert!(!batch.events.is_empty());
            seen.extend(batch.events.iter().map(|e| e.seq));
            reader.consumed(batch.next).unwrap();
        }
        assert_eq!(
            seen,
            [(1..=5).collect::<Vec<_>>(), (1..=3).collect(), (1..=4).collect(), (1..=6).collect()].concat()
        );
        let files = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("wal".as_ref()))
            .count();
        assert_eq!(files, 1, "stored segments are deleted; the one being appended to stays");
        assert!(!reader.finished());
        drop(appender);
        assert!(reader.finished(), "appender gone and everything read");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_new_process_reads_what_the_last_left_and_skips_a_torn_tail() {
        let dir = temp_dir("leftovers");
        let (mut appender, reader, _) = open(&dir, config(1 << 20, 1 << 20)).unwrap();
        appender.append(&sample(6), |_| 9).unwrap();
        assert!(open(&dir, config(1 << 20, 1 << 20)).is_err(), "one process per journal");
        drop((appender, reader));
        // A crash mid-append leaves part of a record.
        let mut torn = Vec::new();
        encode_record(&mut torn, &sample(2));
        let segment = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension() == Some("wal".as_ref()))
            .unwrap();
        std::fs::OpenOptions::new().append(true).open(&segment).unwrap().write_all(&torn[..20]).unwrap();

        let (_appender, mut reader, leftovers) = open(&dir, config(1 << 20, 1 << 20)).unwrap();
        assert_eq!(leftovers.events, 6);
        assert_eq!(leftovers.heads[&(9, crate::model::Channel::Trades)], 4, "trades are every third event from 1");
        let batch = reader.read(100).unwrap();
        assert_eq!(batch.events.len(), 6);
        assert!(batch.events.iter().all(|e| e.instrument == InstrumentId(9)), "store ids are written");
        assert_eq!(batch.skipped, 20);
        reader.consumed(batch.next).unwrap();
        assert!(!segment.exists(), "the old segment is deleted once stored");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_cap_refuses_a_record_whole() {
        let dir = temp_dir("cap");
        let (mut appender, reader, _) = open(&dir, config(100, 1 << 20)).unwrap();
        assert!(matches!(appender.append(&sample(50), |id| id.0), Err(AppendError::Full(100))));
        assert!(!reader.has_unread());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
