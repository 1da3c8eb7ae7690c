//! The OKX v5 connector against a local OKX: `books` with sequence ids and CRC32
//! checksums, trades and tickers in OKX's documented format; the `ping` a quiet
//! connection needs; and the whole gateway showing a client the exact book after
//! each fault: a sequence gap, a checksum mismatch, garbage, a disconnect and a
//! silent stall.

mod common;
mod venues;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;
use tickwire::feed::okx::{Level, Okx, OkxBook};
use tickwire::feed::venue_instrument;
use tickwire::model::{BookDelta, InstrumentId, Instruments, Payload, Price, Quote, Side, Size, Trade, format_decimal};
use venues::{Harness, MockRest, MockWs, Step, expect, send, test_config};

const SESSION: &str = include_str!("fixtures/okx/session.jsonl");
const BOOKS_SUBSCRIBE: &str = r#"{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}"#;
const BOOKS_UNSUBSCRIBE: &str = r#"{"op":"unsubscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}"#;
const TRADES_SUBSCRIBE: &str = r#"{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}"#;
const TICKERS_SUBSCRIBE: &str = r#"{"op":"subscribe","args":[{"channel":"tickers","instId":"BTC-USDT"}]}"#;

fn table() -> (Instruments, InstrumentId) {
    let mut instruments = Instruments::new();
    let id = instruments.add(venue_instrument("okx:BTC-USDT".into(), "okx")).unwrap();
    (instruments, id)
}

fn px(text: &str) -> Price {
    Price::parse(text).unwrap()
}
fn sz(text: &str) -> Size {
    Size::parse(text).unwrap()
}
fn ms(ms: u64) -> u64 {
    ms * 1_000_000
}

/// A scripted OKX's side of one instrument's book: it writes `books` messages
/// whose checksum is the CRC32 of the book they leave (or a wrong one).
#[derive(Default)]
struct Books {
    book: OkxBook,
}

type Levels<'a> = &'a [(&'a str, &'a str)];

impl Books {
    fn message(action: &str, prev: i64, seq: i64, bids: Levels<'_>, asks: Levels<'_>, checksum: i32) -> String {
        let side =
            |l: Levels<'_>| l.iter().map(|(p, s)| format!(r#"["{p}","{s}","0","1"]"#)).collect::<Vec<_>>().join(",");
        format!(
            r#"{{"arg":{{"channel":"books","instId":"BTC-USDT"}},"action":"{action}","data":[{{"asks":[{}],"bids":[{}],"ts":"1597026383085","checksum":{checksum},"prevSeqId":{prev},"seqId":{seq}}}]}}"#,
            side(asks),
            side(bids)
        )
    }

    fn apply(&mut self, bids: Levels<'_>, asks: Levels<'_>) -> i32 {
        let parse = |l: Levels<'_>| l.iter().map(|(p, s)| Level::parse(p, s).unwrap()).collect::<Vec<_>>();
        self.book.apply(&parse(bids), &parse(asks), None).expect("a scripted book never crosses");
        self.book.checksum()
    }

    fn snapshot(&mut self, seq: i64, bids: Levels<'_>, asks: Levels<'_>) -> String {
        self.book.clear();
        let checksum = self.apply(bids, asks);
        Self::message("snapshot", -1, seq, bids, asks, checksum)
    }

    fn update(&mut self, prev: i64, seq: i64, bids: Levels<'_>, asks: Levels<'_>) -> String {
        let checksum = self.apply(bids, asks);
        Self::message("update", prev, seq, bids, asks, checksum)
    }
}

fn session_steps() -> Vec<Step> {
    let mut steps = vec![expect(TICKERS_SUBSCRIBE)];
    steps.extend(SESSION.lines().filter(|l| !l.trim().is_empty()).map(send));
    steps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_a_session_value_by_value() {
    let ws = MockWs::start(0, |_| session_steps()).await;
    let (instruments, id) = table();
    let mut feed = Harness::start(Okx::new(vec![("BTC-USDT".into(), id)]), &instruments, test_config(ws.url(), None));
    feed.until("the ticker", |h| h.events.iter().any(|e| matches!(e.payload, Payload::Quote(_)))).await;

    // Three subscribes, then (were the test slow) only keepalive pings.
    let sent = ws.received_on(0);
    assert_eq!(sent[..3], [BOOKS_SUBSCRIBE, TRADES_SUBSCRIBE, TICKERS_SUBSCRIBE]);
    assert!(sent[3..].iter().all(|m| m == "ping"), "{sent:?}");
    let events: Vec<(u64, Payload)> = feed.events.iter().map(|e| (e.ts_event, e.payload.clone())).collect();
    let Payload::BookReset(snapshot) = &events[0].1 else { panic!("{events:?}") };
    assert_eq!(events[0].0, ms(1_597_026_383_085));
    assert_eq!((snapshot.bids.len(), snapshot.asks.len()), (8, 8));
    assert_eq!(snapshot.bids[0], (px("8476.97"), sz("256")));
    assert_eq!(snapshot.asks[0], (px("8476.98"), sz("415")));
    assert_eq!(
        events[1..],
        [
            (
                ms(1_630_048_897_897),
                Payload::Trade(Trade {
                    price: px("42219.9"),
                    size: sz("0.12060306"),
                    side: Side::Buy,
                    trade_id: 130_639_474
                })
            ),
            (
                ms(1_597_026_383_185),
                Payload::Book(BookDelta {
                    bids: vec![(px("8476.97"), sz("200")), (px("8475.55"), Size::ZERO)],
                    asks: vec![(px("8476.99"), sz("3"))],
                })
            ),
            // The no-change heartbeat passes its sequence check and emits nothing.
            (ms(1_597_026_443_285), Payload::Book(BookDelta { bids: vec![], asks: vec![(px("8476.98"), Size::ZERO)] })),
            (
                ms(1_597_026_383_085),
                Payload::Quote(Quote { bid: px("8888.88"), bid_size: sz("5"), ask: px("9999.99"), ask_size: sz("11") })
            ),
        ]
    );
    let (bids, asks) = feed.engine.l2(id).top(3);
    assert_eq!(bids, [(px("8476.97"), sz("200")), (px("8475.54"), sz("100")), (px("8475.3"), sz("1"))]);
    assert_eq!(asks, [(px("8476.99"), sz("3")), (px("8477"), sz("7")), (px("8477.34"), sz("85"))]);
    assert_eq!(feed.engine.l2(id).depth(), (7, 8));
    let view = feed.view();
    // Ten frames, the `pong` among them; none unparsable.
    assert_eq!((view.messages, view.parse_errors, view.resyncs, view.reconnects), (10, 0, 0, 0));
    feed.stop().await;
}

/// OKX closes a connection it has pushed nothing on for 30 s unless the client
/// pings: a quiet connection is pinged (here after two thirds of the 400 ms
/// stale limit) and lives on while the pongs come; once they stop it is
/// replaced, its book withdrawn and rebuilt from the new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_connection_is_pinged_and_a_silent_one_replaced() {
    let ws = MockWs::start(0, |n| {
        let mut books = Books::default();
        let mut steps = vec![expect(TICKERS_SUBSCRIBE), send(books.snapshot(10, &[("100.5", "1")], &[("100.6", "1")]))];
        if n == 0 {
            for _ in 0..6 {
                steps.extend([expect("ping"), send("pong")]);
            }
        }
        steps
    })
    .await;
    let (instruments, id) = table();
    let started = Instant::now();
    let mut feed = Harness::start(Okx::new(vec![("BTC-USDT".into(), id)]), &instruments, test_config(ws.url(), None));
    feed.until("the book from a second connection", |h| h.resets().len() == 3).await;

    let lived = started.elapsed();
    let shape: Vec<bool> = feed.resets().iter().map(|r| r.1 > 0).collect();
    assert_eq!(shape, [true, false, true], "full, withdrawn (stalled), full again");
    let pings = ws.received_on(0).iter().filter(|m| *m == "ping").count();
    assert!(pings >= 7, "six answered pings and at least one unanswered: {pings}");
    assert!(lived > Duration::from_millis(6 * 266), "the pongs kept the connection past its 400 ms limit: {lived:?}");
    assert_eq!(ws.connections.load(Ordering::SeqCst), 2);
    let view = feed.view();
    assert_eq!((view.parse_errors, view.resyncs, view.reconnects), (0, 0, 1), "{view:?}");
    feed.stop().await;
}

/// What a client of the gateway holds of one book, as it sees it.
#[derive(Debug, Default)]
struct ClientBook {
    bids: Vec<(String, String)>,
    asks: Vec<(String, String)>,
    invalidations: usize,
    /// Decimals of prices and sizes: the venue's tick and lot.
    decimals: (u8, u8),
}

impl ClientBook {
    fn set(side: &mut Vec<(String, String)>, levels: &Value, descending: bool) {
        for level in levels.as_array().expect("levels") {
            let (price, size) = (level[0].as_str().unwrap().to_owned(), level[1].as_str().unwrap().to_owned());
            side.retain(|(p, _)| px(p) != px(&price));
            if !sz(&size).is_zero() {
                side.push((price, size));
            }
        }
        side.sort_by_key(|(p, _)| px(p));
        if descending {
            side.reverse();
        }
    }

    fn take(&mut self, message: &Value) {
        match message["type"].as_str() {
            Some("snapshot") if message["channel"] == "book" => {
                self.bids.clear();
                self.asks.clear();
                Self::set(&mut self.bids, &message["data"]["bids"], true);
                Self::set(&mut self.asks, &message["data"]["asks"], false);
            }
            Some("batch") => {
                for update in message["updates"].as_array().unwrap().iter().filter(|u| u["channel"] == "book") {
                    Self::set(&mut self.bids, &update["bids"], true);
                    Self::set(&mut self.asks, &update["asks"], false);
                }
            }
            Some("book_invalidated") => self.invalidations += 1,
            _ => {}
        }
    }

    /// Whether the client holds exactly the venue's `[bids, asks]`, as the
    /// gateway writes them (with the venue's decimals).
    fn is(&self, book: [Levels<'_>; 2]) -> bool {
        let (price_decimals, size_decimals) = self.decimals;
        let written = |l: Levels<'_>| {
            l.iter()
                .map(|(p, s)| (format_decimal(px(p).0, price_decimals), format_decimal(sz(s).0, size_decimals)))
                .collect::<Vec<_>>()
        };
        self.bids == written(book[0]) && self.asks == written(book[1])
    }

    /// Reads until the client holds exactly this book (10 s at most); returns
    /// how many `book_invalidated` came on the way.
    async fn until(&mut self, client: &mut common::Client, what: &str, book: [Levels<'_>; 2]) -> usize {
        let before = self.invalidations;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.is(book) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match client.next(left).await {
                Some(common::Received::Json(message)) => self.take(&message),
                other => panic!("waiting for {what}: got {other:?}; the client holds {self:?}"),
            }
        }
        self.invalidations - before
    }
}

/// End to end: the real gateway, a client subscribed to the book (by OKX's own
/// spelling, `BTC-USDT`), and a local OKX that goes through every fault. After
/// each, the client holds exactly the venue's book again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_see_the_exact_book_after_each_fault() {
    const A: [Levels<'static>; 2] = [&[("100.5", "1"), ("100.4", "2")], &[("100.6", "1"), ("100.7", "3")]];
    const B: [Levels<'static>; 2] = [&[("101.5", "1")], &[("101.6", "2")]];
    const C: [Levels<'static>; 2] = [&[("102.5", "1")], &[("102.6", "2"), ("102.9", "5")]];
    const D: [Levels<'static>; 2] = [&[("103.5", "1")], &[("103.6", "2")]];
    const E: [Levels<'static>; 2] = [&[("104.5", "1")], &[("104.6", "2")]];
    let ws = MockWs::start(0, |n| {
        let mut books = Books::default();
        let mut steps = vec![expect(TICKERS_SUBSCRIBE)];
        match n {
            0 => {
                steps.push(send(books.snapshot(10, A[0], A[1])));
                // Time for the client to subscribe.
                steps.push(Step::Sleep(1_000));
                // A lost message: prevSeqId 11 is not the last seqId, 10.
                let mut lost = Books { book: books.book.clone() };
                steps.push(send(lost.update(11, 12, &[("100.4", "0")], &[])));
                steps.extend([expect(BOOKS_UNSUBSCRIBE), expect(BOOKS_SUBSCRIBE)]);
                steps.push(send(books.snapshot(20, B[0], B[1])));
                steps.push(Step::Sleep(300));
                // A checksum mismatch.
                steps.push(send(Books::message("update", 20, 21, &[("101.4", "1")], &[], 12345)));
                steps.extend([expect(BOOKS_UNSUBSCRIBE), expect(BOOKS_SUBSCRIBE)]);
                steps.push(send(books.snapshot(30, C[0], C[1])));
                steps.push(Step::Sleep(300));
                // Garbage: skipped, counted, and the book carries on.
                steps.push(send(
                    r#"{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"asks":[["10"#,
                ));
                steps.push(send(books.update(30, 31, &[("102.4", "7")], &[("102.9", "0")])));
                steps.push(Step::Sleep(300));
                // A disconnect.
                steps.push(Step::Close);
            }
            // A silent stall: open, and no answer to pings.
            1 => steps.push(send(books.snapshot(40, D[0], D[1]))),
            _ => {
                steps.push(send(books.snapshot(50, E[0], E[1])));
                for _ in 0..50 {
                    steps.extend([expect("ping"), send("pong")]);
                }
            }
        }
        steps
    })
    .await;
    // OKX's reference data for the pair: tick 0.1, lot 0.0001.
    let rest = MockRest::start(|_, path| {
        assert_eq!(path, "/api/v5/public/instruments?instType=SPOT&instId=BTC-USDT");
        (200, include_str!("fixtures/reference/okx_instruments.json").to_owned())
    })
    .await;
    let (url, rest_url) = (ws.url(), rest.url());
    let server = common::start(&[
        "--feed",
        "okx:BTC-USDT",
        "--okx-ws-url",
        &url,
        "--okx-rest-url",
        &rest_url,
        "--feed-stale-ms",
        "2000",
        "--feed-backoff-initial-ms",
        "50",
    ])
    .await;
    let mut client = common::Client::connect(server.addr).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.subscribe(&["book"], &["BTC-USDT"]).await;
    let mut book = ClientBook { decimals: (1, 4), ..ClientBook::default() };
    assert_eq!(book.until(&mut client, "the first snapshot", A).await, 0);
    // With OKX's decimals, not 1e-8's.
    assert_eq!(book.bids[0], ("100.5".to_owned(), "1.0000".to_owned()), "as written: {book:?}");
    // Each book reset reaches a client as `book_invalidated` and a snapshot: one
    // for the withdrawal (an empty book), one for the fresh book.
    // Sequence gap: withdrawn, then the resubscribed snapshot.
    assert_eq!(book.until(&mut client, "the book after the gap", B).await, 2);
    // Checksum mismatch: the same.
    assert_eq!(book.until(&mut client, "the book after the checksum mismatch", C).await, 2);
    // Garbage: no withdrawal; the next update applies on top.
    let after_garbage: [Levels<'_>; 2] = [&[("102.5", "1"), ("102.4", "7")], &[("102.6", "2")]];
    assert_eq!(book.until(&mut client, "the update after the garbage", after_garbage).await, 0);
    // Disconnect: withdrawn, then the new connection's snapshot.
    assert_eq!(book.until(&mut client, "the book of the second connection", D).await, 2);
    // Silent stall: withdrawn within the stale limit, then the third connection's.
    let stalled_from = Instant::now();
    let invalidated = loop {
        match client.next(Duration::from_secs(10)).await {
            Some(common::Received::Json(m)) if m["type"] == "book_invalidated" => break stalled_from.elapsed(),
            Some(common::Received::Json(m)) => book.take(&m),
            other => panic!("the stall was not noticed: {other:?}"),
        }
    };
    assert!(invalidated >= Duration::from_millis(1_500), "not before the limit: {invalidated:?}");
    assert!(invalidated < Duration::from_millis(4_500), "noticed after {invalidated:?}, where the limit is 2 s");
    assert_eq!(book.until(&mut client, "the book of the third connection", E).await, 1);

    assert_eq!(ws.connections.load(Ordering::SeqCst), 3);
    let sent = ws.received_on(0);
    let resubscribes: Vec<&String> = sent.iter().filter(|m| m.contains("\"books\"")).collect();
    assert_eq!(
        resubscribes,
        [BOOKS_SUBSCRIBE, BOOKS_UNSUBSCRIBE, BOOKS_SUBSCRIBE, BOOKS_UNSUBSCRIBE, BOOKS_SUBSCRIBE],
        "{sent:?}"
    );
    assert!(ws.received_on(1).iter().any(|m| m == "ping"), "the stalled connection was pinged first");
    let (_, feeds) = common::get_json(server.addr, "/v1/feeds").await;
    let okx = &feeds["feeds"][0];
    assert_eq!(
        (
            &okx["name"],
            &okx["state"],
            &okx["resyncs"],
            &okx["parse_errors"],
            &okx["reconnects"],
            &okx["stale_limit_ms"]
        ),
        (
            &Value::from("okx"),
            &Value::from("live"),
            &Value::from(2),
            &Value::from(1),
            &Value::from(2),
            &Value::from(2000)
        ),
        "{feeds}"
    );
    server.shutdown().await;
}

/// Registered like the other venues: `okx:` symbols, the venue's spellings as
/// aliases, OKX's own stale limit unless overridden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_with_its_symbols_spellings_and_limit() {
    let ws = MockWs::start(0, |_| {
        let mut books = Books::default();
        vec![expect(r#""channel":"tickers""#), send(books.snapshot(10, &[("100.5", "1")], &[("100.6", "1")]))]
    })
    .await;
    let url = ws.url();
    let server =
        common::start(&["--feed", "okx:btc-usdt,ETH/USDT", "--okx-ws-url", &url, "--venue-reference", "off"]).await;
    let (_, feeds) = common::get_json(server.addr, "/v1/feeds").await;
    let okx = &feeds["feeds"][0];
    assert_eq!(okx["stale_limit_ms"], 30_000, "{feeds}");
    assert_eq!(okx["instruments"], serde_json::json!(["okx:BTC-USDT", "okx:ETH-USDT"]), "{feeds}");
    let mut client = common::Client::connect(server.addr).await;
    client.subscribe(&["book"], &["btc-usdt", "okx:ETH-USDT"]).await;
    let ack = client.until_type("subscribed").await;
    assert_eq!(ack["symbols"], serde_json::json!(["okx:BTC-USDT", "okx:ETH-USDT"]), "{ack}");
    assert_eq!(ack["aliases"], serde_json::json!({"btc-usdt": "okx:BTC-USDT"}), "{ack}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ws.received_on(0)[..3],
        [
            r#"{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"},{"channel":"books","instId":"ETH-USDT"}]}"#,
            r#"{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"},{"channel":"trades","instId":"ETH-USDT"}]}"#,
            r#"{"op":"subscribe","args":[{"channel":"tickers","instId":"BTC-USDT"},{"channel":"tickers","instId":"ETH-USDT"}]}"#,
        ]
    );
    server.shutdown().await;
}
