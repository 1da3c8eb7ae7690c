//! Server memory per idle WebSocket connection.
//!
//! Starts the release server twice in the same run — once with Tickwire's read
//! buffer (512 bytes, the default) and once with tungstenite's 128 KiB default as the baseline —
//! opens N idle connections to each, and reports the server's RSS growth per
//! connection (median of three samples) and the ratio to the baseline.
//! `IDLE_CONNECTIONS` (default 10000) sets N.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn serve(read_buffer: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--rate", "100", "--static-dir", "/nonexistent", "--store", "none"])
        .args(["--ws-read-buffer-bytes", read_buffer])
        .env("TICKWIRE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("server starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_owned();
    (child, addr)
}

async fn measure(read_buffer: &str, connections: usize) -> f64 {
    let (mut child, addr) = serve(read_buffer);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(child.id());
    let mut sockets = Vec::with_capacity(connections);
    for chunk in 0..connections.div_ceil(500) {
        let batch = (connections - chunk * 500).min(500);
        let opened = futures_util::future::join_all(
            (0..batch).map(|_| tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws"))),
        )
        .await;
        for result in opened {
            sockets.push(result.expect("connect").0);
        }
    }
    let mut samples = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        samples.push(rss_kib(child.id()));
    }
    samples.sort_unstable();
    let per_conn = (samples[1].saturating_sub(before)) as f64 * 1024.0 / connections as f64;
    drop(sockets);
    let _ = child.kill();
    let _ = child.wait();
    per_conn
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and a
    // test run should not open 20,000 sockets.
    if !std::env::args().any(|a| a == "--bench") {
        println!("idle_memory: skipped (run with cargo bench)");
        return;
    }
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let connections: usize = std::env::var("IDLE_CONNECTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ours = runtime.block_on(measure("512", connections));
    let baseline = runtime.block_on(measure("131072", connections));
    println!("idle_memory/{connections}_connections");
    println!("  tickwire (512-byte read buffer):    {:>8.1} KiB per connection", ours / 1024.0);
    println!("  baseline (128 KiB tungstenite default): {:>8.1} KiB per connection", baseline / 1024.0);
    println!("  ratio tickwire/baseline: {:.3}", ours / baseline);
}
