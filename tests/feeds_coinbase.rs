//! The Coinbase Advanced Trade connector against a local Coinbase: level2,
//! market_trades, ticker and heartbeats replayed in the documented format, a
//! sequence gap and a disconnect.

mod venues;

use std::sync::atomic::Ordering;

use tickwire::feed::coinbase::Coinbase;
use tickwire::feed::venue_instrument;
use tickwire::feed::wire::parse_rfc3339_nanos;
use tickwire::model::{BookDelta, InstrumentId, Instruments, Payload, Price, Quote, Side, Size, Trade};
use venues::{Harness, MockWs, Step, expect, send, test_config};

const SESSION: &str = include_str!("fixtures/coinbase/session.jsonl");

fn table() -> (Instruments, InstrumentId) {
    let mut instruments = Instruments::new();
    let id = instruments.add(venue_instrument("coinbase:BTC-USD".into(), "coinbase")).unwrap();
    (instruments, id)
}

fn px(text: &str) -> Price {
    Price::parse(text).unwrap()
}
fn sz(text: &str) -> Size {
    Size::parse(text).unwrap()
}
fn ts(text: &str) -> u64 {
    parse_rfc3339_nanos(text).unwrap()
}

fn session_steps() -> Vec<Step> {
    let mut steps = vec![expect(r#""channel":"heartbeats""#), expect(r#""channel":"ticker""#)];
    steps.extend(SESSION.lines().filter(|l| !l.is_empty()).map(send));
    steps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_a_session_value_by_value() {
    let ws = MockWs::start(0, |_| session_steps()).await;
    let (instruments, id) = table();
    let mut feed =
        Harness::start(Coinbase::new(vec![("BTC-USD".into(), id)]), &instruments, test_config(ws.url(), None));
    feed.until("the ticker", |h| h.events.iter().any(|e| matches!(e.payload, Payload::Quote(_)))).await;

    assert_eq!(
        ws.received_on(0),
        [
            r#"{"type":"subscribe","channel":"heartbeats"}"#,
            r#"{"type":"subscribe","product_ids":["BTC-USD"],"channel":"level2"}"#,
            r#"{"type":"subscribe","product_ids":["BTC-USD"],"channel":"market_trades"}"#,
            r#"{"type":"subscribe","product_ids":["BTC-USD"],"channel":"ticker"}"#,
        ]
    );
    let events: Vec<(u64, Payload)> = feed.events.iter().map(|e| (e.ts_event, e.payload.clone())).collect();
    assert_eq!(
        events,
        [
            (
                ts("2024-05-01T12:00:00.199Z"),
                Payload::BookReset(BookDelta {
                    bids: vec![(px("63211.50"), sz("0.41")), (px("63211.00"), sz("1.2"))],
                    asks: vec![(px("63211.51"), sz("0.0215")), (px("63212.00"), sz("0.75"))],
                })
            ),
            // The trades snapshot lists the newest first; they come out in id order.
            (
                ts("2024-05-01T12:00:00.050Z"),
                Payload::Trade(Trade {
                    price: px("63211.51"),
                    size: sz("0.02"),
                    side: Side::Buy,
                    trade_id: 631_112_231
                })
            ),
            (
                ts("2024-05-01T12:00:00.100Z"),
                Payload::Trade(Trade {
                    price: px("63211.50"),
                    size: sz("0.01"),
                    side: Side::Sell,
                    trade_id: 631_112_232
                })
            ),
            (
                ts("2024-05-01T12:00:00.298Z"),
                Payload::Book(BookDelta {
                    bids: vec![(px("63211.50"), Size::ZERO)],
                    asks: vec![(px("63211.90"), sz("0.33"))]
                })
            ),
            (
                ts("2024-05-01T12:00:00.398Z"),
                Payload::Trade(Trade {
                    price: px("63211.51"),
                    size: sz("0.0025"),
                    side: Side::Buy,
                    trade_id: 631_112_233
                })
            ),
            (
                ts("2024-05-01T12:00:00.5Z"),
                Payload::Quote(Quote {
                    bid: px("63211.00"),
                    bid_size: sz("1.2"),
                    ask: px("63211.51"),
                    ask_size: sz("0.0215")
                })
            ),
        ]
    );
    let (bids, asks) = feed.engine.l2(id).top(10);
    assert_eq!(bids, [(px("63211.00"), sz("1.2"))]);
    assert_eq!(asks, [(px("63211.51"), sz("0.0215")), (px("63211.90"), sz("0.33")), (px("63212.00"), sz("0.75"))]);
    let view = feed.view();
    assert_eq!((view.messages, view.parse_errors, view.resyncs, view.reconnects), (7, 0, 0, 0));
    feed.stop().await;
}

/// A lost message (sequence_num jumps) withdraws the book and resubscribes level2;
/// a disconnect reconnects; the trades snapshot on the new connection fills the
/// hole without repeating what was seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_gap_and_disconnect() {
    let lines: Vec<String> = SESSION.lines().map(str::to_owned).collect();
    let ws = MockWs::start(0, move |n| {
        if n == 0 {
            vec![
                expect(r#""channel":"ticker""#),
                send(lines[1].clone()),
                // sequence_num 1 → 3: message 2 was lost.
                send(lines[3].clone()),
                expect(r#"{"type":"unsubscribe","product_ids":["BTC-USD"],"channel":"level2"}"#),
                expect(r#"{"type":"subscribe","product_ids":["BTC-USD"],"channel":"level2"}"#),
                send(lines[1].replace(r#""sequence_num": 1"#, r#""sequence_num": 4"#)),
                // sequence_num 5 follows the fresh snapshot at 4.
                send(lines[5].clone()),
                Step::Sleep(50),
                Step::Close,
            ]
        } else {
            session_steps()
        }
    })
    .await;
    let (instruments, id) = table();
    let mut feed =
        Harness::start(Coinbase::new(vec![("BTC-USD".into(), id)]), &instruments, test_config(ws.url(), None));
    feed.until("the ticker", |h| h.events.iter().any(|e| matches!(e.payload, Payload::Quote(_)))).await;

    let shape: Vec<bool> = feed.resets().iter().map(|r| r.1 > 0).collect();
    // Full, withdrawn (gap), full (resubscribed), withdrawn (disconnect), full.
    assert_eq!(shape, [true, false, true, false, true]);
    // Trade 233 came first; the snapshot's 231 and 232 are older and are dropped.
    assert_eq!(feed.trade_ids(), [631_112_233]);
    let (bids, _) = feed.engine.l2(id).top(10);
    assert_eq!(bids, [(px("63211.00"), sz("1.2"))]);
    assert_eq!(ws.connections.load(Ordering::SeqCst), 2);
    let view = feed.view();
    assert_eq!((view.parse_errors, view.resyncs, view.reconnects), (0, 1, 1), "{view:?}");
    feed.stop().await;
}
