//! Reading history back: pages for the REST API, candles, the merged stream
//! replay needs, and `read_since` for resume. Events read here carry the store's
//! instrument id (see the module doc of [`super`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use futures_util::TryStreamExt;
use sqlx::{AssertSqlSafe, Row};

use super::rows::{COLUMNS, book_payload, side_from_code};
use sqlx::postgres::PgPoolCopyExt;

use super::{Backend, EVENT_TABLES, GapRecord, Store, StoreError, on_pool, pg_copy, stored_index};
use crate::model::{Candle, CandleInterval, Channel, Event, InstrumentId, Nanos, Payload, Price, Quote, Size, Trade};

/// Where a page of history ends: the last row's (ts_event, seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    pub ts_event: Nanos,
    pub seq: u64,
}

impl PageCursor {
    /// The opaque text clients send back: `<ts_event>_<seq>`.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.ts_event, self.seq)
    }

    pub fn decode(text: &str) -> Option<PageCursor> {
        let (ts, seq) = text.split_once('_')?;
        Some(PageCursor { ts_event: ts.parse().ok()?, seq: seq.parse().ok()? })
    }
}

pub(crate) fn decode_event<R: Row>(channel: Channel, row: &R) -> Result<Event, StoreError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> i16: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r [u8]: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let table = EVENT_TABLES[stored_index(channel)?];
    let instrument: i32 = row.try_get(0)?;
    let int = |i: usize| row.try_get::<i64, _>(i);
    let payload = match channel {
        Channel::Quotes => Payload::Quote(Quote {
            bid: Price(int(5)?),
            bid_size: Size(int(6)?),
            ask: Price(int(7)?),
            ask_size: Size(int(8)?),
        }),
        Channel::Trades => Payload::Trade(Trade {
            price: Price(int(5)?),
            size: Size(int(6)?),
            side: side_from_code(i64::from(row.try_get::<i16, _>(7)?)),
            trade_id: int(8)? as u64,
        }),
        Channel::Book => {
            let reset: bool = row.try_get(5)?;
            let bids: &[u8] = row.try_get(6)?;
            let asks: &[u8] = row.try_get(7)?;
            book_payload(reset, bids, asks).ok_or_else(|| StoreError::Corrupt {
                table,
                detail: "book levels are not whole (price, size) pairs".into(),
            })?
        }
        other => return Err(StoreError::NotStored(other.as_str())),
    };
    Ok(Event {
        instrument: InstrumentId(instrument as u32),
        seq: int(1)? as u64,
        ts_event: int(2)? as u64,
        ts_recv: int(3)? as u64,
        ts_send: int(4)? as u64,
        payload,
    })
}

/// Folds trades, in time order, into the candles of one interval (aligned to
/// the epoch), the same [`Candle`]s the engine streams live. Buckets without
/// trades are left out.
#[derive(Debug)]
pub struct CandleBuilder {
    interval: CandleInterval,
    candles: Vec<Candle>,
}

impl CandleBuilder {
    pub fn new(interval: CandleInterval) -> Self {
        Self { interval, candles: Vec::new() }
    }

    pub fn push(&mut self, ts_event: Nanos, price: Price, size: Size) {
        match self.candles.last_mut() {
            Some(c) if c.start == self.interval.bucket(ts_event) => c.add(price, size),
            _ => self.candles.push(Candle::open(self.interval, ts_event, price, size)),
        }
    }

    /// The candles, each marked closed when its bucket ended by `now`.
    pub fn finish(mut self, now: Nanos) -> Vec<Candle> {
        for candle in &mut self.candles {
            candle.closed = candle.end() <= now;
        }
        self.candles
    }
}

impl Store {
    /// Up to `limit` events of one channel and instrument with `from <= ts_event < to`,
    /// after `after` (exclusive), in (ts_event, seq) order.
    pub async fn history(
        &self,
        channel: Channel,
        store_id: i64,
        from: Nanos,
        to: Nanos,
        after: Option<PageCursor>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let (after_ts, after_seq) = match after {
            Some(c) => (c.ts_event as i64, c.seq as i64),
            None => (from as i64, -1),
        };
        let table = stored_index(channel)?;
        if let Backend::Postgres(pool) = &self.backend {
            // Binary COPY: no per-column decoding in sqlx (see `pg_copy`). COPY takes
            // no bind parameters; every value here is an integer we format.
            let sql = format!(
                "COPY (SELECT {} FROM {} WHERE instrument_id = {store_id} AND (ts_event, seq) > ({after_ts}, {after_seq}) \
                 AND ts_event >= {} AND ts_event < {} ORDER BY ts_event, seq LIMIT {limit}) TO STDOUT (FORMAT binary)",
                COLUMNS[table], EVENT_TABLES[table], from as i64, to as i64
            );
            return copied_events(pool.copy_out_raw(&sql).await?, channel, limit).await;
        }
        let sql = format!(
            "SELECT {} FROM {} WHERE instrument_id = $1 AND (ts_event, seq) > ($2, $3) AND ts_event >= $4 AND ts_event < $5 \
             ORDER BY ts_event, seq LIMIT $6",
            COLUMNS[table], EVENT_TABLES[table]
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(store_id)
                .bind(after_ts)
                .bind(after_seq)
                .bind(from as i64)
                .bind(to as i64)
                .bind(limit as i64)
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| decode_event(channel, r)).collect()
        })
    }

    /// Up to `limit` events of one channel for several instruments with
    /// `from <= ts_event < to`, after `after` (exclusive), in (ts_event, instrument,
    /// seq) order: one time-ordered read for a whole replay (PostgreSQL, along the
    /// `*_time` index). Other backends read one instrument at a time ([`Self::history`]).
    pub async fn history_across(
        &self,
        channel: Channel,
        store_ids: &[i64],
        from: Nanos,
        to: Nanos,
        after: Option<MergeCursor>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let Backend::Postgres(pool) = &self.backend else {
            return Err(StoreError::Corrupt { table: "history", detail: "time-ordered reads need PostgreSQL".into() });
        };
        let table = stored_index(channel)?;
        let ids: Vec<String> = store_ids.iter().map(i64::to_string).collect();
        let after = after.map_or(String::new(), |c| {
            format!("AND (ts_event, instrument_id, seq) > ({}, {}, {}) ", c.ts_event as i64, c.instrument, c.seq as i64)
        });
        // COPY takes no bind parameters; every value here is an integer we format.
        let sql = format!(
            "COPY (SELECT {} FROM {} WHERE instrument_id IN ({}) {after}AND ts_event >= {} AND ts_event < {} \
             ORDER BY ts_event, instrument_id, seq LIMIT {limit}) TO STDOUT (FORMAT binary)",
            COLUMNS[table],
            EVENT_TABLES[table],
            ids.join(","),
            from as i64,
            to as i64
        );
        // Pin the plan to the time index: before the first ANALYZE (a replay of
        // what was just written) the planner sorts the whole range for every page,
        // ~5x slower. `SET LOCAL` lasts for this transaction only.
        let mut tx = pool.begin().await?;
        sqlx::raw_sql("SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off").execute(&mut *tx).await?;
        let events = copied_events(tx.copy_out_raw(&sql).await?, channel, limit).await?;
        tx.commit().await?;
        Ok(events)
    }

    /// Events of one instrument and channel with a sequence after `after_seq`, in
    /// sequence order, at most `limit`: what a resuming subscriber missed when the
    /// recent-history ring no longer holds it. Sequences continue across runs
    /// from `line_started` on (see [`Store::sequence_line_started`]); rows sent
    /// before it belong to runs whose sequences restarted and are never read here.
    pub async fn read_since(
        &self,
        store_id: i64,
        channel: Channel,
        after_seq: u64,
        line_started: Nanos,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let table = stored_index(channel)?;
        let sql = format!(
            "SELECT {} FROM {} WHERE instrument_id = $1 AND ts_send >= $2 AND seq > $3 ORDER BY seq LIMIT $4",
            COLUMNS[table], EVENT_TABLES[table]
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(store_id)
                .bind(line_started as i64)
                .bind(after_seq as i64)
                .bind(limit as i64)
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| decode_event(channel, r)).collect()
        })
    }

    /// The first sequence of one stream stored at or after exchange time `at`
    /// (in this store's sequence line, see [`Self::read_since`]).
    pub async fn first_seq_at(
        &self,
        store_id: i64,
        channel: Channel,
        at: Nanos,
        line_started: Nanos,
    ) -> Result<Option<u64>, StoreError> {
        let table = EVENT_TABLES[stored_index(channel)?];
        let sql = format!("SELECT MIN(seq) FROM {table} WHERE instrument_id = $1 AND ts_event >= $2 AND ts_send >= $3");
        let first: Option<i64> = on_pool!(self, pool => {
            sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(store_id)
                .bind(at as i64)
                .bind(line_started as i64)
                .fetch_one(pool)
                .await?
        });
        Ok(first.map(|s| s.max(0) as u64))
    }

    /// OHLCV candles of `interval` from the trades of one instrument in `[from, to)`.
    pub async fn candles(
        &self,
        store_id: i64,
        from: Nanos,
        to: Nanos,
        interval: CandleInterval,
    ) -> Result<Vec<Candle>, StoreError> {
        let sql = "SELECT ts_event, price, size FROM trades WHERE instrument_id = $1 AND ts_event >= $2 AND ts_event < $3 \
                   ORDER BY ts_event, seq";
        let mut builder = CandleBuilder::new(interval);
        on_pool!(self, pool => {
            let mut rows = sqlx::query(sql).bind(store_id).bind(from as i64).bind(to as i64).fetch(pool);
            while let Some(row) = rows.try_next().await? {
                let ts: i64 = row.try_get(0)?;
                builder.push(ts as u64, Price(row.try_get(1)?), Size(row.try_get(2)?));
            }
        });
        Ok(builder.finish(crate::model::now_nanos()))
    }

    /// Gap records of the given instruments overlapping `[from, to)`, by `ts_from`.
    pub async fn gaps(&self, store_ids: &[i64], from: Nanos, to: Nanos) -> Result<Vec<GapRecord>, StoreError> {
        let sql = "SELECT instrument_id, channel, from_seq, to_seq, ts_from, ts_to, reason FROM gaps \
                   WHERE ts_to >= $1 AND ts_from < $2 ORDER BY ts_from";
        let rows: Vec<(i64, i16, i64, i64, i64, i64, String)> = on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(from as i64).bind(to as i64).fetch_all(pool).await?;
            rows.iter()
                .map(|r| Ok((i64::from(r.try_get::<i32, _>(0)?), r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?, r.try_get(6)?)))
                .collect::<Result<_, sqlx::Error>>()?
        });
        Ok(rows
            .into_iter()
            .filter(|r| store_ids.contains(&r.0))
            .filter_map(|(instrument, channel, from_seq, to_seq, ts_from, ts_to, reason)| {
                let channel = *Channel::STORED.get(channel as usize)?;
                let reason = match reason.as_str() {
                    "journal_full" => "journal_full",
                    "journal_error" => "journal_error",
                    "writer_queue_full" => "writer_queue_full",
                    _ => "store_gap",
                };
                Some(GapRecord {
                    instrument,
                    channel,
                    from_seq: from_seq as u64,
                    to_seq: to_seq as u64,
                    ts_from: ts_from as u64,
                    ts_to: ts_to as u64,
                    reason,
                })
            })
            .collect())
    }
}

/// Collects the output of one binary `COPY … TO STDOUT` of `channel`'s table and
/// decodes it (at most `limit` rows were asked for).
async fn copied_events(
    mut chunks: futures_util::stream::BoxStream<'_, sqlx::Result<bytes::Bytes>>,
    channel: Channel,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.try_next().await? {
        bytes.extend_from_slice(&chunk);
    }
    let table = EVENT_TABLES[stored_index(channel)?];
    let mut events = Vec::with_capacity(limit.min(1 << 16));
    pg_copy::decode(channel, &bytes, &mut events).map_err(|e| StoreError::Corrupt { table, detail: e.to_string() })?;
    Ok(events)
}

/// Order of events across symbols and channels: exchange time, then a fixed
/// tie-break (instrument, channel, sequence). Within one (instrument, channel) it
/// is sequence order; within one table it is the `*_time` index's order.
type MergeKey = (Nanos, u32, usize, u64);

fn merge_key(event: &Event) -> MergeKey {
    (event.ts_event, event.instrument.0, event.channel().index(), event.seq)
}

/// Where a time-ordered page of one table ends ([`Store::history_across`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeCursor {
    pub ts_event: Nanos,
    pub instrument: i64,
    pub seq: u64,
}

/// Page reads one merged history keeps in flight at most: enough to keep the
/// database's cores busy while the merge runs, few enough to leave the pool's
/// other connections to the writer and the REST API.
const READS_IN_FLIGHT: usize = 3;

type PageRead = tokio::task::JoinHandle<Result<Vec<Event>, StoreError>>;

/// One ordered source of the merge: a table read for several instruments at once
/// (PostgreSQL), or one instrument's rows of a table (SQLite).
struct Stream {
    channel: Channel,
    store_ids: Vec<i64>,
    buf: VecDeque<Event>,
    /// The next page, being read while the merge consumes this one.
    next: Option<PageRead>,
}

/// Stored events of several instruments and channels in `[from, to)`, merged into
/// one stream in exchange-time order: each stream is read in pages along an
/// index, the page after the current one read ahead of need (a few at once across
/// streams), and the pages merged with a heap.
pub struct MergedHistory {
    store: Store,
    streams: Vec<Stream>,
    heap: BinaryHeap<Reverse<(MergeKey, usize)>>,
    from: Nanos,
    to: Nanos,
    page: usize,
    reads: std::sync::Arc<tokio::sync::Semaphore>,
}

impl MergedHistory {
    /// `streams`: (store instrument id, channel) pairs.
    pub async fn open(
        store: Store,
        streams: &[(i64, Channel)],
        from: Nanos,
        to: Nanos,
        page: usize,
    ) -> Result<MergedHistory, StoreError> {
        let streams: Vec<Stream> = if store.is_postgres() {
            // One time-ordered read per table, for all the instruments asked of it.
            Channel::STORED
                .iter()
                .map(|&channel| Stream {
                    channel,
                    store_ids: streams.iter().filter(|s| s.1 == channel).map(|s| s.0).collect(),
                    buf: VecDeque::new(),
                    next: None,
                })
                .filter(|s| !s.store_ids.is_empty())
                .collect()
        } else {
            streams
                .iter()
                .map(|&(store_id, channel)| Stream {
                    channel,
                    store_ids: vec![store_id],
                    buf: VecDeque::new(),
                    next: None,
                })
                .collect()
        };
        let mut merged = MergedHistory {
            store,
            streams,
            heap: BinaryHeap::new(),
            from,
            to,
            page: page.max(1),
            reads: std::sync::Arc::new(tokio::sync::Semaphore::new(READS_IN_FLIGHT)),
        };
        for i in 0..merged.streams.len() {
            merged.streams[i].next = Some(merged.read_page(i, None));
        }
        for i in 0..merged.streams.len() {
            merged.refill(i).await?;
        }
        Ok(merged)
    }

    /// Starts reading the page of stream `i` after `after` (from the start: `None`).
    fn read_page(&self, i: usize, after: Option<MergeCursor>) -> PageRead {
        let (store, reads) = (self.store.clone(), self.reads.clone());
        let (channel, store_ids) = (self.streams[i].channel, self.streams[i].store_ids.clone());
        let (from, to, page) = (self.from, self.to, self.page);
        tokio::spawn(async move {
            let _permit = reads.acquire_owned().await.expect("the semaphore is never closed");
            if store.is_postgres() {
                store.history_across(channel, &store_ids, from, to, after, page).await
            } else {
                let after = after.map(|c| PageCursor { ts_event: c.ts_event, seq: c.seq });
                store.history(channel, store_ids[0], from, to, after, page).await
            }
        })
    }

    /// Takes stream `i`'s next page, once its buffer is empty, and reads ahead the
    /// one after it unless this page was the last.
    async fn refill(&mut self, i: usize) -> Result<(), StoreError> {
        if !self.streams[i].buf.is_empty() {
            return Ok(());
        }
        let Some(read) = self.streams[i].next.take() else {
            return Ok(()); // done
        };
        let events = read.await??;
        if events.len() == self.page {
            let last = events.last().map(|e| MergeCursor {
                ts_event: e.ts_event,
                instrument: i64::from(e.instrument.0),
                seq: e.seq,
            });
            self.streams[i].next = Some(self.read_page(i, last));
        }
        let stream = &mut self.streams[i];
        stream.buf.extend(events);
        if let Some(front) = stream.buf.front() {
            self.heap.push(Reverse((merge_key(front), i)));
        }
        Ok(())
    }

    /// Appends up to `max` next events to `out`; appends nothing at the end.
    pub async fn next_chunk(&mut self, max: usize, out: &mut Vec<Event>) -> Result<(), StoreError> {
        let target = out.len() + max;
        while out.len() < target {
            let Some(Reverse((_, i))) = self.heap.pop() else { break };
            let stream = &mut self.streams[i];
            let Some(event) = stream.buf.pop_front() else { continue };
            out.push(event);
            if let Some(front) = stream.buf.front() {
                self.heap.push(Reverse((merge_key(front), i)));
            } else {
                self.refill(i).await?;
            }
        }
        Ok(())
    }
}

impl Drop for MergedHistory {
    /// A replay that stops early (the client left) abandons its read-ahead.
    fn drop(&mut self) {
        for stream in &self.streams {
            if let Some(read) = &stream.next {
                read.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candles_bucket_trades_by_interval() {
        const S: u64 = 1_000_000_000;
        let mut b = CandleBuilder::new(CandleInterval::M1);
        for (ts, px, sz) in [(0, 10, 1), (30, 12, 2), (59, 9, 3), (120, 11, 4), (125, 13, 5)] {
            b.push(ts * S, Price(px), Size(sz));
        }
        let c = b.finish(130 * S);
        assert_eq!(c.len(), 2, "the empty minute is left out");
        let first = Candle {
            interval: CandleInterval::M1,
            start: 0,
            open: Price(10),
            high: Price(12),
            low: Price(9),
            close: Price(9),
            volume: 6,
            trades: 3,
            closed: true,
        };
        assert_eq!(c[0], first);
        assert_eq!((c[1].start, c[1].open, c[1].close, c[1].trades), (120 * S, Price(11), Price(13), 2));
        assert!(!c[1].closed, "its minute is not over at 130 s");
    }

    #[test]
    fn cursors_round_trip_and_refuse_junk() {
        let c = PageCursor { ts_event: 1_700_000_000_000_000_000, seq: 42 };
        assert_eq!(PageCursor::decode(&c.encode()), Some(c));
        for junk in ["", "abc", "1_", "_1", "1-2", "1_2_3", "-1_2"] {
            assert_eq!(PageCursor::decode(junk), None, "{junk}");
        }
    }
}
