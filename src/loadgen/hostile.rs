//! A hostile mix to run beside normal clients (`tickwire bench --hostile`,
//! tests/hostile_mix.rs): each actor does what a hostile or careless client
//! would, over and over, and counts the answer the server gave it.
//!
//! - **flood**: one connection sending 10,000 messages a second (`rate_limited`,
//!   then 1008; it reconnects and goes on);
//! - **churn**: connect, subscribe, drop, in a loop;
//! - **half-open**: 200 connections that never finish their request header
//!   (dropped by `--header-timeout-ms`; each reopens);
//! - **everything**: one client subscribed to every channel of every symbol
//!   it may use, reading all of it;
//! - **fragments**: a message sent as 100,000 one-byte continuation frames
//!   (1009 past `--max-message-fragments`; it starts again).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::{Incoming, RawClient};

/// What the actors do.
#[derive(Debug, Clone)]
pub struct HostileConfig {
    pub addr: SocketAddr,
    /// Flood rate of the flooding client, messages a second.
    pub flood_per_s: u32,
    /// Connections that never finish their request header.
    pub half_open: usize,
    /// Continuation frames in the fragmented message.
    pub fragments: u32,
    /// The actors that run (default: all).
    pub actors: Vec<Actor>,
    /// The address the actors connect from (a loopback address of their own,
    /// as a hostile client is another machine: per-address limits apply to
    /// them, not to the normal clients).
    pub source: std::net::IpAddr,
}

/// One hostile actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Actor {
    Flood,
    Churn,
    HalfOpen,
    Everything,
    Fragments,
}

impl Actor {
    pub const ALL: [Actor; 5] = [Actor::Flood, Actor::Churn, Actor::HalfOpen, Actor::Everything, Actor::Fragments];
}

impl HostileConfig {
    /// The mix the issue names: 10,000 messages/s, 200 half-open handshakes,
    /// 100,000 fragments.
    pub fn standard(addr: SocketAddr) -> Self {
        HostileConfig {
            addr,
            flood_per_s: 10_000,
            half_open: 200,
            fragments: 100_000,
            actors: Actor::ALL.to_vec(),
            source: std::net::Ipv4Addr::new(127, 0, 0, 2).into(),
        }
    }
}

/// What each actor did and was answered.
#[derive(Debug, Default, Clone, Serialize)]
pub struct HostileReport {
    pub flood_sent: u64,
    pub flood_rate_limited: u64,
    pub flood_closed_1008: u64,
    pub churn_connections: u64,
    pub churn_refused: u64,
    pub half_open_dropped: u64,
    pub everything_frames: u64,
    pub fragments_sent: u64,
    pub fragments_closed_1009: u64,
}

#[derive(Default)]
struct Counters {
    flood_sent: AtomicU64,
    flood_rate_limited: AtomicU64,
    flood_closed_1008: AtomicU64,
    churn_connections: AtomicU64,
    churn_refused: AtomicU64,
    half_open_dropped: AtomicU64,
    everything_frames: AtomicU64,
    fragments_sent: AtomicU64,
    fragments_closed_1009: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Runs every actor until `stop`, then reports.
pub async fn run(config: HostileConfig, stop: CancellationToken) -> HostileReport {
    let counters = Arc::new(Counters::default());
    let mut tasks = tokio::task::JoinSet::new();
    let on = |actor| config.actors.contains(&actor);
    if on(Actor::Flood) {
        tasks.spawn(flood(config.clone(), counters.clone()));
    }
    if on(Actor::Churn) {
        tasks.spawn(churn(config.clone(), counters.clone()));
    }
    if on(Actor::Everything) {
        tasks.spawn(everything(config.clone(), counters.clone()));
    }
    if on(Actor::Fragments) {
        tasks.spawn(fragments(config.clone(), counters.clone()));
    }
    if on(Actor::HalfOpen) {
        for _ in 0..config.half_open {
            tasks.spawn(half_open(config.clone(), counters.clone()));
        }
    }
    stop.cancelled().await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let c = &counters;
    let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    HostileReport {
        flood_sent: get(&c.flood_sent),
        flood_rate_limited: get(&c.flood_rate_limited),
        flood_closed_1008: get(&c.flood_closed_1008),
        churn_connections: get(&c.churn_connections),
        churn_refused: get(&c.churn_refused),
        half_open_dropped: get(&c.half_open_dropped),
        everything_frames: get(&c.everything_frames),
        fragments_sent: get(&c.fragments_sent),
        fragments_closed_1009: get(&c.fragments_closed_1009),
    }
}

/// A TCP connection to the server from the actors' own address.
async fn tcp(config: &HostileConfig) -> std::io::Result<tokio::net::TcpStream> {
    let socket = match config.source {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(config.source, 0))?;
    socket.connect(config.addr).await
}

async fn connect(config: &HostileConfig) -> std::io::Result<RawClient> {
    let stream = tcp(config).await?;
    RawClient::handshake(stream, &config.addr.to_string(), "/v1/ws", None).await
}

/// The close code of a close frame's payload.
fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// A pause between attempts after a refusal, so a dead server is not spun on.
async fn breathe() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn flood(config: HostileConfig, counters: Arc<Counters>) {
    // Batches every 10 ms: the rate without a timer per message.
    let per_batch = (config.flood_per_s / 100).max(1);
    loop {
        let Ok(mut ws) = connect(&config).await else {
            breathe().await;
            continue;
        };
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut id = 0u64;
        'connection: loop {
            let send = tokio::select! {
                _ = tick.tick() => true,
                read = ws.fill() => {
                    if !matches!(read, Ok(true)) {
                        break 'connection;
                    }
                    false
                }
            };
            while let Some(frame) = ws.next_frame() {
                match frame {
                    Incoming::Data(payload, _) => {
                        if memchr::memmem::find(payload, b"rate_limited").is_some() {
                            add(&counters.flood_rate_limited, 1);
                        }
                    }
                    Incoming::Close(payload) => {
                        if close_code(payload) == Some(1008) {
                            add(&counters.flood_closed_1008, 1);
                        }
                        break 'connection;
                    }
                    Incoming::Ping(_) | Incoming::Other => {}
                }
            }
            if send {
                for _ in 0..per_batch {
                    id += 1;
                    let message = format!(r#"{{"op":"ping","id":{id}}}"#);
                    if ws.send(0x1, message.as_bytes()).await.is_err() {
                        break 'connection;
                    }
                }
                add(&counters.flood_sent, u64::from(per_batch));
            }
        }
    }
}

async fn churn(config: HostileConfig, counters: Arc<Counters>) {
    let subscribe = br#"{"op":"subscribe","channels":["quotes","trades"],"symbols":["*"]}"#;
    loop {
        match connect(&config).await {
            Ok(mut ws) => {
                add(&counters.churn_connections, 1);
                let _ = ws.send(0x1, subscribe).await;
                // Dropped without a close handshake, as a crashing client would.
            }
            Err(_) => {
                add(&counters.churn_refused, 1);
                breathe().await;
            }
        }
    }
}

async fn half_open(config: HostileConfig, counters: Arc<Counters>) {
    let partial = format!("GET /v1/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n", config.addr);
    loop {
        let Ok(mut stream) = tcp(&config).await else {
            breathe().await;
            continue;
        };
        if stream.write_all(partial.as_bytes()).await.is_err() {
            continue;
        }
        // Never finishes the header: waits for the server to give up on it.
        let mut buf = [0u8; 1024];
        while let Ok(1..) = stream.read(&mut buf).await {}
        add(&counters.half_open_dropped, 1);
    }
}

async fn everything(config: HostileConfig, counters: Arc<Counters>) {
    let subscribe = br#"{"op":"subscribe","channels":["quotes","trades","book"],"symbols":["*"]}"#;
    loop {
        let Ok(mut ws) = connect(&config).await else {
            breathe().await;
            continue;
        };
        if ws.send(0x1, subscribe).await.is_err() {
            continue;
        }
        'connection: while let Ok(true) = ws.fill().await {
            let mut pongs = Vec::new();
            while let Some(frame) = ws.next_frame() {
                match frame {
                    Incoming::Data(..) => add(&counters.everything_frames, 1),
                    Incoming::Ping(payload) => pongs.push(payload),
                    Incoming::Close(_) => break 'connection,
                    Incoming::Other => {}
                }
            }
            for payload in pongs {
                if ws.send(0xA, &payload).await.is_err() {
                    break 'connection;
                }
            }
        }
    }
}

async fn fragments(config: HostileConfig, counters: Arc<Counters>) {
    // A masked frame of one byte: FIN clear, `opcode`, mask key zero.
    let frame = |opcode: u8| [opcode, 0x81, 0, 0, 0, 0, b'x'];
    let batch: Vec<u8> = (0..1000).flat_map(|_| frame(0x0)).collect();
    loop {
        let Ok(mut ws) = connect(&config).await else {
            breathe().await;
            continue;
        };
        let mut sent = 0u32;
        let mut ended = ws.stream.write_all(&frame(0x1)).await.is_err();
        // Keeps sending until the server answers (or all are sent), looking
        // for its answer between batches without waiting for one.
        while !ended && sent < config.fragments {
            ended = ws.stream.write_all(&batch).await.is_err();
            sent += 1000;
            add(&counters.fragments_sent, 1000);
            if let Ok(read) = tokio::time::timeout(Duration::ZERO, ws.fill()).await {
                ended |= !matches!(read, Ok(true)) || answered(&mut ws, &counters);
            }
        }
        // The server's answer: a close frame (1009), then the end.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Ok(true)) = tokio::time::timeout_at(deadline, ws.fill()).await {
            if answered(&mut ws, &counters) {
                break;
            }
        }
    }
}

/// Whether the frames read so far hold the server's close (counted when 1009).
fn answered(ws: &mut RawClient, counters: &Counters) -> bool {
    while let Some(frame) = ws.next_frame() {
        if let Incoming::Close(payload) = frame {
            if close_code(payload) == Some(1009) {
                add(&counters.fragments_closed_1009, 1);
            }
            return true;
        }
    }
    false
}
