//! A replay of the book channel starts with the book, and every seek does the
//! same, in JSON and protobuf, on SQLite and PostgreSQL, and `tickwire replay`
//! prints the same books: the snapshot a replay
//! sends at time T is, level for level and with its sequence, the book a live
//! subscriber held at T (its snapshot and every delta before T applied), and the
//! replay's deltas continue from the snapshot's sequence. A range that starts
//! before any stored book says so (`book_invalidated`, seq 0) and sends no delta
//! until the stored reset, which comes as a snapshot.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::store::{PgDb, TempDir};
use common::{Client, Received};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::Value;
use tickwire::codec::proto::pb;
use tickwire::model::now_nanos;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SYMBOLS: [&str; 2] = ["BTC-USD", "AAPL"];

/// One side of a book as decimal strings, best first.
type Side = Vec<(String, String)>;

/// A book as a client holds it: (seq, bids, asks).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Book {
    seq: u64,
    bids: BTreeMap<Key, String>,
    asks: BTreeMap<Key, String>,
}

/// A decimal price as a sortable key (the simulator's prices have fixed decimals
/// per instrument, so the digits compare as numbers once padded).
type Key = (usize, String);

fn key(price: &str) -> Key {
    (price.len(), price.to_owned())
}

impl Book {
    fn apply(&mut self, bids: &Value, asks: &Value) {
        for (side, levels) in [(&mut self.bids, bids), (&mut self.asks, asks)] {
            for level in levels.as_array().unwrap() {
                let (price, size) = (level[0].as_str().unwrap(), level[1].as_str().unwrap());
                if size.trim_start_matches(['0', '.']).is_empty() {
                    side.remove(&key(price));
                } else {
                    side.insert(key(price), size.to_owned());
                }
            }
        }
    }

    fn sides(&self) -> (Side, Side) {
        let pairs = |m: &BTreeMap<Key, String>| m.iter().map(|(k, v)| (k.1.clone(), v.clone())).collect::<Side>();
        let mut bids = pairs(&self.bids);
        bids.reverse();
        (bids, pairs(&self.asks))
    }
}

/// What a live book subscriber received: per symbol, (ts_event, message) in order.
struct LiveRun {
    messages: HashMap<String, Vec<(u64, Value)>>,
    from: u64,
    to: u64,
}

impl LiveRun {
    /// The book `symbol`'s live subscriber held once everything with
    /// `ts_event < at` was applied, as (seq, bids best first, asks best first).
    fn book_at(&self, symbol: &str, at: u64) -> (u64, Side, Side) {
        let mut book = Book::default();
        for (ts, m) in &self.messages[symbol] {
            if *ts >= at {
                break;
            }
            if m["type"] == "snapshot" {
                book = Book { seq: m["seq"].as_u64().unwrap(), ..Book::default() };
                book.apply(&m["data"]["bids"], &m["data"]["asks"]);
            } else {
                assert_eq!(m["seq"].as_u64().unwrap(), book.seq + 1, "{symbol}: the live stream is contiguous");
                book.seq += 1;
                book.apply(&m["bids"], &m["asks"]);
            }
        }
        let (bids, asks) = book.sides();
        (book.seq, bids, asks)
    }

    /// Exchange times at `fractions` of the run, each just after a book update of
    /// `SYMBOLS[0]` (so the book there is not the one of the run's start).
    fn times(&self, fractions: &[f64]) -> Vec<u64> {
        let updates = &self.messages[SYMBOLS[0]];
        fractions.iter().map(|f| updates[(updates.len() as f64 * f) as usize].0 + 1).collect()
    }
}

/// Records ~3 s of simulated BTC-USD and AAPL into `url` while a live client
/// holds both books (full delivery), then serves that store with a simulator
/// too slow to add much.
async fn record(url: &str, dir: &TempDir) -> (tickwire::app::Server, LiveRun) {
    let journal = dir.path("journal");
    let symbols = SYMBOLS.join(",");
    let flags = ["--store", url, "--journal-dir", &journal, "--rate", "4000", "--symbols", &symbols];
    let from = now_nanos();
    let server = common::start(&flags).await;
    let mut client = Client::connect(server.addr).await;
    client.send(serde_json::json!({"op":"subscribe","channels":["book"],"symbols":SYMBOLS,"delivery":"full"})).await;
    let mut messages: HashMap<String, Vec<(u64, Value)>> = HashMap::new();
    let end = Instant::now() + Duration::from_millis(3000);
    while Instant::now() < end {
        let Some(Received::Json(v)) = client.next(Duration::from_millis(50)).await else { continue };
        match v["type"].as_str() {
            Some("snapshot") => {
                let ts = v["ts_event"].as_u64().unwrap();
                messages.entry(v["symbol"].as_str().unwrap().into()).or_default().push((ts, v));
            }
            Some("batch") => {
                for u in v["updates"].as_array().unwrap() {
                    let ts = u["ts_event"].as_u64().unwrap();
                    messages.entry(u["symbol"].as_str().unwrap().into()).or_default().push((ts, u.clone()));
                }
            }
            Some("gap") => panic!("the live subscriber missed updates: {v}"),
            _ => {}
        }
    }
    server.shutdown().await;
    let to = now_nanos();
    let flags = ["--store", url, "--journal-dir", &journal, "--rate", "1", "--symbols", &symbols];
    let server = common::start(&flags).await;
    (server, LiveRun { messages, from, to })
}

/// A replay client of either format that reads messages as JSON-like values:
/// protobuf snapshots, statuses and batches are turned into the JSON shapes.
struct Replay {
    socket: common::Socket,
    proto: bool,
    /// Symbols by instrument id, from a protobuf replay's first status.
    symbols: HashMap<u32, String>,
}

impl Replay {
    async fn open(addr: std::net::SocketAddr, query: &str, proto: bool) -> Replay {
        let mut request = format!("ws://{addr}/v1/replay?{query}").into_client_request().unwrap();
        if proto {
            request.headers_mut().insert("Sec-WebSocket-Protocol", "tickwire.v1.proto".parse().unwrap());
        }
        let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        Replay { socket, proto, symbols: HashMap::new() }
    }

    async fn control(&mut self, json: Value) {
        if !self.proto {
            self.socket.send(Message::text(json.to_string())).await.unwrap();
            return;
        }
        use pb::replay_control::{Action, Pause};
        let action = match json["op"].as_str().unwrap() {
            "pause" => Action::Pause(Pause {}),
            "seek" => Action::SeekTo(json["to"].as_u64().unwrap()),
            other => panic!("no {other} in this test"),
        };
        let message =
            pb::ClientMessage { op: Some(pb::client_message::Op::Replay(pb::ReplayControl { action: Some(action) })) };
        self.socket.send(Message::binary(message.encode_to_vec())).await.unwrap();
    }

    /// The next message as JSON (book snapshots and updates with decimal
    /// strings), or `None` at the close.
    async fn next(&mut self) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(20), self.socket.next())
                .await
                .expect("the replay answers")
                .expect("the replay is open")
                .expect("a frame");
            match message {
                Message::Text(text) => return Some(serde_json::from_str(&text).unwrap()),
                Message::Binary(bytes) => return Some(proto_as_json(&bytes, &mut self.symbols)),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }
}

fn decimal(mantissa: i64, decimals: u32) -> String {
    let text = format!("{:0>width$}", mantissa.unsigned_abs(), width = decimals as usize + 1);
    let (whole, frac) = text.split_at(text.len() - decimals as usize);
    let sign = if mantissa < 0 { "-" } else { "" };
    if decimals == 0 { format!("{sign}{whole}") } else { format!("{sign}{whole}.{frac}") }
}

/// The protobuf messages this test reads, in the JSON shapes.
fn proto_as_json(bytes: &[u8], symbols: &mut HashMap<u32, String>) -> Value {
    use pb::server_message::Kind;
    let levels = |levels: &[pb::Level], p: u32, s: u32| -> Value {
        levels.iter().map(|l| serde_json::json!([decimal(l.price, p), decimal(l.size, s)])).collect()
    };
    match pb::ServerMessage::decode(bytes).unwrap().kind.unwrap() {
        Kind::Replay(status) => {
            symbols.extend(status.instruments.into_iter().map(|i| (i.instrument_id, i.symbol)));
            serde_json::json!({"type":"replay","at":status.at})
        }
        Kind::Snapshot(s) => {
            let data = match s.data {
                Some(pb::snapshot::Data::Book(b)) => serde_json::json!({
                    "bids": levels(&b.bids, s.price_decimals, s.size_decimals),
                    "asks": levels(&b.asks, s.price_decimals, s.size_decimals),
                }),
                other => panic!("a book snapshot, not {other:?}"),
            };
            assert_eq!(s.channel, pb::Channel::Book as i32);
            serde_json::json!({"type":"snapshot","symbol":s.symbol,"channel":"book","seq":s.seq,"data":data,"ts_event":s.ts_event})
        }
        Kind::BookInvalidated(b) => serde_json::json!({"type":"book_invalidated","symbol":b.symbol,"seq":b.seq}),
        Kind::Batch(batch) => {
            let updates: Vec<Value> = batch
                .updates
                .iter()
                .map(|u| serde_json::json!({"symbol":symbols[&u.instrument_id],"seq":u.seq,"ts_event":u.ts_event}))
                .collect();
            serde_json::json!({"type":"batch","updates":updates})
        }
        Kind::End(end) => serde_json::json!({"type":"end","events":end.events}),
        other => panic!("unexpected {other:?}"),
    }
}

/// Reads the book snapshots (or `book_invalidated`) of every symbol that follow a
/// status message, skipping what came before it.
async fn books_after_status(replay: &mut Replay) -> HashMap<String, Value> {
    loop {
        let m = replay.next().await.expect("a status");
        if m["type"] == "replay" {
            break;
        }
    }
    let mut books = HashMap::new();
    while books.len() < SYMBOLS.len() {
        let m = replay.next().await.expect("book snapshots");
        assert!(
            m["type"] == "snapshot" || m["type"] == "book_invalidated",
            "the books come right after the status, before anything else: {m}"
        );
        books.insert(m["symbol"].as_str().unwrap().to_owned(), m);
    }
    books
}

fn assert_books(live: &LiveRun, books: &HashMap<String, Value>, at: u64, what: &str) {
    for symbol in SYMBOLS {
        let m = &books[symbol];
        assert_eq!(m["type"], "snapshot", "{what}: {symbol} has a stored book at {at}: {m}");
        let (seq, bids, asks) = live.book_at(symbol, at);
        let side = |v: &Value| -> Side {
            v.as_array()
                .unwrap()
                .iter()
                .map(|l| (l[0].as_str().unwrap().to_owned(), l[1].as_str().unwrap().to_owned()))
                .collect()
        };
        assert_eq!(m["seq"].as_u64().unwrap(), seq, "{what}: {symbol}'s snapshot is at the live sequence at {at}");
        assert!(m["ts_event"].as_u64().unwrap() < at, "{what}: the book is of before {at}");
        assert_eq!(side(&m["data"]["bids"]), bids, "{what}: {symbol} bids at {at}");
        assert_eq!(side(&m["data"]["asks"]), asks, "{what}: {symbol} asks at {at}");
        assert!(bids.len() >= 10 && asks.len() >= 10, "{what}: a real book ({} bids)", bids.len());
    }
}

/// Start in the middle; the snapshot is the live book there and deltas continue
/// from its sequence; seek back, then forward: each gives the book at its time.
async fn starts_and_seeks_with_the_book(url: &str, dir: &TempDir) {
    let (server, live) = record(url, dir).await;
    let stored = if url.starts_with("postgres") { sqlx_count_pg(url).await } else { sqlx_count_sqlite(url).await };
    assert!(stored >= 2, "the writer stored whole books ({stored}), so rebuilds start from them");

    let times = live.times(&[0.5, 0.2, 0.85]);

    // `tickwire replay` (JSONL) opens with the same books.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["replay", "--store", url, "--symbols", &SYMBOLS.join(","), "--channels", "book"])
        .args(["--from", &times[0].to_string(), "--to", &live.to.to_string()])
        .env("TICKWIRE_LOG", "warn")
        .output()
        .expect("tickwire replay runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let books: HashMap<String, Value> =
        lines[..SYMBOLS.len()].iter().map(|m| (m["symbol"].as_str().unwrap().to_owned(), m.clone())).collect();
    assert_books(&live, &books, times[0], "tickwire replay");
    assert!(lines.len() > 100 && lines[SYMBOLS.len()..].iter().all(|l| l.get("type").is_none()), "then the deltas");
    for proto in [false, true] {
        let what = if proto { "protobuf" } else { "JSON" };
        let query = format!("symbols={}&channels=book&from={}&to={}&speed=max", SYMBOLS.join(","), times[0], live.to);
        let mut replay = Replay::open(server.addr, &query, proto).await;
        let books = books_after_status(&mut replay).await;
        assert_books(&live, &books, times[0], &format!("{what} start"));
        // Deltas continue from the snapshot's sequence, per symbol.
        let mut next: HashMap<String, u64> =
            books.iter().map(|(s, m)| (s.clone(), m["seq"].as_u64().unwrap() + 1)).collect();
        let mut deltas = 0;
        loop {
            let Some(m) = replay.next().await else { break };
            if m["type"] != "batch" {
                continue;
            }
            for u in m["updates"].as_array().unwrap() {
                let symbol = u["symbol"].as_str().unwrap().to_owned();
                let want = next.get_mut(&symbol).unwrap();
                assert_eq!(u["seq"].as_u64().unwrap(), *want, "{what}: {symbol}'s deltas follow its snapshot");
                assert!(u["ts_event"].as_u64().unwrap() >= times[0]);
                *want += 1;
                deltas += 1;
            }
        }
        assert!(deltas > 100, "{what}: {deltas} deltas after the start");

        // Real time, paused: seek back, then forward.
        let query = format!("symbols={}&channels=book&from={}&to={}&speed=1", SYMBOLS.join(","), live.from, live.to);
        let mut replay = Replay::open(server.addr, &query, proto).await;
        books_after_status(&mut replay).await;
        replay.control(serde_json::json!({"op":"pause"})).await;
        while replay.next().await.expect("the pause is answered")["type"] != "replay" {}
        for &at in &times {
            // Paused: the seek's status comes next, then the books at its time.
            replay.control(serde_json::json!({"op":"seek","to":at})).await;
            let books = books_after_status(&mut replay).await;
            assert_books(&live, &books, at, &format!("{what} seek to {at}"));
        }
    }
    server.shutdown().await;
}

async fn sqlx_count_sqlite(url: &str) -> i64 {
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM book_snapshots").fetch_one(&pool).await.unwrap();
    pool.close().await;
    n
}

async fn sqlx_count_pg(url: &str) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM book_snapshots").fetch_one(&pool).await.unwrap();
    pool.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_replay_starts_and_seeks_with_the_book() {
    let dir = TempDir::new("replay-book-sqlite");
    Box::pin(starts_and_seeks_with_the_book(&dir.sqlite_url(), &dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replay_starts_and_seeks_with_the_book() {
    let db = PgDb::create();
    let dir = TempDir::new("replay-book-pg");
    Box::pin(starts_and_seeks_with_the_book(&db.url(), &dir)).await;
}

/// Before the first stored book there is none to send: `book_invalidated` with
/// seq 0 says so, and no delta comes before the stored reset, which arrives as
/// `book_invalidated` and a snapshot at the reset's sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_from_before_any_book_says_so_and_sends_no_delta_onto_nothing() {
    let dir = TempDir::new("replay-book-none");
    let (server, live) = record(&dir.sqlite_url(), &dir).await;
    let query = format!("symbols={}&channels=book&from={}&to={}&speed=max", SYMBOLS[0], live.from - 1, live.to);
    let mut replay = Replay::open(server.addr, &query, false).await;
    let first = loop {
        let m = replay.next().await.expect("messages");
        if m["type"] != "replay" {
            break m;
        }
    };
    assert_eq!((first["type"].as_str(), first["seq"].as_u64()), (Some("book_invalidated"), Some(0)), "{first}");
    let reset = replay.next().await.unwrap();
    assert_eq!(reset["type"], "book_invalidated", "the stored reset comes next, no delta before it: {reset}");
    let snapshot = replay.next().await.unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["seq"], reset["seq"]);
    assert_eq!(snapshot["data"]["bids"].as_array().unwrap().len(), 20, "the simulator's whole book");
    let batch = replay.next().await.unwrap();
    assert_eq!(batch["updates"][0]["seq"].as_u64(), snapshot["seq"].as_u64().map(|s| s + 1), "{batch}");
    server.shutdown().await;
}
