//! `GET /v1/replay?symbols=&channels=&from=&to=&speed=`: stored events streamed
//! to one WebSocket client in exchange-time order across symbols, in the live
//! stream's shapes (`batch` frames of the same updates), at a speed (a factor of
//! real time, or `max`), in JSON or protobuf: negotiated like `/v1/ws`, by the
//! `tickwire.v1.proto` subprotocol or `?format=proto`.
//!
//! The request is validated before the upgrade, so bad input is a 4xx JSON error.
//! The session owns a store reader task ([`spawn_reader`]) a few chunks ahead of
//! it; the session paces, encodes and writes, and between frames reads client
//! controls: JSON text frames `{"op":"pause"}`, `{"op":"resume"}`,
//! `{"op":"speed","speed":"max"|2.5}`, `{"op":"seek","to":<ns or RFC 3339>}`,
//! `{"op":"ping"}`, or on a protobuf connection binary `ClientMessage`s holding a
//! `ReplayControl` or a `Ping`. The session opens with a status message naming the
//! instruments it covers, and answers each control with one:
//! `{"type":"replay","state":"playing"|"paused","speed":…,"at":…}` (`ReplayStatus`).
//! Gap records in the range come as `gap` messages at their place in time. With
//! the book channel, the start and every seek send each instrument's book as it
//! stood then, as a `snapshot`, before its deltas (see [`crate::replay`]). At the
//! end: `{"type":"end","events":N,…}` (`ReplayEnd`) and a close frame 1000.

use std::collections::VecDeque;
use std::sync::Arc;

use super::quota::Caller;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use tokio::time::Instant;

use prost::Message as _;

use super::access::{Grant, credential_ended};
use super::history::{HistoryAccess, bad};
use super::openapi::ErrorBody;
use super::{ApiError, AppState};
use crate::codec::json::{BATCH_CLOSE, BATCH_OPEN};
use crate::codec::proto::{self, pb};
use crate::codec::{Format, close};
use crate::keys::Use;
use crate::model::{Channel, Event, InstrumentId, Instruments, Nanos, now_nanos};
use crate::replay::{Chunk, Deliver, Pacer, ReplayBooks, Speed, books_at, encode_book_snapshot, spawn_reader};
use crate::store::{GapRecord, StoreError};

/// Most updates in one frame at `max` speed.
const MAX_BATCH_UPDATES: usize = 4096;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReplayQuery {
    /// Comma-separated symbols.
    symbols: Option<String>,
    /// Comma-separated stored channels: `quotes`, `trades`, `book`.
    channels: Option<String>,
    /// Start: nanoseconds since the epoch or RFC 3339.
    from: Option<String>,
    /// End: nanoseconds since the epoch or RFC 3339.
    to: Option<String>,
    /// `1` (real time, default), a factor such as `0.5` or `10`, or `max`.
    speed: Option<String>,
    /// `json` (default) or `proto`, as on `/v1/ws`.
    format: Option<String>,
}

/// A validated replay request.
#[derive(Debug, Clone)]
struct Plan {
    streams: Vec<(i64, Channel)>,
    from: Nanos,
    to: Nanos,
    speed: Speed,
}

/// A key may replay what it may use (`replay`, the symbols, each channel).
fn plan(app: &AppState, access: &HistoryAccess, query: &ReplayQuery, grant: Option<&Grant>) -> Result<Plan, ApiError> {
    let symbols: Vec<&str> =
        query.symbols.as_deref().unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if symbols.is_empty() {
        return Err(bad("bad_request", "symbols=A,B,... is required"));
    }
    let channels: Vec<Channel> = query
        .channels
        .as_deref()
        .unwrap_or("quotes,trades")
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| match Channel::parse(c) {
            Some(channel) if channel.is_stored() => Ok(channel),
            Some(_) => Err(bad(
                "unknown_channel",
                format!("{c} is derived from trades and not stored: replay reads quotes, trades and book"),
            )),
            None => Err(bad("unknown_channel", format!("no channel {c:?} (quotes, trades, book)"))),
        })
        .collect::<Result<_, _>>()?;
    if channels.is_empty() {
        return Err(bad("unknown_channel", "channels= names no channel"));
    }
    let (Some(from), Some(to)) = (query.from.as_deref(), query.to.as_deref()) else {
        return Err(bad("bad_request", "from= and to= are required"));
    };
    let (from, to) = super::history::time_range(Some(from), Some(to))?;
    let speed = match query.speed.as_deref() {
        None => Speed::REAL_TIME,
        Some(text) => text.parse().map_err(|e: crate::replay::SpeedError| bad("bad_speed", e.to_string()))?,
    };
    let instruments = app.fanout.instruments();
    let mut ids = Vec::new();
    for symbol in symbols {
        let id = super::lookup_symbol(instruments, symbol)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let mut uses = vec![Use::Replay];
    uses.extend(channels.iter().map(|&c| Use::of(c)));
    Grant::check(grant, instruments, &ids, &uses)?;
    let mut streams = Vec::new();
    for id in ids {
        for &channel in &channels {
            streams.push((access.ids.store_id(id), channel));
        }
    }
    Ok(Plan { streams, from, to, speed })
}

/// Stored events streamed again over WebSocket at a chosen speed, with
/// pause, speed and seek controls (docs/PROTOCOL.md, Replay).
#[utoipa::path(
    get,
    path = "/v1/replay",
    tag = "stream",
    params(ReplayQuery),
    responses(
        (status = 101, description = "Switching Protocols: the replay"),
        (status = 400, description = "A bad symbol list, channel, time range, speed or format", body = ErrorBody),
        (status = 401, description = "A token is required (`--auth-token`) and was missing or invalid", body = ErrorBody),
        (status = 403, description = "The request's Origin is not allowed (`--allowed-origin`)", body = ErrorBody),
        (status = 404, description = "`unknown_symbol`", body = ErrorBody),
        (status = 429, description = "`quota_exceeded` (the key's concurrent replays) or `too_many_connections` (the key's, subject's or address's)", body = ErrorBody),
        (status = 503, description = "`history_disabled`, `too_many_connections` or `shutting_down`", body = ErrorBody)
    )
)]
pub async fn upgrade(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<ReplayQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let grant = caller.grant.clone();
    let plan = match app.history.as_ref() {
        None => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "history_disabled", "this server keeps no history")),
        Some(access) => plan(&app, access, &query, grant.as_ref()),
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(error) => return error.into_response(),
    };
    if app.shutdown.is_cancelled() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down")
            .into_response();
    }
    let Ok(upgrade) = upgrade else {
        return bad("bad_request", "replay is a WebSocket endpoint: connect with an upgrade request").into_response();
    };
    let (format, echo_protocol) = match super::negotiate(upgrade.requested_protocols(), query.format.as_deref()) {
        Ok(negotiated) => negotiated,
        Err(error) => return error.into_response(),
    };
    let running = match app.quotas.start_replay(&caller) {
        Ok(running) => running,
        Err(error) => return error.into_response(),
    };
    let slot = match app.open_connection(crate::latency::Transport::Replay, &caller) {
        Ok(slot) => slot,
        Err(error) => return error.into_response(),
    };
    let upgrade = if echo_protocol { upgrade.protocols([format.subprotocol()]) } else { upgrade };
    upgrade.max_message_size(64 << 10).on_upgrade(move |socket| {
        let sessions = app.sessions.clone();
        sessions.track_future(async move {
            let _slot = (slot, running); // held until the replay ends
            session(socket, app, plan, format, grant).await
        })
    })
}

/// A replay control as a JSON text frame carries it.
#[derive(Debug, Deserialize)]
struct JsonControl {
    op: String,
    #[serde(default)]
    speed: Option<serde_json::Value>,
    #[serde(default)]
    to: Option<serde_json::Value>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

/// What a client asked of its replay, in either format.
#[derive(Debug, Clone, PartialEq)]
enum Control {
    Pause,
    Resume,
    /// `max` or a factor, as text (parsed by [`Speed`]).
    Speed(String),
    /// A time in ns or RFC 3339, as text.
    Seek(String),
    Ping(Option<serde_json::Value>),
}

/// A control the session refuses: (stable code, message).
type ControlError = (&'static str, String);

/// Number or string JSON value as text; anything else as "".
fn scalar_text(value: Option<&serde_json::Value>) -> String {
    match value {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn parse_json_control(text: &str) -> Result<Control, ControlError> {
    // Not JSON at all is `invalid_json`, as on `/v1/ws`; JSON that is not a
    // control is `bad_request`.
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ("invalid_json", format!("not JSON: {e}")))?;
    let control: JsonControl =
        serde_json::from_value(value).map_err(|e| ("bad_request", format!("not a replay control: {e}")))?;
    Ok(match control.op.as_str() {
        "pause" => Control::Pause,
        "resume" => Control::Resume,
        "speed" => Control::Speed(scalar_text(control.speed.as_ref())),
        "seek" => Control::Seek(scalar_text(control.to.as_ref())),
        "ping" => Control::Ping(control.id),
        other => return Err(("unknown_op", format!("unknown op {other:?} (pause, resume, speed, seek, ping)"))),
    })
}

fn parse_proto_control(bytes: &[u8]) -> Result<Control, ControlError> {
    use pb::client_message::Op;
    use pb::replay_control::Action;
    let message =
        pb::ClientMessage::decode(bytes).map_err(|e| ("invalid_message", format!("not a ClientMessage: {e}")))?;
    match message.op {
        Some(Op::Ping(ping)) => Ok(Control::Ping(Some(ping.id.into()))),
        Some(Op::Replay(control)) => match control.action {
            Some(Action::Pause(_)) => Ok(Control::Pause),
            Some(Action::Resume(_)) => Ok(Control::Resume),
            Some(Action::Speed(speed)) => Ok(Control::Speed(speed)),
            Some(Action::SeekTo(to)) => Ok(Control::Seek(to.to_string())),
            None => Err(("bad_request", "ReplayControl without an action".into())),
        },
        Some(Op::Auth(_)) => {
            Err(("unknown_op", "a replay's token cannot be refreshed: reconnect with a fresh one".into()))
        }
        Some(Op::Subscribe(_) | Op::Unsubscribe(_)) => {
            Err(("unknown_op", "a replay takes no subscriptions: its range is in the URL".into()))
        }
        None => Err(("unknown_op", "ClientMessage without an op".into())),
    }
}

/// One message of this session's format: a text frame of JSON bytes or a binary
/// frame of protobuf bytes.
fn frame(format: Format, bytes: Vec<u8>) -> Message {
    match format {
        // Our JSON encoders write UTF-8 only.
        Format::Json => Message::Text(Utf8Bytes::from(String::from_utf8(bytes).unwrap_or_default())),
        Format::Proto => Message::Binary(bytes.into()),
    }
}

fn server_message(kind: pb::server_message::Kind) -> Vec<u8> {
    pb::ServerMessage { kind: Some(kind) }.encode_to_vec()
}

struct Session {
    format: Format,
    app: Arc<AppState>,
    access: HistoryAccess,
    plan: Plan,
    rx: tokio::sync::mpsc::Receiver<Chunk>,
    reader: tokio::task::JoinHandle<()>,
    pending: VecDeque<Event>,
    gaps: VecDeque<GapRecord>,
    ended: bool,
    paused: bool,
    speed: Speed,
    pacer: Option<Pacer>,
    /// Exchange time of the last event sent (or of the seek target).
    at: Nanos,
    sent: u64,
    /// The books are due as they stood at this time (the start, or a seek),
    /// before any event after it.
    books_due: Option<Nanos>,
    books: ReplayBooks,
}

/// The session must end with this close code and reason.
enum Next {
    Close(u16, &'static str),
}

impl Session {
    fn start_reader(&mut self, from: Nanos) {
        self.reader.abort();
        let (rx, reader) = spawn_reader(
            self.access.store.clone(),
            self.access.ids.clone(),
            self.plan.streams.clone(),
            from,
            self.plan.to,
        );
        self.rx = rx;
        self.reader = reader;
        self.pending.clear();
        self.ended = false;
        self.pacer = None;
        self.at = from;
    }

    /// The session's state; the first one also lists the instruments it covers.
    fn status(&self, first: bool) -> Message {
        let instruments = self.app.fanout.instruments();
        let mut ids: Vec<InstrumentId> =
            self.plan.streams.iter().filter_map(|&(store_id, _)| self.access.ids.instrument(store_id)).collect();
        ids.dedup();
        if !first {
            ids.clear();
        }
        let speed = self.speed.to_string();
        match self.format {
            Format::Json => {
                let mut value = serde_json::json!({
                    "type": "replay",
                    "state": if self.paused { "paused" } else { "playing" },
                    "speed": speed,
                    "at": self.at,
                    "from": self.plan.from,
                    "to": self.plan.to,
                });
                if first {
                    value["instruments"] = ids
                        .iter()
                        .map(|&id| {
                            let inst = instruments.get(id);
                            serde_json::json!({
                                "instrument_id": id.0,
                                "symbol": &*inst.symbol,
                                "price_decimals": inst.price_decimals,
                                "size_decimals": inst.size_decimals,
                            })
                        })
                        .collect();
                }
                frame(Format::Json, value.to_string().into_bytes())
            }
            Format::Proto => {
                use pb::replay_status::State;
                let status = pb::ReplayStatus {
                    state: if self.paused { State::Paused } else { State::Playing } as i32,
                    speed,
                    at: self.at,
                    from: self.plan.from,
                    to: self.plan.to,
                    instruments: ids
                        .iter()
                        .map(|&id| {
                            let inst = instruments.get(id);
                            pb::InstrumentInfo {
                                instrument_id: id.0,
                                symbol: inst.symbol.to_string(),
                                price_decimals: u32::from(inst.price_decimals),
                                size_decimals: u32::from(inst.size_decimals),
                            }
                        })
                        .collect(),
                };
                frame(Format::Proto, server_message(pb::server_message::Kind::Replay(status)))
            }
        }
    }

    fn error(&self, code: &str, message: &str) -> Message {
        match self.format {
            Format::Json => {
                let value = serde_json::json!({ "type": "error", "code": code, "message": message });
                frame(Format::Json, value.to_string().into_bytes())
            }
            Format::Proto => {
                let error = pb::Error {
                    code: code.to_owned(),
                    message: message.to_owned(),
                    op: String::new(),
                    ..Default::default()
                };
                frame(Format::Proto, server_message(pb::server_message::Kind::Error(error)))
            }
        }
    }

    fn end(&self) -> Message {
        match self.format {
            Format::Json => {
                let value = serde_json::json!({
                    "type": "end",
                    "events": self.sent,
                    "from": self.plan.from,
                    "to": self.plan.to,
                });
                frame(Format::Json, value.to_string().into_bytes())
            }
            Format::Proto => {
                let end = pb::ReplayEnd { events: self.sent, from: self.plan.from, to: self.plan.to };
                frame(Format::Proto, server_message(pb::server_message::Kind::End(end)))
            }
        }
    }

    /// Applies one client frame; returns what to send back.
    fn control(&mut self, message: Message) -> Result<Option<Message>, Next> {
        let parsed = match (message, self.format) {
            (Message::Close(_), _) => return Err(Next::Close(close::NORMAL, "bye")),
            (Message::Ping(_) | Message::Pong(_), _) => return Ok(None),
            (Message::Text(text), Format::Json) => parse_json_control(&text),
            (Message::Binary(bytes), Format::Proto) => parse_proto_control(&bytes),
            (Message::Binary(_), Format::Json) => {
                Err(("unsupported_frame", "replay controls on a JSON connection are text frames".into()))
            }
            (Message::Text(_), Format::Proto) => {
                Err(("unsupported_frame", "replay controls on a protobuf connection are binary frames".into()))
            }
        };
        let control = match parsed {
            Ok(control) => control,
            Err((code, message)) => {
                metrics::counter!("tickwire_client_errors_total", "code" => code).increment(1);
                return Ok(Some(self.error(code, &message)));
            }
        };
        match control {
            Control::Pause => self.paused = true,
            Control::Resume => {
                self.paused = false;
                self.pacer = None;
            }
            Control::Speed(text) => match text.parse::<Speed>() {
                Ok(speed) => {
                    self.speed = speed;
                    self.pacer = None;
                }
                Err(e) => return Ok(Some(self.error("bad_speed", &e.to_string()))),
            },
            Control::Seek(text) => match crate::store::parse_time(&text) {
                Ok(to) if (self.plan.from..self.plan.to).contains(&to) => {
                    self.start_reader(to);
                    self.books_due = Some(to);
                    let gaps = std::mem::take(&mut self.gaps);
                    self.gaps = gaps.into_iter().filter(|g| g.ts_to >= to).collect();
                }
                Ok(to) => {
                    return Ok(Some(self.error(
                        "bad_seek",
                        &format!("seek to {to} is outside the replay range [{}, {})", self.plan.from, self.plan.to),
                    )));
                }
                Err(e) => return Ok(Some(self.error("bad_seek", &e))),
            },
            Control::Ping(id) => {
                return Ok(Some(frame(self.format, self.format.encode_pong(id.as_ref(), now_nanos()))));
            }
        }
        Ok(Some(self.status(false)))
    }

    /// Events due now, as batch frames (a gap record due first goes alone).
    fn due_frames(
        &mut self,
        instruments: &Instruments,
        now: Instant,
        max_frame_bytes: usize,
        frames: &mut Vec<Message>,
    ) {
        let format = self.format;
        // The frame's updates: JSON objects joined by commas, or protobuf
        // `Batch.updates` entries back to back.
        let mut body: Vec<u8> = Vec::new();
        let mut count = 0;
        let flush = |body: &mut Vec<u8>, frames: &mut Vec<Message>| {
            if body.is_empty() {
                return;
            }
            let mut out = Vec::with_capacity(body.len() + 32);
            match format {
                Format::Json => {
                    out.extend_from_slice(BATCH_OPEN);
                    out.append(body);
                    out.extend_from_slice(BATCH_CLOSE);
                }
                Format::Proto => {
                    proto::batch_header(&mut out, body.len());
                    out.append(body);
                }
            }
            frames.push(frame(format, out));
        };
        while let Some(front) = self.pending.front() {
            let pacer = *self.pacer.get_or_insert_with(|| Pacer::new(self.speed, front.ts_event, now));
            if pacer.due(front.ts_event).is_some_and(|due| due > now) || count >= MAX_BATCH_UPDATES {
                break;
            }
            if let Some(gap) = self.gaps.front()
                && gap.ts_from <= front.ts_event
            {
                flush(&mut body, frames);
                frames.push(self.gap_message(instruments, gap));
                self.gaps.pop_front();
                continue;
            }
            let Some(event) = self.pending.pop_front() else { break };
            self.at = event.ts_event;
            match self.books.deliver(&event) {
                Deliver::Update => {}
                Deliver::Withhold => continue,
                Deliver::Reset(book) => {
                    flush(&mut body, frames);
                    let inst = instruments.get(event.instrument);
                    let mut invalidated = Vec::new();
                    format.encode_book_invalidated(&mut invalidated, &inst.symbol, book.seq);
                    frames.push(frame(format, invalidated));
                    let mut snapshot = Vec::new();
                    encode_book_snapshot(format, &mut snapshot, inst, &book, self.access.book_depth);
                    frames.push(frame(format, snapshot));
                    self.sent += 1;
                    count += 1;
                    continue;
                }
            }
            if body.len() + 256 > max_frame_bytes {
                flush(&mut body, frames);
            }
            if body.is_empty() {
                body.reserve(64 << 10);
            } else if format == Format::Json {
                body.push(b',');
            }
            format.encode_update(&mut body, instruments.get(event.instrument), &event);
            self.sent += 1;
            count += 1;
        }
        flush(&mut body, frames);
    }

    /// Each book channel's book at `at` (a `snapshot`), or `book_invalidated`
    /// (seq 0) where the store holds none; its deltas are withheld until a reset.
    async fn book_messages(&mut self, instruments: &Instruments, at: Nanos) -> Result<Vec<Message>, StoreError> {
        let books = books_at(&self.access.store, &self.access.ids, &self.plan.streams, at).await?;
        let mut messages = Vec::with_capacity(books.len());
        for (id, book) in books {
            let inst = instruments.get(id);
            let mut out = Vec::new();
            match &book {
                Some(book) => encode_book_snapshot(self.format, &mut out, inst, book, self.access.book_depth),
                None => self.format.encode_book_invalidated(&mut out, &inst.symbol, 0),
            }
            self.books.started(id, book.is_some());
            messages.push(frame(self.format, out));
        }
        Ok(messages)
    }

    fn gap_message(&self, instruments: &Instruments, gap: &GapRecord) -> Message {
        let symbol = self.access.ids.instrument(gap.instrument).map(|id| instruments.get(id).symbol.to_string());
        match self.format {
            Format::Json => {
                let value = serde_json::json!({
                    "type": "gap",
                    "symbol": symbol,
                    "channel": gap.channel.as_str(),
                    "from_seq": gap.from_seq,
                    "to_seq": gap.to_seq,
                    "reason": gap.reason,
                });
                frame(Format::Json, value.to_string().into_bytes())
            }
            Format::Proto => {
                let mut out = Vec::new();
                let symbol = symbol.unwrap_or_default();
                proto::encode_gap(&mut out, &symbol, gap.channel, gap.from_seq, gap.to_seq, gap.reason);
                frame(Format::Proto, out)
            }
        }
    }
}

/// `grant`: the credential the replay was opened with; the session closes when
/// it ends (revoked, expired).
async fn session(socket: WebSocket, app: Arc<AppState>, plan: Plan, format: Format, grant: Option<Grant>) {
    let Some(access) = app.history.clone() else { return };
    metrics::counter!("tickwire_replay_sessions_total").increment(1);
    let (mut sink, mut stream) = socket.split();
    let store_ids: Vec<i64> = plan.streams.iter().map(|s| s.0).collect();
    let gaps = access.store.gaps(&store_ids, plan.from, plan.to).await.unwrap_or_default();
    let channels: Vec<Channel> = plan.streams.iter().map(|s| s.1).collect();
    let (rx, reader) = spawn_reader(access.store.clone(), access.ids.clone(), plan.streams.clone(), plan.from, plan.to);
    let plan_from = plan.from;
    let mut s = Session {
        format,
        app: app.clone(),
        access,
        speed: plan.speed,
        at: plan.from,
        plan,
        rx,
        reader,
        pending: VecDeque::new(),
        gaps: gaps.into_iter().filter(|g| channels.contains(&g.channel)).collect(),
        ended: false,
        paused: false,
        pacer: None,
        sent: 0,
        books_due: Some(plan_from),
        books: ReplayBooks::default(),
    };
    let instruments = s.app.fanout.instruments().clone();
    let max_frame_bytes = s.app.limits.max_frame_bytes;
    if sink.send(s.status(true)).await.is_err() {
        s.reader.abort();
        return;
    }
    let mut frames = Vec::new();
    let end = 'session: loop {
        if let Some(Grant(key)) = &grant
            && key.revoked.is_cancelled()
        {
            break 'session (close::KEY_REVOKED, "key revoked");
        }
        let mut replies = Vec::new();
        // Controls that already arrived are handled between frames.
        while let Some(Some(message)) = stream.next().now_or_never() {
            match message.map(|m| s.control(m)) {
                Ok(Ok(reply)) => replies.extend(reply),
                Ok(Err(Next::Close(code, reason))) => break 'session (code, reason),
                Err(_) => break 'session (close::NORMAL, "connection lost"),
            }
        }
        for reply in replies {
            if sink.send(reply).await.is_err() {
                break 'session (close::NORMAL, "connection lost");
            }
        }
        if let Some(at) = s.books_due.take() {
            match s.book_messages(&instruments, at).await {
                Ok(messages) => {
                    for message in messages {
                        if sink.send(message).await.is_err() {
                            break 'session (close::NORMAL, "connection lost");
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "replay book read failed");
                    let _ = sink.send(s.error("store_unavailable", "the history store failed")).await;
                    break 'session (close::GOING_AWAY, "store unavailable");
                }
            }
        }
        if s.pending.is_empty() && !s.ended && !s.paused {
            tokio::select! {
                chunk = s.rx.recv() => match chunk {
                    Some(Ok(events)) => s.pending.extend(events),
                    Some(Err(error)) => {
                        tracing::warn!(%error, "replay read failed");
                        let _ = sink.send(s.error("store_unavailable", "the history store failed")).await;
                        break 'session (close::GOING_AWAY, "store unavailable");
                    }
                    None => s.ended = true,
                },
                message = stream.next() => match message {
                    Some(Ok(message)) => match s.control(message) {
                        Ok(reply) => if let Some(reply) = reply && sink.send(reply).await.is_err() {
                            break 'session (close::NORMAL, "connection lost");
                        },
                        Err(Next::Close(code, reason)) => break 'session (code, reason),
                    },
                    _ => break 'session (close::NORMAL, "connection lost"),
                },
                () = s.app.shutdown.cancelled() => break 'session (close::GOING_AWAY, "server shutting down"),
                ended = credential_ended(grant.as_ref()) => break 'session ended,
            ended = credential_ended(grant.as_ref()) => break 'session ended,
            }
            continue;
        }
        if s.pending.is_empty() && s.ended {
            let _ = sink.send(s.end()).await;
            break (close::NORMAL, "replay complete");
        }
        let wait_for = if s.paused {
            None
        } else {
            let now = Instant::now();
            frames.clear();
            let sent_before = s.sent;
            s.due_frames(&instruments, now, max_frame_bytes, &mut frames);
            if !frames.is_empty() {
                let bytes: usize = frames
                    .iter()
                    .map(|frame| match frame {
                        Message::Text(text) => text.as_str().len(),
                        Message::Binary(bytes) => bytes.len(),
                        _ => 0,
                    })
                    .sum();
                crate::latency::LATENCIES
                    .written(crate::latency::Transport::Replay)
                    .add(s.sent - sent_before, bytes as u64);
                for frame in frames.drain(..) {
                    if sink.feed(frame).await.is_err() {
                        break 'session (close::NORMAL, "connection lost");
                    }
                }
                if sink.flush().await.is_err() {
                    break 'session (close::NORMAL, "connection lost");
                }
                continue;
            }
            s.pending.front().and_then(|e| s.pacer.and_then(|p| p.due(e.ts_event)))
        };
        // Paused, or the next event is not due yet: wait for it or for a control.
        let sleep = async {
            match wait_for {
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            message = stream.next() => match message {
                Some(Ok(message)) => match s.control(message) {
                    Ok(reply) => if let Some(reply) = reply && sink.send(reply).await.is_err() {
                        break 'session (close::NORMAL, "connection lost");
                    },
                    Err(Next::Close(code, reason)) => break 'session (code, reason),
                },
                _ => break 'session (close::NORMAL, "connection lost"),
            },
            () = s.app.shutdown.cancelled() => break 'session (close::GOING_AWAY, "server shutting down"),
            ended = credential_ended(grant.as_ref()) => break 'session ended,
        }
    };
    s.reader.abort();
    let (code, reason) = end;
    let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason) }))).await;
    let _ = sink.close().await;
}
