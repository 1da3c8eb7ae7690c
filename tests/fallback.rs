//! Server-Sent Events and long-polling: the same stream without WebSocket.

mod common;

use std::time::{Duration, Instant};

use common::{get_json, start, updates};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_snapshot_then_sequenced_batches() {
    let server = start(&["--rate", "3000", "--symbols", "AAPL,BTC-USD"]).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /v1/sse?symbols=AAPL,BTC-USD&channels=trades HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(stream).lines();
    let status = lines.next_line().await.unwrap().unwrap();
    assert!(status.contains("200"), "{status}");
    let mut content_type = String::new();
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while updates(&messages).len() < 200 && Instant::now() < deadline {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await.unwrap().unwrap().unwrap();
        if line.to_ascii_lowercase().starts_with("content-type:") {
            content_type = line;
        } else if let Some(data) = line.strip_prefix("data: ") {
            messages.push(serde_json::from_str::<serde_json::Value>(data).unwrap());
        }
    }
    assert!(content_type.contains("text/event-stream"), "{content_type}");
    let all = updates(&messages);
    assert!(all.len() >= 200);
    let mut last = std::collections::HashMap::new();
    for (kind, symbol, _, seq, _) in all {
        match last.insert(symbol.clone(), seq) {
            None => assert_eq!(kind, "snapshot", "{symbol} starts with a snapshot"),
            Some(prev) => assert_eq!(seq, prev + 1, "{symbol} trades continue without a hole"),
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_resumes_from_its_cursor() {
    let server = start(&["--rate", "3000", "--symbols", "AAPL,BTC-USD"]).await;
    let (status, first) = get_json(server.addr, "/v1/poll?symbols=BTC-USD&channels=trades,quotes").await;
    assert_eq!(status, 200);
    let snapshots = updates(first["messages"].as_array().unwrap());
    assert_eq!(snapshots.len(), 2);
    assert!(snapshots.iter().all(|u| u.0 == "snapshot"));
    let mut cursor = first["cursor"].as_str().unwrap().to_owned();
    let mut trade_seq = snapshots.iter().find(|u| u.2 == "trades").unwrap().3;
    let mut received = 0;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, body) =
            get_json(server.addr, &format!("/v1/poll?symbols=BTC-USD&channels=trades,quotes&cursor={cursor}")).await;
        assert_eq!(status, 200);
        for (kind, _, channel, seq, _) in updates(body["messages"].as_array().unwrap()) {
            assert_eq!(kind, "update", "a poll with a cursor replays, it does not snapshot");
            if channel == "trades" {
                assert_eq!(seq, trade_seq + 1, "every trade exactly once across polls");
                trade_seq = seq;
                received += 1;
            }
        }
        cursor = body["cursor"].as_str().unwrap().to_owned();
    }
    assert!(received > 0);

    // Nothing new: the poll is held until its timeout, then answers empty.
    let quiet = start(&["--rate", "1", "--symbols", "AAPL"]).await;
    let (_, first) = get_json(quiet.addr, "/v1/poll?symbols=AAPL&channels=trades").await;
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let (status, body) =
        get_json(quiet.addr, &format!("/v1/poll?symbols=AAPL&channels=trades&cursor={cursor}&timeout_ms=300")).await;
    assert_eq!(status, 200);
    if body["messages"].as_array().unwrap().is_empty() {
        assert!(started.elapsed() >= Duration::from_millis(250), "held until the timeout");
    }

    for (path, code) in [
        ("/v1/poll?symbols=BTC-USD&cursor=garbage", "bad_cursor"),
        ("/v1/poll?symbols=NOPE", "unknown_symbol"),
        ("/v1/poll?symbols=BTC-USD&channels=news", "unknown_channel"),
        ("/v1/sse?symbols=", "bad_request"),
    ] {
        let (status, body) = get_json(server.addr, path).await;
        assert!((400..500).contains(&status), "{path}: {status}");
        assert_eq!(body["code"], code, "{path}");
    }
    quiet.shutdown().await;
    server.shutdown().await;
}

/// A client that polls again as soon as it has an answer makes a handful of
/// requests a second at the default rate, not one per update: a poll gathers
/// for `gather_ms` (200) once something is newer than its cursor, and loses
/// nothing meanwhile. (With `gather_ms=0` the same client made 326 a second.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_gathers_instead_of_answering_every_update() {
    let symbols = "BTC-USD,ETH-USD,SOL-USD,AAPL,MSFT,NVDA,TSLA,AMZN";
    let server = start(&["--symbols", symbols]).await;
    let path = format!("/v1/poll?symbols={symbols}&channels=trades,quotes");
    let (_, first) = get_json(server.addr, &path).await;
    let mut cursor = first["cursor"].as_str().unwrap().to_owned();
    let mut last_trade = std::collections::HashMap::new();
    for (_, symbol, channel, seq, _) in updates(first["messages"].as_array().unwrap()) {
        if channel == "trades" {
            last_trade.insert(symbol, seq);
        }
    }
    let started = Instant::now();
    let (mut requests, mut trades) = (0, 0);
    while started.elapsed() < Duration::from_secs(3) {
        let (status, body) = get_json(server.addr, &format!("{path}&cursor={cursor}")).await;
        assert_eq!(status, 200);
        requests += 1;
        for (kind, symbol, channel, seq, _) in updates(body["messages"].as_array().unwrap()) {
            assert_eq!(kind, "update");
            if channel == "trades" {
                let last = last_trade.insert(symbol.clone(), seq).unwrap();
                assert_eq!(seq, last + 1, "{symbol}: every trade once across polls");
                trades += 1;
            }
        }
        cursor = body["cursor"].as_str().unwrap().to_owned();
    }
    let per_second = f64::from(requests) / started.elapsed().as_secs_f64();
    assert!(trades > 20, "trades flowed: {trades}");
    assert!(per_second < 10.0, "{per_second:.1} polls a second (about one per update before gathering)");
    server.shutdown().await;
}
