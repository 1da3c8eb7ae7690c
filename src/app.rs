//! The composition root: builds every stage, wires the channels, spawns the tasks,
//! and owns the shutdown order.
//!
//! ```text
//! feed task ──(bounded mpsc of event batches)──► engine task ──► Fanout ──► outboxes ──► session tasks
//! ```
//! The feed → engine channel holds [`FEED_CHANNEL_BATCHES`] batches; when the engine
//! falls behind, feeds wait on it. The engine task is the only writer of instrument
//! state. Shutdown: stop accepting and stop the feeds, let the engine drain what
//! they sent, then close every session with 1001 after flushing what it had queued.
//!
//! History: the engine also hands every processed batch to the store's
//! [`HistoryTap`] (a `try_send`, never a wait); the writer task drains after the
//! engine on shutdown. A replay feed (`--feed replay:…`) reads the store and
//! writes no history of its own.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::serve::ListenerExt;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::book::Engine;
use crate::config::{FeedSpec, ServeArgs};
use crate::fanout::Fanout;
use crate::feed::simulator::{self, Simulator};
use crate::feed::{EventBatch, FeedHealth};
use crate::model::{Instruments, now_nanos};
use crate::store::writer::{HistoryTap, HistoryWriter, WriterReport};
use crate::store::{DAY_NS, Store, StoreError, StoreIds};
use crate::transport::{AppState, HistoryAccess, router};

/// Capacity, in batches, of the channel from feeds to the engine.
pub const FEED_CHANNEL_BATCHES: usize = 1024;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Simulator(#[from] simulator::SimError),
    #[error("history store: {0}")]
    Store(#[from] StoreError),
    #[error("a replay feed needs a history store (--store)")]
    ReplayWithoutStore,
}

/// The process-wide Prometheus recorder, installed once.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::warn!(%error, "metrics recorder not installed");
                None
            }
        })
        .clone()
}

/// A running gateway.
pub struct Server {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop_feeds: CancellationToken,
    feeds: Vec<JoinHandle<()>>,
    engine: JoinHandle<()>,
    writer: Option<JoinHandle<WriterReport>>,
    background: Vec<JoinHandle<()>>,
    http: JoinHandle<std::io::Result<()>>,
    grace: Duration,
}

/// Builds and starts everything `serve` runs.
pub async fn start(args: &ServeArgs) -> Result<Server, StartError> {
    let metrics = metrics_handle();
    let run_started = now_nanos();
    let store_url = args.history.store.url();
    let store = match &store_url {
        Some(url) => Some(Store::open(url).await?),
        None => None,
    };
    let (tx, rx) = mpsc::channel::<EventBatch>(FEED_CHANNEL_BATCHES);
    let stop_feeds = CancellationToken::new();
    let mut feeds = Vec::new();
    let mut feed_health = Vec::new();
    let (instruments, ids, record_history) = match &args.feed {
        FeedSpec::Simulator => {
            let mut instruments = Instruments::new();
            let universe = simulator::select_universe(&args.symbols)?;
            let sim = Simulator::new(&universe, &mut instruments, args.seed)?;
            let health = Arc::new(FeedHealth::new("simulator"));
            feed_health.push(health.clone());
            feeds.push(tokio::spawn(simulator::run(sim, args.rate, tx, health, stop_feeds.clone())));
            let ids = match &store {
                Some(store) => Some(Arc::new(store.register_instruments(&instruments).await?)),
                None => None,
            };
            (instruments, ids, true)
        }
        FeedSpec::Replay(range) => {
            let store = store.as_ref().ok_or(StartError::ReplayWithoutStore)?;
            let (instruments, ids) = store.load_instruments().await?;
            let ids = Arc::new(ids);
            let store_ids: Vec<i64> = instruments.iter().map(|i| ids.store_id(i.id)).collect();
            let health = Arc::new(FeedHealth::new("replay"));
            feed_health.push(health.clone());
            let feed =
                crate::feed::replay::run(store.clone(), ids.clone(), store_ids, *range, tx, health, stop_feeds.clone());
            feeds.push(tokio::spawn(feed));
            // Replayed events are history already: recording them again would
            // store each tick twice under new sequences.
            (instruments, Some(ids), false)
        }
    };
    let instruments = Arc::new(instruments);

    let mut writer = None;
    let mut tap = None;
    let mut writer_stats = None;
    let mut background = Vec::new();
    let stop_background = stop_feeds.clone();
    if let (Some(store), Some(ids), Some(url), true) = (&store, &ids, &store_url, record_history) {
        let history = HistoryWriter::new(store.clone(), StoreIds::clone(ids), args.history.writer(url))?;
        let (history_tap, stats, task) = history.into_parts();
        tap = Some(history_tap);
        writer_stats = Some(stats);
        writer = Some(tokio::spawn(task.run()));
        if args.history.retention_days > 0 {
            let horizon = u64::from(args.history.retention_days) * DAY_NS;
            background.push(tokio::spawn(run_retention(store.clone(), horizon, stop_background)));
        }
    }
    let history = match (&store, &ids) {
        (Some(store), Some(ids)) => {
            Some(HistoryAccess { store: store.clone(), ids: ids.clone(), writer: writer_stats, run_started })
        }
        _ => None,
    };

    let engine = Engine::new(&instruments, args.book_depth as usize);
    let fanout = Arc::new(Fanout::with_ring(instruments.clone(), engine.reader(), args.outbox(), args.ring()));
    let engine = tokio::spawn(run_engine(engine, fanout.clone(), rx, tap));

    let shutdown = CancellationToken::new();
    let static_dir = Some(args.static_dir.clone());
    let state = Arc::new(
        AppState::new(fanout, feed_health, args.limits(), args.max_connections, shutdown.clone(), metrics, static_dir)
            .with_history(history),
    );
    let listener =
        TcpListener::bind(args.listen).await.map_err(|source| StartError::Bind { addr: args.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: args.listen, source })?;
    // Batching is ours; Nagle's algorithm would only add latency.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
    });
    let app = router(state.clone());
    let http =
        tokio::spawn(
            async move { axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await },
        );
    tracing::info!(%addr, instruments = instruments.len(), rate = args.rate, "tickwire serving");
    Ok(Server {
        addr,
        state,
        stop_feeds,
        feeds,
        engine,
        writer,
        background,
        http,
        grace: Duration::from_millis(args.shutdown_grace_ms),
    })
}

/// Applies every event to the book and publishes it. Ends when every feed is gone.
async fn run_engine(
    mut engine: Engine,
    fanout: Arc<Fanout>,
    mut rx: mpsc::Receiver<EventBatch>,
    history: Option<HistoryTap>,
) {
    let mut refused: u64 = 0;
    while let Some(batch) = rx.recv().await {
        let mut sequenced = Vec::with_capacity(if history.is_some() { batch.len() } else { 0 });
        for mut event in batch {
            match engine.apply(&mut event) {
                Ok(()) => {
                    fanout.publish(&event);
                    if history.is_some() {
                        sequenced.push(event);
                    }
                }
                Err(error) => {
                    refused += 1;
                    metrics::counter!("tickwire_engine_refused_events_total").increment(1);
                    if refused.is_power_of_two() {
                        tracing::warn!(%error, refused, "event refused by the book");
                    }
                }
            }
        }
        if let Some(tap) = &history {
            tap.offer(sequenced);
        }
    }
}

/// Drops history older than `horizon` now and then every hour, until `stop`.
async fn run_retention(store: Store, horizon: u64, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        match store.drop_before(now_nanos().saturating_sub(horizon)).await {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(dropped, "retention dropped old history partitions"),
            Err(error) => tracing::warn!(%error, "retention failed; will try again"),
        }
    }
}

impl Server {
    /// Stops in order: feeds, engine, the history writer (drains, or journals
    /// what the store cannot take), then sessions (1001) and the listener.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.stop_feeds.cancel();
        for feed in self.feeds {
            let _ = feed.await;
        }
        let _ = self.engine.await;
        if let Some(writer) = self.writer {
            let _ = writer.await;
        }
        for task in self.background {
            let _ = task.await;
        }
        self.state.shutdown.cancel();
        self.state.sessions.close();
        if tokio::time::timeout(self.grace, self.state.sessions.wait()).await.is_err() {
            tracing::warn!(remaining = self.state.sessions.len(), "sessions did not close within the grace period");
        }
        let _ = tokio::time::timeout(self.grace, self.http).await;
        tracing::info!("stopped");
    }
}
