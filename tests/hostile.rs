//! Clients that try to hurt the server, against the real server over
//! loopback: each gets its defined answer, and a well-behaved client beside
//! them keeps its stream.
//! - a message sent as 100,000 one-byte continuation frames: closed with 1009
//!   once it passes --max-message-fragments;
//! - far more messages a second than --max-client-messages-per-s: refused with
//!   `rate_limited`, then closed with 1008 when it keeps on.

mod common;

use std::time::Duration;

use common::{Client, RawClient};
use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;

/// A masked client frame (mask key zero).
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    out.extend_from_slice(payload);
    out
}

async fn keeps_streaming(client: &mut Client) {
    for _ in 0..3 {
        assert_eq!(client.until_type("batch").await["type"], "batch");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_in_too_many_fragments_is_closed_with_1009() {
    let server = common::start(&["--rate", "300", "--max-message-fragments", "1000"]).await;
    let mut bystander = Client::connect(server.addr).await;
    bystander.subscribe(&["quotes"], &["BTC-USD"]).await;

    let mut hostile = RawClient::connect(server.addr).await;
    let mut stream = frame(false, 1, b"{");
    for _ in 0..100_000 {
        stream.extend(frame(false, 0, b" "));
    }
    // The server may close before it has read all of it.
    let _ = hostile.stream.write_all(&stream).await;
    let frames = hostile.read_frames(Duration::from_secs(5)).await;
    let close = frames.iter().find_map(|f| f.close_code());
    assert_eq!(close, Some(1009), "{} frames, last {:?}", frames.len(), frames.last().map(|f| f.opcode));
    keeps_streaming(&mut bystander).await;

    // A message in fewer fragments than the cap is taken as usual.
    let mut fine = RawClient::connect(server.addr).await;
    let mut stream = frame(false, 1, br#"{"op":"ping","#);
    for _ in 0..500 {
        stream.extend(frame(false, 0, b" "));
    }
    stream.extend(frame(true, 0, br#""id":5}"#));
    fine.stream.write_all(&stream).await.unwrap();
    let frames = fine.read_frames(Duration::from_secs(2)).await;
    let text: Vec<String> = frames.iter().map(|f| String::from_utf8_lossy(&f.payload).to_string()).collect();
    assert!(text.iter().any(|t| t.contains(r#""type":"pong""#) && t.contains(r#""id":5"#)), "{text:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flooding_messages_is_refused_then_closed_with_1008() {
    let server = common::start(&["--rate", "300", "--max-client-messages-per-s", "50"]).await;
    let mut bystander = Client::connect(server.addr).await;
    bystander.subscribe(&["quotes"], &["BTC-USD"]).await;

    let mut flood = Client::connect(server.addr).await;
    let started = tokio::time::Instant::now();
    let mut refusals = 0;
    let mut pongs = 0;
    let close = loop {
        assert!(started.elapsed() < Duration::from_secs(15), "not closed after 15 s of flooding");
        // 500 messages a second: ten times the rate.
        for id in 0..50 {
            if flood
                .socket
                .send(tokio_tungstenite::tungstenite::Message::text(format!(r#"{{"op":"ping","id":{id}}}"#)))
                .await
                .is_err()
            {
                break;
            }
        }
        let until = tokio::time::Instant::now() + Duration::from_millis(100);
        let mut closed = None;
        while let Some(received) = flood.next(until.saturating_duration_since(tokio::time::Instant::now())).await {
            match received {
                common::Received::Json(m) if m["type"] == "error" => {
                    assert_eq!(m["code"], "rate_limited", "{m}");
                    refusals += 1;
                }
                common::Received::Json(m) if m["type"] == "pong" => pongs += 1,
                common::Received::Json(_) => {}
                common::Received::Close(code, reason) => {
                    closed = Some((code, reason));
                    break;
                }
            }
        }
        if let Some(closed) = closed {
            break closed;
        }
    };
    assert_eq!(close, (1008, "too many messages".to_owned()));
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(4), "closed only once it kept on ({took:?})");
    // Told about once a second, not once per message; some messages were taken.
    assert!((3..=10).contains(&refusals), "{refusals} refusals");
    assert!(pongs >= 100, "{pongs} pongs: the burst and the rate were served");
    keeps_streaming(&mut bystander).await;
    server.shutdown().await;
}
