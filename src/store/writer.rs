//! The history writer: every sequenced event into the store, off the hot path.
//!
//! Task model. The engine hands each processed feed batch to a [`HistoryTap`],
//! which `try_send`s it into a bounded channel and returns at once: the engine
//! never waits on storage. One writer task ([`run`]) owns everything after that:
//! - it takes batches off the channel into a memory buffer (at most
//!   `memory_events` events) and writes them in transactions of at most
//!   `batch_events` (PostgreSQL `COPY`, SQLite multi-row `INSERT`), one write in
//!   flight at a time while it keeps taking batches off the channel;
//! - when a write fails (database slow, down, restarting), the batch is kept and
//!   retried with exponential backoff (50 ms to 5 s, jittered), written
//!   idempotently (rows already stored are skipped), so an ambiguous commit never
//!   duplicates;
//! - when the memory buffer is full, batches spill to the on-disk [`Journal`]
//!   (checksummed records); once the database is back the journal is written
//!   out in order, then truncated. A journal left by a crashed process is
//!   written first by the next one;
//! - when even the journal is at its cap, the events are counted as lost and
//!   their sequence ranges written to the store as gap records, so replay and
//!   resume know of the hole. The same holds for the (rare) batch the tap could
//!   not queue because the channel was full.
//!
//! On shutdown (the tap dropped), the writer keeps writing for `drain_timeout`;
//! whatever is left then goes to the journal for the next start.
//!
//! Metrics: `tickwire_store_queue_depth` (events buffered in memory),
//! `tickwire_store_lag_ms` (age of the oldest event not yet written),
//! `tickwire_store_spilled_bytes` (journal bytes not yet written),
//! `tickwire_store_written_total`, `tickwire_store_lost_total{reason}`,
//! `tickwire_store_write_errors_total`, `tickwire_store_journal_sync_errors_total`.
//!
//! Durability: journal appends are forced to disk once per housekeeping tick
//! (250 ms, one `fdatasync` for all of them, on a blocking thread), so a machine
//! crash loses at most that much of what was spilled; a process crash loses
//! nothing spilled. Events still in the memory buffer are lost by either.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::RngExt;
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::journal::Journal;
use super::{GapRecord, Store, StoreError, StoreIds};
use crate::model::{Channel, Event, InstrumentId, Nanos, now_nanos};

/// Settings of the history writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Capacity of the engine → writer channel, in feed batches.
    pub queue_batches: usize,
    /// Most events per database transaction.
    pub batch_events: usize,
    /// Events buffered in memory before batches spill to the journal.
    pub memory_events: usize,
    pub journal_dir: PathBuf,
    /// The journal never grows past this many bytes; beyond, events are lost
    /// (counted, and recorded as gaps).
    pub journal_cap_bytes: u64,
    /// How long shutdown keeps writing before the rest goes to the journal.
    pub drain_timeout: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue_batches: 4096,
            batch_events: 50_000,
            memory_events: 500_000,
            journal_dir: PathBuf::from("data/journal"),
            journal_cap_bytes: 1 << 30,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters shared by the tap, the writer and `/v1/stats`.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Events committed to the database.
    pub written: AtomicU64,
    /// Events appended to the journal (in total).
    pub journaled: AtomicU64,
    /// Events written to the database from the journal (in total; a journal
    /// left by a previous process counts too).
    pub written_from_journal: AtomicU64,
    /// Journal bytes not yet written to the database.
    pub spilled_bytes: AtomicU64,
    /// Events buffered in memory (including a batch being retried).
    pub queued: AtomicU64,
    /// Events lost: the channel or the journal was full.
    pub lost: AtomicU64,
    /// `ts_send` of the oldest event not yet written; 0 when none.
    pub oldest_pending_ns: AtomicU64,
    /// Failed write attempts.
    pub write_errors: AtomicU64,
}

impl WriterStats {
    /// Age of the oldest event not yet in the database, in milliseconds.
    pub fn lag_ms(&self) -> u64 {
        match self.oldest_pending_ns.load(Ordering::Relaxed) {
            0 => 0,
            oldest => now_nanos().saturating_sub(oldest) / 1_000_000,
        }
    }
}

/// Losses not yet recorded in the store, merged per (instrument, channel).
#[derive(Debug, Default)]
struct Losses {
    ranges: Mutex<FxHashMap<(i64, Channel, &'static str), GapRecord>>,
}

impl Losses {
    /// `events` carry store ids.
    fn record(&self, events: &[Event], reason: &'static str) {
        let mut ranges = self.ranges.lock();
        for event in events {
            let key = (i64::from(event.instrument.0), event.channel(), reason);
            let gap = ranges.entry(key).or_insert_with(|| GapRecord {
                instrument: key.0,
                channel: key.1,
                from_seq: event.seq,
                to_seq: event.seq,
                ts_from: event.ts_event,
                ts_to: event.ts_event,
                reason,
            });
            gap.from_seq = gap.from_seq.min(event.seq);
            gap.to_seq = gap.to_seq.max(event.seq);
            gap.ts_from = gap.ts_from.min(event.ts_event);
            gap.ts_to = gap.ts_to.max(event.ts_event);
        }
    }

    fn take(&self) -> Vec<GapRecord> {
        self.ranges.lock().drain().map(|(_, gap)| gap).collect()
    }
}

/// The engine's end of the writer: never blocks.
#[derive(Clone)]
pub struct HistoryTap {
    tx: mpsc::Sender<Vec<Event>>,
    ids: Arc<StoreIds>,
    losses: Arc<Losses>,
    stats: Arc<WriterStats>,
}

impl HistoryTap {
    /// Hands sequenced events to the writer. If its channel is full (the writer
    /// task is starved), the events are counted lost and recorded as a gap.
    pub fn offer(&self, mut events: Vec<Event>) {
        // Candles are derived from the stored trades, so they are not stored.
        events.retain(|e| e.channel().is_stored());
        if events.is_empty() {
            return;
        }
        if let Err(error) = self.tx.try_send(events) {
            let (mpsc::error::TrySendError::Full(mut events) | mpsc::error::TrySendError::Closed(mut events)) = error;
            for event in &mut events {
                event.instrument = InstrumentId(self.ids.store_id(event.instrument) as u32);
            }
            self.stats.lost.fetch_add(events.len() as u64, Ordering::Relaxed);
            metrics::counter!("tickwire_store_lost_total", "reason" => "writer_queue_full")
                .increment(events.len() as u64);
            self.losses.record(&events, "writer_queue_full");
        }
    }
}

/// A running writer, as the composition root holds it.
pub struct HistoryWriter {
    pub tap: HistoryTap,
    pub stats: Arc<WriterStats>,
    task: WriterTask,
}

/// The writer task, ready to be spawned with [`HistoryWriter::run`].
pub struct WriterTask {
    rx: mpsc::Receiver<Vec<Event>>,
    store: Store,
    ids: Arc<StoreIds>,
    journal: Journal,
    config: WriterConfig,
    losses: Arc<Losses>,
    stats: Arc<WriterStats>,
    /// Whether the next write should come from the journal (writes alternate
    /// while both hold events, so neither starves).
    journal_turn: bool,
}

/// What the writer did, reported when it ends.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriterReport {
    pub written: u64,
    /// Events left in the journal for the next start.
    pub left_in_journal_bytes: u64,
    pub lost: u64,
}

impl HistoryWriter {
    /// Opens the journal (a previous process's leftovers will be written first).
    pub fn new(store: Store, ids: StoreIds, config: WriterConfig) -> Result<HistoryWriter, StoreError> {
        let journal = Journal::open(&config.journal_dir, config.journal_cap_bytes)
            .map_err(|source| StoreError::Journal { path: config.journal_dir.clone(), source })?;
        let (tx, rx) = mpsc::channel(config.queue_batches.max(1));
        let ids = Arc::new(ids);
        let losses = Arc::new(Losses::default());
        let stats = Arc::new(WriterStats::default());
        stats.spilled_bytes.store(journal.pending_bytes(), Ordering::Relaxed);
        let tap = HistoryTap { tx, ids: ids.clone(), losses: losses.clone(), stats: stats.clone() };
        let task = WriterTask { rx, store, ids, journal, config, losses, stats: stats.clone(), journal_turn: true };
        Ok(HistoryWriter { tap, stats, task })
    }

    /// Splits into the tap (for the engine), the stats, and the task to spawn.
    pub fn into_parts(self) -> (HistoryTap, Arc<WriterStats>, WriterTask) {
        (self.tap, self.stats, self.task)
    }
}

enum Origin {
    Memory,
    /// Read from the journal; consumed up to this offset once written.
    Journal(u64),
}

struct Batch {
    events: Vec<Event>,
    origin: Origin,
}

/// A write in flight: the job, and its batch (shared, so that a job aborted at
/// shutdown leaves its events to us).
struct Inflight {
    job: JoinHandle<(Vec<GapRecord>, Result<u64, StoreError>)>,
    batch: Arc<Batch>,
}

/// A batch waiting to be written again, idempotently.
type Retry = Arc<Batch>;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl WriterTask {
    /// Runs until the tap is dropped and everything is written (or, after the
    /// drain timeout, journaled).
    pub async fn run(mut self) -> WriterReport {
        let mut memory: VecDeque<Vec<Event>> = VecDeque::new();
        let mut memory_events: usize = 0;
        let mut retry: Option<Retry> = None;
        let mut retry_at: Option<Instant> = None;
        let mut backoff = BACKOFF_MIN;
        let mut inflight: Option<Inflight> = None;
        let mut closed = false;
        let mut deadline: Option<Instant> = None;
        let mut failures: u64 = 0;
        let mut housekeeping = tokio::time::interval(Duration::from_millis(250));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut journal_oldest_ns: Nanos = 0;
        if !self.journal.is_empty() {
            tracing::info!(bytes = self.journal.pending_bytes(), path = %self.journal.path().display(), "writing the journal a previous run left");
            journal_oldest_ns = 1; // unknown: report lag until it is written
        }

        loop {
            // Start the next write when none is in flight and no backoff is pending.
            if inflight.is_none() && retry_at.is_none_or(|at| Instant::now() >= at) {
                retry_at = None;
                let next = match retry.take() {
                    Some(batch) => Some((batch, true)),
                    None => self.next_batch(&mut memory, &mut memory_events),
                };
                if let Some((batch, idempotent)) = next {
                    let store = self.store.clone();
                    let gaps = self.losses.take();
                    let shared = batch.clone();
                    let job = tokio::spawn(async move {
                        let mut result = store.write(&shared.events, idempotent).await;
                        if result.is_ok() && !gaps.is_empty() {
                            result = store.write_gaps(&gaps).await.map(|()| result.unwrap_or(0));
                        }
                        (gaps, result)
                    });
                    inflight = Some(Inflight { job, batch });
                }
            }
            self.publish_stats(
                memory_events,
                retry.as_ref().or(inflight.as_ref().map(|i| &i.batch)),
                &memory,
                journal_oldest_ns,
            );
            let idle = inflight.is_none() && retry.is_none() && memory.is_empty() && self.journal.is_empty();
            if closed && idle {
                // Gap records still pending are written by a last attempt.
                let gaps = self.losses.take();
                if !gaps.is_empty() && self.store.write_gaps(&gaps).await.is_err() {
                    tracing::warn!(gaps = gaps.len(), "gap records could not be written at shutdown");
                }
                break;
            }
            if closed && deadline.is_some_and(|d| Instant::now() >= d) {
                let mut unwritten = retry.take();
                if let Some(Inflight { job, batch }) = inflight.take() {
                    job.abort();
                    match job.await {
                        Ok((_, Ok(written))) => {
                            self.stats.written.fetch_add(written, Ordering::Relaxed);
                            self.after_write(&batch, &mut journal_oldest_ns);
                        }
                        // Maybe written, maybe not: journaled, it is written
                        // idempotently by the next start.
                        _ => unwritten = Some(batch),
                    }
                }
                self.journal_leftovers(unwritten, &mut memory);
                break;
            }

            let wait_retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let wait_deadline = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = self.rx.recv(), if !closed => match received {
                    Some(batch) => self.intake(batch, &mut memory, &mut memory_events, &mut journal_oldest_ns),
                    None => {
                        closed = true;
                        deadline = Some(Instant::now() + self.config.drain_timeout);
                    }
                },
                joined = async { (&mut inflight.as_mut().expect("guarded").job).await }, if inflight.is_some() => {
                    let batch = inflight.take().map(|i| i.batch).expect("guarded");
                    match joined {
                        Ok((_, Ok(written))) => {
                            self.stats.written.fetch_add(written, Ordering::Relaxed);
                            metrics::counter!("tickwire_store_written_total").increment(written);
                            if failures > 0 {
                                tracing::info!(failures, "history store reachable again");
                            }
                            failures = 0;
                            backoff = BACKOFF_MIN;
                            self.after_write(&batch, &mut journal_oldest_ns);
                        }
                        Ok((gaps, Err(error))) => {
                            failures += 1;
                            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("tickwire_store_write_errors_total").increment(1);
                            if failures.is_power_of_two() {
                                tracing::warn!(%error, failures, retryable = error.is_retryable(), "history write failed; retrying");
                            }
                            for gap in gaps {
                                let mut ranges = self.losses.ranges.lock();
                                ranges.entry((gap.instrument, gap.channel, gap.reason)).or_insert(gap);
                            }
                            retry = Some(batch);
                            let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 4);
                            retry_at = Some(Instant::now() + backoff + Duration::from_millis(jitter));
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                        }
                        Err(join_error) => {
                            tracing::error!(%join_error, "history write task failed; retrying its batch");
                            retry = Some(batch);
                            retry_at = Some(Instant::now() + backoff);
                        }
                    }
                },
                () = wait_retry, if inflight.is_none() && retry_at.is_some() => {}
                () = wait_deadline, if deadline.is_some() => {}
                _ = housekeeping.tick() => self.sync_journal(),
            }
        }
        self.publish_stats(0, None, &VecDeque::new(), 0);
        let report = WriterReport {
            written: self.stats.written.load(Ordering::Relaxed),
            left_in_journal_bytes: self.journal.pending_bytes(),
            lost: self.stats.lost.load(Ordering::Relaxed),
        };
        if let Err(error) = self.journal.sync() {
            tracing::warn!(%error, "journal not synced");
        }
        tracing::info!(?report, "history writer stopped");
        report
    }

    /// Forces the journal's recent appends to disk on a blocking thread, so that a
    /// machine crash loses at most one housekeeping tick of spilled events (a
    /// process crash loses none: the bytes are in the page cache already).
    fn sync_journal(&mut self) {
        let file = match self.journal.take_unsynced() {
            None => return,
            Some(Ok(file)) => file,
            Some(Err(error)) => return Self::sync_failed(&error),
        };
        tokio::task::spawn_blocking(move || {
            if let Err(error) = file.sync_data() {
                Self::sync_failed(&error);
            }
        });
    }

    fn sync_failed(error: &std::io::Error) {
        tracing::error!(%error, "journal not synced to disk");
        metrics::counter!("tickwire_store_journal_sync_errors_total").increment(1);
    }

    /// Takes a feed batch: into memory while there is room, else into the journal.
    /// (The store keeps no order of its own: rows are keyed, so batches may land
    /// in any order.)
    fn intake(
        &mut self,
        mut batch: Vec<Event>,
        memory: &mut VecDeque<Vec<Event>>,
        memory_events: &mut usize,
        journal_oldest_ns: &mut Nanos,
    ) {
        for event in &mut batch {
            event.instrument = InstrumentId(self.ids.store_id(event.instrument) as u32);
        }
        if *memory_events + batch.len() <= self.config.memory_events {
            *memory_events += batch.len();
            memory.push_back(batch);
        } else {
            self.spill(&batch, journal_oldest_ns);
        }
    }

    fn spill(&mut self, batch: &[Event], journal_oldest_ns: &mut Nanos) {
        let was_empty = self.journal.is_empty();
        match self.journal.append(batch) {
            Ok(Some(_)) => {
                self.stats.journaled.fetch_add(batch.len() as u64, Ordering::Relaxed);
                if was_empty {
                    *journal_oldest_ns = batch.first().map_or(0, |e| e.ts_send);
                }
            }
            Ok(None) => self.lose(batch, "journal_full"),
            Err(error) => {
                tracing::error!(%error, path = %self.journal.path().display(), "journal write failed");
                self.lose(batch, "journal_error");
            }
        }
    }

    fn lose(&self, batch: &[Event], reason: &'static str) {
        self.stats.lost.fetch_add(batch.len() as u64, Ordering::Relaxed);
        metrics::counter!("tickwire_store_lost_total", "reason" => reason).increment(batch.len() as u64);
        self.losses.record(batch, reason);
    }

    /// The next batch to write: from memory or the journal, taking turns while
    /// both hold events.
    fn next_batch(&mut self, memory: &mut VecDeque<Vec<Event>>, memory_events: &mut usize) -> Option<(Retry, bool)> {
        let from_journal = !self.journal.is_empty() && (memory.is_empty() || self.journal_turn);
        self.journal_turn = !from_journal;
        if !from_journal && let Some(first) = memory.pop_front() {
            let mut events = first;
            while let Some(next) = memory.front()
                && events.len() + next.len() <= self.config.batch_events
            {
                events.extend(memory.pop_front().unwrap_or_default());
            }
            *memory_events -= events.len();
            return Some((Arc::new(Batch { events, origin: Origin::Memory }), false));
        }
        if self.journal.is_empty() {
            return None;
        }
        match self.journal.read(self.config.batch_events) {
            Ok(read) => {
                if read.skipped > 0 {
                    tracing::warn!(bytes = read.skipped, "torn or corrupt journal tail skipped");
                    metrics::counter!("tickwire_store_journal_skipped_bytes_total").increment(read.skipped);
                }
                if read.events.is_empty() {
                    if let Err(error) = self.journal.consumed(read.next) {
                        tracing::error!(%error, "journal truncation failed");
                    }
                    return None;
                }
                Some((Arc::new(Batch { events: read.events, origin: Origin::Journal(read.next) }), true))
            }
            Err(error) => {
                tracing::error!(%error, "journal read failed");
                None
            }
        }
    }

    fn after_write(&mut self, batch: &Batch, journal_oldest_ns: &mut Nanos) {
        if let Origin::Journal(next) = batch.origin {
            self.stats.written_from_journal.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
            if let Err(error) = self.journal.consumed(next) {
                tracing::error!(%error, "journal truncation failed");
            }
            *journal_oldest_ns = if self.journal.is_empty() { 0 } else { batch.events.last().map_or(1, |e| e.ts_send) };
        }
    }

    /// Shutdown with the database still away: what is in memory goes to the journal.
    fn journal_leftovers(&mut self, retry: Option<Retry>, memory: &mut VecDeque<Vec<Event>>) {
        let mut unused = 0;
        if let Some(batch) = retry
            && matches!(batch.origin, Origin::Memory)
        {
            self.spill(&batch.events, &mut unused);
        }
        for batch in memory.drain(..) {
            self.spill(&batch, &mut unused);
        }
        // Losses not yet in the store stay counted; they are logged here.
        let gaps = self.losses.take();
        if !gaps.is_empty() {
            tracing::warn!(?gaps, "gap records not written (store unreachable at shutdown)");
        }
        if self.journal.pending_bytes() > 0 {
            tracing::warn!(bytes = self.journal.pending_bytes(), "history left in the journal for the next start");
        }
    }

    fn publish_stats(
        &self,
        memory_events: usize,
        retry: Option<&Retry>,
        memory: &VecDeque<Vec<Event>>,
        journal_oldest: Nanos,
    ) {
        let queued = memory_events + retry.map_or(0, |b| b.events.len());
        self.stats.queued.store(queued as u64, Ordering::Relaxed);
        let spilled = self.journal.pending_bytes();
        self.stats.spilled_bytes.store(spilled, Ordering::Relaxed);
        let oldest = retry
            .and_then(|b| b.events.first().map(|e| e.ts_send))
            .or_else(|| (!self.journal.is_empty()).then_some(journal_oldest))
            .or_else(|| memory.front().and_then(|b| b.first()).map(|e| e.ts_send))
            .unwrap_or(0);
        self.stats.oldest_pending_ns.store(oldest, Ordering::Relaxed);
        metrics::gauge!("tickwire_store_queue_depth").set(queued as f64);
        metrics::gauge!("tickwire_store_spilled_bytes").set(spilled as f64);
        metrics::gauge!("tickwire_store_lag_ms").set(self.stats.lag_ms() as f64);
    }
}
