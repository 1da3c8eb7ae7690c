//! Roles on NATS JetStream: past one machine, ingest nodes (the only
//! sequencers) publish every sequenced event to a JetStream stream, gateway
//! nodes consume what their clients ask for and fan it out, and store nodes
//! write history from a durable consumer.
//!
//! ```text
//! ingest: feeds ─► engine ─► journal ─► fan-out (its own clients)
//!                        └─► BusTap ─► publisher task ─► JetStream stream (file storage)
//! gateway: JetStream ─► one ordered consumer per instrument in demand ─► mirror task
//!          (book::Engine::apply_sequenced, same sequences) ─► fan-out ─► clients
//! store:   JetStream ─► durable consumer ─► Store::write (idempotent) ─► ack
//! ```
//! [`wire`] fixes the subjects and bodies; [`ingest`], [`gateway`] and [`store`]
//! are the three roles' tasks. Without `--nats` none of this runs.

pub mod gateway;
pub mod ingest;
pub mod lease;
pub mod store;
pub mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, stream};

/// What one node does in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Everything in one process (feeds, engine, clients, history); with
    /// `--nats`, it also publishes to the bus.
    All,
    /// Feeds and the engine: publishes every sequenced event to the bus.
    Ingest,
    /// Client connections only, fed from the bus.
    Gateway,
    /// History only, written from the bus.
    Store,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Ingest => "ingest",
            Role::Gateway => "gateway",
            Role::Store => "store",
        }
    }

    /// Whether this role runs the feeds and the engine (sequences events).
    pub fn sequences(self) -> bool {
        matches!(self, Role::All | Role::Ingest)
    }
}

/// How to reach the bus and how the stream is laid out.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Server URLs (`nats://host:4222`), any of which may be used.
    pub urls: Vec<String>,
    pub credentials: Credentials,
    /// JetStream stream holding every event and checkpoint.
    pub stream: String,
    /// First subject token.
    pub prefix: String,
    /// Oldest message the stream keeps.
    pub max_age: Duration,
    /// Largest the stream grows, in bytes (the oldest messages go first).
    pub max_bytes: i64,
    /// Copies of the stream in a NATS cluster (1 on a single server; 3 in production).
    pub replicas: usize,
    /// Instruments with changes get a checkpoint this often.
    pub checkpoint_interval: Duration,
    /// How much recent history a gateway loads into its ring when it starts
    /// taking an instrument, so that a client moving from another gateway
    /// resumes without a gap.
    pub backfill: Duration,
    /// How long a gateway keeps an instrument nobody subscribes to any more.
    pub linger: Duration,
    /// Name of the store role's durable consumer (one history writer per cluster).
    pub store_consumer: String,
}

impl BusConfig {
    /// The stream's subjects: everything under the prefix.
    pub fn subjects(&self) -> String {
        format!("{}.>", self.prefix)
    }
}

/// How long a node waits before it creates a deleted stream again, and again
/// before it proves the new one (see [`Bus::stream`]).
const RECREATE_DELAY: Duration = Duration::from_secs(2);
/// Replacements tried before the node reports the bus stream unusable.
const RECREATE_ATTEMPTS: u32 = 5;

fn is_stream_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// Optional credentials for a secured NATS.
#[derive(Debug, Clone, Default)]
pub enum Credentials {
    #[default]
    None,
    UserPassword(String, String),
    Token(String),
    CredsFile(PathBuf),
}

/// Why the bus could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {urls}: {source}")]
    Connect { urls: String, source: async_nats::ConnectError },
    #[error("cannot read the NATS credentials file {path}: {source}")]
    Credentials { path: PathBuf, source: std::io::Error },
    #[error("bad NATS URL {url}: {message}")]
    Url { url: String, message: String },
    #[error("JetStream stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("--role {0} needs --nats")]
    NoBus(&'static str),
}

/// A connection to the bus and the stream every role uses.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub config: BusConfig,
    /// Whether this node has seen the stream: a stream that was there and is
    /// gone was deleted, and is created again with care (see [`Bus::stream`]).
    seen: Arc<AtomicBool>,
}

impl Bus {
    /// Connects (retrying in the background when the first attempt fails is
    /// NATS's own reconnect logic; a first failure is reported here).
    pub async fn connect(config: BusConfig, name: &str) -> Result<Bus, BusError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("tickwire-{name}"))
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            // The first URL is this node's server, the others its fall-backs
            // (list them in another order on other nodes to spread the load).
            .retain_servers_order()
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => {
                        metrics::counter!("tickwire_bus_disconnects_total").increment(1);
                        tracing::warn!("NATS connection lost; reconnecting");
                    }
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    async_nats::Event::SlowConsumer(sid) => {
                        metrics::counter!("tickwire_bus_slow_consumer_total").increment(1);
                        tracing::warn!(
                            sid,
                            "NATS says this node is a slow consumer; the hole is refilled from the stream"
                        );
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            });
        options = match &config.credentials {
            Credentials::None => options,
            Credentials::UserPassword(user, password) => options.user_and_password(user.clone(), password.clone()),
            Credentials::Token(token) => options.token(token.clone()),
            Credentials::CredsFile(path) => options
                .credentials_file(path)
                .await
                .map_err(|source| BusError::Credentials { path: path.clone(), source })?,
        };
        let urls = config.urls.join(",");
        let addrs: Vec<async_nats::ServerAddr> = config
            .urls
            .iter()
            .map(|u| {
                u.parse::<async_nats::ServerAddr>()
                    .map_err(|e| BusError::Url { url: u.clone(), message: e.to_string() })
            })
            .collect::<Result<_, _>>()?;
        let client = options.connect(addrs).await.map_err(|source| BusError::Connect { urls, source })?;
        // Publish acknowledgements: a bounded window (the publisher keeps fewer
        // in flight), and a short timeout, after which the publisher republishes.
        let js = jetstream::context::ContextBuilder::new()
            .timeout(Duration::from_secs(3))
            .ack_timeout(Duration::from_secs(3))
            .max_ack_inflight(64 * 1024)
            .build(client.clone());
        Ok(Bus { client, js, config, seen: Arc::new(AtomicBool::new(false)) })
    }

    /// The event stream, created with the configured limits when missing.
    ///
    /// A stream this node has seen and that is gone was deleted (by an
    /// operator, or by its limits' owner). The server removes a deleted
    /// stream's files after it answers, and a stream of the same name created
    /// meanwhile can lose its own files to that removal (nats-server 2.9: its
    /// writes then fail with "error opening msg block file", or it counts
    /// messages it cannot return). So a replacement is created only after
    /// [`RECREATE_DELAY`], and is proved by writing and reading a probe
    /// message; one that fails the probe is deleted and created again.
    pub async fn stream(&self) -> Result<stream::Stream, BusError> {
        let c = &self.config;
        let fail = |message: String| BusError::Stream { stream: c.stream.clone(), message };
        match self.js.get_stream(&c.stream).await {
            Ok(stream) => {
                self.seen.store(true, Ordering::Relaxed);
                return Ok(stream);
            }
            Err(error) if is_stream_not_found(&error) => {}
            Err(error) => return Err(fail(error.to_string())),
        }
        if !self.seen.load(Ordering::Relaxed) {
            let stream = self.create_stream().await?;
            self.seen.store(true, Ordering::Relaxed);
            return Ok(stream);
        }
        for attempt in 1.. {
            tracing::error!(
                stream = %c.stream,
                attempt,
                "the bus stream was deleted: creating it again in {RECREATE_DELAY:?} (its history is gone; gateways resynchronise)"
            );
            tokio::time::sleep(RECREATE_DELAY).await;
            let stream = self.create_stream().await?;
            tokio::time::sleep(RECREATE_DELAY).await;
            match self.probe(&stream).await {
                Ok(()) => return Ok(stream),
                Err(error) if attempt < RECREATE_ATTEMPTS => {
                    tracing::error!(%error, "the recreated bus stream lost its storage: deleting it to create it once more");
                    self.js.delete_stream(&c.stream).await.map_err(|e| fail(e.to_string()))?;
                }
                Err(error) => return Err(fail(format!("the recreated stream does not keep messages: {error}"))),
            }
        }
        unreachable!("the loop returns")
    }

    async fn create_stream(&self) -> Result<stream::Stream, BusError> {
        let c = &self.config;
        self.js
            .get_or_create_stream(stream::Config {
                name: c.stream.clone(),
                subjects: vec![c.subjects()],
                max_age: c.max_age,
                max_bytes: c.max_bytes,
                storage: stream::StorageType::File,
                num_replicas: c.replicas,
                // Republished events (after a bus failure, a fail-over) are dropped
                // by id; they come within seconds, and the server keeps every id
                // of the window (at 100,000 events/s, 3 million for 30 s).
                duplicate_window: Duration::from_secs(30),
                allow_direct: true,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::Stream { stream: c.stream.clone(), message: e.to_string() })
    }

    /// Writes a probe message and reads it back by subject: a stream that
    /// does both keeps its messages.
    async fn probe(&self, stream: &stream::Stream) -> Result<(), String> {
        let subject = format!("{}._cluster.probe", self.config.prefix);
        let written = self
            .js
            .publish(subject.clone(), bytes::Bytes::from_static(b"probe"))
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let read = stream.get_last_raw_message_by_subject(&subject).await.map_err(|e| e.to_string())?;
        if read.sequence != written.sequence {
            return Err(format!("wrote the probe at {}, read it at {}", written.sequence, read.sequence));
        }
        Ok(())
    }

    /// The cluster's sequence epoch: the one in the stream's latest
    /// checkpoint (every checkpoint carries it), if there is one.
    pub async fn epoch(&self) -> Result<Option<u64>, BusError> {
        let stream = self.stream().await?;
        let any_checkpoint = format!("{}.*.*.{}", self.config.prefix, wire::CHECKPOINT_TOKEN);
        match stream.get_last_raw_message_by_subject(&any_checkpoint).await {
            Ok(message) => Ok(wire::decode_checkpoint(&message.payload).ok().map(|cp| cp.epoch)),
            Err(error) if error.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
                Ok(None)
            }
            Err(error) => Err(BusError::Stream { stream: self.config.stream.clone(), message: error.to_string() }),
        }
    }
}
