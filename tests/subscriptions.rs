//! What a subscribe may name, on the real server over loopback: patterns
//! (`*`, `binance:*`, `*-USD`) stand for every instrument they match, a venue's
//! own spelling (`BTCUSDT`, `XBT/USD`, any case) for its instrument, and a name
//! that could be several instruments is answered with the names to use. The
//! acknowledgement lists exactly what became active, on every transport.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, get_json};
use serde_json::{Value, json};

/// The simulator's default universe, and (unreachable) Binance and Kraken
/// feeds whose instruments exist all the same.
async fn start() -> tickwire::app::Server {
    common::start(&[
        "--feed",
        "simulator;binance:BTCUSDT,ETHUSDT;kraken:BTC/USD",
        "--binance-ws-url",
        "ws://127.0.0.1:9/stream",
        "--binance-rest-url",
        "http://127.0.0.1:9",
        "--kraken-ws-url",
        "ws://127.0.0.1:9/v2",
        "--venue-reference",
        "off",
    ])
    .await
}

async fn all_symbols(addr: SocketAddr) -> Vec<String> {
    let (status, body) = get_json(addr, "/v1/instruments").await;
    assert_eq!(status, 200);
    body["instruments"].as_array().unwrap().iter().map(|i| i["symbol"].as_str().unwrap().to_owned()).collect()
}

/// Sends `request` and reads until its acknowledgement (of `kind`), returning
/// the snapshots' symbols, the errors and the acknowledgement.
async fn request(client: &mut Client, request: Value, kind: &str) -> (BTreeSet<String>, Vec<Value>, Value) {
    client.send(request).await;
    let (mut snapshots, mut errors) = (BTreeSet::new(), Vec::new());
    loop {
        let message = client.json().await;
        match message["type"].as_str() {
            Some("snapshot") => {
                snapshots.insert(message["symbol"].as_str().unwrap().to_owned());
            }
            Some("error") => errors.push(message),
            Some(t) if t == kind => return (snapshots, errors, message),
            _ => {}
        }
    }
}

fn set(value: &Value) -> BTreeSet<String> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_subscribe_every_instrument_they_match() {
    let server = start().await;
    let everything: BTreeSet<String> = all_symbols(server.addr).await.into_iter().collect();
    assert!(everything.contains("binance:BTC-USDT") && everything.contains("AAPL"), "{everything:?}");

    let mut client = Client::connect(server.addr).await;
    let (snapshots, errors, ack) =
        request(&mut client, json!({"op":"subscribe","channels":["quotes"],"symbols":["*"]}), "subscribed").await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(set(&ack["symbols"]), everything, "* is every instrument");
    assert_eq!(snapshots, everything, "a snapshot of each");

    let mut client = Client::connect(server.addr).await;
    let (_, _, ack) = request(
        &mut client,
        json!({"op":"subscribe","channels":["trades"],"symbols":["binance:*","*-usd","AAPL","BTC-USD"]}),
        "subscribed",
    )
    .await;
    let want: BTreeSet<String> = everything
        .iter()
        .filter(|s| s.starts_with("binance:") || s.ends_with("-USD") || *s == "AAPL")
        .cloned()
        .collect();
    assert!(want.contains("kraken:BTC-USD") && want.contains("ETH-USD") && !want.contains("MSFT"), "{want:?}");
    assert_eq!(set(&ack["symbols"]), want, "patterns and symbols together, each once");
    assert_eq!(ack["symbols"].as_array().unwrap().len(), want.len(), "no symbol listed twice");

    // Unsubscribing by pattern takes exactly what it matches.
    let (_, errors, ack) =
        request(&mut client, json!({"op":"unsubscribe","channels":["trades"],"symbols":["binance:*"]}), "unsubscribed")
            .await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(set(&ack["symbols"]), ["binance:BTC-USDT", "binance:ETH-USDT"].map(String::from).into(), "{ack}");

    // A pattern that matches nothing is an unknown name, and says so.
    let (_, errors, ack) =
        request(&mut client, json!({"op":"subscribe","channels":["quotes"],"symbols":["nasdaq:*"]}), "subscribed")
            .await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["code"], "unknown_symbol");
    assert!(errors[0]["message"].as_str().unwrap().contains("nasdaq:*"), "{}", errors[0]);
    assert_eq!(ack["symbols"], json!([]));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn venue_spellings_resolve_and_ambiguous_names_get_the_names_to_use() {
    let server = start().await;
    let mut client = Client::connect(server.addr).await;
    let (snapshots, errors, ack) = request(
        &mut client,
        json!({"op":"subscribe","channels":["quotes"],"symbols":["BTCUSDT","ethusdt","XBT/USD"]}),
        "subscribed",
    )
    .await;
    assert!(errors.is_empty(), "{errors:?}");
    let symbols = ["binance:BTC-USDT", "binance:ETH-USDT", "kraken:BTC-USD"];
    assert_eq!(set(&ack["symbols"]), symbols.map(String::from).into());
    assert_eq!(snapshots, symbols.map(String::from).into(), "data carries the symbols, not the aliases");
    assert_eq!(
        ack["aliases"],
        json!({"BTCUSDT":"binance:BTC-USDT","ethusdt":"binance:ETH-USDT","XBT/USD":"kraken:BTC-USD"})
    );

    // "BTCUSD" is the simulator's BTC-USD and Kraken's alike: name one.
    let (_, errors, ack) =
        request(&mut client, json!({"op":"subscribe","channels":["quotes"],"symbols":["btcusd","NOPE"]}), "subscribed")
            .await;
    let codes: Vec<&str> = errors.iter().map(|e| e["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["unknown_symbol", "ambiguous_symbol"], "{errors:?}");
    let message = errors[1]["message"].as_str().unwrap();
    assert!(message.contains("BTC-USD") && message.contains("kraken:BTC-USD"), "{message}");
    assert_eq!(ack["symbols"], json!([]));
    assert!(ack.get("aliases").is_none(), "no aliases taken: {ack}");

    // A resume may name the stream by the alias it subscribed with.
    let (_, errors, _) = request(
        &mut client,
        json!({"op":"subscribe","channels":["quotes"],"symbols":["BTCUSDT"],"since":{"BTCUSDT":0}}),
        "subscribed",
    )
    .await;
    assert!(errors.is_empty(), "{errors:?}");

    // REST takes the same spellings.
    let (status, body) = get_json(server.addr, "/v1/snapshot?symbols=XBT/USD").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["snapshots"][0]["symbol"], "kraken:BTC-USD");
    let (status, body) = get_json(server.addr, "/v1/snapshot?symbols=btcusd").await;
    assert_eq!((status, &body["code"]), (400, &json!("ambiguous_symbol")), "{body}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_streams_take_patterns_and_aliases() {
    let server = start().await;
    let (status, body) = get_json(server.addr, "/v1/poll?symbols=*-USD,BTCUSDT&channels=quotes").await;
    assert_eq!(status, 200, "{body}");
    let snapshots: BTreeSet<String> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "snapshot")
        .map(|m| m["symbol"].as_str().unwrap().to_owned())
        .collect();
    let want: BTreeSet<String> =
        all_symbols(server.addr).await.into_iter().filter(|s| s.ends_with("-USD") || s == "binance:BTC-USDT").collect();
    assert_eq!(snapshots, want);
    let (status, body) = get_json(server.addr, "/v1/poll?symbols=btcusd&channels=quotes").await;
    assert_eq!((status, &body["code"]), (400, &json!("ambiguous_symbol")), "{body}");
    let (status, body) = get_json(server.addr, "/v1/poll?symbols=nope:*&channels=quotes").await;
    assert_eq!((status, &body["code"]), (404, &json!("unknown_symbol")), "{body}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    server.shutdown().await;
}
