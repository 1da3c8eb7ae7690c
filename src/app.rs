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
use crate::model::Instruments;
use crate::transport::{AppState, router};

/// Capacity, in batches, of the channel from feeds to the engine.
pub const FEED_CHANNEL_BATCHES: usize = 1024;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Simulator(#[from] simulator::SimError),
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
    http: JoinHandle<std::io::Result<()>>,
    grace: Duration,
}

/// Builds and starts everything `serve` runs.
pub async fn start(args: &ServeArgs) -> Result<Server, StartError> {
    let metrics = metrics_handle();
    let mut instruments = Instruments::new();
    let FeedSpec::Simulator = args.feed;
    let universe = simulator::select_universe(&args.symbols)?;
    let sim = Simulator::new(&universe, &mut instruments, args.seed)?;
    let instruments = Arc::new(instruments);

    let engine = Engine::new(&instruments, args.book_depth as usize);
    let fanout = Arc::new(Fanout::with_ring(instruments.clone(), engine.reader(), args.outbox(), args.ring()));
    let (tx, rx) = mpsc::channel::<EventBatch>(FEED_CHANNEL_BATCHES);

    let stop_feeds = CancellationToken::new();
    let sim_health = Arc::new(FeedHealth::new("simulator"));
    let feeds = vec![tokio::spawn(simulator::run(sim, args.rate, tx, sim_health.clone(), stop_feeds.clone()))];
    let engine = tokio::spawn(run_engine(engine, fanout.clone(), rx));

    let shutdown = CancellationToken::new();
    let static_dir = Some(args.static_dir.clone());
    let state = Arc::new(AppState::new(
        fanout,
        vec![sim_health],
        args.limits(),
        args.max_connections,
        shutdown.clone(),
        metrics,
        static_dir,
    ));
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
    Ok(Server { addr, state, stop_feeds, feeds, engine, http, grace: Duration::from_millis(args.shutdown_grace_ms) })
}

/// Applies every event to the book and publishes it. Ends when every feed is gone.
async fn run_engine(mut engine: Engine, fanout: Arc<Fanout>, mut rx: mpsc::Receiver<EventBatch>) {
    let mut refused: u64 = 0;
    while let Some(batch) = rx.recv().await {
        for mut event in batch {
            match engine.apply(&mut event) {
                Ok(()) => {
                    fanout.publish(&event);
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
    }
}

impl Server {
    /// Stops in order: feeds, engine, then sessions (1001) and the listener.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.stop_feeds.cancel();
        for feed in self.feeds {
            let _ = feed.await;
        }
        let _ = self.engine.await;
        self.state.shutdown.cancel();
        self.state.sessions.close();
        if tokio::time::timeout(self.grace, self.state.sessions.wait()).await.is_err() {
            tracing::warn!(remaining = self.state.sessions.len(), "sessions did not close within the grace period");
        }
        let _ = tokio::time::timeout(self.grace, self.http).await;
        tracing::info!("stopped");
    }
}
