//! The connection shell around a venue's pure protocol ([`Venue`]): one task per
//! venue feed, owning its WebSocket connection(s), REST fetches and timers.
//!
//! What it owns: the current connection, at most one replacement connection while
//! rotating, the venue state machine, a [`JoinSet`] of REST snapshot fetches and
//! the queue of client messages waiting for their pacing slot.
//!
//! What it waits on (one `select!`): the next WebSocket frame, a REST result, the
//! pacing slot of the next client message, the keepalive deadline (venues that
//! want a `ping` on a quiet connection), the stale deadline (no frame at all for
//! `stale_after`: the connection is presumed dead and replaced), the book-sync
//! deadline (a book withdrawn for `book_sync_timeout` without a fresh snapshot:
//! the connection is replaced), the scheduled rotation deadline, and cancellation.
//!
//! When it falls behind: events go to the engine over the bounded feed channel and
//! the task awaits `send`; while it waits it reads nothing, so TCP backpressure
//! reaches the venue. Nothing here queues without bound: the venue's diff buffer
//! and a replacement connection's buffer are capped.
//!
//! Reconnects use jittered exponential backoff (half to all of
//! `initial × 2^attempt`, capped at `max`); the attempt count is reset once a
//! connection delivers data. On every lost connection the venue withdraws its books
//! (`BookReset` with no levels: subscribers get `book_invalidated`) and resyncs on
//! the next connection. A venue's scheduled disconnect (Binance's 24-hour limit,
//! or its `serverShutdown` notice) is handled make-before-break: a replacement
//! connection is opened and subscribed, its messages are buffered for
//! `rotation_overlap`, then the old connection is closed and the buffered messages
//! are processed; the venue drops what both connections delivered by venue id
//! (trade ids, update ids), so the data has no hole and the book no reset.
//!
//! Pings: tungstenite answers WebSocket pings itself on the next read or write (a
//! pong counts as a client message for Binance; one per server ping is well under
//! its limit). Application heartbeats (Coinbase `heartbeats`, Kraken `heartbeat`)
//! are subscribed by the venues and keep the stale timer quiet. A venue that
//! wants the client to speak on a quiet connection ([`Venue::keepalive`]: OKX
//! closes one after 30 s without a push) gets its text message once the
//! connection has been silent for the venue's interval, or two thirds of the
//! stale limit if that is sooner (the answer must come back before the stale
//! deadline), and again each interval while the silence lasts; its answer is an
//! ordinary frame that keeps the stale timer quiet.
//!
//! HTTP: REST snapshots use hyper-util's client with hyper-rustls (ring provider,
//! webpki roots), because hyper is already in the tree for axum and a snapshot is
//! one GET; reqwest would add its own stack for nothing we use. TLS for WebSockets
//! is tokio-tungstenite's rustls connector with the same ring-based config, so no
//! cmake/aws-lc build is needed; `ws://` and `http://` URLs (tests, local mocks)
//! stay plain.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::{Action, EventBatch, FeedHealth, FeedState, Venue};
use crate::model::{Event, InstrumentId, Payload, now_nanos};

/// Largest REST body accepted (a 1000-level Binance snapshot is about 60 KB).
const MAX_REST_BODY: usize = 8 << 20;
/// Messages a replacement connection may buffer before the switch is forced.
const MAX_REPLACEMENT_BUFFER: usize = 100_000;

/// How a venue feed connects and when it gives up on a connection.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// WebSocket URL (`wss://…`, or `ws://…` for local servers).
    pub ws_url: String,
    /// REST base URL for snapshots (`https://…` or `http://…`), if the venue needs one.
    pub rest_url: Option<String>,
    /// No frame at all for this long: the connection is replaced.
    pub stale_after: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Least time between two client messages on one connection.
    pub message_interval: Duration,
    /// Rotate (make-before-break) a connection this old, if set.
    pub max_connection_age: Option<Duration>,
    /// How long a replacement connection runs beside the old one before the switch.
    pub rotation_overlap: Duration,
    /// Limit on connecting (TCP, TLS and WebSocket handshake) and on each REST request.
    pub request_timeout: Duration,
    /// A book withdrawn (after a gap, a checksum failure or a reconnect) must be
    /// synchronised again within this long, or the connection is replaced: a venue
    /// that never answers a resubscribe must not leave a book empty for good.
    pub book_sync_timeout: Duration,
}

/// Why a connection or a REST request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("timed out")]
    Timeout,
    #[error("tls setup: {0}")]
    Tls(String),
    #[error("bad url {0:?}")]
    Url(String),
    #[error("http: {0}")]
    Http(String),
    #[error("http status {0}")]
    Status(u16),
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Books the venue withdrew (a `BookReset` without levels) and has not
/// synchronised again (a `BookReset` with levels), with when each was withdrawn.
#[derive(Debug, Default)]
struct BookWatch {
    withdrawn: rustc_hash::FxHashMap<InstrumentId, Instant>,
}

impl BookWatch {
    fn observe(&mut self, events: &[Event], now: Instant) {
        for event in events {
            if let Payload::BookReset(levels) = &event.payload {
                if levels.bids.is_empty() && levels.asks.is_empty() {
                    self.withdrawn.entry(event.instrument).or_insert(now);
                } else {
                    self.withdrawn.remove(&event.instrument);
                }
            }
        }
    }

    /// A new connection gets the whole timeout for every book still withdrawn.
    fn restart(&mut self, now: Instant) {
        self.withdrawn.values_mut().for_each(|at| *at = now);
    }

    /// When the oldest withdrawn book runs out of time.
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        self.withdrawn.values().min().map(|&at| at + timeout)
    }
}

/// The HTTP client REST snapshots use.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The rustls client configuration (ring provider, webpki roots), built once.
pub fn tls_config() -> Result<Arc<rustls::ClientConfig>, ConnectError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map(|builder| Arc::new(builder.with_root_certificates(roots).with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(ConnectError::Tls)
}

/// A client for `http://` and `https://` REST endpoints.
pub fn http_client() -> Result<HttpClient, ConnectError> {
    let tls = tls_config()?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(rustls::ClientConfig::clone(&tls))
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// GETs `url` and returns the body (non-2xx is an error).
pub async fn fetch(http: &HttpClient, url: &str, timeout: Duration) -> Result<Bytes, ConnectError> {
    let uri: hyper::Uri = url.parse().map_err(|_| ConnectError::Url(url.to_owned()))?;
    let response = tokio::time::timeout(timeout, http.get(uri))
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(|e| ConnectError::Http(e.to_string()))?;
    if !response.status().is_success() {
        return Err(ConnectError::Status(response.status().as_u16()));
    }
    let body = Limited::new(response.into_body(), MAX_REST_BODY);
    let collected = tokio::time::timeout(timeout, body.collect())
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(|e| ConnectError::Http(e.to_string()))?;
    Ok(collected.to_bytes())
}

/// Opens a WebSocket (TLS for `wss://`).
pub async fn connect(url: &str, timeout: Duration) -> Result<Ws, ConnectError> {
    let connector =
        if url.starts_with("wss://") { Some(Connector::Rustls(tls_config()?)) } else { Some(Connector::Plain) };
    let (ws, _) =
        tokio::time::timeout(timeout, tokio_tungstenite::connect_async_tls_with_config(url, None, true, connector))
            .await
            .map_err(|_| ConnectError::Timeout)??;
    Ok(ws)
}

/// Jittered exponential backoff before attempt number `attempt` (1-based).
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(max);
    let half = exp / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// Client messages waiting for their pacing slot.
struct Pacer {
    queue: VecDeque<String>,
    next_at: Instant,
    interval: Duration,
}

impl Pacer {
    fn new(interval: Duration) -> Self {
        Self { queue: VecDeque::new(), next_at: Instant::now(), interval }
    }
}

/// Why a connection ended.
enum End {
    Cancelled,
    Lost(String),
}

/// A replacement connection being opened, or open and buffering.
enum Replacement {
    Connecting(tokio::task::JoinHandle<Result<Box<Ws>, ConnectError>>),
    Buffering { ws: Box<Ws>, buffer: Vec<Bytes>, switch_at: Instant },
}

/// What the replacement connection did.
enum ReplacementEvent {
    Connected(Result<Result<Box<Ws>, ConnectError>, tokio::task::JoinError>),
    Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Everything a feed task shares with the rest of the gateway.
pub struct FeedContext {
    pub tx: mpsc::Sender<EventBatch>,
    pub health: Arc<FeedHealth>,
    pub cancel: CancellationToken,
    pub http: Option<HttpClient>,
}

struct Shell<V: Venue> {
    venue: V,
    config: SupervisorConfig,
    ctx: FeedContext,
    out: Vec<Event>,
    actions: Vec<Action>,
    books: BookWatch,
}

/// Runs one venue feed until cancelled: connect, subscribe, process, reconnect.
pub async fn run<V: Venue>(venue: V, config: SupervisorConfig, ctx: FeedContext) {
    let mut shell = Shell { venue, config, ctx, out: Vec::new(), actions: Vec::new(), books: BookWatch::default() };
    let mut attempt: u32 = 0;
    let mut first = true;
    loop {
        if shell.ctx.cancel.is_cancelled() {
            break;
        }
        shell.ctx.health.set_state(if first { FeedState::Connecting } else { FeedState::Reconnecting });
        if !first {
            shell.ctx.health.record_reconnect();
        }
        first = false;
        let connected = tokio::select! {
            _ = shell.ctx.cancel.cancelled() => break,
            c = connect(&shell.config.ws_url, shell.config.request_timeout) => c,
        };
        match connected {
            Ok(ws) => {
                shell.ctx.health.set_state(FeedState::Live);
                tracing::info!(venue = shell.venue.venue(), url = %shell.config.ws_url, "connected");
                let end = Box::pin(shell.connection(ws, &mut attempt)).await;
                shell.venue.on_disconnect(now_nanos(), &mut shell.out);
                shell.books.observe(&shell.out, Instant::now());
                if !shell.flush().await {
                    break;
                }
                match end {
                    End::Cancelled => break,
                    End::Lost(reason) => {
                        tracing::warn!(venue = shell.venue.venue(), %reason, "connection lost");
                        shell.ctx.health.record_error(format_args!("connection lost: {reason}"));
                    }
                }
            }
            Err(error) => {
                tracing::warn!(venue = shell.venue.venue(), %error, attempt, "connect failed");
                shell.ctx.health.record_error(format_args!("connect failed: {error}"));
            }
        }
        shell.ctx.health.set_state(FeedState::Reconnecting);
        attempt = attempt.saturating_add(1);
        let delay = backoff(attempt, shell.config.backoff_initial, shell.config.backoff_max);
        tokio::select! {
            _ = shell.ctx.cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    shell.ctx.health.set_state(FeedState::Stopped);
}

impl<V: Venue> Shell<V> {
    /// Sends what the venue produced to the engine; false when the engine is gone
    /// or the feed is cancelled.
    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let batch = std::mem::take(&mut self.out);
        tokio::select! {
            sent = self.ctx.tx.send(batch) => sent.is_ok(),
            _ = self.ctx.cancel.cancelled() => false,
        }
    }

    fn handle(&mut self, text: &[u8]) {
        let now = now_nanos();
        self.ctx.health.record_messages(1, now);
        if let Err(error) = self.venue.on_message(text, now, &mut self.out, &mut self.actions) {
            self.ctx.health.record_parse_error();
            self.ctx.health.record_error(format_args!("message skipped: {error}"));
            tracing::debug!(venue = self.venue.venue(), %error, "message skipped");
        }
    }

    fn spawn_fetch(&self, rest: &mut JoinSet<(usize, Bytes, u64)>, key: usize, path: &str) {
        let (Some(base), Some(http)) = (self.config.rest_url.as_ref(), self.ctx.http.clone()) else {
            tracing::error!(venue = self.venue.venue(), "REST snapshot needed but no REST URL configured");
            return;
        };
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let (initial, max, timeout, venue) =
            (self.config.backoff_initial, self.config.backoff_max, self.config.request_timeout, self.venue.venue());
        rest.spawn(async move {
            let mut attempt = 0;
            loop {
                match fetch(&http, &url, timeout).await {
                    Ok(body) => return (key, body, now_nanos()),
                    Err(error) => {
                        attempt += 1;
                        tracing::warn!(venue, %url, %error, attempt, "snapshot fetch failed");
                        tokio::time::sleep(backoff(attempt, initial, max)).await;
                    }
                }
            }
        });
    }

    /// Processes pending actions; returns a reason to drop the connection, if any.
    fn take_actions(
        &mut self,
        pacer: &mut Pacer,
        rest: &mut JoinSet<(usize, Bytes, u64)>,
        rotate: &mut bool,
    ) -> Option<String> {
        let mut end = None;
        for action in std::mem::take(&mut self.actions) {
            match action {
                Action::Send(message) => pacer.queue.push_back(message),
                Action::Fetch { key, path } => self.spawn_fetch(rest, key, &path),
                Action::Resync { symbol, reason } => {
                    self.ctx.health.record_resync();
                    self.ctx.health.record_error(format_args!("book resync {symbol}: {reason}"));
                    tracing::warn!(venue = self.venue.venue(), %symbol, reason, "book resync");
                }
                Action::Rotate => *rotate = true,
                Action::Reconnect(reason) => end = Some(reason.to_owned()),
            }
        }
        end
    }

    fn start_replacement(&mut self) -> Replacement {
        let url = self.config.ws_url.clone();
        let timeout = self.config.request_timeout;
        let interval = self.config.message_interval;
        let subscriptions = self.venue.subscriptions();
        Replacement::Connecting(tokio::spawn(async move {
            let mut ws = connect(&url, timeout).await?;
            for (i, message) in subscriptions.into_iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(interval).await;
                }
                ws.send(Message::text(message)).await?;
            }
            Ok(Box::new(ws))
        }))
    }

    /// Runs one connection until it is lost or the feed is cancelled.
    async fn connection(&mut self, mut ws: Ws, attempt: &mut u32) -> End {
        self.venue.on_connection_start();
        self.books.restart(Instant::now());
        let mut pacer = Pacer::new(self.config.message_interval);
        pacer.queue.extend(self.venue.subscriptions());
        let mut rest: JoinSet<(usize, Bytes, u64)> = JoinSet::new();
        let mut last_frame = Instant::now();
        // When the keepalive text was last queued; the next one is due an interval
        // after the later of it and the last frame.
        let mut last_keepalive = last_frame;
        let keepalive = self.venue.keepalive().map(|(after, text)| (after.min(self.config.stale_after * 2 / 3), text));
        let mut rotate_at = self.config.max_connection_age.map(|age| Instant::now() + age);
        let mut replacement: Option<Replacement> = None;
        let mut rotate = false;
        loop {
            if rotate && replacement.is_none() {
                tracing::info!(venue = self.venue.venue(), "rotating connection");
                replacement = Some(self.start_replacement());
            }
            rotate = false;
            let switch_at = match &replacement {
                Some(Replacement::Buffering { switch_at, .. }) => Some(*switch_at),
                _ => None,
            };
            let mut switch_now = false;
            tokio::select! {
                _ = self.ctx.cancel.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    return End::Cancelled;
                }
                frame = ws.next() => {
                    last_frame = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            *attempt = 0;
                            self.handle(text.as_bytes());
                        }
                        Some(Ok(Message::Binary(bytes))) => {
                            *attempt = 0;
                            self.handle(&bytes);
                        }
                        Some(Ok(Message::Close(_))) | None => {
                            if matches!(replacement, Some(Replacement::Buffering { .. })) {
                                switch_now = true;
                            } else {
                                return End::Lost("closed by the venue".into());
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(error)) => {
                            if matches!(replacement, Some(Replacement::Buffering { .. })) {
                                switch_now = true;
                            } else {
                                return End::Lost(format!("read failed: {error}"));
                            }
                        }
                    }
                }
                Some(joined) = rest.join_next(), if !rest.is_empty() => {
                    if let Ok((key, body, ts_recv)) = joined
                        && let Err(error) = self.venue.on_rest(key, &body, ts_recv, &mut self.out, &mut self.actions)
                    {
                        self.ctx.health.record_parse_error();
                        tracing::warn!(venue = self.venue.venue(), %error, "bad snapshot");
                    }
                }
                _ = tokio::time::sleep_until(pacer.next_at), if !pacer.queue.is_empty() => {
                    if let Some(message) = pacer.queue.pop_front() {
                        if let Err(error) = ws.send(Message::text(message)).await {
                            return End::Lost(format!("send failed: {error}"));
                        }
                        pacer.next_at = Instant::now() + pacer.interval;
                    }
                }
                _ = sleep_until_opt(keepalive.map(|(after, _)| last_frame.max(last_keepalive) + after)) => {
                    if let Some((_, text)) = keepalive {
                        pacer.queue.push_back(text.to_owned());
                    }
                    last_keepalive = Instant::now();
                }
                _ = tokio::time::sleep_until(last_frame + self.config.stale_after) => {
                    return End::Lost(format!("stale: no frame for {:?}", self.config.stale_after));
                }
                _ = sleep_until_opt(self.books.deadline(self.config.book_sync_timeout)) => {
                    metrics::counter!("tickwire_feed_book_sync_timeouts_total", "feed" => self.ctx.health.name.clone())
                        .increment(1);
                    return End::Lost(format!(
                        "{} book(s) not synchronised within {:?} of their withdrawal",
                        self.books.withdrawn.len(),
                        self.config.book_sync_timeout
                    ));
                }
                _ = sleep_until_opt(rotate_at), if replacement.is_none() => {
                    rotate = true;
                    rotate_at = None;
                }
                event = async {
                    match &mut replacement {
                        Some(Replacement::Connecting(handle)) => ReplacementEvent::Connected(handle.await),
                        Some(Replacement::Buffering { ws, .. }) => ReplacementEvent::Frame(ws.next().await),
                        None => std::future::pending().await,
                    }
                } => {
                    match event {
                        ReplacementEvent::Connected(Ok(Ok(new_ws))) => {
                            replacement = Some(Replacement::Buffering {
                                ws: new_ws,
                                buffer: Vec::new(),
                                switch_at: Instant::now() + self.config.rotation_overlap,
                            });
                        }
                        ReplacementEvent::Connected(Ok(Err(error))) => {
                            tracing::warn!(venue = self.venue.venue(), %error, "replacement connection failed; retrying");
                            replacement = None;
                            rotate_at = Some(Instant::now() + self.config.backoff_max.min(Duration::from_secs(5)));
                        }
                        ReplacementEvent::Connected(Err(_)) => replacement = None,
                        ReplacementEvent::Frame(Some(Ok(message @ (Message::Text(_) | Message::Binary(_))))) => {
                            if let Some(Replacement::Buffering { buffer, .. }) = &mut replacement {
                                buffer.push(match message {
                                    Message::Text(text) => Bytes::copy_from_slice(text.as_bytes()),
                                    Message::Binary(bytes) => bytes,
                                    _ => Bytes::new(),
                                });
                                switch_now = buffer.len() >= MAX_REPLACEMENT_BUFFER;
                            }
                        }
                        ReplacementEvent::Frame(Some(Ok(_))) => {}
                        ReplacementEvent::Frame(Some(Err(_)) | None) => {
                            tracing::warn!(venue = self.venue.venue(), "replacement connection closed; retrying");
                            replacement = None;
                            rotate_at = Some(Instant::now() + self.config.backoff_initial);
                        }
                    }
                }
                _ = sleep_until_opt(switch_at) => switch_now = true,
            }
            if switch_now && let Some(Replacement::Buffering { ws: new_ws, buffer, .. }) = replacement.take() {
                let mut old = std::mem::replace(&mut ws, *new_ws);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(1), old.close(None)).await;
                });
                tracing::info!(
                    venue = self.venue.venue(),
                    buffered = buffer.len(),
                    "switched to the replacement connection"
                );
                self.venue.on_connection_start();
                pacer = Pacer::new(self.config.message_interval);
                last_frame = Instant::now();
                last_keepalive = last_frame;
                rotate_at = self.config.max_connection_age.map(|age| Instant::now() + age);
                for message in buffer {
                    self.handle(&message);
                }
            }
            if let Some(reason) = self.take_actions(&mut pacer, &mut rest, &mut rotate) {
                return End::Lost(reason);
            }
            self.books.observe(&self.out, Instant::now());
            if !self.flush().await {
                return End::Cancelled;
            }
        }
    }
}
