//! One WebSocket session: a reader that turns client requests into subscriptions,
//! and the writing of the connection's outbox.
//!
//! On a plain TCP socket a writer shard writes the outbox ([`super::writer`]);
//! the session's task only reads, keeps the heartbeat and conflation timers, and
//! takes over the writing while the socket is backlogged. On TLS the task writes
//! too. The reader never writes to the socket: answers (snapshots, errors,
//! pongs) go through the outbox, in order with the data. When the client is gone
//! or broke the protocol, the reader ends and asks for a close frame.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use hyper::upgrade::Upgraded;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use super::AppState;
use super::access::Grant;
use super::upgrade::{ReadSide, WriteSide, split};
use super::writer::{Connection, Scratch, WriteStatus, data_frame, ping_frame};
use crate::codec::{
    ClientRequest, Delivery, ErrorCode, Format, RequestError, Subscription, close, parse_request, proto,
};
use crate::fanout::{Outbox, Resume};
use crate::keys::Use;
use crate::model::{Instruments, Lookup, now_nanos};
use crate::session::{Resolved, StartAt, resolve_symbols, start_stream};

/// Per-connection limits and timers.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Largest client message accepted; larger ones close the connection with 1009.
    pub max_message_bytes: usize,
    /// Largest batch frame the server builds.
    pub max_frame_bytes: usize,
    /// (instrument, channel) subscriptions one connection may hold.
    pub max_subscriptions: usize,
    pub ping_interval: Duration,
    /// A connection silent for this long (no message, no pong) is closed with 4000.
    pub idle_timeout: Duration,
    /// Delivery of subscriptions that name none.
    pub default_delivery: Delivery,
    /// Shortest and longest `conflate` interval a client may ask for, in milliseconds.
    pub conflate_ms_range: (u32, u32),
    /// tungstenite's read buffer per connection.
    pub read_buffer_bytes: usize,
    /// Frames one client message may arrive in (more: 1009).
    pub max_fragments: u32,
    /// Client messages per second (a burst of twice as many); see [`Inbound`].
    pub max_messages_per_s: u32,
    /// Subscribe and unsubscribe requests per minute (a burst of a quarter of
    /// that); past it, refused with `rate_limited`. 0: no limit.
    pub max_subscription_changes_per_min: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1 << 20,
            max_frame_bytes: 256 << 10,
            max_subscriptions: 10_000,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            default_delivery: Delivery::SnapshotOnLag,
            conflate_ms_range: (10, 60_000),
            read_buffer_bytes: 512,
            max_fragments: 1024,
            max_messages_per_s: 100,
            max_subscription_changes_per_min: 600,
        }
    }
}

/// How long a closing session waits for its close frame to go out, and then for
/// the peer's side of the close handshake.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Why the reader stopped, and the close code to send.
struct ReaderEnd {
    code: u16,
    reason: &'static str,
    /// The peer sent its close frame or its connection ended: nothing more
    /// comes from it, so the session need not linger for the rest of a frame.
    peer_done: bool,
}

impl ReaderEnd {
    /// The server ends the connection while the peer may still be sending.
    const fn fail(code: u16, reason: &'static str) -> Self {
        Self { code, reason, peer_done: false }
    }
}

/// What a session does with the client's text and binary messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The market-data protocol (docs/PROTOCOL.md), in this format.
    Stream(Format),
    /// Each message written back unchanged, with its opcode: the route of
    /// `serve --conformance-echo`, through which `make conformance` tests this
    /// WebSocket stack (docs/CONFORMANCE.md). Never in production.
    Echo,
}

/// Runs a session until the client leaves, breaks the protocol, falls too far
/// behind, goes silent, or the server shuts down.
pub async fn run(upgraded: Upgraded, app: Arc<AppState>, service: Service, grant: Option<Grant>) {
    let format = match service {
        Service::Stream(format) => format,
        // What the echo itself says (a refusal past the message rate) is JSON.
        Service::Echo => Format::Json,
    };
    let outbox = app.fanout.outbox(format);
    let (read, write) = split(upgraded);
    let (connection, mut stream_sink) = match write {
        WriteSide::Direct(socket) => {
            let connection = Connection::new(outbox.clone(), Some(socket));
            app.writers().attach(&connection);
            (connection, None)
        }
        WriteSide::Stream(sink) => (Connection::new(outbox.clone(), None), Some(sink)),
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(app.limits.read_buffer_bytes)
        .write_buffer_size(0)
        .max_message_size(Some(app.limits.max_message_bytes))
        .max_frame_size(Some(app.limits.max_message_bytes));
    let stream = WebSocketStream::from_raw_socket(
        ReadSide::new(read, outbox.clone(), app.limits.max_fragments),
        Role::Server,
        Some(config),
    )
    .await;
    let started = Instant::now();
    let last_seen_ms = AtomicU64::new(0);
    let mut reader = pin!(read_loop(stream, &app, &outbox, service, grant.as_ref(), started, &last_seen_ms));
    let revoked = async {
        match &grant {
            Some(Grant(key)) => key.revoked.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let mut revoked = pin!(revoked);
    let mut revoke_seen = false;
    // A connection opened with an expiring token: warned `warn` before the
    // expiry, closed with 4001 at it (checked every second; a refresh moves it).
    let expiring = grant.as_ref().map(|Grant(key)| key.clone()).filter(|key| key.expires_ns() != 0);
    let warn_ns = app.access.jwt().map_or(0, |(_, warn)| warn.as_nanos() as u64);
    let mut warned_for = 0u64;
    let mut expiry_check = tokio::time::interval(Duration::from_secs(1));
    let mut reader_end: Option<ReaderEnd> = None;

    let limits = app.limits;
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + limits.ping_interval, limits.ping_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Runs while the connection has `conflate` subscriptions.
    let mut conflation: Option<(u32, tokio::time::Interval)> = None;
    let mut status = WriteStatus::Flowing;
    // Only a session that writes for itself (TLS) needs buffers of its own.
    let mut scratch = Scratch::default();
    let mut shutting_down = false;
    // Once a close is asked for, the session ends by this time at the latest.
    let mut close_deadline: Option<tokio::time::Instant> = None;
    while status != WriteStatus::Closed {
        // Subscribes and unsubscribes that change the period wake this task
        // (`handle`), so a new period takes effect at once even when a writer
        // shard, not this task, hears the outbox.
        let wanted = outbox.conflate_ms();
        if wanted != conflation.as_ref().map(|(ms, _)| *ms) {
            conflation = wanted.map(|ms| (ms, conflation_interval(ms)));
        }
        let conflation_tick = async {
            match conflation.as_mut() {
                Some((_, interval)) => {
                    interval.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        let deadline = async {
            match close_deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = expiry_check.tick(), if expiring.is_some() && !outbox.closing() => {
                if let Some(key) = &expiring {
                    let (at, now) = (key.expires_ns(), now_nanos());
                    if now >= at {
                        metrics::counter!("tickwire_tokens_expired_total").increment(1);
                        outbox.request_close(close::TOKEN_EXPIRED, "token expired");
                    } else if at - now <= warn_ns && warned_for != at {
                        warned_for = at;
                        outbox.push_message(Bytes::from(outbox.format().encode_auth_status("expiring", at)));
                    }
                }
            }
            () = &mut revoked, if !revoke_seen => {
                revoke_seen = true;
                outbox.request_close(close::KEY_REVOKED, "key revoked");
            }
            () = app.shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                // What is queued goes out first, then the goodbye.
                outbox.request_close(close::GOING_AWAY, "server shutting down");
            }
            () = outbox.ready() => {
                status = match stream_sink.as_mut() {
                    Some(sink) => connection.write_out(&app.fanout, limits.max_frame_bytes, sink, &mut scratch).await,
                    None => connection.status(),
                };
            }
            ready = connection.writable(), if status == WriteStatus::Backlogged => {
                status = match ready {
                    Ok(()) => connection.flush_backlog(&app.fanout, limits.max_frame_bytes),
                    Err(_) => WriteStatus::Closed,
                };
            }
            end = &mut reader, if reader_end.is_none() => {
                outbox.request_close(end.code, end.reason);
                reader_end = Some(end);
            }
            () = conflation_tick => app.fanout.release_conflated(&outbox),
            _ = heartbeat.tick() => {
                let silent_ms = (started.elapsed().as_millis() as u64).saturating_sub(last_seen_ms.load(Ordering::Relaxed));
                if silent_ms > limits.idle_timeout.as_millis() as u64 {
                    metrics::counter!("tickwire_ws_idle_closes_total").increment(1);
                    outbox.request_close(close::IDLE_TIMEOUT, "idle timeout");
                } else {
                    outbox.push_raw(ping_frame());
                }
            }
            () = deadline => break,
        }
        if close_deadline.is_none() && outbox.closing() {
            close_deadline = Some(tokio::time::Instant::now() + CLOSE_LINGER);
            // Nothing more is sent but what is queued: leave the subscriber lists now.
            app.fanout.unsubscribe_all(&outbox);
        }
    }
    match reader_end {
        // We closed: give the peer a moment to answer with its own close frame
        // (the reader ends on it), so the close handshake completes cleanly.
        None => {
            let _ = tokio::time::timeout(CLOSE_LINGER, reader).await;
        }
        Some(end) if !end.peer_done => {
            // The peer may still be sending (say, the rest of an oversized frame).
            // Closing the socket now would reset the connection and discard our
            // close frame before the peer reads it; linger instead.
            tokio::select! {
                () = tokio::time::sleep(CLOSE_LINGER) => {}
                () = app.shutdown.cancelled() => {}
            }
        }
        Some(_) => {}
    }
    connection.finish();
    app.fanout.detach(&outbox);
}

/// The tick of a `conflate` period: first after one period, then every period,
/// never two at once after a stall. Subscriptions are refused below 1 ms
/// ([`check_delivery`]); the period is kept at 1 ms at least all the same, since
/// a zero-period interval panics.
pub(crate) fn conflation_interval(ms: u32) -> tokio::time::Interval {
    let period = Duration::from_millis(u64::from(ms.max(1)));
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// Refuses a delivery policy the server does not accept: a `conflate` interval
/// of 0 or outside `--conflate-min-ms..=--conflate-max-ms` (`bad_delivery`).
pub(crate) fn check_delivery(limits: &SessionLimits, delivery: Delivery, op: &str) -> Result<(), RequestError> {
    if let Delivery::Conflate { interval_ms } = delivery {
        let (min, max) = limits.conflate_ms_range;
        let min = min.max(1);
        if !(min..=max).contains(&interval_ms) {
            return Err(RequestError::new(
                ErrorCode::BadDelivery,
                format!("conflate interval {interval_ms} ms is outside {min}..={max} ms"),
                Some(op),
            ));
        }
    }
    Ok(())
}

/// Client messages one connection may send: a token bucket of
/// `max_messages_per_s`, holding twice as many. A message past it is refused
/// (`rate_limited`, at most once a second); a connection still over the rate
/// after [`ABUSE_LIMIT`] of such seconds is closed with 1008.
struct Inbound {
    bucket: Bucket,
    /// When a refusal was last told, and how many seconds had refusals.
    told: Option<Instant>,
    strikes: u32,
}

/// Seconds of refused messages after which a connection is closed (1008).
const ABUSE_LIMIT: u32 = 5;

/// What to do with one client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    Take,
    /// Refuse it, and tell the client (once a second).
    Refuse {
        tell: bool,
    },
    /// Persistent abuse: close the connection.
    Close,
}

/// A token bucket: `rate` a second, holding at most `burst`.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst, tokens: burst, at: Instant::now() }
    }

    /// Takes a token if there is one; also says whether the bucket was full
    /// (the client kept well within the rate for a while).
    fn take(&mut self, now: Instant) -> Option<bool> {
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens < 1.0 {
            return None;
        }
        let full = self.tokens >= self.burst - 1.0;
        self.tokens -= 1.0;
        Some(full)
    }
}

/// Subscription changes one connection may make (`max_subscription_changes_per_min`).
fn churn_bucket(per_minute: u32) -> Option<Bucket> {
    (per_minute > 0).then(|| {
        let per_minute = f64::from(per_minute);
        Bucket::new(per_minute / 60.0, (per_minute / 4.0).max(1.0))
    })
}

impl Inbound {
    fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        Self { bucket: Bucket::new(rate, 2.0 * rate), told: None, strikes: 0 }
    }

    fn admit(&mut self, now: Instant) -> Admit {
        if let Some(full) = self.bucket.take(now) {
            if full {
                self.strikes = 0; // a full bucket: the client kept to the rate a while
            }
            return Admit::Take;
        }
        let tell = self.told.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
        if tell {
            self.told = Some(now);
            self.strikes += 1;
            if self.strikes > ABUSE_LIMIT {
                return Admit::Close;
            }
        }
        Admit::Refuse { tell }
    }
}

fn touch(last_seen_ms: &AtomicU64, started: Instant) {
    last_seen_ms.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
}

async fn read_loop<S>(
    mut stream: S,
    app: &AppState,
    outbox: &Arc<Outbox>,
    service: Service,
    grant: Option<&Grant>,
    started: Instant,
    last_seen_ms: &AtomicU64,
) -> ReaderEnd
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let mut inbound = Inbound::new(app.limits.max_messages_per_s);
    let mut churn = churn_bucket(app.limits.max_subscription_changes_per_min);
    while let Some(message) = stream.next().await {
        touch(last_seen_ms, started);
        if let Ok(Message::Text(_) | Message::Binary(_)) = &message {
            match inbound.admit(Instant::now()) {
                Admit::Take => {}
                Admit::Refuse { tell } => {
                    metrics::counter!("tickwire_client_messages_refused_total", "reason" => "rate").increment(1);
                    if tell {
                        let limit = app.limits.max_messages_per_s;
                        let error = RequestError::new(
                            ErrorCode::RateLimited,
                            format!("more than {limit} messages a second: messages are refused"),
                            None,
                        );
                        reject(outbox, &error);
                    }
                    continue;
                }
                Admit::Close => {
                    metrics::counter!("tickwire_ws_abuse_closes_total").increment(1);
                    return ReaderEnd::fail(close::POLICY_VIOLATION, "too many messages");
                }
            }
        }
        match (message, service) {
            (Ok(Message::Text(text)), Service::Echo) => outbox.push_raw(data_frame(false, text.as_bytes())),
            (Ok(Message::Binary(bytes)), Service::Echo) => outbox.push_raw(data_frame(true, &bytes)),
            (Ok(Message::Text(text)), Service::Stream(Format::Json)) => {
                handle(app, outbox, grant, &mut churn, parse_request(&text)).await
            }
            (Ok(Message::Binary(bytes)), Service::Stream(Format::Proto)) => {
                handle(app, outbox, grant, &mut churn, proto::decode_request(&bytes)).await
            }
            (Ok(Message::Binary(_)), Service::Stream(Format::Json)) => reject(
                outbox,
                &RequestError::new(
                    ErrorCode::UnsupportedFrame,
                    "binary frames are not accepted on a JSON connection",
                    None,
                ),
            ),
            (Ok(Message::Text(_)), Service::Stream(Format::Proto)) => reject(
                outbox,
                &RequestError::new(
                    ErrorCode::UnsupportedFrame,
                    "text frames are not accepted on a protobuf connection",
                    None,
                ),
            ),
            (Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)), _) => {}
            (Ok(Message::Close(frame)), _) => return peer_closed(frame.as_ref()),
            (Err(error), _) => return classify_read_error(&error),
        }
    }
    ReaderEnd { code: close::NORMAL, reason: "closed", peer_done: true }
}

/// The answer to the peer's close frame: 1000, or 1002 when it carries a code
/// no endpoint may send (RFC 6455, 7.4: 1005, 1006 and 1015 are never sent in
/// a frame; codes below 1000, reserved ones below 3000 and 5000 or more are
/// not valid). tungstenite hands such a frame over as 1002 (and queues a 1002
/// reply, which [`ReadSide`] drops like every reply to a close); a peer that
/// closes with 1002 itself gets its code back, as RFC 6455, 5.5.1 suggests.
fn peer_closed(frame: Option<&CloseFrame>) -> ReaderEnd {
    match frame {
        Some(frame) if frame.code == CloseCode::Protocol => {
            ReaderEnd { code: close::PROTOCOL_ERROR, reason: "protocol error", peer_done: true }
        }
        _ => ReaderEnd { code: close::NORMAL, reason: "bye", peer_done: true },
    }
}

fn classify_read_error(error: &tungstenite::Error) -> ReaderEnd {
    let end = match error {
        tungstenite::Error::Capacity(_) => ReaderEnd::fail(close::MESSAGE_TOO_BIG, "message too big"),
        tungstenite::Error::Utf8(_) => ReaderEnd::fail(close::INVALID_PAYLOAD, "invalid UTF-8 in a text frame"),
        tungstenite::Error::Protocol(_) => ReaderEnd::fail(close::PROTOCOL_ERROR, "protocol error"),
        tungstenite::Error::Io(io) if io.to_string() == super::upgrade::TOO_MANY_FRAGMENTS => {
            ReaderEnd::fail(close::MESSAGE_TOO_BIG, "message in too many fragments")
        }
        tungstenite::Error::Io(io) if io.to_string() == super::upgrade::INVALID_UTF8 => {
            ReaderEnd::fail(close::INVALID_PAYLOAD, "invalid UTF-8 in a text frame")
        }
        _ => ReaderEnd { code: close::NORMAL, reason: "connection lost", peer_done: true },
    };
    metrics::counter!("tickwire_ws_read_errors_total", "reason" => end.reason).increment(1);
    tracing::debug!(%error, code = end.code, "websocket read ended");
    end
}

fn reject(outbox: &Outbox, error: &RequestError) {
    metrics::counter!("tickwire_client_errors_total", "code" => error.code.as_str()).increment(1);
    tracing::debug!(%error, "client request refused");
    outbox.push_message(Bytes::from(outbox.format().encode_error(error)));
}

async fn handle(
    app: &AppState,
    outbox: &Arc<Outbox>,
    grant: Option<&Grant>,
    churn: &mut Option<Bucket>,
    request: Result<ClientRequest, RequestError>,
) {
    match request {
        Err(error) => reject(outbox, &error),
        Ok(ClientRequest::Ping { id }) => {
            outbox.push_message(Bytes::from(outbox.format().encode_pong(id.as_ref(), now_nanos())));
        }
        Ok(ClientRequest::Auth { token }) => refresh(app, outbox, grant, &token),
        Ok(request @ (ClientRequest::Subscribe(_) | ClientRequest::Unsubscribe(_))) => {
            if let Some(bucket) = churn
                && bucket.take(Instant::now()).is_none()
            {
                metrics::counter!("tickwire_quota_refused_total", "quota" => "subscription_changes").increment(1);
                let op = if matches!(request, ClientRequest::Subscribe(_)) { "subscribe" } else { "unsubscribe" };
                let limit = app.limits.max_subscription_changes_per_min;
                let message = format!("more than {limit} subscription changes a minute: this request changed nothing");
                return reject(outbox, &RequestError::new(ErrorCode::RateLimited, message, Some(op)));
            }
            let period = outbox.conflate_ms();
            match &request {
                ClientRequest::Subscribe(sub) => subscribe(app, outbox, grant, sub).await,
                ClientRequest::Unsubscribe(sub) => unsubscribe(app, outbox, sub),
                ClientRequest::Ping { .. } | ClientRequest::Auth { .. } => {}
            }
            if outbox.conflate_ms() != period {
                // The session task starts, changes or stops its conflation tick;
                // on plain TCP nothing else would wake it before the heartbeat.
                outbox.wake_task();
            }
        }
    }
}

async fn subscribe(app: &AppState, outbox: &Arc<Outbox>, grant: Option<&Grant>, sub: &Subscription) {
    let instruments = app.fanout.instruments();
    let limit = Grant::subscription_limit(grant, app.limits.max_subscriptions);
    // The names alone may be too many (before any is resolved), or what the
    // patterns among them match (after).
    let too_many = |wanted: usize| {
        (wanted > limit || outbox.subscription_count() + wanted > limit).then(|| {
            RequestError::new(
                ErrorCode::TooManySymbols,
                format!("{wanted} subscriptions requested; a connection may hold at most {limit}"),
                Some("subscribe"),
            )
        })
    };
    if let Some(error) = too_many(sub.symbols.len().saturating_mul(sub.channels.len())) {
        return reject(outbox, &error);
    }
    let resolved = resolve_symbols(instruments, sub.symbols.iter().map(String::as_str), |id| {
        Grant::allows_instrument(grant, instruments, id)
    });
    // A key's entitlements refuse the request whole: never a partial stream.
    if let Some(Grant(key)) = grant {
        let uses: Vec<Use> = sub.channels.iter().map(|&c| Use::of(c)).collect();
        let denied = resolved.denied.iter().map(|&id| &*instruments.get(id).symbol);
        if let Some(message) = key.entitlements.denial(denied, &uses) {
            return reject(outbox, &RequestError::new(ErrorCode::NotEntitled, message, Some("subscribe")));
        }
    }
    if let Some(error) = too_many(resolved.ids.len().saturating_mul(sub.channels.len())) {
        return reject(outbox, &error);
    }
    let delivery = sub.delivery.unwrap_or(app.limits.default_delivery);
    if let Err(error) = check_delivery(&app.limits, delivery, "subscribe") {
        return reject(outbox, &error);
    }
    // `since` names streams by the request's own names or by their symbols.
    let mut since_by_id = Vec::with_capacity(sub.since.len());
    for (name, since) in &sub.since {
        let id = match instruments.resolve(name) {
            Lookup::Symbol(id) | Lookup::Alias(id) if resolved.ids.contains(&id) => id,
            // A name of the request that resolved to nothing: its error says why.
            _ if sub.symbols.contains(name) => continue,
            _ => {
                return reject(
                    outbox,
                    &RequestError::new(
                        ErrorCode::BadSince,
                        format!("since names {name}, which this subscribe does not"),
                        Some("subscribe"),
                    ),
                );
            }
        };
        since_by_id.push((id, since));
    }
    for &id in &resolved.ids {
        let since = since_by_id.iter().find(|(i, _)| *i == id).map(|(_, s)| *s);
        for &channel in &sub.channels {
            let start = match (since.and_then(|s| s.for_channel(channel)), sub.since_time) {
                (Some(seq), _) => StartAt::Since { seq, epoch: sub.epoch },
                (None, Some(at)) => StartAt::Time(at),
                (None, None) => StartAt::Snapshot,
            };
            let outcome = start_stream(&app.fanout, app.history.as_ref(), outbox, id, channel, start, delivery).await;
            if let Resume::Ahead { .. } = outcome {
                metrics::counter!("tickwire_client_errors_total", "code" => "bad_since").increment(1);
            }
        }
    }
    for error in resolved.errors(instruments, "subscribe") {
        reject(outbox, &error);
    }
    // Last: behind the snapshots (or resumes) and errors this request caused.
    acknowledge(outbox, true, instruments, &resolved, &sub.channels);
    outbox.signal_if_queued();
}

/// Answers an applied subscribe or unsubscribe with what it changed: the
/// symbols (patterns as what they matched), and the aliases it took.
fn acknowledge(
    outbox: &Outbox,
    subscribed: bool,
    instruments: &Instruments,
    resolved: &Resolved<'_>,
    channels: &[crate::model::Channel],
) {
    let mut distinct = Vec::with_capacity(channels.len());
    for &channel in channels {
        if !distinct.contains(&channel) {
            distinct.push(channel);
        }
    }
    let symbols: Vec<&str> = resolved.ids.iter().map(|&id| &*instruments.get(id).symbol).collect();
    let aliases: Vec<(&str, &str)> =
        resolved.aliases.iter().map(|&(name, id)| (name, &*instruments.get(id).symbol)).collect();
    outbox.push_message(Bytes::from(outbox.format().encode_ack(subscribed, &symbols, &distinct, &aliases)));
}

/// `{"op":"auth","token":…}`: a fresh JSON Web Token of the connection's
/// subject moves its expiry (answered `{"type":"auth","state":"refreshed"}`);
/// anything else is refused with `unauthorized` and changes nothing.
fn refresh(app: &AppState, outbox: &Outbox, grant: Option<&Grant>, token: &str) {
    let refuse = |message: &str| {
        reject(outbox, &RequestError::new(ErrorCode::Unauthorized, message.to_owned(), Some("auth")));
    };
    let opened_with_a_token = grant.zip(app.access.jwt()).filter(|(Grant(key), _)| key.expires_ns() != 0);
    let Some((Grant(key), (verifier, _))) = opened_with_a_token else {
        return refuse("this connection was not opened with a token that expires");
    };
    match verifier.verify(token) {
        Ok(verified) if verified.subject == key.name => {
            key.extend(verified.expires_ns);
            outbox.push_message(Bytes::from(outbox.format().encode_auth_status("refreshed", verified.expires_ns)));
        }
        Ok(_) => refuse("the token is for another subject"),
        Err(error) => {
            tracing::info!(%error, "a refresh token was refused");
            refuse("the token is not valid (signature, expiry, audience or issuer)");
        }
    }
}

fn unsubscribe(app: &AppState, outbox: &Arc<Outbox>, sub: &Subscription) {
    let instruments = app.fanout.instruments();
    let resolved = resolve_symbols(instruments, sub.symbols.iter().map(String::as_str), |_| true);
    for &id in &resolved.ids {
        for &channel in &sub.channels {
            app.fanout.unsubscribe(outbox, id, channel);
        }
    }
    for error in resolved.errors(instruments, "unsubscribe") {
        reject(outbox, &error);
    }
    acknowledge(outbox, false, instruments, &resolved, &sub.channels);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_messages_past_the_rate_are_refused_then_closed() {
        let start = Instant::now();
        let mut inbound = Inbound::new(10);
        // A burst of twice the rate is taken at once.
        assert!((0..20).all(|_| inbound.admit(start) == Admit::Take));
        assert_eq!(inbound.admit(start), Admit::Refuse { tell: true });
        assert_eq!(inbound.admit(start), Admit::Refuse { tell: false }, "told once a second");
        // A second later, ten more are taken.
        let later = start + Duration::from_secs(1);
        assert!((0..10).all(|_| inbound.admit(later) == Admit::Take));
        // Still over the rate, second after second: closed after five told refusals.
        let mut seen = Vec::new();
        for s in 1..=8u64 {
            let at = later + Duration::from_secs(s);
            let refused = std::iter::repeat_with(|| inbound.admit(at)).find(|a| *a != Admit::Take);
            seen.push(refused.unwrap());
        }
        // Strike 1 was told at `start`; told again each second: strikes 2..=5
        // refused, the sixth closes.
        assert_eq!(seen[..4], [Admit::Refuse { tell: true }; 4], "{seen:?}");
        assert_eq!(seen[4], Admit::Close, "{seen:?}");
        // A client that keeps to the rate long enough starts afresh.
        let mut calm = Inbound::new(10);
        for incident in 0..10u64 {
            let at = start + Duration::from_secs(10 * incident);
            let refused = std::iter::repeat_with(|| calm.admit(at)).find(|a| *a != Admit::Take);
            assert_eq!(refused, Some(Admit::Refuse { tell: true }), "incident {incident}");
        }
    }
}
