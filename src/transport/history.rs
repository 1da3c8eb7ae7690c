//! REST over the history store: `GET /v1/history/trades`, `/v1/history/quotes`
//! (paged, JSON or CSV) and `GET /v1/candles` (OHLCV from trades).
//!
//! Every bad input is a 4xx with a stable code: `bad_request` (missing or
//! malformed parameter), `bad_range` (`from` not before `to`), `range_too_large`
//! (a range over [`MAX_RANGE_WITHOUT_LIMIT_NS`] without `limit`, or too many
//! candles), `bad_limit`, `bad_cursor`, `bad_interval`, `bad_format`,
//! `unknown_symbol` (404); `history_disabled` (503) when the server keeps none.

use std::sync::Arc;

use super::quota::Caller;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::access::Grant;
use super::openapi::ErrorBody;
use super::{ApiError, AppState};
use crate::keys::Use;
use crate::model::{Channel, Instrument, Nanos, format_decimal, now_nanos};
use crate::replay::{CSV_HEADER, write_csv};
use crate::store::parse_time;
use crate::store::reader::PageCursor;

/// Most rows one page may hold.
pub const MAX_LIMIT: usize = 100_000;
/// Rows per page when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 10_000;
/// Widest range a request without `limit` may ask for: one hour.
pub const MAX_RANGE_WITHOUT_LIMIT_NS: Nanos = 3_600 * 1_000_000_000;
/// Range used when `from` is not given: the hour before `to`.
const DEFAULT_RANGE_NS: Nanos = 3_600 * 1_000_000_000;
/// Most candles one request may produce.
pub const MAX_CANDLES: u64 = 10_000;

pub use crate::session::HistoryAccess;

pub(super) fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn access(app: &AppState) -> Result<&HistoryAccess, ApiError> {
    app.history.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "history_disabled",
            "this server keeps no history (--store none)",
        )
    })
}

fn store_failed(error: &crate::store::StoreError) -> ApiError {
    tracing::warn!(%error, "history query failed");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "the history store cannot answer now")
}

/// Resolves a symbol to this process's instrument.
pub(super) fn instrument<'a>(app: &'a AppState, symbol: Option<&str>) -> Result<&'a Instrument, ApiError> {
    let symbol = symbol.filter(|s| !s.is_empty()).ok_or_else(|| bad("bad_request", "symbol= is required"))?;
    let instruments = app.fanout.instruments();
    Ok(instruments.get(super::lookup_symbol(instruments, symbol)?))
}

/// `from`/`to` with their defaults (`to`: now; `from`: an hour before `to`).
pub(super) fn time_range(from: Option<&str>, to: Option<&str>) -> Result<(Nanos, Nanos), ApiError> {
    let parse = |name: &str, text: &str| parse_time(text).map_err(|e| bad("bad_request", format!("{name}: {e}")));
    let to = match to {
        Some(text) => parse("to", text)?,
        None => now_nanos(),
    };
    let from = match from {
        Some(text) => parse("from", text)?,
        None => to.saturating_sub(DEFAULT_RANGE_NS),
    };
    if from >= to {
        return Err(bad("bad_range", format!("from ({from}) must be before to ({to})")));
    }
    Ok((from, to))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// One symbol.
    symbol: Option<String>,
    /// Start (inclusive): nanoseconds since the epoch or RFC 3339.
    from: Option<String>,
    /// End (exclusive): nanoseconds since the epoch or RFC 3339.
    to: Option<String>,
    /// Most rows in one page.
    limit: Option<String>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// `json` (default) or `csv` (also chosen by `Accept: text/csv`).
    format: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Json,
    Csv,
}

fn body_format(format: Option<&str>, headers: &HeaderMap) -> Result<Body, ApiError> {
    match format {
        Some("json") => Ok(Body::Json),
        Some("csv") => Ok(Body::Csv),
        Some(other) => Err(bad("bad_format", format!("no format {other:?} (json, csv)"))),
        None => {
            let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
            Ok(if accept.contains("text/csv") { Body::Csv } else { Body::Json })
        }
    }
}

/// Stored trades of one symbol in a time range, paged.
#[utoipa::path(
    get,
    path = "/v1/history/trades",
    tag = "history",
    params(HistoryQuery),
    responses(
        (status = 200, description = "`{symbol, channel, from, to, count, next_cursor, rows: [...]}` in JSON, or CSV", content((Object = "application/json"), (String = "text/csv"))),
        (status = 400, description = "A bad time, limit, cursor or format", body = ErrorBody),
        (status = 401, description = "A token is required (`--auth-token`) and was missing or invalid", body = ErrorBody),
        (status = 403, description = "The request's Origin is not allowed (`--allowed-origin`)", body = ErrorBody),
        (status = 404, description = "`unknown_symbol`", body = ErrorBody),
        (status = 429, description = "`quota_exceeded`: the key's history rows a minute are spent (`Retry-After` says when to ask again)", body = ErrorBody),
        (status = 503, description = "`history_disabled`: this server keeps no history, or the store is unreachable", body = ErrorBody)
    )
)]
pub async fn trades(
    state: State<Arc<AppState>>,
    caller: Caller,
    query: Query<HistoryQuery>,
    headers: HeaderMap,
) -> Response {
    history(state, caller, query, headers, Channel::Trades).await.unwrap_or_else(IntoResponse::into_response)
}

/// Stored quotes of one symbol in a time range, paged.
#[utoipa::path(
    get,
    path = "/v1/history/quotes",
    tag = "history",
    params(HistoryQuery),
    responses(
        (status = 200, description = "`{symbol, channel, from, to, count, next_cursor, rows: [...]}` in JSON, or CSV", content((Object = "application/json"), (String = "text/csv"))),
        (status = 400, description = "A bad time, limit, cursor or format", body = ErrorBody),
        (status = 401, description = "A token is required (`--auth-token`) and was missing or invalid", body = ErrorBody),
        (status = 403, description = "The request's Origin is not allowed (`--allowed-origin`)", body = ErrorBody),
        (status = 404, description = "`unknown_symbol`", body = ErrorBody),
        (status = 429, description = "`quota_exceeded`: the key's history rows a minute are spent (`Retry-After` says when to ask again)", body = ErrorBody),
        (status = 503, description = "`history_disabled`: this server keeps no history, or the store is unreachable", body = ErrorBody)
    )
)]
pub async fn quotes(
    state: State<Arc<AppState>>,
    caller: Caller,
    query: Query<HistoryQuery>,
    headers: HeaderMap,
) -> Response {
    history(state, caller, query, headers, Channel::Quotes).await.unwrap_or_else(IntoResponse::into_response)
}

async fn history(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<HistoryQuery>,
    headers: HeaderMap,
    channel: Channel,
) -> Result<Response, ApiError> {
    let access = access(&app)?;
    let body = body_format(query.format.as_deref(), &headers)?;
    let inst = instrument(&app, query.symbol.as_deref())?;
    let grant = caller.grant.clone();
    Grant::check(grant.as_ref(), app.fanout.instruments(), &[inst.id], &[Use::History, Use::of(channel)])?;
    let (from, to) = time_range(query.from.as_deref(), query.to.as_deref())?;
    let limit = match query.limit.as_deref() {
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(bad("bad_limit", format!("limit must be 1 to {MAX_LIMIT}, not {text:?}"))),
        },
        None if to - from > MAX_RANGE_WITHOUT_LIMIT_NS => {
            return Err(bad(
                "range_too_large",
                format!(
                    "a range of {} s needs limit= (pages of at most {MAX_LIMIT} rows, continued with cursor=); \
                     without it the range may span at most {} s",
                    (to - from) / 1_000_000_000,
                    MAX_RANGE_WITHOUT_LIMIT_NS / 1_000_000_000
                ),
            ));
        }
        None => DEFAULT_LIMIT,
    };
    let after = match query.cursor.as_deref() {
        Some(text) => Some(PageCursor::decode(text).ok_or_else(|| {
            bad("bad_cursor", format!("cursor {text:?} is not one this server returned (next_cursor)"))
        })?),
        None => None,
    };
    app.quotas.check_rows(&caller)?;
    let store_id = access.ids.store_id(inst.id);
    let events = access.store.history(channel, store_id, from, to, after, limit).await.map_err(|e| store_failed(&e))?;
    app.quotas.spend_rows(&caller, events.len());
    let next = (events.len() == limit)
        .then(|| events.last().map(|e| PageCursor { ts_event: e.ts_event, seq: e.seq }.encode()))
        .flatten();
    let instruments = app.fanout.instruments();
    let mut out = Vec::with_capacity(events.len() * 200 + 256);
    match body {
        Body::Csv => {
            out.extend_from_slice(CSV_HEADER.as_bytes());
            for mut event in events {
                event.instrument = inst.id;
                write_csv(&mut out, instruments, &event);
            }
            let mut response = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response();
            if let Some(next) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
                response.headers_mut().insert("x-next-cursor", next);
            }
            Ok(response)
        }
        Body::Json => {
            let head = serde_json::json!({
                "symbol": &*inst.symbol,
                "channel": channel.as_str(),
                "from": from,
                "to": to,
                "count": events.len(),
                "next_cursor": next,
            });
            let head = serde_json::to_vec(&head).unwrap_or_default();
            // The head object without its closing brace, then the rows.
            out.extend_from_slice(&head[..head.len() - 1]);
            out.extend_from_slice(br#","rows":["#);
            for (i, mut event) in events.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                event.instrument = inst.id;
                crate::codec::json::encode_update(&mut out, inst, &event);
            }
            out.extend_from_slice(b"]}");
            Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CandleQuery {
    /// One symbol.
    symbol: Option<String>,
    /// `1s`, `1m`, `5m`, `1h` or `1d`.
    interval: Option<String>,
    /// Start: nanoseconds since the epoch or RFC 3339.
    from: Option<String>,
    /// End: nanoseconds since the epoch or RFC 3339.
    to: Option<String>,
}

/// Formats a wide nano-unit amount with `decimals` digits after the point.
fn format_wide(nanos: i128, decimals: u8) -> String {
    let mut out = Vec::with_capacity(40);
    crate::model::write_decimal_wide(&mut out, nanos, decimals);
    String::from_utf8(out).unwrap_or_default()
}

/// OHLCV candles of one symbol, from stored trades, equal to the live
/// `candles.<interval>` channel's closed candles.
#[utoipa::path(
    get,
    path = "/v1/candles",
    tag = "history",
    params(CandleQuery),
    responses(
        (status = 200, description = "`{symbol, interval, candles: [{t, open, high, low, close, volume, trades, closed}]}`", body = Object, content_type = "application/json"),
        (status = 400, description = "A bad interval or time", body = ErrorBody),
        (status = 401, description = "A token is required (`--auth-token`) and was missing or invalid", body = ErrorBody),
        (status = 403, description = "The request's Origin is not allowed (`--allowed-origin`)", body = ErrorBody),
        (status = 404, description = "`unknown_symbol`", body = ErrorBody),
        (status = 429, description = "`quota_exceeded`: the key's history rows a minute are spent (`Retry-After` says when to ask again)", body = ErrorBody),
        (status = 503, description = "`history_disabled`", body = ErrorBody)
    )
)]
pub async fn candles(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<CandleQuery>,
) -> Result<Response, ApiError> {
    let access = access(&app)?;
    let inst = instrument(&app, query.symbol.as_deref())?;
    let grant = caller.grant.clone();
    Grant::check(grant.as_ref(), app.fanout.instruments(), &[inst.id], &[Use::Candles])?;
    let name = query.interval.as_deref().unwrap_or("");
    let interval = crate::model::CandleInterval::parse(name)
        .ok_or_else(|| bad("bad_interval", format!("interval must be 1s, 1m, 5m, 1h or 1d, not {name:?}")))?;
    let (from, to) = time_range(query.from.as_deref(), query.to.as_deref())?;
    if (to - from).div_ceil(interval.nanos()) > MAX_CANDLES {
        return Err(bad(
            "range_too_large",
            format!(
                "{name} candles over this range would be more than {MAX_CANDLES}; narrow the range or widen the interval"
            ),
        ));
    }
    app.quotas.check_rows(&caller)?;
    let store_id = access.ids.store_id(inst.id);
    let candles = access.store.candles(store_id, from, to, interval).await.map_err(|e| store_failed(&e))?;
    app.quotas.spend_rows(&caller, candles.len());
    let price = |p: crate::model::Price| format_decimal(p.0, inst.price_decimals);
    let list: Vec<serde_json::Value> = candles
        .iter()
        .map(|c| {
            serde_json::json!({
                "t": c.start,
                "open": price(c.open),
                "high": price(c.high),
                "low": price(c.low),
                "close": price(c.close),
                "volume": format_wide(c.volume, inst.size_decimals),
                "trades": c.trades,
                "closed": c.closed,
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "symbol": &*inst.symbol, "interval": name, "candles": list })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_volumes_format_exactly() {
        assert_eq!(format_wide(1_500_000_000, 2), "1.50");
        let wide: i128 = 100_000_000_000 * 1_000_000_000 + 123_456_789;
        assert_eq!(format_wide(wide, 4), "100000000000.1234");
        assert_eq!(format_wide(-wide, 0), "-100000000000");
    }

    #[test]
    fn ranges_and_intervals() {
        assert_eq!(crate::model::CandleInterval::parse("5m").map(|i| i.nanos()), Some(300_000_000_000));
        assert_eq!(crate::model::CandleInterval::parse("2m"), None);
        assert!(time_range(Some("10"), Some("5")).is_err());
        assert_eq!(time_range(Some("5"), Some("10")).unwrap(), (5, 10));
        assert!(time_range(Some("yesterday"), None).is_err());
    }
}
