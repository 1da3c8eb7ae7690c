//! Access control against the real server: bearer tokens (header or `?token=`)
//! and allowed browser origins, on REST and on WebSocket upgrades, decided before
//! the upgrade with a JSON reason; probes and the dashboard page stay open.

mod common;

use std::net::SocketAddr;

use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

/// GET with extra headers: (status, raw head, JSON body or Null).
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |e| e + 1);
    (status, head.to_ascii_lowercase(), serde_json::from_str(&body[start..end]).unwrap_or(Value::Null))
}

/// The HTTP status a WebSocket upgrade was refused with, or 101.
async fn upgrade_status(request: tungstenite::handshake::client::Request) -> (u16, Option<common::Socket>) {
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, response)) => (response.status().as_u16(), Some(socket)),
        Err(tungstenite::Error::Http(response)) => (response.status().as_u16(), None),
        Err(other) => panic!("upgrade failed otherwise: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_origins_guard_rest_and_websocket() {
    let server = common::start(&[
        "--rate",
        "200",
        "--auth-token",
        "s3cret+1",
        "--allow-query-token",
        "--allowed-origin",
        "http://desk.example",
    ])
    .await;
    let addr = server.addr;

    // Open: probes and the page.
    assert_eq!(get(addr, "/healthz", &[]).await.0, 200);
    assert_eq!(get(addr, "/", &[]).await.0, 200);

    // REST: no token, a wrong one, then the header and the query forms.
    let (status, head, body) = get(addr, "/v1/instruments", &[]).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{body}");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert_eq!(get(addr, "/v1/instruments", &[("Authorization", "Bearer wrong")]).await.0, 401);
    assert_eq!(get(addr, "/metrics", &[]).await.0, 401);
    assert_eq!(get(addr, "/v1/instruments", &[("Authorization", "Bearer s3cret+1")]).await.0, 200);
    assert_eq!(get(addr, "/v1/instruments?token=s3cret%2B1", &[]).await.0, 200);
    assert_eq!(get(addr, "/v1/instruments?token=s3cret+1", &[]).await.0, 401, "+ decodes to a space");

    // Origins: a browser from elsewhere is refused even with a token.
    let (status, _, body) = get(addr, "/v1/instruments?token=s3cret%2B1", &[("Origin", "http://evil.example")]).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("origin_not_allowed")), "{body}");
    assert_eq!(get(addr, "/v1/instruments?token=s3cret%2B1", &[("Origin", "http://desk.example")]).await.0, 200);

    // WebSocket: refused before the upgrade without a token …
    let url = common::ws_url(addr);
    assert_eq!(upgrade_status(url.clone().into_client_request().unwrap()).await.0, 401);
    let mut evil = format!("{url}?token=s3cret%2B1").into_client_request().unwrap();
    evil.headers_mut().insert("Origin", "http://evil.example".parse().unwrap());
    assert_eq!(upgrade_status(evil).await.0, 403);
    // … and streams with one, by header or by query.
    let mut with_header = url.clone().into_client_request().unwrap();
    with_header.headers_mut().insert("Authorization", "Bearer s3cret+1".parse().unwrap());
    let mut browser = format!("{url}?token=s3cret%2B1").into_client_request().unwrap();
    browser.headers_mut().insert("Origin", "http://desk.example".parse().unwrap());
    for request in [with_header, browser] {
        let (status, socket) = upgrade_status(request).await;
        assert_eq!(status, 101);
        let mut client = common::Client { socket: socket.unwrap() };
        client.subscribe(&["quotes"], &["BTC-USD"]).await;
        assert_eq!(client.until_type("snapshot").await["symbol"], "BTC-USD");
        client.send_raw(Message::Close(None)).await;
    }
    assert_eq!(get(addr, "/metrics", &[("Authorization", "Bearer s3cret+1")]).await.0, 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_token_file_stops_the_start() {
    let args = tickwire::config::ServeArgs::parse_from_args([
        "--listen",
        "127.0.0.1:0",
        "--store",
        "none",
        "--auth-tokens-file",
        "/nonexistent/tokens",
    ])
    .unwrap();
    let error = tickwire::app::start(&args).await.err().expect("refused");
    assert!(error.to_string().contains("/nonexistent/tokens"), "{error}");
}
