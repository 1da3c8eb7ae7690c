//! The Binance connector against a local Binance: combined streams over WebSocket,
//! depth snapshots over REST, replayed in Binance's documented formats.

mod venues;

use std::sync::atomic::Ordering;

use tickwire::feed::binance::Binance;
use tickwire::feed::venue_instrument;
use tickwire::model::{BookDelta, Event, InstrumentId, Instruments, Payload, Price, Quote, Side, Size, Trade};
use venues::{Harness, MockRest, MockWs, Step, expect, send, test_config};

const SESSION: &str = include_str!("fixtures/binance/session.jsonl");
const SNAPSHOT: &str = include_str!("fixtures/binance/depth_snapshot.json");
const E: u64 = 1_714_564_800_000;

fn table() -> (Instruments, InstrumentId) {
    let mut instruments = Instruments::new();
    let id = instruments.add(venue_instrument("binance:BTC-USDT".into(), "binance")).unwrap();
    (instruments, id)
}

fn replay(lines: &str) -> Vec<Step> {
    lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match l.strip_prefix("SLEEP ") {
            Some(ms) => Step::Sleep(ms.trim().parse().unwrap()),
            None => send(l),
        })
        .collect()
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

fn depth(first: u64, last: u64, bids: &[(&str, &str)], asks: &[(&str, &str)]) -> String {
    let side = |l: &[(&str, &str)]| l.iter().map(|(p, q)| format!(r#"["{p}","{q}"]"#)).collect::<Vec<_>>().join(",");
    format!(
        r#"{{"stream":"btcusdt@depth@100ms","data":{{"e":"depthUpdate","E":{E},"s":"BTCUSDT","U":{first},"u":{last},"b":[{}],"a":[{}]}}}}"#,
        side(bids),
        side(asks)
    )
}

fn trade(id: u64) -> String {
    format!(
        r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{E},"s":"BTCUSDT","t":{id},"p":"64000.00000000","q":"0.01000000","T":{E},"m":false,"M":true}}}}"#
    )
}

fn snapshot(last_update_id: u64, bid: &str) -> String {
    format!(
        r#"{{"lastUpdateId":{last_update_id},"bids":[["{bid}","1.00000000"]],"asks":[["70000.00000000","1.00000000"]]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_a_session_value_by_value() {
    let ws = MockWs::start(0, |_| {
        let mut steps = vec![expect("SUBSCRIBE")];
        steps.extend(replay(SESSION));
        steps
    })
    .await;
    let rest = MockRest::start(|_, _| (200, SNAPSHOT.to_owned())).await;
    let (instruments, id) = table();
    let venue = Binance::new(vec![("BTCUSDT".into(), id)]);
    let mut feed = Harness::start(venue, &instruments, test_config(format!("{}/stream", ws.url()), Some(rest.url())));
    feed.until("the whole session", |h| h.trade_ids().len() == 2).await;

    assert_eq!(
        ws.received_on(0),
        [r#"{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@bookTicker","btcusdt@depth@100ms"],"id":1}"#]
    );
    assert_eq!(rest.requests.lock().clone(), ["/api/v3/depth?symbol=BTCUSDT&limit=1000"]);
    let events: Vec<(u64, Payload)> = feed.events.iter().map(|e| (e.ts_event, e.payload.clone())).collect();
    let recv = |i: usize| feed.events[i].ts_recv;
    assert_eq!(
        events,
        [
            (
                ms(E + 100),
                Payload::BookReset(BookDelta {
                    bids: vec![(px("64000"), sz("1.5")), (px("63999.9"), sz("2")), (px("63999"), sz("5"))],
                    asks: vec![(px("64000.2"), sz("0.5")), (px("64001"), sz("3"))],
                })
            ),
            (
                ms(E + 150),
                Payload::Trade(Trade { price: px("64000.1"), size: sz("0.25"), side: Side::Buy, trade_id: 5001 })
            ),
            (
                recv(2),
                Payload::Quote(Quote {
                    bid: px("64000"),
                    bid_size: sz("1.5"),
                    ask: px("64000.2"),
                    ask_size: sz("0.3")
                })
            ),
            (
                ms(E + 200),
                Payload::Book(BookDelta {
                    bids: vec![(px("63999.9"), Size::ZERO)],
                    asks: vec![(px("64000.2"), sz("0.3"))]
                })
            ),
            (
                ms(E + 250),
                Payload::Trade(Trade { price: px("64000"), size: sz("0.1"), side: Side::Sell, trade_id: 5002 })
            ),
        ]
    );
    assert!(feed.events.iter().all(|e: &Event| e.instrument == id && e.ts_recv > 0 && e.seq > 0));
    let (bids, asks) = feed.engine.l2(id).top(10);
    assert_eq!(bids, [(px("64000"), sz("1.5")), (px("63999"), sz("5"))]);
    assert_eq!(asks, [(px("64000.2"), sz("0.3")), (px("64001"), sz("3"))]);
    let view = feed.view();
    assert_eq!((view.state, view.messages, view.parse_errors, view.resyncs, view.reconnects), ("live", 7, 0, 0, 0));
    feed.stop().await;
}

/// A sequence gap, a garbled message, a disconnect mid-stream and a silent stall:
/// each ends in a resync or a reconnect, the book is withdrawn and rebuilt from a
/// fresh snapshot each time, and the counters say what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_garbage_disconnect_and_stall() {
    let ws = MockWs::start(0, |n| match n {
        0 => vec![
            expect("SUBSCRIBE"),
            send(depth(99, 100, &[], &[])),
            Step::Sleep(200),
            send(depth(101, 101, &[("60001.00000000", "2.00000000")], &[])),
            send(r#"{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":102,"u":104,"b":[["6"#),
            send(depth(105, 106, &[], &[])),
            Step::Sleep(200),
            send(depth(107, 107, &[("60002.00000000", "3.00000000")], &[])),
            send(trade(1)),
            Step::Sleep(50),
            Step::Close,
        ],
        1 => vec![expect("SUBSCRIBE"), send(depth(200, 201, &[], &[])), Step::Sleep(200), send(trade(2))],
        _ => vec![expect("SUBSCRIBE"), send(trade(3)), send(depth(300, 300, &[], &[]))],
    })
    .await;
    let rest = MockRest::start(|n, _| {
        let (id, bid) =
            [(100, "60000.00000000"), (106, "61000.00000000"), (201, "62000.00000000"), (300, "63000.00000000")]
                [n.min(3)];
        (200, snapshot(id, bid))
    })
    .await;
    let (instruments, id) = table();
    let venue = Binance::new(vec![("BTCUSDT".into(), id)]);
    let mut feed = Harness::start(venue, &instruments, test_config(format!("{}/stream", ws.url()), Some(rest.url())));
    feed.until("the fourth snapshot", |h| h.resets().iter().filter(|r| r.1 > 0).count() == 4).await;

    assert_eq!(feed.trade_ids(), [1, 2, 3]);
    // Full book, withdrawn (gap), full, withdrawn (disconnect), full, withdrawn (stall), full.
    let shape: Vec<bool> = feed.resets().iter().map(|r| r.1 > 0).collect();
    assert_eq!(shape, [true, false, true, false, true, false, true]);
    let first_reset = feed.events.iter().find_map(|e| match &e.payload {
        Payload::BookReset(d) if !d.bids.is_empty() => Some(d.clone()),
        _ => None,
    });
    assert_eq!(first_reset.unwrap().bids, [(px("60000"), sz("1"))], "diffs up to the snapshot id are dropped");
    let (bids, asks) = feed.engine.l2(id).top(10);
    assert_eq!(
        (bids, asks),
        (vec![(px("63000"), sz("1"))], vec![(px("70000"), sz("1"))]),
        "the book is the last snapshot"
    );
    assert_eq!(rest.requests.lock().len(), 4);
    assert_eq!(ws.connections.load(Ordering::SeqCst), 3);
    let view = feed.view();
    assert_eq!((view.parse_errors, view.resyncs, view.reconnects), (1, 1, 2), "{view:?}");
    assert_eq!(view.state, "live");
    feed.stop().await;
}

/// Binance's `serverShutdown` notice: the connector opens a replacement, switches,
/// and drops what both connections delivered: every trade once, no book reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_disconnect_leaves_no_hole() {
    fn diff(k: u64) -> String {
        let price = format!("{}.00000000", 60_000 - k);
        depth(k, k, &[(&price, "1.00000000")], &[])
    }
    let ws = MockWs::start(0, |n| {
        let mut steps = vec![expect("SUBSCRIBE")];
        if n == 0 {
            steps.extend([send(depth(9, 10, &[], &[])), Step::Sleep(200), send(trade(1)), send(trade(2))]);
            steps.push(send(r#"{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}"#));
            for k in 3..=6u64 {
                steps.extend([send(diff(8 + k)), send(trade(k)), Step::Sleep(50)]);
            }
            steps.push(Step::Close);
        } else {
            for k in 4..=9u64 {
                steps.extend([send(diff(8 + k)), send(trade(k)), Step::Sleep(30)]);
            }
        }
        steps
    })
    .await;
    let rest = MockRest::start(|_, _| (200, snapshot(10, "50000.00000000"))).await;
    let (instruments, id) = table();
    let venue = Binance::new(vec![("BTCUSDT".into(), id)]);
    let mut feed = Harness::start(venue, &instruments, test_config(format!("{}/stream", ws.url()), Some(rest.url())));
    feed.until("trade 9", |h| h.trade_ids().last() == Some(&9)).await;

    assert_eq!(feed.trade_ids(), (1..=9).collect::<Vec<_>>());
    assert_eq!(feed.resets(), [(id, 2)], "one snapshot, never withdrawn");
    let (bids, _) = feed.engine.l2(id).top(20);
    let expected: Vec<(Price, Size)> =
        (11..=17u64).map(|k| (Price::from_units(60_000 - k as i64), sz("1"))).chain([(px("50000"), sz("1"))]).collect();
    assert_eq!(bids, expected, "every diff applied once, in order");
    assert_eq!(ws.connections.load(Ordering::SeqCst), 2);
    let view = feed.view();
    assert_eq!((view.reconnects, view.resyncs, view.parse_errors), (0, 0, 0), "{view:?}");
    feed.stop().await;
}
