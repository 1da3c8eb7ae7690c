//! Protobuf streams, format negotiation and gapless resume, with real clients.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{Client, start};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tickwire::client::{ClientConfig, Data, StreamClient, StreamEvent, Update};
use tickwire::codec::Format;
use tickwire::codec::proto::pb;
use tickwire::model::Channel;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn config(addr: std::net::SocketAddr, format: Format, symbols: &[&str], channels: &[Channel]) -> ClientConfig {
    ClientConfig {
        url: common::ws_url(addr),
        format,
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        channels: channels.to_vec(),
        reconnect: true,
        max_backoff: Duration::from_millis(500),
        from_time: None,
        token: None,
    }
}

/// Updates by (symbol, channel, seq) until `wanted` updates arrived.
async fn gather(client: &mut StreamClient, wanted: usize) -> BTreeMap<(String, Channel, u64), Update> {
    let mut seen = BTreeMap::new();
    while seen.len() < wanted {
        let event = tokio::time::timeout(Duration::from_secs(10), client.next()).await.expect("stream flows");
        if let Some(StreamEvent::Update(u)) = event.unwrap() {
            seen.insert((u.symbol.to_string(), u.channel, u.seq), u);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_and_json_clients_decode_the_same_values() {
    let server = start(&["--rate", "3000", "--symbols", "BTC-USD,XRP-USD,AAPL"]).await;
    let all = [Channel::Quotes, Channel::Trades, Channel::Book];
    let symbols = ["BTC-USD", "XRP-USD", "AAPL"];
    let mut json = StreamClient::connect(config(server.addr, Format::Json, &symbols, &all)).await.unwrap();
    let mut proto = StreamClient::connect(config(server.addr, Format::Proto, &symbols, &all)).await.unwrap();
    let (a, b) = tokio::join!(gather(&mut json, 1500), gather(&mut proto, 1500));
    let common: Vec<_> = a.keys().filter(|k| b.contains_key(k)).collect();
    assert!(common.len() > 1000, "both saw the same stream: {} shared updates", common.len());
    for key in common {
        assert_eq!(a[key], b[key], "{key:?}");
    }
    assert!(b.values().any(|u| matches!(u.data, Some(Data::Book { .. }))));
    assert_eq!((json.duplicates, proto.duplicates), (0, 0));
    server.shutdown().await;
}

/// Delivered trade sequences per symbol, and the ranges announced missing.
#[derive(Default)]
struct Ledger {
    trades: HashMap<String, Vec<u64>>,
    gaps: Vec<(String, u64, u64)>,
    snapshots: HashMap<String, Vec<u64>>,
    reconnects: u32,
    live: Vec<(String, u64)>,
}

impl Ledger {
    fn record(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Update(u) if u.channel == Channel::Trades => {
                self.trades.entry(u.symbol.to_string()).or_default().push(u.seq)
            }
            StreamEvent::Snapshot(u) if u.channel == Channel::Trades => {
                self.snapshots.entry(u.symbol.to_string()).or_default().push(u.seq)
            }
            StreamEvent::Gap { symbol, from_seq, to_seq, .. } => self.gaps.push((symbol, from_seq, to_seq)),
            StreamEvent::Reconnected { .. } => self.reconnects += 1,
            StreamEvent::Live { symbol, seq, .. } => self.live.push((symbol, seq)),
            _ => {}
        }
    }

    /// Every sequence after the first snapshot up to the last one delivered is
    /// delivered exactly once, or lies in an announced gap (then covered by the
    /// snapshot that follows it).
    fn assert_exactly_once(&self) {
        for (symbol, seqs) in &self.trades {
            let first = self.snapshots[symbol][0];
            let last = *seqs.iter().max().unwrap();
            let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
            for &s in seqs {
                *counts.entry(s).or_default() += 1;
            }
            for seq in first + 1..=last {
                let delivered = counts.get(&seq).copied().unwrap_or(0);
                let in_gap = self.gaps.iter().any(|(g, from, to)| g == symbol && (*from..=*to).contains(&seq));
                assert!(
                    delivered == 1 || (delivered == 0 && in_gap),
                    "{symbol} trade #{seq} delivered {delivered} times (gap: {in_gap})"
                );
            }
        }
    }
}

async fn run_for(client: &mut StreamClient, ledger: &mut Ledger, updates: usize) {
    let mut n = 0;
    while n < updates {
        let event = tokio::time::timeout(Duration::from_secs(10), client.next()).await.expect("stream flows");
        let event = event.unwrap().expect("stream open");
        if matches!(event, StreamEvent::Update(_)) {
            n += 1;
        }
        ledger.record(event);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_cut_resumes_without_gap_or_duplicate() {
    let server = start(&["--rate", "5000", "--symbols", "BTC-USD,ETH-USD"]).await;
    for format in [Format::Json, Format::Proto] {
        let mut client =
            StreamClient::connect(config(server.addr, format, &["BTC-USD", "ETH-USD"], &[Channel::Trades]))
                .await
                .unwrap();
        let mut ledger = Ledger::default();
        run_for(&mut client, &mut ledger, 200).await;
        client.cut(); // the connection dies mid-stream
        tokio::time::sleep(Duration::from_millis(300)).await; // trades keep flowing meanwhile
        run_for(&mut client, &mut ledger, 200).await;
        assert_eq!(ledger.reconnects, 1, "{format:?}");
        assert!(ledger.gaps.is_empty(), "{format:?}: the ring covered a short cut: {:?}", ledger.gaps);
        assert_eq!(ledger.snapshots.values().map(Vec::len).max(), Some(1), "{format:?}: a resume sends no snapshot");
        ledger.assert_exactly_once();
        assert_eq!(client.duplicates, 0, "{format:?}: the server never repeats an update");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_cut_resumes_without_gap_or_duplicate() {
    // The server closes a connection that stops answering pings (code 4000).
    let server = start(&[
        "--rate",
        "5000",
        "--symbols",
        "BTC-USD,ETH-USD",
        "--ping-interval-ms",
        "50",
        "--idle-timeout-ms",
        "200",
    ])
    .await;
    let mut client =
        StreamClient::connect(config(server.addr, Format::Proto, &["BTC-USD", "ETH-USD"], &[Channel::Trades]))
            .await
            .unwrap();
    let mut ledger = Ledger::default();
    run_for(&mut client, &mut ledger, 200).await;
    tokio::time::sleep(Duration::from_millis(600)).await; // not reading: no pongs, so the server cuts us
    run_for(&mut client, &mut ledger, 400).await;
    assert!(ledger.reconnects >= 1, "the server closed the connection");
    assert!(ledger.gaps.is_empty(), "{:?}", ledger.gaps);
    ledger.assert_exactly_once();
    assert_eq!(client.duplicates, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_older_than_the_ring_gets_gap_then_snapshot() {
    let server = start(&["--rate", "5000", "--symbols", "BTC-USD", "--ring-depth", "50"]).await;
    let mut client =
        StreamClient::connect(config(server.addr, Format::Json, &["BTC-USD"], &[Channel::Trades])).await.unwrap();
    let mut ledger = Ledger::default();
    run_for(&mut client, &mut ledger, 50).await;
    client.cut();
    tokio::time::sleep(Duration::from_millis(800)).await; // far more than 50 events pass
    run_for(&mut client, &mut ledger, 50).await;
    assert_eq!(ledger.gaps.len(), 1, "one gap for the lost range");
    let (_, from, to) = &ledger.gaps[0];
    assert_eq!(ledger.snapshots["BTC-USD"].len(), 2, "a fresh snapshot after the gap");
    assert_eq!(*to, ledger.snapshots["BTC-USD"][1], "the gap ends at the fresh snapshot");
    assert!(from <= to);
    ledger.assert_exactly_once();
    server.shutdown().await;
}

/// With a store, a resume older than the ring is served from stored history and
/// stitched to the ring: no gap, no duplicate, and a `live` marker at the seam.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_older_than_the_ring_is_served_from_the_store() {
    let dir = common::store::TempDir::new("resume-history");
    let store = dir.sqlite_url();
    let server =
        start(&["--rate", "5000", "--symbols", "BTC-USD,ETH-USD", "--ring-depth", "50", "--store", &store]).await;
    for format in [Format::Json, Format::Proto] {
        let mut client =
            StreamClient::connect(config(server.addr, format, &["BTC-USD"], &[Channel::Trades])).await.unwrap();
        let mut ledger = Ledger::default();
        run_for(&mut client, &mut ledger, 50).await;
        client.cut();
        tokio::time::sleep(Duration::from_millis(1500)).await; // far past the ring; the writer has stored it
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while ledger.live.is_empty() {
            assert!(ledger.gaps.is_empty(), "{format:?}: a gap instead of history: {:?}", ledger.gaps);
            assert!(std::time::Instant::now() < deadline, "{format:?}: no live marker within 15 s");
            run_for(&mut client, &mut ledger, 1).await;
        }
        run_for(&mut client, &mut ledger, 100).await;
        assert!(ledger.gaps.is_empty(), "{format:?}: history filled the hole: {:?}", ledger.gaps);
        assert_eq!(ledger.snapshots["BTC-USD"].len(), 1, "{format:?}: no fresh snapshot");
        assert_eq!(ledger.live.len(), 1, "{format:?}: one live marker at the seam");
        assert_eq!(
            ledger.trades.keys().collect::<Vec<_>>(),
            ["BTC-USD"],
            "{format:?}: stored updates keep their symbol"
        );
        ledger.assert_exactly_once();
        assert_eq!(client.duplicates, 0);
    }
    server.shutdown().await;
}

async fn proto_socket(addr: std::net::SocketAddr) -> common::Socket {
    let mut request = common::ws_url(addr).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "tickwire.v1.proto".parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "tickwire.v1.proto");
    socket
}

async fn next_proto(socket: &mut common::Socket) -> pb::server_message::Kind {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap().unwrap().unwrap();
        if let Message::Binary(bytes) = message {
            return pb::ServerMessage::decode(bytes.as_ref()).unwrap().kind.unwrap();
        }
    }
}

async fn proto_error(socket: &mut common::Socket) -> pb::Error {
    loop {
        if let pb::server_message::Kind::Error(e) = next_proto(socket).await {
            return e;
        }
    }
}

async fn proto_ping(socket: &mut common::Socket, id: u64) {
    let ping = pb::ClientMessage { op: Some(pb::client_message::Op::Ping(pb::Ping { id })) };
    socket.send(Message::binary(ping.encode_to_vec())).await.unwrap();
    loop {
        if let pb::server_message::Kind::Pong(p) = next_proto(socket).await
            && p.id == id
        {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_protobuf_input_gets_defined_errors() {
    let server = start(&["--rate", "1000", "--symbols", "BTC-USD,AAPL"]).await;
    let mut socket = proto_socket(server.addr).await;

    socket.send(Message::binary(vec![0xff, 0xff, 0xff, 0x01, 0x02])).await.unwrap();
    assert_eq!(proto_error(&mut socket).await.code, "invalid_message");
    proto_ping(&mut socket, 1).await;

    socket.send(Message::text(r#"{"op":"ping"}"#)).await.unwrap();
    assert_eq!(proto_error(&mut socket).await.code, "unsupported_frame");
    proto_ping(&mut socket, 2).await;

    let subscribe = |since: Vec<pb::Since>, symbols: Vec<&str>| pb::ClientMessage {
        op: Some(pb::client_message::Op::Subscribe(pb::Subscribe {
            channels: vec![pb::Channel::Trades as i32],
            symbols: symbols.into_iter().map(str::to_owned).collect(),
            since,
            ..Default::default()
        })),
    };
    let future = pb::Since { symbol: "AAPL".into(), channel: pb::Channel::Trades as i32, seq: u64::MAX / 2 };
    socket.send(Message::binary(subscribe(vec![future], vec!["AAPL"]).encode_to_vec())).await.unwrap();
    let error = proto_error(&mut socket).await;
    assert_eq!(error.code, "bad_since");
    // Which stream the refused since named is in fields, not only in the text.
    assert_eq!((error.symbol.as_str(), error.channel), ("AAPL", pb::Channel::Trades as i32));
    let stray = pb::Since { symbol: "NO-SUCH".into(), channel: 0, seq: 1 };
    socket.send(Message::binary(subscribe(vec![stray], vec!["AAPL"]).encode_to_vec())).await.unwrap();
    assert_eq!(proto_error(&mut socket).await.code, "bad_since");
    socket.send(Message::binary(subscribe(vec![], vec!["NO-SUCH"]).encode_to_vec())).await.unwrap();
    assert_eq!(proto_error(&mut socket).await.code, "unknown_symbol");
    proto_ping(&mut socket, 3).await;

    // JSON: since in the future and for an unknown symbol.
    let mut json = Client::connect(server.addr).await;
    json.send(
        serde_json::json!({"op":"subscribe","channels":["trades"],"symbols":["AAPL"],"since":{"AAPL":999999999}}),
    )
    .await;
    let error = json.until_type("error").await;
    assert_eq!(
        (&error["code"], &error["symbol"], &error["channel"]),
        (&"bad_since".into(), &"AAPL".into(), &"trades".into())
    );
    json.send(serde_json::json!({"op":"subscribe","channels":["trades"],"symbols":["NOPE"],"since":{"NOPE":1}})).await;
    assert_eq!(json.until_type("error").await["code"], "unknown_symbol");
    json.round_trip(4).await;

    // Negotiation failures are refused before the upgrade, with a JSON reason.
    let mut request = common::ws_url(server.addr).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "mqtt, graphql-ws".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).to_string();
            assert!(body.contains("unsupported_protocol"), "{body}");
        }
        other => panic!("expected 400, got {other:?}"),
    }
    let url = format!("{}?format=xml", common::ws_url(server.addr));
    assert!(matches!(
        tokio_tungstenite::connect_async(url).await,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 400
    ));
    // ?format=proto works without a subprotocol.
    let (mut by_query, _) =
        tokio_tungstenite::connect_async(format!("{}?format=proto", common::ws_url(server.addr))).await.unwrap();
    proto_ping(&mut by_query, 5).await;
    server.shutdown().await;
}
