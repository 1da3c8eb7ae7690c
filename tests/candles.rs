//! Live `candles.<interval>` channels over real WebSocket clients: the candles a
//! client sees close are the candles `GET /v1/candles` computes from the stored
//! trades, the trades the same client saw add up to them, and the protobuf
//! stream carries the same values as the JSON one.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::store::TempDir;
use common::{Client, Received, get_json};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::Value;
use tickwire::codec::proto::pb;
use tokio_tungstenite::tungstenite::Message;

/// (open, high, low, close, volume, trades) as decimal strings and a count.
type Ohlcv = (String, String, String, String, String, u64);

fn ohlcv(v: &Value) -> Ohlcv {
    let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}")).to_owned();
    (s("open"), s("high"), s("low"), s("close"), s("volume"), v["trades"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_candles_close_to_what_history_computes_in_json_and_protobuf() {
    let dir = TempDir::new("candles");
    let url = dir.sqlite_url();
    let journal = dir.path("journal");
    let flags = ["--store", &url, "--journal-dir", &journal, "--rate", "3000", "--seed", "11", "--symbols", "BTC-USD"];
    let server = common::start(&flags).await;

    let mut json = Client::connect(server.addr).await;
    json.send(serde_json::json!({
        "op": "subscribe", "channels": ["trades", "candles.1s", "candles.1m"], "symbols": ["BTC-USD"], "delivery": "full"
    }))
    .await;
    let (mut proto, _) =
        tokio_tungstenite::connect_async(format!("{}?format=proto", common::ws_url(server.addr))).await.unwrap();
    let subscribe = pb::ClientMessage {
        op: Some(pb::client_message::Op::Subscribe(pb::Subscribe {
            channels: vec![pb::Channel::Candles1s as i32],
            symbols: vec!["BTC-USD".into()],
            delivery: pb::Delivery::Full as i32,
            ..Default::default()
        })),
    };
    proto.send(Message::binary(subscribe.encode_to_vec())).await.unwrap();

    // Three and a half seconds: at least two whole seconds close.
    let mut messages = Vec::new();
    let mut proto_messages = Vec::new();
    let end = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < end {
        tokio::select! {
            received = json.next(Duration::from_millis(50)) => if let Some(Received::Json(v)) = received {
                messages.push(v);
            },
            frame = proto.next() => if let Some(Ok(Message::Binary(bytes))) = frame {
                proto_messages.push(pb::ServerMessage::decode(bytes).unwrap());
            },
        }
    }
    server.shutdown().await;

    // Snapshots first: the candle channels answer like any other.
    let snapshots: Vec<&Value> = messages.iter().filter(|m| m["type"] == "snapshot").collect();
    let channels: Vec<&str> = snapshots.iter().map(|s| s["channel"].as_str().unwrap()).collect();
    assert_eq!(channels, ["trades", "candles.1s", "candles.1m"]);

    let updates: Vec<&Value> = messages
        .iter()
        .filter(|m| m["type"] == "batch")
        .flat_map(|m| m["updates"].as_array().unwrap().iter())
        .collect();
    // Per channel, sequences rise by one: nothing skipped under full delivery.
    for channel in ["trades", "candles.1s", "candles.1m"] {
        let seqs: Vec<u64> =
            updates.iter().filter(|u| u["channel"] == channel).map(|u| u["seq"].as_u64().unwrap()).collect();
        assert!(seqs.len() > 2, "{channel}: {} updates", seqs.len());
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{channel}: sequences rise by one");
    }
    let closed: BTreeMap<u64, Ohlcv> = updates
        .iter()
        .filter(|u| u["channel"] == "candles.1s" && u["closed"] == true)
        .map(|u| (u["start"].as_u64().unwrap(), ohlcv(u)))
        .collect();
    assert!(closed.len() >= 2, "at least two seconds closed: {closed:?}");

    // The trades the client saw in each closed second add up to its candle.
    let first_trade_ts = updates.iter().find(|u| u["channel"] == "trades").unwrap()["ts_event"].as_u64().unwrap();
    for (&start, candle) in &closed {
        if start < first_trade_ts {
            continue; // the second was already under way when the subscription began
        }
        let count = updates
            .iter()
            .filter(|u| {
                u["channel"] == "trades" && u["ts_event"].as_u64().unwrap() / 1_000_000_000 == start / 1_000_000_000
            })
            .count();
        assert_eq!(count as u64, candle.5, "second {start}: trades seen == candle's trade count");
    }

    // The protobuf stream carries the same candles, sequence for sequence.
    let json_by_seq: BTreeMap<u64, &Value> =
        updates.iter().filter(|u| u["channel"] == "candles.1s").map(|u| (u["seq"].as_u64().unwrap(), *u)).collect();
    let mut compared = 0;
    for message in &proto_messages {
        let Some(pb::server_message::Kind::Batch(batch)) = &message.kind else { continue };
        for update in &batch.updates {
            let Some(pb::update::Data::Candle(candle)) = &update.data else { panic!("only candles subscribed") };
            let Some(v) = json_by_seq.get(&update.seq) else { continue };
            assert_eq!(candle.interval, pb::CandleInterval::CandleInterval1s as i32);
            assert_eq!(candle.start, v["start"].as_u64().unwrap());
            assert_eq!(candle.trades, v["trades"].as_u64().unwrap());
            assert_eq!(candle.closed, v["closed"].as_bool().unwrap());
            // BTC-USD has 2 price decimals: the mantissa is the JSON decimal without its point.
            assert_eq!(candle.close.to_string(), v["close"].as_str().unwrap().replace('.', "").trim_start_matches('0'));
            compared += 1;
        }
    }
    assert!(compared > 2, "compared {compared} protobuf candles");

    // What history computes from the stored trades is what closed live.
    let server =
        common::start(&["--store", &url, "--journal-dir", &journal, "--rate", "1", "--symbols", "BTC-USD"]).await;
    let from = *closed.keys().next().unwrap();
    let to = closed.keys().last().unwrap() + 1_000_000_000;
    let (status, body) =
        get_json(server.addr, &format!("/v1/candles?symbol=BTC-USD&interval=1s&from={from}&to={to}")).await;
    assert_eq!(status, 200, "{body}");
    let stored: BTreeMap<u64, Ohlcv> =
        body["candles"].as_array().unwrap().iter().map(|c| (c["t"].as_u64().unwrap(), ohlcv(c))).collect();
    assert_eq!(stored, closed, "live closed candles == candles from stored trades");
    assert!(body["candles"].as_array().unwrap().iter().all(|c| c["closed"] == true), "those seconds are over");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candle_channels_are_validated_and_not_replayed() {
    let server = common::start(&["--rate", "100"]).await;
    let mut client = Client::connect(server.addr).await;
    client.subscribe(&["candles.7m"], &["BTC-USD"]).await;
    let error = client.until_type("error").await;
    assert_eq!(error["code"], "unknown_channel");
    assert!(error["message"].as_str().unwrap().contains("candles.1m"), "{error}");
    // The connection stays usable.
    client.subscribe(&["candles.1m"], &["BTC-USD"]).await;
    let snapshot = client.until_type("snapshot").await;
    assert_eq!(snapshot["channel"], "candles.1m");
    server.shutdown().await;

    let dir = TempDir::new("candles-replay");
    let url = dir.sqlite_url();
    let journal = dir.path("journal");
    let server = common::start(&["--store", &url, "--journal-dir", &journal, "--rate", "100"]).await;
    let (status, body) =
        get_json(server.addr, "/v1/replay?symbols=BTC-USD&channels=candles.1m&from=1&to=2&speed=max").await;
    assert_eq!((status, body["code"].as_str()), (400, Some("unknown_channel")), "{body}");
    server.shutdown().await;
}
