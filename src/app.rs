//! The composition root: builds every stage, wires the channels, spawns the tasks,
//! and owns the shutdown order.
//!
//! ```text
//! feed tasks ──(bounded mpsc of event batches)──► engine task ──► Fanout ──► outboxes ──► session tasks
//! ```
//! One task per feed: the simulator, and one supervisor task per venue feed
//! (`--feed binance:…` etc., see [`feed::supervisor`]); they all share the one
//! bounded channel to the engine. Venue instruments are registered here, before the
//! engine is built, with venue-qualified symbols (`binance:BTC-USDT`).
//!
//! The feed → engine channel holds [`FEED_CHANNEL_BATCHES`] batches; when the engine
//! falls behind, feeds wait on it. The engine task is the only writer of instrument
//! state. Shutdown: stop accepting and stop the feeds, let the engine drain what
//! they sent, then close every session with 1001 after flushing what it had queued.
//!
//! History: the engine appends every sequenced batch to the store's write-ahead
//! journal through the [`HistoryTap`] before it fans the batch out (one `write`,
//! never a wait on the database); the writer task tails the journal into the
//! store and drains after the engine on shutdown. Sequences continue from the
//! store (see [`SequenceLine`]). A replay feed (`--feed replay:…`) reads the store and
//! writes no history of its own.
//!
//! [`feed::supervisor`]: crate::feed::supervisor

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::serve::ListenerExt;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::transport::tls::TlsListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::book::Engine;
use crate::cluster::gateway::BusSource;
use crate::cluster::ingest::BusTap;
use crate::cluster::{Bus, BusError, Role};
use crate::config::{AuthMode, FeedSpec, ServeArgs, VenueReference};
use crate::fanout::{Fanout, wake_all};
use crate::feed::reference::{self, ReferenceBoard, VenueKind};
use crate::feed::simulator::{self, Simulator};
use crate::feed::supervisor::{self, FeedContext, HttpClient, SupervisorConfig};
use crate::feed::{EventBatch, FeedHealth, Venue, binance, coinbase, kraken, okx, venue_instrument};
use crate::keys::KeyRing;
use crate::latency::EngineLatencies;
use crate::model::{Channel, InstrumentError, InstrumentId, Instruments, SequenceLine, now_nanos};
use crate::store::journal::Leftovers;
use crate::store::writer::{HistoryTap, HistoryWriter, WriterReport};
use crate::store::{DAY_NS, Store, StoreError, StoreIds};
use crate::transport::serve::serve;
use crate::transport::{AppState, HistoryAccess, router};

/// Capacity, in batches, of the channel from feeds to the engine.
pub const FEED_CHANNEL_BATCHES: usize = 1024;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Settings(#[from] crate::config::SettingsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Simulator(#[from] simulator::SimError),
    #[error(transparent)]
    Instrument(#[from] InstrumentError),
    #[error("venue feeds: {0}")]
    Feed(#[from] supervisor::ConnectError),
    #[error("history store: {0}")]
    Store(#[from] StoreError),
    #[error("a replay feed needs a history store (--store)")]
    ReplayWithoutStore,
    #[error("a replay feed plays the stored instruments and cannot be combined with other feeds")]
    ReplayNotAlone,
    #[error("access control: {0}")]
    Access(#[from] crate::transport::access::AccessError),
    #[error(transparent)]
    Tls(#[from] crate::transport::tls::TlsError),
    #[error("TLS needs both --tls-cert and --tls-key")]
    TlsHalf,
    #[error(transparent)]
    Jwt(#[from] crate::jwt::JwtError),
    #[error("--auth keys reads the keys from the store: give --store")]
    KeysWithoutStore,
    #[error("--auth tokens needs --auth-token or --auth-tokens-file")]
    TokensWithoutTokens,
    #[error("cluster settings: {0}")]
    Cluster(String),
    #[error("bus: {0}")]
    Bus(#[from] BusError),
}

/// A venue feed ready to spawn.
enum VenueFeed {
    Binance(binance::Binance),
    Coinbase(coinbase::Coinbase),
    Kraken(kraken::Kraken),
    Okx(okx::Okx),
}

/// Registers `symbols` (venue spelling → our symbol) with the venue's own
/// tick and lot, read from its reference endpoint when `reference` is given
/// (`--venue-reference fetch`), and returns the pairs a venue takes. An
/// instrument whose reference data cannot be had is registered with the
/// fallback increments, and that is reported (an error line, a metric,
/// `/v1/instruments`' `reference`), never silent.
async fn register(
    instruments: &mut Instruments,
    board: &ReferenceBoard,
    reference: Option<(&HttpClient, &str)>,
    venue: VenueKind,
    symbols: &[String],
    venue_symbol: impl Fn(&str) -> String,
    our_symbol: impl Fn(&str) -> String,
) -> Result<Vec<(String, InstrumentId)>, InstrumentError> {
    let natives: Vec<String> = symbols.iter().map(|given| venue_symbol(given)).collect();
    let fetched: Vec<Option<Result<reference::Reference, reference::ReferenceError>>> = match reference {
        Some((http, base)) => reference::fetch_all(http, venue, base, &natives).await.into_iter().map(Some).collect(),
        None => natives.iter().map(|_| None).collect(),
    };
    let mut pairs = Vec::with_capacity(natives.len());
    for (native, fetched) in natives.into_iter().zip(fetched) {
        let mut spec = venue_instrument(our_symbol(&native), venue.as_str());
        let mut entry = reference::Entry {
            venue,
            native: native.clone(),
            source: reference::Source::Off,
            reference: None,
            error: None,
            changed: None,
        };
        match fetched {
            None => {}
            Some(Ok(found)) => {
                spec.tick_size = found.tick_size;
                spec.lot_size = found.lot_size;
                entry.source = reference::Source::Venue;
                entry.reference = Some(found);
            }
            Some(Err(error)) => {
                metrics::counter!("tickwire_reference_errors_total", "venue" => venue.as_str()).increment(1);
                tracing::error!(
                    venue = venue.as_str(),
                    %native,
                    %error,
                    "no reference data: the instrument's prices and sizes use 1e-8 increments until a restart can fetch it"
                );
                entry.source = reference::Source::Unavailable;
                entry.error = Some(error.to_string());
            }
        }
        let id = instruments.add(spec)?;
        board.set(id, entry);
        // Clients may ask for it by the venue's own spelling.
        instruments.add_alias(&native, id);
        pairs.push((native, id));
    }
    Ok(pairs)
}

/// Every connection is a file descriptor: raise the open-file limit as far as the
/// process may (a privileged one lifts the hard limit too, up to 262,144).
pub fn raise_open_file_limit() -> u64 {
    const WANTED: u64 = 262_144;
    if rlimit::setrlimit(rlimit::Resource::NOFILE, WANTED, WANTED).is_ok() {
        return WANTED;
    }
    rlimit::increase_nofile_limit(WANTED).unwrap_or(0)
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
    stop_background: CancellationToken,
}

/// Builds and starts everything `serve` runs.
pub async fn start(args: &ServeArgs) -> Result<Server, StartError> {
    args.validate()?;
    let metrics = metrics_handle();
    let access = crate::transport::access::AccessPolicy::new(
        &args.auth_tokens,
        args.auth_tokens_file.as_deref(),
        &args.allowed_origins,
    )?
    .with_query_token(args.query_token_allowed());
    if args.auth.contains(&AuthMode::Tokens) && !access.requires_token() {
        return Err(StartError::TokensWithoutTokens);
    }
    if access.requires_token() {
        tracing::info!("the API requires a bearer token");
    }
    if args.allowed_origins.is_empty() && !args.listen.ip().is_loopback() {
        // Browsers send cookies and tokens of their own origin with cross-site
        // WebSocket handshakes: on a reachable address, say that any page may.
        tracing::warn!(
            listen = %args.listen,
            "any web page may use this API from a visitor's browser (cross-site WebSockets included): set --allowed-origin"
        );
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::transport::tls::server_config(cert, key)?),
        (None, None) => None,
        _ => return Err(StartError::TlsHalf),
    };
    let role = args.cluster.role;
    let bus = match args.cluster.bus().map_err(StartError::Cluster)? {
        Some(config) => Some(Bus::connect(config, role.as_str()).await?),
        None if role != Role::All => return Err(BusError::NoBus(role.as_str()).into()),
        None => None,
    };
    if args.feeds().contains(&FeedSpec::Simulator) {
        // Refuse bad symbols before touching the store (which may create files).
        simulator::select_universe(&args.symbols)?;
    }
    // In a cluster one role writes history: an ingest node keeps none, and a
    // gateway reads one only when told where (--store), to resume from it.
    let store_url = match role {
        Role::All | Role::Store => args.history.store.url(),
        Role::Gateway if args.history.store.store.is_some() => args.history.store.url(),
        Role::Gateway | Role::Ingest => None,
    };
    let store = match &store_url {
        Some(url) => Some(Store::open(url).await?),
        None => None,
    };
    let access = if args.auth.contains(&AuthMode::Jwt) {
        let settings = crate::jwt::JwtSettings {
            secret_file: args.jwt_secret_file.as_deref(),
            public_key: args.jwt_public_key.as_deref(),
            jwks_file: args.jwt_jwks_file.as_deref(),
            audience: args.jwt_audience.as_deref(),
            issuer: args.jwt_issuer.as_deref(),
            leeway_s: args.jwt_leeway_s,
        };
        let verifier = crate::jwt::JwtVerifier::new(&settings)?;
        tracing::info!("the API takes JSON Web Tokens");
        access.with_jwt(Arc::new(verifier), Duration::from_secs(args.jwt_warn_s))
    } else {
        access
    };
    let (access, key_ring) = match (args.auth.contains(&AuthMode::Keys), &store) {
        (false, _) => (access, None),
        (true, None) => return Err(StartError::KeysWithoutStore),
        (true, Some(store)) => {
            let ring = Arc::new(KeyRing::default());
            ring.refresh(store).await?;
            tracing::info!("the API takes keys (tickwire keys)");
            (access.with_keys(ring.clone()), Some((ring, store.clone())))
        }
    };
    let mut instruments = Instruments::new();
    let board = Arc::new(ReferenceBoard::default());
    let bases = reference::RestBases {
        binance: args.venues.binance_rest_url.clone(),
        coinbase: args.venues.coinbase_rest_url.clone(),
        kraken: args.venues.kraken_rest_url.clone(),
        okx: args.venues.okx_rest_url.clone(),
        bybit: args.venues.bybit_rest_url.clone(),
    };
    let fetch_reference = args.venues.venue_reference == VenueReference::Fetch;
    let reference_http = if fetch_reference && args.feeds().iter().any(FeedSpec::is_venue) {
        Some(supervisor::http_client()?)
    } else {
        None
    };
    let reference_of = |venue: VenueKind| reference_http.as_ref().map(|http| (http, bases.of(venue)));
    let mut sim = None;
    let mut venues = Vec::new();
    let mut replay = None;
    let specs = args.feeds();
    for spec in specs.iter().cloned() {
        match spec {
            FeedSpec::Replay(range) => {
                if specs.len() > 1 {
                    return Err(StartError::ReplayNotAlone);
                }
                let store = store.as_ref().ok_or(StartError::ReplayWithoutStore)?;
                let (stored, ids) = store.load_instruments().await?;
                instruments = stored;
                replay = Some((range, Arc::new(ids)));
            }
            FeedSpec::Simulator if sim.is_none() => {
                let universe = simulator::select_universe(&args.symbols)?;
                sim = Some(Simulator::new(&universe, &mut instruments, args.seed)?);
            }
            FeedSpec::Simulator => {}
            FeedSpec::Binance(symbols) => {
                let pairs = register(
                    &mut instruments,
                    &board,
                    reference_of(VenueKind::Binance),
                    VenueKind::Binance,
                    &symbols,
                    binance::venue_symbol,
                    binance::instrument_symbol,
                )
                .await?;
                venues.push(VenueFeed::Binance(binance::Binance::new(pairs)));
            }
            FeedSpec::Coinbase(products) => {
                let upper = |p: &str| p.to_ascii_uppercase();
                let pairs = register(
                    &mut instruments,
                    &board,
                    reference_of(VenueKind::Coinbase),
                    VenueKind::Coinbase,
                    &products,
                    upper,
                    coinbase::instrument_symbol,
                )
                .await?;
                venues.push(VenueFeed::Coinbase(coinbase::Coinbase::new(pairs)));
            }
            FeedSpec::Kraken(pairs) => {
                let pairs = register(
                    &mut instruments,
                    &board,
                    reference_of(VenueKind::Kraken),
                    VenueKind::Kraken,
                    &pairs,
                    kraken::venue_symbol,
                    kraken::instrument_symbol,
                )
                .await?;
                for (native, id) in &pairs {
                    for legacy in kraken::legacy_names(native) {
                        instruments.add_alias(&legacy, *id);
                    }
                }
                venues.push(VenueFeed::Kraken(kraken::Kraken::new(pairs, args.venues.kraken_book_depth)));
            }
            FeedSpec::Okx(inst_ids) => {
                let pairs = register(
                    &mut instruments,
                    &board,
                    reference_of(VenueKind::Okx),
                    VenueKind::Okx,
                    &inst_ids,
                    okx::venue_symbol,
                    okx::instrument_symbol,
                )
                .await?;
                venues.push(VenueFeed::Okx(okx::Okx::new(pairs)));
            }
        }
    }
    let instruments = Arc::new(instruments);
    let ids = match (&store, &replay) {
        (_, Some((_, ids))) => Some(ids.clone()),
        (Some(store), None) => Some(Arc::new(store.register_instruments(&instruments).await?)),
        (None, None) => None,
    };

    let mut writer = None;
    let mut tap = None;
    let mut writer_stats = None;
    // Sequences continue from the store, and from what a crashed run left in the
    // journal; without a store (or replaying it) every stream starts at 1.
    let mut line = SequenceLine::fresh(instruments.len());
    let mut background = Vec::new();
    let stop_background = CancellationToken::new();
    if let Some(http) = reference_http.clone() {
        let every = Duration::from_secs(args.venues.venue_reference_refresh_s);
        let task = reference::refresh(board.clone(), instruments.clone(), http, bases, every, stop_background.clone());
        background.push(tokio::spawn(task));
    }
    // Replayed events are history already: recording them again would store each
    // tick twice under new sequences.
    if let (Some(store), Some(ids), Some(url), None, true) = (&store, &ids, &store_url, &replay, role.sequences()) {
        let history = HistoryWriter::new(store.clone(), StoreIds::clone(ids), args.history.writer(url))?;
        line = continue_line(store, ids, &instruments, &history.leftovers).await?;
        let (history_tap, stats, task) = history.into_parts();
        tap = Some(history_tap);
        writer_stats = Some(stats);
        writer = Some(tokio::spawn(task.run()));
        if args.history.retention_days > 0 {
            let horizon = u64::from(args.history.retention_days) * DAY_NS;
            background.push(tokio::spawn(run_retention(store.clone(), horizon, stop_background.clone())));
        }
    }
    let history = match (&store, &ids) {
        (Some(store), Some(ids)) => {
            let line_started = store.sequence_line_started().await?;
            Some(HistoryAccess {
                store: store.clone(),
                ids: ids.clone(),
                writer: writer_stats,
                line_started,
                book_depth: args.book_depth as usize,
            })
        }
        _ => None,
    };

    let stop_feeds = CancellationToken::new();
    let mut bus_tap = None;
    let mut healths = Vec::new();
    match (&bus, role) {
        (Some(bus), Role::All | Role::Ingest) => {
            // One ingest node publishes at a time; this one may stand by here.
            let Some(lease) = crate::cluster::lease::acquire(bus, &CancellationToken::new()).await? else {
                return Err(StartError::Cluster("stopped while standing by".into()));
            };
            background.push(tokio::spawn(lease.keep(stop_background.clone())));
            // Sequences continue from the bus (and the store): one line for the cluster.
            let store_line = writer.is_some().then_some(&line);
            line = crate::cluster::ingest::continue_line(bus, &instruments, store_line).await?;
            let (tap, task) = crate::cluster::ingest::publisher(bus.clone(), instruments.clone(), line.epoch);
            bus_tap = Some(tap);
            background.push(tokio::spawn(task));
        }
        (Some(bus), Role::Gateway) => {
            let Some(epoch) = crate::cluster::gateway::wait_for_epoch(bus, &stop_feeds).await else {
                return Err(StartError::Cluster("stopped before the bus had a sequence epoch".into()));
            };
            line = SequenceLine::with_epoch(epoch, vec![[0; Channel::COUNT]; instruments.len()]);
        }
        _ => {}
    }
    let mut engine = Engine::new(&instruments, args.book_depth as usize);
    engine.continue_line(&line);
    if let (true, None, Some(store), Some(ids)) = (role.sequences(), &replay, &store, &ids) {
        seed_day_stats(&mut engine, &instruments, store, ids).await;
    }
    tracing::info!(epoch = line.epoch, role = role.as_str(), "sequence epoch of this run");
    let mut fanout =
        Fanout::with_ring(instruments.clone(), engine.reader(), args.outbox(), args.ring()).with_line(line);
    let mut mirror = None;
    if let (Some(bus), Role::Gateway) = (&bus, role) {
        let (source, start) = BusSource::start(bus.clone(), instruments.clone(), engine, stop_feeds.clone()).await?;
        healths.push(bus_health(bus, "bus", Some(source.clone()), stop_background.clone(), &mut background));
        fanout = fanout.with_source(source);
        mirror = Some(start);
        engine = Engine::new(&instruments, args.book_depth as usize); // unused: the mirror owns the real one
    }
    if let (Some(bus), Role::Store, Some(store), Some(ids)) = (&bus, role, &store, &ids) {
        healths.push(bus_health(bus, "bus", None, stop_background.clone(), &mut background));
        background.push(tokio::spawn(crate::cluster::store::run(
            bus.clone(),
            store.clone(),
            ids.clone(),
            instruments.clone(),
            stop_background.clone(),
        )));
    }
    let fanout = Arc::new(fanout);
    let (tx, rx) = mpsc::channel::<EventBatch>(FEED_CHANNEL_BATCHES);
    // Only the sequencing roles run feeds; the others built the instrument table.
    let (sim, replay, venues) = if role.sequences() { (sim, replay, venues) } else { (None, None, Vec::new()) };

    let mut feeds = Vec::new();
    if let Some(sim) = sim {
        let symbols = instruments.iter().filter(|i| &*i.venue == "simulator").map(|i| i.symbol.to_string()).collect();
        let health = Arc::new(FeedHealth::new("simulator").describing(symbols, None));
        feeds.push(tokio::spawn(simulator::run(sim, args.rate, tx.clone(), health.clone(), stop_feeds.clone())));
        healths.push(health);
    }
    if let (Some((range, ids)), Some(store)) = (replay, &store) {
        let health = Arc::new(FeedHealth::new("replay"));
        let store_ids: Vec<i64> = instruments.iter().map(|i| ids.store_id(i.id)).collect();
        let feed = crate::feed::replay::run(
            store.clone(),
            ids,
            store_ids,
            range,
            tx.clone(),
            health.clone(),
            stop_feeds.clone(),
        );
        feeds.push(tokio::spawn(feed));
        healths.push(health);
    }
    let http = if venues.is_empty() { None } else { Some(supervisor::http_client()?) };
    let v = &args.venues;
    for venue in venues {
        let (name, ws_url, rest_url, interval, age) = match &venue {
            VenueFeed::Binance(_) => (
                "binance",
                v.binance_ws_url.clone(),
                Some(v.binance_rest_url.clone()),
                v.binance_message_interval_ms,
                Some(v.binance_rotate_after_ms),
            ),
            VenueFeed::Coinbase(_) => ("coinbase", v.coinbase_ws_url.clone(), None, 0, None),
            VenueFeed::Kraken(_) => ("kraken", v.kraken_ws_url.clone(), None, 0, None),
            VenueFeed::Okx(_) => ("okx", v.okx_ws_url.clone(), None, 0, None),
        };
        let stale_after = match (v.feed_stale_ms, &venue) {
            (Some(ms), _) => Duration::from_millis(ms),
            (None, VenueFeed::Binance(venue)) => venue.stale_limit(),
            (None, VenueFeed::Coinbase(venue)) => venue.stale_limit(),
            (None, VenueFeed::Kraken(venue)) => venue.stale_limit(),
            (None, VenueFeed::Okx(venue)) => venue.stale_limit(),
        };
        let config = SupervisorConfig {
            ws_url,
            rest_url,
            stale_after,
            backoff_initial: Duration::from_millis(v.feed_backoff_initial_ms),
            backoff_max: Duration::from_millis(v.feed_backoff_max_ms.max(v.feed_backoff_initial_ms)),
            message_interval: Duration::from_millis(interval),
            max_connection_age: age.map(Duration::from_millis),
            rotation_overlap: Duration::from_millis(v.feed_rotation_overlap_ms),
            request_timeout: Duration::from_millis(v.feed_timeout_ms),
            book_sync_timeout: Duration::from_millis(v.feed_book_sync_ms),
        };
        let symbols = instruments.iter().filter(|i| &*i.venue == name).map(|i| i.symbol.to_string()).collect();
        let health = Arc::new(FeedHealth::new(name).describing(symbols, Some(stale_after)));
        let ctx =
            FeedContext { tx: tx.clone(), health: health.clone(), cancel: stop_feeds.clone(), http: http.clone() };
        feeds.push(match venue {
            VenueFeed::Binance(venue) => tokio::spawn(supervisor::run(venue, config, ctx)),
            VenueFeed::Coinbase(venue) => tokio::spawn(supervisor::run(venue, config, ctx)),
            VenueFeed::Kraken(venue) => tokio::spawn(supervisor::run(venue, config, ctx)),
            VenueFeed::Okx(venue) => tokio::spawn(supervisor::run(venue, config, ctx)),
        });
        healths.push(health);
    }
    drop(tx);
    let engine = match mirror {
        Some(mirror) => {
            drop(rx);
            tokio::spawn(mirror.run(fanout.clone()))
        }
        None => tokio::spawn(run_engine(engine, fanout.clone(), rx, tap, bus_tap)),
    };

    let shutdown = CancellationToken::new();
    if let Some((ring, store)) = key_ring {
        tokio::spawn(ring.run(store, shutdown.child_token()));
    }
    let static_dir = Some(args.static_dir.clone());
    let state = Arc::new(
        AppState::new(fanout, healths, args.limits(), args.max_connections, shutdown.clone(), metrics, static_dir)
            .with_history(history)
            .with_access(access)
            .with_quotas(args.quotas())
            .with_writer_shards(args.writer_shards)
            .with_conformance_echo(args.conformance_echo)
            .with_role(role.as_str())
            .with_reference(board),
    );
    let listener =
        TcpListener::bind(args.listen).await.map_err(|source| StartError::Bind { addr: args.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: args.listen, source })?;
    let app = router(state.clone());
    let header_timeout = Duration::from_millis(args.header_timeout_ms);
    let http = match tls {
        Some(config) => {
            let listener = TlsListener::new(listener, config).map_err(|source| StartError::Bind { addr, source })?;
            tokio::spawn(serve(listener, app, shutdown.clone(), header_timeout))
        }
        None => {
            // Batching is ours; Nagle's algorithm would only add latency.
            let listener = listener.tap_io(|tcp| {
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::debug!(%error, "TCP_NODELAY not set");
                }
            });
            tokio::spawn(serve(listener, app, shutdown.clone(), header_timeout))
        }
    };
    let scheme = if args.tls_cert.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, instruments = instruments.len(), rate = args.rate, "tickwire serving");
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
        stop_background,
    })
}

/// Starts each instrument's day statistics (the watchlist's volume, high, low)
/// from today's stored trades, as the day's candle has them, so that a
/// restart does not zero them. A failed read is logged and leaves them empty.
async fn seed_day_stats(engine: &mut Engine, instruments: &Instruments, store: &Store, ids: &StoreIds) {
    let now = now_nanos();
    let today = now - now % DAY_NS;
    for instrument in instruments.iter() {
        let day = store.candles(ids.store_id(instrument.id), today, now + 1, crate::model::CandleInterval::D1).await;
        match day {
            Ok(candles) => {
                if let Some(candle) = candles.last() {
                    engine.seed_stats(
                        instrument.id,
                        crate::book::SessionStats {
                            open: candle.open,
                            high: candle.high,
                            low: candle.low,
                            volume: crate::model::Size(i64::try_from(candle.volume).unwrap_or(i64::MAX)),
                            trades: candle.trades,
                        },
                    );
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read today's trades: day statistics start from zero");
                return;
            }
        }
    }
}

/// Most events the engine publishes before it wakes the writers concerned.
const WAKE_EVERY_EVENTS: usize = 64;

/// Applies every event to the book, journals the batch, then publishes it. Ends
/// when every feed is gone.
///
/// A batch is sequenced whole, appended to the history journal (one `write`),
/// and only then fanned out: whatever a client is sent is already on disk (in
/// the page cache) when it is sent, so a process crash cannot lose it.
async fn run_engine(
    mut engine: Engine,
    fanout: Arc<Fanout>,
    mut rx: mpsc::Receiver<EventBatch>,
    mut history: Option<HistoryTap>,
    mut bus: Option<BusTap>,
) {
    let mut refused: u64 = 0;
    let mut wake = Vec::new();
    let mut candles = Vec::new();
    let mut sequenced = Vec::new();
    let mut checkpoints = tokio::time::interval(Duration::from_millis(100));
    checkpoints.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let latencies = EngineLatencies::new(fanout.instruments());
    loop {
        let batch = tokio::select! {
            batch = rx.recv() => match batch {
                Some(batch) => batch,
                None => break,
            },
            _ = checkpoints.tick(), if bus.is_some() => {
                if let Some(bus) = &mut bus {
                    bus.checkpoint(&engine);
                }
                continue;
            }
        };
        sequenced.clear();
        for mut event in batch {
            match engine.apply(&mut event) {
                Ok(()) => {
                    latencies.record(&event);
                    sequenced.push(event);
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
        if let Some(tap) = &mut history {
            tap.record(&sequenced);
        }
        if let Some(bus) = &mut bus {
            bus.record(&sequenced);
        }
        for (index, event) in sequenced.iter().enumerate() {
            // Wake-ups wait for the end of the batch, but never more than this many
            // events, so a huge batch does not hold the first updates back.
            if index % WAKE_EVERY_EVENTS == WAKE_EVERY_EVENTS - 1 {
                wake_all(&mut wake);
            }
            fanout.publish_deferred(event, &mut wake);
        }
        engine.drain_candles(&mut candles);
        if let Some(bus) = &mut bus {
            bus.record(&candles);
        }
        for event in candles.drain(..) {
            fanout.publish_deferred(&event, &mut wake);
        }
        wake_all(&mut wake);
    }
}

/// The health of this node's bus connection, as a feed (`/v1/feeds`,
/// `/readyz`): live while NATS is connected; its messages are what the
/// gateway received; its instruments are those it takes now.
fn bus_health(
    bus: &Bus,
    name: &str,
    source: Option<Arc<BusSource>>,
    stop: CancellationToken,
    background: &mut Vec<JoinHandle<()>>,
) -> Arc<FeedHealth> {
    let health = Arc::new(FeedHealth::new(name).describing(bus.config.urls.clone(), None));
    let (client, watched) = (bus.client.clone(), health.clone());
    background.push(tokio::spawn(async move {
        use crate::feed::FeedState;
        use std::sync::atomic::Ordering::Relaxed;
        let mut seen = 0;
        let mut every = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            watched.set_state(if connected { FeedState::Live } else { FeedState::Connecting });
            if let Some(source) = &source {
                let received = source.stats.received.load(Relaxed);
                if received > seen {
                    watched.record_messages(received - seen, now_nanos());
                    seen = received;
                }
            }
        }
    }));
    health
}

/// The sequence line of a run that records history: every stored stream
/// continues after the highest sequence the store or the journal holds.
async fn continue_line(
    store: &Store,
    ids: &StoreIds,
    instruments: &Instruments,
    leftovers: &Leftovers,
) -> Result<SequenceLine, StoreError> {
    let heads = store.stream_heads().await?;
    let mut bases = vec![[0u64; Channel::COUNT]; instruments.len()];
    for inst in instruments.iter() {
        let store_id = ids.store_id(inst.id);
        for channel in Channel::STORED {
            let stored = heads.get(&(store_id, channel)).copied().unwrap_or(0);
            let journaled = leftovers.heads.get(&(store_id as u32, channel)).copied().unwrap_or(0);
            bases[inst.id.index()][channel.index()] = stored.max(journaled);
        }
    }
    Ok(SequenceLine::continuing(bases))
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
        self.stop_background.cancel();
        // Bounded: a bus publisher may wait for an absent NATS, and a stopping
        // process must not hang on it (what it had not published is counted lost).
        for task in self.background {
            if tokio::time::timeout(self.grace, task).await.is_err() {
                tracing::warn!("a background task did not stop within the grace period");
            }
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
