//! Command line and environment settings. Every `serve` flag can also be given as a
//! `TICKWIRE_*` environment variable; flags win.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser};

pub mod file;

use crate::codec::Delivery;
use crate::fanout::{OutboxConfig, RingConfig, SlowConsumerPolicy};
use crate::transport::SessionLimits;

/// A market-data source given with `--feed`: `simulator`, or a venue and its
/// symbols in the venue's own spelling (`binance:BTCUSDT,ETHUSDT`,
/// `coinbase:BTC-USD`, `kraken:BTC/USD`, `okx:BTC-USDT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedSpec {
    /// The built-in deterministic market.
    Simulator,
    Binance(Vec<String>),
    Coinbase(Vec<String>),
    Kraken(Vec<String>),
    Okx(Vec<String>),
    /// Stored history played back through the whole pipeline:
    /// `replay:FROM..TO[@SPEED]` (times in ns or RFC 3339, speed a factor or `max`).
    Replay(crate::replay::ReplayRange),
}

impl FeedSpec {
    /// Whether this is an exchange's feed (with reference data to fetch).
    pub fn is_venue(&self) -> bool {
        matches!(self, FeedSpec::Binance(_) | FeedSpec::Coinbase(_) | FeedSpec::Kraken(_) | FeedSpec::Okx(_))
    }
}

/// Why a `--feed` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedSpecError {
    #[error(
        "unknown feed {0:?} (available: simulator, binance:SYMBOLS, coinbase:PRODUCTS, kraken:PAIRS, okx:INSTRUMENTS, replay:FROM..TO@SPEED)"
    )]
    Unknown(String),
    #[error("feed {0:?} names no symbols (e.g. binance:BTCUSDT,ETHUSDT)")]
    NoSymbols(String),
    #[error("bad symbol {1:?} in feed {0:?}")]
    BadSymbol(String, String),
    #[error("bad replay feed: {0}")]
    Replay(String),
}

fn parse_kraken_depth(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(depth) if crate::feed::kraken::DEPTHS.contains(&depth) => Ok(depth),
        _ => Err(format!("must be one of {:?}", crate::feed::kraken::DEPTHS)),
    }
}

impl FromStr for FeedSpec {
    type Err = FeedSpecError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if matches!(text, "simulator" | "sim") {
            return Ok(FeedSpec::Simulator);
        }
        if let Some(range) = text.strip_prefix("replay:") {
            return range.parse().map(FeedSpec::Replay).map_err(FeedSpecError::Replay);
        }
        let Some((venue, list)) = text.split_once(':') else {
            return Err(FeedSpecError::Unknown(text.to_owned()));
        };
        let symbols: Vec<String> =
            list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        if symbols.is_empty() {
            return Err(FeedSpecError::NoSymbols(text.to_owned()));
        }
        if let Some(bad) = symbols.iter().find(|s| !crate::model::is_valid_symbol(s)) {
            return Err(FeedSpecError::BadSymbol(text.to_owned(), bad.clone()));
        }
        match venue.trim().to_ascii_lowercase().as_str() {
            "binance" => Ok(FeedSpec::Binance(symbols)),
            "coinbase" => Ok(FeedSpec::Coinbase(symbols)),
            "kraken" => Ok(FeedSpec::Kraken(symbols)),
            "okx" => Ok(FeedSpec::Okx(symbols)),
            _ => Err(FeedSpecError::Unknown(text.to_owned())),
        }
    }
}

/// Venue endpoints and connection policy for the exchange feeds.
#[derive(Debug, Clone, Args)]
pub struct VenueArgs {
    /// Binance combined-stream WebSocket URL.
    #[arg(long, env = "TICKWIRE_BINANCE_WS_URL", default_value = "wss://stream.binance.com:9443/stream")]
    pub binance_ws_url: String,
    /// Binance REST base URL (depth snapshots).
    #[arg(long, env = "TICKWIRE_BINANCE_REST_URL", default_value = "https://api.binance.com")]
    pub binance_rest_url: String,
    /// Coinbase Advanced Trade market-data WebSocket URL.
    #[arg(long, env = "TICKWIRE_COINBASE_WS_URL", default_value = "wss://advanced-trade-ws.coinbase.com")]
    pub coinbase_ws_url: String,
    /// Kraken WebSocket v2 URL.
    #[arg(long, env = "TICKWIRE_KRAKEN_WS_URL", default_value = "wss://ws.kraken.com/v2")]
    pub kraken_ws_url: String,
    /// Kraken book depth subscribed (10, 25, 100, 500 or 1000).
    #[arg(long, env = "TICKWIRE_KRAKEN_BOOK_DEPTH", default_value_t = 10, value_parser = parse_kraken_depth)]
    pub kraken_book_depth: u32,
    /// OKX public WebSocket v5 URL.
    #[arg(long, env = "TICKWIRE_OKX_WS_URL", default_value = "wss://ws.okx.com:8443/ws/v5/public")]
    pub okx_ws_url: String,
    /// Coinbase REST base URL (reference data: `/api/v3/brokerage/market/products`).
    #[arg(long, env = "TICKWIRE_COINBASE_REST_URL", default_value = "https://api.coinbase.com")]
    pub coinbase_rest_url: String,
    /// Kraken REST base URL (reference data: `/0/public/AssetPairs`).
    #[arg(long, env = "TICKWIRE_KRAKEN_REST_URL", default_value = "https://api.kraken.com")]
    pub kraken_rest_url: String,
    /// OKX REST base URL (reference data: `/api/v5/public/instruments`).
    #[arg(long, env = "TICKWIRE_OKX_REST_URL", default_value = "https://www.okx.com")]
    pub okx_rest_url: String,
    /// Bybit REST base URL (reference data: `/v5/market/instruments-info`).
    #[arg(long, env = "TICKWIRE_BYBIT_REST_URL", default_value = "https://api.bybit.com")]
    pub bybit_rest_url: String,
    /// Venue reference data (tick, lot, minimum size, assets, status): `fetch`
    /// it from each venue at start, or `off` (every venue instrument then uses
    /// 1e-8 increments, shown as `"reference": "off"` in `/v1/instruments`).
    #[arg(long, env = "TICKWIRE_VENUE_REFERENCE", value_enum, default_value_t = VenueReference::Fetch)]
    pub venue_reference: VenueReference,
    /// How often venue reference data is fetched again, in seconds (a status
    /// change is shown at once; a failed fetch is retried every minute).
    #[arg(long, env = "TICKWIRE_VENUE_REFERENCE_REFRESH_S", default_value_t = 3_600, value_parser = clap::value_parser!(u64).range(1..))]
    pub venue_reference_refresh_s: u64,
    /// A venue connection silent (not even a ping) for this long is replaced, in
    /// milliseconds. Default: each venue's own limit, a small multiple of its
    /// heartbeat (Kraken and Coinbase 3 s, Binance and OKX 30 s); this overrides
    /// all. A venue we must ping (OKX) is pinged after two thirds of it at most.
    #[arg(long, env = "TICKWIRE_FEED_STALE_MS", value_parser = clap::value_parser!(u64).range(10..))]
    pub feed_stale_ms: Option<u64>,
    /// A withdrawn book not synchronised again within this long (the venue never
    /// answered the resubscribe or snapshot request) replaces the connection, in ms.
    #[arg(long, env = "TICKWIRE_FEED_BOOK_SYNC_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub feed_book_sync_ms: u64,
    /// First reconnect delay, in milliseconds (doubles per failed attempt, with jitter).
    #[arg(long, env = "TICKWIRE_FEED_BACKOFF_INITIAL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub feed_backoff_initial_ms: u64,
    /// Longest reconnect delay, in milliseconds.
    #[arg(long, env = "TICKWIRE_FEED_BACKOFF_MAX_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub feed_backoff_max_ms: u64,
    /// Connect and REST request timeout, in milliseconds.
    #[arg(long, env = "TICKWIRE_FEED_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub feed_timeout_ms: u64,
    /// Binance closes connections after 24 hours: rotate (make-before-break) after this long, in milliseconds.
    #[arg(long, env = "TICKWIRE_BINANCE_ROTATE_AFTER_MS", default_value_t = 85_800_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub binance_rotate_after_ms: u64,
    /// How long a replacement connection runs beside the old one before the switch, in milliseconds.
    #[arg(long, env = "TICKWIRE_FEED_ROTATION_OVERLAP_MS", default_value_t = 2_000)]
    pub feed_rotation_overlap_ms: u64,
    /// Least time between two client messages to Binance (limit: 5 per second), in milliseconds.
    #[arg(long, env = "TICKWIRE_BINANCE_MESSAGE_INTERVAL_MS", default_value_t = 250)]
    pub binance_message_interval_ms: u64,
}

/// Whether venue reference data is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VenueReference {
    Fetch,
    Off,
}

/// `--default-delivery` values. Each also takes its wire spelling
/// (`snapshot_on_lag`, as in a subscribe's `delivery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeliveryArg {
    Full,
    Conflate,
    #[value(alias = "snapshot_on_lag")]
    SnapshotOnLag,
}

/// How strict `serve` is about its settings (`--profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Profile {
    /// A first run and tests: an open API on loopback is fine.
    #[default]
    Development,
    /// On a network: refuses to start without TLS, authentication and an
    /// origin allow-list.
    Production,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A TOML file of settings: keys are these flags without the dashes
    /// (`max-connections = 5000`; a `[jwt]` table's `audience` is
    /// `jwt-audience`). Flags and `TICKWIRE_*` variables override it.
    #[arg(long, env = "TICKWIRE_CONFIG")]
    pub config: Option<PathBuf>,
    /// `production` refuses to start without TLS, authentication
    /// (--auth / --auth-token) and --allowed-origin, naming what is missing.
    #[arg(long, env = "TICKWIRE_PROFILE", value_enum, default_value_t = Profile::Development)]
    pub profile: Profile,
    /// Address to listen on.
    #[arg(long, env = "TICKWIRE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Market-data sources, repeatable: `simulator`, `binance:BTCUSDT,ETHUSDT`,
    /// `coinbase:BTC-USD`, `kraken:BTC/USD`, `okx:BTC-USDT` (default: simulator). In the environment,
    /// separate feeds with `;`.
    #[arg(long = "feed", env = "TICKWIRE_FEED", value_delimiter = ';')]
    pub feed: Vec<FeedSpec>,
    /// Simulator symbols to publish, comma-separated (default: the whole universe).
    #[arg(long, env = "TICKWIRE_SYMBOLS", value_delimiter = ',')]
    pub symbols: Vec<String>,
    /// Simulator events per second, in total.
    #[arg(long, env = "TICKWIRE_RATE", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=20_000_000))]
    pub rate: u64,
    /// Simulator seed: the same seed gives the same market.
    #[arg(long, env = "TICKWIRE_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Directory of the built dashboard served at `/` (a plain page when missing).
    #[arg(long, env = "TICKWIRE_STATIC_DIR", default_value = "frontend/dist")]
    pub static_dir: PathBuf,
    /// Most streaming connections held at once (WebSocket, SSE, held long-polls,
    /// replay); more are refused with 503 `too_many_connections`.
    #[arg(long, env = "TICKWIRE_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,
    /// Tasks that write WebSocket connections (each owns a share of them); 0: one per core.
    #[arg(long, env = "TICKWIRE_WRITER_SHARDS", default_value_t = 0)]
    pub writer_shards: usize,
    /// Most (symbol, channel) subscriptions per connection.
    #[arg(long, env = "TICKWIRE_MAX_SUBSCRIPTIONS", default_value_t = 10_000)]
    pub max_subscriptions: usize,
    /// Largest client message in bytes; larger ones close the connection with 1009.
    #[arg(long, env = "TICKWIRE_MAX_MESSAGE_BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_message_bytes: u64,
    /// Frames one client message may arrive in; more close the connection with 1009.
    #[arg(long, env = "TICKWIRE_MAX_MESSAGE_FRAGMENTS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_message_fragments: u32,
    /// Client messages per second one connection may send (a burst of twice as
    /// many is taken); past it, messages are refused with `rate_limited`, and
    /// a connection that keeps on for 5 s is closed with 1008.
    #[arg(long, env = "TICKWIRE_MAX_CLIENT_MESSAGES_PER_S", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_client_messages_per_s: u32,
    /// Queued updates per connection past which trades are dropped (or the client closed).
    #[arg(long, env = "TICKWIRE_OUTBOX_MAX", default_value_t = 8192, value_parser = clap::value_parser!(u64).range(16..))]
    pub outbox_max: u64,
    /// Queued updates per connection past which quotes conflate and books resnapshot.
    #[arg(long, env = "TICKWIRE_CONFLATE_AFTER", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub conflate_after: u64,
    /// What happens to a client too far behind on trades.
    #[arg(long, env = "TICKWIRE_SLOW_CONSUMER", value_enum, default_value_t = SlowConsumerPolicy::Gap)]
    pub slow_consumer: SlowConsumerPolicy,
    /// Interval of server pings, in milliseconds.
    #[arg(long, env = "TICKWIRE_PING_INTERVAL_MS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub ping_interval_ms: u64,
    /// Silence after which a connection is closed with 4000, in milliseconds.
    #[arg(long, env = "TICKWIRE_IDLE_TIMEOUT_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub idle_timeout_ms: u64,
    /// Levels per side kept in book snapshots.
    #[arg(long, env = "TICKWIRE_BOOK_DEPTH", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub book_depth: u64,
    /// Recent-history ring per instrument used to resume: most events kept.
    #[arg(long, env = "TICKWIRE_RING_DEPTH", default_value_t = 10_000)]
    pub ring_depth: usize,
    /// Recent-history ring per instrument: oldest event kept, in milliseconds.
    #[arg(long, env = "TICKWIRE_RING_AGE_MS", default_value_t = 60_000)]
    pub ring_age_ms: u64,
    /// Delivery of subscriptions that name none.
    #[arg(long, env = "TICKWIRE_DEFAULT_DELIVERY", value_enum, default_value_t = DeliveryArg::SnapshotOnLag)]
    pub default_delivery: DeliveryArg,
    /// Shortest conflation interval a client may ask for, in milliseconds (at least 1:
    /// a `conflate` subscription ticks at its interval, and a tick needs a period).
    #[arg(long, env = "TICKWIRE_CONFLATE_MIN_MS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub conflate_min_ms: u32,
    /// Longest conflation interval a client may ask for, in milliseconds.
    #[arg(long, env = "TICKWIRE_CONFLATE_MAX_MS", default_value_t = 60_000)]
    pub conflate_max_ms: u32,
    /// WebSocket read buffer per connection, in bytes: what an idle connection
    /// holds to read into. Clients send small requests (a subscribe is a few
    /// hundred bytes); a larger frame grows the buffer while it is read.
    /// tungstenite's 128 KiB default costs that much per idle socket.
    #[arg(long, env = "TICKWIRE_WS_READ_BUFFER_BYTES", default_value_t = 512, value_parser = clap::value_parser!(u64).range(256..=(16 << 20)))]
    pub ws_read_buffer_bytes: u64,
    /// A connection must send a request's whole header within this, in
    /// milliseconds, or it is dropped (slow or half-sent requests).
    #[arg(long, env = "TICKWIRE_HEADER_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub header_timeout_ms: u64,
    /// How long shutdown waits for sessions to close, in milliseconds.
    #[arg(long, env = "TICKWIRE_SHUTDOWN_GRACE_MS", default_value_t = 5_000)]
    pub shutdown_grace_ms: u64,
    /// What the API accepts as credentials, comma-separated: `tokens` (the
    /// static --auth-token / --auth-tokens-file list, on whenever one is given)
    /// and `keys` (API keys made with `tickwire keys`, read from --store, with
    /// their entitlements). Default: tokens when any is given, else an open API.
    #[arg(long = "auth", env = "TICKWIRE_AUTH", value_delimiter = ',')]
    pub auth: Vec<AuthMode>,
    /// `--auth jwt`: the HS256 secret (at least 32 bytes) tokens are signed with.
    #[arg(long, env = "TICKWIRE_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// `--auth jwt`: the RSA (RS256) or EC P-256 (ES256) public key, PEM.
    #[arg(long, env = "TICKWIRE_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// `--auth jwt`: a JWKS document; a token's `kid` chooses the key.
    #[arg(long, env = "TICKWIRE_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// `--auth jwt`: the `aud` tokens must name (unchecked when not given).
    #[arg(long, env = "TICKWIRE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// `--auth jwt`: the `iss` tokens must name (unchecked when not given).
    #[arg(long, env = "TICKWIRE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// `--auth jwt`: clock skew allowed on `exp` and `nbf`, in seconds (at most 300).
    #[arg(long, env = "TICKWIRE_JWT_LEEWAY_S", default_value_t = 30)]
    pub jwt_leeway_s: u64,
    /// `--auth jwt`: a connection whose token expires within this many
    /// seconds is told so (`{"type":"auth","state":"expiring"}`), so that it
    /// can send a fresh token (`{"op":"auth","token":…}`) before it is closed
    /// (4001).
    #[arg(long, env = "TICKWIRE_JWT_WARN_S", default_value_t = 30)]
    pub jwt_warn_s: u64,
    /// Bearer tokens the API accepts, comma-separated (none: the API is open).
    /// Prefer --auth-tokens-file: command lines are visible to other users.
    #[arg(long = "auth-token", env = "TICKWIRE_AUTH_TOKENS", value_delimiter = ',', hide_env_values = true)]
    pub auth_tokens: Vec<String>,
    /// File of accepted bearer tokens, one per line (`#` starts a comment).
    #[arg(long, env = "TICKWIRE_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,
    /// Also accept a token in the URL (`?token=`), for tools that can send
    /// it no other way. Off by default: URLs end up in logs and histories;
    /// the dashboard and the clients send the `Authorization` header or a
    /// `bearer.<token>` WebSocket subprotocol.
    #[arg(long, env = "TICKWIRE_ALLOW_QUERY_TOKEN")]
    pub allow_query_token: bool,
    /// Streaming connections one client address may hold at once (every
    /// transport); more are refused with 429 `too_many_connections`. 0: no limit.
    #[arg(long, env = "TICKWIRE_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: u32,
    /// Subscribe and unsubscribe requests one connection may make per minute
    /// (a burst of a quarter of that is taken); past it, requests are refused
    /// with `rate_limited` and change nothing. 0: no limit.
    #[arg(long, env = "TICKWIRE_MAX_SUBSCRIPTION_CHANGES_PER_MIN", default_value_t = 600)]
    pub max_subscription_changes_per_min: u32,
    /// Replays one key (or JWT subject; or client address, without either) may
    /// run at once; more are refused with 429 `quota_exceeded`. 0: no limit.
    #[arg(long, env = "TICKWIRE_MAX_REPLAYS_PER_KEY", default_value_t = 4)]
    pub max_replays_per_key: u32,
    /// History rows (REST history and candles) one key (or JWT subject, or
    /// client address) may read per minute; past it, requests get 429
    /// `quota_exceeded` with `Retry-After`. 0: no limit.
    #[arg(long, env = "TICKWIRE_HISTORY_ROWS_PER_MIN", default_value_t = 2_000_000)]
    pub history_rows_per_min: u64,
    /// Browser origins allowed to use the API (scheme://host[:port]), comma-separated;
    /// none: any. Requests without an Origin header (non-browser clients) are not affected.
    #[arg(long = "allowed-origin", env = "TICKWIRE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// PEM certificate chain (leaf first): serve HTTPS and WSS instead of plain
    /// HTTP. Needs --tls-key.
    #[arg(long, env = "TICKWIRE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TICKWIRE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub history: HistoryArgs,
    #[command(flatten)]
    pub venues: VenueArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Serve `/v1/echo`, a WebSocket that writes each message back unchanged
    /// through the same stack as `/v1/ws`: for `make conformance` only; never
    /// in production.
    #[arg(long, env = "TICKWIRE_CONFORMANCE_ECHO")]
    pub conformance_echo: bool,
}

/// Settings that cannot be used together, or that the profile requires:
/// every problem found, each naming its setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad settings: {}", .0.join("; "))]
pub struct SettingsError(pub Vec<String>);

/// Scale-out on NATS JetStream (`docs/DEPLOY.md`). Without `--nats`, one
/// process does everything, as `--role all`.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// What this node does: `all` (everything, one process), `ingest` (feeds
    /// and the engine, publishing to the bus), `gateway` (clients, fed from the
    /// bus), `store` (history, written from the bus).
    #[arg(long, env = "TICKWIRE_ROLE", value_enum, default_value_t = crate::cluster::Role::All)]
    pub role: crate::cluster::Role,
    /// NATS servers with JetStream, comma-separated (`nats://host:4222,…`).
    #[arg(long, env = "TICKWIRE_NATS", value_delimiter = ',')]
    pub nats: Vec<String>,
    /// NATS user (with --nats-password).
    #[arg(long, env = "TICKWIRE_NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password (with --nats-user).
    #[arg(long, env = "TICKWIRE_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// NATS token.
    #[arg(long, env = "TICKWIRE_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// NATS credentials file (JWT and NKey seed).
    #[arg(long, env = "TICKWIRE_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// JetStream stream of every event and checkpoint.
    #[arg(long, env = "TICKWIRE_BUS_STREAM", default_value = "TICKWIRE")]
    pub bus_stream: String,
    /// First token of every bus subject (`{prefix}.{venue}.{symbol}.{channel}`).
    #[arg(long, env = "TICKWIRE_BUS_PREFIX", default_value = "tw")]
    pub bus_prefix: String,
    /// Oldest message the stream keeps, in seconds (a gateway or store node
    /// away longer than this misses history: gap).
    #[arg(long, env = "TICKWIRE_BUS_MAX_AGE_S", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(10..))]
    pub bus_max_age_s: u64,
    /// Largest the stream grows, in bytes; the oldest messages go first.
    #[arg(long, env = "TICKWIRE_BUS_MAX_BYTES", default_value_t = 8 << 30)]
    pub bus_max_bytes: u64,
    /// Copies of the stream in a NATS cluster (3 in production, 1 on one server).
    #[arg(long, env = "TICKWIRE_BUS_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=5))]
    pub bus_replicas: u64,
    /// How often each changed instrument's whole state is published (where a
    /// gateway starts), in milliseconds.
    #[arg(long, env = "TICKWIRE_BUS_CHECKPOINT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub bus_checkpoint_ms: u64,
    /// Recent history a gateway loads into its ring when it takes an
    /// instrument, in milliseconds (a client moving from another gateway
    /// resumes from it without a gap).
    #[arg(long, env = "TICKWIRE_BUS_BACKFILL_MS", default_value_t = 30_000)]
    pub bus_backfill_ms: u64,
    /// How long a gateway keeps taking an instrument no client subscribes to
    /// any more, in milliseconds.
    #[arg(long, env = "TICKWIRE_BUS_LINGER_MS", default_value_t = 10_000)]
    pub bus_linger_ms: u64,
    /// Durable consumer the store role writes history from (one per cluster).
    #[arg(long, env = "TICKWIRE_BUS_STORE_CONSUMER", default_value = "tickwire-store")]
    pub bus_store_consumer: String,
}

impl ClusterArgs {
    /// The bus settings, when `--nats` is given.
    pub fn bus(&self) -> Result<Option<crate::cluster::BusConfig>, String> {
        use crate::cluster::{BusConfig, Credentials};
        if self.nats.is_empty() {
            return Ok(None);
        }
        let reserved = |s: &str| s.is_empty() || s.contains(['.', '*', '>', ' ']);
        if reserved(&self.bus_prefix) {
            return Err(format!(
                "--bus-prefix {:?} must be one subject token (no '.', '*', '>' or spaces)",
                self.bus_prefix
            ));
        }
        if reserved(&self.bus_stream) {
            return Err(format!(
                "--bus-stream {:?} must be a stream name (no '.', '*', '>' or spaces)",
                self.bus_stream
            ));
        }
        let credentials = match (&self.nats_user, &self.nats_password, &self.nats_token, &self.nats_creds) {
            (None, None, None, None) => Credentials::None,
            (Some(user), Some(password), None, None) => Credentials::UserPassword(user.clone(), password.clone()),
            (None, None, Some(token), None) => Credentials::Token(token.clone()),
            (None, None, None, Some(path)) => Credentials::CredsFile(path.clone()),
            _ => {
                return Err(
                    "give one NATS credential: --nats-user with --nats-password, --nats-token, or --nats-creds".into(),
                );
            }
        };
        Ok(Some(BusConfig {
            urls: self.nats.clone(),
            credentials,
            stream: self.bus_stream.clone(),
            prefix: self.bus_prefix.clone(),
            max_age: Duration::from_secs(self.bus_max_age_s),
            max_bytes: i64::try_from(self.bus_max_bytes).unwrap_or(i64::MAX),
            replicas: self.bus_replicas as usize,
            checkpoint_interval: Duration::from_millis(self.bus_checkpoint_ms),
            backfill: Duration::from_millis(self.bus_backfill_ms),
            linger: Duration::from_millis(self.bus_linger_ms),
            store_consumer: self.bus_store_consumer.clone(),
        }))
    }
}

/// A kind of credential `serve --auth` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Static bearer tokens (--auth-token, --auth-tokens-file): full access.
    Tokens,
    /// API keys (`tickwire keys`) with their entitlements.
    Keys,
    /// JSON Web Tokens (--jwt-*), with entitlements in their claims.
    Jwt,
}

/// Where tick history lives.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// History store: `postgres://…`, `sqlite://path`, or `none` to keep no history.
    /// Default: `DATABASE_URL`, else `sqlite://data/tickwire.db`.
    #[arg(long, env = "TICKWIRE_STORE")]
    pub store: Option<String>,
}

impl StoreArgs {
    /// The store URL, or `None` when history is off.
    pub fn url(&self) -> Option<String> {
        let url = crate::store::resolve_url(self.store.as_deref());
        (url != "none").then_some(url)
    }
}

/// The history writer's settings (`serve`).
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Write-ahead journal: every stored event is appended here before clients
    /// are sent it, and deleted once stored (default: `journal/` beside a SQLite
    /// file, else `data/journal`).
    #[arg(long, env = "TICKWIRE_JOURNAL_DIR")]
    pub journal_dir: Option<PathBuf>,
    /// Largest journal, in bytes; past it, history is lost (counted, and recorded as gaps).
    #[arg(long, env = "TICKWIRE_JOURNAL_MAX_BYTES", default_value_t = 1 << 30)]
    pub journal_max_bytes: u64,
    /// How often journal appends are forced to disk, in milliseconds: the most a
    /// power loss can take (a process crash loses nothing journaled).
    #[arg(long, env = "TICKWIRE_JOURNAL_SYNC_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub journal_sync_ms: u64,
    /// Most events per store transaction.
    #[arg(long, env = "TICKWIRE_STORE_BATCH_EVENTS", default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub store_batch_events: u64,
    /// Keep this many days of history; older days (partitions) are dropped. 0 keeps everything.
    #[arg(long, env = "TICKWIRE_RETENTION_DAYS", default_value_t = 0)]
    pub retention_days: u32,
}

impl HistoryArgs {
    pub fn writer(&self, url: &str) -> crate::store::writer::WriterConfig {
        crate::store::writer::WriterConfig {
            batch_events: self.store_batch_events as usize,
            sync_interval: std::time::Duration::from_millis(self.journal_sync_ms),
            journal_dir: self.journal_dir.clone().unwrap_or_else(|| crate::store::default_journal_dir(url)),
            journal_cap_bytes: self.journal_max_bytes,
            ..crate::store::writer::WriterConfig::default()
        }
    }
}

/// `tickwire replay` settings.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Symbols to replay, comma-separated (default: every stored instrument).
    #[arg(long, value_delimiter = ',')]
    pub symbols: Vec<String>,
    /// Channels to replay, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "quotes,trades", value_parser = parse_stored_channel)]
    pub channels: Vec<crate::model::Channel>,
    /// Start (inclusive): nanoseconds since the epoch or RFC 3339.
    #[arg(long, value_parser = crate::store::parse_time)]
    pub from: u64,
    /// End (exclusive): nanoseconds since the epoch or RFC 3339.
    #[arg(long, value_parser = crate::store::parse_time)]
    pub to: u64,
    /// A factor of real time (1, 0.5, 10…) or `max`.
    #[arg(long, default_value = "max")]
    pub speed: crate::replay::Speed,
    /// Output: one JSON update per line, or CSV.
    #[arg(long, value_enum, default_value_t = crate::replay::LineFormat::Jsonl)]
    pub format: crate::replay::LineFormat,
}

impl ServeArgs {
    /// Parses `serve` flags from an argument list (for tests and embedders).
    pub fn parse_from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let args = std::iter::once(std::ffi::OsString::from("tickwire")).chain(args.into_iter().map(Into::into));
        Wrapper::try_parse_from(args).map(|w| w.serve)
    }

    /// Checks the settings as a whole: pairs that contradict each other, and
    /// what `--profile production` requires. Each problem names its setting
    /// (the flag's name, which is also its key in a config file); nothing is
    /// clamped into range behind the operator's back.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: String| {
            if !ok {
                problems.push(problem);
            }
        };
        check(
            self.conflate_after <= self.outbox_max,
            format!(
                "conflate-after ({}) is above outbox-max ({}): a client would be cut off before its quotes conflate",
                self.conflate_after, self.outbox_max
            ),
        );
        check(
            self.conflate_min_ms <= self.conflate_max_ms,
            format!("conflate-min-ms ({}) is above conflate-max-ms ({})", self.conflate_min_ms, self.conflate_max_ms),
        );
        check(
            self.ping_interval_ms < self.idle_timeout_ms,
            format!(
                "ping-interval-ms ({}) must be below idle-timeout-ms ({}): a healthy client answers pings, and would be closed as idle first",
                self.ping_interval_ms, self.idle_timeout_ms
            ),
        );
        check(
            self.venues.feed_backoff_initial_ms <= self.venues.feed_backoff_max_ms,
            format!(
                "feed-backoff-initial-ms ({}) is above feed-backoff-max-ms ({})",
                self.venues.feed_backoff_initial_ms, self.venues.feed_backoff_max_ms
            ),
        );
        check(
            self.tls_cert.is_some() == self.tls_key.is_some(),
            "tls-cert and tls-key go together: give both or neither".into(),
        );
        check(
            self.jwt_leeway_s <= crate::jwt::MAX_LEEWAY_S,
            format!("jwt-leeway-s ({}) may be at most {}", self.jwt_leeway_s, crate::jwt::MAX_LEEWAY_S),
        );
        let jwt_settings = [
            ("jwt-secret-file", self.jwt_secret_file.is_some()),
            ("jwt-public-key", self.jwt_public_key.is_some()),
            ("jwt-jwks-file", self.jwt_jwks_file.is_some()),
            ("jwt-audience", self.jwt_audience.is_some()),
            ("jwt-issuer", self.jwt_issuer.is_some()),
        ];
        for (name, given) in jwt_settings {
            check(!given || self.auth.contains(&AuthMode::Jwt), format!("{name} is set but auth does not include jwt"));
        }
        let tokens_given = !self.auth_tokens.is_empty() || self.auth_tokens_file.is_some();
        check(
            !tokens_given || self.auth.is_empty() || self.auth.contains(&AuthMode::Tokens),
            "auth-token / auth-tokens-file are set but auth does not include tokens".into(),
        );
        if self.profile == Profile::Production {
            check(self.tls_cert.is_some(), "profile production needs TLS: set tls-cert and tls-key".into());
            check(
                tokens_given || !self.auth.is_empty(),
                "profile production needs authentication: set auth (keys, jwt, tokens) with its credentials".into(),
            );
            check(
                !self.allowed_origins.is_empty(),
                "profile production needs an origin allow-list: set allowed-origin".into(),
            );
            check(
                !self.conformance_echo,
                "conformance-echo is for `make conformance` only, never in production".into(),
            );
        }
        if problems.is_empty() { Ok(()) } else { Err(SettingsError(problems)) }
    }

    /// Whether a token may come in the URL (`--allow-query-token`).
    pub fn query_token_allowed(&self) -> bool {
        self.allow_query_token
    }

    /// The feeds to run: those given, or the simulator alone.
    pub fn feeds(&self) -> Vec<FeedSpec> {
        if self.feed.is_empty() { vec![FeedSpec::Simulator] } else { self.feed.clone() }
    }

    pub fn outbox(&self) -> OutboxConfig {
        let max_queued = self.outbox_max as usize;
        OutboxConfig { max_queued, conflate_after: self.conflate_after as usize, slow_consumer: self.slow_consumer }
    }

    pub fn quotas(&self) -> crate::transport::quota::QuotaLimits {
        crate::transport::quota::QuotaLimits {
            connections_per_ip: self.max_connections_per_ip,
            replays_per_key: self.max_replays_per_key,
            history_rows_per_min: self.history_rows_per_min,
        }
    }

    pub fn ring(&self) -> RingConfig {
        RingConfig { depth: self.ring_depth, max_age_ns: self.ring_age_ms.saturating_mul(1_000_000) }
    }

    pub fn limits(&self) -> SessionLimits {
        SessionLimits {
            max_message_bytes: self.max_message_bytes as usize,
            max_fragments: self.max_message_fragments,
            max_messages_per_s: self.max_client_messages_per_s,
            max_subscription_changes_per_min: self.max_subscription_changes_per_min,
            max_subscriptions: self.max_subscriptions,
            ping_interval: Duration::from_millis(self.ping_interval_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            read_buffer_bytes: self.ws_read_buffer_bytes as usize,
            default_delivery: match self.default_delivery {
                DeliveryArg::Full => Delivery::Full,
                DeliveryArg::SnapshotOnLag => Delivery::SnapshotOnLag,
                DeliveryArg::Conflate => Delivery::Conflate { interval_ms: crate::codec::DEFAULT_CONFLATE_MS },
            },
            conflate_ms_range: (self.conflate_min_ms, self.conflate_max_ms),
            ..SessionLimits::default()
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Symbols to follow.
    #[arg(required = true)]
    pub symbols: Vec<String>,
    /// Gateway WebSocket URL; several, comma-separated, are tried in turn
    /// (the gateways of one cluster resume each other's streams).
    #[arg(long, env = "TICKWIRE_URL", default_value = "ws://127.0.0.1:8080/v1/ws")]
    pub url: String,
    /// Channels to follow, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "quotes,trades", value_parser = parse_channel)]
    pub channels: Vec<crate::model::Channel>,
    /// Wire format: json or proto.
    #[arg(long, default_value = "json", value_parser = parse_format)]
    pub format: crate::codec::Format,
    /// Exit when the connection drops instead of reconnecting and resuming.
    #[arg(long)]
    pub no_reconnect: bool,
    /// Stop after this many updates (default: run until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
    /// Start from stored history at this time (ns or RFC 3339), then follow live.
    #[arg(long, value_parser = crate::model::parse_time)]
    pub from_time: Option<crate::model::Nanos>,
    /// Token, API key or JWT for a gateway that requires one (sent as a
    /// bearer header, never in the URL).
    #[arg(long, env = "TICKWIRE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

fn parse_channel(name: &str) -> Result<crate::model::Channel, String> {
    crate::model::Channel::parse(name).ok_or_else(|| format!("no channel {name:?} ({})", crate::model::Channel::NAMES))
}

/// A channel the store keeps (replay reads only those).
fn parse_stored_channel(name: &str) -> Result<crate::model::Channel, String> {
    match parse_channel(name)? {
        channel if channel.is_stored() => Ok(channel),
        _ => Err(format!("{name} is derived from trades and not stored: replay reads quotes, trades and book")),
    }
}

fn parse_format(name: &str) -> Result<crate::codec::Format, String> {
    crate::codec::Format::from_param(name).ok_or_else(|| format!("no format {name:?} (json, proto)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_env_free_parse() {
        let args = ServeArgs::parse_from_args(["--rate", "5000", "--symbols", "BTC-USD,AAPL"]).unwrap();
        assert_eq!(args.rate, 5000);
        assert_eq!(args.symbols, vec!["BTC-USD", "AAPL"]);
        assert_eq!(args.feeds(), [FeedSpec::Simulator]);
    }

    #[test]
    fn default_delivery_takes_both_spellings() {
        for spelling in ["snapshot-on-lag", "snapshot_on_lag"] {
            let args = ServeArgs::parse_from_args(["--default-delivery", spelling]).unwrap();
            assert_eq!(args.default_delivery, DeliveryArg::SnapshotOnLag, "{spelling}");
        }
        let args = ServeArgs::parse_from_args(["--default-delivery", "conflate"]).unwrap();
        assert_eq!(
            args.limits().default_delivery,
            Delivery::Conflate { interval_ms: crate::codec::DEFAULT_CONFLATE_MS }
        );
        assert!(ServeArgs::parse_from_args(["--default-delivery", "snapshot"]).is_err());
    }

    #[test]
    fn several_feeds() {
        let args = ServeArgs::parse_from_args([
            "--feed",
            "binance:BTCUSDT,ETHUSDT",
            "--feed",
            "coinbase:BTC-USD",
            "--feed",
            "kraken:BTC/USD",
            "--feed",
            "okx:BTC-USDT,eth-usdt",
            "--feed",
            "simulator",
            "--kraken-ws-url",
            "ws://127.0.0.1:1/v2",
            "--okx-ws-url",
            "ws://127.0.0.1:2/ws/v5/public",
        ])
        .unwrap();
        assert_eq!(
            args.feeds(),
            [
                FeedSpec::Binance(vec!["BTCUSDT".into(), "ETHUSDT".into()]),
                FeedSpec::Coinbase(vec!["BTC-USD".into()]),
                FeedSpec::Kraken(vec!["BTC/USD".into()]),
                FeedSpec::Okx(vec!["BTC-USDT".into(), "eth-usdt".into()]),
                FeedSpec::Simulator,
            ]
        );
        assert_eq!(args.venues.kraken_ws_url, "ws://127.0.0.1:1/v2");
        assert_eq!(args.venues.okx_ws_url, "ws://127.0.0.1:2/ws/v5/public");
        assert_eq!(
            ServeArgs::parse_from_args(std::iter::empty::<&str>()).unwrap().venues.okx_ws_url,
            "wss://ws.okx.com:8443/ws/v5/public"
        );
        let err = ServeArgs::parse_from_args(["--feed", "binance:"]).unwrap_err().to_string();
        assert!(err.contains("names no symbols"), "{err}");
        let err = ServeArgs::parse_from_args(["--kraken-book-depth", "7"]).unwrap_err().to_string();
        assert!(err.contains("--kraken-book-depth"), "{err}");
    }

    #[test]
    fn bad_flags_are_clear_errors() {
        let err = ServeArgs::parse_from_args(["--rate", "0"]).unwrap_err().to_string();
        assert!(err.contains("--rate"), "{err}");
        let err = ServeArgs::parse_from_args(["--feed", "nasdaq"]).unwrap_err().to_string();
        assert!(err.contains("unknown feed \"nasdaq\""), "{err}");
        let err = ServeArgs::parse_from_args(["--listen", "not-an-address"]).unwrap_err().to_string();
        assert!(err.contains("--listen"), "{err}");
    }

    #[test]
    fn contradictions_are_errors_naming_the_settings() {
        let problems = |flags: &[&str]| match ServeArgs::parse_from_args(flags.iter().copied()).unwrap().validate() {
            Ok(()) => Vec::new(),
            Err(SettingsError(problems)) => problems,
        };
        assert!(problems(&[]).is_empty(), "the defaults are consistent");
        let found = problems(&["--conflate-after", "2048", "--outbox-max", "1024"]);
        assert!(found[0].starts_with("conflate-after (2048) is above outbox-max (1024)"), "{found:?}");
        let found = problems(&["--conflate-min-ms", "500", "--conflate-max-ms", "100"]);
        assert!(found[0].starts_with("conflate-min-ms (500) is above conflate-max-ms (100)"), "{found:?}");
        let found = problems(&["--ping-interval-ms", "60000"]);
        assert!(found[0].starts_with("ping-interval-ms (60000) must be below idle-timeout-ms"), "{found:?}");
        assert!(problems(&["--tls-cert", "c.pem"])[0].contains("tls-cert and tls-key go together"));
        assert_eq!(problems(&["--jwt-audience", "x"]), ["jwt-audience is set but auth does not include jwt"]);
        assert!(problems(&["--auth", "keys", "--auth-token", "t"])[0].contains("auth does not include tokens"));
        assert!(
            problems(&["--auth", "jwt", "--jwt-leeway-s", "900"])[0].contains("jwt-leeway-s (900) may be at most 300")
        );
        let err = ServeArgs::parse_from_args(["--max-message-bytes", "10"]).unwrap_err().to_string();
        assert!(err.contains("--max-message-bytes"), "{err}");
    }

    #[test]
    fn production_needs_tls_authentication_and_origins() {
        let args = ServeArgs::parse_from_args(["--profile", "production"]).unwrap();
        let SettingsError(problems) = args.validate().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("needs TLS: set tls-cert and tls-key"));
        assert!(problems[1].contains("needs authentication"));
        assert!(problems[2].contains("needs an origin allow-list: set allowed-origin"));
        assert!(!args.query_token_allowed(), "no tokens in URLs unless asked for");
        let args = ServeArgs::parse_from_args([
            "--profile",
            "production",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--auth",
            "keys",
            "--allowed-origin",
            "https://desk.example",
        ])
        .unwrap();
        assert_eq!(args.validate(), Ok(()));
        let mut echo = args.clone();
        echo.conformance_echo = true;
        assert!(echo.validate().unwrap_err().0[0].contains("conformance-echo is for `make conformance` only"));
        let args = ServeArgs::parse_from_args(["--profile", "production", "--allow-query-token"]).unwrap();
        assert!(args.query_token_allowed(), "an operator may opt in");
        assert!(!ServeArgs::parse_from_args::<[&str; 0], &str>([]).unwrap().query_token_allowed(), "off by default");
    }

    #[test]
    fn replay_feed_and_store_flags() {
        let args = ServeArgs::parse_from_args(["--feed", "replay:1000..2000@max", "--store", "none"]).unwrap();
        let expected = crate::replay::ReplayRange { from: 1000, to: 2000, speed: crate::replay::Speed::Max };
        assert_eq!(args.feeds(), vec![FeedSpec::Replay(expected)]);
        let err = ServeArgs::parse_from_args(["--feed", "replay:5..1"]).unwrap_err().to_string();
        assert!(err.contains("FROM must be before TO"), "{err}");
        assert_eq!(args.history.store.url(), None);
        let args = ServeArgs::parse_from_args(["--store", "sqlite:///tmp/x/h.db"]).unwrap();
        assert_eq!(args.history.store.url().as_deref(), Some("sqlite:///tmp/x/h.db"));
        assert_eq!(args.history.writer("sqlite:///tmp/x/h.db").journal_dir, PathBuf::from("/tmp/x/journal"));
    }
}
