//! Venue reference data against a local REST server answering in each venue's
//! documented format: every venue instrument carries its venue's tick and lot
//! (and so its decimals), status, minimum size and assets; one the venue does
//! not list, or whose venue cannot be reached, is reported, not guessed; and a
//! refresh applies a status change and reports an increment change.

mod common;
mod venues;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use venues::MockRest;

const BINANCE: &str = include_str!("fixtures/reference/binance_exchange_info.json");
const COINBASE: &str = include_str!("fixtures/reference/coinbase_product.json");
const KRAKEN: &str = include_str!("fixtures/reference/kraken_asset_pairs.json");
const OKX: &str = include_str!("fixtures/reference/okx_instruments.json");

/// Each venue's answer for the one pair it lists, and its "unknown" answer otherwise.
fn venue_answer(path: &str) -> (u16, String) {
    match path {
        "/api/v3/exchangeInfo?symbol=BTCUSDT" => (200, BINANCE.into()),
        p if p.starts_with("/api/v3/exchangeInfo") => (400, r#"{"code":-1121,"msg":"Invalid symbol."}"#.into()),
        "/api/v3/brokerage/market/products/BTC-USD" => (200, COINBASE.into()),
        p if p.starts_with("/api/v3/brokerage") => {
            (404, r#"{"error":"NOT_FOUND","message":"ProductID is invalid"}"#.into())
        }
        "/0/public/AssetPairs?pair=XBT/USD" => (200, KRAKEN.into()),
        p if p.starts_with("/0/public") => (200, r#"{"error":["EQuery:Unknown asset pair"]}"#.into()),
        "/api/v5/public/instruments?instType=SPOT&instId=BTC-USDT" => (200, OKX.into()),
        _ => (200, r#"{"code":"51001","msg":"Instrument ID does not exist","data":[]}"#.into()),
    }
}

/// A gateway with every venue's feed (their WebSockets unreachable: only the
/// reference data matters here) and their REST APIs at `rest`.
async fn gateway(rest: &str, feeds: &str, extra: &[&str]) -> tickwire::app::Server {
    let mut args = vec![
        "--feed",
        feeds,
        "--binance-ws-url",
        "ws://127.0.0.1:9/stream",
        "--coinbase-ws-url",
        "ws://127.0.0.1:9",
        "--kraken-ws-url",
        "ws://127.0.0.1:9/v2",
        "--okx-ws-url",
        "ws://127.0.0.1:9/ws",
        "--binance-rest-url",
        rest,
        "--coinbase-rest-url",
        rest,
        "--kraken-rest-url",
        rest,
        "--okx-rest-url",
        rest,
    ];
    args.extend_from_slice(extra);
    common::start(&args).await
}

async fn instruments(addr: std::net::SocketAddr) -> Vec<Value> {
    let (status, body) = common::get_json(addr, "/v1/instruments").await;
    assert_eq!(status, 200);
    body["instruments"].as_array().unwrap().clone()
}

fn find<'a>(list: &'a [Value], symbol: &str) -> &'a Value {
    list.iter().find(|i| i["symbol"] == symbol).unwrap_or_else(|| panic!("{symbol} in {list:?}"))
}

#[tokio::test]
async fn every_venue_instrument_carries_its_venues_increments() {
    let rest = MockRest::start(|_, path| venue_answer(path)).await;
    let server = gateway(&rest.url(), "binance:BTCUSDT;coinbase:BTC-USD;kraken:BTC/USD;okx:BTC-USDT", &[]).await;
    let list = instruments(server.addr).await;
    let expected = [
        ("binance:BTC-USDT", "0.01", "0.00001", 2, 5, "0.00001", "BTC", "USDT"),
        ("coinbase:BTC-USD", "0.01", "0.00000001", 2, 8, "0.00000001", "BTC", "USD"),
        ("kraken:BTC-USD", "0.1", "0.00000001", 1, 8, "0.00005000", "BTC", "USD"),
        ("okx:BTC-USDT", "0.1", "0.0001", 1, 4, "0.00001", "BTC", "USDT"),
    ];
    for (symbol, tick, lot, price_decimals, size_decimals, min_size, base, quote) in expected {
        let i = find(&list, symbol);
        assert_eq!(i["reference"], "venue", "{i}");
        assert_eq!((i["tick_size"].as_str(), i["lot_size"].as_str()), (Some(tick), Some(lot)), "{i}");
        assert_eq!(
            (i["price_decimals"].as_u64(), i["size_decimals"].as_u64()),
            (Some(price_decimals), Some(size_decimals))
        );
        assert_eq!(i["min_size"], min_size, "{i}");
        assert_eq!((i["base"].as_str(), i["quote"].as_str()), (Some(base), Some(quote)), "{i}");
        assert_eq!(i["status"], "trading", "{i}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_instrument_the_venue_does_not_list_is_reported_not_guessed() {
    let rest = MockRest::start(|_, path| venue_answer(path)).await;
    let server = gateway(&rest.url(), "binance:NOPEUSDT;okx:NOPE-USDT;kraken:NOPE/USD;coinbase:NOPE-USD", &[]).await;
    let list = instruments(server.addr).await;
    for symbol in ["binance:NOPE-USDT", "okx:NOPE-USDT", "kraken:NOPE-USD", "coinbase:NOPE-USD"] {
        let i = find(&list, symbol);
        assert_eq!(i["reference"], "unavailable", "{i}");
        assert_eq!(i["tick_size"], "0.00000001", "the fallback, and said so: {i}");
        let error = i["reference_error"].as_str().unwrap_or_default();
        assert!(error.contains("does not list") || error.contains("status 4"), "{i}");
    }
    // A venue named the unknown pair once: nothing is retried at start.
    let asked = rest.requests.lock().len();
    assert_eq!(asked, 4, "{:?}", rest.requests.lock());
    let metrics = common::get_text(server.addr, "/metrics").await;
    assert!(metrics.contains("tickwire_reference_errors_total{venue=\"okx\"} 1"), "{metrics}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_venue_unreachable_at_start_is_retried_and_its_status_followed() {
    // The venue fails every request until `up`; then it lists the pair, first
    // trading, then (after `halt`) suspended.
    let up = Arc::new(AtomicBool::new(false));
    let halt = Arc::new(AtomicBool::new(false));
    let (u, h) = (up.clone(), halt.clone());
    let rest = MockRest::start(move |_, path| {
        if !u.load(Ordering::SeqCst) {
            return (503, "<html>busy</html>".into());
        }
        let (status, body) = venue_answer(path);
        if h.load(Ordering::SeqCst) { (status, body.replace("\"live\"", "\"suspend\"")) } else { (status, body) }
    })
    .await;
    let server = gateway(&rest.url(), "okx:BTC-USDT", &["--venue-reference-refresh-s", "1"]).await;
    let list = instruments(server.addr).await;
    let i = find(&list, "okx:BTC-USDT");
    assert_eq!(i["reference"], "unavailable", "{i}");
    assert!(i["reference_error"].as_str().unwrap().contains("503"), "{i}");
    assert_eq!(rest.requests.lock().len(), 3, "three attempts at start");

    up.store(true, Ordering::SeqCst);
    let i = until(server.addr, "okx:BTC-USDT", |i| i["status"] == "trading").await;
    // Fetched now, and different from the fallback in use: reported, applied at the next start.
    assert!(i["reference_error"].is_null(), "{i}");
    assert!(i["reference_changed"].as_str().unwrap().contains("tick 0.1 lot 0.0001"), "{i}");
    assert_eq!(i["tick_size"], "0.00000001", "{i}");

    halt.store(true, Ordering::SeqCst);
    until(server.addr, "okx:BTC-USDT", |i| i["status"] == "halted").await;
    let metrics = common::get_text(server.addr, "/metrics").await;
    assert!(metrics.contains("tickwire_reference_changes_total{venue=\"okx\",what=\"status\"} 1"), "{metrics}");
    server.shutdown().await;
}

/// Polls `/v1/instruments` until `symbol`'s entry satisfies `done` (10 s at most).
async fn until(addr: std::net::SocketAddr, symbol: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = instruments(addr).await;
        let i = find(&list, symbol).clone();
        if done(&i) {
            return i;
        }
        assert!(Instant::now() < deadline, "waiting on {symbol}: {i}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn reference_off_uses_the_fallback_and_says_so() {
    let rest = MockRest::start(|_, path| venue_answer(path)).await;
    let server = gateway(&rest.url(), "okx:BTC-USDT", &["--venue-reference", "off"]).await;
    let i = find(&instruments(server.addr).await, "okx:BTC-USDT").clone();
    assert_eq!((i["reference"].as_str(), i["tick_size"].as_str()), (Some("off"), Some("0.00000001")), "{i}");
    assert!(rest.requests.lock().is_empty());
    server.shutdown().await;
}
