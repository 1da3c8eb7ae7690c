//! Tick history: PostgreSQL in production, SQLite as the embedded default.
//!
//! ```text
//! engine ──try_send──► writer task ──COPY / multi-row INSERT──► database ──► reader (history, candles, replay, resume)
//!                         │  ▲
//!                         ▼  │ (DB slow or down)
//!                      journal on disk
//! ```
//! [`writer`] takes sequenced events off the engine without ever making it wait,
//! buffers them, writes them in batches and spills to a checksummed [`journal`]
//! while the database is away. [`reader`] serves pages of history, candles, the
//! merged, exchange-time-ordered stream replay needs, and `read_since` for resume.
//!
//! Schema (`migrations/postgres`, `migrations/sqlite`): `instruments`, `trades`,
//! `quotes`, `book_events`, `gaps`, and `book_snapshots` (whole books, see
//! [`books`]). Prices and sizes are BIGINT nano-units, timestamps BIGINT nanoseconds. Event tables are keyed by (instrument, ts_event,
//! seq): writes are idempotent, and the key serves per-instrument time ranges. On
//! PostgreSQL they are range-partitioned by day on `ts_event`; retention drops
//! whole partitions (on SQLite it deletes whole days).
//!
//! Inside the store, an [`Event`]'s `instrument` holds the *store's* instrument id
//! (stable across restarts), not the process's dense [`InstrumentId`]; [`StoreIds`]
//! maps between the two at the edges.

pub mod books;
pub mod journal;
pub mod keys;
pub mod pg_copy;
pub mod reader;
pub mod rows;
pub mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Row};

use crate::model::{
    AssetKind, Channel, Event, InstrumentId, InstrumentSpec, Instruments, Nanos, Price, Size, decimals_of,
};

/// The store used when neither `--store` nor `DATABASE_URL` names one.
pub const DEFAULT_STORE_URL: &str = "sqlite://data/tickwire.db";
/// Nanoseconds in a day: the width of a partition.
pub const DAY_NS: u64 = 86_400 * 1_000_000_000;
/// The event tables, in the order of [`Channel`].
pub const EVENT_TABLES: [&str; Channel::STORED_COUNT] = ["quotes", "trades", "book_events"];

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("unsupported store URL {0:?} (use postgres://… or sqlite://…)")]
    BadUrl(String),
    #[error("cannot create {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("journal {path}: {source}")]
    Journal { path: PathBuf, source: std::io::Error },
    #[error("the store holds an instrument this process does not know (store id {0})")]
    UnknownInstrument(i64),
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("channel {0} is derived from trades and not stored")]
    NotStored(&'static str),
    #[error("a history read stopped: {0}")]
    ReadTask(#[from] tokio::task::JoinError),
    #[error("a live key is already named {0:?} (revoke it first, or choose another name)")]
    KeyNameTaken(String),
}

/// The table index of a stored channel, or [`StoreError::NotStored`].
pub fn stored_index(channel: Channel) -> Result<usize, StoreError> {
    if channel.is_stored() { Ok(channel.index()) } else { Err(StoreError::NotStored(channel.as_str())) }
}

impl StoreError {
    /// Whether the same write can succeed later (the database was away or busy),
    /// as opposed to a fault in the data or the schema.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(db)) => {
                // Class 08 (connection), 53 (resources), 57 (operator intervention:
                // shutdown, admin restart), 40 (serialization, deadlock).
                db.code().is_some_and(|c| ["08", "53", "57", "40"].iter().any(|class| c.starts_with(class)))
                    || db.message().contains("database is locked")
            }
            StoreError::Db(_) | StoreError::Journal { .. } => true,
            _ => false,
        }
    }

    fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Db(sqlx::Error::Database(db)) if db.is_unique_violation())
    }
}

/// The URL of the store: `--store`, else `DATABASE_URL`, else [`DEFAULT_STORE_URL`].
pub fn resolve_url(flag: Option<&str>) -> String {
    flag.map(str::to_owned)
        .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| DEFAULT_STORE_URL.to_owned())
}

pub use crate::model::parse_time;

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) → days since 1970-01-01.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Name of the partition of `table` holding day `day` (days since the epoch).
fn partition_name(table: &str, day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{table}_{y:04}{m:02}{d:02}")
}

/// The day a partition named by [`partition_name`] holds.
fn partition_day(table: &str, name: &str) -> Option<i64> {
    let date = name.strip_prefix(table)?.strip_prefix('_')?;
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d) = (date[..4].parse().ok()?, date[4..6].parse().ok()?, date[6..].parse().ok()?);
    Some(days_from_civil(y, m, d))
}

/// Maps the process's dense instrument ids to the store's ids and back.
#[derive(Debug, Clone, Default)]
pub struct StoreIds {
    to_store: Vec<i64>,
    from_store: FxHashMap<i64, InstrumentId>,
}

impl StoreIds {
    pub fn store_id(&self, id: InstrumentId) -> i64 {
        self.to_store[id.index()]
    }

    pub fn instrument(&self, store_id: i64) -> Option<InstrumentId> {
        self.from_store.get(&store_id).copied()
    }

    fn push(&mut self, store_id: i64) {
        self.from_store.insert(store_id, InstrumentId(self.to_store.len() as u32));
        self.to_store.push(store_id);
    }
}

/// A range of sequences the store will never hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapRecord {
    /// The store's instrument id.
    pub instrument: i64,
    pub channel: Channel,
    pub from_seq: u64,
    pub to_seq: u64,
    pub ts_from: Nanos,
    pub ts_to: Nanos,
    pub reason: &'static str,
}

#[derive(Debug, Clone)]
enum Backend {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to whichever pool the store has; the body must
/// compile for both (sqlx's runtime API is the same; placeholders are `$n` in
/// ascending order, which both databases read positionally).
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            Backend::Postgres($pool) => $body,
            Backend::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// A connection pool to the history database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// Days whose partitions exist (PostgreSQL).
    partitions: Arc<Mutex<HashSet<i64>>>,
}

impl Store {
    /// Connects (creating a SQLite file and its directory when missing). Does not migrate.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .min_connections(0)
                // A database that is away must fail a write quickly, so that the
                // writer spills to its journal instead of holding batches in memory.
                .acquire_timeout(Duration::from_secs(3))
                .connect_with(options)
                .await?;
            Backend::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5));
            let path = options.get_filename();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
                std::fs::create_dir_all(dir)
                    .map_err(|source| StoreError::CreateDir { path: dir.to_path_buf(), source })?;
            }
            let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
            Backend::Sqlite(pool)
        } else {
            return Err(StoreError::BadUrl(url.to_owned()));
        };
        Ok(Store { backend, partitions: Arc::default() })
    }

    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let store = Store::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations this binary carries (idempotent).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await?,
            Backend::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await?,
        }
        Ok(())
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Closes every connection.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
    }

    /// Records every instrument of this process (new ones get an id; known ones
    /// keep theirs) and returns the mapping.
    pub async fn register_instruments(&self, instruments: &Instruments) -> Result<StoreIds, StoreError> {
        let mut ids = StoreIds::default();
        for inst in instruments.iter() {
            let kind = match inst.kind {
                AssetKind::Crypto => "crypto",
                AssetKind::Equity => "equity",
            };
            let sql = "INSERT INTO instruments (symbol, venue, kind, tick_size, lot_size) VALUES ($1, $2, $3, $4, $5) \
                       ON CONFLICT (symbol) DO UPDATE SET venue = excluded.venue, kind = excluded.kind, \
                       tick_size = excluded.tick_size, lot_size = excluded.lot_size RETURNING id";
            let id: i64 = on_pool!(self, pool => {
                let row = sqlx::query(sql)
                    .bind(&*inst.symbol)
                    .bind(&*inst.venue)
                    .bind(kind)
                    .bind(inst.tick_size.0)
                    .bind(inst.lot_size.0)
                    .fetch_one(pool)
                    .await?;
                get_id(&row)?
            });
            ids.push(id);
        }
        Ok(ids)
    }

    /// Every instrument the store knows, as a table for a process that has no
    /// feed of its own (replay), with the mapping.
    pub async fn load_instruments(&self) -> Result<(Instruments, StoreIds), StoreError> {
        let sql = "SELECT id, symbol, venue, kind, tick_size, lot_size FROM instruments ORDER BY id";
        let rows: Vec<(i64, String, String, String, i64, i64)> = on_pool!(self, pool => {
            let rows = sqlx::query(sql).fetch_all(pool).await?;
            rows.iter()
                .map(|r| {
                    Ok((get_id(r)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?))
                })
                .collect::<Result<_, StoreError>>()?
        });
        let mut instruments = Instruments::new();
        let mut ids = StoreIds::default();
        for (id, symbol, venue, kind, tick, lot) in rows {
            let kind = if kind == "equity" { AssetKind::Equity } else { AssetKind::Crypto };
            let spec = InstrumentSpec { symbol, venue, kind, tick_size: Price(tick), lot_size: Size(lot) };
            instruments.add(spec).map_err(|e| StoreError::Corrupt { table: "instruments", detail: e.to_string() })?;
            ids.push(id);
        }
        debug_assert!(instruments.iter().all(|i| i.price_decimals == decimals_of(i.tick_size.0)));
        Ok((instruments, ids))
    }

    /// Creates the day partitions `events` need (PostgreSQL; a no-op on SQLite).
    async fn ensure_partitions(&self, events: &[Event]) -> Result<(), StoreError> {
        let Backend::Postgres(pool) = &self.backend else { return Ok(()) };
        let mut missing: Vec<i64> = Vec::new();
        {
            let known = self.partitions.lock();
            let mut last = None;
            for event in events {
                let day = (event.ts_event / DAY_NS) as i64;
                if last != Some(day) && !known.contains(&day) && !missing.contains(&day) {
                    missing.push(day);
                }
                last = Some(day);
            }
        }
        for day in missing {
            let (from, to) = (day * DAY_NS as i64, (day + 1) * DAY_NS as i64);
            for table in EVENT_TABLES {
                let name = partition_name(table, day);
                let sql = format!(
                    "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} FOR VALUES FROM ({from}) TO ({to})"
                );
                if let Err(error) = sqlx::raw_sql(AssertSqlSafe(sql)).execute(pool).await {
                    // Another writer may have created it in between.
                    let exists: bool =
                        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(&name).fetch_one(pool).await?;
                    if !exists {
                        return Err(error.into());
                    }
                }
            }
            self.partitions.lock().insert(day);
        }
        Ok(())
    }

    /// Writes sequenced events (whose `instrument` is the store id) in one
    /// transaction. With `idempotent`, rows already stored are skipped; without,
    /// a row already stored fails the fast path and the batch is written again
    /// idempotently. Returns the number of events written.
    pub async fn write(&self, events: &[Event], idempotent: bool) -> Result<u64, StoreError> {
        if events.is_empty() {
            return Ok(0);
        }
        self.ensure_partitions(events).await?;
        match &self.backend {
            Backend::Postgres(pool) => {
                let tables = rows::copy_text(events);
                let heads = rows::heads_upsert(events, true);
                if !idempotent {
                    match pg_copy(pool, &tables, heads.as_deref(), false).await {
                        Err(e) if e.is_unique_violation() => {
                            metrics::counter!("tickwire_store_idempotent_rewrites_total").increment(1);
                        }
                        other => return other.map(|()| events.len() as u64),
                    }
                }
                pg_copy(pool, &tables, heads.as_deref(), true).await?;
            }
            Backend::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                for statement in rows::sqlite_inserts(events).into_iter().chain(rows::heads_upsert(events, false)) {
                    sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
        }
        Ok(events.len() as u64)
    }

    /// Records ranges the store will never hold.
    pub async fn write_gaps(&self, gaps: &[GapRecord]) -> Result<(), StoreError> {
        let sql = "INSERT INTO gaps (instrument_id, channel, from_seq, to_seq, ts_from, ts_to, reason) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING";
        for gap in gaps {
            on_pool!(self, pool => {
                sqlx::query(sql)
                    .bind(gap.instrument)
                    .bind(gap.channel.index() as i16)
                    .bind(gap.from_seq as i64)
                    .bind(gap.to_seq as i64)
                    .bind(gap.ts_from as i64)
                    .bind(gap.ts_to as i64)
                    .bind(gap.reason)
                    .execute(pool)
                    .await?;
            });
        }
        let greatest = if self.is_postgres() { "GREATEST" } else { "max" };
        let heads = format!(
            "INSERT INTO stream_heads (instrument_id, channel, last_seq) VALUES ($1, $2, $3) \
             ON CONFLICT (instrument_id, channel) DO UPDATE SET last_seq = {greatest}(stream_heads.last_seq, excluded.last_seq)"
        );
        for gap in gaps {
            on_pool!(self, pool => {
                sqlx::query(AssertSqlSafe(heads.clone()))
                    .bind(gap.instrument)
                    .bind(gap.channel.index() as i16)
                    .bind(gap.to_seq as i64)
                    .execute(pool)
                    .await?;
            });
        }
        Ok(())
    }

    /// The highest sequence this store has seen of every stored stream (store
    /// instrument id, channel): where this run's sequences continue.
    pub async fn stream_heads(&self) -> Result<FxHashMap<(i64, Channel), u64>, StoreError> {
        let sql = "SELECT CAST(instrument_id AS BIGINT), CAST(channel AS BIGINT), last_seq FROM stream_heads";
        let rows: Vec<(i64, i64, i64)> = on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await?);
        let mut heads = FxHashMap::default();
        for (instrument, channel, seq) in rows {
            let channel = Channel::STORED
                .get(channel as usize)
                .copied()
                .ok_or_else(|| StoreError::Corrupt { table: "stream_heads", detail: format!("channel {channel}") })?;
            heads.insert((instrument, channel), seq.max(0) as u64);
        }
        Ok(heads)
    }

    /// When this store's continuous sequence line began (ns): rows sent before
    /// it came from runs whose sequences restarted and never continue a resume.
    pub async fn sequence_line_started(&self) -> Result<Nanos, StoreError> {
        let sql = "SELECT started_ns FROM sequence_line WHERE id = 1";
        let started: i64 = on_pool!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await?);
        Ok(started.max(0) as u64)
    }

    /// Drops every whole day that ends at or before `horizon` (ns since the
    /// epoch): PostgreSQL partitions are dropped, SQLite days deleted. Returns the
    /// number of days (partitions) removed.
    pub async fn drop_before(&self, horizon: Nanos) -> Result<u64, StoreError> {
        let first_kept_day = (horizon / DAY_NS) as i64;
        let cutoff = first_kept_day * DAY_NS as i64;
        let mut dropped = 0;
        match &self.backend {
            Backend::Postgres(pool) => {
                for table in EVENT_TABLES {
                    let names: Vec<String> = sqlx::query_scalar(
                        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                         JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1",
                    )
                    .bind(table)
                    .fetch_all(pool)
                    .await?;
                    for name in names {
                        let Some(day) = partition_day(table, &name) else { continue };
                        if day < first_kept_day {
                            sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE IF EXISTS {name}"))).execute(pool).await?;
                            self.partitions.lock().remove(&day);
                            dropped += 1;
                        }
                    }
                }
            }
            Backend::Sqlite(pool) => {
                for table in EVENT_TABLES {
                    let sql = format!("DELETE FROM {table} WHERE ts_event < $1");
                    let result = sqlx::query(AssertSqlSafe(sql)).bind(cutoff).execute(pool).await?;
                    dropped += u64::from(result.rows_affected() > 0);
                }
            }
        }
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM gaps WHERE ts_to < $1").bind(cutoff).execute(pool).await?;
            sqlx::query("DELETE FROM book_snapshots WHERE ts_event < $1").bind(cutoff).execute(pool).await?;
        });
        Ok(dropped)
    }

    /// Number of stored events of one channel (all instruments), for tests and tools.
    pub async fn count(&self, channel: Channel) -> Result<u64, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM {}", EVENT_TABLES[stored_index(channel)?]);
        let n: i64 = on_pool!(self, pool => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(pool).await?);
        Ok(n as u64)
    }
}

fn get_id<R: Row>(row: &R) -> Result<i64, StoreError>
where
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    // INTEGER is 4 bytes on PostgreSQL and 8 on SQLite.
    match row.try_get::<i64, _>(0) {
        Ok(id) => Ok(id),
        Err(_) => Ok(i64::from(row.try_get::<i32, _>(0)?)),
    }
}

/// One transaction of COPYs: straight into the tables, or (idempotent) through
/// per-session staging tables and `INSERT … ON CONFLICT DO NOTHING`.
async fn pg_copy(
    pool: &PgPool,
    tables: &rows::CopyTables,
    heads: Option<&str>,
    idempotent: bool,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    for (table, data) in EVENT_TABLES.iter().zip(tables.data.iter()) {
        if data.is_empty() {
            continue;
        }
        let columns = rows::COLUMNS[EVENT_TABLES.iter().position(|t| t == table).unwrap_or(0)];
        if idempotent {
            let stage = format!("stage_{table}");
            let create = format!(
                "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            );
            sqlx::raw_sql(AssertSqlSafe(create)).execute(&mut *tx).await?;
            let mut copy = tx.copy_in_raw(&format!("COPY {stage} ({columns}) FROM STDIN")).await?;
            copy.send(data.as_slice()).await?;
            copy.finish().await?;
            let insert =
                format!("INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} ON CONFLICT DO NOTHING");
            sqlx::raw_sql(AssertSqlSafe(insert)).execute(&mut *tx).await?;
        } else {
            let mut copy = tx.copy_in_raw(&format!("COPY {table} ({columns}) FROM STDIN")).await?;
            copy.send(data.as_slice()).await?;
            copy.finish().await?;
        }
    }
    if let Some(heads) = heads {
        sqlx::raw_sql(AssertSqlSafe(heads.to_owned())).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The directory of the journal that belongs to a store URL, unless configured.
pub fn default_journal_dir(url: &str) -> PathBuf {
    let base = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|p| p.split('?').next().unwrap_or(p))
        .filter(|p| !p.is_empty() && *p != ":memory:")
        .and_then(|p| Path::new(p).parent().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("data"));
    base.join("journal")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_089), (2025, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for day in [-800_000, -1, 0, 59, 60, 11_016, 20_089, 30_000, 2_000_000] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(partition_name("trades", 20_089), "trades_20250101");
        assert_eq!(partition_day("trades", "trades_20250101"), Some(20_089));
        assert_eq!(partition_day("trades", "quotes_20250101"), None);
        assert_eq!(partition_day("trades", "trades_2025010"), None);
    }

    #[test]
    fn times_parse_as_nanos_or_rfc3339() {
        assert_eq!(parse_time("1700000000000000000"), Ok(1_700_000_000_000_000_000));
        assert_eq!(parse_time("2025-01-01T00:00:00Z"), Ok(20_089 * DAY_NS));
        assert_eq!(parse_time("2025-01-01T00:00:00.5Z"), Ok(20_089 * DAY_NS + 500_000_000));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("-5").is_err());
    }

    #[test]
    fn urls_resolve_and_journals_sit_beside_sqlite_files() {
        assert_eq!(resolve_url(Some("sqlite://x.db")), "sqlite://x.db");
        assert_eq!(default_journal_dir("sqlite://data/tickwire.db"), PathBuf::from("data/journal"));
        assert_eq!(default_journal_dir("sqlite:///tmp/a/b.db?mode=rwc"), PathBuf::from("/tmp/a/journal"));
        assert_eq!(default_journal_dir("postgres://localhost/db"), PathBuf::from("data/journal"));
    }
}
