//! The WebSocket edge against RFC 6455, in the cases the Autobahn suite found
//! (`make conformance` runs the whole suite; docs/CONFORMANCE.md):
//! - `serve --conformance-echo` serves `/v1/echo`, which writes each message
//!   back unchanged with its opcode; without the flag there is no such route,
//!   and with it the API document still does not list it;
//! - a client's close frame is answered with 1000; with 1002 when its code is
//!   one no endpoint may send (or is 1002) or its payload is one byte; with
//!   1007 when its reason is not UTF-8;
//! - a text frame is failed with 1007 as soon as a byte that cannot be UTF-8
//!   arrives, not once the whole frame is in.

mod common;

use std::time::Duration;

use common::RawClient;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The next message that is not a ping, within a few seconds.
async fn next_message(socket: &mut common::Socket) -> Message {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("an answer within 5 s")
            .expect("the connection is open")
            .expect("a valid frame");
        if !matches!(message, Message::Ping(_)) {
            return message;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_route_is_served_only_with_its_flag_and_echoes_each_message_as_sent() {
    let plain = common::start(&["--rate", "50", "--symbols", "BTC-USD"]).await;
    match tokio_tungstenite::connect_async(format!("ws://{}/v1/echo", plain.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("/v1/echo without --conformance-echo: {:?}", other.map(|(_, r)| r.status())),
    }
    plain.shutdown().await;

    let server = common::start(&[
        "--rate",
        "50",
        "--symbols",
        "BTC-USD",
        "--conformance-echo",
        "--max-message-bytes",
        "4194304",
    ])
    .await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/echo", server.addr)).await.unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let sent = [
        Message::text("héllo, wörld"),
        Message::text(""),
        Message::binary(vec![0u8, 0xff, 0x13, 0x37]),
        Message::binary(big),
        Message::text(r#"{"op":"subscribe","channels":["quotes"],"symbols":["BTC-USD"]}"#),
    ];
    for message in sent {
        socket.send(message.clone()).await.unwrap();
        assert_eq!(next_message(&mut socket).await, message, "echoed unchanged, same opcode");
    }
    socket.send(Message::Ping(b"are you there".to_vec().into())).await.unwrap();
    assert_eq!(next_message(&mut socket).await, Message::Pong(b"are you there".to_vec().into()));
    socket.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "done".into() }))).await.unwrap();
    match next_message(&mut socket).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected the close reply, got {other:?}"),
    }

    // Not part of the API: the document lists what it listed before.
    let (status, document) = common::get_json(server.addr, "/v1/openapi.json").await;
    assert_eq!(status, 200);
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.contains_key("/v1/ws") && !paths.contains_key("/v1/echo"), "{:?}", paths.keys());
    server.shutdown().await;
}

/// A masked close frame (mask key zero) with `payload` as it is.
fn close_frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut frame = vec![0x88, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_frame_is_answered_by_what_it_carries() {
    let server = common::start(&["--rate", "50", "--symbols", "BTC-USD"]).await;
    let with_code = |code: u16| close_frame(&code.to_be_bytes());
    let mut cases: Vec<(String, Vec<u8>, u16)> = Vec::new();
    for code in [1000, 1001, 1003, 1011, 3000, 3999, 4000, 4999] {
        cases.push((format!("code {code}"), with_code(code), 1000));
    }
    cases.push(("code 1002".into(), with_code(1002), 1002));
    // Never sent in a frame (1005, 1006, 1015), reserved, or out of range.
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
        cases.push((format!("code {code}"), with_code(code), 1002));
    }
    cases.push(("no payload".into(), close_frame(b""), 1000));
    cases.push(("a one-byte payload".into(), close_frame(b"a"), 1002));
    let mut bad_reason = 1000u16.to_be_bytes().to_vec();
    bad_reason.extend_from_slice(&[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80]);
    cases.push(("a reason that is not UTF-8".into(), close_frame(&bad_reason), 1007));

    for (what, frame, expected) in cases {
        let mut client = RawClient::connect(server.addr).await;
        client.stream.write_all(&frame).await.unwrap();
        let frames = client.read_frames(Duration::from_secs(3)).await;
        let codes: Vec<u16> = frames.iter().filter_map(|f| f.close_code()).collect();
        assert_eq!(codes, [expected], "close with {what}: one close frame, {expected}: {frames:?}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_that_turns_invalid_is_failed_before_its_frame_is_whole() {
    let server = common::start(&["--rate", "50", "--symbols", "BTC-USD"]).await;
    let mut client = RawClient::connect(server.addr).await;
    // A 1,000-byte text frame (mask key zero) of which only a valid start and
    // U+110000 as UTF-8 would encode it (F4 90 80 80) are sent.
    let mut start = vec![0x81, 0x80 | 126];
    start.extend_from_slice(&1000u16.to_be_bytes());
    start.extend_from_slice(&[0, 0, 0, 0]);
    start.extend_from_slice("κόσμε".as_bytes());
    start.extend_from_slice(&[0xf4, 0x90, 0x80, 0x80]);
    client.stream.write_all(&start).await.unwrap();
    let frames = client.read_frames(Duration::from_secs(3)).await;
    let codes: Vec<u16> = frames.iter().filter_map(|f| f.close_code()).collect();
    assert_eq!(codes, [1007], "{frames:?}");
    server.shutdown().await;
}
