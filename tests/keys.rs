//! API keys against the real server over loopback: `tickwire keys` (the real
//! binary) against a real store; `serve --auth keys`; entitlements on every
//! transport (WebSocket, SSE, long-poll, REST snapshot, history, candles,
//! replay); revocation closing a key's live connections; a key's connection cap.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::store::TempDir;
use common::{Client, Received, get_json};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Runs `tickwire keys --store STORE ARGS…`: (success, stdout, stderr).
fn keys(store: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["keys", "--store", store])
        .args(args)
        .output()
        .expect("tickwire runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    )
}

fn add_key(store: &str, args: &[&str]) -> String {
    let (ok, stdout, stderr) = keys(store, &[&["add"], args].concat());
    assert!(ok, "keys add {args:?}: {stderr}");
    assert!(stdout.starts_with("tw_"), "{stdout}");
    stdout
}

async fn connect(addr: SocketAddr, key: &str) -> Client {
    let (socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws?token={key}")).await.expect("websocket connects");
    Client { socket }
}

/// Sends `request`, then a ping: everything the server answered before the pong.
async fn answers(client: &mut Client, request: Value, id: u64) -> Vec<Value> {
    client.send(request).await;
    client.round_trip(id).await
}

fn of_type<'a>(messages: &'a [Value], kind: &str) -> Vec<&'a Value> {
    messages.iter().filter(|m| m["type"] == kind).collect()
}

#[test]
fn keys_are_stored_as_hashes_and_listed_without_secrets() {
    let dir = TempDir::new("keys-cli");
    let store = dir.sqlite_url();
    let secret = add_key(&store, &["--name", "desk", "--symbols", "BTC-USD,binance:*", "--channels", "quotes,book"]);
    let (ok, _, stderr) = keys(&store, &["add", "--name", "desk"]);
    assert!(!ok && stderr.contains("already named \"desk\""), "{stderr}");
    let (ok, _, stderr) = keys(&store, &["add", "--name", "x", "--channels", "news"]);
    assert!(!ok && stderr.contains("news"), "{stderr}");

    let (ok, listed, _) = keys(&store, &["list"]);
    assert!(ok);
    let (_, secret_part) = secret[3..].split_once('_').unwrap();
    assert!(!listed.contains(secret_part), "list shows no secret: {listed}");
    let key: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!((key["name"].as_str(), key["channels"].clone()), (Some("desk"), json!(["quotes", "book"])));
    assert_eq!(key["symbols"], json!(["BTC-USD", "binance:*"]));

    // The database holds the secret's SHA-256, not the secret.
    let bytes = std::fs::read(dir.path("history.db")).unwrap();
    let digest = Sha256::digest(secret_part.as_bytes());
    assert!(bytes.windows(digest.len()).any(|w| w == digest.as_slice()), "the hash is stored");
    assert!(!bytes.windows(secret_part.len()).any(|w| w == secret_part.as_bytes()), "the secret is not");

    let (ok, _, _) = keys(&store, &["revoke", "desk"]);
    assert!(ok);
    let (ok, shown, _) = keys(&store, &["show", "desk"]);
    assert!(ok && serde_json::from_str::<Value>(&shown).unwrap()["revoked_ns"].is_u64(), "{shown}");
    let (ok, _, stderr) = keys(&store, &["revoke", "desk"]);
    assert!(!ok && stderr.contains("no live key"), "{stderr}");
    add_key(&store, &["--name", "desk"]); // the name is free again
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_gets_only_what_it_is_entitled_to_on_every_transport() {
    let dir = TempDir::new("keys-entitled");
    let store = dir.sqlite_url();
    let desk = add_key(&store, &["--name", "desk", "--symbols", "BTC-USD,ETH-USD", "--channels", "quotes"]);
    let full = add_key(&store, &["--name", "full"]);
    let server = common::start(&["--auth", "keys", "--allow-query-token", "--store", &store, "--rate", "200"]).await;
    let addr = server.addr;

    // Without a key, or with a wrong one: 401.
    assert_eq!(get_json(addr, "/v1/instruments").await.0, 401);
    let wrong = format!("{}0", &desk[..desk.len() - 1]);
    assert_eq!(get_json(addr, &format!("/v1/instruments?token={wrong}")).await.0, 401);

    // WebSocket: what the key may use streams; anything else is refused whole.
    let mut client = connect(addr, &desk).await;
    let got =
        answers(&mut client, json!({"op":"subscribe","channels":["quotes"],"symbols":["BTC-USD","ETH-USD"]}), 1).await;
    assert_eq!(of_type(&got, "snapshot").len(), 2, "{got:?}");
    for (request, denied) in [
        (json!({"op":"subscribe","channels":["trades"],"symbols":["BTC-USD"]}), "channels trades"),
        (json!({"op":"subscribe","channels":["quotes"],"symbols":["AAPL"]}), "symbols AAPL"),
        (
            json!({"op":"subscribe","channels":["quotes","book"],"symbols":["ETH-USD","SOL-USD"]}),
            "symbols SOL-USD; channels book",
        ),
        (json!({"op":"subscribe","channels":["candles.1m"],"symbols":["BTC-USD"]}), "channels candles"),
    ] {
        let got = answers(&mut client, request.clone(), 2).await;
        let errors = of_type(&got, "error");
        assert_eq!(errors.len(), 1, "{request}: {got:?}");
        assert_eq!(errors[0]["code"], "not_entitled");
        assert!(errors[0]["message"].as_str().unwrap().ends_with(denied), "{}", errors[0]);
        assert!(
            of_type(&got, "snapshot").is_empty() && of_type(&got, "subscribed").is_empty(),
            "nothing partial: {got:?}"
        );
    }
    let got = answers(&mut client, json!({"op":"subscribe","channels":["quotes"],"symbols":["*"]}), 3).await;
    let ack = of_type(&got, "subscribed")[0];
    assert_eq!(ack["symbols"], json!(["BTC-USD", "ETH-USD"]), "a pattern stands for what the key may use");
    // Nothing but BTC-USD and ETH-USD quotes ever arrives.
    let deadline = Instant::now() + Duration::from_millis(500);
    while let Some(Received::Json(message)) = client.next(deadline.saturating_duration_since(Instant::now())).await {
        for update in message["updates"].as_array().into_iter().flatten() {
            assert!(["BTC-USD", "ETH-USD"].contains(&update["symbol"].as_str().unwrap()), "{update}");
            assert_eq!(update["channel"], "quotes");
        }
    }

    // SSE and long-poll.
    for path in [
        "/v1/sse?symbols=AAPL&channels=quotes",
        "/v1/sse?symbols=BTC-USD&channels=trades",
        "/v1/poll?symbols=BTC-USD,AAPL",
    ] {
        let (status, body) = get_json(addr, &format!("{path}&token={desk}")).await;
        assert_eq!((status, &body["code"]), (403, &json!("not_entitled")), "{path}: {body}");
    }
    let (status, body) = get_json(addr, &format!("/v1/poll?symbols=*&channels=quotes&token={desk}")).await;
    assert_eq!(status, 200, "{body}");
    let symbols: BTreeSet<&str> =
        body["messages"].as_array().unwrap().iter().map(|m| m["symbol"].as_str().unwrap()).collect();
    assert_eq!(symbols, BTreeSet::from(["BTC-USD", "ETH-USD"]));

    // REST: instruments, snapshot, history, candles and replay obey the same rules.
    let (_, body) = get_json(addr, &format!("/v1/instruments?token={desk}")).await;
    let listed: Vec<&str> =
        body["instruments"].as_array().unwrap().iter().map(|i| i["symbol"].as_str().unwrap()).collect();
    assert_eq!(listed, ["BTC-USD", "ETH-USD"]);
    let (status, body) = get_json(addr, &format!("/v1/snapshot?symbols=BTC-USD&token={desk}")).await;
    assert_eq!(status, 200, "{body}");
    let snapshot = &body["snapshots"][0];
    assert!(
        snapshot["quote"].is_object() && snapshot["last_trade"].is_null() && snapshot["book"].is_null(),
        "{snapshot}"
    );
    let now = tickwire::model::now_nanos();
    for path in [
        "/v1/snapshot?symbols=AAPL".to_owned(),
        "/v1/history/quotes?symbol=BTC-USD".to_owned(),
        "/v1/candles?symbol=BTC-USD&interval=1m".to_owned(),
        format!("/v1/replay?symbols=BTC-USD&channels=quotes&from={}&to={now}", now - 10_000_000_000),
    ] {
        let (status, body) = get_json(addr, &format!("{path}&token={desk}")).await;
        assert_eq!((status, &body["code"]), (403, &json!("not_entitled")), "{path}: {body}");
        // The same request with a key that may use everything is not refused for entitlements.
        let (status, body) = get_json(addr, &format!("{path}&token={full}")).await;
        assert_ne!(status, 403, "{path}: {body}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_closes_its_connections_within_a_second_and_others_go_on() {
    let dir = TempDir::new("keys-revoke");
    let store = dir.sqlite_url();
    let gone = add_key(&store, &["--name", "gone"]);
    let kept = add_key(&store, &["--name", "kept"]);
    let single = add_key(&store, &["--name", "single", "--max-connections", "1"]);
    let server = common::start(&["--auth", "keys", "--allow-query-token", "--store", &store, "--rate", "200"]).await;
    let addr = server.addr;

    // A key's connection cap: the second connection is refused with 429.
    let _only = connect(addr, &single).await;
    match tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws?token={single}")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("a second connection of a one-connection key: {other:?}"),
    }
    let (status, body) = get_json(addr, &format!("/v1/poll?symbols=BTC-USD&token={single}")).await;
    assert_eq!((status, &body["code"]), (429, &json!("too_many_connections")), "{body}");

    let mut doomed = connect(addr, &gone).await;
    let mut other = connect(addr, &kept).await;
    for client in [&mut doomed, &mut other] {
        client.subscribe(&["trades"], &["BTC-USD"]).await;
        client.until_type("subscribed").await;
    }
    let (ok, _, stderr) = keys(&store, &["revoke", "gone"]);
    assert!(ok, "{stderr}");
    let revoked_at = Instant::now();
    let close = loop {
        match doomed.next(Duration::from_secs(3)).await {
            Some(Received::Json(_)) => continue,
            Some(Received::Close(code, reason)) => break (code, reason),
            None => panic!("no close within 3 s of the revocation"),
        }
    };
    let took = revoked_at.elapsed();
    assert_eq!(close, (4003, "key revoked".to_owned()));
    // The keys are read every 500 ms; the close follows at once.
    assert!(took < Duration::from_millis(1500), "closed {took:?} after the revocation");
    assert_eq!(get_json(addr, &format!("/v1/instruments?token={gone}")).await.0, 401, "refused from then on");
    // The other key's stream goes on.
    other.until_type("batch").await;
    assert_eq!(get_json(addr, &format!("/v1/instruments?token={kept}")).await.0, 200);
    server.shutdown().await;
}

/// Browsers cannot set headers on a WebSocket: the key rides as a
/// `bearer.<key>` subprotocol beside the format, and only the format is echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_may_ride_as_a_websocket_subprotocol_and_is_never_echoed() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let dir = TempDir::new("keys-subprotocol");
    let store = dir.sqlite_url();
    let key = add_key(&store, &["--name", "browser"]);
    let server = common::start(&["--auth", "keys", "--allow-query-token", "--store", &store]).await;
    let url = common::ws_url(server.addr);
    for (offered, status) in [
        (format!("tickwire.v1.json, bearer.{key}"), Some(101)),
        (format!("bearer.{key}, tickwire.v1.proto"), Some(101)),
        ("tickwire.v1.json, bearer.tw_00000000_nope".to_owned(), None),
    ] {
        let mut request = url.as_str().into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", offered.parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok((_, response)) => {
                assert_eq!(status, Some(101), "{offered}");
                let echoed = response.headers().get("sec-websocket-protocol").unwrap().to_str().unwrap();
                assert!(echoed.starts_with("tickwire.v1.") && !echoed.contains("bearer"), "echoed {echoed}");
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!((status, response.status().as_u16()), (None, 401), "{offered}");
            }
            Err(other) => panic!("{offered}: {other}"),
        }
    }
    server.shutdown().await;
}
