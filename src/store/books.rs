//! Books at a point in time: the history writer stores each instrument's full
//! book now and then (`book_snapshots`), and [`Store::book_at`] rebuilds the book
//! as it stood at any time from the nearest snapshot (or a later reset) and the
//! book events after it. Replay starts and seeks with it.
//!
//! When a snapshot is stored: after an instrument's book event once
//! [`SNAPSHOT_EVERY_EVENTS`] book events or [`SNAPSHOT_EVERY_NS`] of exchange time
//! have passed since its last snapshot or reset, whichever comes first. So a
//! rebuild reads at most that many book events (feeds send resets only at connect
//! and resync, so a rebuild from the last reset alone would be unbounded). The
//! writer folds the events it stores into [`BookTracker`]: its work per book event
//! is one delta applied to an in-memory book, off the engine's path.
//!
//! A book is known only from a reset on, and stays known while its sequences are
//! contiguous: a hole (events lost to a full journal) or a delta the book cannot
//! take makes it unknown until the next reset. Unknown books are never stored or
//! served.

use rustc_hash::FxHashMap;
use sqlx::{AssertSqlSafe, Row};

use super::reader::decode_event;
use super::rows::{COLUMNS, pack_levels, unpack_levels};
use super::{Backend, Store, StoreError, on_pool};
use crate::book::L2Book;
use crate::model::{Channel, Event, Nanos, Payload};

/// Book events of one instrument between two stored snapshots, at most.
pub const SNAPSHOT_EVERY_EVENTS: u64 = 1_000;
/// Exchange time between two stored snapshots of one instrument, at most (ns).
pub const SNAPSHOT_EVERY_NS: Nanos = 10_000_000_000;

/// The full book of one instrument after its book event `seq`, with that event's clocks.
#[derive(Debug, Clone, Default)]
pub struct StoredBook {
    pub seq: u64,
    pub ts_event: Nanos,
    pub ts_recv: Nanos,
    pub ts_send: Nanos,
    pub book: L2Book,
}

/// Folds book events of one instrument, in sequence order, into its book.
#[derive(Debug, Clone, Default)]
pub struct BookFold {
    /// `None` until a reset, and after a hole or a delta the book refused.
    pub book: Option<StoredBook>,
}

impl BookFold {
    /// Applies one event (others than book events are ignored).
    pub fn apply(&mut self, event: &Event) {
        let stamp = |book: L2Book| StoredBook {
            seq: event.seq,
            ts_event: event.ts_event,
            ts_recv: event.ts_recv,
            ts_send: event.ts_send,
            book,
        };
        match &event.payload {
            Payload::BookReset(levels) => {
                let mut book = L2Book::default();
                self.book = book.apply(levels).ok().map(|()| stamp(book));
            }
            Payload::Book(delta) => {
                self.book = self.book.take().filter(|known| known.seq + 1 == event.seq).and_then(|mut known| {
                    known.book.apply(delta).ok()?;
                    Some(stamp(known.book))
                });
            }
            Payload::Quote(_) | Payload::Trade(_) | Payload::Candle(_) => {}
        }
    }
}

/// The writer's books (store instrument ids) and when each is due to be stored.
#[derive(Debug, Default)]
pub struct BookTracker {
    books: FxHashMap<u32, Tracked>,
}

#[derive(Debug, Default)]
struct Tracked {
    fold: BookFold,
    /// Book events since the last snapshot or reset.
    since: u64,
    /// Exchange time of the last snapshot or reset.
    at: Nanos,
}

impl BookTracker {
    /// Folds `events` (store ids, in journal order) and appends the snapshots due
    /// among them to `due`, as `BookReset` events holding the whole book at the
    /// sequence and clocks of the book event they follow.
    pub fn observe(&mut self, events: &[Event], due: &mut Vec<Event>) {
        for event in events.iter().filter(|e| e.channel() == Channel::Book) {
            let tracked = self.books.entry(event.instrument.0).or_default();
            tracked.fold.apply(event);
            let Some(known) = &tracked.fold.book else { continue };
            if matches!(event.payload, Payload::BookReset(_)) {
                // The reset is stored as it is: the rebuild starts from it.
                (tracked.since, tracked.at) = (0, event.ts_event);
                continue;
            }
            tracked.since += 1;
            if tracked.since >= SNAPSHOT_EVERY_EVENTS || event.ts_event.saturating_sub(tracked.at) >= SNAPSHOT_EVERY_NS
            {
                (tracked.since, tracked.at) = (0, event.ts_event);
                let mut snapshot =
                    Event::new(event.instrument, known.ts_event, known.ts_recv, Payload::BookReset(known.book.full()));
                snapshot.seq = known.seq;
                snapshot.ts_send = known.ts_send;
                due.push(snapshot);
            }
        }
    }
}

impl Store {
    /// Stores whole books made by [`BookTracker::observe`]; a row already stored
    /// is left as it is (a retried batch).
    pub async fn write_book_snapshots(&self, snapshots: &[Event]) -> Result<(), StoreError> {
        let sql = "INSERT INTO book_snapshots (instrument_id, seq, ts_event, ts_recv, ts_send, bids, asks) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING";
        for snapshot in snapshots {
            let Payload::BookReset(levels) = &snapshot.payload else { continue };
            on_pool!(self, pool => {
                sqlx::query(sql)
                    .bind(snapshot.instrument.0 as i32)
                    .bind(snapshot.seq as i64)
                    .bind(snapshot.ts_event as i64)
                    .bind(snapshot.ts_recv as i64)
                    .bind(snapshot.ts_send as i64)
                    .bind(pack_levels(&levels.bids))
                    .bind(pack_levels(&levels.asks))
                    .execute(pool)
                    .await?;
            });
        }
        Ok(())
    }

    /// The book of one instrument (store id) as it stood just before exchange time
    /// `at`: every book event with `ts_event < at` applied. `None` when the store
    /// holds no reset of it before `at`, or the book is unknown there (see the
    /// module doc).
    pub async fn book_at(&self, store_id: i64, at: Nanos) -> Result<Option<StoredBook>, StoreError> {
        let corrupt = |detail: &str| StoreError::Corrupt { table: "book_snapshots", detail: detail.to_owned() };
        let snapshot_sql = "SELECT seq, ts_event, ts_recv, ts_send, bids, asks FROM book_snapshots \
                            WHERE instrument_id = $1 AND ts_event < $2 ORDER BY ts_event DESC, seq DESC LIMIT 1";
        let mut fold = BookFold::default();
        on_pool!(self, pool => {
            let row = sqlx::query(snapshot_sql).bind(store_id as i32).bind(at as i64).fetch_optional(pool).await?;
            if let Some(row) = row {
                let int = |i: usize| row.try_get::<i64, _>(i).map(|v| v as u64);
                let (bids, asks): (Vec<u8>, Vec<u8>) = (row.try_get(4)?, row.try_get(5)?);
                let (Some(bids), Some(asks)) = (unpack_levels(&bids), unpack_levels(&asks)) else {
                    return Err(corrupt("book levels are not whole (price, size) pairs"));
                };
                let mut book = L2Book::default();
                book.apply(&crate::model::BookDelta { bids, asks }).map_err(|e| corrupt(&e.to_string()))?;
                fold.book = Some(StoredBook { seq: int(0)?, ts_event: int(1)?, ts_recv: int(2)?, ts_send: int(3)?, book });
            }
        });
        let (after_ts, after_seq) = fold.book.as_ref().map_or((-1, -1), |b| (b.ts_event as i64, b.seq as i64));
        let columns = COLUMNS[Channel::Book.index()];
        // A reset after the snapshot starts the book afresh; without a snapshot
        // (history stored before snapshots were kept) this is the one scan back.
        let reset_sql = format!(
            "SELECT {columns} FROM book_events WHERE instrument_id = $1 AND reset AND (ts_event, seq) > ($2, $3) \
             AND ts_event < $4 ORDER BY ts_event DESC, seq DESC LIMIT 1"
        );
        let events_sql = format!(
            "SELECT {columns} FROM book_events WHERE instrument_id = $1 AND (ts_event, seq) > ($2, $3) \
             AND ts_event < $4 ORDER BY ts_event, seq"
        );
        on_pool!(self, pool => {
            let reset = sqlx::query(AssertSqlSafe(reset_sql))
                .bind(store_id as i32)
                .bind(after_ts)
                .bind(after_seq)
                .bind(at as i64)
                .fetch_optional(pool)
                .await?;
            let (after_ts, after_seq) = match reset {
                Some(row) => {
                    let reset = decode_event(Channel::Book, &row)?;
                    fold.apply(&reset);
                    (reset.ts_event as i64, reset.seq as i64)
                }
                None if fold.book.is_none() => return Ok(None),
                None => (after_ts, after_seq),
            };
            let rows = sqlx::query(AssertSqlSafe(events_sql))
                .bind(store_id as i32)
                .bind(after_ts)
                .bind(after_seq)
                .bind(at as i64)
                .fetch_all(pool)
                .await?;
            for row in &rows {
                fold.apply(&decode_event(Channel::Book, row)?);
            }
        });
        Ok(fold.book)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BookDelta, InstrumentId, Price, Size};

    fn book_event(seq: u64, ts: Nanos, payload: Payload) -> Event {
        let mut event = Event::new(InstrumentId(3), ts, ts, payload);
        event.seq = seq;
        event
    }

    fn delta(bid: i64, size: i64) -> Payload {
        Payload::Book(BookDelta { bids: vec![(Price(bid), Size(size))], asks: vec![] })
    }

    #[test]
    fn folds_from_a_reset_and_forgets_the_book_at_a_hole() {
        let mut fold = BookFold::default();
        fold.apply(&book_event(1, 10, delta(5, 1)));
        assert!(fold.book.is_none(), "no book before a reset");
        let reset = BookDelta { bids: vec![(Price(5), Size(1))], asks: vec![(Price(7), Size(2))] };
        fold.apply(&book_event(2, 11, Payload::BookReset(reset)));
        fold.apply(&book_event(3, 12, delta(6, 4)));
        let known = fold.book.clone().expect("known after the reset");
        assert_eq!((known.seq, known.ts_event), (3, 12));
        assert_eq!(known.book.full().bids, vec![(Price(6), Size(4)), (Price(5), Size(1))]);
        fold.apply(&book_event(5, 13, delta(6, 0)));
        assert!(fold.book.is_none(), "sequence 4 is missing: the book is unknown");
    }

    #[test]
    fn snapshots_are_due_every_so_many_events_or_seconds() {
        let mut tracker = BookTracker::default();
        let mut events = vec![book_event(1, 0, Payload::BookReset(BookDelta::default()))];
        for seq in 2..=SNAPSHOT_EVERY_EVENTS + 1 {
            events.push(book_event(seq, seq, delta(1 + (seq % 7) as i64, seq as i64)));
        }
        let mut due = Vec::new();
        tracker.observe(&events, &mut due);
        assert_eq!(due.len(), 1, "one snapshot after {SNAPSHOT_EVERY_EVENTS} deltas");
        assert_eq!(due[0].seq, SNAPSHOT_EVERY_EVENTS + 1);
        let mut fold = BookFold::default();
        for event in &events {
            fold.apply(event);
        }
        assert_eq!(due[0].payload, Payload::BookReset(fold.book.unwrap().book.full()));
        // Ten seconds later, one delta is enough.
        due.clear();
        let late = SNAPSHOT_EVERY_EVENTS + 1 + SNAPSHOT_EVERY_NS;
        tracker.observe(&[book_event(SNAPSHOT_EVERY_EVENTS + 2, late, delta(2, 1))], &mut due);
        assert_eq!(due.len(), 1);
        // An unknown book is never stored.
        due.clear();
        tracker.observe(&[book_event(SNAPSHOT_EVERY_EVENTS + 9, 2 * late, delta(2, 1))], &mut due);
        assert!(due.is_empty());
    }
}
