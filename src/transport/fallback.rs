//! Fallback transports for clients that cannot open a WebSocket: Server-Sent
//! Events and long-polling. Both use the same fan-out, outboxes and JSON messages
//! as `/v1/ws`; only the framing differs.
//!
//! - `GET /v1/sse?symbols=&channels=` streams every message (snapshot, batch, gap…)
//!   as one SSE event whose `data:` is the JSON message. The connection holds one
//!   outbox, detached when the client goes away.
//! - `GET /v1/poll?symbols=&channels=&cursor=&timeout_ms=` answers with what is
//!   newer than `cursor` (the first call, without one, gets snapshots), or holds the
//!   request until something is, or the timeout passes. The cursor is the last
//!   sequence per (symbol, channel), so a poll resumes through the recent-history
//!   ring exactly like a WebSocket `since`.
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
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::Value;

use super::{ApiError, AppState};
use crate::codec::{Delivery, Format, RequestError, parse_delivery};
use crate::fanout::{Fanout, Item, Outbox, build_frames};
use crate::model::{Channel, InstrumentId};

/// Longest a poll may be held, in milliseconds.
const MAX_POLL_MS: u64 = 60_000;
const DEFAULT_POLL_MS: u64 = 25_000;

#[derive(Deserialize)]
pub struct StreamQuery {
    symbols: Option<String>,
    channels: Option<String>,
    cursor: Option<String>,
    timeout_ms: Option<u64>,
    delivery: Option<String>,
    /// Parsed here, so that a malformed value is a JSON `bad_delivery`.
    conflate_ms: Option<String>,
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
fn resolve(app: &AppState, query: &StreamQuery) -> Result<Vec<(InstrumentId, Channel)>, ApiError> {
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
    if symbols.len() * channels.len() > app.limits.max_subscriptions {
        return Err(bad("too_many_symbols", format!("at most {} subscriptions", app.limits.max_subscriptions)));
    }
    let instruments = app.fanout.instruments();
    let mut pairs = Vec::new();
    for symbol in &symbols {
        let id = instruments
            .lookup(symbol)
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_symbol", format!("no instrument {symbol}")))?;
        pairs.extend(channels.iter().map(|&c| (id, c)));
    }
    Ok(pairs)
}

/// Detaches an outbox from the fan-out when the HTTP response is dropped.
struct Attached {
    fanout: Arc<Fanout>,
    outbox: Arc<Outbox>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.fanout.detach(&self.outbox);
    }
}

/// `GET /v1/sse`.
pub async fn sse(
    State(app): State<Arc<AppState>>,
    Query(query): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let pairs = resolve(&app, &query)?;
    let delivery = delivery(&app, &query)?;
    let outbox = app.fanout.outbox(Format::Json);
    for (id, channel) in pairs {
        let _ = app.fanout.subscribe(&outbox, id, channel, None, delivery);
    }
    outbox.signal_if_queued(); // the stream below starts by waiting for it
    metrics::counter!("tickwire_sse_streams_total").increment(1);
    // The stream's subscriptions are fixed, and so is its conflation tick.
    let conflation = outbox.conflate_ms().map(super::ws::conflation_interval);
    let attached = Attached { fanout: app.fanout.clone(), outbox };
    let state = (attached, app, Vec::<SseEvent>::new(), conflation);
    let stream = futures_util::stream::unfold(state, |(attached, app, mut ready, mut conflation)| async move {
        loop {
            if let Some(event) = ready.pop() {
                return Some((Ok(event), (attached, app, ready, conflation)));
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
            }
            let mut items = Vec::new();
            if app.fanout.drain(&attached.outbox, &mut items).is_some() {
                return None; // closed for lag (policy) or detached
            }
            let mut frames = Vec::new();
            build_frames(&items, Format::Json, app.limits.max_frame_bytes, &mut frames);
            // Popped from the back: store in reverse to keep order.
            ready = frames
                .into_iter()
                .rev()
                .map(|frame| SseEvent::default().data(String::from_utf8_lossy(&frame)))
                .collect();
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Encodes a cursor: `SYMBOL~channel~seq` items joined by `,` (neither character
/// can appear in a symbol).
fn encode_cursor(positions: &BTreeMap<(String, String), u64>) -> String {
    positions.iter().map(|((s, c), seq)| format!("{s}~{c}~{seq}")).collect::<Vec<_>>().join(",")
}

fn decode_cursor(text: &str) -> Result<BTreeMap<(String, String), u64>, ApiError> {
    let bad = || ApiError::new(StatusCode::BAD_REQUEST, "bad_cursor", format!("malformed cursor {text:?}"));
    let mut out = BTreeMap::new();
    for item in text.split(',').filter(|s| !s.is_empty()) {
        let mut parts = item.split('~');
        let (Some(symbol), Some(channel), Some(seq), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Channel::parse(channel).ok_or_else(bad)?;
        out.insert((symbol.to_owned(), channel.to_owned()), seq.parse().map_err(|_| bad())?);
    }
    Ok(out)
}

/// `GET /v1/poll`.
pub async fn poll(State(app): State<Arc<AppState>>, Query(query): Query<StreamQuery>) -> Result<Json<Value>, ApiError> {
    let arrived = tokio::time::Instant::now();
    let pairs = resolve(&app, &query)?;
    let delivery = delivery(&app, &query)?;
    let mut positions = match &query.cursor {
        Some(cursor) => decode_cursor(cursor)?,
        None => BTreeMap::new(),
    };
    let timeout = Duration::from_millis(query.timeout_ms.unwrap_or(DEFAULT_POLL_MS).min(MAX_POLL_MS));
    let instruments = app.fanout.instruments().clone();
    let outbox = app.fanout.outbox(Format::Json);
    let attached = Attached { fanout: app.fanout.clone(), outbox: outbox.clone() };
    // A `conflate` poll with a cursor is paced: see `poll_conflated`.
    let paced = match delivery {
        Delivery::Conflate { interval_ms } if query.cursor.is_some() => Some(interval_ms),
        _ => None,
    };
    for &(id, channel) in &pairs {
        let key = (instruments.get(id).symbol.to_string(), channel.as_str().to_owned());
        let mut since = positions.get(&key).copied();
        if paced.is_some()
            && channel == Channel::Book
            && since.is_some_and(|s| s < app.fanout.state().load(id).book.seq)
        {
            since = None; // a changed book is answered with a fresh snapshot, not its deltas
        }
        // A cursor ahead of the stream (say, across a restart) starts afresh from a snapshot.
        let _ = app.fanout.subscribe(&outbox, id, channel, since, delivery);
    }
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
        }
    }
    drop(attached);
    let mut frames = Vec::new();
    build_frames(&items, Format::Json, usize::MAX, &mut frames);
    let messages: Vec<Value> = frames.iter().filter_map(|f| serde_json::from_slice(f).ok()).collect();
    for message in &messages {
        let mut note = |m: &Value| {
            if let (Some(s), Some(c), Some(seq)) = (m["symbol"].as_str(), m["channel"].as_str(), m["seq"].as_u64()) {
                positions.insert((s.to_owned(), c.to_owned()), seq);
            }
        };
        match message["type"].as_str() {
            Some("batch") => message["updates"].as_array().into_iter().flatten().for_each(&mut note),
            Some("snapshot") => note(message),
            _ => {}
        }
    }
    Ok(Json(serde_json::json!({ "cursor": encode_cursor(&positions), "messages": messages })))
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
        let mut positions = BTreeMap::new();
        positions.insert(("BTC-USD".to_owned(), "trades".to_owned()), 42);
        positions.insert(("binance:ETH-USDT".to_owned(), "quotes".to_owned()), 7);
        assert_eq!(decode_cursor(&encode_cursor(&positions)).unwrap(), positions);
        for bad in ["x", "A~trades", "A~news~1", "A~trades~one", "A~trades~1~2"] {
            assert_eq!(decode_cursor(bad).unwrap_err().code, "bad_cursor", "{bad}");
        }
    }
}
