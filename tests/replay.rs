//! `/v1/replay` over real WebSocket clients, in JSON and protobuf: both formats
//! stream the same stored events, and the controls (pause, resume, seek, speed,
//! ping) work and refuse bad input with a defined error, in either format.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::store::TempDir;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::Value;
use tickwire::app::Server;
use tickwire::codec::proto::pb;
use tickwire::model::now_nanos;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Records ~1.5 s of simulated BTC-USD and AAPL into a fresh SQLite store, then
/// serves that store (with a simulator too slow to add much). Returns the server,
/// the recorded range, and the store's directory (kept alive).
async fn recorded() -> (Server, u64, u64, TempDir) {
    let dir = TempDir::new("replay-formats");
    let url = dir.sqlite_url();
    let journal = dir.path("journal");
    let from = now_nanos();
    let server =
        common::start(&["--store", &url, "--journal-dir", &journal, "--rate", "2000", "--symbols", "BTC-USD,AAPL"])
            .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.shutdown().await;
    let to = now_nanos();
    let server =
        common::start(&["--store", &url, "--journal-dir", &journal, "--rate", "1", "--symbols", "BTC-USD,AAPL"]).await;
    (server, from, to, dir)
}

async fn proto_replay(server: &Server, query: &str) -> common::Socket {
    let mut request = format!("ws://{}/v1/replay?{query}", server.addr).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "tickwire.v1.proto".parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "tickwire.v1.proto");
    socket
}

/// The next server message of a protobuf replay, or the close code.
async fn next_proto(socket: &mut common::Socket) -> Result<pb::server_message::Kind, Option<u16>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), socket.next()).await.expect("replay answers") {
            Some(Ok(Message::Binary(bytes))) => {
                return Ok(pb::ServerMessage::decode(bytes).expect("a ServerMessage").kind.expect("a kind"));
            }
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(Message::Text(text))) => panic!("a text frame on a protobuf replay: {text}"),
            Some(Ok(_)) => continue,
            other => panic!("replay connection failed: {other:?}"),
        }
    }
}

async fn send_control(socket: &mut common::Socket, action: pb::replay_control::Action) {
    let message =
        pb::ClientMessage { op: Some(pb::client_message::Op::Replay(pb::ReplayControl { action: Some(action) })) };
    socket.send(Message::binary(message.encode_to_vec())).await.unwrap();
}

/// Reads past batches until a message that is not one.
async fn next_non_batch(socket: &mut common::Socket) -> Result<pb::server_message::Kind, Option<u16>> {
    loop {
        match next_proto(socket).await? {
            pb::server_message::Kind::Batch(_) => continue,
            other => return Ok(other),
        }
    }
}

/// One update as (symbol, channel, seq, ts_event, the first price-like value as
/// a decimal string): enough to tell two streams apart.
type Row = (String, String, u64, u64, String);

fn decimal(mantissa: i64, decimals: u32) -> String {
    let text = format!("{:0>width$}", mantissa.unsigned_abs(), width = decimals as usize + 1);
    let (whole, frac) = text.split_at(text.len() - decimals as usize);
    let sign = if mantissa < 0 { "-" } else { "" };
    if decimals == 0 { format!("{sign}{whole}") } else { format!("{sign}{whole}.{frac}") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_replay_streams_what_json_replay_streams() {
    let (server, from, to, _dir) = recorded().await;
    let query = format!("symbols=BTC-USD,AAPL&channels=quotes,trades&from={from}&to={to}&speed=max");

    // JSON.
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/replay?{query}", server.addr)).await.unwrap();
    let mut json_rows: Vec<Row> = Vec::new();
    let mut json_end = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), socket.next()).await.unwrap().unwrap().unwrap() {
            Message::Text(text) => {
                let v: Value = serde_json::from_str(&text).unwrap();
                match v["type"].as_str() {
                    Some("batch") => json_rows.extend(v["updates"].as_array().unwrap().iter().map(|u| {
                        let price = u.get("bid").or(u.get("price")).unwrap().as_str().unwrap().to_owned();
                        (
                            u["symbol"].as_str().unwrap().to_owned(),
                            u["channel"].as_str().unwrap().to_owned(),
                            u["seq"].as_u64().unwrap(),
                            u["ts_event"].as_u64().unwrap(),
                            price,
                        )
                    })),
                    Some("end") => json_end = v["events"].as_u64(),
                    _ => {}
                }
            }
            Message::Close(frame) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
                break;
            }
            _ => {}
        }
    }
    assert!(json_rows.len() > 500, "{} updates recorded", json_rows.len());
    assert_eq!(json_end, Some(json_rows.len() as u64));

    // Protobuf: the first message names the instruments, so updates can be read.
    let mut socket = proto_replay(&server, &query).await;
    let Ok(pb::server_message::Kind::Replay(status)) = next_proto(&mut socket).await else {
        panic!("a protobuf replay opens with its status")
    };
    assert_eq!(status.state, pb::replay_status::State::Playing as i32);
    assert_eq!((status.from, status.to, status.speed.as_str()), (from, to, "max"));
    let instruments: HashMap<u32, pb::InstrumentInfo> =
        status.instruments.into_iter().map(|i| (i.instrument_id, i)).collect();
    let mut symbols: Vec<&str> = instruments.values().map(|i| i.symbol.as_str()).collect();
    symbols.sort_unstable();
    assert_eq!(symbols, ["AAPL", "BTC-USD"]);
    let mut proto_rows: Vec<Row> = Vec::new();
    let close = loop {
        match next_proto(&mut socket).await {
            Ok(pb::server_message::Kind::Batch(batch)) => {
                for u in batch.updates {
                    let inst = &instruments[&u.instrument_id];
                    let (channel, price) = match u.data.unwrap() {
                        pb::update::Data::Quote(q) => ("quotes", decimal(q.bid, inst.price_decimals)),
                        pb::update::Data::Trade(t) => ("trades", decimal(t.price, inst.price_decimals)),
                        other => panic!("not subscribed: {other:?}"),
                    };
                    proto_rows.push((inst.symbol.clone(), channel.into(), u.seq, u.ts_event, price));
                }
            }
            Ok(pb::server_message::Kind::End(end)) => {
                assert_eq!((end.events, end.from, end.to), (proto_rows.len() as u64, from, to));
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(code) => break code,
        }
    };
    assert_eq!(close, Some(1000));
    assert_eq!(proto_rows, json_rows, "protobuf replay == JSON replay, update for update");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_controls_work_and_refuse_bad_input_in_protobuf() {
    use pb::replay_control::{Action, Pause, Resume};
    use pb::server_message::Kind;
    let (server, from, to, _dir) = recorded().await;
    // Real time: the whole range would take as long as it was recorded.
    let mut socket =
        proto_replay(&server, &format!("symbols=BTC-USD&channels=quotes,trades&from={from}&to={to}&speed=1")).await;
    assert!(matches!(next_proto(&mut socket).await, Ok(Kind::Replay(_))));

    send_control(&mut socket, Action::Pause(Pause {})).await;
    let Ok(Kind::Replay(paused)) = next_non_batch(&mut socket).await else { panic!("a status answers pause") };
    assert_eq!(paused.state, pb::replay_status::State::Paused as i32);
    // Paused: nothing but answers to controls.
    let ping = pb::ClientMessage { op: Some(pb::client_message::Op::Ping(pb::Ping { id: 7 })) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    socket.send(Message::binary(ping.encode_to_vec())).await.unwrap();
    match next_proto(&mut socket).await {
        Ok(Kind::Pong(pong)) => assert_eq!(pong.id, 7),
        other => panic!("paused, the next message is the pong: {other:?}"),
    }

    // Bad input: a defined error each, and the session goes on.
    send_control(&mut socket, Action::Speed("fast".into())).await;
    let Ok(Kind::Error(error)) = next_proto(&mut socket).await else { panic!("bad speed is an error") };
    assert_eq!(error.code, "bad_speed");
    send_control(&mut socket, Action::SeekTo(to + 1_000_000_000)).await;
    let Ok(Kind::Error(error)) = next_proto(&mut socket).await else { panic!("bad seek is an error") };
    assert_eq!(error.code, "bad_seek");
    socket.send(Message::text(r#"{"op":"pause"}"#)).await.unwrap();
    let Ok(Kind::Error(error)) = next_proto(&mut socket).await else { panic!("a text frame is an error") };
    assert_eq!(error.code, "unsupported_frame");
    socket.send(Message::binary(vec![0xff, 0xff, 0x01])).await.unwrap();
    let Ok(Kind::Error(error)) = next_proto(&mut socket).await else { panic!("garbage is an error") };
    assert_eq!(error.code, "invalid_message");
    let subscribe = pb::ClientMessage { op: Some(pb::client_message::Op::Subscribe(pb::Subscribe::default())) };
    socket.send(Message::binary(subscribe.encode_to_vec())).await.unwrap();
    let Ok(Kind::Error(error)) = next_proto(&mut socket).await else { panic!("subscribe is an error") };
    assert_eq!(error.code, "unknown_op");

    // Seek to the middle, play at max speed: the rest arrives, none before the seek.
    let middle = from + (to - from) / 2;
    send_control(&mut socket, Action::SeekTo(middle)).await;
    let Ok(Kind::Replay(sought)) = next_proto(&mut socket).await else { panic!("a status answers seek") };
    assert_eq!((sought.at, sought.state), (middle, pb::replay_status::State::Paused as i32));
    send_control(&mut socket, Action::Speed("max".into())).await;
    let Ok(Kind::Replay(fast)) = next_proto(&mut socket).await else { panic!("a status answers speed") };
    assert_eq!(fast.speed, "max");
    send_control(&mut socket, Action::Resume(Resume {})).await;
    let Ok(Kind::Replay(playing)) = next_proto(&mut socket).await else { panic!("a status answers resume") };
    assert_eq!(playing.state, pb::replay_status::State::Playing as i32);
    let mut after_seek = 0;
    let close = loop {
        match next_proto(&mut socket).await {
            Ok(Kind::Batch(batch)) => {
                for u in batch.updates {
                    assert!(u.ts_event >= middle, "an update from before the seek target");
                    after_seek += 1;
                }
            }
            Ok(Kind::End(end)) => assert_eq!(end.events, after_seek),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(code) => break code,
        }
    };
    assert_eq!(close, Some(1000));
    assert!(after_seek > 50, "{after_seek} updates after the seek");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_controls_work_and_refuse_bad_input_in_json() {
    let (server, from, to, _dir) = recorded().await;
    let url = format!("ws://{}/v1/replay?symbols=AAPL&from={from}&to={to}&speed=1", server.addr);
    let mut client = common::Client { socket: tokio_tungstenite::connect_async(url).await.unwrap().0 };
    assert_eq!(client.until_type("replay").await["instruments"][0]["symbol"], "AAPL");
    client.send(serde_json::json!({"op":"pause"})).await;
    assert_eq!(client.until_type("replay").await["state"], "paused");
    for (control, code) in [
        (r#"{"op":"rewind"}"#, "unknown_op"),
        (r#"{"op":"speed","speed":-2}"#, "bad_speed"),
        (r#"{"op":"seek","to":"yesterday"}"#, "bad_seek"),
        ("not json", "invalid_json"),
        (r#"{"speed":2}"#, "bad_request"),
    ] {
        client.send_raw(Message::text(control)).await;
        let error = client.until_type("error").await;
        assert_eq!(error["code"], code, "{control}: {error}");
    }
    client.send_raw(Message::binary(vec![1, 2, 3])).await;
    assert_eq!(client.until_type("error").await["code"], "unsupported_frame");
    client.send(serde_json::json!({"op":"speed","speed":"max"})).await;
    assert_eq!(client.until_type("replay").await["speed"], "max");
    client.send(serde_json::json!({"op":"resume"})).await;
    let end = client.until_type("end").await;
    assert!(end["events"].as_u64().unwrap() > 50, "{end}");
    server.shutdown().await;
}
