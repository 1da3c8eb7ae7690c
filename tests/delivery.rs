//! Every delivery policy (`full`, `conflate`, `snapshot_on_lag`) over every
//! transport (ws, wss, SSE, long-poll) against the real server: conflated
//! quotes arrive every `conflate_ms`, full delivery is contiguous, and bad
//! delivery settings are refused while the connection keeps working.
//!
//! Streams run concurrently so that the file stays within a few seconds per
//! test; timing tolerances are generous because the test machine is shared.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::store::TempDir;
use common::{Client, Received, get_json, start, updates};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Conflation interval the timing tests ask for.
const CONFLATE_MS: u64 = 200;
/// How long each timed stream is watched.
const WATCH: Duration = Duration::from_secs(3);
const SYMBOLS: &str = "BTC-USD,AAPL";
const FLAGS: &[&str] = &["--rate", "2000", "--symbols", SYMBOLS];

/// Messages with the time each one arrived.
type Arrivals = Vec<(Instant, Value)>;

/// Checks that `arrivals` are conflated quotes released every `CONFLATE_MS`:
/// after the snapshots, each batch holds at most one quote per symbol, quote
/// sequences only grow, and the spacing between batches is right.
fn assert_conflated(label: &str, arrivals: &Arrivals) {
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut times = Vec::new();
    for (at, message) in arrivals {
        let in_message = updates(std::slice::from_ref(message));
        let quotes: Vec<_> = in_message.iter().filter(|u| u.2 == "quotes").collect();
        if quotes.is_empty() {
            continue;
        }
        if message["type"] == "batch" {
            times.push(*at);
        }
        let mut seen = std::collections::HashSet::new();
        for (kind, symbol, _, seq, _) in quotes {
            assert!(seen.insert(symbol.clone()), "{label}: two {symbol} quotes in one release: {message}");
            if let Some(prev) = last_seq.insert(symbol.clone(), *seq) {
                assert!(*seq > prev, "{label}: {symbol} {kind} {seq} after {prev}");
            }
        }
    }
    let spacings: Vec<u64> = times.windows(2).map(|w| (w[1] - w[0]).as_millis() as u64).collect();
    let expected = (WATCH.as_millis() as u64 / CONFLATE_MS) as usize;
    assert!(
        spacings.len() + 1 >= expected / 2,
        "{label}: {} conflated batches in {WATCH:?}, expected about {expected} (spacings {spacings:?})",
        times.len()
    );
    let mut sorted = spacings.clone();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    assert!(
        (CONFLATE_MS * 3 / 4..=CONFLATE_MS * 7 / 4).contains(&median),
        "{label}: median spacing {median} ms for conflate_ms {CONFLATE_MS} (spacings {spacings:?})"
    );
    let longest = *sorted.last().unwrap();
    assert!(longest <= CONFLATE_MS * 2 + 100, "{label}: a {longest} ms stall (spacings {spacings:?})");
}

/// Checks that every (symbol, channel) starts with a snapshot and continues
/// without a hole, and that enough arrived.
fn assert_contiguous(label: &str, messages: &[Value], at_least: usize) {
    let all = updates(messages);
    assert!(all.len() >= at_least, "{label}: only {} updates", all.len());
    let mut last = HashMap::new();
    for (kind, symbol, channel, seq, _) in all {
        match last.insert((symbol.clone(), channel.clone()), seq) {
            None => assert_eq!(kind, "snapshot", "{label}: {symbol} {channel} starts with a snapshot"),
            Some(prev) => assert_eq!(seq, prev + 1, "{label}: {symbol} {channel} continues without a hole"),
        }
    }
    assert!(
        messages.iter().all(|m| m["type"] != "gap" && m["type"] != "error"),
        "{label}: no gap or error under full delivery"
    );
}

/// Checks that a `snapshot_on_lag` stream delivers: a snapshot per stream, then
/// updates with growing sequences (or an announced gap).
fn assert_delivers(label: &str, messages: &[Value], at_least: usize) {
    let all = updates(messages);
    assert!(all.len() >= at_least, "{label}: only {} updates", all.len());
    let mut last = HashMap::new();
    for (kind, symbol, channel, seq, _) in all {
        match last.insert((symbol.clone(), channel.clone()), seq) {
            None => assert_eq!(kind, "snapshot", "{label}: {symbol} {channel} starts with a snapshot"),
            Some(prev) => assert!(seq > prev, "{label}: {symbol} {channel} {seq} after {prev}"),
        }
    }
    assert!(messages.iter().all(|m| m["type"] != "error"), "{label}: no error");
}

// ---------------------------------------------------------------- WebSocket

/// Everything a WebSocket client receives during `watch`, timed.
async fn watch_ws(client: &mut Client, watch: Duration) -> Arrivals {
    let deadline = tokio::time::Instant::now() + watch;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return out;
        }
        match client.next(left).await {
            Some(Received::Json(v)) => out.push((Instant::now(), v)),
            Some(Received::Close(code, reason)) => panic!("closed {code} {reason}"),
            None => return out,
        }
    }
}

fn messages(arrivals: Arrivals) -> Vec<Value> {
    arrivals.into_iter().map(|(_, v)| v).collect()
}

/// Subscribes with `delivery` and watches the stream.
async fn ws_stream(mut client: Client, channels: &[&str], delivery: Value) -> (Client, Arrivals) {
    let mut request = json!({"op":"subscribe","channels":channels,"symbols":SYMBOLS.split(',').collect::<Vec<_>>()});
    request.as_object_mut().unwrap().extend(delivery.as_object().unwrap().clone());
    client.send(request).await;
    let arrivals = watch_ws(&mut client, WATCH).await;
    (client, arrivals)
}

/// Every delivery mode over one kind of WebSocket connection, concurrently;
/// then bad delivery settings on one of them.
async fn ws_delivery_modes<F, Fut>(label: &str, connect: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Client>,
{
    let (conflate, full, on_lag) = tokio::join!(
        async {
            ws_stream(connect().await, &["quotes"], json!({"delivery":"conflate","conflate_ms":CONFLATE_MS})).await
        },
        async { ws_stream(connect().await, &["trades", "quotes"], json!({"delivery":"full"})).await },
        async { ws_stream(connect().await, &["trades", "quotes"], json!({"delivery":"snapshot_on_lag"})).await },
    );
    assert_conflated(&format!("{label} conflate"), &conflate.1);
    assert_contiguous(&format!("{label} full"), &messages(full.1), 200);
    assert_delivers(&format!("{label} snapshot_on_lag"), &messages(on_lag.1), 200);

    let mut client = full.0;
    client.send(json!({"op":"unsubscribe","channels":["trades","quotes"],"symbols":["BTC-USD","AAPL"]})).await;
    assert_refusals_keep_the_connection(label, &mut client).await;
}

/// `conflate_ms` 0, below and above the range, and an unknown policy each get
/// `bad_delivery`; the connection answers pings and subscribes afterwards.
async fn assert_refusals_keep_the_connection(label: &str, client: &mut Client) {
    for (id, delivery) in [
        json!({"delivery":"conflate","conflate_ms":0}),
        json!({"delivery":"conflate","conflate_ms":5}),
        json!({"delivery":"conflate","conflate_ms":3_600_000}),
        json!({"delivery":"sometimes"}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut request = json!({"op":"subscribe","channels":["quotes"],"symbols":["BTC-USD"]});
        request.as_object_mut().unwrap().extend(delivery.as_object().unwrap().clone());
        client.send(request).await;
        let before = client.round_trip(id as u64).await;
        let errors: Vec<_> = before.iter().filter(|m| m["type"] == "error").collect();
        assert_eq!(errors.len(), 1, "{label} {delivery}: one error, got {before:?}");
        assert_eq!(errors[0]["code"], "bad_delivery", "{label} {delivery}");
        assert!(
            before.iter().all(|m| m["type"] != "snapshot"),
            "{label} {delivery}: a refused subscribe subscribes nothing"
        );
    }
    // Still working: a good conflate subscribe streams.
    client.send(json!({"op":"subscribe","channels":["quotes"],"symbols":["BTC-USD"],"delivery":"conflate","conflate_ms":50})).await;
    assert_eq!(client.until_type("snapshot").await["symbol"], "BTC-USD", "{label}");
    assert_eq!(client.until_type("batch").await["updates"][0]["channel"], "quotes", "{label}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_delivers_every_mode_on_time() {
    let server = start(FLAGS).await;
    let addr = server.addr;
    Box::pin(ws_delivery_modes("ws", || Client::connect(addr))).await;
    server.shutdown().await;
}

/// A connection's conflation period follows its subscriptions: after a 50 ms
/// conflate stream is unsubscribed, a 200 ms one ticks at 200 ms, not 50.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_conflation_period_follows_unsubscribe() {
    let server = start(FLAGS).await;
    let mut client = Client::connect(server.addr).await;
    client
        .send(json!({"op":"subscribe","channels":["quotes"],"symbols":["AAPL"],"delivery":"conflate","conflate_ms":50}))
        .await;
    client.until_type("snapshot").await;
    client.until_type("batch").await;
    client.send(json!({"op":"unsubscribe","channels":["quotes"],"symbols":["AAPL"]})).await;
    client.round_trip(1).await;
    let request = json!({"op":"subscribe","channels":["quotes"],"symbols":["BTC-USD"],"delivery":"conflate","conflate_ms":CONFLATE_MS});
    client.send(request).await;
    let arrivals = watch_ws(&mut client, WATCH).await;
    assert!(arrivals.iter().all(|(_, m)| m["type"] != "batch" || m["updates"][0]["symbol"] == "BTC-USD"));
    assert_conflated("ws after unsubscribe", &arrivals);
    server.shutdown().await;
}

struct Pki {
    dir: TempDir,
    client: Arc<rustls::ClientConfig>,
}

/// A self-signed certificate for 127.0.0.1, its files, and a client trusting it.
fn pki() -> Pki {
    let dir = TempDir::new("delivery-tls");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(dir.path("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.path("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Pki { dir, client: Arc::new(client) }
}

async fn wss_connect(addr: SocketAddr, client: Arc<rustls::ClientConfig>) -> Client {
    let request = format!("wss://127.0.0.1:{}/v1/ws", addr.port()).into_client_request().unwrap();
    let (socket, _) =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(Connector::Rustls(client)))
            .await
            .unwrap();
    Client { socket }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_delivers_every_mode_on_time() {
    let pki = pki();
    let (cert, key) = (pki.dir.path("cert.pem"), pki.dir.path("key.pem"));
    let mut flags = FLAGS.to_vec();
    flags.extend(["--tls-cert", &cert, "--tls-key", &key]);
    let server = start(&flags).await;
    let addr = server.addr;
    Box::pin(ws_delivery_modes("wss", || wss_connect(addr, pki.client.clone()))).await;
    server.shutdown().await;
}

// ---------------------------------------------------------------- SSE

/// Opens `GET path` as an event stream and collects its messages during `watch`, timed.
async fn watch_sse(addr: SocketAddr, path: String, watch: Duration) -> Arrivals {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(stream).lines();
    let status = lines.next_line().await.unwrap().unwrap();
    assert!(status.contains("200"), "{path}: {status}");
    let deadline = tokio::time::Instant::now() + watch;
    let mut out = Vec::new();
    while let Ok(line) = tokio::time::timeout_at(deadline, lines.next_line()).await {
        let line = line.unwrap().expect("the stream stays open");
        if let Some(data) = line.strip_prefix("data: ") {
            out.push((Instant::now(), serde_json::from_str(data).unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_delivers_every_mode_on_time() {
    let server = start(FLAGS).await;
    let addr = server.addr;
    let base = format!("/v1/sse?symbols={SYMBOLS}");
    let (conflate, full, on_lag) = tokio::join!(
        watch_sse(addr, format!("{base}&channels=quotes&delivery=conflate&conflate_ms={CONFLATE_MS}"), WATCH),
        watch_sse(addr, format!("{base}&channels=trades,quotes&delivery=full"), WATCH),
        watch_sse(addr, format!("{base}&channels=trades,quotes&delivery=snapshot_on_lag"), WATCH),
    );
    assert_conflated("sse conflate", &conflate);
    assert_contiguous("sse full", &messages(full), 200);
    assert_delivers("sse snapshot_on_lag", &messages(on_lag), 200);

    for query in [
        "delivery=conflate&conflate_ms=0",
        "delivery=conflate&conflate_ms=5",
        "delivery=conflate&conflate_ms=3600000",
        "delivery=conflate&conflate_ms=soon",
        "delivery=sometimes",
    ] {
        for endpoint in ["sse", "poll"] {
            let (status, body) = get_json(addr, &format!("/v1/{endpoint}?symbols=BTC-USD&{query}")).await;
            assert_eq!(status, 400, "{endpoint} {query}: {body}");
            assert_eq!(body["code"], "bad_delivery", "{endpoint} {query}");
        }
    }
    // The server keeps serving both after refusals.
    let after = watch_sse(
        addr,
        "/v1/sse?symbols=BTC-USD&channels=quotes&delivery=conflate&conflate_ms=50".into(),
        Duration::from_millis(500),
    )
    .await;
    assert!(updates(&messages(after)).len() >= 2, "snapshot and a release after refusals");
    server.shutdown().await;
}

// ---------------------------------------------------------------- long-poll

/// Polls `query` from its first answer on, immediately re-polling with each
/// cursor, during `watch`; returns each answer's messages, timed.
async fn watch_poll(addr: SocketAddr, query: String, watch: Duration) -> Vec<(Instant, Vec<Value>)> {
    let (status, first) = get_json(addr, &format!("/v1/poll?{query}")).await;
    assert_eq!(status, 200, "{query}: {first}");
    let mut cursor = first["cursor"].as_str().unwrap().to_owned();
    let mut out = vec![(Instant::now(), first["messages"].as_array().unwrap().clone())];
    let deadline = Instant::now() + watch;
    while Instant::now() < deadline {
        let (status, body) = get_json(addr, &format!("/v1/poll?{query}&cursor={cursor}&timeout_ms=2000")).await;
        assert_eq!(status, 200, "{query}: {body}");
        cursor = body["cursor"].as_str().unwrap().to_owned();
        out.push((Instant::now(), body["messages"].as_array().unwrap().clone()));
    }
    out
}

/// One message per poll answer, so that the stream checks read polls as releases.
fn as_batches(polls: Vec<(Instant, Vec<Value>)>) -> Arrivals {
    polls
        .into_iter()
        .flat_map(|(at, messages)| {
            let (snapshots, rest): (Vec<_>, Vec<_>) = messages.into_iter().partition(|m| m["type"] == "snapshot");
            let batched: Vec<Value> = rest
                .iter()
                .filter(|m| m["type"] == "batch")
                .flat_map(|m| m["updates"].as_array().unwrap().clone())
                .collect();
            let mut out: Vec<(Instant, Value)> = snapshots.into_iter().map(|s| (at, s)).collect();
            if !batched.is_empty() {
                out.push((at, json!({"type":"batch","updates":batched})));
            }
            out
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_delivers_every_mode_on_time() {
    let server = start(FLAGS).await;
    let addr = server.addr;
    let base = format!("symbols={SYMBOLS}");
    let (conflate, full, on_lag) = tokio::join!(
        watch_poll(addr, format!("{base}&channels=quotes&delivery=conflate&conflate_ms={CONFLATE_MS}"), WATCH),
        watch_poll(addr, format!("{base}&channels=trades,quotes&delivery=full"), WATCH),
        watch_poll(addr, format!("{base}&channels=trades,quotes&delivery=snapshot_on_lag"), WATCH),
    );
    assert_conflated("poll conflate", &as_batches(conflate));
    assert_contiguous("poll full", &messages(as_batches(full)), 200);
    assert_delivers("poll snapshot_on_lag", &messages(as_batches(on_lag)), 200);
    server.shutdown().await;
}

// ---------------------------------------------------------------- settings

/// `--conflate-min-ms 0` would allow a zero-period tick: refused at startup.
#[test]
fn zero_conflate_minimum_is_refused_at_startup() {
    let error = tickwire::config::ServeArgs::parse_from_args(["--conflate-min-ms", "0"]).expect_err("refused");
    assert!(error.to_string().contains("conflate-min-ms"), "{error}");
    tickwire::config::ServeArgs::parse_from_args(["--conflate-min-ms", "1"]).expect("1 ms is accepted");
}

/// With the smallest accepted minimum (1 ms), `conflate_ms: 0` is still refused
/// and 1 ms works, on every transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ms_minimum_refuses_zero_and_ticks_at_one() {
    let server = start(&["--rate", "2000", "--symbols", SYMBOLS, "--conflate-min-ms", "1"]).await;
    let addr = server.addr;
    let mut client = Client::connect(addr).await;
    client
        .send(
            json!({"op":"subscribe","channels":["quotes"],"symbols":["BTC-USD"],"delivery":"conflate","conflate_ms":0}),
        )
        .await;
    let before = client.round_trip(1).await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["code"], "bad_delivery");
    client
        .send(
            json!({"op":"subscribe","channels":["quotes"],"symbols":["BTC-USD"],"delivery":"conflate","conflate_ms":1}),
        )
        .await;
    client.until_type("snapshot").await;
    client.until_type("batch").await;
    client.round_trip(2).await;
    for endpoint in ["sse", "poll"] {
        let (status, body) =
            get_json(addr, &format!("/v1/{endpoint}?symbols=BTC-USD&delivery=conflate&conflate_ms=0")).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("bad_delivery")), "{endpoint}");
    }
    let sse = watch_sse(
        addr,
        "/v1/sse?symbols=BTC-USD&channels=quotes&delivery=conflate&conflate_ms=1".into(),
        Duration::from_millis(300),
    )
    .await;
    assert!(updates(&messages(sse)).len() >= 2);
    server.shutdown().await;
}
