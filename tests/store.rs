//! Tick history against the real PostgreSQL of this machine (a database per
//! test) and SQLite: what the simulator published is, row for row, what the store
//! holds and what replay streams back; outages and crashes lose nothing the
//! writer acknowledged or journaled; bad input gets clear 4xx errors.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::store::{PgDb, Proxy, TempDir};
use common::{Client, Received, get_json, updates};
use futures_util::StreamExt;
use serde_json::Value;
use tickwire::codec::json::encode_update;
use tickwire::feed::simulator::{Simulator, select_universe};
use tickwire::model::{Channel, Event, Instruments};
use tickwire::store::Store;
use tokio_tungstenite::tungstenite::Message;

const SYMBOLS: [&str; 2] = ["BTC-USD", "AAPL"];

/// Every stored event of `symbols`, per (symbol, channel), in sequence order,
/// with this store's instruments.
async fn stored(url: &str) -> (Instruments, BTreeMap<(String, Channel), Vec<Event>>) {
    let store = Store::connect(url).await.unwrap();
    let (instruments, ids) = store.load_instruments().await.unwrap();
    let mut out = BTreeMap::new();
    for symbol in SYMBOLS {
        let id = instruments.lookup(symbol).unwrap();
        for channel in Channel::STORED {
            let mut events =
                store.history(channel, ids.store_id(id), 0, u64::MAX >> 1, None, 10_000_000).await.unwrap();
            events.sort_by_key(|e| e.seq);
            for e in &mut events {
                e.instrument = id;
            }
            out.insert((symbol.to_owned(), channel), events);
        }
    }
    store.close().await;
    (instruments, out)
}

fn as_json(instruments: &Instruments, event: &Event) -> Value {
    let mut buf = Vec::new();
    encode_update(&mut buf, instruments.get(event.instrument), event);
    serde_json::from_slice(&buf).unwrap()
}

/// Runs the simulator into a store, then checks store == simulator == live == replay.
async fn published_stored_replayed(url: &str, dir: &TempDir) {
    let journal = dir.path("journal");
    let flags =
        ["--store", url, "--journal-dir", &journal, "--rate", "4000", "--seed", "7", "--symbols", "BTC-USD,AAPL"];
    let server = common::start(&flags).await;
    let mut client = Client::connect(server.addr).await;
    client
        .send(serde_json::json!({"op":"subscribe","channels":["quotes","trades","book"],"symbols":SYMBOLS,"delivery":"full"}))
        .await;
    let mut live = Vec::new();
    let end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < end {
        if let Some(Received::Json(v)) = client.next(Duration::from_millis(50)).await {
            live.push(v);
        }
    }
    let state = server.state.clone();
    server.shutdown().await;
    let run_end = tickwire::model::now_nanos();

    let (instruments, stored) = stored(url).await;
    // 1. The store holds every sequence the engine assigned, once.
    for ((symbol, channel), events) in &stored {
        let id = state.fanout.instruments().lookup(symbol).unwrap();
        let engine = state.fanout.state().load(id);
        let last = match channel {
            Channel::Book => engine.book.seq,
            other => engine.seqs[other.index()],
        };
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "{symbol} {channel:?}: every sequence exactly once");
        assert!(last > 10, "{symbol} {channel:?} saw traffic");
    }
    // 2. Row for row what the simulator published (the same seed makes the same market).
    let mut sim_instruments = Instruments::new();
    let universe = select_universe(&SYMBOLS.map(String::from)).unwrap();
    let mut sim = Simulator::new(&universe, &mut sim_instruments, 7).unwrap();
    let total: usize = stored.values().map(Vec::len).sum();
    let mut generated = sim.initial_events(0);
    while generated.len() < total {
        sim.step(0, &mut generated);
    }
    let mut expected: HashMap<(String, Channel), Vec<_>> = HashMap::new();
    for e in generated {
        let symbol = sim_instruments.get(e.instrument).symbol.to_string();
        expected.entry((symbol, e.channel())).or_default().push(e.payload);
    }
    for (key, events) in &stored {
        let payloads: Vec<_> = events.iter().map(|e| e.payload.clone()).collect();
        assert_eq!(payloads[..], expected[key][..payloads.len()], "{key:?}: stored payloads are the simulator's");
    }
    // 3. What the live client got is what the store holds, clocks included.
    let mut checked = 0;
    for (kind, symbol, channel, seq, update) in updates(&live) {
        if kind != "update" {
            continue;
        }
        let events = &stored[&(symbol.clone(), Channel::parse(&channel).unwrap())];
        assert_eq!(as_json(&instruments, &events[seq as usize - 1]), update, "{symbol} {channel} #{seq}");
        checked += 1;
    }
    assert!(checked > 1000, "the live client saw {checked} updates");

    // 4. Replay streams the same events back, in exchange-time order, then ends.
    let server =
        common::start(&["--store", url, "--journal-dir", &journal, "--rate", "1", "--symbols", "BTC-USD,AAPL"]).await;
    let replay_url = format!(
        "ws://{}/v1/replay?symbols=BTC-USD,AAPL&channels=quotes,trades,book&from=1&to={run_end}&speed=max",
        server.addr
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(replay_url).await.unwrap();
    let mut replayed: Vec<Value> = Vec::new();
    let mut end = None;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(20), socket.next()).await.expect("replay ends").unwrap().unwrap()
        {
            Message::Text(text) => {
                let v: Value = serde_json::from_str(&text).unwrap();
                match v["type"].as_str() {
                    Some("batch") => replayed.extend(v["updates"].as_array().unwrap().iter().cloned()),
                    // A stored book reset is replayed as the live stream sends one:
                    // `book_invalidated`, then a snapshot of the whole book.
                    Some("snapshot") if v["seq"] != 0 => replayed.push(serde_json::json!({
                        "symbol": v["symbol"], "channel": v["channel"], "seq": v["seq"],
                        "bids": v["data"]["bids"], "asks": v["data"]["asks"],
                        "ts_event": v["ts_event"], "ts_recv": v["ts_recv"], "ts_send": v["ts_send"],
                    })),
                    Some("end") => end = Some(v),
                    _ => {}
                }
            }
            Message::Close(frame) => break frame.map(|f| u16::from(f.code)),
            _ => {}
        }
    };
    assert_eq!(close, Some(1000));
    assert_eq!(end.unwrap()["events"].as_u64(), Some(total as u64));
    assert_eq!(replayed.len(), total);
    let mut last_ts = 0;
    let mut by_key: HashMap<(String, String), Vec<Value>> = HashMap::new();
    for u in replayed {
        let ts = u["ts_event"].as_u64().unwrap();
        assert!(ts >= last_ts, "exchange-time order");
        last_ts = ts;
        by_key
            .entry((u["symbol"].as_str().unwrap().into(), u["channel"].as_str().unwrap().into()))
            .or_default()
            .push(u);
    }
    for ((symbol, channel), events) in &stored {
        let want: Vec<Value> = events.iter().map(|e| as_json(&instruments, e)).collect();
        assert_eq!(by_key[&(symbol.clone(), channel.as_str().to_owned())], want, "{symbol} {channel:?} replayed");
    }

    // 5. Paged history (JSON and CSV) and candles agree with the store.
    let trades = &stored[&("BTC-USD".to_owned(), Channel::Trades)];
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/v1/history/trades?symbol=BTC-USD&from=1&to={run_end}&limit=97{cursor}");
        let (status, page) = get_json(server.addr, &path).await;
        assert_eq!(status, 200, "{page}");
        paged.extend(page["rows"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let want: Vec<Value> = trades.iter().map(|e| as_json(&instruments, e)).collect();
    assert_eq!(paged, want, "paging walks every trade once");
    let first_second = trades[0].ts_event - trades[0].ts_event % 1_000_000_000;
    let (status, candles) =
        get_json(server.addr, &format!("/v1/candles?symbol=BTC-USD&interval=1s&from={first_second}&to={run_end}"))
            .await;
    assert_eq!(status, 200, "{candles}");
    let candles = candles["candles"].as_array().unwrap();
    let count: u64 = candles.iter().map(|c| c["trades"].as_u64().unwrap()).sum();
    assert_eq!(count, trades.len() as u64);
    let first = &candles[0];
    let second_of = |e: &Event| e.ts_event - e.ts_event % 1_000_000_000;
    let in_first: Vec<&Event> = trades.iter().filter(|e| second_of(e) == first["t"].as_u64().unwrap()).collect();
    let price = |e: &Event| as_json(&instruments, e)["price"].clone();
    assert_eq!(first["open"], price(in_first[0]));
    assert_eq!(first["close"], price(in_first[in_first.len() - 1]));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_holds_what_was_published_and_replay_streams_it_back() {
    let dir = TempDir::new("sqlite-roundtrip");
    published_stored_replayed(&dir.sqlite_url(), &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_holds_what_was_published_and_replay_streams_it_back() {
    let db = PgDb::create();
    let dir = TempDir::new("pg-roundtrip");
    published_stored_replayed(&db.url(), &dir).await;
}

/// Worst delay between ts_send and receipt over a window, and the updates seen.
async fn watch(client: &mut Client, length: Duration) -> (u64, usize) {
    let end = Instant::now() + length;
    let (mut worst_ms, mut count) = (0, 0);
    while Instant::now() < end {
        if let Some(Received::Json(v)) = client.next(Duration::from_millis(50)).await {
            let now = tickwire::model::now_nanos();
            for (_, _, _, _, u) in updates(std::slice::from_ref(&v)) {
                worst_ms = worst_ms.max(now.saturating_sub(u["ts_send"].as_u64().unwrap_or(now)) / 1_000_000);
                count += 1;
            }
        }
    }
    (worst_ms, count)
}

/// Checks that the store holds every sequence 1..=last of each stream exactly once.
async fn assert_exactly_once(url: &str, state: &tickwire::transport::AppState) {
    let (_, stored) = stored(url).await;
    for ((symbol, channel), events) in &stored {
        let id = state.fanout.instruments().lookup(symbol).unwrap();
        let engine = state.fanout.state().load(id);
        let last = match channel {
            Channel::Book => engine.book.seq,
            other => engine.seqs[other.index()],
        };
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs.len() as u64, last, "{symbol} {channel:?}: nothing lost, nothing duplicated");
        assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "{symbol} {channel:?}");
    }
}

/// The database becomes unreachable mid-run (a proxy in front of it is cut):
/// the live stream goes on undelayed, the writer spills to its journal, and after
/// recovery the store holds every sequence exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_loses_nothing_and_never_delays_the_live_stream() {
    let db = PgDb::create();
    let dir = TempDir::new("pg-outage");
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = db.url_via(proxy.addr);
    let journal = dir.path("journal");
    let flags = ["--store", &url, "--journal-dir", &journal, "--rate", "4000", "--symbols", "BTC-USD,AAPL"];
    let server = common::start(&flags).await;
    let mut client = Client::connect(server.addr).await;
    client
        .send(serde_json::json!({"op":"subscribe","channels":["trades","quotes"],"symbols":SYMBOLS,"delivery":"full"}))
        .await;
    let (_, before) = watch(&mut client, Duration::from_secs(1)).await;
    proxy.cut();
    let (worst_ms, during) = watch(&mut client, Duration::from_secs(3)).await;
    let (_, stats) = get_json(server.addr, "/v1/stats").await;
    assert!(stats["store_journaled"].as_u64().unwrap() > 0, "the writer spilled to its journal: {stats}");
    assert!(stats["store_lag_ms"].as_u64().unwrap() > 500, "the lag shows the outage: {stats}");
    proxy.restore();
    assert!(worst_ms < 500, "a live update waited {worst_ms} ms while the database was down");
    assert!(during as f64 >= before as f64 * 3.0 * 0.6, "live pace held: {during} in 3 s vs {before} in 1 s");
    // Recovery: the journal drains and the lag returns to zero.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, stats) = get_json(server.addr, "/v1/stats").await;
        if caught_up(&stats) {
            assert_eq!(stats["store_lost"], 0, "{stats}");
            break;
        }
        assert!(Instant::now() < deadline, "the writer did not catch up: {stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let state = server.state.clone();
    server.shutdown().await;
    assert_exactly_once(&db.url(), &state).await;
}

/// SIGKILL while the database is away: everything journaled (every event sent)
/// is in the store once a new process has started on the same journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_keeps_what_was_acknowledged_or_journaled() {
    let db = PgDb::create();
    let dir = TempDir::new("pg-kill");
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = db.url_via(proxy.addr);
    let journal = dir.path("journal");
    let flags = ["--store", url.as_str(), "--journal-dir", &journal, "--rate", "4000", "--symbols", "BTC-USD,AAPL"];
    let server = common::Process::serve(&flags);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, stats) = get_json(server.addr, "/v1/stats").await;
    server.signal("KILL");
    drop(server);
    let acknowledged = stats["store_written"].as_u64().unwrap();
    // Every event is journaled before it is sent; what was not yet written is in the journal.
    let journaled = stats["store_journaled"].as_u64().unwrap();
    assert!(acknowledged > 1000 && journaled > 1000, "{stats}");
    proxy.restore();

    let restart_at = tickwire::model::now_nanos();
    let restarted = common::Process::serve(&[
        "--store",
        url.as_str(),
        "--journal-dir",
        &journal,
        "--rate",
        "100",
        "--symbols",
        "BTC-USD,AAPL",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, stats) = get_json(restarted.addr, "/v1/stats").await;
        if caught_up(&stats) && stats["store_written_from_journal"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the journal was not written: {stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(restarted);
    let store = Store::connect(&db.url()).await.unwrap();
    let (_, ids) = store.load_instruments().await.unwrap();
    // Rows of the first run (exchange time before the restart); keys are unique.
    let mut first_run = 0;
    for channel in Channel::STORED {
        for id in 0..2 {
            let store_id = ids.store_id(tickwire::model::InstrumentId(id));
            let rows = store.history(channel, store_id, 0, restart_at, None, 10_000_000).await.unwrap();
            first_run += rows.len() as u64;
        }
    }
    assert!(first_run >= journaled.max(acknowledged), "stored {first_run} < journaled {journaled}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_4xx_and_an_empty_replay_ends_cleanly() {
    let dir = TempDir::new("bad-input");
    let url = dir.sqlite_url();
    let journal = dir.path("journal");
    let server =
        common::start(&["--store", &url, "--journal-dir", &journal, "--rate", "100", "--symbols", "AAPL"]).await;
    let cases = [
        ("/v1/history/trades?symbol=AAPL&from=2000&to=1000", 400, "bad_range"),
        ("/v1/history/trades?symbol=NOPE", 404, "unknown_symbol"),
        ("/v1/history/quotes?symbol=AAPL&from=2020-01-01T00:00:00Z", 400, "range_too_large"),
        ("/v1/history/trades?symbol=AAPL&cursor=not-a-cursor", 400, "bad_cursor"),
        ("/v1/history/trades?symbol=AAPL&limit=0", 400, "bad_limit"),
        ("/v1/history/trades?symbol=AAPL&from=yesterday", 400, "bad_request"),
        ("/v1/history/trades?symbol=AAPL&format=xml", 400, "bad_format"),
        ("/v1/history/trades", 400, "bad_request"),
        ("/v1/candles?symbol=AAPL&interval=7m", 400, "bad_interval"),
        ("/v1/candles?symbol=AAPL&interval=1s&from=2020-01-01T00:00:00Z", 400, "range_too_large"),
        ("/v1/replay?symbols=AAPL&from=1&to=2&speed=fast", 400, "bad_speed"),
        ("/v1/replay?symbols=AAPL&from=1&to=2&speed=0", 400, "bad_speed"),
        ("/v1/replay?symbols=NOPE&from=1&to=2", 404, "unknown_symbol"),
        ("/v1/replay?symbols=AAPL&from=5&to=2", 400, "bad_range"),
        ("/v1/replay?symbols=AAPL&channels=news&from=1&to=2", 400, "unknown_channel"),
    ];
    for (path, status, code) in cases {
        let (got, body) = get_json(server.addr, path).await;
        assert_eq!((got, body["code"].as_str()), (status, Some(code)), "{path}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{path}: {body}");
    }
    // A range with no data: the end marker, then a normal close.
    let url = format!("ws://{}/v1/replay?symbols=AAPL&from=1000&to=2000&speed=1", server.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut seen = Vec::new();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap().unwrap().unwrap() {
            Message::Text(text) => seen.push(serde_json::from_str::<Value>(&text).unwrap()),
            Message::Close(frame) => break frame.map(|f| u16::from(f.code)),
            _ => {}
        }
    };
    assert_eq!(close, Some(1000));
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[0]["type"].as_str(), seen[0]["state"].as_str()), (Some("replay"), Some("playing")));
    assert_eq!(seen[0]["instruments"][0]["symbol"], "AAPL");
    assert_eq!((seen[1]["type"].as_str(), seen[1]["events"].as_u64()), (Some("end"), Some(0)));
    server.shutdown().await;
}

/// Events of instruments 1..=3 on every stored channel: ten per exchange
/// timestamp (so ties abound), gateway clocks that sometimes step back, a quiet
/// hour in the middle, and one dense burst.
fn tricky_events() -> Vec<Event> {
    use tickwire::model::{BookDelta, InstrumentId, Payload, Price, Quote, Side, Size, Trade};
    let start = 1_750_000_000_000_000_000u64;
    let mut seqs = HashMap::new();
    let mut events = Vec::new();
    for i in 0..3_000u64 {
        let ts_event = match i {
            0..1_000 => start + i / 10 * 1_000,
            1_000..2_000 => start + 3_600_000_000_000 + (i - 1_000) / 10 * 1_000,
            _ => start + 3_700_000_000_000,
        };
        let instrument = InstrumentId(1 + (i % 3) as u32);
        let payload = match i % 7 {
            0 | 3 => Payload::Trade(Trade { price: Price(i as i64), size: Size(1), side: Side::Buy, trade_id: i }),
            1 | 4 | 6 => Payload::Book(BookDelta { bids: vec![(Price(i as i64), Size(2))], asks: vec![] }),
            _ => Payload::Quote(Quote { bid: Price(1), bid_size: Size(i as i64), ask: Price(2), ask_size: Size(3) }),
        };
        let mut event = Event::new(instrument, ts_event, ts_event + 10, payload);
        let seq = seqs.entry((instrument, event.channel())).or_insert(0);
        *seq += 1;
        event.seq = *seq;
        event.ts_send = ts_event + 1_000 - (i * 37 % 11) * 50;
        events.push(event);
    }
    events
}

/// The merge the reader promises, done the slow way: each (instrument, channel)
/// in (ts_event, seq) order, the fronts merged by (ts_event, instrument, channel,
/// seq).
fn merged_slowly(events: &[Event], from: u64, to: u64) -> Vec<Event> {
    let mut streams: BTreeMap<(u32, usize), Vec<Event>> = BTreeMap::new();
    for e in events.iter().filter(|e| (from..to).contains(&e.ts_event)) {
        streams.entry((e.instrument.0, e.channel().index())).or_default().push(e.clone());
    }
    let mut streams: Vec<std::collections::VecDeque<Event>> = streams
        .into_values()
        .map(|mut s| {
            s.sort_by_key(|e| (e.ts_event, e.seq));
            s.into()
        })
        .collect();
    let key = |e: &Event| (e.ts_event, e.instrument.0, e.channel().index(), e.seq);
    let mut out = Vec::new();
    while let Some(next) = (0..streams.len()).filter(|&i| !streams[i].is_empty()).min_by_key(|&i| key(&streams[i][0])) {
        out.extend(streams[next].pop_front());
    }
    out
}

async fn merged_reader_matches_the_slow_merge(url: &str) {
    use tickwire::store::reader::MergedHistory;
    let store = Store::open(url).await.unwrap();
    let events = tricky_events();
    store.write(&events, false).await.unwrap();
    let streams: Vec<(i64, Channel)> =
        (1..=3).flat_map(|id| Channel::STORED.into_iter().map(move |c| (id, c))).collect();
    let start = events[0].ts_event;
    for (from, to) in [(1, u64::MAX >> 1), (start + 5_000, start + 3_600_000_050_000), (start + 1, start + 2)] {
        for page in [2, 7, 64, 100_000] {
            let mut history = MergedHistory::open(store.clone(), &streams, from, to, page).await.unwrap();
            let mut got = Vec::new();
            loop {
                let before = got.len();
                history.next_chunk(13, &mut got).await.unwrap();
                if got.len() == before {
                    break;
                }
            }
            assert_eq!(got, merged_slowly(&events, from, to), "[{from}, {to}) in pages of {page}");
        }
    }
    // Asking for a subset reads only that.
    let mut history = MergedHistory::open(store.clone(), &[(2, Channel::Trades)], 1, u64::MAX >> 1, 5).await.unwrap();
    let mut got = Vec::new();
    history.next_chunk(usize::MAX >> 1, &mut got).await.unwrap();
    let want: Vec<Event> = merged_slowly(&events, 1, u64::MAX >> 1)
        .into_iter()
        .filter(|e| e.instrument.0 == 2 && e.channel() == Channel::Trades)
        .collect();
    assert_eq!(got, want);
    // Resume reads one stream in sequence order (through COPY on PostgreSQL).
    let since = store.read_since(3, Channel::Book, 40, start + 1_000, 25).await.unwrap();
    let want: Vec<Event> = events
        .iter()
        .filter(|e| e.instrument.0 == 3 && e.channel() == Channel::Book && e.seq > 40 && e.ts_event >= start + 1_000)
        .take(25)
        .cloned()
        .collect();
    assert_eq!((since.len(), since), (25, want));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_reader_keeps_exchange_time_order_through_ties_and_quiet_stretches() {
    let dir = TempDir::new("merge-order");
    merged_reader_matches_the_slow_merge(&dir.sqlite_url()).await;
    let db = PgDb::create();
    merged_reader_matches_the_slow_merge(&db.url()).await;
}

/// The writer trails the live stream by a moment only: the journal behind it
/// holds no more than a few batches (every event is journaled before it is sent,
/// so some bytes are always on their way).
fn caught_up(stats: &serde_json::Value) -> bool {
    stats["store_lag_ms"].as_u64().unwrap() < 1_000 && stats["store_spilled_bytes"].as_u64().unwrap() < 1 << 20
}

/// The day's statistics (what the watchlist shows as volume, high and low)
/// survive a restart: the new run starts them from today's stored trades, and
/// they agree with the day's candle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day_statistics_survive_a_restart() {
    let dir = TempDir::new("day-stats");
    let url = dir.sqlite_url();
    let flags = ["--store", url.as_str(), "--symbols", "BTC-USD", "--rate", "300"];
    let stats = |body: &Value| {
        let s = &body["snapshots"][0]["stats"];
        (s["trades"].as_u64().unwrap_or(0), s["volume"].as_str().unwrap_or("0").parse::<f64>().unwrap())
    };
    let server = common::start(&flags).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, body) = get_json(server.addr, "/v1/snapshot?symbols=BTC-USD").await;
    let (trades_before, volume_before) = stats(&body);
    assert!(trades_before > 50, "trades in the first run: {trades_before}");
    server.shutdown().await;

    let server = common::start(&flags).await;
    let (_, body) = get_json(server.addr, "/v1/snapshot?symbols=BTC-USD").await;
    let (trades, volume) = stats(&body);
    assert!(
        trades >= trades_before && volume >= volume_before,
        "after the restart {trades} trades, {volume}; before {trades_before}, {volume_before}"
    );
    let now = tickwire::model::now_nanos();
    let (_, candles) = get_json(
        server.addr,
        &format!("/v1/candles?symbol=BTC-USD&interval=1d&from={}&to={}", now - now % 86_400_000_000_000, now + 1),
    )
    .await;
    let day = candles["candles"].as_array().unwrap().last().cloned().unwrap();
    // The candle is read a moment later, from what is stored by then.
    assert!(day["trades"].as_u64().unwrap() + 50 >= trades, "day candle {day} against {trades} trades");
    server.shutdown().await;
}
