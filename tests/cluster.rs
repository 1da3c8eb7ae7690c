//! The cluster roles against real nats-server processes, each test with its
//! own server on a free port and its own storage (tests/common/nats.rs): an
//! ingest node, gateways and a store node as real `tickwire serve` processes,
//! clients over real WebSockets.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use common::nats::NatsServer;
use common::store::PgCluster;
use common::{Client, Process, Received, updates};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tickwire::client::{ClientConfig, StreamClient, StreamEvent};
use tickwire::codec::Format;
use tickwire::model::Channel;

const SYMBOLS: &str = "BTC-USD,ETH-USD";

fn ingest(nats: &NatsServer, extra: &[&str]) -> Process {
    let url = nats.url();
    let mut args = vec!["--role", "ingest", "--nats", &url, "--symbols", SYMBOLS, "--bus-checkpoint-ms", "200"];
    args.extend_from_slice(extra);
    Process::serve(&args)
}

fn gateway(nats: &NatsServer, extra: &[&str]) -> Process {
    let url = nats.url();
    let mut args = vec!["--role", "gateway", "--nats", &url, "--symbols", SYMBOLS];
    args.extend_from_slice(extra);
    Process::serve(&args)
}

/// Every update a client of `addr` receives in `length`, after subscribing.
async fn record(addr: std::net::SocketAddr, channels: &[&str], length: Duration) -> Vec<Value> {
    let mut client = Client::connect(addr).await;
    client.send(json!({"op":"subscribe","channels":channels,"symbols":["BTC-USD","ETH-USD"],"delivery":"full"})).await;
    watch_trades(&mut client, length).await
}

/// What a stream's updates say, without the gateway's own clock (`ts_send`).
fn content(update: &Value) -> Value {
    let mut update = update.clone();
    if let Some(map) = update.as_object_mut() {
        map.remove("ts_send");
    }
    update
}

type Streams = BTreeMap<(String, String), BTreeMap<u64, Value>>;

/// Updates per stream, checked to follow their snapshot without a gap or a repeat.
fn streams(messages: &[Value], who: &str) -> Streams {
    let gaps: Vec<_> = messages.iter().filter(|m| m["type"] == "gap" || m["type"] == "error").collect();
    assert!(gaps.is_empty(), "{who}: {gaps:?}");
    let mut out: Streams = BTreeMap::new();
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (kind, symbol, channel, seq, update) in updates(messages) {
        let key = (symbol, channel);
        if kind == "snapshot" {
            last.insert(key, seq);
            continue;
        }
        let previous = last.insert(key.clone(), seq);
        if key.1 != "book" || previous.is_some() {
            assert_eq!(previous.map(|p| p + 1), Some(seq), "{who}: {key:?} does not follow on");
        }
        out.entry(key).or_default().insert(seq, content(&update));
    }
    out
}

async fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    let body = get_text(addr, "/metrics").await;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

async fn get_text(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_send_the_ingest_nodes_sequences_and_contents() {
    let nats = NatsServer::start("same");
    let ingest = ingest(&nats, &["--rate", "400"]);
    let g1 = gateway(&nats, &[]);
    let g2 = gateway(&nats, &[]);
    let channels = ["quotes", "trades", "book", "candles.1s"];
    let length = Duration::from_secs(4);
    let (at_ingest, at_g1, at_g2) = tokio::join!(
        record(ingest.addr, &channels, length),
        record(g1.addr, &channels, length),
        record(g2.addr, &channels, length)
    );
    let truth = streams(&at_ingest, "ingest");
    for (who, messages) in [("gateway 1", &at_g1), ("gateway 2", &at_g2)] {
        let got = streams(messages, who);
        for channel in ["quotes", "trades", "book"] {
            for symbol in ["BTC-USD", "ETH-USD"] {
                let key = (symbol.to_string(), channel.to_string());
                let (mine, theirs) = (&got[&key], &truth[&key]);
                let common: Vec<_> = mine.keys().filter(|s| theirs.contains_key(s)).collect();
                assert!(common.len() >= 20, "{who} {key:?}: only {} sequences in common", common.len());
                for seq in common {
                    assert_eq!(mine[seq], theirs[seq], "{who} {key:?} #{seq} differs from the ingest node's");
                }
            }
        }
        assert!(!got[&("BTC-USD".to_string(), "candles.1s".to_string())].is_empty(), "{who}: candles flow");
    }
}

/// Waits (up to 15 s) until the gateway's metric `name` reads `want`.
async fn metric_becomes(addr: std::net::SocketAddr, name: &str, want: f64, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = metric(addr, name).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{why}: {name} is {got}, not {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateways_bus_interest_follows_its_clients() {
    let nats = NatsServer::start("interest");
    let _ingest = ingest(&nats, &["--rate", "200"]);
    let g = gateway(&nats, &["--bus-linger-ms", "300"]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(metric(g.addr, "tickwire_bus_received_total").await, 0.0, "no client, nothing from the bus");

    let mut client = Client::connect(g.addr).await;
    client.send(json!({"op":"subscribe","channels":["trades"],"symbols":["BTC-USD"]})).await;
    let _ = client.until_type("snapshot").await;
    metric_becomes(g.addr, "tickwire_bus_interest_instruments", 1.0, "one symbol, one instrument taken").await;
    assert!(metric(g.addr, "tickwire_bus_received_total").await > 0.0);

    client.send(json!({"op":"subscribe","channels":["quotes"],"symbols":["ETH-USD"]})).await;
    metric_becomes(g.addr, "tickwire_bus_interest_instruments", 2.0, "a second symbol, a second instrument").await;

    client.send(json!({"op":"unsubscribe","channels":["trades"],"symbols":["BTC-USD"]})).await;
    metric_becomes(g.addr, "tickwire_bus_interest_instruments", 1.0, "BTC-USD unsubscribed: let go").await;
    client.send(json!({"op":"unsubscribe","channels":["quotes"],"symbols":["ETH-USD"]})).await;
    metric_becomes(g.addr, "tickwire_bus_interest_instruments", 0.0, "unsubscribed: nothing taken").await;
    let after = metric(g.addr, "tickwire_bus_received_total").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(metric(g.addr, "tickwire_bus_received_total").await, after, "nothing received once nobody wants it");

    // REST reads the current state too: the gateway takes the instrument for it.
    let (status, body) = common::get_json(g.addr, "/v1/snapshot?symbols=ETH-USD").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["snapshots"][0]["quote"]["seq"].as_u64().unwrap_or(0) > 0, "a current quote: {body}");
    assert!(!body["snapshots"][0]["book"]["bids"].as_array().unwrap().is_empty(), "a current book: {body}");
}

/// Follows trades and quotes of both symbols with the Rust client, given every
/// gateway URL, until `stop` says so; returns what it saw.
async fn follow(urls: String, seconds: f64) -> (Vec<StreamEvent>, u64) {
    let config = ClientConfig {
        url: urls,
        format: Format::Proto,
        symbols: vec!["BTC-USD".into(), "ETH-USD".into()],
        channels: vec![Channel::Trades, Channel::Quotes, Channel::Candles1s],
        reconnect: true,
        max_backoff: Duration::from_millis(300),
        from_time: None,
        token: None,
    };
    let mut client = StreamClient::connect(config).await.expect("connects");
    let mut events = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
    while let Ok(next) = tokio::time::timeout_at(end, client.next()).await {
        events.push(next.expect("stream").expect("open"));
    }
    (events, client.duplicates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_its_clients_resume_on_the_other_without_a_gap() {
    let nats = NatsServer::start("failover");
    let _ingest = ingest(&nats, &["--rate", "400"]);
    let g1 = gateway(&nats, &[]);
    let g2 = gateway(&nats, &[]);
    // g2 has no client of its own: the recent history it loads when it takes an
    // instrument (the backfill) serves the resume, candles included.
    let urls = format!("ws://{}/v1/ws,ws://{}/v1/ws", g1.addr, g2.addr);
    let follower = tokio::spawn(follow(urls, 5.0));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    g1.signal("KILL");
    let (events, duplicates) = follower.await.unwrap();
    assert_eq!(duplicates, 0, "nothing twice");
    let reconnects = events.iter().filter(|e| matches!(e, StreamEvent::Reconnected { .. })).count();
    assert_eq!(reconnects, 1, "moved to the other gateway once");
    let bad: Vec<_> =
        events.iter().filter(|e| matches!(e, StreamEvent::Gap { .. } | StreamEvent::Error { .. })).collect();
    assert!(bad.is_empty(), "no gap, no error: {bad:?}");
    let mut last: BTreeMap<(String, Channel), u64> = BTreeMap::new();
    let mut after_move = 0;
    let mut moved = false;
    for event in &events {
        match event {
            StreamEvent::Reconnected { .. } => moved = true,
            StreamEvent::Snapshot(u) => {
                assert!(!moved, "no new snapshot after the move: {u:?}");
                last.insert((u.symbol.to_string(), u.channel), u.seq);
            }
            StreamEvent::Update(u) => {
                let key = (u.symbol.to_string(), u.channel);
                let previous = last.insert(key.clone(), u.seq).expect("after a snapshot");
                assert_eq!(u.seq, previous + 1, "{key:?} follows on across the move");
                after_move += usize::from(moved);
            }
            _ => {}
        }
    }
    assert!(after_move > 50, "the stream went on after the move ({after_move} updates)");
}

/// Every stored-channel event on the bus: (subject, seq) → body.
async fn bus_events(nats: &NatsServer) -> BTreeMap<(String, u64), Vec<u8>> {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("TICKWIRE").await.unwrap();
    let mut out = BTreeMap::new();
    for channel in ["quotes", "trades", "book"] {
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: format!("tw.*.*.{channel}"),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        loop {
            let message = messages.next().await.unwrap().unwrap();
            let pending = message.info().unwrap().pending;
            let seq = tickwire::cluster::wire::event_seq(&message.payload).unwrap();
            out.insert((message.subject.to_string(), seq), message.payload.to_vec());
            if pending == 0 {
                break;
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_node_stores_what_ingest_published_once_through_outages_and_a_kill() {
    let nats = NatsServer::start("store");
    let pg = PgCluster::start();
    let store_url = pg.url();
    let mut ingest = ingest(&nats, &["--rate", "600"]);
    let store_args = ["--role", "store", "--nats", &nats.url(), "--symbols", SYMBOLS, "--store", &store_url];
    let store_node = Process::serve(&store_args);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(|| pg.down());
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| pg.up());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    store_node.signal("KILL");
    drop(store_node);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let store_node = Process::serve(&store_args);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    ingest.signal("TERM");
    let _ = ingest.child.wait();

    let published = bus_events(&nats).await;
    let store = tickwire::store::Store::open(&store_url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let quotes_trades_book = || async {
        let mut n = 0;
        for channel in Channel::STORED {
            n += store.count(channel).await.unwrap();
        }
        n
    };
    loop {
        let stored = quotes_trades_book().await;
        if stored as usize >= published.len() {
            break;
        }
        assert!(Instant::now() < deadline, "the store node did not catch up: {stored} of {}", published.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(store_node);
    // Event for event: every published (stream, seq) is stored once, with its content.
    let (instruments, ids) = store.load_instruments().await.unwrap();
    let line_started = 0;
    let mut stored = 0;
    for inst in instruments.iter() {
        for channel in Channel::STORED {
            let rows = store.read_since(ids.store_id(inst.id), channel, 0, line_started, 1_000_000).await.unwrap();
            let subject = tickwire::cluster::wire::event_subject("tw", &inst.venue, &inst.symbol, channel);
            let mut seqs: Vec<u64> = rows.iter().map(|e| e.seq).collect();
            seqs.dedup();
            assert_eq!(seqs.len(), rows.len(), "{subject}: a sequence stored twice");
            for mut event in rows {
                let body = published
                    .get(&(subject.clone(), event.seq))
                    .unwrap_or_else(|| panic!("{subject} #{} stored but never published", event.seq));
                event.instrument = inst.id;
                let sent = tickwire::cluster::wire::decode_event(body, inst.id).unwrap();
                assert_eq!(event.payload, sent.payload, "{subject} #{}", event.seq);
                stored += 1;
            }
        }
    }
    assert_eq!(stored, published.len(), "every published event stored, once");
    assert!(stored > 1000, "a real run: {stored} events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bus_is_a_clear_error_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args([
            "serve",
            "--role",
            "gateway",
            "--nats",
            "nats://127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "none",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot connect to NATS at nats://127.0.0.1:1"), "{stderr}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["serve", "--role", "gateway", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--role gateway needs --nats"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_bus_and_a_deleted_stream_are_survived() {
    let nats = NatsServer::start("garbage");
    let ingest = ingest(&nats, &["--rate", "300"]);
    let g = gateway(&nats, &[]);
    let mut client = Client::connect(g.addr).await;
    client.send(json!({"op":"subscribe","channels":["trades"],"symbols":["BTC-USD"],"delivery":"full"})).await;
    let _ = client.until_type("snapshot").await;

    let bus = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(bus);
    for body in [&b"not an event"[..], &[1, 1, 0][..], &[9; 64][..]] {
        js.publish("tw.sim.BTC-USD.trades", body.to_vec().into()).await.unwrap().await.unwrap();
    }
    // The stream goes on, in order, and the garbage is counted.
    let seen = watch_trades(&mut client, Duration::from_secs(2)).await;
    let trades: Vec<u64> = updates(&seen).iter().map(|u| u.3).collect();
    assert!(trades.len() > 50, "trades flow on: {}", trades.len());
    assert!(trades.windows(2).all(|w| w[1] == w[0] + 1), "in order, no hole");
    assert!(seen.iter().all(|m| m["type"] != "gap"));
    assert!(metric(g.addr, "tickwire_bus_bad_messages_total").await >= 3.0, "garbage counted");

    // The stream is deleted under the running nodes: the ingest node recreates
    // it, the gateway follows the new one; what was lost is told as a gap.
    js.delete_stream("TICKWIRE").await.unwrap();
    // Recovery takes a few seconds (longer when the machine is busy): watch
    // until well over 100 trades have come after it, for at most 40 s.
    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline {
        after.extend(watch_trades(&mut client, Duration::from_secs(2)).await);
        let trades = updates(&after);
        if after.last().is_some_and(|m| m["type"] == "closed") {
            break;
        }
        if trades.len() > 150 && trades.last().unwrap().3 > trades[0].3 + 100 {
            break;
        }
    }
    // Sequences only ever rise; any jump is announced by a gap.
    let (trades, _gaps) = announced(&after);
    let Some(&last) = trades.last() else {
        panic!(
            "no trade after the deletion; the client got {:?}; gateway: {}; ingest: {}",
            after.iter().rev().take(5).collect::<Vec<_>>(),
            bus_metrics(g.addr).await,
            get_text(ingest.addr, "/v1/feeds").await,
        );
    };
    let status = get_text(ingest.addr, "/v1/feeds").await;
    assert!(status.contains("live"), "the ingest node runs on");
    assert!(last > trades[0] + 100, "trades kept coming after the stream was recreated: {trades:?}");
}

/// The bus counters a node exports, for a failure message.
async fn bus_metrics(addr: std::net::SocketAddr) -> String {
    let body = get_text(addr, "/metrics").await;
    body.lines().filter(|l| l.starts_with("tickwire_bus_")).collect::<Vec<_>>().join("; ")
}

/// Every message `client` receives in `length` (a close ends it early and is
/// recorded as `{"type":"closed"}`).
async fn watch_trades(client: &mut Client, length: Duration) -> Vec<Value> {
    let end = Instant::now() + length;
    let mut seen = Vec::new();
    while Instant::now() < end {
        match client.next(Duration::from_millis(50)).await {
            Some(Received::Json(v)) => seen.push(v),
            // Recorded, so that a test that expected more says why it ended.
            Some(Received::Close(code, reason)) => {
                seen.push(json!({"type": "closed", "code": code, "reason": reason}));
                break;
            }
            None => {}
        }
    }
    seen
}

/// Sequences only rise; a jump is always announced by a gap (a first snapshot
/// starts the count). Returns the sequences and the gaps.
fn announced(messages: &[Value]) -> (Vec<u64>, Vec<Value>) {
    let (mut seqs, mut gaps) = (Vec::new(), Vec::new());
    let mut previous = 0;
    for m in messages {
        if m["type"] == "gap" {
            previous = m["to_seq"].as_u64().unwrap();
            gaps.push(m.clone());
            continue;
        }
        for u in updates(std::slice::from_ref(m)) {
            if previous > 0 {
                assert_eq!(u.3, previous + 1, "a silent jump: {m}");
            }
            previous = u.3;
            seqs.push(u.3);
        }
    }
    (seqs, gaps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_stream_everyone_recovers_and_clients_see_no_gap() {
    let mut nats = NatsServer::start("restart");
    let _ingest = ingest(&nats, &["--rate", "2000"]);
    let g = gateway(&nats, &[]);
    let mut client = Client::connect(g.addr).await;
    client.send(json!({"op":"subscribe","channels":["trades"],"symbols":["BTC-USD"],"delivery":"full"})).await;
    let mut seen = watch_trades(&mut client, Duration::from_millis(1500)).await;
    tokio::task::block_in_place(|| nats.kill());
    seen.extend(watch_trades(&mut client, Duration::from_millis(1500)).await);
    tokio::task::block_in_place(|| nats.up());
    seen.extend(watch_trades(&mut client, Duration::from_secs(8)).await);
    let (seqs, gaps) = announced(&seen);
    assert!(gaps.is_empty(), "the ingest node republished what the bus missed: {gaps:?}");
    let before = seqs.iter().filter(|s| **s > 0).count();
    assert!(before > 200, "trades flowed: {before}");
    // Trades published while the bus was down reach the client after it is back.
    let last = *seqs.last().unwrap();
    assert!(last > seqs[0] + 300, "the stream went on after the restart: {} .. {last}", seqs[0]);
}

/// A `tickwire serve` that may not listen yet (a standby): killed when dropped.
struct Standby(std::process::Child);

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_ingest_node_takes_over_and_continues_every_sequence() {
    let nats = NatsServer::start("failover");
    let leader = ingest(&nats, &["--rate", "400"]);
    let standby = Standby(
        std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args(["serve", "--role", "ingest", "--nats", &nats.url(), "--symbols", SYMBOLS, "--rate", "400"])
            .args(["--bus-checkpoint-ms", "200", "--listen", "127.0.0.1:0", "--store", "none", "--seed", "7"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let g = gateway(&nats, &[]);
    let mut client = Client::connect(g.addr).await;
    client
        .send(json!({"op":"subscribe","channels":["quotes","trades","book","candles.1s"],"symbols":["BTC-USD","ETH-USD"],"delivery":"full"}))
        .await;
    let mut seen = watch_trades(&mut client, Duration::from_secs(2)).await;
    let before = seen.len();
    leader.signal("KILL");
    let killed = Instant::now();
    let mut resumed = None;
    while killed.elapsed() < Duration::from_secs(10) {
        if let Some(Received::Json(v)) = client.next(Duration::from_millis(50)).await {
            seen.push(v);
            if resumed.is_none()
                && killed.elapsed() > Duration::from_millis(500)
                && !updates(&seen[seen.len() - 1..]).is_empty()
            {
                resumed = Some(killed.elapsed());
            }
        }
    }
    drop(standby);
    let resumed = resumed.expect("the standby published after the leader died");
    eprintln!("standby took over, clients saw updates again after {resumed:?}");
    assert!(resumed < Duration::from_secs(7), "took over in {resumed:?}");
    // Every stream: continuous sequences, or an explicit gap / book_invalidated
    // and snapshot; never a silent jump, never one sequence twice.
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut contents: BTreeMap<(String, String, u64), Value> = BTreeMap::new();
    for m in &seen {
        match m["type"].as_str() {
            Some("gap") => {
                let key = (m["symbol"].as_str().unwrap().to_string(), m["channel"].as_str().unwrap().to_string());
                last.insert(key, m["to_seq"].as_u64().unwrap());
            }
            Some("book_invalidated") => {
                last.remove(&(m["symbol"].as_str().unwrap().to_string(), "book".to_string()));
            }
            _ => {
                for (kind, symbol, channel, seq, update) in updates(std::slice::from_ref(m)) {
                    let key = (symbol.clone(), channel.clone());
                    if kind == "update"
                        && let Some(previous) = last.get(&key)
                    {
                        assert_eq!(seq, previous + 1, "{key:?}: a silent jump across the fail-over");
                    }
                    last.insert(key, seq);
                    if kind == "update" {
                        let old = contents.insert((symbol, channel, seq), content(&update));
                        assert!(old.is_none(), "one sequence delivered twice");
                    }
                }
            }
        }
    }
    assert!(seen.len() > before + 100, "the stream went on after the fail-over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_killed_in_a_cluster_of_three_loses_and_duplicates_nothing() {
    let mut cluster = common::nats::NatsCluster::start("r3", 3);
    let urls = cluster.urls();
    let r3 = ["--bus-replicas", "3"];
    // JetStream needs its meta leader elected before a replicated stream can be made.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ingest = loop {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args(["serve", "--role", "ingest", "--nats", &urls, "--symbols", SYMBOLS, "--listen", "127.0.0.1:0"])
            .args(["--store", "none", "--rate", "800", "--bus-checkpoint-ms", "200"])
            .args(r3)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut child = out;
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        if let Some(addr) = line.trim().rsplit("://").next().and_then(|a| a.parse().ok()) {
            break Process { child, addr, listening: line.trim().to_owned() };
        }
        let _ = child.wait();
        assert!(Instant::now() < deadline, "the ingest node never started on the cluster");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let g = Process::serve(&["--role", "gateway", "--nats", &urls, "--symbols", SYMBOLS, "--bus-replicas", "3"]);
    let mut client = Client::connect(g.addr).await;
    client
        .send(json!({"op":"subscribe","channels":["trades"],"symbols":["BTC-USD","ETH-USD"],"delivery":"full"}))
        .await;
    let mut seen = watch_trades(&mut client, Duration::from_secs(2)).await;
    // Kill the server both nodes are connected to (the first URL): they move to another.
    tokio::task::block_in_place(|| cluster.servers[0].kill());
    seen.extend(watch_trades(&mut client, Duration::from_secs(10)).await);
    drop(ingest);
    let gaps: Vec<_> = seen.iter().filter(|m| m["type"] == "gap").collect();
    assert!(gaps.is_empty(), "nothing lost: {gaps:?}");
    let mut by_symbol: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (kind, symbol, _, seq, _) in updates(&seen) {
        if kind == "update" {
            by_symbol.entry(symbol).or_default().push(seq);
        }
    }
    for (symbol, seqs) in &by_symbol {
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{symbol}: every trade once, in order");
        assert!(seqs.len() > 60, "{symbol}: the stream went on ({} trades)", seqs.len());
    }
    // The stream on the surviving servers holds every event once.
    let bus = async_nats::connect(cluster.servers[1].url()).await.unwrap();
    let js = async_nats::jetstream::new(bus);
    let mut stream = js.get_stream("TICKWIRE").await.unwrap();
    assert_eq!(stream.info().await.unwrap().config.num_replicas, 3);
    for symbol in ["BTC-USD", "ETH-USD"] {
        // The cluster may still be electing a leader for what the dead server led.
        let mut attempts = 0;
        let consumer = loop {
            let config = OrderedConfig {
                filter_subject: format!("tw.sim.{symbol}.trades"),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            };
            match stream.create_consumer(config).await {
                Ok(consumer) => break consumer,
                Err(error) if attempts < 6 => {
                    attempts += 1;
                    eprintln!("consumer not created yet ({error}); retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => panic!("no consumer on the surviving servers: {error}"),
            }
        };
        let mut messages = consumer.messages().await.unwrap();
        let mut seqs = Vec::new();
        loop {
            let message = messages.next().await.unwrap().unwrap();
            seqs.push(tickwire::cluster::wire::event_seq(&message.payload).unwrap());
            if message.info().unwrap().pending == 0 {
                break;
            }
        }
        // Every trade once. Not necessarily in order: a publish the killed
        // server never acknowledged is published again, and may land after
        // later ones the new leader had already stored (gateways deliver by
        // sequence, as the client check above shows).
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(sorted, expected, "{symbol}: the replicated stream holds every trade once");
    }
}
