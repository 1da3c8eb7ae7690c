//! No client can hurt another: the hostile mix (`tickwire::loadgen::hostile`)
//! against the real server binary for 30 s — a 10,000 messages/s flood, a
//! connect-and-drop loop, 200 handshakes that never finish, a reader of
//! everything, a 100,000-fragment message — while a normal client streams
//! beside them. Each hostile actor gets its defined answer; the normal client
//! gets every update in order with no gap and no stall; the server's memory
//! stays bounded. (Its latency under the mix is a benchmark, not a test:
//! `benches/hostile.sh`, docs/BENCHMARKS.md.)

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Client, Process, Received};
use serde_json::json;
use tickwire::loadgen::hostile::{self, HostileConfig};
use tokio_util::sync::CancellationToken;

const MIX: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_client_streams_through_the_hostile_mix() {
    let server = Process::serve(&["--rate", "1000", "--symbols", "BTC-USD,ETH-USD,AAPL,MSFT,SOL-USD"]);
    let addr = server.addr;
    let mut normal = Client::connect(addr).await;
    normal
        .send(json!({"op": "subscribe", "channels": ["quotes", "trades"], "symbols": ["BTC-USD", "AAPL"], "delivery": "full"}))
        .await;
    normal.until_type("subscribed").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let quiet_rss = server.rss_bytes();

    let stop = CancellationToken::new();
    let mix = tokio::spawn(hostile::run(HostileConfig::standard(addr), stop.clone()));
    let started = Instant::now();
    let mut last_seq: HashMap<(String, String), u64> = HashMap::new();
    let (mut updates, mut longest_silence, mut peak_rss) = (0u64, Duration::ZERO, quiet_rss);
    let mut last_update = Instant::now();
    let mut next_sample = Instant::now();
    while started.elapsed() < MIX {
        let message = match normal.next(Duration::from_secs(5)).await {
            Some(Received::Json(message)) => message,
            other => panic!("the normal client lost its stream: {other:?}"),
        };
        assert_ne!(message["type"], "gap", "the normal client must lose nothing: {message}");
        assert_ne!(message["type"], "error", "{message}");
        for (kind, symbol, channel, seq, _) in common::updates(std::slice::from_ref(&message)) {
            if let Some(previous) = last_seq.insert((symbol.clone(), channel.clone()), seq)
                && kind == "update"
            {
                assert_eq!(seq, previous + 1, "{symbol} {channel}: every update, in order");
            }
            updates += 1;
            longest_silence = longest_silence.max(last_update.elapsed());
            last_update = Instant::now();
        }
        if Instant::now() >= next_sample {
            peak_rss = peak_rss.max(server.rss_bytes());
            next_sample = Instant::now() + Duration::from_millis(500);
        }
    }
    stop.cancel();
    let report = mix.await.unwrap();
    eprintln!(
        "hostile mix for {MIX:?}: {report:?}; normal client {updates} updates, longest silence {longest_silence:?}; \
         server RSS {} MiB quiet, {} MiB peak",
        quiet_rss >> 20,
        peak_rss >> 20
    );
    assert!(updates > 3_000, "the normal client kept streaming: {updates} updates");
    assert!(longest_silence < Duration::from_secs(3), "no stall: longest silence {longest_silence:?}");
    assert!(report.flood_sent > 100_000, "the flood ran: {report:?}");
    assert!(
        report.flood_rate_limited > 0 && report.flood_closed_1008 > 0,
        "flood: rate_limited, then 1008: {report:?}"
    );
    assert!(report.half_open_dropped >= 200, "unfinished handshakes dropped: {report:?}");
    assert!(report.fragments_closed_1009 > 0, "the fragmented message closed with 1009: {report:?}");
    assert!(report.churn_connections > 100 && report.everything_frames > 1000, "{report:?}");
    assert!(
        peak_rss < quiet_rss + (128 << 20),
        "server memory stays bounded: {} MiB quiet, {} MiB peak",
        quiet_rss >> 20,
        peak_rss >> 20
    );
}
