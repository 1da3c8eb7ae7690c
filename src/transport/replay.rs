//! `GET /v1/replay?symbols=&channels=&from=&to=&speed=`: stored events streamed
//! to one WebSocket client in exchange-time order across symbols, in the live
//! stream's JSON shapes (`batch` frames of the same update objects), at a speed
//! (a factor of real time, or `max`).
//!
//! The request is validated before the upgrade, so bad input is a 4xx JSON error.
//! The session owns a store reader task ([`spawn_reader`]) a few chunks ahead of
//! it; the session paces, encodes and writes, and between frames reads client
//! controls (JSON text frames):
//! `{"op":"pause"}`, `{"op":"resume"}`, `{"op":"speed","speed":"max"|2.5}`,
//! `{"op":"seek","to":<ns or RFC 3339>}`, `{"op":"ping"}`. Each control is
//! answered with `{"type":"replay","state":"playing"|"paused","speed":…,"at":…}`.
//! Gap records in the range come as `gap` messages at their place in time. At the
//! end: `{"type":"end","events":N,…}` and a close frame 1000.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use tokio::time::Instant;

use super::history::{HistoryAccess, bad};
use super::{ApiError, AppState};
use crate::codec::close;
use crate::codec::json::{BATCH_CLOSE, BATCH_OPEN, encode_pong, encode_update};
use crate::model::{Channel, Event, Instruments, Nanos, now_nanos};
use crate::replay::{Chunk, Pacer, Speed, spawn_reader};
use crate::store::GapRecord;

/// Most updates in one frame at `max` speed.
const MAX_BATCH_UPDATES: usize = 4096;

#[derive(Debug, Deserialize)]
pub struct ReplayQuery {
    symbols: Option<String>,
    channels: Option<String>,
    from: Option<String>,
    to: Option<String>,
    speed: Option<String>,
}

/// A validated replay request.
#[derive(Debug, Clone)]
struct Plan {
    streams: Vec<(i64, Channel)>,
    from: Nanos,
    to: Nanos,
    speed: Speed,
}

fn plan(app: &AppState, access: &HistoryAccess, query: &ReplayQuery) -> Result<Plan, ApiError> {
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
        .map(|c| {
            Channel::parse(c).ok_or_else(|| bad("unknown_channel", format!("no channel {c:?} (quotes, trades, book)")))
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
    let mut streams = Vec::new();
    for symbol in symbols {
        let id = instruments
            .lookup(symbol)
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_symbol", format!("no instrument {symbol}")))?;
        for &channel in &channels {
            streams.push((access.ids.store_id(id), channel));
        }
    }
    Ok(Plan { streams, from, to, speed })
}

pub async fn upgrade(
    State(app): State<Arc<AppState>>,
    Query(query): Query<ReplayQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let plan = match app.history.as_ref() {
        None => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "history_disabled", "this server keeps no history")),
        Some(access) => plan(&app, access, &query),
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
    upgrade.max_message_size(64 << 10).on_upgrade(move |socket| {
        let sessions = app.sessions.clone();
        sessions.track_future(session(socket, app, plan))
    })
}

/// A client's replay control.
#[derive(Debug, Deserialize)]
struct Control {
    op: String,
    #[serde(default)]
    speed: Option<serde_json::Value>,
    #[serde(default)]
    to: Option<serde_json::Value>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

struct Session {
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

    fn status(&self) -> Message {
        let value = serde_json::json!({
            "type": "replay",
            "state": if self.paused { "paused" } else { "playing" },
            "speed": self.speed.to_string(),
            "at": self.at,
            "from": self.plan.from,
            "to": self.plan.to,
        });
        Message::Text(Utf8Bytes::from(value.to_string()))
    }

    fn error(code: &str, message: &str) -> Message {
        let value = serde_json::json!({ "type": "error", "code": code, "message": message });
        Message::Text(Utf8Bytes::from(value.to_string()))
    }

    /// Applies one client frame; returns what to send back.
    fn control(&mut self, message: Message) -> Result<Option<Message>, Next> {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => return Err(Next::Close(close::NORMAL, "bye")),
            Message::Binary(_) => {
                return Ok(Some(Self::error("unsupported_frame", "replay controls are JSON text frames")));
            }
            Message::Ping(_) | Message::Pong(_) => return Ok(None),
        };
        let control: Control = match serde_json::from_str(&text) {
            Ok(control) => control,
            Err(e) => return Ok(Some(Self::error("bad_request", &format!("not a replay control: {e}")))),
        };
        match control.op.as_str() {
            "pause" => self.paused = true,
            "resume" => {
                self.paused = false;
                self.pacer = None;
            }
            "speed" => {
                let text = match &control.speed {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    _ => String::new(),
                };
                match text.parse::<Speed>() {
                    Ok(speed) => {
                        self.speed = speed;
                        self.pacer = None;
                    }
                    Err(e) => return Ok(Some(Self::error("bad_speed", &e.to_string()))),
                }
            }
            "seek" => {
                let text = match &control.to {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    _ => String::new(),
                };
                match crate::store::parse_time(&text) {
                    Ok(to) if (self.plan.from..self.plan.to).contains(&to) => {
                        self.start_reader(to);
                        let gaps = std::mem::take(&mut self.gaps);
                        self.gaps = gaps.into_iter().filter(|g| g.ts_to >= to).collect();
                    }
                    Ok(to) => {
                        return Ok(Some(Self::error(
                            "bad_seek",
                            &format!("seek to {to} is outside the replay range [{}, {})", self.plan.from, self.plan.to),
                        )));
                    }
                    Err(e) => return Ok(Some(Self::error("bad_seek", &e))),
                }
            }
            "ping" => {
                return Ok(Some(Message::Text(Utf8Bytes::from(
                    String::from_utf8(encode_pong(control.id.as_ref(), now_nanos())).unwrap_or_default(),
                ))));
            }
            other => {
                return Ok(Some(Self::error(
                    "unknown_op",
                    &format!("unknown op {other:?} (pause, resume, speed, seek, ping)"),
                )));
            }
        }
        Ok(Some(self.status()))
    }

    /// Events due now, as frames (a gap record due first goes alone).
    fn due_frames(
        &mut self,
        instruments: &Instruments,
        now: Instant,
        max_frame_bytes: usize,
        frames: &mut Vec<Message>,
    ) {
        let mut frame: Vec<u8> = Vec::new();
        let mut count = 0;
        let flush = |frame: &mut Vec<u8>, frames: &mut Vec<Message>| {
            if !frame.is_empty() {
                frame.extend_from_slice(BATCH_CLOSE);
                let text = String::from_utf8(std::mem::take(frame)).unwrap_or_default();
                frames.push(Message::Text(Utf8Bytes::from(text)));
            }
        };
        while let Some(front) = self.pending.front() {
            let pacer = *self.pacer.get_or_insert_with(|| Pacer::new(self.speed, front.ts_event, now));
            if pacer.due(front.ts_event).is_some_and(|due| due > now) || count >= MAX_BATCH_UPDATES {
                break;
            }
            if let Some(gap) = self.gaps.front()
                && gap.ts_from <= front.ts_event
            {
                flush(&mut frame, frames);
                frames.push(self.gap_message(instruments, gap));
                self.gaps.pop_front();
                continue;
            }
            let Some(event) = self.pending.pop_front() else { break };
            if frame.len() + 256 > max_frame_bytes {
                flush(&mut frame, frames);
            }
            if frame.is_empty() {
                frame.reserve(64 << 10);
                frame.extend_from_slice(BATCH_OPEN);
            } else {
                frame.push(b',');
            }
            encode_update(&mut frame, instruments.get(event.instrument), &event);
            self.at = event.ts_event;
            self.sent += 1;
            count += 1;
        }
        flush(&mut frame, frames);
    }

    fn gap_message(&self, instruments: &Instruments, gap: &GapRecord) -> Message {
        let symbol = self.access.ids.instrument(gap.instrument).map(|id| instruments.get(id).symbol.to_string());
        let value = serde_json::json!({
            "type": "gap",
            "symbol": symbol,
            "channel": gap.channel.as_str(),
            "from_seq": gap.from_seq,
            "to_seq": gap.to_seq,
            "reason": gap.reason,
        });
        Message::Text(Utf8Bytes::from(value.to_string()))
    }
}

async fn session(socket: WebSocket, app: Arc<AppState>, plan: Plan) {
    let Some(access) = app.history.clone() else { return };
    metrics::counter!("tickwire_replay_sessions_total").increment(1);
    let (mut sink, mut stream) = socket.split();
    let store_ids: Vec<i64> = plan.streams.iter().map(|s| s.0).collect();
    let gaps = access.store.gaps(&store_ids, plan.from, plan.to).await.unwrap_or_default();
    let channels: Vec<Channel> = plan.streams.iter().map(|s| s.1).collect();
    let (rx, reader) = spawn_reader(access.store.clone(), access.ids.clone(), plan.streams.clone(), plan.from, plan.to);
    let mut s = Session {
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
    };
    let instruments = s.app.fanout.instruments().clone();
    let max_frame_bytes = s.app.limits.max_frame_bytes;
    let mut frames = Vec::new();
    let end = 'session: loop {
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
        if s.pending.is_empty() && !s.ended && !s.paused {
            tokio::select! {
                chunk = s.rx.recv() => match chunk {
                    Some(Ok(events)) => s.pending.extend(events),
                    Some(Err(error)) => {
                        tracing::warn!(%error, "replay read failed");
                        let _ = sink.send(Session::error("store_unavailable", "the history store failed")).await;
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
            }
            continue;
        }
        if s.pending.is_empty() && s.ended {
            let end = serde_json::json!({
                "type": "end",
                "events": s.sent,
                "from": s.plan.from,
                "to": s.plan.to,
            });
            let _ = sink.send(Message::Text(Utf8Bytes::from(end.to_string()))).await;
            break (close::NORMAL, "replay complete");
        }
        let wait_for = if s.paused {
            None
        } else {
            let now = Instant::now();
            frames.clear();
            s.due_frames(&instruments, now, max_frame_bytes, &mut frames);
            if !frames.is_empty() {
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
        }
    };
    s.reader.abort();
    let (code, reason) = end;
    let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason) }))).await;
    let _ = sink.close().await;
}
