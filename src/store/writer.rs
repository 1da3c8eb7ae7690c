//! The history writer: every sequenced event into the store, off the hot path,
//! through a write-ahead journal, so that nothing a client was sent is lost.
//!
//! ```text
//! engine ──append (one write per batch)──► journal segments ──tail──► writer task ──► database
//!   └──── then fan-out to clients                                     (COPY / multi-row INSERT)
//! ```
//! Task model. The engine hands each sequenced batch to the [`HistoryTap`]
//! *before* it fans the batch out: the tap appends one journal record (one
//! `write` into the page cache: no wait on the database, no `fsync`). A process
//! killed at any moment has therefore journaled every event any client saw; the
//! writer forces appends to disk every `sync_interval` (group commit), which
//! bounds what a power loss can take. One writer task ([`WriterTask::run`])
//! tails the journal:
//! - it reads what was appended since its last write (at most `batch_events`)
//!   and writes it in one transaction, one write in flight at a time; a busy
//!   store gets bigger batches, never a queue in memory: memory holds only the
//!   batch in flight;
//! - when a write fails (database slow, down, restarting), the batch is retried
//!   with exponential backoff (50 ms to 5 s, jittered), idempotently (rows
//!   already stored are skipped), so an ambiguous commit never duplicates;
//! - every `books::SNAPSHOT_EVERY_EVENTS` book events or
//!   `books::SNAPSHOT_EVERY_NS` of exchange time per instrument, the whole book
//!   (rebuilt here from the book events it writes) is stored after the batch, so
//!   the book at any time is a short rebuild away (replay);
//! - a segment is deleted once every record in it is stored; a new process
//!   first stores whatever the last one left (exactly once: writes are keyed by
//!   instrument, time and sequence);
//! - when the journal is at its cap (`journal_cap_bytes`: the database has been
//!   away a long time), appends are refused: those events still reach clients,
//!   but are counted as lost and their sequence ranges written to the store as
//!   gap records, so replay and resume know of the hole.
//!
//! On shutdown (the tap dropped), the writer keeps writing for `drain_timeout`;
//! whatever is left stays in the journal for the next start.
//!
//! Metrics: `tickwire_store_queue_depth` (events journaled, not yet stored),
//! `tickwire_store_lag_seconds` (age of the oldest event not yet written),
//! `tickwire_store_spilled_bytes` (journal bytes not yet written),
//! `tickwire_store_written_total`, `tickwire_store_lost_total{reason}`,
//! `tickwire_store_write_errors_total`, `tickwire_store_journal_sync_errors_total`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::RngExt;
use rustc_hash::FxHashMap;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::books::BookTracker;
use super::journal::{self, AppendError, JournalAppender, JournalConfig, JournalReader, Leftovers, Position};
use super::{GapRecord, Store, StoreError, StoreIds};
use crate::model::{Channel, Event, InstrumentId, now_nanos};

/// Settings of the history writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Most events per database transaction.
    pub batch_events: usize,
    pub journal_dir: PathBuf,
    /// The journal never grows past this many bytes; beyond, events are lost
    /// (counted, and recorded as gaps).
    pub journal_cap_bytes: u64,
    /// A journal segment is closed (and can be deleted once stored) past this size.
    pub journal_segment_bytes: u64,
    /// How often appends are forced to disk (what a power loss can take).
    pub sync_interval: Duration,
    /// How long shutdown keeps writing before the rest is left in the journal.
    pub drain_timeout: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            batch_events: 50_000,
            journal_dir: PathBuf::from("data/journal"),
            journal_cap_bytes: 1 << 30,
            journal_segment_bytes: 16 << 20,
            sync_interval: Duration::from_millis(100),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters shared by the tap, the writer and `/v1/stats`.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Events committed to the database.
    pub written: AtomicU64,
    /// Events appended to the journal by this process (every stored event is).
    pub journaled: AtomicU64,
    /// Events written to the database from the journal (in total; a journal
    /// left by a previous process counts too).
    pub written_from_journal: AtomicU64,
    /// Journal bytes not yet written to the database.
    pub spilled_bytes: AtomicU64,
    /// Events journaled and not yet in the database.
    pub queued: AtomicU64,
    /// Events lost: the journal was full or could not be written.
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

    fn is_empty(&self) -> bool {
        self.ranges.lock().is_empty()
    }

    fn take(&self) -> Vec<GapRecord> {
        self.ranges.lock().drain().map(|(_, gap)| gap).collect()
    }
}

/// The engine's end of history: journals a batch before it is fanned out.
pub struct HistoryTap {
    appender: JournalAppender,
    ids: Arc<StoreIds>,
    losses: Arc<Losses>,
    stats: Arc<WriterStats>,
}

impl HistoryTap {
    /// Appends the stored events of `events` to the journal (one `write`). When
    /// the journal cannot take them (full, or the disk failed), the events are
    /// counted lost and recorded as a gap; the caller fans them out regardless:
    /// the live stream never waits on history.
    pub fn record(&mut self, events: &[Event]) {
        let ids = &self.ids;
        match self.appender.append(events, |id| ids.store_id(id) as u32) {
            Ok(0) => {}
            Ok(_) => {
                let stored = events.iter().filter(|e| e.channel().is_stored()).count() as u64;
                self.stats.journaled.fetch_add(stored, Ordering::Relaxed);
            }
            Err(error) => {
                let reason = match error {
                    AppendError::Full(_) => "journal_full",
                    AppendError::Io(_) => "journal_error",
                };
                let mut lost: Vec<Event> = events.iter().filter(|e| e.channel().is_stored()).cloned().collect();
                for event in &mut lost {
                    event.instrument = InstrumentId(self.ids.store_id(event.instrument) as u32);
                }
                let total = self.stats.lost.fetch_add(lost.len() as u64, Ordering::Relaxed) + lost.len() as u64;
                if (total - lost.len() as u64) == 0 || total.is_power_of_two() {
                    tracing::error!(%error, lost = total, "history not journaled; recorded as a gap");
                }
                metrics::counter!("tickwire_store_lost_total", "reason" => reason).increment(lost.len() as u64);
                self.losses.record(&lost, reason);
            }
        }
    }
}

/// A running writer, as the composition root holds it.
pub struct HistoryWriter {
    pub tap: HistoryTap,
    pub stats: Arc<WriterStats>,
    /// What a previous process left in the journal (written first).
    pub leftovers: Leftovers,
    task: WriterTask,
}

/// The writer task, ready to be spawned with [`WriterTask::run`].
pub struct WriterTask {
    reader: JournalReader,
    store: Store,
    config: WriterConfig,
    losses: Arc<Losses>,
    stats: Arc<WriterStats>,
    /// Events a previous process left that are not written yet.
    leftover_events: u64,
    /// The books of what is written, to store them whole now and then.
    books: BookTracker,
}

/// What the writer did, reported when it ends.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriterReport {
    pub written: u64,
    /// Journal bytes left for the next start.
    pub left_in_journal_bytes: u64,
    pub lost: u64,
}

impl HistoryWriter {
    /// Opens the journal (a previous process's leftovers will be written first).
    pub fn new(store: Store, ids: StoreIds, config: WriterConfig) -> Result<HistoryWriter, StoreError> {
        let journal_config =
            JournalConfig { cap_bytes: config.journal_cap_bytes, segment_bytes: config.journal_segment_bytes.max(1) };
        let (appender, reader, leftovers) = journal::open(&config.journal_dir, journal_config)
            .map_err(|source| StoreError::Journal { path: config.journal_dir.clone(), source })?;
        if leftovers.bytes > 0 {
            tracing::info!(bytes = leftovers.bytes, events = leftovers.events, path = %config.journal_dir.display(), "writing the journal a previous run left");
        }
        let ids = Arc::new(ids);
        let losses = Arc::new(Losses::default());
        let stats = Arc::new(WriterStats::default());
        stats.spilled_bytes.store(leftovers.bytes, Ordering::Relaxed);
        let tap = HistoryTap { appender, ids, losses: losses.clone(), stats: stats.clone() };
        let task = WriterTask {
            reader,
            store,
            config,
            losses,
            stats: stats.clone(),
            leftover_events: leftovers.events,
            books: BookTracker::default(),
        };
        Ok(HistoryWriter { tap, stats, leftovers, task })
    }

    /// Splits into the tap (for the engine), the stats, and the task to spawn.
    pub fn into_parts(self) -> (HistoryTap, Arc<WriterStats>, WriterTask) {
        (self.tap, self.stats, self.task)
    }
}

/// A batch read from the journal, and where the journal continues after it.
struct Batch {
    events: Vec<Event>,
    /// Whole books due among `events` (see [`BookTracker`]), written after them.
    books: Vec<Event>,
    next: Position,
}

/// A write in flight.
struct Inflight {
    job: JoinHandle<(Vec<GapRecord>, Result<u64, StoreError>)>,
    batch: Arc<Batch>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl WriterTask {
    /// Runs until the tap is dropped and everything journaled is written (or
    /// the drain timeout passes: the rest waits in the journal).
    pub async fn run(mut self) -> WriterReport {
        let mut retry: Option<Arc<Batch>> = None;
        let mut retry_at: Option<Instant> = None;
        let mut backoff = BACKOFF_MIN;
        let mut inflight: Option<Inflight> = None;
        let mut deadline: Option<Instant> = None;
        let mut failures: u64 = 0;
        let mut housekeeping = tokio::time::interval(self.config.sync_interval.max(Duration::from_millis(1)));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            // Start the next write when none is in flight and no backoff is pending.
            if inflight.is_none() && retry_at.is_none_or(|at| Instant::now() >= at) {
                retry_at = None;
                let next = match retry.take() {
                    Some(batch) => Some((batch, true)),
                    None => self.next_batch().map(|b| (b, false)),
                };
                let gaps = self.losses.take();
                let (batch, idempotent) = match next {
                    Some((batch, idempotent)) => (Some(batch), idempotent),
                    None if !gaps.is_empty() => {
                        (Some(Arc::new(Batch { events: Vec::new(), books: Vec::new(), next: (0, 0) })), true)
                    }
                    None => (None, false),
                };
                if let Some(batch) = batch {
                    let store = self.store.clone();
                    let shared = batch.clone();
                    let job = tokio::spawn(async move {
                        let mut result = store.write(&shared.events, idempotent).await;
                        if result.is_ok() && !shared.books.is_empty() {
                            result = store.write_book_snapshots(&shared.books).await.map(|()| result.unwrap_or(0));
                        }
                        if result.is_ok() && !gaps.is_empty() {
                            result = store.write_gaps(&gaps).await.map(|()| result.unwrap_or(0));
                        }
                        (gaps, result)
                    });
                    inflight = Some(Inflight { job, batch });
                } else {
                    for gap in gaps {
                        self.losses.ranges.lock().entry((gap.instrument, gap.channel, gap.reason)).or_insert(gap);
                    }
                }
            }
            self.publish_stats(retry.as_ref().or(inflight.as_ref().map(|i| &i.batch)));
            if deadline.is_none() && self.reader.appender_gone() {
                deadline = Some(Instant::now() + self.config.drain_timeout);
            }
            if inflight.is_none() && retry.is_none() && self.reader.finished() && self.losses.is_empty() {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                if let Some(Inflight { job, batch }) = inflight.take() {
                    job.abort();
                    // Maybe written, maybe not: the journal keeps it for the next
                    // start, which writes it idempotently.
                    if let Ok((_, Ok(written))) = job.await {
                        self.written(&batch, written);
                    }
                }
                let gaps = self.losses.take();
                if !gaps.is_empty() {
                    tracing::warn!(?gaps, "gap records not written (store unreachable at shutdown)");
                }
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
                () = self.reader.appended(), if inflight.is_none() && retry.is_none() => {}
                joined = async { (&mut inflight.as_mut().expect("guarded").job).await }, if inflight.is_some() => {
                    let batch = inflight.take().map(|i| i.batch).expect("guarded");
                    match joined {
                        Ok((_, Ok(written))) => {
                            if failures > 0 {
                                tracing::info!(failures, "history store reachable again");
                            }
                            failures = 0;
                            backoff = BACKOFF_MIN;
                            self.written(&batch, written);
                        }
                        Ok((gaps, Err(error))) => {
                            failures += 1;
                            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("tickwire_store_write_errors_total").increment(1);
                            if failures.is_power_of_two() {
                                tracing::warn!(%error, failures, retryable = error.is_retryable(), "history write failed; retrying");
                            }
                            for gap in gaps {
                                self.losses.ranges.lock().entry((gap.instrument, gap.channel, gap.reason)).or_insert(gap);
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
        self.sync_journal();
        self.publish_stats(None);
        let report = WriterReport {
            written: self.stats.written.load(Ordering::Relaxed),
            left_in_journal_bytes: self.reader.unread_bytes(),
            lost: self.stats.lost.load(Ordering::Relaxed),
        };
        tracing::info!(?report, "history writer stopped");
        report
    }

    /// The next batch: what was journaled after the last write, up to `batch_events`.
    fn next_batch(&mut self) -> Option<Arc<Batch>> {
        if !self.reader.has_unread() {
            return None;
        }
        match self.reader.read(self.config.batch_events) {
            Ok(read) => {
                if read.skipped > 0 {
                    tracing::warn!(bytes = read.skipped, "torn or corrupt journal tail skipped");
                    metrics::counter!("tickwire_store_journal_skipped_bytes_total").increment(read.skipped);
                }
                if read.events.is_empty() {
                    // Only empty or torn records: move past them.
                    if let Err(error) = self.reader.consumed(read.next) {
                        tracing::error!(%error, "journal segment not deleted");
                    }
                    return None;
                }
                let mut books = Vec::new();
                self.books.observe(&read.events, &mut books);
                Some(Arc::new(Batch { events: read.events, books, next: read.next }))
            }
            Err(error) => {
                tracing::error!(%error, "journal read failed");
                None
            }
        }
    }

    /// A batch is in the database: move the journal past it.
    fn written(&mut self, batch: &Batch, written: u64) {
        self.stats.written.fetch_add(written, Ordering::Relaxed);
        metrics::counter!("tickwire_store_written_total").increment(written);
        let from_leftovers = self.leftover_events.min(batch.events.len() as u64);
        self.leftover_events -= from_leftovers;
        self.stats.written_from_journal.fetch_add(from_leftovers, Ordering::Relaxed);
        if !batch.events.is_empty()
            && let Err(error) = self.reader.consumed(batch.next)
        {
            tracing::error!(%error, "journal segment not deleted");
        }
    }

    /// Forces the journal's recent appends to disk on a blocking thread (group
    /// commit: one `fdatasync` per file per interval, however many appends).
    fn sync_journal(&mut self) {
        let files = self.reader.take_unsynced();
        if files.is_empty() {
            return;
        }
        tokio::task::spawn_blocking(move || {
            for file in files {
                if let Err(error) = file.sync_data() {
                    tracing::error!(%error, "journal not synced to disk");
                    metrics::counter!("tickwire_store_journal_sync_errors_total").increment(1);
                }
            }
        });
    }

    fn publish_stats(&self, pending: Option<&Arc<Batch>>) {
        let written = self.stats.written.load(Ordering::Relaxed);
        // Everything ever journaled: this process's appends and what the last one left.
        let journaled = self.stats.journaled.load(Ordering::Relaxed)
            + self.stats.written_from_journal.load(Ordering::Relaxed)
            + self.leftover_events;
        let queued = journaled.saturating_sub(written);
        self.stats.queued.store(queued, Ordering::Relaxed);
        let spilled = self.reader.unread_bytes();
        self.stats.spilled_bytes.store(spilled, Ordering::Relaxed);
        let oldest = match pending.and_then(|b| b.events.first()) {
            Some(first) => first.ts_send,
            None if self.reader.has_unread() => match self.stats.oldest_pending_ns.load(Ordering::Relaxed) {
                0 => now_nanos(),
                known => known,
            },
            None => 0,
        };
        self.stats.oldest_pending_ns.store(oldest, Ordering::Relaxed);
        metrics::gauge!("tickwire_store_queue_depth").set(queued as f64);
        metrics::gauge!("tickwire_store_spilled_bytes").set(spilled as f64);
        metrics::gauge!("tickwire_store_lag_seconds").set(self.stats.lag_ms() as f64 / 1e3);
    }
}
