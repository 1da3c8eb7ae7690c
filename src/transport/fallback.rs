//! Fallback transports for clients that cannot open a WebSocket: Server-Sent
//! Events and long-polling. Both use the same fan-out, outboxes and JSON messages
//! as `/v1/ws`; only the framing differs.
//!
//! - `GET /v1/sse?symbols=&channels=` streams every message (snapshot, batch, gap…)
//!   as one SSE event whose `data:` is the JSON message. The connection holds one
//!   outbox, detached when the client goes away.
//! - `GET /v1/poll?symbols=&channels=&cursor=&timeout_ms=` answers with what is
//!   newer than `cursor` (the first call, without one, gets snapshots), or holds the
//!   request until something is, or the timeout passes. The cursor is the run's
//!   epoch and the last sequence per (symbol, channel), so a poll resumes (from
//!   the ring or the store) exactly like a WebSocket `since` with its `epoch`.
//!   An SSE stream's event ids are the same cursor: a reconnecting EventSource
//!   sends the last as `Last-Event-ID` and resumes the same way. Both take
//!   `since_time=` (ns or RFC 3339) to start from stored history at a time.
//!
//! Both take `delivery=full|conflate|snapshot_on_lag` and `conflate_ms=`, checked
//! as a WebSocket subscribe's are. An SSE stream runs the conflation tick as a
//! WebSocket session does. A `conflate` poll with a cursor is answered at the
//! first tick (`conflate_ms` after it arrived) that has something newer, with
//! quotes and open candles reduced to their latest value and books sent as a
//! fresh snapshot; trades and closed candles in full.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::Value;

use super::access::{Grant, credential_ended};
use super::openapi::ErrorBody;
use super::quota::Caller;
use super::{ApiError, AppState};
use crate::codec::{Delivery, ErrorCode, Format, RequestError, parse_delivery};
use crate::fanout::{Fanout, Item, Outbox, build_frames};
use crate::keys::Use;
use crate::latency::Transport;
use crate::model::{Channel, InstrumentId, Nanos, parse_time};
use crate::session::{StartAt, resolve_symbols, start_stream};

/// Longest a poll may be held, in milliseconds.
const MAX_POLL_MS: u64 = 60_000;
const DEFAULT_POLL_MS: u64 = 25_000;
/// How long a poll with a cursor gathers once it has something (`gather_ms=`).
const DEFAULT_GATHER_MS: u64 = 200;
const MAX_GATHER_MS: u64 = 5_000;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Comma-separated symbols, e.g. `BTC-USD,binance:BTC-USDT`.
    symbols: Option<String>,
    /// Comma-separated channels: `quotes`, `trades`, `book`, `candles.1s` … (default quotes and trades).
    channels: Option<String>,
    /// Where to resume: the `cursor` of the previous poll, or an SSE event's id
    /// (SSE also takes it as `Last-Event-ID`).
    cursor: Option<String>,
    /// Long-poll: how long to hold the request when nothing is new, in ms (default 25000, at most 60000).
    timeout_ms: Option<u64>,
    /// How long a poll with a cursor gathers after its first update, in ms (default 200, at most 5000).
    gather_ms: Option<u64>,
    /// Delivery policy: `all`, `conflate`, `snapshot_on_lag` (docs/PROTOCOL.md).
    delivery: Option<String>,
    /// With `delivery=conflate`: the conflation period in ms.
    conflate_ms: Option<String>,
    /// Start from stored history at this time (ns or RFC 3339) instead of snapshots.
    since_time: Option<String>,
}

/// Where each stream of a request starts: from a cursor (a poll's, or an SSE
/// stream's `Last-Event-ID` / `cursor=`), from `since_time`, or from snapshots.
/// Both together are refused, as on the WebSocket.
fn starts(query: &StreamQuery, cursor: Option<&Cursor>) -> Result<Option<Nanos>, ApiError> {
    let since_time = match query.since_time.as_deref() {
        None => None,
        Some(text) => Some(
            parse_time(text)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_since", format!("since_time: {e}")))?,
        ),
    };
    if since_time.is_some() && cursor.is_some_and(|c| !c.positions.is_empty()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_since",
            "since_time and a cursor cannot be combined: a cursor resumes by sequence, since_time starts at a time",
        ));
    }
    Ok(since_time)
}

/// A stream's start, from the cursor if it names it, else `since_time`, else a snapshot.
fn start_of(cursor: Option<&Cursor>, symbol: &str, channel: Channel, since_time: Option<Nanos>) -> StartAt {
    let seq = cursor.and_then(|c| c.positions.get(&(symbol.to_owned(), channel.as_str().to_owned())).copied());
    match (seq, since_time) {
        (Some(seq), _) => StartAt::Since { seq, epoch: cursor.and_then(|c| c.epoch) },
        (None, Some(at)) => StartAt::Time(at),
        (None, None) => StartAt::Snapshot,
    }
}

/// The delivery a query asks for (the server's default when it names none),
/// refused with 400 `bad_delivery` as a WebSocket subscribe would be.
fn delivery(app: &AppState, query: &StreamQuery) -> Result<Delivery, ApiError> {
    let refuse = |error: RequestError| ApiError::new(StatusCode::BAD_REQUEST, error.code.as_str(), error.message);
    let conflate_ms = match query.conflate_ms.as_deref() {
        None => None,
        Some(text) => Some(text.trim().parse::<u32>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_delivery",
                format!("conflate_ms must be a whole number of milliseconds, not {text:?}"),
            )
        })?),
    };
    let delivery = parse_delivery(query.delivery.as_deref(), conflate_ms, "subscribe")
        .map_err(refuse)?
        .unwrap_or(app.limits.default_delivery);
    super::ws::check_delivery(&app.limits, delivery, "subscribe").map_err(refuse)?;
    Ok(delivery)
}

/// The (instrument, channel) pairs a query names, validated.
/// A key's entitlements refuse the query whole (403 `not_entitled`); a
/// pattern stands for what the key may use.
fn resolve(
    app: &AppState,
    query: &StreamQuery,
    grant: Option<&Grant>,
) -> Result<Vec<(InstrumentId, Channel)>, ApiError> {
    let bad = |code, message: String| ApiError::new(StatusCode::BAD_REQUEST, code, message);
    let list = |text: &Option<String>| -> Vec<String> {
        text.as_deref().unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
    };
    let symbols = list(&query.symbols);
    if symbols.is_empty() {
        return Err(bad("bad_request", "symbols=A,B,... is required".into()));
    }
    let mut channels = Vec::new();
    for name in list(&query.channels) {
        channels.push(Channel::parse(&name).ok_or_else(|| bad("unknown_channel", format!("no channel {name:?}")))?);
    }
    if channels.is_empty() {
        channels = vec![Channel::Quotes, Channel::Trades];
    }
    let instruments = app.fanout.instruments();
    let resolved = resolve_symbols(instruments, symbols.iter().map(String::as_str), |id| {
        Grant::allows_instrument(grant, instruments, id)
    });
    let uses: Vec<Use> = channels.iter().map(|&c| Use::of(c)).collect();
    Grant::check(grant, instruments, &resolved.denied, &uses)?;
    if let Some(error) = resolved.errors(instruments, "subscribe").into_iter().next() {
        let status = match error.code {
            ErrorCode::UnknownSymbol => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        };
        return Err(ApiError::new(status, error.code.as_str(), error.message));
    }
    let limit = Grant::subscription_limit(grant, app.limits.max_subscriptions);
    if resolved.ids.len() * channels.len() > limit {
        return Err(bad("too_many_symbols", format!("at most {limit} subscriptions")));
    }
    Ok(resolved.ids.iter().flat_map(|&id| channels.iter().map(move |&c| (id, c))).collect())
}

/// Detaches an outbox from the fan-out when the HTTP response is dropped.
struct Attached {
    fanout: Arc<Fanout>,
    outbox: Arc<Outbox>,
    /// The request's place among `--max-connections`, given back with the outbox.
    _slot: super::ConnectionSlot,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.fanout.detach(&self.outbox);
    }
}

/// The live stream as Server-Sent Events: each event's data is one JSON
/// message of the WebSocket protocol, its id the cursor to resume from.
#[utoipa::path(
    get,
    path = "/v1/sse",
    tag = "stream",
    params(StreamQuery),
    responses(
        (status = 200, description = "An event stream of protocol messages", content_type = "text/event-stream"),
        (status = 400, description = "A bad symbol list, channel, cursor, delivery or since_time", body = ErrorBody),
        (status = 401, description = "A token is required (`--auth-token`) and was missing or invalid", body = ErrorBody),
        (status = 403, description = "The request's Origin is not allowed (`--allowed-origin`)", body = ErrorBody),
        (status = 404, description = "`unknown_symbol`", body = ErrorBody),
        (status = 429, description = "`too_many_connections`: the key, JWT subject or client address holds its maximum", body = ErrorBody),
        (status = 503, description = "`too_many_connections` or `shutting_down`", body = ErrorBody)
    )
)]
pub async fn sse(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    caller: Caller,
    Query(query): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let grant = caller.grant.clone();
    let pairs = resolve(&app, &query, grant.as_ref())?;
    let delivery = delivery(&app, &query)?;
    // EventSource sends the last event id it saw when it reconnects.
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
    let cursor = match last_event_id.or(query.cursor.as_deref()) {
        Some(text) => Some(Cursor::decode(text)?),
        None => None,
    };
    let since_time = starts(&query, cursor.as_ref())?;
    let slot = app.open_connection(Transport::Sse, &caller)?;
    // The stream ends with its credential (a key revoked, a token expired).
    let credential = grant.clone();
    let outbox = app.fanout.outbox_for(Format::Json, Transport::Sse);
    let instruments = app.fanout.instruments().clone();
    for (id, channel) in pairs {
        let start = start_of(cursor.as_ref(), &instruments.get(id).symbol, channel, since_time);
        let _ = start_stream(&app.fanout, app.history.as_ref(), &outbox, id, channel, start, delivery).await;
    }
    let positions = cursor.unwrap_or_default();
    outbox.signal_if_queued(); // the stream below starts by waiting for it
    metrics::counter!("tickwire_sse_streams_total").increment(1);
    // The stream's subscriptions are fixed, and so is its conflation tick.
    let conflation = outbox.conflate_ms().map(super::ws::conflation_interval);
    let attached = Attached { fanout: app.fanout.clone(), outbox, _slot: slot };
    let state = (attached, app, Vec::<SseEvent>::new(), conflation, positions, credential);
    let stream = futures_util::stream::unfold(
        state,
        |(attached, app, mut ready, mut conflation, mut positions, credential)| async move {
            loop {
                if let Some(event) = ready.pop() {
                    return Some((Ok(event), (attached, app, ready, conflation, positions, credential)));
                }
                let tick = async {
                    match conflation.as_mut() {
                        Some(interval) => {
                            interval.tick().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = attached.outbox.ready() => {}
                    () = tick => app.fanout.release_conflated(&attached.outbox),
                    () = app.shutdown.cancelled() => return None,
                    _ = credential_ended(credential.as_ref()) => return None,
                }
                let mut items = Vec::new();
                if app.fanout.drain(&attached.outbox, &mut items).is_some() {
                    return None; // closed for lag (policy) or detached
                }
                let mut frames = Vec::new();
                build_frames(&items, Format::Json, app.limits.max_frame_bytes, &mut frames);
                super::record_write(&items, Transport::Sse, frames.iter().map(|f| f.len()).sum());
                // Each event's id is the cursor after it (this run's epoch and every
                // stream's last sequence), which EventSource sends back as
                // Last-Event-ID when it reconnects: the resume is exact.
                positions.epoch = Some(app.fanout.line().epoch);
                let events: Vec<SseEvent> = frames
                    .iter()
                    .map(|frame| {
                        if let Ok(message) = serde_json::from_slice::<Value>(frame) {
                            positions.advance(&message);
                        }
                        SseEvent::default().id(positions.encode()).data(String::from_utf8_lossy(frame))
                    })
                    .collect();
                // Popped from the back: store in reverse to keep order.
                ready = events.into_iter().rev().collect();
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A resume point for a whole request: the epoch its sequences come from and
/// the last sequence per (symbol, channel). Written `@EPOCH,SYMBOL~channel~seq,…`
/// (neither `,` nor `~` can appear in a symbol); a cursor without `@EPOCH` (from
/// before epochs) names no run, and is honoured only where the server can prove
/// its sequences continue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Cursor {
    epoch: Option<u64>,
    positions: BTreeMap<(String, String), u64>,
}

impl Cursor {
    fn encode(&self) -> String {
        let mut out = self.epoch.map(|e| format!("@{e}")).into_iter().collect::<Vec<_>>();
        out.extend(self.positions.iter().map(|((s, c), seq)| format!("{s}~{c}~{seq}")));
        out.join(",")
    }

    fn decode(text: &str) -> Result<Cursor, ApiError> {
        let bad = || ApiError::new(StatusCode::BAD_REQUEST, "bad_cursor", format!("malformed cursor {text:?}"));
        let mut out = Cursor::default();
        for item in text.split(',').filter(|s| !s.is_empty()) {
            if let Some(epoch) = item.strip_prefix('@') {
                out.epoch = Some(epoch.parse().map_err(|_| bad())?);
                continue;
            }
            let mut parts = item.split('~');
            let (Some(symbol), Some(channel), Some(seq), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            Channel::parse(channel).ok_or_else(bad)?;
            out.positions.insert((symbol.to_owned(), channel.to_owned()), seq.parse().map_err(|_| bad())?);
        }
        Ok(out)
    }

    /// Moves past one message sent to the client: a snapshot, a batch's
    /// updates, a `live` marker, or a `gap` (its range will never come).
    fn advance(&mut self, message: &Value) {
        let mut note = |m: &Value, seq: Option<u64>| {
            if let (Some(s), Some(c), Some(seq)) = (m["symbol"].as_str(), m["channel"].as_str(), seq) {
                self.positions.insert((s.to_owned(), c.to_owned()), seq);
            }
        };
        match message["type"].as_str() {
            Some("batch") => {
                message["updates"].as_array().into_iter().flatten().for_each(|u| note(u, u["seq"].as_u64()))
            }
            Some("snapshot" | "live") => note(message, message["seq"].as_u64()),
            Some("gap") if message["reason"] == "slow_consumer" => note(message, message["to_seq"].as_u64()),
            _ => {}
        }
    }
}

/// The live stream by long-poll: held until something is newer than the
/// cursor (or the timeout), then every message since, and the next cursor.
#[utoipa::path(
    get,
    path = "/v1/poll",
    tag = "stream",
    params(StreamQuery),
    responses(
        (status = 200, description = "`{\"cursor\": …, \"messages\": [protocol messages]}`", body = Object, content_type = "application/json"),
        (status = 400, description = "A bad symbol list, channel, cursor, delivery or since_time", body = ErrorBody),
        (status = 401, description = "A token is required (`--auth-token`) and was missing or invalid", body = ErrorBody),
        (status = 403, description = "The request's Origin is not allowed (`--allowed-origin`)", body = ErrorBody),
        (status = 404, description = "`unknown_symbol`", body = ErrorBody),
        (status = 429, description = "`too_many_connections`: the key, JWT subject or client address holds its maximum", body = ErrorBody),
        (status = 503, description = "`too_many_connections` or `shutting_down`", body = ErrorBody)
    )
)]
pub async fn poll(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<StreamQuery>,
) -> Result<Json<Value>, ApiError> {
    let arrived = tokio::time::Instant::now();
    let grant = caller.grant.clone();
    let pairs = resolve(&app, &query, grant.as_ref())?;
    let delivery = delivery(&app, &query)?;
    let cursor = match &query.cursor {
        Some(cursor) => Some(Cursor::decode(cursor)?),
        None => None,
    };
    let since_time = starts(&query, cursor.as_ref())?;
    let timeout = Duration::from_millis(query.timeout_ms.unwrap_or(DEFAULT_POLL_MS).min(MAX_POLL_MS));
    // Held (the answer may wait up to `timeout_ms`), a poll is a connection.
    let slot = app.open_connection(Transport::Poll, &caller)?;
    let instruments = app.fanout.instruments().clone();
    let outbox = app.fanout.outbox_for(Format::Json, Transport::Poll);
    let attached = Attached { fanout: app.fanout.clone(), outbox: outbox.clone(), _slot: slot };
    // A `conflate` poll with a cursor is paced: see `poll_conflated`.
    let paced = match delivery {
        Delivery::Conflate { interval_ms } if query.cursor.is_some() => Some(interval_ms),
        _ => None,
    };
    for &(id, channel) in &pairs {
        let mut start = start_of(cursor.as_ref(), &instruments.get(id).symbol, channel, since_time);
        if paced.is_some()
            && channel == Channel::Book
            && matches!(start, StartAt::Since { seq, .. } if seq < app.fanout.state().load(id).book.seq)
        {
            start = StartAt::Snapshot; // a changed book is answered with a fresh snapshot, not its deltas
        }
        let _ = start_stream(&app.fanout, app.history.as_ref(), &outbox, id, channel, start, delivery).await;
    }
    let mut positions = cursor.unwrap_or_default();
    positions.epoch = Some(app.fanout.line().epoch);
    let mut items: Vec<Item> = Vec::new();
    match paced {
        Some(interval_ms) => poll_conflated(&app, &outbox, interval_ms, arrived + timeout, &mut items).await,
        None => {
            app.fanout.drain(&outbox, &mut items);
            if items.is_empty() {
                tokio::select! {
                    _ = tokio::time::timeout(timeout, outbox.ready()) => {}
                    () = app.shutdown.cancelled() => {}
                }
                app.fanout.drain(&outbox, &mut items);
            }
            // Once something is newer than the cursor, gather a little longer:
            // a client then polls a few times a second instead of once per
            // update, and loses nothing (the outbox holds what arrives).
            let gather = Duration::from_millis(query.gather_ms.unwrap_or(DEFAULT_GATHER_MS).min(MAX_GATHER_MS));
            let until = (tokio::time::Instant::now() + gather).min(arrived + timeout);
            if query.cursor.is_some() && !items.is_empty() && !gather.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    () = app.shutdown.cancelled() => {}
                }
                let mut more = Vec::new();
                app.fanout.drain(&outbox, &mut more);
                items.append(&mut more);
            }
        }
    }
    drop(attached);
    let mut frames = Vec::new();
    build_frames(&items, Format::Json, usize::MAX, &mut frames);
    super::record_write(&items, Transport::Poll, frames.iter().map(|f| f.len()).sum());
    let messages: Vec<Value> = frames.iter().filter_map(|f| serde_json::from_slice(f).ok()).collect();
    for message in &messages {
        positions.advance(message);
    }
    Ok(Json(serde_json::json!({ "cursor": positions.encode(), "messages": messages })))
}

/// A `conflate` poll with a cursor: nothing is answered before `interval_ms`
/// after the poll arrived; then, at each tick, what the subscriptions released
/// (quotes and open candles reduced to their latest value, books as a fresh
/// snapshot, trades and closed candles in full) is the answer, unless it is
/// empty and `until` (arrival + timeout) has not passed.
async fn poll_conflated(
    app: &AppState,
    outbox: &Arc<Outbox>,
    interval_ms: u32,
    until: tokio::time::Instant,
    items: &mut Vec<Item>,
) {
    let mut tick = super::ws::conflation_interval(interval_ms);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = app.shutdown.cancelled() => {}
        }
        app.fanout.release_conflated(outbox);
        app.fanout.drain(outbox, items);
        if !items.is_empty() || tokio::time::Instant::now() >= until || app.shutdown.is_cancelled() {
            break;
        }
    }
    latest_values_only(items);
}

/// Keeps only the last update of each latest-value stream (quotes, candles),
/// except closed candles: a poll's replay from its cursor, conflated.
fn latest_values_only(items: &mut Vec<Item>) {
    let mut last = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        if let Item::Update(update) = item
            && update.channel.is_latest_value()
        {
            last.insert((update.instrument, update.channel), i);
        }
    }
    let mut i = 0;
    items.retain(|item| {
        let keep = match item {
            Item::Update(update) if update.channel.is_latest_value() && !update.final_value => {
                last.get(&(update.instrument, update.channel)) == Some(&i)
            }
            _ => true,
        };
        i += 1;
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let mut cursor = Cursor { epoch: Some(1_733_000_000_000_000), positions: BTreeMap::new() };
        cursor.positions.insert(("BTC-USD".to_owned(), "trades".to_owned()), 42);
        cursor.positions.insert(("binance:ETH-USDT".to_owned(), "quotes".to_owned()), 7);
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        let legacy = Cursor::decode("BTC-USD~trades~42").unwrap();
        assert_eq!((legacy.epoch, legacy.positions.len()), (None, 1), "a cursor from before epochs names no run");
        for bad in ["x", "A~trades", "A~news~1", "A~trades~one", "A~trades~1~2", "@x,A~trades~1"] {
            assert_eq!(Cursor::decode(bad).unwrap_err().code, "bad_cursor", "{bad}");
        }
    }

    #[test]
    fn cursors_advance_past_what_was_sent() {
        let mut cursor = Cursor::default();
        let batch = serde_json::json!({"type":"batch","updates":[
            {"symbol":"A","channel":"trades","seq":5},{"symbol":"A","channel":"trades","seq":6}]});
        cursor.advance(&batch);
        cursor.advance(&serde_json::json!({"type":"live","symbol":"B","channel":"quotes","seq":9,"epoch":3}));
        cursor.advance(&serde_json::json!({"type":"gap","symbol":"A","channel":"trades","from_seq":7,"to_seq":12,"reason":"slow_consumer"}));
        assert_eq!(cursor.encode(), "A~trades~12,B~quotes~9");
    }
}
