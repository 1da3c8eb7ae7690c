//! Feed normalisation throughput: venue message bytes → `model::Event`, per venue
//! and message type, on one core; beside a serde_json baseline that does the same
//! work through `serde_json::Value` (figures in docs/BENCHMARKS.md).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use tickwire::feed::binance::Binance;
use tickwire::feed::coinbase::Coinbase;
use tickwire::feed::kraken::Kraken;
use tickwire::feed::okx::Okx;
use tickwire::feed::{Action, Venue};
use tickwire::model::{
    Event, InstrumentId, Payload, Price, Quote, Side, Size, Trade, parse_decimal, parse_decimal_bytes,
};

const ID: InstrumentId = InstrumentId(0);

const BINANCE_TRADE: &str = r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1714564800001,"s":"BTCUSDT","t":5001,"p":"64000.10000000","q":"0.25000000","T":1714564800000,"m":false,"M":true}}"#;
const BINANCE_BBO: &str = r#"{"stream":"btcusdt@bookTicker","data":{"u":400900217,"s":"BTCUSDT","b":"64000.00000000","B":"1.50000000","a":"64000.20000000","A":"0.30000000"}}"#;
const COINBASE_TRADE: &str = r#"{"channel": "market_trades", "client_id": "", "timestamp": "2024-05-01T12:00:00.400000Z", "sequence_num": 3, "events": [{"type": "update", "trades": [{"trade_id": "631112233", "product_id": "BTC-USD", "price": "63211.51", "size": "0.0025", "side": "BUY", "time": "2024-05-01T12:00:00.398000Z"}]}]}"#;
const COINBASE_BBO: &str = r#"{"channel": "ticker", "client_id": "", "timestamp": "2024-05-01T12:00:00.500000Z", "sequence_num": 4, "events": [{"type": "update", "tickers": [{"type": "ticker", "product_id": "BTC-USD", "price": "63211.51", "volume_24_h": "8123.44917025", "low_24_h": "62010.00", "high_24_h": "63500.00", "low_52_w": "25000.00", "high_52_w": "73800.00", "price_percent_chg_24_h": "1.30", "best_bid": "63211.50", "best_bid_quantity": "0.41000000", "best_ask": "63211.51", "best_ask_quantity": "0.02150000"}]}]}"#;
const KRAKEN_TRADE: &str = r#"{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":63211.5,"qty":0.00250000,"ord_type":"market","trade_id":74112345,"timestamp":"2024-05-01T12:00:06.123456Z"}]}"#;
const KRAKEN_BBO: &str = r#"{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":63211.4,"bid_qty":0.51000000,"ask":63211.5,"ask_qty":1.25000000,"last":63211.5,"volume":1843.29170012,"vwap":62987.1,"low":62010.0,"high":63500.0,"change":812.3,"change_pct":1.30,"timestamp":"2024-05-01T12:00:06.123456Z"}]}"#;
const KRAKEN_SNAPSHOT: &str = include_str!("../tests/fixtures/kraken/book_snapshot_checksum_vector.json");
/// OKX's documented trades and tickers push examples.
const OKX_TRADE: &str = include_str!("../tests/fixtures/okx/trades.json");
const OKX_BBO: &str = include_str!("../tests/fixtures/okx/tickers.json");
/// OKX's documented full snapshot and update: 8+8 levels, with the checksum they hash to.
const OKX_SNAPSHOT: &str = include_str!("../tests/fixtures/okx/book_snapshot.json");
const OKX_UPDATE: &str = include_str!("../tests/fixtures/okx/book_update.json");
const OKX_CHECKSUM: &str = "-2102840145";

fn feed<V: Venue>(venue: &mut V, text: &[u8], out: &mut Vec<Event>, actions: &mut Vec<Action>) {
    out.clear();
    actions.clear();
    let _ = black_box(venue.on_message(black_box(text), 1, out, actions));
}

fn bench_venue<V: Venue>(c: &mut Criterion, name: &str, mut venue: V, text: &str) {
    let mut out = Vec::with_capacity(8);
    let mut actions = Vec::new();
    let mut group = c.benchmark_group("normalise");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| b.iter(|| feed(&mut venue, text.as_bytes(), &mut out, &mut actions)));
    group.finish();
}

fn dec(v: &Value) -> i64 {
    parse_decimal(v.as_str().unwrap_or("")).unwrap_or(0)
}

/// Kraken numbers through serde_json's f64 (not exact; a speed baseline only).
fn num(v: &Value) -> i64 {
    parse_decimal(&v.to_string()).unwrap_or(0)
}

fn baseline(c: &mut Criterion, name: &str, text: &str, f: fn(&Value) -> Event) {
    let mut group = c.benchmark_group("normalise");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter(|| {
            let v: Value = serde_json::from_slice(black_box(text.as_bytes())).unwrap();
            black_box(f(&v))
        })
    });
    group.finish();
}

/// OKX's millisecond timestamps, sent as strings.
fn ms(v: &Value) -> u64 {
    v.as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * 1_000_000
}

fn serde_baselines(c: &mut Criterion) {
    baseline(c, "serde_json/binance/trade", BINANCE_TRADE, |v| {
        let d = &v["data"];
        let side = if d["m"].as_bool().unwrap_or(false) { Side::Sell } else { Side::Buy };
        let trade = Trade {
            price: Price(dec(&d["p"])),
            size: Size(dec(&d["q"])),
            side,
            trade_id: d["t"].as_u64().unwrap_or(0),
        };
        Event::new(ID, d["T"].as_u64().unwrap_or(0) * 1_000_000, 1, Payload::Trade(trade))
    });
    baseline(c, "serde_json/binance/bbo", BINANCE_BBO, |v| {
        let d = &v["data"];
        let q = Quote {
            bid: Price(dec(&d["b"])),
            bid_size: Size(dec(&d["B"])),
            ask: Price(dec(&d["a"])),
            ask_size: Size(dec(&d["A"])),
        };
        Event::new(ID, 1, 1, Payload::Quote(q))
    });
    baseline(c, "serde_json/coinbase/trade", COINBASE_TRADE, |v| {
        let t = &v["events"][0]["trades"][0];
        let trade = Trade {
            price: Price(dec(&t["price"])),
            size: Size(dec(&t["size"])),
            side: if t["side"] == "BUY" { Side::Buy } else { Side::Sell },
            trade_id: t["trade_id"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0),
        };
        let ts = tickwire::feed::wire::parse_rfc3339_nanos(t["time"].as_str().unwrap_or("")).unwrap_or(0);
        Event::new(ID, ts, 1, Payload::Trade(trade))
    });
    baseline(c, "serde_json/coinbase/bbo", COINBASE_BBO, |v| {
        let t = &v["events"][0]["tickers"][0];
        let q = Quote {
            bid: Price(dec(&t["best_bid"])),
            bid_size: Size(dec(&t["best_bid_quantity"])),
            ask: Price(dec(&t["best_ask"])),
            ask_size: Size(dec(&t["best_ask_quantity"])),
        };
        let ts = tickwire::feed::wire::parse_rfc3339_nanos(v["timestamp"].as_str().unwrap_or("")).unwrap_or(0);
        Event::new(ID, ts, 1, Payload::Quote(q))
    });
    baseline(c, "serde_json/kraken/trade", KRAKEN_TRADE, |v| {
        let t = &v["data"][0];
        let trade = Trade {
            price: Price(num(&t["price"])),
            size: Size(num(&t["qty"])),
            side: if t["side"] == "buy" { Side::Buy } else { Side::Sell },
            trade_id: t["trade_id"].as_u64().unwrap_or(0),
        };
        let ts = tickwire::feed::wire::parse_rfc3339_nanos(t["timestamp"].as_str().unwrap_or("")).unwrap_or(0);
        Event::new(ID, ts, 1, Payload::Trade(trade))
    });
    baseline(c, "serde_json/kraken/bbo", KRAKEN_BBO, |v| {
        let t = &v["data"][0];
        let q = Quote {
            bid: Price(num(&t["bid"])),
            bid_size: Size(num(&t["bid_qty"])),
            ask: Price(num(&t["ask"])),
            ask_size: Size(num(&t["ask_qty"])),
        };
        let ts = tickwire::feed::wire::parse_rfc3339_nanos(t["timestamp"].as_str().unwrap_or("")).unwrap_or(0);
        Event::new(ID, ts, 1, Payload::Quote(q))
    });
    baseline(c, "serde_json/okx/trade", OKX_TRADE, |v| {
        let t = &v["data"][0];
        let trade = Trade {
            price: Price(dec(&t["px"])),
            size: Size(dec(&t["sz"])),
            side: if t["side"] == "buy" { Side::Buy } else { Side::Sell },
            trade_id: t["tradeId"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0),
        };
        Event::new(ID, ms(&t["ts"]), 1, Payload::Trade(trade))
    });
    baseline(c, "serde_json/okx/bbo", OKX_BBO, |v| {
        let t = &v["data"][0];
        let q = Quote {
            bid: Price(dec(&t["bidPx"])),
            bid_size: Size(dec(&t["bidSz"])),
            ask: Price(dec(&t["askPx"])),
            ask_size: Size(dec(&t["askSz"])),
        };
        Event::new(ID, ms(&t["ts"]), 1, Payload::Quote(q))
    });
}

fn venues(c: &mut Criterion) {
    let binance = || Binance::new(vec![("BTCUSDT".into(), ID)]);
    let coinbase = || Coinbase::new(vec![("BTC-USD".into(), ID)]);
    let kraken = || Kraken::new(vec![("BTC/USD".into(), ID)], 10);
    let okx = || Okx::new(vec![("BTC-USDT".into(), ID)]);
    bench_venue(c, "simd/binance/trade", binance(), BINANCE_TRADE);
    bench_venue(c, "simd/binance/bbo", binance(), BINANCE_BBO);
    bench_venue(c, "simd/coinbase/trade", coinbase(), COINBASE_TRADE);
    bench_venue(c, "simd/coinbase/bbo", coinbase(), COINBASE_BBO);
    bench_venue(c, "simd/kraken/trade", kraken(), KRAKEN_TRADE);
    bench_venue(c, "simd/kraken/bbo", kraken(), KRAKEN_BBO);
    bench_venue(c, "simd/okx/trade", okx(), OKX_TRADE);
    bench_venue(c, "simd/okx/bbo", okx(), OKX_BBO);

    // Book messages that change the synced book, 1000 per timed batch.
    const N: u64 = 1000;
    let mut group = c.benchmark_group("normalise");
    group.throughput(Throughput::Elements(N));
    group.bench_function("simd/binance/depth_diff", |b| {
        b.iter_batched(
            || {
                let mut venue = binance();
                let (mut out, mut actions) = (Vec::new(), Vec::new());
                let first = r#"{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":1,"b":[],"a":[]}}"#;
                venue.on_message(first.as_bytes(), 1, &mut out, &mut actions).unwrap();
                let snapshot = br#"{"lastUpdateId":1,"bids":[["63999.00000000","1.00000000"]],"asks":[["64001.00000000","1.00000000"]]}"#;
                venue.on_rest(0, snapshot, 1, &mut out, &mut actions).unwrap();
                let messages: Vec<String> = (2..2 + N)
                    .map(|k| format!(r#"{{"stream":"btcusdt@depth@100ms","data":{{"e":"depthUpdate","E":{k},"s":"BTCUSDT","U":{k},"u":{k},"b":[["63998.{:08}","0.50000000"],["63990.00000000","2.00000000"]],"a":[["64002.00000000","0.{:08}"]]}}}}"#, k % 100, k))
                    .collect();
                (venue, messages)
            },
            |(mut venue, messages)| {
                let (mut out, mut actions) = (Vec::with_capacity(4), Vec::new());
                for m in &messages {
                    feed(&mut venue, m.as_bytes(), &mut out, &mut actions);
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("simd/coinbase/l2_update", |b| {
        b.iter_batched(
            || {
                let mut venue = coinbase();
                let (mut out, mut actions) = (Vec::new(), Vec::new());
                let snapshot = r#"{"channel":"l2_data","timestamp":"2024-05-01T12:00:00.2Z","sequence_num":1,"events":[{"type":"snapshot","product_id":"BTC-USD","updates":[{"side":"bid","event_time":"2024-05-01T12:00:00.199Z","price_level":"63211.50","new_quantity":"0.41"},{"side":"offer","event_time":"2024-05-01T12:00:00.199Z","price_level":"63212.00","new_quantity":"0.75"}]}]}"#;
                venue.on_message(snapshot.as_bytes(), 1, &mut out, &mut actions).unwrap();
                let messages: Vec<String> = (2..2 + N)
                    .map(|k| format!(r#"{{"channel": "l2_data", "client_id": "", "timestamp": "2024-05-01T12:00:00.300000Z", "sequence_num": {k}, "events": [{{"type": "update", "product_id": "BTC-USD", "updates": [{{"side": "bid", "event_time": "2024-05-01T12:00:00.298000Z", "price_level": "63211.{:02}", "new_quantity": "0.10000000"}}, {{"side": "offer", "event_time": "2024-05-01T12:00:00.298000Z", "price_level": "63212.90", "new_quantity": "0.{k:08}"}}]}}]}}"#, k % 50))
                    .collect();
                (venue, messages)
            },
            |(mut venue, messages)| {
                let (mut out, mut actions) = (Vec::with_capacity(4), Vec::new());
                for m in &messages {
                    feed(&mut venue, m.as_bytes(), &mut out, &mut actions);
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();

    // Kraken: one update (with its CRC32 check) that leaves the book as it was.
    let mut venue = kraken();
    let (mut out, mut actions) = (Vec::new(), Vec::new());
    venue.on_message(KRAKEN_SNAPSHOT.as_bytes(), 1, &mut out, &mut actions).unwrap();
    let update = r#"{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":45283.5,"qty":0.10000000}],"asks":[{"price":45285.2,"qty":0.00100000}],"checksum":3310070434,"timestamp":"2023-10-06T17:35:56.000000Z"}]}"#;
    out.clear();
    venue.on_message(update.as_bytes(), 1, &mut out, &mut actions).unwrap();
    assert!(actions.is_empty() && matches!(out[0].payload, Payload::Book(_)), "update must pass its checksum");
    bench_venue(c, "simd/kraken/book_update", venue, update);

    // OKX: the documented update (all 16 levels again, CRC32 over them), its
    // sequence ids made a no-change heartbeat's so that it can repeat.
    let mut venue = okx();
    let (mut out, mut actions) = (Vec::new(), Vec::new());
    venue.on_message(OKX_SNAPSHOT.replace("-855196043", OKX_CHECKSUM).as_bytes(), 1, &mut out, &mut actions).unwrap();
    let update = OKX_UPDATE.replace("-855196043", OKX_CHECKSUM).replace(r#""seqId":123457"#, r#""seqId":123456"#);
    out.clear();
    venue.on_message(update.as_bytes(), 1, &mut out, &mut actions).unwrap();
    assert!(actions.is_empty() && matches!(out[0].payload, Payload::Book(_)), "update must pass its checks");
    bench_venue(c, "simd/okx/book_update", venue, &update);
}

fn decimals(c: &mut Criterion) {
    c.bench_function("parse_decimal_bytes", |b| b.iter(|| parse_decimal_bytes(black_box(b"64000.10000000"))));
}

criterion_group!(benches, venues, serde_baselines, decimals);
criterion_main!(benches);
