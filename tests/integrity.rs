//! Stream integrity across restarts and crashes: a sequence names one update
//! forever, every update a client was sent is in the store exactly once after a
//! SIGKILL (whatever the database was doing), and `since_time` stitches stored
//! history to the live stream on every transport.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::store::{PgCluster, TempDir};
use common::{Client, Process, Received, get_json, start, updates};
use prost::Message as _;
use serde_json::{Value, json};
use tickwire::codec::proto::pb;
use tickwire::model::{Channel, now_nanos};
use tickwire::store::Store;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Trades seen by a client: seq → the update, and the epoch of the last snapshot.
#[derive(Default)]
struct Seen {
    trades: BTreeMap<u64, Value>,
    epoch: Option<u64>,
}

/// Subscribes to BTC-USD trades and reads until `count` trade updates arrived.
async fn watch_trades(addr: SocketAddr, count: usize) -> Seen {
    let mut client = Client::connect(addr).await;
    client.send(json!({"op":"subscribe","channels":["trades"],"symbols":["BTC-USD"]})).await;
    let mut seen = Seen::default();
    while seen.trades.len() < count {
        let message = client.json().await;
        if message["type"] == "snapshot" {
            seen.epoch = message["epoch"].as_u64();
        }
        for (kind, _, _, seq, update) in updates(std::slice::from_ref(&message)) {
            if kind == "update" {
                seen.trades.insert(seq, update);
            }
        }
    }
    seen
}

/// Restarted without a store, the server starts its sequences again: a client
/// resuming with its old `since` (with or without its epoch) is told of the
/// break and gets a fresh snapshot, never the new run's updates under
/// sequences it has seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_a_store_never_splices_two_runs() {
    let first = start(&["--rate", "3000", "--symbols", "BTC-USD"]).await;
    let seen = watch_trades(first.addr, 40).await;
    first.shutdown().await;
    let (last, epoch) = (*seen.trades.keys().last().unwrap(), seen.epoch.expect("snapshots carry their epoch"));

    let second = start(&["--rate", "3000", "--symbols", "BTC-USD"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the new run reuses the old sequences
    for resume in [json!({"epoch": epoch}), json!({})] {
        let mut client = Client::connect(second.addr).await;
        let mut request =
            json!({"op":"subscribe","channels":["trades"],"symbols":["BTC-USD"],"since":{"BTC-USD":last}});
        request.as_object_mut().unwrap().extend(resume.as_object().unwrap().clone());
        client.send(request).await;
        let gap = client.json().await;
        assert_eq!((gap["type"].as_str(), gap["reason"].as_str()), (Some("gap"), Some("epoch_changed")), "{gap}");
        assert_eq!(gap["from_seq"], 1, "every sequence of the new run is another update than the client's");
        let snapshot = client.json().await;
        assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
        assert_ne!(snapshot["epoch"].as_u64(), Some(epoch), "a new run, a new epoch");
        assert!(snapshot["seq"].as_u64().unwrap() > 0);
    }
    // With the new epoch, a resume within this run is exact.
    let again = watch_trades(second.addr, 5).await;
    let mut client = Client::connect(second.addr).await;
    let since = *again.trades.keys().last().unwrap();
    client
        .send(json!({"op":"subscribe","channels":["trades"],"symbols":["BTC-USD"],"since":{"BTC-USD":since},"epoch":again.epoch}))
        .await;
    let first_update = loop {
        let message = client.json().await;
        assert_ne!(message["type"], "gap", "{message}");
        if let Some((_, _, _, seq, _)) = updates(std::slice::from_ref(&message)).into_iter().next() {
            break seq;
        }
    };
    assert_eq!(first_update, since + 1);
    second.shutdown().await;
}

/// With a store, sequences continue across a restart (graceful or SIGKILL): a
/// client resuming with the old run's `since` and epoch gets exactly what it
/// missed from the store, a `live` marker with the new epoch, then the new run's
/// updates, which continue the sequence; the store holds every sequence once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_a_store_continues_every_sequence() {
    let dir = TempDir::new("integrity-restart");
    let store = dir.sqlite_url();
    let journal = dir.path("journal");
    let flags = ["--store", &store, "--journal-dir", &journal, "--rate", "3000", "--symbols", "BTC-USD"];
    let mut epochs = Vec::new();
    let mut resume: Option<(u64, u64)> = None;
    for restart in ["graceful", "SIGKILL", "graceful"] {
        let server = Process::serve(&flags);
        let mut client = Client::connect(server.addr).await;
        let mut request = json!({"op":"subscribe","channels":["trades"],"symbols":["BTC-USD"]});
        if let Some((since, epoch)) = resume {
            request["since"] = json!({"BTC-USD": since});
            request["epoch"] = json!(epoch);
        }
        client.send(request).await;
        let mut last = resume.map(|(since, _)| since);
        let mut live = None;
        let mut received = 0;
        while received < 300 {
            let message = client.json().await;
            match message["type"].as_str() {
                Some("snapshot") => {
                    assert!(resume.is_none(), "a resume across a restart needs no snapshot: {message}");
                    epochs.push(message["epoch"].as_u64().unwrap());
                    last = message["seq"].as_u64();
                }
                Some("live") => {
                    live = message["epoch"].as_u64();
                    assert_eq!(message["seq"].as_u64(), last, "live follows the last stored update");
                }
                Some("gap" | "error") => panic!("{restart}: {message}"),
                _ => {}
            }
            for (kind, _, _, seq, _) in updates(std::slice::from_ref(&message)) {
                if kind == "update" {
                    assert_eq!(Some(seq), last.map(|l| l + 1), "{restart}: every sequence once, in order");
                    last = Some(seq);
                    received += 1;
                }
            }
        }
        if resume.is_some() {
            let live = live.expect("a live marker where stored history meets the new run");
            assert!(!epochs.contains(&live), "the live marker names the new run's epoch");
            epochs.push(live);
        }
        resume = Some((last.unwrap(), *epochs.last().unwrap()));
        drop(client);
        match restart {
            "SIGKILL" => server.signal("KILL"),
            _ => server.signal("TERM"),
        }
        let mut child = server;
        let _ = child.child.wait();
    }
    // One more run drains what the killed one left, and stops.
    let server = Process::serve(&flags);
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.signal("TERM");
    let mut child = server;
    let _ = child.child.wait();
    let store = Store::connect(&store).await.unwrap();
    let (instruments, ids) = store.load_instruments().await.unwrap();
    let id = ids.store_id(instruments.lookup("BTC-USD").unwrap());
    let rows = store.history(Channel::Trades, id, 0, u64::MAX >> 1, None, 10_000_000).await.unwrap();
    let mut seqs: Vec<u64> = rows.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "four runs, one sequence: each number once");
    assert!(seqs.len() as u64 >= resume.unwrap().0);
}

/// What a recording client was sent, per (symbol, channel, seq).
type Recorded = BTreeMap<(String, String, u64), Value>;

/// Records every update (not snapshots) of two symbols' stored channels until
/// the connection ends or `stop` is set.
async fn record(addr: SocketAddr, stop: tokio::sync::watch::Receiver<bool>) -> Recorded {
    let mut client = Client::connect(addr).await;
    client
        .send(json!({"op":"subscribe","channels":["trades","quotes","book"],"symbols":["BTC-USD","AAPL"],"delivery":"full"}))
        .await;
    let mut recorded = Recorded::new();
    loop {
        if *stop.borrow() {
            break;
        }
        match client.next(Duration::from_millis(100)).await {
            Some(Received::Json(message)) => {
                assert_ne!(message["type"], "gap", "a full-delivery client misses nothing: {message}");
                for (kind, symbol, channel, seq, update) in updates(std::slice::from_ref(&message)) {
                    if kind == "update" {
                        recorded.insert((symbol, channel, seq), update);
                    }
                }
            }
            Some(Received::Close(..)) => break,
            None if client.socket.get_ref().get_ref().peer_addr().is_err() => break,
            None => {}
        }
    }
    recorded
}

/// The fields of an update that the store keeps, as the client saw them.
fn stored_fields(update: &Value) -> Value {
    let mut fields = update.clone();
    for clock in ["ts_recv", "ts_send", "symbol"] {
        fields.as_object_mut().unwrap().remove(clock);
    }
    fields
}

/// SIGKILL while PostgreSQL is up, while it is stopped, and just after it came
/// back: once a new process has drained the journal, the store holds every
/// trade, quote and book delta the recording client was sent, with the values
/// it was sent, exactly once, and every stored stream is contiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_any_moment_loses_nothing_clients_were_sent() {
    let cluster = PgCluster::start();
    let url = cluster.url();
    let dir = TempDir::new("integrity-kill");
    let journal = dir.path("journal");
    let flags = ["--store", &url, "--journal-dir", &journal, "--rate", "3000", "--symbols", "BTC-USD,AAPL"];
    let mut recorded = Recorded::new();
    for phase in ["database up", "database stopped", "database just back"] {
        let server = Process::serve(&flags);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let recorder = tokio::spawn(record(server.addr, stopped));
        // A moment that differs from run to run.
        let jitter = Duration::from_millis(now_nanos() % 700);
        tokio::time::sleep(Duration::from_millis(800) + jitter).await;
        match phase {
            "database stopped" => {
                cluster.down();
                tokio::time::sleep(Duration::from_millis(1200) + jitter).await;
            }
            "database just back" => {
                cluster.down();
                tokio::time::sleep(Duration::from_millis(1000)).await;
                cluster.up();
                tokio::time::sleep(jitter / 2).await;
            }
            _ => {}
        }
        server.signal("KILL");
        let _ = stop.send(true);
        let mut server = server;
        let _ = server.child.wait();
        let seen = recorder.await.unwrap();
        assert!(seen.len() > 500, "{phase}: the client was streaming ({} updates)", seen.len());
        recorded.extend(seen);
        if phase == "database stopped" {
            cluster.up();
        }
    }
    // A last run drains what the killed one left, then stops cleanly.
    let server = Process::serve(&flags);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, stats) = get_json(server.addr, "/v1/stats").await;
        if stats["store_written_from_journal"].as_u64().unwrap() > 0 && stats["store_lag_ms"].as_u64().unwrap() < 1000 {
            break;
        }
        assert!(Instant::now() < deadline, "the journal was not written: {stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.signal("TERM");
    let mut server = server;
    let _ = server.child.wait();

    let store = Store::connect(&url).await.unwrap();
    let (instruments, ids) = store.load_instruments().await.unwrap();
    let mut stored: Recorded = Recorded::new();
    for symbol in ["BTC-USD", "AAPL"] {
        let inst = instruments.get(instruments.lookup(symbol).unwrap()).clone();
        for channel in Channel::STORED {
            let rows = store.history(channel, ids.store_id(inst.id), 0, u64::MAX >> 1, None, 10_000_000).await.unwrap();
            let mut seqs: Vec<u64> = rows.iter().map(|e| e.seq).collect();
            seqs.sort_unstable();
            assert_eq!(
                seqs,
                (1..=seqs.len() as u64).collect::<Vec<_>>(),
                "{symbol} {channel:?}: stored contiguously, each sequence once"
            );
            for mut event in rows {
                event.instrument = inst.id;
                let mut bytes = Vec::new();
                tickwire::codec::json::encode_update(&mut bytes, &inst, &event);
                let update: Value = serde_json::from_slice(&bytes).unwrap();
                stored.insert((symbol.to_owned(), channel.as_str().to_owned(), event.seq), update);
            }
        }
    }
    let mut missing = Vec::new();
    for (key, update) in &recorded {
        match stored.get(key) {
            Some(row) => assert_eq!(stored_fields(row), stored_fields(update), "{key:?}: stored as sent"),
            None => missing.push(key.clone()),
        }
    }
    assert!(
        missing.is_empty(),
        "{} updates clients were sent are not stored: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Collects BTC-USD trade messages, in order, as (kind, seq) pairs (kind:
/// snapshot, update, live, gap), until `updates_after_live` updates followed a
/// live marker.
#[derive(Debug, Default)]
struct Sequence {
    items: Vec<(String, u64)>,
    first_ts_event: Option<u64>,
}

impl Sequence {
    fn push_json(&mut self, message: &Value) {
        match message["type"].as_str() {
            Some("live") if message["symbol"] == "BTC-USD" => {
                self.items.push(("live".into(), message["seq"].as_u64().unwrap()));
            }
            Some("gap") => self.items.push(("gap".into(), message["from_seq"].as_u64().unwrap())),
            _ => {}
        }
        for (kind, symbol, channel, seq, update) in updates(std::slice::from_ref(message)) {
            if symbol == "BTC-USD" && channel == "trades" {
                if kind == "update" && self.first_ts_event.is_none() {
                    self.first_ts_event = update["ts_event"].as_u64();
                }
                self.items.push((kind, seq));
            }
        }
    }

    fn live_and_then(&self, n: usize) -> bool {
        self.items.iter().position(|(k, _)| k == "live").is_some_and(|at| self.items.len() > at + n)
    }

    /// Stored history, one live marker at its last sequence, then live: every
    /// sequence once, in order, no snapshot, no gap; returns the first sequence.
    fn assert_history_then_live(&self, transport: &str) -> u64 {
        assert!(self.items.iter().all(|(k, _)| k != "snapshot" && k != "gap"), "{transport}: {:?}", self.items);
        let lives: Vec<_> = self.items.iter().enumerate().filter(|(_, (k, _))| k == "live").collect();
        // A long-poll resumes at every request; one that misses the ring is
        // served from the store again and ends in its own marker.
        if transport != "long-poll" {
            assert_eq!(lives.len(), 1, "{transport}: one live marker");
        }
        let seqs: Vec<u64> = self.items.iter().filter(|(k, _)| k == "update").map(|(_, s)| *s).collect();
        assert!(seqs.len() > 100, "{transport}: three seconds of history and then live");
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{transport}: every sequence once, in order");
        // The marker sits where stored history ends (what the recent-history
        // ring still holds follows it, as on any resume), and names that point.
        for (at, (_, live_seq)) in lives {
            let before = if at == 0 { seqs[0] - 1 } else { self.items[at - 1].1 };
            assert_eq!(*live_seq, before, "{transport}: live names the last update before it");
        }
        assert!(self.items[0].0 == "update" && self.items.len() > 150, "{transport}: history first");
        seqs[0]
    }
}

async fn since_time_over_ws(addr: SocketAddr, since_time: Value) -> Sequence {
    let mut client = Client::connect(addr).await;
    client.send(json!({"op":"subscribe","channels":["trades"],"symbols":["BTC-USD"],"since_time":since_time})).await;
    let mut sequence = Sequence::default();
    while !sequence.live_and_then(50) {
        sequence.push_json(&client.json().await);
    }
    sequence
}

async fn since_time_over_proto(addr: SocketAddr, since_time: u64) -> Sequence {
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("{}?format=proto", common::ws_url(addr))).await.unwrap();
    let subscribe = pb::ClientMessage {
        op: Some(pb::client_message::Op::Subscribe(pb::Subscribe {
            channels: vec![pb::Channel::Trades as i32],
            symbols: vec!["BTC-USD".into()],
            since_time,
            ..Default::default()
        })),
    };
    futures_util::SinkExt::send(&mut socket, Message::binary(subscribe.encode_to_vec())).await.unwrap();
    let mut sequence = Sequence::default();
    while !sequence.live_and_then(50) {
        let message = tokio::time::timeout(Duration::from_secs(10), futures_util::StreamExt::next(&mut socket))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Message::Binary(bytes) = message else { continue };
        use pb::server_message::Kind;
        match pb::ServerMessage::decode(bytes.as_ref()).unwrap().kind {
            Some(Kind::Batch(batch)) => {
                for update in batch.updates {
                    if sequence.first_ts_event.is_none() {
                        sequence.first_ts_event = Some(update.ts_event);
                    }
                    sequence.items.push(("update".into(), update.seq));
                }
            }
            Some(Kind::Live(live)) => {
                assert!(live.epoch > 0, "live names the epoch");
                sequence.items.push(("live".into(), live.seq));
            }
            Some(Kind::Snapshot(s)) => sequence.items.push(("snapshot".into(), s.seq)),
            Some(Kind::Gap(g)) => sequence.items.push(("gap".into(), g.from_seq)),
            _ => {}
        }
    }
    sequence
}

async fn since_time_over_sse(addr: SocketAddr, since_time: &str) -> Sequence {
    let query = format!("symbols=BTC-USD&channels=trades&since_time={since_time}");
    let done = |messages: &[Value]| {
        let mut sequence = Sequence::default();
        messages.iter().for_each(|m| sequence.push_json(m));
        sequence.live_and_then(50)
    };
    let (messages, id) = sse_read(addr, &query, None, done).await;
    assert!(id.starts_with('@') && id.contains("BTC-USD~trades~"), "the id is a cursor with the epoch: {id}");
    let mut sequence = Sequence::default();
    messages.iter().for_each(|m| sequence.push_json(m));
    sequence
}

async fn since_time_over_poll(addr: SocketAddr, since_time: &str) -> Sequence {
    let mut sequence = Sequence::default();
    let (status, body) =
        get_json(addr, &format!("/v1/poll?symbols=BTC-USD&channels=trades&since_time={since_time}&timeout_ms=2000"))
            .await;
    assert_eq!(status, 200, "{body}");
    let mut cursor = body["cursor"].as_str().unwrap().to_owned();
    for message in body["messages"].as_array().unwrap() {
        sequence.push_json(message);
    }
    while !sequence.live_and_then(50) {
        let (status, body) =
            get_json(addr, &format!("/v1/poll?symbols=BTC-USD&channels=trades&cursor={cursor}&timeout_ms=2000")).await;
        assert_eq!(status, 200, "{body}");
        cursor = body["cursor"].as_str().unwrap().to_owned();
        for message in body["messages"].as_array().unwrap() {
            sequence.push_json(message);
        }
    }
    assert!(cursor.starts_with('@'), "the cursor names the epoch: {cursor}");
    sequence
}

/// A server of BTC-USD at 2,000 events/s with a SQLite store of its own and a
/// short recent-history ring, so that resumes are served from the store.
async fn start_with_store(tag: &str, ring_depth: &str) -> (TempDir, tickwire::app::Server) {
    let dir = TempDir::new(tag);
    let (store, journal) = (dir.sqlite_url(), dir.path("journal"));
    let flags = [
        "--store",
        &store,
        "--journal-dir",
        &journal,
        "--rate",
        "2000",
        "--symbols",
        "BTC-USD",
        "--ring-depth",
        ring_depth,
    ];
    let server = start(&flags).await;
    (dir, server)
}

/// `since_time` over WebSocket (JSON and protobuf), SSE and long-poll: the
/// stored updates from that time, a `live` marker, then the live stream, with
/// no gap and no duplicate; a time before the first trade starts at the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_time_streams_history_then_live_on_every_transport() {
    let (_dir, server) = start_with_store("integrity-since-time", "100").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let thirty_s_ago = now_nanos() - 30_000_000_000;
    let rfc3339 =
        humantime::format_rfc3339_nanos(std::time::UNIX_EPOCH + Duration::from_nanos(thirty_s_ago)).to_string();
    let one_s_ago = now_nanos() - 1_000_000_000;
    let results = [
        ("ws json", since_time_over_ws(server.addr, json!(thirty_s_ago)).await),
        ("ws json rfc3339", since_time_over_ws(server.addr, json!(rfc3339)).await),
        ("ws proto", since_time_over_proto(server.addr, thirty_s_ago).await),
        ("sse", since_time_over_sse(server.addr, &thirty_s_ago.to_string()).await),
        ("long-poll", since_time_over_poll(server.addr, &rfc3339).await),
    ];
    for (transport, sequence) in &results {
        assert_eq!(sequence.assert_history_then_live(transport), 1, "{transport}: from before the first trade");
    }
    // A time inside the stored range starts at the first trade at or after it.
    let recent = since_time_over_ws(server.addr, json!(one_s_ago)).await;
    let first = recent.assert_history_then_live("ws json, 1 s ago");
    assert!(first > 1, "a later time starts later");
    assert!(recent.first_ts_event.unwrap() >= one_s_ago, "nothing before since_time");

    // Without a store, since_time is refused with a reason and a snapshot follows.
    let plain = start(&["--rate", "500", "--symbols", "BTC-USD"]).await;
    let mut client = Client::connect(plain.addr).await;
    client.send(json!({"op":"subscribe","channels":["trades"],"symbols":["BTC-USD"],"since_time":thirty_s_ago})).await;
    let error = client.json().await;
    assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("error"), Some("bad_since")), "{error}");
    assert_eq!(client.json().await["type"], "snapshot");
    // since and since_time together are one request too many.
    client
        .send(json!({"op":"subscribe","channels":["trades"],"symbols":["BTC-USD"],"since":{"BTC-USD":1},"since_time":thirty_s_ago}))
        .await;
    assert_eq!(client.until_type("error").await["code"], "bad_since");
    plain.shutdown().await;
    server.shutdown().await;
}

/// Reads SSE events from a request until `enough` says so; returns the messages
/// and the last event id.
async fn sse_read(
    addr: SocketAddr,
    query: &str,
    last_event_id: Option<&str>,
    enough: impl Fn(&[Value]) -> bool,
) -> (Vec<Value>, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let header = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    let request = format!("GET /v1/sse?{query} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{header}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(stream).lines();
    let (mut messages, mut id) = (Vec::new(), String::new());
    while !enough(&messages) {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await.unwrap().unwrap().unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            messages.push(serde_json::from_str(data).unwrap());
        } else if let Some(value) = line.strip_prefix("id: ") {
            id = value.to_owned();
        }
    }
    (messages, id)
}

/// SSE's `Last-Event-ID` and long-poll cursors carry the epoch: within a run an
/// SSE stream resumes exactly (from the store when the ring has moved on), and
/// across a restart without a store a poll's old cursor gets `epoch_changed`
/// and a fresh snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_and_poll_cursors_resume_by_epoch() {
    let (_dir, server) = start_with_store("integrity-cursors", "50").await;
    let query = "symbols=BTC-USD&channels=trades";
    let (first, id) = sse_read(server.addr, query, None, |m| updates(m).len() > 50).await;
    let last = updates(&first).last().unwrap().3;
    tokio::time::sleep(Duration::from_millis(500)).await; // far past the 50-event ring
    let (second, _) = sse_read(server.addr, query, Some(&id), |m| updates(m).len() > 600).await;
    assert!(second.iter().all(|m| m["type"] != "gap" && m["type"] != "snapshot"), "an exact resume");
    assert!(second.iter().any(|m| m["type"] == "live"), "served from the store, then live");
    let seqs: Vec<u64> = updates(&second).iter().map(|u| u.3).collect();
    assert_eq!(seqs[0], last + 1, "continues after the last event id");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "every sequence once");
    server.shutdown().await;

    let plain = start(&["--rate", "2000", "--symbols", "BTC-USD"]).await;
    let path = format!("/v1/poll?{query}&timeout_ms=1000");
    let (_, body) = get_json(plain.addr, &path).await;
    let (_, body) = get_json(plain.addr, &format!("{path}&cursor={}", body["cursor"].as_str().unwrap())).await;
    let cursor = body["cursor"].as_str().unwrap().to_owned();
    assert!(cursor.starts_with('@'), "{cursor}");
    plain.shutdown().await;
    let restarted = start(&["--rate", "2000", "--symbols", "BTC-USD"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, body) = get_json(restarted.addr, &format!("{path}&cursor={cursor}")).await;
    let kinds: Vec<&str> = body["messages"].as_array().unwrap().iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(&kinds[..2], ["gap", "snapshot"], "{body}");
    assert_eq!(body["messages"][0]["reason"], "epoch_changed");
    restarted.shutdown().await;
}
