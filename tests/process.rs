//! The binary as operators run it: slow consumers, signals, the terminal client.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Process, Received, get_json, updates};
use tokio::net::TcpSocket;

/// A client that subscribes to everything and then never reads must not slow or
/// starve another client, and the memory the server holds for it stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_neither_slows_others_nor_grows_memory() {
    let server = Process::serve(&["--rate", "20000", "--outbox-max", "2048", "--conflate-after", "512"]);
    let mut fast = Client::connect(server.addr).await;
    fast.subscribe(&["trades", "quotes"], &["BTC-USD", "AAPL"]).await;

    /// Updates delivered to `client` over a window, with the worst ts_send → receipt delay.
    async fn window(client: &mut Client, length: Duration) -> (usize, u64, Vec<serde_json::Value>) {
        let end = Instant::now() + length;
        let mut messages = Vec::new();
        let mut worst_ms = 0;
        while Instant::now() < end {
            if let Some(Received::Json(v)) = client.next(Duration::from_millis(50)).await {
                let now = tickwire::model::now_nanos();
                for (_, _, _, _, u) in updates(std::slice::from_ref(&v)) {
                    let sent = u["ts_send"].as_u64().unwrap_or(now);
                    worst_ms = worst_ms.max(now.saturating_sub(sent) / 1_000_000);
                }
                messages.push(v);
            }
        }
        (updates(&messages).len(), worst_ms, messages)
    }
    let (baseline, _, _) = window(&mut fast, Duration::from_secs(2)).await;

    // The stalled client: a tiny receive buffer, subscribed to every symbol and
    // channel, never reading a byte.
    let (_, instruments) = get_json(server.addr, "/v1/instruments").await;
    let all: Vec<String> = instruments["instruments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["symbol"].as_str().unwrap().to_owned())
        .collect();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let mut stalled = common::RawClient::from_stream(stream).await;
    let request = serde_json::json!({"op":"subscribe","channels":["quotes","trades","book"],"symbols":all});
    stalled.send_text(&request.to_string()).await;

    window(&mut fast, Duration::from_secs(2)).await; // the stalled socket and outbox fill meanwhile
    let rss_start = server.rss_bytes();
    let (during, worst_ms, messages) = window(&mut fast, Duration::from_secs(4)).await;
    let rss_end = server.rss_bytes();

    assert!(
        during as f64 >= baseline as f64 * 0.5 * (4.0 / 2.0),
        "the other client kept its pace: {during} updates in 4 s vs {baseline} in 2 s before the stall"
    );
    assert!(messages.iter().all(|m| m["type"] != "gap"), "the fast client lost nothing");
    // A generous bound: a stalled peer must not hold this client's updates back.
    assert!(worst_ms < 1_000, "an update to the fast client waited {worst_ms} ms");
    // Trades to the fast client stay contiguous while the other one is stalled.
    let mut last = std::collections::HashMap::new();
    for (kind, symbol, channel, seq, _) in updates(&messages) {
        if channel == "trades"
            && kind == "update"
            && let Some(prev) = last.insert(symbol.clone(), seq)
        {
            assert_eq!(seq, prev + 1, "{symbol} trades");
        }
    }
    let growth = rss_end.saturating_sub(rss_start);
    assert!(growth < 16 << 20, "server memory grew {} KiB while a client was stalled", growth >> 10);
    let (_, stats) = get_json(server.addr, "/v1/stats").await;
    let shed = stats["conflated"].as_u64().unwrap() + stats["dropped_trades"].as_u64().unwrap();
    assert!(shed > 0, "the stalled client's outbox hit its bounds: {stats}");
    drop(stalled);
}

/// SIGTERM: every client gets close 1001 and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_1001_and_exits_zero() {
    let mut server = Process::serve(&["--symbols", "AAPL,BTC-USD"]);
    let mut client = Client::connect(server.addr).await;
    client.subscribe(&["quotes"], &["AAPL"]).await;
    client.until_type("snapshot").await;
    server.signal("TERM");
    loop {
        match client.next(Duration::from_secs(10)).await {
            Some(Received::Close(code, _)) => {
                assert_eq!(code, 1001);
                break;
            }
            Some(Received::Json(_)) => continue,
            None => panic!("no close frame"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "process still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn tail_prints_a_live_stream() {
    let server = Process::serve(&["--rate", "2000", "--symbols", "AAPL,BTC-USD"]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["tail", "AAPL", "--count", "20", "--url", &format!("ws://{}/v1/ws", server.addr)])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 20, "{text}");
    assert!(lines.iter().all(|l| l.starts_with("AAPL")), "{text}");
    assert!(lines.iter().any(|l| l.contains("quote ")), "{text}");
}

#[test]
fn bad_flags_fail_clearly() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["serve", "--symbols", "NOT-A-SYMBOL", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown simulator symbol \"NOT-A-SYMBOL\""), "{stderr}");
    let output =
        std::process::Command::new(env!("CARGO_BIN_EXE_tickwire")).args(["serve", "--rate", "fast"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--rate"));
}
