//! A real PostgreSQL server is stopped mid-run and started again while ticks
//! keep flowing: a cluster of the test's own (`initdb` in a temporary directory,
//! on a free port), never the machine's.

mod common;

use std::time::{Duration, Instant};

use common::store::{PgCluster, TempDir};
use common::{Client, Received, get_json, updates};
use tickwire::model::Channel;
use tickwire::store::Store;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_mid_run_loses_nothing() {
    let cluster = PgCluster::start();
    let dir = TempDir::new("pg-stop");
    let url = cluster.url();
    let journal = dir.path("journal");
    let server =
        common::start(&["--store", &url, "--journal-dir", &journal, "--rate", "4000", "--symbols", "BTC-USD,AAPL"])
            .await;
    let mut client = Client::connect(server.addr).await;
    client
        .send(serde_json::json!({"op":"subscribe","channels":["trades","quotes"],"symbols":["BTC-USD","AAPL"],"delivery":"full"}))
        .await;
    let (_, before) = watch(&mut client, Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| cluster.down());
    let (worst_ms, during) = watch(&mut client, Duration::from_secs(3)).await;
    let (_, stats) = get_json(server.addr, "/v1/stats").await;
    tokio::task::block_in_place(|| cluster.up());
    assert!(stats["store_journaled"].as_u64().unwrap() > 0, "the writer spilled while PostgreSQL was down: {stats}");
    assert!(worst_ms < 500, "a live update waited {worst_ms} ms while PostgreSQL was down");
    assert!(during as f64 >= before as f64 * 3.0 * 0.6, "live pace held: {during} in 3 s vs {before} in 1 s");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, stats) = get_json(server.addr, "/v1/stats").await;
        if caught_up(&stats) {
            break;
        }
        assert!(Instant::now() < deadline, "the writer did not catch up: {stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let state = server.state.clone();
    server.shutdown().await;
    let store = Store::connect(&url).await.unwrap();
    let (instruments, ids) = store.load_instruments().await.unwrap();
    for inst in instruments.iter() {
        let engine = state.fanout.state().load(state.fanout.instruments().lookup(&inst.symbol).unwrap());
        for channel in Channel::STORED {
            let last = if channel == Channel::Book { engine.book.seq } else { engine.seqs[channel.index()] };
            let rows = store.history(channel, ids.store_id(inst.id), 0, u64::MAX >> 1, None, 10_000_000).await.unwrap();
            let mut seqs: Vec<u64> = rows.iter().map(|e| e.seq).collect();
            seqs.sort_unstable();
            assert_eq!(
                seqs,
                (1..=last).collect::<Vec<_>>(),
                "{} {channel:?}: every sequence exactly once",
                inst.symbol
            );
        }
    }
}

/// The writer trails the live stream by a moment only: the journal behind it
/// holds no more than a few batches (every event is journaled before it is sent,
/// so some bytes are always on their way).
fn caught_up(stats: &serde_json::Value) -> bool {
    stats["store_lag_ms"].as_u64().unwrap() < 1_000 && stats["store_spilled_bytes"].as_u64().unwrap() < 1 << 20
}
