//! REST endpoints: instruments, snapshots, feed health, stats, metrics.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::Grant;
use super::openapi::ErrorBody;
use super::{ApiError, AppState};
use crate::keys::Use;
use crate::latency::{LATENCIES, Transport};
use crate::model::{Instrument, decimals_of, format_decimal};

/// Most symbols one snapshot request may name.
const MAX_SNAPSHOT_SYMBOLS: usize = 1_000;

/// Every instrument this server streams, with its venue, kind, tick and lot.
#[utoipa::path(
    get,
    path = "/v1/instruments",
    tag = "market",
    responses(
        (status = 200, description = "`{\"instruments\": [{symbol, venue, kind, tick_size, lot_size, price_decimals, size_decimals}]}`; a venue instrument adds `reference` (venue, off, unavailable) and, once fetched, `status` (trading, halted, delisted), `min_size`, `base`, `quote`; `reference_error` and `reference_changed` when they apply", body = Object, content_type = "application/json"),
        (status = 401, description = "A token is required (`--auth-token`) and was missing or invalid", body = ErrorBody),
        (status = 403, description = "The request's Origin is not allowed (`--allowed-origin`)", body = ErrorBody)
    )
)]
pub async fn instruments(State(app): State<Arc<AppState>>, grant: Option<Extension<Grant>>) -> Json<Value> {
    // A key sees the instruments it may use.
    let list: Vec<Value> = app
        .fanout
        .instruments()
        .iter()
        .filter(|i| grant.as_ref().is_none_or(|Extension(Grant(key))| key.entitlements.allows_symbol(i)))
        .map(|i| {
            let mut view = json!({
                "symbol": &*i.symbol,
                "venue": &*i.venue,
                "kind": i.kind,
                "tick_size": format_decimal(i.tick_size.0, i.price_decimals),
                "lot_size": format_decimal(i.lot_size.0, i.size_decimals),
                "price_decimals": i.price_decimals,
                "size_decimals": i.size_decimals,
            });
            // A venue instrument: where its increments came from, and what
            // the venue last said of it.
            if let Some(entry) = app.reference.get(i.id) {
                view["reference"] = entry.source.as_str().into();
                if let Some(r) = &entry.reference {
                    view["status"] = r.status.as_str().into();
                    view["min_size"] =
                        format_decimal(r.min_size.0, i.size_decimals.max(decimals_of(r.min_size.0))).into();
                    view["base"] = r.base.as_str().into();
                    view["quote"] = r.quote.as_str().into();
                }
                if let Some(error) = entry.error {
                    view["reference_error"] = error.into();
                }
                if let Some(changed) = entry.changed {
                    view["reference_changed"] = changed.into();
                }
            }
            view
        })
        .collect();
    Json(json!({ "instruments": list }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SnapshotQuery {
    /// Comma-separated symbols (at most 1,000).
    symbols: Option<String>,
}

fn price(i: &Instrument, nanos: i64) -> String {
    format_decimal(nanos, i.price_decimals)
}

fn size(i: &Instrument, nanos: i64) -> String {
    format_decimal(nanos, i.size_decimals)
}

/// `GET /v1/snapshot?symbols=A,B`: the latest quote, trade, book and session stats
/// of each symbol, read lock-free from the engine's published state.
#[utoipa::path(
    get,
    path = "/v1/snapshot",
    tag = "market",
    params(SnapshotQuery),
    responses(
        (status = 200, description = "`{\"snapshots\": [{symbol, seq, quote, last_trade, book, stats}]}`", body = Object, content_type = "application/json"),
        (status = 400, description = "No symbols, or too many", body = ErrorBody),
        (status = 401, description = "A token is required (`--auth-token`) and was missing or invalid", body = ErrorBody),
        (status = 403, description = "The request's Origin is not allowed (`--allowed-origin`)", body = ErrorBody),
        (status = 404, description = "`unknown_symbol`", body = ErrorBody)
    )
)]
pub async fn snapshot(
    State(app): State<Arc<AppState>>,
    grant: Option<Extension<Grant>>,
    Query(query): Query<SnapshotQuery>,
) -> Result<Json<Value>, ApiError> {
    let grant = grant.map(|Extension(g)| g);
    // A key gets the parts of a snapshot its channels cover (the session
    // stats come from trades).
    let may = |what: Use| grant.as_ref().is_none_or(|Grant(key)| key.entitlements.allows(what));
    let symbols: Vec<&str> =
        query.symbols.as_deref().unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if symbols.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "symbols=A,B,... is required"));
    }
    if symbols.len() > MAX_SNAPSHOT_SYMBOLS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_many_symbols",
            format!("at most {MAX_SNAPSHOT_SYMBOLS} symbols per request"),
        ));
    }
    let instruments = app.fanout.instruments();
    let mut out = Vec::with_capacity(symbols.len());
    for symbol in symbols {
        let id = super::lookup_symbol(instruments, symbol)?;
        Grant::check(grant.as_ref(), instruments, &[id], &[])?;
        let inst = instruments.get(id);
        if let Some(source) = app.fanout.source() {
            // A cluster gateway takes the instrument from the bus first.
            crate::session::wait_until_ready(source.want(id), &app.fanout, id).await;
        }
        let state = app.fanout.state().load(id);
        let levels = |side: &[(crate::model::Price, crate::model::Size)]| -> Vec<[String; 2]> {
            side.iter().map(|(p, s)| [price(inst, p.0), size(inst, s.0)]).collect()
        };
        out.push(json!({
            "symbol": &*inst.symbol,
            "quote": state.quote.filter(|_| may(Use::Quotes)).map(|q| json!({
                "seq": q.seq,
                "bid": price(inst, q.value.bid.0),
                "bid_size": size(inst, q.value.bid_size.0),
                "ask": price(inst, q.value.ask.0),
                "ask_size": size(inst, q.value.ask_size.0),
                "ts_event": q.ts_event, "ts_recv": q.ts_recv, "ts_send": q.ts_send,
            })),
            "last_trade": state.last_trade.filter(|_| may(Use::Trades)).map(|t| json!({
                "seq": t.seq,
                "price": price(inst, t.value.price.0),
                "size": size(inst, t.value.size.0),
                "side": t.value.side.as_str(),
                "trade_id": t.value.trade_id,
                "ts_event": t.ts_event, "ts_recv": t.ts_recv, "ts_send": t.ts_send,
            })),
            "book": may(Use::Book).then(|| json!({
                "seq": state.book.seq,
                "bids": levels(&state.book.bids),
                "asks": levels(&state.book.asks),
            })),
            "stats": state.stats.filter(|_| may(Use::Trades)).map(|s| json!({
                "open": price(inst, s.open.0),
                "high": price(inst, s.high.0),
                "low": price(inst, s.low.0),
                "volume": size(inst, s.volume.0),
                "trades": s.trades,
            })),
        }));
    }
    Ok(Json(json!({ "snapshots": out })))
}

/// This node's cluster role and the health of each feed (on a gateway or
/// store node, the bus).
#[utoipa::path(
    get,
    path = "/v1/feeds",
    tag = "operations",
    responses(
        (status = 200, description = "`{\"role\": …, \"feeds\": [{name, state, stale, stale_limit_ms, instruments, messages, messages_per_sec, last_message_age_ms, resyncs, parse_errors, reconnects}]}`", body = Object, content_type = "application/json"),
        (status = 401, description = "A token is required (`--auth-token`) and was missing or invalid", body = ErrorBody),
        (status = 403, description = "The request's Origin is not allowed (`--allowed-origin`)", body = ErrorBody)
    )
)]
pub async fn feeds(State(app): State<Arc<AppState>>) -> Json<Value> {
    let feeds: Vec<_> = app.feeds.iter().map(|f| f.view()).collect();
    Json(json!({ "role": app.role, "feeds": feeds }))
}

/// Fan-out and store counts since the server started.
#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "operations",
    responses(
        (status = 200, description = "Version, role, connections and subscriptions, per transport (ws, sse, poll, replay) connections and messages and bytes written, latency histograms per leg (bucket counts; bounds in µs), uptime, events published, updates delivered, conflated, dropped trades, resnapshots, slow-consumer closes, and the store's lag, written, queued, journaled and lost counts", body = Object, content_type = "application/json"),
        (status = 401, description = "A token is required (`--auth-token`) and was missing or invalid", body = ErrorBody),
        (status = 403, description = "The request's Origin is not allowed (`--allowed-origin`)", body = ErrorBody)
    )
)]
pub async fn stats(State(app): State<Arc<AppState>>) -> Json<Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &app.fanout.stats;
    let writer = app.history.as_ref().and_then(|h| h.writer.as_deref());
    let subscriptions = app.fanout.subscriptions_by_transport();
    let transports: serde_json::Map<String, Value> = Transport::ALL
        .iter()
        .map(|&t| {
            let written = LATENCIES.written(t);
            let value = json!({
                "connections": app.connections_of(t),
                "subscriptions": subscriptions[t as usize],
                "messages": written.messages.load(Relaxed),
                "bytes": written.bytes.load(Relaxed),
            });
            (t.name().to_owned(), value)
        })
        .collect();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "role": app.role,
        "subscriptions": subscriptions.iter().sum::<usize>(),
        "transports": transports,
        "latency": LATENCIES.stats(),
        "connections": app.connections(),
        "uptime_s": app.started.elapsed().as_secs(),
        "events_published": s.published.load(Relaxed),
        "updates_delivered": s.delivered.load(Relaxed),
        "conflated": s.conflated.load(Relaxed),
        "dropped_trades": s.dropped_trades.load(Relaxed),
        "book_resnapshots": s.resnapshots.load(Relaxed),
        "slow_consumer_closes": s.slow_consumer_closes.load(Relaxed),
        "store_lag_ms": writer.map(|w| w.lag_ms()),
        "store_written": writer.map(|w| w.written.load(Relaxed)),
        "store_queued": writer.map(|w| w.queued.load(Relaxed)),
        "store_spilled_bytes": writer.map(|w| w.spilled_bytes.load(Relaxed)),
        "store_journaled": writer.map(|w| w.journaled.load(Relaxed)),
        "store_written_from_journal": writer.map(|w| w.written_from_journal.load(Relaxed)),
        "store_lost": writer.map(|w| w.lost.load(Relaxed)),
    }))
}

/// `GET /healthz`: 200 while serving (with each feed's state), 503 while shutting down.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Alive: `{\"status\": \"ok\"|\"degraded\", uptime_s, connections, feeds}`", body = Object, content_type = "application/json"),
        (status = 503, description = "Shutting down", body = Object, content_type = "application/json")
    )
)]
pub async fn health(State(app): State<Arc<AppState>>) -> Response {
    let feeds: Vec<_> = app.feeds.iter().map(|f| f.view()).collect();
    let all_live = feeds.iter().all(|f| f.state == "live");
    let (status, text) = if app.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    } else if all_live {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::OK, "degraded")
    };
    let body = json!({
        "status": text,
        "uptime_s": app.started.elapsed().as_secs(),
        "connections": app.connections(),
        "feeds": feeds,
    });
    (status, Json(body)).into_response()
}

/// What `/readyz` last saw of the history writer, to tell whether its latest
/// write attempt failed: the writer counts failed attempts and written events,
/// and retries a failing batch (50 ms to 5 s apart) until it goes through.
#[derive(Debug, Default)]
pub struct StoreWatch {
    write_errors: u64,
    written: u64,
    failing: bool,
}

/// Past this age of the oldest event not yet stored, the store counts as not
/// writable even without a failed attempt (a write hanging, or a long backlog
/// still being written after an outage).
const STORE_STALL_MS: u64 = 30_000;

impl StoreWatch {
    /// Whether the writer is failing, from its counters now and at the last look:
    /// failed attempts and nothing written since means failing; writes and no
    /// failure means not; both (failures, then recovery, or the reverse) is
    /// decided by the backlog's age; neither keeps the last verdict.
    fn failing(&mut self, write_errors: u64, written: u64, lag_ms: u64) -> bool {
        let failed = write_errors > self.write_errors;
        let wrote = written > self.written;
        self.failing = match (failed, wrote) {
            (true, false) => true,
            (false, true) => false,
            (true, true) => lag_ms >= 1_000,
            (false, false) => self.failing,
        };
        self.write_errors = write_errors;
        self.written = written;
        self.failing
    }
}

/// Why the server is not ready for traffic: empty when it is. Ready means at
/// least one feed is live, and the history store, when this server records
/// one, is taking writes.
pub(super) fn readiness(app: &AppState) -> Vec<String> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut missing = Vec::new();
    if app.shutdown.is_cancelled() {
        missing.push("server: shutting down".to_owned());
    }
    if !app.feeds.iter().any(|f| f.state() == crate::feed::FeedState::Live) {
        if app.feeds.is_empty() {
            missing.push("feed: none configured".to_owned());
        }
        for feed in &app.feeds {
            missing.push(format!("feed: {} not live ({})", feed.name, feed.state().as_str()));
        }
    }
    if let Some(writer) = app.history.as_ref().and_then(|h| h.writer.as_deref()) {
        let lag_ms = writer.lag_ms();
        let failing =
            app.store_watch.lock().failing(writer.write_errors.load(Relaxed), writer.written.load(Relaxed), lag_ms);
        if failing {
            missing.push(format!("store: writes failing for {} s", lag_ms / 1000));
        } else if lag_ms >= STORE_STALL_MS {
            missing.push(format!("store: {} s behind (oldest event not yet stored)", lag_ms / 1000));
        }
    }
    missing
}

/// `GET /readyz`: 200 `{"ready":true,"missing":[]}` when the server can serve
/// (see [`readiness`]), else 503 with what is missing.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready: `{\"ready\": true, \"missing\": []}`", body = Object, content_type = "application/json"),
        (status = 503, description = "Not ready, and why: `{\"ready\": false, \"missing\": [\"feed: simulator not live (connecting)\"]}`", body = Object, content_type = "application/json")
    )
)]
pub async fn ready(State(app): State<Arc<AppState>>) -> Response {
    let missing = readiness(&app);
    let status = if missing.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": missing.is_empty(), "missing": missing }))).into_response()
}

/// Counters and gauges that appear only when first touched, touched with zero:
/// a rule or a chart that names one (deploy/) then finds it from the first
/// scrape, and `increase()` sees the first fault.
fn announce_series(app: &AppState) {
    for feed in &app.feeds {
        for name in [
            "tickwire_feed_messages_total",
            "tickwire_feed_parse_errors_total",
            "tickwire_feed_resyncs_total",
            "tickwire_feed_reconnects_total",
        ] {
            metrics::counter!(name, "feed" => feed.name.clone()).increment(0);
        }
    }
    for transport in ["ws", "sse", "poll", "replay"] {
        metrics::gauge!("tickwire_connections", "transport" => transport).increment(0.0);
        metrics::counter!("tickwire_connections_refused_total", "transport" => transport).increment(0);
    }
    for reason in ["origin", "missing", "invalid"] {
        metrics::counter!("tickwire_access_refused_total", "reason" => reason).increment(0);
    }
    if let Some(writer) = app.history.as_ref().and_then(|h| h.writer.as_deref()) {
        metrics::gauge!("tickwire_store_lag_seconds").set(writer.lag_ms() as f64 / 1e3);
        metrics::counter!("tickwire_store_written_total").increment(0);
        metrics::counter!("tickwire_store_write_errors_total").increment(0);
        for reason in ["journal_full", "journal_error"] {
            metrics::counter!("tickwire_store_lost_total", "reason" => reason).increment(0);
        }
    }
}

/// `GET /metrics` in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format (docs/DEPLOY.md lists the metrics)", content_type = "text/plain"),
        (status = 401, description = "A token is required (`--auth-token`) and was missing or invalid", body = ErrorBody),
        (status = 403, description = "The request's Origin is not allowed (`--allowed-origin`)", body = ErrorBody),
        (status = 404, description = "`metrics_disabled`", body = ErrorBody)
    )
)]
pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(handle) = &app.metrics else {
        return ApiError::new(StatusCode::NOT_FOUND, "metrics_disabled", "metrics are disabled").into_response();
    };
    let s = &app.fanout.stats;
    // The fan-out counts in plain atomics on its hot path; they are handed to
    // the exporter as what they are, counters, when scraped.
    metrics::counter!("tickwire_fanout_published_total").absolute(s.published.load(Relaxed));
    metrics::counter!("tickwire_fanout_delivered_total").absolute(s.delivered.load(Relaxed));
    metrics::counter!("tickwire_fanout_conflated_total").absolute(s.conflated.load(Relaxed));
    metrics::counter!("tickwire_fanout_dropped_trades_total").absolute(s.dropped_trades.load(Relaxed));
    metrics::counter!("tickwire_fanout_book_resnapshots_total").absolute(s.resnapshots.load(Relaxed));
    metrics::counter!("tickwire_fanout_slow_consumer_closes_total").absolute(s.slow_consumer_closes.load(Relaxed));
    announce_series(&app);
    // States are read when scraped, as /v1/feeds and /readyz read them.
    for feed in &app.feeds {
        let view = feed.view();
        metrics::gauge!("tickwire_feed_live", "feed" => view.name.clone()).set(if view.stale { 0.0 } else { 1.0 });
        if let Some(age_ms) = view.last_message_age_ms {
            metrics::gauge!("tickwire_feed_last_message_age_seconds", "feed" => view.name).set(age_ms as f64 / 1e3);
        }
    }
    metrics::gauge!("tickwire_ready").set(if readiness(&app).is_empty() { 1.0 } else { 0.0 });
    metrics::gauge!("tickwire_uptime_seconds").set(app.started.elapsed().as_secs_f64());
    let mut text = handle.render();
    LATENCIES.render(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_watch_follows_the_latest_attempt() {
        let mut watch = StoreWatch::default();
        assert!(!watch.failing(0, 0, 0), "nothing tried yet");
        assert!(!watch.failing(0, 100, 0), "writing");
        assert!(watch.failing(1, 100, 200), "an attempt failed, nothing written since");
        assert!(watch.failing(1, 100, 5_000), "no news: still failing");
        assert!(watch.failing(3, 100, 9_000), "retries failing");
        assert!(!watch.failing(3, 900, 0), "the retry went through");
        assert!(!watch.failing(5, 1_000, 20), "failed and recovered between two looks");
        assert!(watch.failing(7, 1_100, 4_000), "recovered, then failing again");
    }
}
