//! Stored history as a feed: `--feed replay:FROM..TO@SPEED` drives the whole
//! pipeline (engine, fan-out, every client) from the store, as if it were live.
//!
//! Events keep their exchange time (`ts_event`); `ts_recv` is when the feed hands
//! them on, and the engine assigns fresh sequences and `ts_send` as for any feed.
//! When the engine falls behind, `send` waits (as for the simulator); the store
//! reader ahead of it waits in turn on its bounded channel.
//!
//! The engine's books start as they stood at `FROM`: a reset holding each stored
//! book goes first. An instrument the store has no book of before `FROM` gets no
//! book deltas until a stored reset comes (see [`crate::replay::ReplayBooks`]).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{EventBatch, FeedHealth, FeedState};
use crate::model::{Channel, Event, Payload, now_nanos};
use crate::replay::{Deliver, Pacer, ReplayBooks, ReplayRange, books_at, spawn_reader};
use crate::store::{Store, StoreIds};

/// Plays `range` of every stored instrument and channel into `tx`, then stops.
pub async fn run(
    store: Store,
    ids: Arc<StoreIds>,
    store_ids: Vec<i64>,
    range: ReplayRange,
    tx: mpsc::Sender<EventBatch>,
    health: Arc<FeedHealth>,
    cancel: CancellationToken,
) {
    let streams: Vec<(i64, Channel)> =
        store_ids.iter().flat_map(|&id| Channel::STORED.into_iter().map(move |c| (id, c))).collect();
    let mut books = ReplayBooks::default();
    let starts = match books_at(&store, &ids, &streams, range.from).await {
        Ok(starts) => starts,
        Err(error) => {
            tracing::error!(%error, "replay feed cannot read the books at its start");
            return;
        }
    };
    let ts_recv = now_nanos();
    let mut resets: EventBatch = Vec::new();
    for (id, book) in starts {
        books.started(id, book.is_some());
        if let Some(book) = book {
            resets.push(Event::new(id, book.ts_event, ts_recv, Payload::BookReset(book.book.full())));
        }
    }
    let (mut rx, reader) = spawn_reader(store, ids, streams, range.from, range.to);
    health.set_state(FeedState::Live);
    if !resets.is_empty() {
        tokio::select! {
            _ = cancel.cancelled() => {}
            sent = tx.send(resets) => if sent.is_err() { tracing::debug!("replay feed: the engine stopped") },
        }
    }
    let mut pacer: Option<Pacer> = None;
    'chunks: loop {
        let chunk = tokio::select! {
            _ = cancel.cancelled() => break,
            chunk = rx.recv() => chunk,
        };
        let events = match chunk {
            None => break,
            Some(Ok(events)) => events,
            Some(Err(error)) => {
                tracing::error!(%error, "replay feed cannot read the store");
                break;
            }
        };
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let first_ts = events.peek().map_or(0, |e| e.ts_event);
            let pacer = pacer.get_or_insert_with(|| Pacer::new(range.speed, first_ts, tokio::time::Instant::now()));
            if let Some(due) = pacer.due(first_ts) {
                tokio::select! {
                    _ = cancel.cancelled() => break 'chunks,
                    () = tokio::time::sleep_until(due) => {}
                }
            }
            // Everything due by now goes in one batch.
            let now = tokio::time::Instant::now();
            let mut batch: EventBatch = Vec::with_capacity(256);
            let ts_recv = now_nanos();
            while let Some(event) = events.next_if(|e| pacer.due(e.ts_event).is_none_or(|due| due <= now)) {
                let mut event = event;
                if let Deliver::Withhold = books.deliver(&event) {
                    continue;
                }
                event.seq = 0;
                event.ts_send = 0;
                event.ts_recv = ts_recv;
                batch.push(event);
                if batch.len() >= 4096 {
                    break;
                }
            }
            health.record_messages(batch.len() as u64, ts_recv);
            tokio::select! {
                _ = cancel.cancelled() => break 'chunks,
                sent = tx.send(batch) => if sent.is_err() { break 'chunks },
            }
        }
    }
    reader.abort();
    health.set_state(FeedState::Stopped);
    tracing::info!("replay feed finished");
}
