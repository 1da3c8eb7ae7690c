//! Instrument reference data from each venue's own REST endpoint: tick size,
//! lot size, minimum size, base and quote asset, and whether it trades.
//!
//! Read once per instrument when the server starts, before the instrument
//! table is built, so that prices and sizes carry the venue's decimals
//! everywhere (JSON, protobuf scale, REST, store, dashboard); then refreshed
//! periodically ([`refresh`]): a status change (halted, delisted) is applied
//! at once; a tick or lot change is reported (log, metric, `/v1/feeds`), and
//! applied at the next start, since clients scale protobuf prices by the
//! decimals they were given.
//!
//! A venue whose reference data cannot be fetched at start is reported
//! (`tickwire_reference_errors_total{venue}`, an error line, `/v1/feeds`'s
//! `reference`) and its instruments use [`super::VENUE_INCREMENT`] until it is;
//! nothing is guessed silently.
//!
//! Endpoints (public, no key):
//! - Binance: `GET /api/v3/exchangeInfo?symbol=BTCUSDT`, filters `PRICE_FILTER.tickSize`,
//!   `LOT_SIZE.stepSize`/`minQty`, `status` (<https://developers.binance.com/docs/binance-spot-api-docs/rest-api/general-endpoints#exchange-information>);
//! - Coinbase: `GET /api/v3/brokerage/market/products/BTC-USD`, `price_increment`
//!   (else `quote_increment`), `base_increment`, `base_min_size`, `status`,
//!   `trading_disabled`, `cancel_only` (<https://docs.cdp.coinbase.com/advanced-trade/reference/retailbrokerageapi_getpublicproduct>);
//! - Kraken: `GET /0/public/AssetPairs?pair=XBT/USD`, `tick_size`, `lot_decimals`,
//!   `ordermin`, `status` (<https://docs.kraken.com/api/docs/rest-api/get-tradable-asset-pairs>);
//! - OKX: `GET /api/v5/public/instruments?instType=SPOT&instId=BTC-USDT`, `tickSz`,
//!   `lotSz`, `minSz`, `baseCcy`, `quoteCcy`, `state` (<https://www.okx.com/docs-v5/en/#public-data-rest-api-get-instruments>);
//! - Bybit: `GET /v5/market/instruments-info?category=spot&symbol=BTCUSDT`,
//!   `priceFilter.tickSize`, `lotSizeFilter.basePrecision`/`minOrderQty`,
//!   `baseCoin`, `quoteCoin`, `status` (<https://bybit-exchange.github.io/docs/v5/market/instrument>).

use std::time::Duration;

use serde_json::Value;

use super::supervisor::{self, ConnectError, HttpClient};
use crate::model::{Price, Size};

/// Whether an instrument trades at its venue now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarketStatus {
    Trading,
    /// Halted, cancel-only, in a break or an auction, suspended, pre-open.
    Halted,
    Delisted,
}

impl MarketStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MarketStatus::Trading => "trading",
            MarketStatus::Halted => "halted",
            MarketStatus::Delisted => "delisted",
        }
    }
}

/// One instrument's reference data, as its venue states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub tick_size: Price,
    pub lot_size: Size,
    pub min_size: Size,
    pub base: String,
    pub quote: String,
    pub status: MarketStatus,
}

/// Why reference data could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("fetching {url}: {source}")]
    Fetch { url: String, source: ConnectError },
    #[error("the venue does not list {0}")]
    Unknown(String),
    #[error("the venue answered: {0}")]
    Venue(String),
    #[error("unexpected reference data: {0}")]
    Malformed(String),
}

/// The venues with reference endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VenueKind {
    Binance,
    Coinbase,
    Kraken,
    Okx,
    Bybit,
}

impl VenueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VenueKind::Binance => "binance",
            VenueKind::Coinbase => "coinbase",
            VenueKind::Kraken => "kraken",
            VenueKind::Okx => "okx",
            VenueKind::Bybit => "bybit",
        }
    }

    /// The request path for one instrument, by its venue name.
    pub fn path(self, native: &str) -> String {
        match self {
            VenueKind::Binance => format!("/api/v3/exchangeInfo?symbol={native}"),
            VenueKind::Coinbase => format!("/api/v3/brokerage/market/products/{native}"),
            // The REST API still names bitcoin XBT (and accepts `XBT/USD`).
            VenueKind::Kraken => {
                let legacy = super::kraken::legacy_names(native).into_iter().next();
                format!("/0/public/AssetPairs?pair={}", legacy.as_deref().unwrap_or(native))
            }
            VenueKind::Okx => format!("/api/v5/public/instruments?instType=SPOT&instId={native}"),
            VenueKind::Bybit => format!("/v5/market/instruments-info?category=spot&symbol={native}"),
        }
    }

    /// Reads the venue's answer for `native`.
    pub fn parse(self, native: &str, body: &[u8]) -> Result<Reference, ReferenceError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| ReferenceError::Malformed(e.to_string()))?;
        match self {
            VenueKind::Binance => parse_binance(native, &value),
            VenueKind::Coinbase => parse_coinbase(native, &value),
            VenueKind::Kraken => parse_kraken(native, &value),
            VenueKind::Okx => parse_okx(native, &value),
            VenueKind::Bybit => parse_bybit(native, &value),
        }
    }
}

fn text<'a>(value: &'a Value, field: &str) -> Result<&'a str, ReferenceError> {
    value[field].as_str().ok_or_else(|| ReferenceError::Malformed(format!("no {field}")))
}

fn price(value: &Value, field: &str) -> Result<Price, ReferenceError> {
    let text = text(value, field)?;
    match Price::parse(text) {
        Ok(p) if p.0 > 0 => Ok(p),
        _ => Err(ReferenceError::Malformed(format!("{field} {text:?} is not a positive decimal"))),
    }
}

fn size(value: &Value, field: &str) -> Result<Size, ReferenceError> {
    let text = text(value, field)?;
    match Size::parse(text) {
        Ok(s) if s.0 >= 0 => Ok(s),
        _ => Err(ReferenceError::Malformed(format!("{field} {text:?} is not a decimal"))),
    }
}

fn positive_size(value: &Value, field: &str) -> Result<Size, ReferenceError> {
    let lot = size(value, field)?;
    if lot.0 == 0 {
        return Err(ReferenceError::Malformed(format!("{field} is 0")));
    }
    Ok(lot)
}

fn parse_binance(native: &str, value: &Value) -> Result<Reference, ReferenceError> {
    if let Some(msg) = value["msg"].as_str() {
        // -1121: Invalid symbol.
        return Err(if value["code"] == -1121 {
            ReferenceError::Unknown(native.into())
        } else {
            ReferenceError::Venue(msg.into())
        });
    }
    let symbol = value["symbols"]
        .as_array()
        .and_then(|list| list.iter().find(|s| s["symbol"] == native))
        .ok_or_else(|| ReferenceError::Unknown(native.into()))?;
    let filter = |kind: &str| {
        symbol["filters"]
            .as_array()
            .and_then(|filters| filters.iter().find(|f| f["filterType"] == kind))
            .ok_or_else(|| ReferenceError::Malformed(format!("no {kind} filter")))
    };
    let prices = filter("PRICE_FILTER")?;
    let lots = filter("LOT_SIZE")?;
    // Binance's symbol status: TRADING, or a pause (HALT, BREAK, AUCTION_MATCH,
    // PRE_TRADING, POST_TRADING, END_OF_DAY).
    let status = match text(symbol, "status")? {
        "TRADING" => MarketStatus::Trading,
        _ => MarketStatus::Halted,
    };
    Ok(Reference {
        tick_size: price(prices, "tickSize")?,
        lot_size: positive_size(lots, "stepSize")?,
        min_size: size(lots, "minQty")?,
        base: text(symbol, "baseAsset")?.to_owned(),
        quote: text(symbol, "quoteAsset")?.to_owned(),
        status,
    })
}

fn parse_coinbase(native: &str, value: &Value) -> Result<Reference, ReferenceError> {
    if value["product_id"].as_str() != Some(native) {
        return match value["error"].as_str() {
            Some("NOT_FOUND") => Err(ReferenceError::Unknown(native.into())),
            Some(_) => Err(ReferenceError::Venue(value["message"].as_str().unwrap_or_default().into())),
            None => Err(ReferenceError::Malformed("no product_id".into())),
        };
    }
    let tick = if value["price_increment"].is_string() { "price_increment" } else { "quote_increment" };
    let halted = ["trading_disabled", "is_disabled", "cancel_only"].iter().any(|f| value[*f] == true);
    let status = match value["status"].as_str() {
        Some("delisted") => MarketStatus::Delisted,
        Some("online") if !halted => MarketStatus::Trading,
        _ => MarketStatus::Halted,
    };
    let (base, quote) = native.split_once('-').unwrap_or((native, ""));
    Ok(Reference {
        tick_size: price(value, tick)?,
        lot_size: positive_size(value, "base_increment")?,
        min_size: size(value, "base_min_size")?,
        base: value["base_currency_id"].as_str().unwrap_or(base).to_owned(),
        quote: value["quote_currency_id"].as_str().unwrap_or(quote).to_owned(),
        status,
    })
}

fn parse_kraken(native: &str, value: &Value) -> Result<Reference, ReferenceError> {
    if let Some(error) = value["error"].as_array().and_then(|e| e.first()).and_then(Value::as_str) {
        return Err(if error.contains("Unknown asset pair") {
            ReferenceError::Unknown(native.into())
        } else {
            ReferenceError::Venue(error.into())
        });
    }
    let pair = value["result"]
        .as_object()
        .and_then(|pairs| pairs.values().next())
        .ok_or_else(|| ReferenceError::Unknown(native.into()))?;
    let lot_decimals = pair["lot_decimals"]
        .as_u64()
        .filter(|d| *d <= 9)
        .ok_or_else(|| ReferenceError::Malformed("lot_decimals".into()))?;
    // Kraken's pair status: online, or cancel_only, post_only, limit_only,
    // reduce_only, maintenance; delisted.
    let status = match pair["status"].as_str() {
        Some("online") | None => MarketStatus::Trading,
        Some("delisted") => MarketStatus::Delisted,
        Some(_) => MarketStatus::Halted,
    };
    // Assets as the WebSocket v2 API names them (BTC, not XBT).
    let (base, quote) = native.split_once('/').unwrap_or((native, ""));
    Ok(Reference {
        tick_size: price(pair, "tick_size")?,
        lot_size: Size(10i64.pow(9 - lot_decimals as u32)),
        min_size: size(pair, "ordermin")?,
        base: base.to_owned(),
        quote: quote.to_owned(),
        status,
    })
}

fn parse_okx(native: &str, value: &Value) -> Result<Reference, ReferenceError> {
    // 51001: Instrument ID does not exist.
    if value["code"] != "0" {
        return Err(if value["code"] == "51001" {
            ReferenceError::Unknown(native.into())
        } else {
            ReferenceError::Venue(value["msg"].as_str().unwrap_or_default().into())
        });
    }
    let inst = value["data"]
        .as_array()
        .and_then(|data| data.iter().find(|d| d["instId"] == native))
        .ok_or_else(|| ReferenceError::Unknown(native.into()))?;
    // OKX's state: live, suspend, preopen (listed, not trading yet), test.
    let status = match text(inst, "state")? {
        "live" => MarketStatus::Trading,
        _ => MarketStatus::Halted,
    };
    Ok(Reference {
        tick_size: price(inst, "tickSz")?,
        lot_size: positive_size(inst, "lotSz")?,
        min_size: size(inst, "minSz")?,
        base: text(inst, "baseCcy")?.to_owned(),
        quote: text(inst, "quoteCcy")?.to_owned(),
        status,
    })
}

fn parse_bybit(native: &str, value: &Value) -> Result<Reference, ReferenceError> {
    if value["retCode"] != 0 {
        let message = value["retMsg"].as_str().unwrap_or_default();
        // 10001: a parameter error, which is how an unknown symbol is answered.
        return Err(if value["retCode"] == 10001 && message.contains("symbol") {
            ReferenceError::Unknown(native.into())
        } else {
            ReferenceError::Venue(message.into())
        });
    }
    let inst = value["result"]["list"]
        .as_array()
        .and_then(|list| list.iter().find(|i| i["symbol"] == native))
        .ok_or_else(|| ReferenceError::Unknown(native.into()))?;
    // Bybit's spot status: Trading; PreLaunch, Delivering; Closed.
    let status = match text(inst, "status")? {
        "Trading" => MarketStatus::Trading,
        "Closed" => MarketStatus::Delisted,
        _ => MarketStatus::Halted,
    };
    let lots = &inst["lotSizeFilter"];
    Ok(Reference {
        tick_size: price(&inst["priceFilter"], "tickSize")?,
        lot_size: positive_size(lots, "basePrecision")?,
        min_size: size(lots, "minOrderQty")?,
        base: text(inst, "baseCoin")?.to_owned(),
        quote: text(inst, "quoteCoin")?.to_owned(),
        status,
    })
}

/// How hard [`fetch`] tries one instrument before it reports it unavailable.
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Fetches one instrument's reference data, retrying a failed request
/// ([`ATTEMPTS`] in all); a venue that does not list it is not retried.
pub async fn fetch(
    http: &HttpClient,
    venue: VenueKind,
    rest_base: &str,
    native: &str,
) -> Result<Reference, ReferenceError> {
    let url = format!("{}{}", rest_base.trim_end_matches('/'), venue.path(native));
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let result = supervisor::fetch(http, &url, REQUEST_TIMEOUT)
            .await
            .map_err(|source| ReferenceError::Fetch { url: url.clone(), source })
            .and_then(|body| venue.parse(native, &body));
        match result {
            Ok(reference) => return Ok(reference),
            Err(error) if !error.transient() || attempt >= ATTEMPTS => return Err(error),
            Err(error) => {
                tracing::warn!(venue = venue.as_str(), %native, %error, retry_in = ?backoff, "reference data not fetched; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
            }
        }
    }
}

impl ReferenceError {
    /// Whether asking again may help: not for an instrument the venue does
    /// not list (Binance answers 400, Coinbase 404).
    fn transient(&self) -> bool {
        !matches!(
            self,
            ReferenceError::Unknown(_) | ReferenceError::Fetch { source: ConnectError::Status(400 | 404), .. }
        )
    }
}

/// Where an instrument's increments came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The venue's reference data.
    Venue,
    /// Not fetched (`--venue-reference off`): the fallback increments.
    Off,
    /// The venue's reference data could not be fetched: the fallback
    /// increments, until a restart after it can.
    Unavailable,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Venue => "venue",
            Source::Off => "off",
            Source::Unavailable => "unavailable",
        }
    }
}

/// What is known of one venue instrument's reference data.
#[derive(Debug, Clone)]
pub struct Entry {
    pub venue: VenueKind,
    /// The venue's name for it.
    pub native: String,
    pub source: Source,
    /// The latest reference data fetched (the increments in use are the
    /// instrument's own, fixed at start).
    pub reference: Option<Reference>,
    /// The last failure to fetch it, if the last attempt failed.
    pub error: Option<String>,
    /// A tick or lot the venue states now that differs from the one in use
    /// (applied at the next start).
    pub changed: Option<String>,
}

/// Every venue instrument's reference data, by instrument index: what
/// `/v1/instruments` shows, and what [`refresh`] keeps current.
#[derive(Debug, Default)]
pub struct ReferenceBoard {
    entries: parking_lot::Mutex<Vec<Option<Entry>>>,
}

impl ReferenceBoard {
    pub fn set(&self, id: crate::model::InstrumentId, entry: Entry) {
        let mut entries = self.entries.lock();
        if entries.len() <= id.index() {
            entries.resize(id.index() + 1, None);
        }
        entries[id.index()] = Some(entry);
    }

    pub fn get(&self, id: crate::model::InstrumentId) -> Option<Entry> {
        self.entries.lock().get(id.index()).cloned().flatten()
    }

    fn ids(&self) -> Vec<crate::model::InstrumentId> {
        let entries = self.entries.lock();
        (0..entries.len()).filter(|i| entries[*i].is_some()).map(|i| crate::model::InstrumentId(i as u32)).collect()
    }
}

/// Base URLs of the venues' REST APIs.
#[derive(Debug, Clone)]
pub struct RestBases {
    pub binance: String,
    pub coinbase: String,
    pub kraken: String,
    pub okx: String,
    pub bybit: String,
}

impl RestBases {
    pub fn of(&self, venue: VenueKind) -> &str {
        match venue {
            VenueKind::Binance => &self.binance,
            VenueKind::Coinbase => &self.coinbase,
            VenueKind::Kraken => &self.kraken,
            VenueKind::Okx => &self.okx,
            VenueKind::Bybit => &self.bybit,
        }
    }
}

/// Fetches every instrument of one venue at start (a few at a time).
/// Each result is the venue's reference data or why there is none.
pub async fn fetch_all(
    http: &HttpClient,
    venue: VenueKind,
    rest_base: &str,
    natives: &[String],
) -> Vec<Result<Reference, ReferenceError>> {
    use futures_util::StreamExt;
    futures_util::stream::iter(natives.iter().map(|native| fetch(http, venue, rest_base, native)))
        .buffered(8)
        .collect()
        .await
}

/// A failed instrument is fetched again this often.
const RETRY_FAILED: Duration = Duration::from_secs(60);

/// Keeps the board current until `stop`: every instrument every `every`, a
/// failed one every [`RETRY_FAILED`]. A status change is applied (shown at
/// once); a tick or lot change is reported as `changed` (applied at the next
/// start); both are logged and counted (`tickwire_reference_changes_total`).
pub async fn refresh(
    board: std::sync::Arc<ReferenceBoard>,
    instruments: std::sync::Arc<crate::model::Instruments>,
    http: HttpClient,
    bases: RestBases,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut last_full = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY_FAILED.min(every)) => {}
        }
        let full = last_full.elapsed() >= every;
        if full {
            last_full = tokio::time::Instant::now();
        }
        for id in board.ids() {
            let Some(entry) = board.get(id) else { continue };
            if entry.source == Source::Off || !(full || entry.error.is_some()) {
                continue;
            }
            let result = fetch(&http, entry.venue, bases.of(entry.venue), &entry.native).await;
            let updated = apply(instruments.get(id), entry, result);
            board.set(id, updated);
        }
    }
}

/// The board entry after a refresh's `result`, logging and counting what changed.
pub fn apply(
    instrument: &crate::model::Instrument,
    mut entry: Entry,
    result: Result<Reference, ReferenceError>,
) -> Entry {
    let venue = entry.venue.as_str();
    match result {
        Err(error) => {
            metrics::counter!("tickwire_reference_errors_total", "venue" => venue).increment(1);
            tracing::warn!(venue, symbol = %instrument.symbol, %error, "reference data refresh failed");
            entry.error = Some(error.to_string());
        }
        Ok(fresh) => {
            if let Some(old) = &entry.reference
                && old.status != fresh.status
            {
                metrics::counter!("tickwire_reference_changes_total", "venue" => venue, "what" => "status")
                    .increment(1);
                tracing::warn!(venue, symbol = %instrument.symbol, from = old.status.as_str(), to = fresh.status.as_str(), "the venue changed the instrument's status");
            }
            if fresh.tick_size != instrument.tick_size || fresh.lot_size != instrument.lot_size {
                let exact = |nanos: i64| crate::model::format_decimal(nanos, crate::model::decimals_of(nanos));
                let change = format!(
                    "tick {} lot {} (in use: tick {} lot {}; applied at the next start)",
                    exact(fresh.tick_size.0),
                    exact(fresh.lot_size.0),
                    exact(instrument.tick_size.0),
                    exact(instrument.lot_size.0),
                );
                if entry.changed.as_deref() != Some(change.as_str()) {
                    metrics::counter!("tickwire_reference_changes_total", "venue" => venue, "what" => "increments")
                        .increment(1);
                    tracing::warn!(venue, symbol = %instrument.symbol, %change, "the venue states other increments than those in use");
                }
                entry.changed = Some(change);
            } else {
                entry.changed = None;
            }
            entry.error = None;
            entry.reference = Some(fresh);
        }
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn px(text: &str) -> Price {
        Price::parse(text).unwrap()
    }
    fn sz(text: &str) -> Size {
        Size::parse(text).unwrap()
    }

    #[test]
    fn binance_exchange_info() {
        let body = br#"{"timezone":"UTC","serverTime":1565246363776,"rateLimits":[],"exchangeFilters":[],"symbols":[{"symbol":"BTCUSDT","status":"TRADING","baseAsset":"BTC","baseAssetPrecision":8,"quoteAsset":"USDT","quotePrecision":8,"quoteAssetPrecision":8,"orderTypes":["LIMIT"],"icebergAllowed":true,"filters":[{"filterType":"PRICE_FILTER","minPrice":"0.01000000","maxPrice":"1000000.00000000","tickSize":"0.01000000"},{"filterType":"LOT_SIZE","minQty":"0.00001000","maxQty":"9000.00000000","stepSize":"0.00001000"}]}]}"#;
        let r = VenueKind::Binance.parse("BTCUSDT", body).unwrap();
        assert_eq!(
            r,
            Reference {
                tick_size: px("0.01"),
                lot_size: sz("0.00001"),
                min_size: sz("0.00001"),
                base: "BTC".into(),
                quote: "USDT".into(),
                status: MarketStatus::Trading
            }
        );
        let halted = String::from_utf8_lossy(body).replace("\"TRADING\"", "\"BREAK\"");
        assert_eq!(VenueKind::Binance.parse("BTCUSDT", halted.as_bytes()).unwrap().status, MarketStatus::Halted);
        let unknown = br#"{"code":-1121,"msg":"Invalid symbol."}"#;
        assert!(matches!(VenueKind::Binance.parse("NOPEUSDT", unknown), Err(ReferenceError::Unknown(_))));
    }

    #[test]
    fn coinbase_public_product() {
        let body = br#"{"product_id":"BTC-USD","price":"64000.01","base_increment":"0.00000001","quote_increment":"0.01","quote_min_size":"1","base_min_size":"0.00000001","base_name":"Bitcoin","quote_name":"US Dollar","status":"online","cancel_only":false,"limit_only":false,"post_only":false,"trading_disabled":false,"is_disabled":false,"base_currency_id":"BTC","quote_currency_id":"USD","price_increment":"0.01"}"#;
        let r = VenueKind::Coinbase.parse("BTC-USD", body).unwrap();
        assert_eq!((r.tick_size, r.lot_size, r.status), (px("0.01"), sz("0.00000001"), MarketStatus::Trading));
        assert_eq!((r.base.as_str(), r.quote.as_str()), ("BTC", "USD"));
        let cancel_only = String::from_utf8_lossy(body).replace("\"cancel_only\":false", "\"cancel_only\":true");
        assert_eq!(VenueKind::Coinbase.parse("BTC-USD", cancel_only.as_bytes()).unwrap().status, MarketStatus::Halted);
        let missing = br#"{"error":"NOT_FOUND","error_details":"","message":"ProductID is invalid"}"#;
        assert!(matches!(VenueKind::Coinbase.parse("NOPE-USD", missing), Err(ReferenceError::Unknown(_))));
    }

    #[test]
    fn kraken_asset_pairs() {
        let body = br#"{"error":[],"result":{"XXBTZUSD":{"altname":"XBTUSD","wsname":"XBT/USD","aclass_base":"currency","base":"XXBT","aclass_quote":"currency","quote":"ZUSD","cost_decimals":5,"pair_decimals":1,"lot_decimals":8,"lot_multiplier":1,"ordermin":"0.00005","costmin":"0.5","tick_size":"0.1","status":"online"}}}"#;
        let r = VenueKind::Kraken.parse("BTC/USD", body).unwrap();
        assert_eq!(
            (r.tick_size, r.lot_size, r.min_size, r.status),
            (px("0.1"), sz("0.00000001"), sz("0.00005"), MarketStatus::Trading)
        );
        assert_eq!((r.base.as_str(), r.quote.as_str()), ("BTC", "USD"));
        assert_eq!(VenueKind::Kraken.path("BTC/USD"), "/0/public/AssetPairs?pair=XBT/USD");
        let unknown = br#"{"error":["EQuery:Unknown asset pair"]}"#;
        assert!(matches!(VenueKind::Kraken.parse("NOPE/USD", unknown), Err(ReferenceError::Unknown(_))));
    }

    #[test]
    fn okx_instruments() {
        let body = br#"{"code":"0","msg":"","data":[{"instType":"SPOT","instId":"BTC-USDT","uly":"","baseCcy":"BTC","quoteCcy":"USDT","settleCcy":"","ctVal":"","ctMult":"","ctValCcy":"","listTime":"1606468572000","expTime":"","lever":"10","tickSz":"0.1","lotSz":"0.00000001","minSz":"0.00001","ctType":"","state":"live"}]}"#;
        let r = VenueKind::Okx.parse("BTC-USDT", body).unwrap();
        assert_eq!(
            (r.tick_size, r.lot_size, r.min_size, r.status),
            (px("0.1"), sz("0.00000001"), sz("0.00001"), MarketStatus::Trading)
        );
        let suspended = String::from_utf8_lossy(body).replace("\"live\"", "\"suspend\"");
        assert_eq!(VenueKind::Okx.parse("BTC-USDT", suspended.as_bytes()).unwrap().status, MarketStatus::Halted);
        let unknown = br#"{"code":"51001","msg":"Instrument ID does not exist","data":[]}"#;
        assert!(matches!(VenueKind::Okx.parse("NOPE-USDT", unknown), Err(ReferenceError::Unknown(_))));
    }

    #[test]
    fn bybit_instruments_info() {
        let body = br#"{"retCode":0,"retMsg":"OK","result":{"category":"spot","list":[{"symbol":"BTCUSDT","baseCoin":"BTC","quoteCoin":"USDT","innovation":"0","status":"Trading","marginTrading":"both","stTag":"0","lotSizeFilter":{"basePrecision":"0.000001","quotePrecision":"0.00000001","minOrderQty":"0.000048","maxOrderQty":"71.73956243","minOrderAmt":"1","maxOrderAmt":"2000000"},"priceFilter":{"tickSize":"0.01"},"riskParameters":{"priceLimitRatioX":"0.01","priceLimitRatioY":"0.02"}}]},"retExtInfo":{},"time":1716533183235}"#;
        let r = VenueKind::Bybit.parse("BTCUSDT", body).unwrap();
        assert_eq!(
            (r.tick_size, r.lot_size, r.min_size, r.status),
            (px("0.01"), sz("0.000001"), sz("0.000048"), MarketStatus::Trading)
        );
        assert_eq!((r.base.as_str(), r.quote.as_str()), ("BTC", "USDT"));
        let closed = String::from_utf8_lossy(body).replace("\"Trading\"", "\"Closed\"");
        assert_eq!(VenueKind::Bybit.parse("BTCUSDT", closed.as_bytes()).unwrap().status, MarketStatus::Delisted);
        let empty = br#"{"retCode":0,"retMsg":"OK","result":{"category":"spot","list":[]},"retExtInfo":{},"time":1}"#;
        assert!(matches!(VenueKind::Bybit.parse("NOPEUSDT", empty), Err(ReferenceError::Unknown(_))));
    }

    #[test]
    fn garbage_and_non_positive_increments_are_refused() {
        assert!(matches!(VenueKind::Okx.parse("BTC-USDT", b"<html>"), Err(ReferenceError::Malformed(_))));
        let zero = br#"{"code":"0","msg":"","data":[{"instId":"BTC-USDT","baseCcy":"BTC","quoteCcy":"USDT","tickSz":"0","lotSz":"0.1","minSz":"0.1","state":"live"}]}"#;
        assert!(matches!(VenueKind::Okx.parse("BTC-USDT", zero), Err(ReferenceError::Malformed(_))));
    }
}
