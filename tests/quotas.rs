//! Quotas over real connections: connections per client address on every
//! streaming transport, subscription churn on a WebSocket, concurrent replays
//! and history rows per key. Each refusal has its exact status or error code,
//! is counted in `/metrics`, and leaves other clients alone.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::store::TempDir;
use common::{Client, get_json};
use serde_json::{Value, json};
use tickwire::model::now_nanos;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A TCP connection to `addr` from the loopback address `from` (all of
/// 127.0.0.0/8 is local on Linux: distinct client addresses on one machine).
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.expect("connects")
}

/// Opens `/v1/ws` from `from`: the socket, or the refusal's HTTP status.
async fn ws_from(from: &str, addr: SocketAddr) -> Result<common::Socket, u16> {
    let stream = connect_from(from, addr).await;
    let request = common::ws_url(addr).into_client_request().unwrap();
    match tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream)).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(error) => panic!("unexpected handshake failure: {error}"),
    }
}

/// Sends a GET from `from` and reads the status line and body (up to `wait`
/// for a stream that stays open).
async fn get_from(from: &str, addr: SocketAddr, path: &str, wait: Duration) -> (u16, String) {
    let mut stream = connect_from(from, addr).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok(n @ 1..)) = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
        response.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (_, text) = get_from("127.0.0.1", addr, "/metrics", Duration::from_secs(5)).await;
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test]
async fn connections_per_address_are_capped_on_every_transport() {
    let server = common::start(&["--max-connections-per-ip", "2", "--rate", "2000"]).await;
    let addr = server.addr;
    let first = ws_from("127.0.0.1", addr).await.expect("first");
    let _second = ws_from("127.0.0.1", addr).await.expect("second");
    assert_eq!(ws_from("127.0.0.1", addr).await.err(), Some(429), "a third WebSocket from one address");
    let (status, body) =
        get_from("127.0.0.1", addr, "/v1/sse?symbols=BTC-USD&channels=quotes", Duration::from_secs(2)).await;
    assert_eq!(status, 429, "SSE counts too: {body}");
    assert!(body.contains("too_many_connections") && body.contains("this address"), "{body}");
    let (status, _) =
        get_from("127.0.0.1", addr, "/v1/poll?symbols=BTC-USD&channels=quotes&timeout_ms=100", Duration::from_secs(2))
            .await;
    assert_eq!(status, 429, "a held long-poll counts too");

    // Another address is not affected, and streams.
    let mut other = Client { socket: ws_from("127.0.0.2", addr).await.expect("another address connects") };
    other.subscribe(&["quotes"], &["BTC-USD"]).await;
    other.until_type("batch").await;

    // A closed connection gives its place back.
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(socket) = ws_from("127.0.0.1", addr).await {
            again = Some(socket);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "the place came back");
    assert!(metric(addr, "tickwire_quota_refused_total{quota=\"ip_connections\"}").await >= 3.0);
    server.shutdown().await;
}

#[tokio::test]
async fn subscription_churn_is_refused_without_changing_anything() {
    // 60 a minute: a burst of 15, then one a second.
    let server = common::start(&["--max-subscription-changes-per-min", "60", "--rate", "2000"]).await;
    let mut client = Client::connect(server.addr).await;
    let symbols = ["BTC-USD", "ETH-USD", "AAPL", "MSFT"];
    for i in 0..20 {
        let symbol = symbols[i % symbols.len()];
        let op = if i % 2 == 0 { "subscribe" } else { "unsubscribe" };
        client.send(json!({"op": op, "channels": ["quotes"], "symbols": [symbol]})).await;
    }
    let answers = client.round_trip(1).await;
    let refused: Vec<&Value> = answers.iter().filter(|m| m["type"] == "error").collect();
    let acked = answers.iter().filter(|m| m["type"] == "subscribed" || m["type"] == "unsubscribed").count();
    assert_eq!((acked, refused.len()), (15, 5), "{answers:?}");
    for error in &refused {
        assert_eq!(error["code"], "rate_limited", "{error}");
        assert!(["subscribe", "unsubscribe"].contains(&error["op"].as_str().unwrap()), "{error}");
        assert!(error["message"].as_str().unwrap().contains("60 subscription changes a minute"), "{error}");
    }
    // The connection stays and streams what it holds (the last request
    // taken, i = 14, subscribed AAPL).
    let mut saw_update = false;
    for _ in 0..200 {
        let message = client.json().await;
        if message["type"] == "batch" {
            saw_update = true;
            break;
        }
    }
    assert!(saw_update, "the connection still streams");
    assert!(metric(server.addr, "tickwire_quota_refused_total{quota=\"subscription_changes\"}").await >= 5.0);
    server.shutdown().await;
}

/// A store with ~1 s of simulated BTC-USD, served again with quotas.
async fn recorded(extra: &[&str]) -> (tickwire::app::Server, u64, u64, TempDir) {
    let dir = TempDir::new("quotas");
    let url = dir.sqlite_url();
    let journal = dir.path("journal");
    let from = now_nanos();
    let server =
        common::start(&["--store", &url, "--journal-dir", &journal, "--rate", "2000", "--symbols", "BTC-USD"]).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    server.shutdown().await;
    let to = now_nanos();
    let mut flags = vec!["--store", &url, "--journal-dir", &journal, "--rate", "1", "--symbols", "BTC-USD"];
    flags.extend_from_slice(extra);
    (common::start(&flags).await, from, to, dir)
}

#[tokio::test]
async fn history_rows_and_replays_per_key() {
    let (server, from, to, _dir) = recorded(&["--history-rows-per-min", "60", "--max-replays-per-key", "1"]).await;
    let addr = server.addr;
    let path = format!("/v1/history/trades?symbol=BTC-USD&from={from}&to={to}&limit=100");
    let (status, body) = get_json(addr, &path).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["count"].as_u64().unwrap() > 60, "a page past the budget is served whole: {body}");
    let (status, text) = get_from("127.0.0.1", addr, &path, Duration::from_secs(5)).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("quota_exceeded") && text.to_ascii_lowercase().contains("retry-after:"), "{text}");
    let (status, _) = get_from(
        "127.0.0.1",
        addr,
        &format!("/v1/candles?symbol=BTC-USD&interval=1s&from={from}&to={to}"),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status, 429, "candles draw on the same budget");
    let (status, _) = get_from("127.0.0.2", addr, &path, Duration::from_secs(5)).await;
    assert_eq!(status, 200, "another client's budget is its own");

    // One replay at a time per key (here: per address, the API being open).
    let url = format!("ws://{addr}/v1/replay?symbols=BTC-USD&from={from}&to={to}&speed=0.001");
    let (running, _) = tokio_tungstenite::connect_async(&url).await.expect("the first replay");
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("a second replay must be refused: {:?}", other.map(|_| ())),
    }
    drop(running);
    assert!(common::ws_connects_within(&url, Duration::from_secs(5)).await, "an ended replay gives its place back");
    assert!(metric(addr, "tickwire_quota_refused_total{quota=\"replays\"}").await >= 1.0);
    assert!(metric(addr, "tickwire_quota_refused_total{quota=\"history_rows\"}").await >= 2.0);
    server.shutdown().await;
}
