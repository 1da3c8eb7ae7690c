//! The load generator behind `tickwire bench`, against a real server: what it
//! reports must come from what the clients actually received.

mod common;

use std::time::Duration;

use common::{start, ws_url};
use tickwire::codec::Format;
use tickwire::feed::simulator::DEFAULT_UNIVERSE;
use tickwire::loadgen::{LoadConfig, run};

fn config(url: String, format: Format) -> LoadConfig {
    LoadConfig {
        url,
        clients: 20,
        symbols: DEFAULT_UNIVERSE.iter().map(|s| s.symbol.to_owned()).collect(),
        symbols_per_client: 5,
        channels: vec!["quotes".into(), "trades".into()],
        format,
        warmup: Duration::from_millis(300),
        duration: Duration::from_secs(1),
        source_ips: 1,
        idle: false,
        server_pid: None,
    }
}

/// Both formats: every update counted, no gaps, both arrival clocks filled,
/// and the server's own withheld counts (it withholds nothing at this load).
#[tokio::test]
async fn a_short_run_measures_every_update_and_reads_the_servers_counts() {
    let server = start(&["--rate", "2000"]).await;
    for format in [Format::Json, Format::Proto] {
        let report = run(config(ws_url(server.addr), format)).await.expect("the run completes");
        assert!(report.delivered > 100, "{format:?}: only {} updates delivered", report.delivered);
        assert_eq!(report.gaps, 0, "{format:?}");
        assert_eq!(report.total_us.samples, report.delivered);
        assert_eq!(report.total_at_socket_us.samples, report.delivered, "{format:?}: kernel timestamps");
        assert!(report.total_at_socket_us.p50 <= report.total_us.p50, "the socket comes before the read");
        let counts = report.server_counts.expect("Tickwire serves /v1/stats");
        assert_eq!(counts.dropped_trades, 0);
        assert_eq!(counts.slow_consumer_closes, 0);
    }
}

/// A server without `/v1/stats` (any other WebSocket server) still gets measured;
/// its withheld counts are unknown rather than zero.
#[tokio::test]
async fn withheld_counts_are_unknown_where_the_server_has_no_stats() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let accept = |stream| async move {
            let _ws = tokio_tungstenite::accept_async(stream).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        };
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(accept(stream));
        }
    });
    let mut config = config(format!("ws://{addr}/"), Format::Json);
    config.clients = 2;
    config.duration = Duration::from_millis(300);
    let report = run(config).await.expect("the run completes");
    assert_eq!(report.delivered, 0);
    assert_eq!(report.server_counts, None);
    server.abort();
}
