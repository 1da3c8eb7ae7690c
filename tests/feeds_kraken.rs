//! The Kraken v2 connector against a local Kraken: book with CRC32 checksums,
//! trades and ticker, replayed in Kraken's documented format; and the whole
//! gateway showing clients `book_invalidated` and a fresh snapshot after a
//! checksum failure.

mod common;
mod venues;

use std::sync::atomic::Ordering;
use std::time::Duration;

use tickwire::feed::kraken::Kraken;
use tickwire::feed::venue_instrument;
use tickwire::model::{BookDelta, InstrumentId, Instruments, Payload, Price, Quote, Side, Size, Trade};
use venues::{Harness, MockWs, Step, expect, send, test_config};

const SESSION: &str = include_str!("fixtures/kraken/session.jsonl");
const VECTOR: &str = include_str!("fixtures/kraken/book_snapshot_checksum_vector.json");
const BOOK_SUBSCRIBE: &str = r#""method":"subscribe","params":{"channel":"book""#;

fn table() -> (Instruments, InstrumentId) {
    let mut instruments = Instruments::new();
    let id = instruments.add(venue_instrument("kraken:BTC-USD".into(), "kraken")).unwrap();
    (instruments, id)
}

fn px(text: &str) -> Price {
    Price::parse(text).unwrap()
}
fn sz(text: &str) -> Size {
    Size::parse(text).unwrap()
}
fn ts(text: &str) -> u64 {
    tickwire::feed::wire::parse_rfc3339_nanos(text).unwrap()
}

fn trade(id: u64) -> String {
    format!(
        r#"{{"channel":"trade","type":"update","data":[{{"symbol":"BTC/USD","side":"buy","price":45285.2,"qty":0.00100000,"ord_type":"limit","trade_id":{id},"timestamp":"2023-10-06T17:36:00.000000Z"}}]}}"#
    )
}

/// An update that is valid JSON but whose checksum is wrong.
const BAD_CHECKSUM: &str = r#"{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":45283.5,"qty":0.20000000}],"asks":[],"checksum":12345,"timestamp":"2023-10-06T17:35:56.000000Z"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_a_session_value_by_value() {
    let ws = MockWs::start(0, |_| {
        let mut steps = vec![expect(BOOK_SUBSCRIBE), expect(r#""event_trigger":"bbo""#)];
        steps.extend(SESSION.lines().filter(|l| !l.is_empty()).map(send));
        steps
    })
    .await;
    let (instruments, id) = table();
    let mut feed =
        Harness::start(Kraken::new(vec![("BTC/USD".into(), id)], 10), &instruments, test_config(ws.url(), None));
    feed.until("the ticker", |h| h.events.iter().any(|e| matches!(e.payload, Payload::Quote(_)))).await;

    let sent = ws.received_on(0);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent[1].contains(r#""channel":"trade""#) && sent[2].contains(r#""event_trigger":"bbo""#));
    let events: Vec<(u64, Payload)> = feed.events.iter().map(|e| (e.ts_event, e.payload.clone())).collect();
    let Payload::BookReset(snapshot) = &events[0].1 else { panic!("{events:?}") };
    assert_eq!(events[0].0, ts("2023-10-06T17:35:55.440295Z"));
    assert_eq!((snapshot.bids.len(), snapshot.asks.len()), (10, 10));
    assert_eq!(snapshot.bids[1], (px("45283.4"), sz("1.54582015")));
    assert_eq!(
        events[1..],
        [
            (
                ts("2023-10-06T17:35:56.000100Z"),
                Payload::Trade(Trade {
                    price: px("45283.5"),
                    size: sz("0.05"),
                    side: Side::Sell,
                    trade_id: 74_112_345
                })
            ),
            (
                ts("2023-10-06T17:35:56.000200Z"),
                Payload::Book(BookDelta { bids: vec![(px("45283.5"), sz("0.05"))], asks: vec![] })
            ),
            (
                ts("2023-10-06T17:35:56.5Z"),
                Payload::Book(BookDelta {
                    // The new best bid pushes the tenth bid out of the subscribed depth.
                    bids: vec![(px("45284.0"), sz("0.2")), (px("45276.6"), Size::ZERO)],
                    asks: vec![(px("45285.2"), Size::ZERO)],
                })
            ),
            (
                ts("2023-10-06T17:35:56.500100Z"),
                Payload::Quote(Quote {
                    bid: px("45284"),
                    bid_size: sz("0.2"),
                    ask: px("45286.4"),
                    ask_size: sz("1.54571953")
                })
            ),
        ]
    );
    let (bids, asks) = feed.engine.l2(id).top(3);
    assert_eq!(bids, [(px("45284"), sz("0.2")), (px("45283.5"), sz("0.05")), (px("45283.4"), sz("1.54582015"))]);
    assert_eq!(asks[0], (px("45286.4"), sz("1.54571953")));
    assert_eq!(feed.engine.l2(id).depth(), (10, 9));
    let view = feed.view();
    assert_eq!((view.messages, view.parse_errors, view.resyncs, view.reconnects), (8, 0, 0, 0));
    feed.stop().await;
}

/// Refused connections, a wrong checksum, a garbled message, a disconnect and a
/// silent stall: reconnect or resubscribe each time, the book withdrawn and rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_checksum_garbage_disconnect_and_stall() {
    let ws = MockWs::start(2, |n| match n {
        2 => vec![
            expect(BOOK_SUBSCRIBE),
            send(VECTOR),
            send(BAD_CHECKSUM),
            expect(r#""method":"unsubscribe","params":{"channel":"book","symbol":["BTC/USD"],"depth":10}"#),
            expect(BOOK_SUBSCRIBE),
            send(VECTOR),
            send(r#"{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":4528"#),
            send(trade(1)),
            Step::Sleep(50),
            Step::Close,
        ],
        3 => vec![expect(BOOK_SUBSCRIBE), send(VECTOR), send(trade(2))],
        _ => vec![expect(BOOK_SUBSCRIBE), send(VECTOR), send(trade(3))],
    })
    .await;
    let (instruments, id) = table();
    let mut feed =
        Harness::start(Kraken::new(vec![("BTC/USD".into(), id)], 10), &instruments, test_config(ws.url(), None));
    feed.until("trade 3", |h| h.trade_ids().last() == Some(&3)).await;

    assert_eq!(feed.trade_ids(), [1, 2, 3]);
    let shape: Vec<bool> = feed.resets().iter().map(|r| r.1 > 0).collect();
    // Full, withdrawn (checksum), full, withdrawn (disconnect), full, withdrawn (stall), full.
    assert_eq!(shape, [true, false, true, false, true, false, true]);
    let (bids, asks) = feed.engine.l2(id).top(10);
    assert_eq!((bids[0], asks[0]), ((px("45283.5"), sz("0.1")), (px("45285.2"), sz("0.001"))));
    assert_eq!(ws.connections.load(Ordering::SeqCst), 5);
    let view = feed.view();
    assert_eq!((view.parse_errors, view.resyncs, view.reconnects), (1, 1, 4), "{view:?}");
    feed.stop().await;
}

/// A venue that never answers a resubscribe: trades keep the connection alive
/// (no stale timeout), but the book would stay withdrawn for good; past the
/// book-sync timeout the connection is replaced and the book comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubscribe_never_answered_replaces_the_connection() {
    let ws = MockWs::start(0, |n| match n {
        0 => {
            let mut steps = vec![
                expect(BOOK_SUBSCRIBE),
                send(VECTOR),
                send(BAD_CHECKSUM),
                expect(r#""method":"unsubscribe""#),
                expect(BOOK_SUBSCRIBE),
            ];
            for id in 1..=60 {
                steps.push(send(trade(id)));
                steps.push(Step::Sleep(50));
            }
            steps
        }
        _ => vec![expect(BOOK_SUBSCRIBE), send(VECTOR), send(trade(1000))],
    })
    .await;
    let (instruments, id) = table();
    let mut config = test_config(ws.url(), None);
    config.book_sync_timeout = Duration::from_millis(600);
    let mut feed = Harness::start(Kraken::new(vec![("BTC/USD".into(), id)], 10), &instruments, config);
    feed.until("trade 1000", |h| h.trade_ids().last() == Some(&1000)).await;

    let shape: Vec<bool> = feed.resets().iter().map(|r| r.1 > 0).collect();
    assert_eq!(shape, [true, false, true], "full, withdrawn (checksum), full again on the new connection");
    let live_trades = feed.trade_ids().iter().filter(|&&t| t < 1000).count();
    assert!((5..60).contains(&live_trades), "trades flowed while the book waited: {live_trades}");
    assert_eq!(ws.connections.load(Ordering::SeqCst), 2);
    assert_eq!(feed.view().reconnects, 1);
    feed.stop().await;
}

/// End to end: a client of the gateway holding the Kraken book gets
/// `book_invalidated` and a fresh snapshot when the checksum fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_see_book_invalidated_then_a_fresh_snapshot() {
    let ws = MockWs::start(0, |_| {
        vec![
            expect(BOOK_SUBSCRIBE),
            send(VECTOR),
            Step::Sleep(700),
            send(BAD_CHECKSUM),
            expect(r#""method":"unsubscribe""#),
            expect(BOOK_SUBSCRIBE),
            send(VECTOR),
        ]
    })
    .await;
    let url = ws.url();
    let server =
        common::start(&["--feed", "kraken:BTC/USD", "--kraken-ws-url", &url, "--venue-reference", "off"]).await;
    let mut client = common::Client::connect(server.addr).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.subscribe(&["book"], &["kraken:BTC-USD"]).await;
    let first = client.until_type("snapshot").await;
    assert_eq!(first["data"]["bids"][0], serde_json::json!(["45283.50000000", "0.10000000"]), "{first}");
    let invalidated = client.until_type("book_invalidated").await;
    assert_eq!(invalidated["symbol"], "kraken:BTC-USD");
    // The withdrawn (empty) book first, then, after the resubscribe, the fresh one.
    let mut fresh = client.until_type("snapshot").await;
    if fresh["data"]["bids"].as_array().is_some_and(|b| b.is_empty()) {
        client.until_type("book_invalidated").await;
        fresh = client.until_type("snapshot").await;
    }
    assert_eq!(fresh["data"]["bids"][0], serde_json::json!(["45283.50000000", "0.10000000"]), "{fresh}");
    assert!(fresh["seq"].as_u64() > first["seq"].as_u64());
    let (_, feeds) = common::get_json(server.addr, "/v1/feeds").await;
    let kraken = &feeds["feeds"][0];
    assert_eq!(
        (kraken["name"].as_str(), kraken["resyncs"].as_u64(), kraken["state"].as_str()),
        (Some("kraken"), Some(1), Some("live")),
        "{feeds}"
    );
    server.shutdown().await;
}

/// A Kraken connection that goes silent without closing is detected by
/// Kraken's own heartbeat cadence (no frame for 3 s), not the 30 s it took with
/// one global limit: clients see `book_invalidated` within seconds, then the
/// book again from the new connection; `/v1/feeds` names the limit and the
/// feed's instruments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stall_is_caught_by_krakens_heartbeat_cadence() {
    let ws = MockWs::start(0, |n| match n {
        // The first connection stalls after its snapshot: open, and silent.
        0 => vec![expect(BOOK_SUBSCRIBE), send(VECTOR)],
        _ => vec![expect(BOOK_SUBSCRIBE), send(VECTOR), send(r#"{"channel":"heartbeat"}"#), Step::Sleep(60_000)],
    })
    .await;
    let url = ws.url();
    let server =
        common::start(&["--feed", "kraken:BTC/USD", "--kraken-ws-url", &url, "--venue-reference", "off"]).await;
    let (_, feeds) = common::get_json(server.addr, "/v1/feeds").await;
    let kraken = &feeds["feeds"][0];
    assert_eq!(kraken["stale_limit_ms"], 3000, "{feeds}");
    assert_eq!(kraken["instruments"], serde_json::json!(["kraken:BTC-USD"]), "{feeds}");
    let mut client = common::Client::connect(server.addr).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.subscribe(&["book"], &["kraken:BTC-USD"]).await;
    let first = client.until_type("snapshot").await;
    assert!(!first["data"]["bids"].as_array().unwrap().is_empty(), "{first}");
    let since = std::time::Instant::now();
    let deadline = since + Duration::from_secs(10);
    let invalidated = loop {
        assert!(std::time::Instant::now() < deadline, "the stall was not noticed within 10 s");
        match client.next(Duration::from_millis(500)).await {
            Some(common::Received::Json(m)) if m["type"] == "book_invalidated" => break m,
            _ => {}
        }
    };
    let noticed = since.elapsed();
    assert_eq!(invalidated["symbol"], "kraken:BTC-USD");
    assert!(noticed >= Duration::from_millis(2500), "not before the limit: {noticed:?}");
    assert!(noticed < Duration::from_secs(8), "noticed after {noticed:?}, where the venue's limit is 3 s");
    // The new connection brings the book back.
    loop {
        let snapshot = client.until_type("snapshot").await;
        if snapshot["data"]["bids"].as_array().is_some_and(|b| !b.is_empty()) {
            break;
        }
    }
    assert!(ws.connections.load(Ordering::SeqCst) >= 2);
    server.shutdown().await;
}
