//! History store throughput against the machine's PostgreSQL, in one run:
//!
//! 1. the writer's path (`Store::write`: COPY in transactions of 50,000 events,
//!    day partitions, the primary key) writing N simulator events into a fresh
//!    database, beside a raw `COPY` of the very same rows by `psql` into another
//!    fresh database with the same schema (the baseline);
//! 2. the replay read rate: the merged, exchange-time-ordered reader alone, and
//!    one WebSocket client of `/v1/replay?speed=max` counting every update.
//!
//! `STORE_BENCH_EVENTS` (default 1,000,000) sets N. Needs PostgreSQL on
//! 127.0.0.1:5432 (trust auth) and `psql`.

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tickwire::book::Engine;
use tickwire::feed::simulator::{DEFAULT_UNIVERSE, Simulator};
use tickwire::model::{Channel, Event, InstrumentId, Instruments};
use tickwire::store::reader::MergedHistory;
use tickwire::store::{EVENT_TABLES, Store, rows};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PG: &str = "postgres://postgres@127.0.0.1:5432";

fn psql(db: &str, sql: &str) {
    let out = Command::new("psql").args([&format!("{PG}/{db}"), "-v", "ON_ERROR_STOP=1", "-qc", sql]).output().unwrap();
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
}

struct Db(String);

impl Db {
    fn create(tag: &str) -> Db {
        let name = format!("tw_bench_{tag}_{}", std::process::id());
        psql("postgres", &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        psql("postgres", &format!("CREATE DATABASE {name}"));
        Db(name)
    }
    fn url(&self) -> String {
        format!("{PG}/{}", self.0)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([&format!("{PG}/postgres"), "-qc", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0)])
            .output();
    }
}

/// N sequenced simulator events, 1 µs apart in exchange time, starting `start`.
fn events(n: usize, start: u64) -> (Instruments, Vec<Event>) {
    let mut instruments = Instruments::new();
    let mut sim = Simulator::new(DEFAULT_UNIVERSE, &mut instruments, 1).unwrap();
    let mut engine = Engine::new(&instruments, 20);
    let mut out = sim.initial_events(start);
    while out.len() < n {
        sim.step(start, &mut out);
    }
    out.truncate(n);
    for (i, event) in out.iter_mut().enumerate() {
        event.ts_event = start + i as u64 * 1_000;
        event.ts_recv = event.ts_event + 20_000;
        engine.apply(event).unwrap();
        event.ts_send = event.ts_recv + 5_000;
    }
    (instruments, out)
}

fn main() {
    // `cargo bench` passes --bench; a test run should not write a million rows.
    if !std::env::args().any(|a| a == "--bench") {
        println!("store: skipped (run with cargo bench --bench store)");
        return;
    }
    let n: usize = std::env::var("STORE_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run(n));
}

async fn run(n: usize) {
    let start = 1_750_000_000_000_000_000; // 2025-06-15, inside one day for N ≤ 20 M
    let (instruments, mut events) = events(n, start);
    let per_channel: Vec<usize> =
        Channel::STORED.iter().map(|c| events.iter().filter(|e| e.channel() == *c).count()).collect();
    println!(
        "store bench: {n} simulator events (quotes {}, trades {}, book {})",
        per_channel[0], per_channel[1], per_channel[2]
    );

    // 1a. The writer's path.
    let writer_db = Db::create("writer");
    let store = Store::open(&writer_db.url()).await.unwrap();
    let ids = store.register_instruments(&instruments).await.unwrap();
    for event in &mut events {
        event.instrument = InstrumentId(ids.store_id(event.instrument) as u32);
    }
    let begin = Instant::now();
    for batch in events.chunks(50_000) {
        store.write(batch, false).await.unwrap();
    }
    let writer_s = begin.elapsed().as_secs_f64();

    // 1b. Raw COPY of the same rows by psql, into an identical fresh database.
    let raw_db = Db::create("raw");
    let raw = Store::open(&raw_db.url()).await.unwrap();
    raw.register_instruments(&instruments).await.unwrap();
    raw.write(&events[..1], false).await.unwrap(); // creates the day's partitions
    psql(&raw_db.0, "TRUNCATE quotes, trades, book_events");
    let dir = std::env::temp_dir().join(format!("tickwire-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tables = rows::copy_text(&events);
    let mut script = String::new();
    for (i, table) in EVENT_TABLES.iter().enumerate() {
        let file = dir.join(format!("{table}.copy"));
        std::fs::write(&file, &tables.data[i]).unwrap();
        script.push_str(&format!("\\copy {table} ({}) FROM '{}'\n", rows::COLUMNS[i], file.display()));
    }
    let script_file = dir.join("copy.sql");
    std::fs::write(&script_file, script).unwrap();
    let begin = Instant::now();
    let out = Command::new("psql")
        .args([&raw_db.url(), "-v", "ON_ERROR_STOP=1", "-q", "-1", "-f", &script_file.display().to_string()])
        .output()
        .unwrap();
    let raw_s = begin.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
    raw.close().await;
    let writer_rate = n as f64 / writer_s;
    let raw_rate = n as f64 / raw_s;
    println!("writer (Store::write, COPY, 50k/txn): {writer_s:.2} s  {writer_rate:>10.0} events/s");
    println!("raw COPY by psql (same rows):         {raw_s:.2} s  {raw_rate:>10.0} events/s");
    println!("writer / raw COPY: {:.0}%", writer_rate / raw_rate * 100.0);

    // 2. Reading back: the merged reader alone, then one WebSocket client of
    // /v1/replay at speed=max (every channel, every symbol); first right after the
    // write, then after VACUUM ANALYZE (what autovacuum leaves for a replay of a
    // past day: hint bits set, pages pruned, statistics current).
    let url = writer_db.url();
    let args = tickwire::config::ServeArgs::parse_from_args([
        "--listen",
        "127.0.0.1:0",
        "--static-dir",
        "/nonexistent",
        "--rate",
        "1",
        "--store",
        &url,
        "--journal-dir",
        "/tmp/tickwire-store-bench-journal",
    ])
    .unwrap();
    let server = tickwire::app::start(&args).await.unwrap();
    let symbols: Vec<String> = instruments.iter().map(|i| i.symbol.to_string()).collect();
    let store_ids: Vec<i64> = instruments.iter().map(|i| ids.store_id(i.id)).collect();
    let streams: Vec<(i64, Channel)> =
        store_ids.iter().flat_map(|&id| Channel::STORED.into_iter().map(move |c| (id, c))).collect();
    let to = start + n as u64 * 1_000 + 1;
    for (label, vacuum) in [("right after the write", false), ("after VACUUM ANALYZE", true)] {
        if vacuum {
            psql(&writer_db.0, "VACUUM ANALYZE quotes, trades, book_events");
        }
        println!("reading back, {label} (median of {READ_RUNS} runs each):");
        let (mut reader, mut json, mut proto) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..READ_RUNS {
            reader.push(read_merged(&store, &streams, start, to, n).await);
            json.push(replay_over_websocket(&server.addr, &symbols, start, to, n, false).await);
            proto.push(replay_over_websocket(&server.addr, &symbols, start, to, n, true).await);
        }
        let rate = |seconds: Vec<f64>| {
            let median = median(seconds);
            format!("{median:.2} s  {:>10.0} events/s", n as f64 / median)
        };
        println!("  merged reader ({} instrument-tables): {}", streams.len(), rate(reader));
        println!("  replay to one client, JSON, max:      {}", rate(json));
        println!("  replay to one client, protobuf, max:  {}", rate(proto));
    }
    server.shutdown().await;
    let _ = std::fs::remove_dir_all("/tmp/tickwire-store-bench-journal");
    store.close().await;
}

/// The merged reader alone: every stream of the range, in exchange-time order.
async fn read_merged(store: &Store, streams: &[(i64, Channel)], from: u64, to: u64, n: usize) -> f64 {
    let begin = Instant::now();
    let mut history = MergedHistory::open(store.clone(), streams, from, to, 8192).await.unwrap();
    let mut read = 0;
    let mut chunk = Vec::new();
    loop {
        chunk.clear();
        history.next_chunk(8192, &mut chunk).await.unwrap();
        if chunk.is_empty() {
            break;
        }
        read += chunk.len();
    }
    assert_eq!(read, n);
    begin.elapsed().as_secs_f64()
}

/// Reads of the same rows repeated, for a median on a noisy machine.
const READ_RUNS: usize = 3;

fn median(mut seconds: Vec<f64>) -> f64 {
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}

/// One WebSocket client of `/v1/replay` at `speed=max`, counting updates.
async fn replay_over_websocket(
    addr: &std::net::SocketAddr,
    symbols: &[String],
    from: u64,
    to: u64,
    n: usize,
    proto: bool,
) -> f64 {
    let replay = format!(
        "ws://{addr}/v1/replay?symbols={}&channels=quotes,trades,book&from={from}&to={to}&speed=max",
        symbols.join(",")
    );
    let mut request = replay.into_client_request().unwrap();
    if proto {
        request.headers_mut().insert("Sec-WebSocket-Protocol", "tickwire.v1.proto".parse().unwrap());
    }
    let begin = Instant::now();
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let (mut updates, mut bytes) = (0usize, 0usize);
    let seq_finder = memchr::memmem::Finder::new(b"\"seq\":");
    while let Some(Ok(message)) = tokio::time::timeout(Duration::from_secs(120), socket.next()).await.unwrap() {
        match message {
            Message::Text(text) => {
                bytes += text.len();
                // Count updates without parsing: one "seq" per update object
                // (memmem: the client shares the 2 cores with server and database).
                updates += seq_finder.find_iter(text.as_bytes()).count();
            }
            Message::Binary(frame) => {
                bytes += frame.len();
                // Reads only each update's clocks (no decoding of the rest).
                tickwire::loadgen::scan_proto(&frame, |_, _, _| updates += 1);
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    let ws_s = begin.elapsed().as_secs_f64();
    assert_eq!(updates, n);
    println!("    (one run: {ws_s:.2} s, {:.0} MB/s)", bytes as f64 / ws_s / 1e6);
    ws_s
}
