//! The streaming contract, end to end: real server on port 0, real WebSocket clients.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Client, RawClient, Received, get_json, start, updates};
use serde_json::json;

/// Per (symbol, channel): the snapshot comes first, then updates whose sequences
/// continue from it without a hole (a book resnapshot may restart the count).
fn assert_sequenced(messages: &[serde_json::Value]) -> HashMap<(String, String), u64> {
    let mut last: HashMap<(String, String), u64> = HashMap::new();
    for (kind, symbol, channel, seq, _) in updates(messages) {
        let key = (symbol.clone(), channel.clone());
        match (kind.as_str(), last.get(&key)) {
            ("snapshot", _) => {}
            (_, None) => panic!("{symbol} {channel}: update #{seq} before its snapshot"),
            (_, Some(&prev)) => {
                if channel == "quotes" {
                    assert!(seq > prev, "{symbol} quotes: #{seq} after #{prev}");
                } else {
                    assert_eq!(seq, prev + 1, "{symbol} {channel}: #{seq} after #{prev}");
                }
            }
        }
        last.insert(key, seq);
    }
    last
}

async fn collect(client: &mut Client, wanted_updates: usize) -> Vec<serde_json::Value> {
    let mut messages = Vec::new();
    while updates(&messages).len() < wanted_updates {
        messages.push(client.json().await);
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_gives_snapshot_then_gapless_batches() {
    let server = start(&["--rate", "5000", "--symbols", "BTC-USD,ETH-USD,AAPL"]).await;
    let mut client = Client::connect(server.addr).await;
    client.subscribe(&["quotes", "trades", "book"], &["BTC-USD", "AAPL"]).await;
    let messages = collect(&mut client, 2_000).await;
    let first = updates(&messages);
    assert!(first.iter().take(6).all(|u| u.0 == "snapshot"), "six snapshots come first");
    let snapshot_seq = first[0].3;
    assert!(snapshot_seq > 0, "the simulator had already published");
    let last = assert_sequenced(&messages);
    assert_eq!(last.len(), 6, "both symbols on all three channels: {last:?}");
    assert!(updates(&messages).iter().all(|u| u.1 != "ETH-USD"), "nothing unsubscribed arrives");
    assert!(messages.iter().any(|m| m["type"] == "batch" && m["updates"].as_array().unwrap().len() > 1));
    for (_, _, _, _, u) in updates(&messages).iter().filter(|u| u.0 == "update") {
        let (event, recv, send) =
            (u["ts_event"].as_u64().unwrap(), u["ts_recv"].as_u64().unwrap(), u["ts_send"].as_u64().unwrap());
        assert!(event <= recv && recv <= send, "clocks are ordered: {u}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_updates() {
    let server = start(&["--rate", "5000", "--symbols", "BTC-USD,AAPL"]).await;
    let mut client = Client::connect(server.addr).await;
    client.subscribe(&["quotes", "trades"], &["BTC-USD", "AAPL"]).await;
    collect(&mut client, 200).await;
    client.send(json!({"op":"unsubscribe","channels":["quotes","trades"],"symbols":["AAPL"]})).await;
    // Everything queued before the unsubscribe is taken back, so after the pong
    // that follows it no AAPL update may arrive.
    client.round_trip(1).await;
    let mut after = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while tokio::time::Instant::now() < deadline {
        if let Some(Received::Json(v)) = client.next(Duration::from_millis(100)).await {
            after.push(v);
        }
    }
    let after = updates(&after);
    assert!(after.iter().any(|u| u.1 == "BTC-USD"), "BTC-USD keeps flowing");
    assert!(after.iter().all(|u| u.1 != "AAPL"), "no AAPL after unsubscribe");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_each_get_exactly_theirs() {
    let server = start(&["--rate", "5000", "--symbols", "BTC-USD,ETH-USD,AAPL"]).await;
    let mut a = Client::connect(server.addr).await;
    let mut b = Client::connect(server.addr).await;
    a.subscribe(&["quotes"], &["BTC-USD"]).await;
    b.subscribe(&["trades"], &["AAPL", "ETH-USD"]).await;
    let (ma, mb) = tokio::join!(collect(&mut a, 300), collect(&mut b, 300));
    assert!(updates(&ma).iter().all(|u| u.1 == "BTC-USD" && u.2 == "quotes"));
    let b_updates = updates(&mb);
    assert!(b_updates.iter().all(|u| (u.1 == "AAPL" || u.1 == "ETH-USD") && u.2 == "trades"));
    assert!(b_updates.iter().any(|u| u.1 == "AAPL") && b_updates.iter().any(|u| u.1 == "ETH-USD"));
    assert_sequenced(&ma);
    assert_sequenced(&mb);
    server.shutdown().await;
}

/// Every malformed input gets its defined answer, the connection (where it is not
/// a protocol matter) keeps working, and another client never notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_defined_errors_and_disturbs_no_one() {
    let server = start(&["--rate", "2000", "--symbols", "BTC-USD,AAPL"]).await;
    let mut bystander = Client::connect(server.addr).await;
    bystander.subscribe(&["trades"], &["BTC-USD"]).await;
    let mut client = Client::connect(server.addr).await;

    let cases: Vec<(&str, tokio_tungstenite::tungstenite::Message, &str)> = vec![
        ("non-JSON text", tokio_tungstenite::tungstenite::Message::text("hello there"), "invalid_json"),
        ("unknown op", tokio_tungstenite::tungstenite::Message::text(r#"{"op":"dance"}"#), "unknown_op"),
        (
            "unknown symbol",
            tokio_tungstenite::tungstenite::Message::text(
                r#"{"op":"subscribe","channels":["quotes"],"symbols":["NO-SUCH"]}"#,
            ),
            "unknown_symbol",
        ),
        (
            "unknown channel",
            tokio_tungstenite::tungstenite::Message::text(
                r#"{"op":"subscribe","channels":["news"],"symbols":["AAPL"]}"#,
            ),
            "unknown_channel",
        ),
        (
            "binary garbage",
            tokio_tungstenite::tungstenite::Message::binary(vec![0xff, 0x00, 0x13, 0x37, 0xde, 0xad]),
            "unsupported_frame",
        ),
    ];
    for (what, message, code) in cases {
        client.send_raw(message).await;
        let error = client.until_type("error").await;
        assert_eq!(error["code"], code, "{what}: {error}");
        assert!(!error["message"].as_str().unwrap().is_empty(), "{what} has a human message");
        client.round_trip(7).await; // still served
    }

    // 100,000 symbols in one subscribe: refused whole, with its own code.
    let symbols: Vec<String> = (0..100_000).map(|i| format!("S{i}")).collect();
    client.send(json!({"op":"subscribe","channels":["quotes"],"symbols":symbols})).await;
    let error = client.until_type("error").await;
    assert_eq!(error["code"], "too_many_symbols");
    client.round_trip(8).await;

    // A 10 MB frame is a protocol matter: close 1009.
    let mut big = RawClient::connect(server.addr).await;
    let (mut read_half, mut write_half) = big.stream.split();
    let sender = async {
        use tokio::io::AsyncWriteExt;
        let mut header = vec![0x81, 0x80 | 127];
        header.extend_from_slice(&(10u64 << 20).to_be_bytes());
        header.extend_from_slice(&[0, 0, 0, 0]);
        let _ = write_half.write_all(&header).await;
        let _ = write_half.write_all(&vec![b'x'; 10 << 20]).await; // may fail: the server gave up on it
    };
    let reader = async {
        use tokio::io::AsyncReadExt;
        let mut seen = Vec::new();
        let mut chunk = [0u8; 256];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), read_half.read(&mut chunk)).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&chunk[..n]);
            if seen.len() >= 4 {
                break;
            }
        }
        seen
    };
    let ((), seen) = tokio::join!(sender, reader);
    assert_eq!(seen.first(), Some(&0x88), "a close frame: {seen:?}");
    assert_eq!(u16::from_be_bytes([seen[2], seen[3]]), 1009);

    // A text frame that is not UTF-8: close 1007 (RFC 6455, 7.4.1), not 1002.
    let mut garbled = RawClient::connect(server.addr).await;
    garbled.send_text_bytes(&[b'{', 0xff, 0xfe, b'}']).await;
    let frames = garbled.read_frames(Duration::from_secs(5)).await;
    let codes: Vec<u16> = frames.iter().filter_map(|f| f.close_code()).collect();
    assert_eq!(codes, [1007], "{frames:?}");

    // The bystander saw an unbroken stream throughout.
    let messages = collect(&mut bystander, 200).await;
    assert_sequenced(&messages);
    assert!(messages.iter().all(|m| m["type"] != "error" && m["type"] != "gap"));
    let (status, health) = get_json(server.addr, "/healthz").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_live_ones_kept() {
    let server = start(&["--symbols", "AAPL", "--ping-interval-ms", "100", "--idle-timeout-ms", "400"]).await;
    // A bare socket that never answers pings, and a library client that does.
    let mut silent = RawClient::connect(server.addr).await;
    let mut live = Client::connect(server.addr).await;
    live.subscribe(&["quotes"], &["AAPL"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1200);
    while tokio::time::Instant::now() < deadline {
        if let Some(Received::Close(code, _)) = live.next(Duration::from_millis(50)).await {
            panic!("live connection closed with {code}");
        }
    }
    let frames = silent.read_frames(Duration::from_secs(3)).await;
    assert!(frames.iter().any(|f| f.opcode == 0x9), "the server pinged");
    assert_eq!(frames.last().and_then(|f| f.close_code()), Some(4000), "closed for idleness: {frames:?}");
    live.round_trip(1).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_client_with_1001() {
    let server = start(&["--symbols", "AAPL"]).await;
    let mut a = Client::connect(server.addr).await;
    let mut b = Client::connect(server.addr).await;
    a.subscribe(&["quotes"], &["AAPL"]).await;
    a.until_type("snapshot").await;
    b.round_trip(1).await;
    let shutdown = tokio::spawn(server.shutdown());
    for client in [&mut a, &mut b] {
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
    }
    tokio::time::timeout(Duration::from_secs(10), shutdown).await.expect("shutdown finishes").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_instruments_snapshot_and_health() {
    let server = start(&["--rate", "2000"]).await;
    let (status, body) = get_json(server.addr, "/v1/instruments").await;
    assert_eq!(status, 200);
    let list = body["instruments"].as_array().unwrap();
    assert_eq!(list.len(), 24);
    let btc = list.iter().find(|i| i["symbol"] == "BTC-USD").unwrap();
    assert_eq!(btc["tick_size"], "0.01");
    assert_eq!(btc["price_decimals"], 2);

    // Wait until the simulator has traded AAPL, then read its snapshot.
    let mut snapshot = serde_json::Value::Null;
    for _ in 0..100 {
        let (status, body) = get_json(server.addr, "/v1/snapshot?symbols=AAPL,BTC-USD").await;
        assert_eq!(status, 200);
        snapshot = body;
        if !snapshot["snapshots"][0]["last_trade"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let aapl = &snapshot["snapshots"][0];
    assert_eq!(aapl["symbol"], "AAPL");
    let bid: f64 = aapl["quote"]["bid"].as_str().unwrap().parse().unwrap();
    let ask: f64 = aapl["quote"]["ask"].as_str().unwrap().parse().unwrap();
    assert!(bid < ask && bid > 100.0 && ask < 400.0, "a plausible AAPL quote: {bid} {ask}");
    assert_eq!(aapl["book"]["bids"].as_array().unwrap().len(), 20);
    assert!(aapl["stats"]["trades"].as_u64().unwrap() > 0);

    let (status, body) = get_json(server.addr, "/v1/snapshot?symbols=AAPL,NOPE").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("unknown_symbol")));
    let (status, body) = get_json(server.addr, "/v1/snapshot").await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
    let (status, body) = get_json(server.addr, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body["feeds"][0]["name"], "simulator");
    assert_eq!(body["feeds"][0]["state"], "live");
    server.shutdown().await;
}

/// A client that stops reading backs its socket up: the server keeps writing
/// everyone else on time, hands the stalled connection to its own task, and when
/// the outbox overflows a `full` subscription, closes it with 4008 behind every
/// frame already accepted, each of them whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_cut_off_cleanly_and_disturbs_no_one() {
    let server = start(&["--rate", "20000", "--outbox-max", "256", "--conflate-after", "64"]).await;
    // A small receive buffer, so the server's socket fills within moments.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (stalled, _) = tokio_tungstenite::client_async(common::ws_url(server.addr), stream).await.unwrap();
    let mut stalled = Some(stalled);
    let (_, instruments) = get_json(server.addr, "/v1/instruments").await;
    let symbols: Vec<_> = instruments["instruments"].as_array().unwrap().iter().map(|i| i["symbol"].clone()).collect();
    let subscribe = json!({"op":"subscribe","channels":["quotes","trades","book"],"symbols":symbols,"delivery":"full"});
    let message = tokio_tungstenite::tungstenite::Message::text(subscribe.to_string());
    futures_util::SinkExt::send(stalled.as_mut().unwrap(), message).await.unwrap();

    let mut live = Client::connect(server.addr).await;
    live.subscribe(&["trades"], &["BTC-USD", "ETH-USD"]).await;
    // Stall until the server gives up on the stalled client (its socket fills,
    // then its outbox); the live client's trades stay gapless throughout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    // The stalled client resumes reading as soon as it is cut off (a client that
    // still reads nothing gets CLOSE_LINGER, then the socket is dropped): whole
    // JSON frames, then 4008.
    let mut stalled_reader = None;
    // Until the stalled client is cut off, and the live one has had its share since.
    let mut wanted = usize::MAX;
    while updates(&seen).len() < wanted {
        for _ in 0..50 {
            seen.push(live.json().await);
        }
        if stalled_reader.is_none() {
            let (_, stats) = get_json(server.addr, "/v1/stats").await;
            if stats["slow_consumer_closes"].as_u64().unwrap_or(0) > 0 {
                wanted = updates(&seen).len() + 200;
                let mut stalled = stalled.take().unwrap();
                stalled_reader = Some(tokio::spawn(async move {
                    let mut frames = 0;
                    loop {
                        let message =
                            tokio::time::timeout(Duration::from_secs(10), futures_util::StreamExt::next(&mut stalled))
                                .await
                                .expect("the server closes the stalled client")
                                .expect("a close frame before the end")
                                .expect("frames are well formed");
                        match message {
                            tokio_tungstenite::tungstenite::Message::Text(text) => {
                                serde_json::from_str::<serde_json::Value>(&text).expect("each frame is whole JSON");
                                frames += 1;
                            }
                            tokio_tungstenite::tungstenite::Message::Close(frame) => {
                                return (frame.expect("a close code"), frames);
                            }
                            _ => {}
                        }
                    }
                }));
            }
            assert!(tokio::time::Instant::now() < deadline, "the stalled client was never cut off: {stats}");
        }
    }
    assert!(updates(&seen).len() > 100, "the live client kept streaming");
    assert_sequenced(&seen);
    let (close, frames) = stalled_reader.unwrap().await.unwrap();
    assert_eq!(u16::from(close.code), 4008, "{close:?}");
    assert!(frames > 0);
    // The server still serves newcomers.
    let mut fresh = Client::connect(server.addr).await;
    fresh.round_trip(1).await;
}

/// A client's ping is answered with a pong carrying its payload, in order with
/// the data (the reply goes through the connection's outbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pings_get_pongs() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = start(&["--rate", "2000"]).await;
    let mut client = Client::connect(server.addr).await;
    client.subscribe(&["quotes"], &["BTC-USD"]).await;
    client.until_type("snapshot").await;
    client.socket.send(Message::Ping("are you there".into())).await.unwrap();
    let pong = loop {
        match tokio::time::timeout(Duration::from_secs(5), client.socket.next())
            .await
            .expect("a pong")
            .unwrap()
            .unwrap()
        {
            Message::Pong(payload) => break payload,
            Message::Text(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(&pong[..], b"are you there");
    client.round_trip(2).await;
}

/// Every subscribe and unsubscribe is answered, after the snapshots it caused
/// (and the error about symbols it could not take), with what it changed; in
/// JSON and in protobuf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribes_and_unsubscribes_are_acknowledged_after_their_snapshots() {
    let server = start(&["--rate", "200", "--symbols", "BTC-USD,AAPL"]).await;
    let mut client = Client::connect(server.addr).await;
    client
        .send(json!({"op":"subscribe","channels":["quotes","book"],"symbols":["BTC-USD","NO-SUCH","AAPL","BTC-USD"]}))
        .await;
    let mut snapshots = Vec::new();
    let error = loop {
        let message = client.json().await;
        match message["type"].as_str() {
            Some("snapshot") => snapshots.push((message["symbol"].clone(), message["channel"].clone())),
            Some("batch") => {}
            Some("error") => break message,
            _ => panic!("before the ack, snapshots, data and the error only: {message}"),
        }
    };
    assert_eq!((error["code"].as_str(), error["op"].as_str()), (Some("unknown_symbol"), Some("subscribe")), "{error}");
    assert_eq!(snapshots.len(), 4, "one snapshot per stream, before the ack: {snapshots:?}");
    let ack = client.until_type("subscribed").await;
    assert_eq!(ack, json!({"type":"subscribed","symbols":["BTC-USD","AAPL"],"channels":["quotes","book"]}));

    client.send(json!({"op":"unsubscribe","channels":["book"],"symbols":["AAPL"]})).await;
    let ack = client.until_type("unsubscribed").await;
    assert_eq!(ack, json!({"type":"unsubscribed","symbols":["AAPL"],"channels":["book"]}));
    // Refused whole: an error, no ack.
    client.send(json!({"op":"subscribe","channels":["quotes"],"symbols":["AAPL"],"delivery":"sometimes"})).await;
    assert_eq!(client.until_type("error").await["code"], "bad_delivery");
    let after = client.round_trip(1).await;
    assert!(after.iter().all(|m| m["type"] != "subscribed"), "no ack for a refused subscribe: {after:?}");

    // Protobuf: the same answers, as ServerMessage.subscribed / .unsubscribed.
    use futures_util::{SinkExt, StreamExt};
    use prost::Message as _;
    use tickwire::codec::proto::pb;
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{}/v1/ws?format=proto", server.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let request = |op| pb::ClientMessage { op: Some(op) }.encode_to_vec();
    let subscribe = pb::Subscribe {
        channels: vec![pb::Channel::Trades as i32],
        symbols: vec!["AAPL".into()],
        ..Default::default()
    };
    socket.send(Message::binary(request(pb::client_message::Op::Subscribe(subscribe)))).await.unwrap();
    let mut seen_snapshot = false;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap().unwrap().unwrap();
        let Message::Binary(bytes) = frame else { continue };
        match pb::ServerMessage::decode(bytes.as_ref()).unwrap().kind {
            Some(pb::server_message::Kind::Snapshot(_)) => seen_snapshot = true,
            Some(pb::server_message::Kind::Subscribed(ack)) => {
                assert!(seen_snapshot, "the snapshot comes first");
                assert_eq!((ack.symbols, ack.channels), (vec!["AAPL".to_owned()], vec![pb::Channel::Trades as i32]));
                break;
            }
            _ => {}
        }
    }
    let unsubscribe = pb::Unsubscribe { channels: vec![pb::Channel::Trades as i32], symbols: vec!["AAPL".into()] };
    socket.send(Message::binary(request(pb::client_message::Op::Unsubscribe(unsubscribe)))).await.unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap().unwrap().unwrap();
        let Message::Binary(bytes) = frame else { continue };
        if let Some(pb::server_message::Kind::Unsubscribed(ack)) =
            pb::ServerMessage::decode(bytes.as_ref()).unwrap().kind
        {
            assert_eq!(ack.symbols, vec!["AAPL".to_owned()]);
            break;
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_dropped_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(&["--symbols", "AAPL", "--header-timeout-ms", "500"]).await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        socket.write_all(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websock").await.unwrap();
        slow.push(socket);
    }
    let started = std::time::Instant::now();
    for mut socket in slow {
        let mut buffer = [0u8; 1024];
        // The server drops it: end of stream (or a reset), well before 5 s.
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buffer)).await;
        assert!(read.is_ok(), "still held after 5 s");
    }
    let held = started.elapsed();
    assert!(held < Duration::from_secs(4), "half-sent requests held for {held:?}");
    // A whole request is served as ever.
    let (status, _) = get_json(server.addr, "/healthz").await;
    assert_eq!(status, 200);
    server.shutdown().await;
}
