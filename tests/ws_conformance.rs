//! The WebSocket edge against RFC 6455 (`make conformance` runs the whole
//! Autobahn suite; docs/CONFORMANCE.md):
//! - `serve --conformance-echo` serves `/v1/echo`, which writes each message
//!   back unchanged with its opcode; without the flag there is no such route,
//!   and with it the API document still does not list it.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
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
