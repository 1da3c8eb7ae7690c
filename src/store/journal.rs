//! The writer's spill file: events the database could not take yet, on local disk.
//!
//! One append-only file of records; each record holds one batch of events:
//! ```text
//! magic "TWJ1" (4) | payload length u32 LE (4) | CRC-32 of the payload u32 LE (4) | payload
//! payload: count u32, then per event: instrument u32 (store id), seq u64, ts_event u64,
//!          ts_recv u64, ts_send u64, kind u8, kind's fields (all little-endian)
//! ```
//! The writer appends while the database is away and reads records back in order
//! once it returns; when everything has been read and written, the file is
//! truncated. A record whose header or checksum does not hold (a torn tail after
//! a crash) ends the readable part: it is counted and skipped. A new process
//! starts by reading whatever the last one left. Encoding and decoding are pure
//! functions over byte slices; [`Journal`] is the thin file shell.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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
    let start = out.len();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0; 8]);
    let payload_start = out.len();
    // Candles are derived, never stored (the writer's tap drops them already).
    let stored = || events.iter().filter(|e| e.channel().is_stored());
    out.extend_from_slice(&(stored().count() as u32).to_le_bytes());
    for event in stored() {
        out.extend_from_slice(&event.instrument.0.to_le_bytes());
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

/// The journal file: append at the end, read from a cursor, truncate when drained.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Bytes in the file.
    len: u64,
    /// Where the next unread record starts.
    read_at: u64,
    /// The file may not grow past this many bytes.
    cap: u64,
    buf: Vec<u8>,
    /// Appended since the last [`Journal::take_unsynced`]: not yet forced to disk.
    unsynced: bool,
}

/// What [`Journal::read`] returned.
#[derive(Debug, Default)]
pub struct ReadBatch {
    pub events: Vec<Event>,
    /// The read cursor after these events; pass to [`Journal::consumed`] once
    /// they are safely in the database.
    pub next: u64,
    /// Bytes skipped as corrupt or torn.
    pub skipped: u64,
}

impl Journal {
    /// Opens (creating) `dir/journal.bin`; whatever a previous process left in it
    /// is unread.
    pub fn open(dir: &Path, cap: u64) -> std::io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("journal.bin");
        let file = OpenOptions::new().create(true).read(true).append(true).open(&path)?;
        // One writer per journal: a second process would interleave records and
        // truncate what the first has not written yet.
        file.try_lock().map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::WouldBlock, "the journal is in use by another tickwire process")
        })?;
        let len = file.metadata()?.len();
        Ok(Journal { path, file, len, read_at: 0, cap, buf: Vec::new(), unsynced: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written and not yet consumed.
    pub fn pending_bytes(&self) -> u64 {
        self.len - self.read_at
    }

    pub fn is_empty(&self) -> bool {
        self.pending_bytes() == 0
    }

    /// Appends `events` as one record. Returns the bytes written, or `Ok(None)`
    /// when the record would take the file past its cap (nothing is written).
    pub fn append(&mut self, events: &[Event]) -> std::io::Result<Option<u64>> {
        self.buf.clear();
        encode_record(&mut self.buf, events);
        let size = self.buf.len() as u64;
        if self.len + size > self.cap {
            return Ok(None);
        }
        self.file.write_all(&self.buf)?;
        self.len += size;
        self.unsynced = true;
        Ok(Some(size))
    }

    /// Reads records from the cursor until about `max_events` events. The cursor
    /// does not move until [`Journal::consumed`].
    pub fn read(&self, max_events: usize) -> std::io::Result<ReadBatch> {
        let mut batch = ReadBatch { next: self.read_at, ..ReadBatch::default() };
        let mut header = [0u8; HEADER];
        while batch.next < self.len && batch.events.len() < max_events {
            let left = (self.len - batch.next) as usize;
            let head_len = left.min(HEADER);
            self.file.read_exact_at(&mut header[..head_len], batch.next)?;
            let claimed = if head_len == HEADER && &header[..4] == MAGIC {
                u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize
            } else {
                0
            };
            let want = (HEADER + claimed.min(MAX_PAYLOAD)).min(left);
            let mut record = vec![0u8; want];
            self.file.read_exact_at(&mut record, batch.next)?;
            match decode_record(&record) {
                Decoded::Record { events, len } => {
                    batch.events.extend(events);
                    batch.next += len as u64;
                }
                Decoded::Incomplete | Decoded::Corrupt => {
                    // A torn or damaged tail: nothing after it can be trusted.
                    batch.skipped = self.len - batch.next;
                    batch.next = self.len;
                }
            }
        }
        Ok(batch)
    }

    /// Marks everything before `next` as written to the database; truncates the
    /// file once nothing is left.
    pub fn consumed(&mut self, next: u64) -> std::io::Result<()> {
        self.read_at = next.min(self.len);
        if self.read_at == self.len {
            self.file.set_len(0)?;
            self.len = 0;
            self.read_at = 0;
        }
        Ok(())
    }

    /// Forces what was appended to disk.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.unsynced = false;
        self.file.sync_data()
    }

    /// A handle to force what was appended since the last call to disk, or `None`
    /// when nothing was. The writer syncs through it off its own task (group
    /// commit: one `fdatasync` per housekeeping tick, however many appends).
    pub fn take_unsynced(&mut self) -> Option<std::io::Result<File>> {
        std::mem::take(&mut self.unsynced).then(|| self.file.try_clone())
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

    #[test]
    fn file_appends_reads_truncates_and_survives_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("tickwire-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut journal = Journal::open(&dir, 1 << 20).unwrap();
        assert!(journal.take_unsynced().is_none(), "nothing appended, nothing to sync");
        assert!(journal.append(&sample(5)).unwrap().is_some());
        assert!(journal.append(&sample(3)).unwrap().is_some());
        journal.take_unsynced().expect("two appends, one sync").unwrap().sync_data().unwrap();
        assert!(journal.take_unsynced().is_none());
        let batch = journal.read(4).unwrap();
        assert_eq!(batch.events.len(), 5, "whole records only");
        journal.consumed(batch.next).unwrap();
        let batch = journal.read(100).unwrap();
        assert_eq!(batch.events, sample(3));
        journal.consumed(batch.next).unwrap();
        assert!(journal.is_empty());
        assert_eq!(std::fs::metadata(journal.path()).unwrap().len(), 0, "drained journal is truncated");

        // A crash mid-append: a reopened journal reads the whole records and skips the tail.
        journal.append(&sample(6)).unwrap();
        let mut torn = Vec::new();
        encode_record(&mut torn, &sample(2));
        std::fs::OpenOptions::new().append(true).open(journal.path()).unwrap().write_all(&torn[..20]).unwrap();
        drop(journal);
        let journal = Journal::open(&dir, 1 << 20).unwrap();
        let batch = journal.read(100).unwrap();
        assert_eq!(batch.events, sample(6));
        assert_eq!(batch.skipped, 20);

        // The cap refuses a record whole.
        let mut small = Journal::open(&dir.join("small"), 100).unwrap();
        assert_eq!(small.append(&sample(50)).unwrap(), None);
        assert!(small.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
