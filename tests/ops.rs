//! Operability against the real server: readiness (`/readyz`), CORS preflights
//! for allowed origins, and every streaming transport counted against
//! `--max-connections`; and every metric the checked-in Grafana dashboard and
//! alert rules (deploy/) name is served by `/metrics`, counters as counters.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::store::{PgDb, Proxy, TempDir};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// One request with extra headers: (status, raw head, JSON body or Null).
async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).to_string();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |e| e + 1);
    (status, head.to_ascii_lowercase(), serde_json::from_str(&body[start..end]).unwrap_or(Value::Null))
}

/// Polls `/readyz` until its status is `want`, within `within`; returns the body.
async fn readyz_becomes(addr: SocketAddr, want: u16, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, _, body) = request(addr, "GET", "/readyz", &[]).await;
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {status} (wanted {want}): {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A gateway whose one feed is a Binance that cannot be reached (nothing
/// listens on port 9): alive, never live.
async fn unreachable_venue() -> tickwire::app::Server {
    common::start(&[
        "--feed",
        "binance:BTCUSDT",
        "--binance-ws-url",
        "ws://127.0.0.1:9/stream",
        "--binance-rest-url",
        "http://127.0.0.1:9",
    ])
    .await
}

#[tokio::test]
async fn ready_when_a_feed_is_live_and_not_while_none_is() {
    let server = common::start(&["--rate", "100", "--symbols", "BTC-USD"]).await;
    let body = readyz_becomes(server.addr, 200, Duration::from_secs(5)).await;
    assert_eq!(body, serde_json::json!({"ready": true, "missing": []}));
    let (status, _, health) = request(server.addr, "GET", "/healthz", &[]).await;
    assert_eq!((status, &health["status"]), (200, &Value::from("ok")), "{health}");
    server.shutdown().await;

    // A venue that cannot be reached: alive, but not ready, and says why.
    let server = unreachable_venue().await;
    let (status, _, body) = request(server.addr, "GET", "/readyz", &[]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false, "{body}");
    let missing = body["missing"].as_array().unwrap();
    assert!(missing.len() == 1 && missing[0].as_str().unwrap().starts_with("feed: binance not live"), "{body}");
    let (status, _, _) = request(server.addr, "GET", "/healthz", &[]).await;
    assert_eq!(status, 200, "alive all the same");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_the_store_is_unreachable_and_ready_again_after() {
    let db = PgDb::create();
    let dir = TempDir::new("readyz");
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = db.url_via(proxy.addr);
    let journal = dir.path("journal");
    let server =
        common::start(&["--store", &url, "--journal-dir", &journal, "--rate", "1000", "--symbols", "BTC-USD"]).await;
    readyz_becomes(server.addr, 200, Duration::from_secs(5)).await;

    proxy.cut();
    let body = readyz_becomes(server.addr, 503, Duration::from_secs(15)).await;
    let missing: Vec<&str> = body["missing"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(missing.len() == 1 && missing[0].starts_with("store: writes failing for "), "{body}");
    // Still alive: a load balancer should stop sending, not restart it.
    let (status, _, _) = request(server.addr, "GET", "/healthz", &[]).await;
    assert_eq!(status, 200);

    proxy.restore();
    // The writer retries at most 5 s apart (plus jitter).
    let body = readyz_becomes(server.addr, 200, Duration::from_secs(20)).await;
    assert_eq!(body["missing"], serde_json::json!([]));
    server.shutdown().await;
}

/// The value of `name` in a lower-cased response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':').map(str::trim))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_from_allowed_origins_are_answered_and_others_refused() {
    let server =
        common::start(&["--rate", "100", "--auth-token", "s3cret", "--allowed-origin", "http://desk.example"]).await;
    let addr = server.addr;
    let preflight = |origin: &'static str| {
        [
            ("Origin", origin),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ]
    };

    // Allowed origin: answered before the token check (a preflight has none).
    let (status, head, _) = request(addr, "OPTIONS", "/v1/instruments", &preflight("http://desk.example")).await;
    assert_eq!(status, 204, "{head}");
    assert_eq!(header(&head, "access-control-allow-origin"), Some("http://desk.example"), "{head}");
    assert!(header(&head, "access-control-allow-methods").is_some_and(|m| m.contains("get")), "{head}");
    assert!(header(&head, "access-control-allow-headers").is_some_and(|h| h.contains("authorization")), "{head}");
    assert!(header(&head, "vary").is_some_and(|v| v.contains("origin")), "{head}");

    // Any other origin: refused, and nothing that would let the browser go on.
    let (status, head, body) = request(addr, "OPTIONS", "/v1/instruments", &preflight("http://evil.example")).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("origin_not_allowed")), "{head}");
    assert_eq!(header(&head, "access-control-allow-origin"), None, "{head}");

    // The actual requests: the allowed origin may read the answer (and a refusal).
    let desk = [("Origin", "http://desk.example"), ("Authorization", "Bearer s3cret")];
    let (status, head, body) = request(addr, "GET", "/v1/instruments", &desk).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&head, "access-control-allow-origin"), Some("http://desk.example"), "{head}");
    assert!(header(&head, "vary").is_some_and(|v| v.contains("origin")), "{head}");
    let (status, head, _) = request(addr, "GET", "/v1/instruments", &desk[..1]).await;
    assert_eq!(status, 401);
    assert_eq!(header(&head, "access-control-allow-origin"), Some("http://desk.example"), "{head}");
    let evil = [("Origin", "http://evil.example"), ("Authorization", "Bearer s3cret")];
    let (status, head, _) = request(addr, "GET", "/v1/instruments", &evil).await;
    assert_eq!(status, 403);
    assert_eq!(header(&head, "access-control-allow-origin"), None, "{head}");
    // Not a browser: as before.
    let (status, head, _) = request(addr, "GET", "/v1/instruments", &[("Authorization", "Bearer s3cret")]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&head, "access-control-allow-origin"), None, "{head}");
    server.shutdown().await;
}

/// Opens an SSE stream and reads its response head; the stream stays open
/// while the returned socket lives.
async fn open_sse(addr: SocketAddr) -> (u16, String, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let text = format!("GET /v1/sse?symbols=BTC-USD&channels=quotes HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed during the head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), head, stream)
}

async fn connections(addr: SocketAddr) -> u64 {
    request(addr, "GET", "/v1/stats", &[]).await.2["connections"].as_u64().unwrap()
}

async fn connections_become(addr: SocketAddr, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while connections(addr).await != want {
        assert!(Instant::now() < deadline, "connections stayed {} (wanted {want})", connections(addr).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_and_held_polls_count_against_max_connections() {
    let server = common::start(&["--rate", "500", "--symbols", "BTC-USD", "--max-connections", "2"]).await;
    let addr = server.addr;
    let refused = |(status, _, body): (u16, String, Value)| {
        assert_eq!((status, body["code"].as_str()), (503, Some("too_many_connections")), "{body}");
    };

    // Two SSE streams take both places: a third, a poll and a WebSocket are refused.
    let (first, _, first_stream) = open_sse(addr).await;
    let (second, _, _second_stream) = open_sse(addr).await;
    assert_eq!((first, second), (200, 200));
    assert_eq!(connections(addr).await, 2);
    let (third, head, _) = open_sse(addr).await;
    assert!(third == 503 && head.contains("application/json"), "{head}");
    refused(request(addr, "GET", "/v1/poll?symbols=BTC-USD", &[]).await);
    let ws = tokio_tungstenite::connect_async(common::ws_url(addr)).await;
    assert!(ws.is_err_and(|e| e.to_string().contains("503")), "the WebSocket is refused too");

    // A stream that goes away gives its place back.
    drop(first_stream);
    connections_become(addr, 1).await;
    let (again, _, _again_stream) = open_sse(addr).await;
    assert_eq!(again, 200);
    drop((_second_stream, _again_stream));
    connections_become(addr, 0).await;

    // A poll counts while it is held: `conflate` polls with a cursor wait at
    // least `conflate_ms`.
    let (status, _, first) = request(addr, "GET", "/v1/poll?symbols=BTC-USD&channels=quotes", &[]).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(connections(addr).await, 0, "an answered poll holds nothing");
    let cursor = first["cursor"].as_str().unwrap().replace('@', "%40").replace('~', "%7E");
    let held = format!("/v1/poll?symbols=BTC-USD&channels=quotes&delivery=conflate&conflate_ms=2000&cursor={cursor}");
    let polls: Vec<_> = (0..2)
        .map(|_| {
            let held = held.clone();
            tokio::spawn(async move { request(addr, "GET", &held, &[]).await })
        })
        .collect();
    connections_become(addr, 2).await;
    refused(request(addr, "GET", "/v1/poll?symbols=BTC-USD", &[]).await);
    assert_eq!(open_sse(addr).await.0, 503);
    for poll in polls {
        let (status, _, body) = poll.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    connections_become(addr, 0).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sockets_count_against_max_connections() {
    let dir = TempDir::new("ops-replay");
    let (url, journal) = (dir.sqlite_url(), dir.path("journal"));
    let from = tickwire::model::now_nanos();
    let flags = ["--store", &url, "--journal-dir", &journal, "--rate", "2000", "--symbols", "BTC-USD"];
    let server = common::start(&[&flags[..], &["--max-connections", "1"]].concat()).await;
    let addr = server.addr;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let to = tickwire::model::now_nanos();
    let replay = format!("ws://{addr}/v1/replay?symbols=BTC-USD&channels=trades&from={from}&to={to}&speed=1");
    let mut client = common::Client { socket: tokio_tungstenite::connect_async(&replay).await.unwrap().0 };
    client.send(serde_json::json!({"op":"pause"})).await;
    connections_become(addr, 1).await;
    let second = tokio_tungstenite::connect_async(&replay).await;
    assert!(second.is_err_and(|e| e.to_string().contains("503")), "a second replay is refused");
    let (status, _, _) = open_sse(addr).await;
    assert_eq!(status, 503);
    client.send_raw(tokio_tungstenite::tungstenite::Message::Close(None)).await;
    drop(client);
    connections_become(addr, 0).await;
    server.shutdown().await;
}

/// The metric names (`tickwire_…`) an ops file refers to.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tickwire_") {
        let name: String =
            rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// The value of the first sample line of `/metrics` that starts with `series`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find(|line| line.starts_with(series)).and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_name_is_served() {
    let dir = TempDir::new("ops-metrics");
    let store = dir.sqlite_url();
    let server = common::start(&["--rate", "200", "--symbols", "BTC-USD", "--store", &store]).await;
    readyz_becomes(server.addr, 200, Duration::from_secs(5)).await;
    // Updates written on every transport, so that each histogram has samples.
    let mut client = common::Client::connect(server.addr).await;
    client.subscribe(&["quotes", "trades"], &["BTC-USD"]).await;
    let mut batches = 0;
    while batches < 10 {
        if client.json().await["type"] == "batch" {
            batches += 1;
        }
    }
    let (_, _, mut sse) = open_sse(server.addr).await;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), sse.read(&mut buf)).await;
    let (status, _, first) = request(server.addr, "GET", "/v1/poll?symbols=BTC-USD&channels=trades", &[]).await;
    assert_eq!(status, 200, "{first}");
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    let (status, _, _) =
        request(server.addr, "GET", &format!("/v1/poll?symbols=BTC-USD&channels=trades&cursor={cursor}"), &[]).await;
    assert_eq!(status, 200);

    let mut missing = Vec::new();
    let (mut metrics, mut names) = (String::new(), Default::default());
    // The store writer and the SSE stream report within a second or so.
    for _ in 0..50 {
        let response = request_text(server.addr, "/metrics").await;
        metrics = response;
        names = metric_names(&std::fs::read_to_string("deploy/grafana-dashboard.json").unwrap());
        names.extend(metric_names(&std::fs::read_to_string("deploy/prometheus-alerts.yml").unwrap()));
        missing = names
            .iter()
            .filter(|name| {
                !metrics
                    .lines()
                    .any(|line| line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} ")))
            })
            .cloned()
            .collect::<Vec<_>>();
        let sse_sampled =
            sample(&metrics, "tickwire_receive_to_write_seconds_count{transport=\"sse\"}").unwrap_or(0.0) > 0.0;
        if missing.is_empty() && sse_sampled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(names.len() >= 20, "the ops files name the metrics: {names:?}");
    assert!(missing.is_empty(), "named in deploy/ but not served: {missing:?}\n{metrics}");

    // Counters are counters, histograms histograms.
    for counter in [
        "tickwire_fanout_delivered_total",
        "tickwire_fanout_slow_consumer_closes_total",
        "tickwire_store_written_total",
    ] {
        assert!(metrics.contains(&format!("# TYPE {counter} counter")), "{counter} is not a counter:\n{metrics}");
    }
    for histogram in [
        "tickwire_exchange_to_receive_seconds",
        "tickwire_receive_to_send_seconds",
        "tickwire_receive_to_write_seconds",
    ] {
        assert!(metrics.contains(&format!("# TYPE {histogram} histogram")), "{histogram}:\n{metrics}");
    }
    for series in [
        "tickwire_exchange_to_receive_seconds_count{venue=\"sim\"}",
        "tickwire_receive_to_send_seconds_count",
        "tickwire_receive_to_write_seconds_count{transport=\"ws\"}",
        "tickwire_receive_to_write_seconds_count{transport=\"sse\"}",
        "tickwire_receive_to_write_seconds_count{transport=\"poll\"}",
    ] {
        assert!(sample(&metrics, series).unwrap_or(0.0) > 0.0, "no samples in {series}:\n{metrics}");
    }
    assert_eq!(sample(&metrics, "tickwire_ready"), Some(1.0));
    assert_eq!(sample(&metrics, "tickwire_feed_live{feed=\"simulator\"}"), Some(1.0), "{metrics}");
    drop(sse);
    server.shutdown().await;
}

/// `GET path` as text.
async fn request_text(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

/// The routes clients rely on; the OpenAPI document must list exactly these.
const ROUTES: [&str; 15] = [
    "/healthz",
    "/metrics",
    "/readyz",
    "/v1/candles",
    "/v1/feeds",
    "/v1/history/quotes",
    "/v1/history/trades",
    "/v1/instruments",
    "/v1/openapi.json",
    "/v1/poll",
    "/v1/replay",
    "/v1/snapshot",
    "/v1/sse",
    "/v1/stats",
    "/v1/ws",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_the_server_serves() {
    let server = common::start(&["--rate", "50", "--symbols", "BTC-USD"]).await;
    let (status, _, document) = request(server.addr, "GET", "/v1/openapi.json", &[]).await;
    assert_eq!(status, 200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"), "{}", document["openapi"]);
    let paths = document["paths"].as_object().unwrap();
    let listed: Vec<&str> = paths.keys().map(String::as_str).collect();
    assert_eq!(
        listed.iter().copied().collect::<std::collections::BTreeSet<_>>(),
        ROUTES.into_iter().collect(),
        "documented routes"
    );
    for (path, item) in paths {
        let get = &item["get"];
        assert!(get["responses"].as_object().is_some_and(|r| !r.is_empty()), "{path} documents its answers");
        assert!(get["summary"].is_string() || get["description"].is_string(), "{path} says what it does");
        // Served: any answer but the router's own 404 (an API 404 carries a code).
        let (status, _, body) = request(server.addr, "GET", &format!("{path}?timeout_ms=0"), &[]).await;
        assert!(status != 404 || body["code"].is_string(), "{path} is documented but not served");
    }
    // A route that does not exist gets the router's 404, so the check above can fail.
    let (status, _, body) = request(server.addr, "GET", "/v1/nonexistent", &[]).await;
    assert_eq!((status, body), (404, Value::Null));
    // Parameters come from the handlers' query types.
    let poll_params: Vec<&str> = paths["/v1/poll"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in ["symbols", "channels", "cursor", "timeout_ms", "since_time", "delivery"] {
        assert!(poll_params.contains(&name), "/v1/poll documents {name}: {poll_params:?}");
    }
    server.shutdown().await;
}

/// `/v1/stats` says what the operator view charts: version and role, each
/// transport's connections and what it wrote, the latency histograms; and a
/// feed's last fault is in `/v1/feeds`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_name_transports_latency_and_the_last_feed_fault() {
    let server = common::start(&["--rate", "300", "--symbols", "BTC-USD"]).await;
    let mut client = common::Client::connect(server.addr).await;
    client.subscribe(&["quotes", "trades"], &["BTC-USD"]).await;
    for _ in 0..5 {
        client.until_type("batch").await;
    }
    let (status, _, stats) = request(server.addr, "GET", "/v1/stats", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(stats["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(stats["role"], "all");
    assert_eq!(stats["subscriptions"], 2, "{stats}");
    let ws = &stats["transports"]["ws"];
    assert_eq!((&ws["connections"], &ws["subscriptions"]), (&Value::from(1), &Value::from(2)), "{stats}");
    assert!(ws["messages"].as_u64().unwrap() >= 5 && ws["bytes"].as_u64().unwrap() > 100, "{ws}");
    assert_eq!(stats["transports"]["sse"]["connections"], 0);
    let bounds = stats["latency"]["bounds_us"].as_array().unwrap();
    assert_eq!((bounds.first().unwrap(), bounds.last().unwrap()), (&Value::from(10), &Value::from(10_000_000)));
    for leg in ["receive_to_send", "receive_to_write_ws"] {
        let counts = stats["latency"]["legs"][leg].as_array().unwrap();
        assert_eq!(counts.len(), bounds.len() + 1, "{leg}: one count per bucket and one past the last");
        assert!(counts.iter().map(|c| c.as_u64().unwrap()).sum::<u64>() > 0, "{leg} has samples");
    }
    let (_, _, feeds) = request(server.addr, "GET", "/v1/feeds", &[]).await;
    assert_eq!(feeds["feeds"][0]["last_error"], Value::Null, "a healthy simulator: {feeds}");
    server.shutdown().await;

    // A venue that cannot be reached: its last fault says so.
    let server = unreachable_venue().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, _, feeds) = request(server.addr, "GET", "/v1/feeds", &[]).await;
        if let Some(fault) = feeds["feeds"][0]["last_error"].as_str() {
            assert!(fault.starts_with("connect failed"), "{fault}");
            break;
        }
        assert!(Instant::now() < deadline, "no fault recorded: {feeds}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await;
}
