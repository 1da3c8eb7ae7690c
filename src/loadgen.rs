//! The end-to-end load generator behind `tickwire bench`.
//!
//! Opens N WebSocket clients against a gateway (ours, or a peer speaking the same
//! JSON batch format), subscribes each to S symbols, and measures every update's
//! latency from its three clocks: exchange → receive (`ts_recv - ts_event`),
//! receive → send (`ts_send - ts_recv`), send → client (arrival - `ts_send`) and the
//! total (arrival - `ts_event`), in HDR histograms. Arrival is taken twice: when
//! the client's code reads the frame, and when the kernel put its bytes on the
//! client's socket (`SO_TIMESTAMPNS`). The second leaves out the generator's own
//! queueing: one process plays 1,000 clients on the cores the server uses, so a
//! client whose turn comes last waits for the other 999 to be read; a real client
//! on its own machine would not. Both are reported. It also counts delivered
//! updates and gaps, and samples the server's CPU and RSS from `/proc` when it
//! knows the server's pid. Clients read only the clocks, with a light scanner
//! over the JSON text or the protobuf wire format, so that the generator, which
//! shares the machine with the server, spends as little CPU per update as it can.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use prost::Message as _;
use serde::Serialize;
use tokio::net::TcpSocket;

use crate::codec::Format;
use crate::codec::proto::pb;
use crate::model::now_nanos;
use crate::transport::{frame_len, payload_len};

/// Why a load run failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("bad gateway URL {0:?}")]
    BadUrl(String),
    #[error("client {index} could not connect: {message}")]
    Connect { index: usize, message: String },
}

pub mod hostile;
/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub url: String,
    pub clients: usize,
    pub symbols: Vec<String>,
    pub symbols_per_client: usize,
    pub channels: Vec<String>,
    pub format: Format,
    pub warmup: Duration,
    pub duration: Duration,
    /// Spread client source addresses over 127.0.0.1..=127.0.0.N (past ~30,000
    /// connections one address runs out of ports).
    pub source_ips: u8,
    /// Clients only connect and hold (memory per idle connection).
    pub idle: bool,
    /// The server's pid, for CPU and RSS.
    pub server_pid: Option<u32>,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub samples: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| (ns as f64 / 1_000.0 * 10.0).round() / 10.0;
        Self {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            samples: h.len(),
        }
    }
}

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub clients: usize,
    pub symbols_per_client: usize,
    pub format: String,
    pub seconds: f64,
    pub delivered: u64,
    pub delivered_per_s: f64,
    pub frames_per_s: f64,
    pub gaps: u64,
    pub total_us: Percentiles,
    pub exchange_to_receive_us: Percentiles,
    pub receive_to_send_us: Percentiles,
    pub send_to_client_us: Percentiles,
    /// Tick to the moment the kernel put the update's bytes on the client's
    /// socket: the total without the generator's own queueing.
    pub total_at_socket_us: Percentiles,
    /// Send to the client's socket (kernel receive timestamp).
    pub send_to_socket_us: Percentiles,
    /// What the server withheld during the window, from its `/v1/stats`
    /// (None for a server without them, such as the peers).
    pub server_counts: Option<DeliveryCounts>,
    /// Server CPU over the measured window, in percent of one core.
    pub server_cpu_pct: Option<f64>,
    /// The load generator's own CPU over the window (it shares the machine).
    pub client_cpu_pct: Option<f64>,
    pub server_rss_mib: Option<f64>,
    /// Server RSS growth per connection since before the clients connected, KiB.
    pub server_kib_per_connection: Option<f64>,
}

/// Updates a Tickwire server did not send as they came, over the measured
/// window: its `/v1/stats` counters, read before and after.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryCounts {
    /// Quotes replaced by a newer one before they were sent.
    pub conflated: u64,
    /// Trades dropped for slow consumers (each announced as a gap).
    pub dropped_trades: u64,
    /// Book deltas dropped for a fresh book snapshot.
    pub book_resnapshots: u64,
    /// Connections closed as too slow (4008).
    pub slow_consumer_closes: u64,
    /// Updates the fan-out offered to connections (what clients should receive).
    pub offered: u64,
}

impl DeliveryCounts {
    fn from_stats(stats: &serde_json::Value) -> Option<Self> {
        Some(Self {
            conflated: stats["conflated"].as_u64()?,
            dropped_trades: stats["dropped_trades"].as_u64()?,
            book_resnapshots: stats["book_resnapshots"].as_u64()?,
            slow_consumer_closes: stats["slow_consumer_closes"].as_u64()?,
            offered: stats["updates_delivered"].as_u64()?,
        })
    }

    fn since(self, before: Self) -> Self {
        Self {
            conflated: self.conflated.saturating_sub(before.conflated),
            dropped_trades: self.dropped_trades.saturating_sub(before.dropped_trades),
            book_resnapshots: self.book_resnapshots.saturating_sub(before.book_resnapshots),
            slow_consumer_closes: self.slow_consumer_closes.saturating_sub(before.slow_consumer_closes),
            offered: self.offered.saturating_sub(before.offered),
        }
    }
}

/// The server's `/v1/stats` address, beside its WebSocket endpoint (with the
/// URL's query, which carries a token where the server requires one).
fn stats_url(ws_url: &str) -> Option<String> {
    let rest = ws_url.strip_prefix("ws://")?;
    let authority = rest.split(['/', '?']).next()?;
    let query = rest.split_once('?').map_or(String::new(), |(_, q)| format!("?{q}"));
    Some(format!("http://{authority}/v1/stats{query}"))
}

/// Reads the delivery counters; None where the server has no `/v1/stats`.
async fn server_counts(http: &crate::feed::supervisor::HttpClient, url: &str) -> Option<DeliveryCounts> {
    let body = crate::feed::supervisor::fetch(http, url, Duration::from_secs(2)).await.ok()?;
    DeliveryCounts::from_stats(&serde_json::from_slice(&body).ok()?)
}

/// One client's histograms (nanoseconds).
struct Recorder {
    total: Histogram<u64>,
    exch_recv: Histogram<u64>,
    recv_send: Histogram<u64>,
    send_client: Histogram<u64>,
    total_socket: Histogram<u64>,
    send_socket: Histogram<u64>,
}

impl Recorder {
    fn new() -> Self {
        // Two significant digits (values within 1 %): ten times smaller than three,
        // so the generator's recorders stay in cache while it records millions of
        // values a second.
        let h = || Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid histogram bounds");
        Self { total: h(), exch_recv: h(), recv_send: h(), send_client: h(), total_socket: h(), send_socket: h() }
    }
    /// `now` is when the client read the update, `arrived` when the kernel
    /// received its last byte (None where the socket gives no timestamp).
    fn record(&mut self, now: u64, arrived: Option<u64>, ts_event: u64, ts_recv: u64, ts_send: u64) {
        let clamp = |v: u64| v.clamp(1, 60_000_000_000);
        self.total.saturating_record(clamp(now.saturating_sub(ts_event)));
        self.exch_recv.saturating_record(clamp(ts_recv.saturating_sub(ts_event)));
        self.recv_send.saturating_record(clamp(ts_send.saturating_sub(ts_recv)));
        self.send_client.saturating_record(clamp(now.saturating_sub(ts_send)));
        if let Some(arrived) = arrived {
            self.total_socket.saturating_record(clamp(arrived.saturating_sub(ts_event)));
            self.send_socket.saturating_record(clamp(arrived.saturating_sub(ts_send)));
        }
    }
    fn merge(&mut self, other: &Recorder) {
        let _ = self.total.add(&other.total);
        let _ = self.exch_recv.add(&other.exch_recv);
        let _ = self.recv_send.add(&other.recv_send);
        let _ = self.send_client.add(&other.send_client);
        let _ = self.total_socket.add(&other.total_socket);
        let _ = self.send_socket.add(&other.send_socket);
    }
}

fn number_after(frame: &[u8], at: usize) -> (u64, usize) {
    let mut value = 0u64;
    let mut i = at;
    while let Some(d) = frame.get(i).filter(|b| b.is_ascii_digit()) {
        value = value * 10 + u64::from(d - b'0');
        i += 1;
    }
    (value, i)
}

/// Calls `each(ts_event, ts_recv, ts_send)` for every update of a JSON batch frame,
/// without a full parse. Returns whether the frame was a gap notice.
fn scan_json(frame: &[u8], mut each: impl FnMut(u64, u64, u64)) -> bool {
    if frame.starts_with(br#"{"type":"gap""#) {
        return true;
    }
    if !frame.starts_with(br#"{"type":"batch""#) {
        return false;
    }
    static TS_EVENT: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(br#""ts_event":"#));
    let mut at = 0;
    while let Some(found) = TS_EVENT.find(&frame[at..]) {
        let (ts_event, end) = number_after(frame, at + found + 11);
        // ts_recv and ts_send follow ts_event in every update.
        let (ts_recv, end) = number_after(frame, end + br#","ts_recv":"#.len());
        let (ts_send, end) = number_after(frame, end + br#","ts_send":"#.len());
        each(ts_event, ts_recv, ts_send);
        at = end;
    }
    false
}

/// Reads protobuf wire format field by field, without allocating.
struct WireReader<'a>(&'a [u8]);

impl<'a> WireReader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for (i, &byte) in self.0.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.0 = &self.0[i + 1..];
                return Some(value);
            }
        }
        None
    }
    /// The next field's number and wire type; `None` at the end (or on garbage).
    fn key(&mut self) -> Option<(u64, u8)> {
        if self.0.is_empty() {
            return None;
        }
        let key = self.varint()?;
        Some((key >> 3, (key & 7) as u8))
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, &self.0[n..]);
        self.0 = rest;
        Some(head)
    }
    fn fixed64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        self.take(len)
    }
    fn skip(&mut self, wire_type: u8) -> Option<()> {
        match wire_type {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.bytes().map(drop),
            5 => self.take(4).map(drop),
            _ => None,
        }
    }
}

/// The protobuf twin of [`scan_json`]: calls `each(ts_event, ts_recv, ts_send)`
/// for every update of a `ServerMessage` batch, reading only the clocks
/// (`Update` fields 3, 4, 5) instead of decoding the whole message.
pub fn scan_proto(frame: &[u8], mut each: impl FnMut(u64, u64, u64)) -> bool {
    const BATCH: u64 = 2;
    const GAP: u64 = 3;
    let mut message = WireReader(frame);
    while let Some((field, wire_type)) = message.key() {
        match (field, wire_type) {
            (BATCH, 2) => {
                let Some(body) = message.bytes() else { return false };
                let mut batch = WireReader(body);
                while let Some((_, wire_type)) = batch.key() {
                    // Batch has one field: repeated Update updates = 1.
                    let Some(update) = (if wire_type == 2 { batch.bytes() } else { None }) else { return false };
                    let (mut ts_event, mut recv_delta, mut send_delta) = (0, 0, 0);
                    let mut fields = WireReader(update);
                    while let Some((field, wire_type)) = fields.key() {
                        let read = match (field, wire_type) {
                            (3, 1) => fields.fixed64().map(|v| ts_event = v),
                            (4, 0) => fields.varint().map(|v| recv_delta = v),
                            (5, 0) => fields.varint().map(|v| send_delta = v),
                            _ => fields.skip(wire_type),
                        };
                        if read.is_none() {
                            return false;
                        }
                    }
                    let recv = ts_event.saturating_add(recv_delta);
                    each(ts_event, recv, recv.saturating_add(send_delta));
                }
            }
            (GAP, _) => return true,
            _ => {
                if message.skip(wire_type).is_none() {
                    return false;
                }
            }
        }
    }
    false
}

/// Counters shared by all clients.
#[derive(Default)]
struct Shared {
    delivered: AtomicU64,
    frames: AtomicU64,
    gaps: AtomicU64,
    measuring: AtomicBool,
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Resident set size of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

async fn connect_one(config: &LoadConfig, index: usize, addr: SocketAddr) -> Result<RawClient, LoadError> {
    let fail = |message: String| LoadError::Connect { index, message };
    let socket = TcpSocket::new_v4().map_err(|e| fail(e.to_string()))?;
    if config.source_ips > 1 {
        let host = 1 + (index % usize::from(config.source_ips)) as u8;
        socket.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), 0)).map_err(|e| fail(e.to_string()))?;
    }
    let stream = socket.connect(addr).await.map_err(|e| fail(e.to_string()))?;
    stream.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
    let path = config.url.strip_prefix("ws://").and_then(|rest| rest.find('/').map(|at| &rest[at..])).unwrap_or("/");
    let protocol = match config.format {
        Format::Proto => Some(Format::Proto.subprotocol()),
        Format::Json => None,
    };
    RawClient::handshake(stream, &addr.to_string(), path, protocol).await.map_err(|e| fail(e.to_string()))
}

/// Bytes a client reads per call; its buffer grows for a larger frame. The
/// buffer is zeroed once, when allocated, not before every read.
const READ_CHUNK: usize = 16 << 10;

/// A WebSocket client reduced to what the load needs: it sends a few masked
/// frames and reads unfragmented server frames straight from the socket.
/// (tungstenite's client zeroed its read chunk before every read and copied each
/// frame out; at 500,000 updates/s that was a sixth of the generator's CPU, and
/// the generator shares the machine with the server it measures.)
struct RawClient {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Room for one `SCM_TIMESTAMPNS` control message.
    control: Vec<u8>,
    /// When the kernel received the newest bytes read (ns since the epoch).
    arrived: Option<u64>,
}

/// What a client read loop does with one frame.
enum Incoming<'a> {
    Data(&'a [u8], bool),
    Ping(Vec<u8>),
    /// A close frame and its payload (code and reason).
    Close(&'a [u8]),
    Other,
}

impl RawClient {
    async fn handshake(
        mut stream: tokio::net::TcpStream,
        host: &str,
        path: &str,
        protocol: Option<&str>,
    ) -> std::io::Result<RawClient> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Kernel receive timestamps; without them only the read time is measured.
        if let Err(error) = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
        {
            tracing::debug!(%error, "no SO_TIMESTAMPNS; measuring arrival at read time only");
        }
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        if let Some(protocol) = protocol {
            request.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut buf = vec![0u8; READ_CHUNK];
        let mut end = 0;
        let head_end = loop {
            if let Some(at) = memchr::memmem::find(&buf[..end], b"\r\n\r\n") {
                break at + 4;
            }
            if end == buf.len() {
                return Err(std::io::Error::other("handshake answer too long"));
            }
            let n = stream.read(&mut buf[end..]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            end += n;
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            let status = String::from_utf8_lossy(&buf[..head_end.min(64)]).lines().next().unwrap_or("").to_owned();
            return Err(std::io::Error::other(format!("upgrade refused: {status}")));
        }
        Ok(RawClient {
            stream,
            buf,
            start: head_end,
            end,
            control: nix::cmsg_space!(nix::sys::time::TimeSpec),
            arrived: None,
        })
    }

    /// Sends one masked frame (every client frame is masked, RFC 6455 5.3).
    async fn send(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        const MASK: [u8; 4] = [0x5a, 0x1c, 0x93, 0x2e];
        let mut frame = Vec::with_capacity(payload.len() + 14);
        crate::transport::frame_header(&mut frame, opcode, payload.len());
        frame[1] |= 0x80; // the mask bit; the key follows the length
        frame.extend_from_slice(&MASK);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        self.stream.write_all(&frame).await
    }

    /// Reads at least once more from the socket, and the kernel's timestamp of
    /// the newest bytes read with it; false at the end of the stream.
    async fn fill(&mut self) -> std::io::Result<bool> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.start > 0 && self.buf.len() - self.end < READ_CHUNK / 4 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if let Some(needed) = frame_len(&self.buf[self.start..self.end])
            && self.start + needed > self.buf.len()
        {
            self.buf.resize(self.start + needed, 0);
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() + READ_CHUNK, 0);
        }
        let Self { stream, buf, end, control, .. } = self;
        let (n, arrived) = loop {
            stream.readable().await?;
            match stream
                .try_io(tokio::io::Interest::READABLE, || recv_stamped(stream.as_raw_fd(), &mut buf[*end..], control))
            {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                result => break result?,
            }
        };
        self.end += n;
        self.arrived = arrived;
        Ok(n > 0)
    }

    /// The next whole frame already read, if any.
    fn next_frame(&mut self) -> Option<Incoming<'_>> {
        let bytes = &self.buf[self.start..self.end];
        let len = frame_len(bytes)?;
        if len > bytes.len() {
            return None;
        }
        let header = len - payload_len(bytes)?;
        let payload = &self.buf[self.start + header..self.start + len];
        self.start += len;
        Some(match bytes[0] & 0x0f {
            0x1 => Incoming::Data(payload, true),
            0x2 => Incoming::Data(payload, false),
            0x8 => Incoming::Close(payload),
            0x9 => Incoming::Ping(payload.to_vec()),
            _ => Incoming::Other,
        })
    }
}

/// One `recvmsg` into `buf`, with the kernel's receive timestamp when the socket
/// has `SO_TIMESTAMPNS` on (for TCP: that of the newest segment read).
fn recv_stamped(fd: RawFd, buf: &mut [u8], control: &mut [u8]) -> std::io::Result<(usize, Option<u64>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(control), MsgFlags::empty()).map_err(std::io::Error::from)?;
    let arrived = msg.cmsgs().ok().and_then(|mut all| {
        all.find_map(|c| match c {
            ControlMessageOwned::ScmTimestampns(ts) => Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64),
            _ => None,
        })
    });
    Ok((msg.bytes, arrived))
}

/// Clients record into a few shared recorders, not one each: a recorder holds
/// six histograms of 30 KiB (3,840 counters at two significant digits), so one
/// per client would be 180 MiB at 1,000 clients, and cold in cache. Locked once
/// per frame; rarely contended.
const RECORDER_SHARDS: usize = 16;

/// Runs the load and reports.
pub async fn run(config: LoadConfig) -> Result<LoadReport, LoadError> {
    let authority = config
        .url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| LoadError::BadUrl(config.url.clone()))?;
    let addr: SocketAddr = authority.parse().map_err(|_| LoadError::BadUrl(config.url.clone()))?;
    let rss_before = config.server_pid.and_then(rss_kib);
    let shared = Arc::new(Shared::default());

    // Connect in waves so the listener's backlog is not overrun.
    let mut sockets = Vec::with_capacity(config.clients);
    for wave in (0..config.clients).collect::<Vec<_>>().chunks(256) {
        let opened = futures_util::future::join_all(wave.iter().map(|&i| connect_one(&config, i, addr))).await;
        for socket in opened {
            sockets.push(socket?);
        }
    }

    let recorders: Arc<Vec<Mutex<Recorder>>> =
        Arc::new((0..RECORDER_SHARDS.min(config.clients.max(1))).map(|_| Mutex::new(Recorder::new())).collect());
    let mut tasks = Vec::with_capacity(config.clients);
    for (index, mut ws) in sockets.into_iter().enumerate() {
        let shared = shared.clone();
        let recorders = recorders.clone();
        let symbols: Vec<String> = (0..config.symbols_per_client.min(config.symbols.len()))
            .map(|k| config.symbols[(index + k) % config.symbols.len()].clone())
            .collect();
        let (channels, format, idle) = (config.channels.clone(), config.format, config.idle);
        // Runs until aborted at the end of the window (no timer per read).
        tasks.push(tokio::spawn(async move {
            if idle {
                std::future::pending::<()>().await;
            }
            let sent = match format {
                Format::Json => {
                    let request = serde_json::json!({"op":"subscribe","channels":channels,"symbols":symbols});
                    ws.send(0x1, request.to_string().as_bytes()).await
                }
                Format::Proto => {
                    let channels = channels
                        .iter()
                        .filter_map(|c| crate::model::Channel::parse(c))
                        .map(|c| crate::codec::proto::channel(c) as i32)
                        .collect();
                    let sub = pb::Subscribe { channels, symbols, ..Default::default() };
                    let request = pb::ClientMessage { op: Some(pb::client_message::Op::Subscribe(sub)) };
                    ws.send(0x2, &request.encode_to_vec()).await
                }
            };
            if sent.is_err() {
                return;
            }
            let recorder = &recorders[index % recorders.len()];
            while let Ok(true) = ws.fill().await {
                let now = now_nanos();
                let arrived = ws.arrived;
                let measuring = shared.measuring.load(Ordering::Relaxed);
                let (mut count, mut frames, mut gaps) = (0u64, 0u64, 0u64);
                let mut pings = Vec::new();
                let mut closed = false;
                {
                    let mut recorder = recorder.lock();
                    while let Some(frame) = ws.next_frame() {
                        match frame {
                            Incoming::Data(payload, text) if measuring => {
                                let mut record = |e: u64, r: u64, s: u64| {
                                    count += 1;
                                    recorder.record(now, arrived, e, r, s);
                                };
                                let gap = if text {
                                    scan_json(payload, &mut record)
                                } else {
                                    scan_proto(payload, &mut record)
                                };
                                frames += 1;
                                gaps += u64::from(gap);
                            }
                            Incoming::Ping(payload) => pings.push(payload),
                            Incoming::Close(_) => closed = true,
                            Incoming::Data(..) | Incoming::Other => {}
                        }
                    }
                }
                if closed {
                    return;
                }
                for payload in pings {
                    if ws.send(0xA, &payload).await.is_err() {
                        return;
                    }
                }
                if frames > 0 {
                    shared.delivered.fetch_add(count, Ordering::Relaxed);
                    shared.frames.fetch_add(frames, Ordering::Relaxed);
                    if gaps > 0 {
                        shared.gaps.fetch_add(gaps, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    tokio::time::sleep(config.warmup).await;
    let http = crate::feed::supervisor::http_client().ok();
    let stats = stats_url(&config.url).zip(http);
    let counts_start = match &stats {
        Some((url, http)) => server_counts(http, url).await,
        None => None,
    };
    let cpu_start = config.server_pid.and_then(cpu_ticks);
    let own_start = cpu_ticks(std::process::id());
    let started = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(config.duration).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let cpu_end = config.server_pid.and_then(cpu_ticks);
    let own_end = cpu_ticks(std::process::id());
    let rss_now = config.server_pid.and_then(rss_kib);
    let counts_end = match &stats {
        Some((url, http)) if counts_start.is_some() => server_counts(http, url).await,
        _ => None,
    };
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await; // cancelled; closing the sockets
    }
    let mut all = Recorder::new();
    for recorder in recorders.iter() {
        all.merge(&recorder.lock());
    }
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let ticks_per_s = 100.0; // USER_HZ on Linux
    Ok(LoadReport {
        clients: config.clients,
        symbols_per_client: if config.idle { 0 } else { config.symbols_per_client },
        format: format!("{:?}", config.format).to_lowercase(),
        seconds,
        delivered,
        delivered_per_s: delivered as f64 / seconds,
        frames_per_s: shared.frames.load(Ordering::Relaxed) as f64 / seconds,
        gaps: shared.gaps.load(Ordering::Relaxed),
        total_us: Percentiles::of(&all.total),
        exchange_to_receive_us: Percentiles::of(&all.exch_recv),
        receive_to_send_us: Percentiles::of(&all.recv_send),
        send_to_client_us: Percentiles::of(&all.send_client),
        total_at_socket_us: Percentiles::of(&all.total_socket),
        send_to_socket_us: Percentiles::of(&all.send_socket),
        server_counts: counts_start.zip(counts_end).map(|(before, after)| after.since(before)),
        server_cpu_pct: cpu_start.zip(cpu_end).map(|(a, b)| (b - a) as f64 / ticks_per_s / seconds * 100.0),
        client_cpu_pct: own_start.zip(own_end).map(|(a, b)| (b - a) as f64 / ticks_per_s / seconds * 100.0),
        server_rss_mib: rss_now.map(|kib| kib as f64 / 1024.0),
        server_kib_per_connection: rss_before
            .zip(rss_now)
            .map(|(before, now)| now.saturating_sub(before) as f64 / config.clients.max(1) as f64),
    })
}

/// A terminal table of reports.
pub fn table(rows: &[(String, LoadReport)]) -> String {
    let mut out = format!(
        "{:<34} {:>7} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>8} {:>9}\n",
        "scenario",
        "clients",
        "updates/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "srv cpu",
        "gen cpu",
        "rss MiB",
        "KiB/conn"
    );
    for (name, r) in rows {
        let t = &r.total_us;
        out.push_str(&format!(
            "{:<34} {:>7} {:>11.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7} {:>7} {:>8} {:>9}\n",
            name,
            r.clients,
            r.delivered_per_s,
            t.p50,
            t.p90,
            t.p99,
            t.p999,
            t.max,
            r.server_cpu_pct.map_or("-".into(), |v| format!("{v:.0}")),
            r.client_cpu_pct.map_or("-".into(), |v| format!("{v:.0}")),
            r.server_rss_mib.map_or("-".into(), |v| format!("{v:.0}")),
            r.server_kib_per_connection.map_or("-".into(), |v| format!("{v:.1}")),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::transport::frame_header(&mut out, opcode, payload.len());
        out.extend_from_slice(payload);
        out
    }

    /// Accepts one client and answers its upgrade request (the test servers
    /// here only need the client past its handshake).
    async fn accept_upgrade(listener: &tokio::net::TcpListener) -> tokio::net::TcpStream {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = vec![0u8; 4096];
        let n = socket.read(&mut request).await.unwrap();
        assert!(request[..n].ends_with(b"\r\n\r\n"));
        socket.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").await.unwrap();
        socket
    }

    /// The raw client against a server that answers the upgrade and then dribbles
    /// frames of every length form across reads: each frame comes out whole, a
    /// ping is answered with a masked pong, and a close ends the stream.
    #[tokio::test]
    async fn raw_client_reads_frames_split_across_reads() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let big = vec![b'x'; 70_000];
        let medium = vec![b'y'; 300];
        let mut wire = server_frame(0x1, b"{\"type\":\"pong\"}");
        wire.extend(server_frame(0x9, b"hi"));
        wire.extend(server_frame(0x2, &medium));
        wire.extend(server_frame(0x1, &big));
        wire.extend(server_frame(0x8, &[0x03, 0xe8]));
        let server = tokio::spawn(async move {
            let mut socket = accept_upgrade(&listener).await;
            for chunk in wire.chunks(997) {
                socket.write_all(chunk).await.unwrap();
                socket.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // The pong: masked, carrying the ping's payload.
            let mut pong = [0u8; 8];
            socket.read_exact(&mut pong).await.unwrap();
            assert_eq!(pong[0], 0x8a);
            assert_eq!(pong[1], 0x80 | 2);
            let unmasked: Vec<u8> = pong[6..].iter().zip(&pong[2..6]).map(|(b, m)| b ^ m).collect();
            assert_eq!(unmasked, b"hi");
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut client = RawClient::handshake(stream, &addr.to_string(), "/v1/ws", None).await.unwrap();
        let mut seen = Vec::new();
        'read: while client.fill().await.unwrap() {
            let mut pings = Vec::new();
            while let Some(frame) = client.next_frame() {
                match frame {
                    Incoming::Data(payload, text) => seen.push((text, payload.len())),
                    Incoming::Ping(payload) => pings.push(payload),
                    Incoming::Close(_) => break 'read,
                    Incoming::Other => panic!("unexpected frame"),
                }
            }
            for payload in pings {
                client.send(0xA, &payload).await.unwrap();
            }
        }
        assert_eq!(seen, vec![(true, 15), (false, 300), (true, 70_000)]);
        server.await.unwrap();
    }

    /// The arrival time is the kernel's, not the read's: a frame read 200 ms
    /// after it was sent still carries the time it reached the socket.
    #[tokio::test]
    async fn raw_client_takes_the_kernel_arrival_time() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let mut socket = accept_upgrade(&listener).await;
            // The kernel turns receive timestamps on a moment after the first
            // socket asks (deferred work); give it that moment.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let before = now_nanos();
            socket.write_all(&server_frame(0x1, b"{}")).await.unwrap();
            let after = now_nanos();
            sent_tx.send((before, after)).unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut client = RawClient::handshake(stream, &addr.to_string(), "/v1/ws", None).await.unwrap();
        let (before, after) = sent_rx.await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(client.fill().await.unwrap());
        let read_at = now_nanos();
        assert!(matches!(client.next_frame(), Some(Incoming::Data(b"{}", true))));
        let arrived = client.arrived.expect("the kernel stamps loopback TCP segments");
        assert!(arrived >= before && arrived <= after, "arrived {arrived} outside the send [{before}, {after}]");
        assert!(read_at - arrived >= 190_000_000, "read {read_at} too close to arrival {arrived}");
        server.abort();
    }

    #[test]
    fn stats_url_sits_beside_the_websocket_endpoint() {
        assert_eq!(stats_url("ws://127.0.0.1:9100/v1/ws").as_deref(), Some("http://127.0.0.1:9100/v1/stats"));
        assert_eq!(
            stats_url("ws://127.0.0.1:9100/v1/ws?token=abc").as_deref(),
            Some("http://127.0.0.1:9100/v1/stats?token=abc")
        );
        assert_eq!(stats_url("ws://[::1]:9/?format=proto").as_deref(), Some("http://[::1]:9/v1/stats?format=proto"));
        assert_eq!(stats_url("wss://example.com/v1/ws"), None);
    }

    #[test]
    fn scanner_reads_every_update_clock() {
        let frame = br#"{"type":"batch","updates":[{"symbol":"A","channel":"quotes","seq":1,"bid":"1.00","ts_event":10,"ts_recv":20,"ts_send":30},{"symbol":"B","channel":"book","seq":2,"bids":[["1","2"]],"asks":[],"ts_event":11,"ts_recv":21,"ts_send":31}]}"#;
        let mut seen = Vec::new();
        assert!(!scan_json(frame, |e, r, s| seen.push((e, r, s))));
        assert_eq!(seen, vec![(10, 20, 30), (11, 21, 31)]);
        assert!(scan_json(br#"{"type":"gap","symbol":"A"}"#, |_, _, _| {}));
        let mut none = 0;
        scan_json(br#"{"type":"snapshot","ts_event":1,"ts_recv":2,"ts_send":3}"#, |_, _, _| none += 1);
        assert_eq!(none, 0, "snapshots are not updates");
    }

    #[test]
    fn proto_scanner_reads_every_update_clock() {
        use pb::server_message::Kind;
        let update = |ts_event, recv, send, data| pb::Update {
            instrument_id: 3,
            seq: 9,
            ts_event,
            recv_delta_ns: recv,
            send_delta_ns: send,
            data: Some(data),
        };
        let quote = pb::update::Data::Quote(pb::Quote { bid: 1, bid_size: 2, ask: 3, ask_size: 4 });
        let trade = pb::update::Data::Trade(pb::Trade { price: 5, size: 6, ..Default::default() });
        let batch = pb::Batch { updates: vec![update(1_000, 150, 20, quote), update(u64::MAX - 10, 0, 0, trade)] };
        let frame = pb::ServerMessage { kind: Some(Kind::Batch(batch)) }.encode_to_vec();
        let mut seen = Vec::new();
        assert!(!scan_proto(&frame, |e, r, s| seen.push((e, r, s))));
        assert_eq!(seen, vec![(1_000, 1_150, 1_170), (u64::MAX - 10, u64::MAX - 10, u64::MAX - 10)]);
        let gap = pb::ServerMessage { kind: Some(Kind::Gap(pb::Gap { symbol: "A".into(), ..Default::default() })) };
        assert!(scan_proto(&gap.encode_to_vec(), |_, _, _| {}));
        // Truncated or garbled frames end the scan; they never panic.
        for cut in 0..frame.len() {
            scan_proto(&frame[..cut], |_, _, _| {});
        }
        scan_proto(&[0xff; 16], |_, _, _| {});
    }
}

/// `tickwire bench`: start (or target) a gateway, run the load, print the table,
/// write JSON, and compare with a baseline.
pub mod command {
    use std::io::BufRead;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::{LoadConfig, LoadError, LoadReport, run, table};
    use crate::codec::Format;
    use crate::feed::simulator::DEFAULT_UNIVERSE;

    /// `tickwire bench` flags.
    #[derive(Debug, Clone, clap::Args)]
    pub struct BenchArgs {
        /// Gateway to load; when absent, a `tickwire serve` is started for the run.
        #[arg(long)]
        pub url: Option<String>,
        /// Pid of the gateway at --url, for its CPU and RSS.
        #[arg(long)]
        pub server_pid: Option<u32>,
        #[arg(long, default_value_t = 100)]
        pub clients: usize,
        #[arg(long, default_value_t = 5)]
        pub symbols_per_client: usize,
        /// Symbols to spread over the clients (default: the simulator's universe).
        #[arg(long, value_delimiter = ',')]
        pub symbols: Vec<String>,
        #[arg(long, value_delimiter = ',', default_value = "quotes,trades")]
        pub channels: Vec<String>,
        /// Simulator events per second offered by the started gateway.
        #[arg(long, default_value_t = 1_000)]
        pub rate: u64,
        #[arg(long, default_value_t = 5.0)]
        pub duration_s: f64,
        #[arg(long, default_value_t = 1.0)]
        pub warmup_s: f64,
        #[arg(long, default_value = "json", value_parser = |s: &str| Format::from_param(s).ok_or("json or proto"))]
        pub format: Format,
        /// Connect and hold only (memory per idle connection).
        #[arg(long)]
        pub idle: bool,
        /// Spread client source addresses over this many loopback addresses.
        #[arg(long, default_value_t = 1)]
        pub source_ips: u8,
        /// Name of the scenario in the table and the JSON.
        #[arg(long, default_value = "tickwire")]
        pub name: String,
        /// Append the report as one JSON line to this file.
        #[arg(long)]
        pub json_out: Option<PathBuf>,
        /// A previous report (JSON) to compare with.
        #[arg(long)]
        pub baseline: Option<PathBuf>,
        /// Fail when p99 exceeds the baseline's by more than this factor.
        #[arg(long, default_value_t = 3.0)]
        pub max_p99_ratio: f64,
        /// Baselines below this p99 (µs) are raised to it before comparing, so
        /// scheduler noise on a shared machine does not fail the check.
        #[arg(long, default_value_t = 2_000.0)]
        pub p99_floor_us: f64,
        /// Repeat the run (each with a fresh gateway) and compare the median p99.
        #[arg(long, default_value_t = 1)]
        pub runs: usize,
        /// Fail unless every run delivered what the server offered (at least
        /// 95 %, the window's edges aside), with no gap, no dropped trade and no
        /// slow-consumer close: the CI guard for a server that streams at all.
        #[arg(long)]
        pub check_complete: bool,
        /// The started gateway keeps history in a fresh SQLite store (by
        /// default it keeps none): the like-for-like baseline of --keys.
        #[arg(long)]
        pub sqlite_store: bool,
        /// The started gateway requires API keys (`--auth keys`, with
        /// --sqlite-store), and the clients use one entitled to exactly the
        /// bench's symbols and channels: what authentication and entitlements
        /// cost on the fan-out path (nothing, they are checked at subscribe).
        #[arg(long)]
        pub keys: bool,
        /// Run the hostile mix beside the clients (`loadgen::hostile`): a
        /// 10,000 messages/s flood, a connect-and-drop loop, 200 unfinished
        /// handshakes, a subscribe-to-everything reader and a 100,000-fragment
        /// message, all the run long.
        #[arg(long)]
        pub hostile: bool,
        /// With --hostile: which actors run, comma-separated (default all).
        #[arg(long, value_enum, value_delimiter = ',')]
        pub hostile_actors: Vec<super::hostile::Actor>,
        /// Extra `serve` flags for the started gateway (e.g. the limits under test).
        #[arg(long, allow_hyphen_values = true, value_delimiter = ' ')]
        pub serve_flags: Vec<String>,
    }

    /// Why `tickwire bench` failed.
    #[derive(Debug, thiserror::Error)]
    pub enum BenchError {
        #[error(transparent)]
        Load(#[from] LoadError),
        #[error("cannot start the gateway: {0}")]
        Spawn(std::io::Error),
        #[error("cannot read or write {path}: {source}")]
        File { path: PathBuf, source: std::io::Error },
        #[error("baseline {path} is not a bench report: {message}")]
        Baseline { path: PathBuf, message: String },
        #[error("regression: p99 {now:.0} µs is more than {ratio}× the baseline's {baseline:.0} µs")]
        Regression { now: f64, baseline: f64, ratio: f64 },
        #[error("incomplete delivery: {0}")]
        Incomplete(String),
    }

    /// What `--check-complete` refuses in one run's report.
    pub fn incomplete(report: &LoadReport) -> Option<String> {
        let Some(counts) = report.server_counts else {
            return Some("the server's /v1/stats could not be read".into());
        };
        if report.delivered == 0 || counts.offered == 0 {
            return Some(format!("delivered {} of {} offered updates", report.delivered, counts.offered));
        }
        if report.gaps > 0 || counts.dropped_trades > 0 || counts.slow_consumer_closes > 0 {
            return Some(format!(
                "{} gaps, {} dropped trades, {} slow-consumer closes at a load that should have none",
                report.gaps, counts.dropped_trades, counts.slow_consumer_closes
            ));
        }
        if (report.delivered as f64) < counts.offered as f64 * 0.95 {
            return Some(format!("clients received {} of the {} updates offered", report.delivered, counts.offered));
        }
        None
    }

    /// A gateway started for one run, and its store directory (removed after).
    struct Started(Child, Option<PathBuf>);

    impl Drop for Started {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            if let Some(dir) = &self.1 {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    /// Creates a key entitled to exactly `symbols` and `channels` in `store`.
    fn add_key(
        exe: &std::path::Path,
        store: &str,
        symbols: &[String],
        channels: &[String],
    ) -> Result<String, BenchError> {
        let output = Command::new(exe)
            .args(["keys", "--store", store, "add", "--name", "bench"])
            .args(["--symbols", &symbols.join(","), "--channels", &channels.join(",")])
            .output()
            .map_err(BenchError::Spawn)?;
        let key = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !output.status.success() || key.is_empty() {
            let why = String::from_utf8_lossy(&output.stderr).into_owned();
            return Err(BenchError::Spawn(std::io::Error::other(format!("tickwire keys add failed: {why}"))));
        }
        Ok(key)
    }

    fn start_gateway(args: &BenchArgs, symbols: &[String]) -> Result<(Started, String), BenchError> {
        static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let exe = std::env::current_exe().map_err(BenchError::Spawn)?;
        // The load bench measures streaming; history would share its CPU,
        // unless asked for (--sqlite-store, --keys).
        let dir = (args.sqlite_store || args.keys).then(|| {
            let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::env::temp_dir().join(format!("tickwire-bench-{}-{run}", std::process::id()))
        });
        let mut store = vec!["--store".to_owned(), "none".to_owned()];
        let mut token = None;
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir).map_err(BenchError::Spawn)?;
            let url = format!("sqlite://{}", dir.join("bench.db").display());
            if args.keys {
                token = Some(add_key(&exe, &url, symbols, &args.channels)?);
                store.extend(["--auth".to_owned(), "keys".to_owned(), "--allow-query-token".to_owned()]);
            }
            store[1] = url;
        }
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--static-dir", "/nonexistent"])
            .args(["--rate", &args.rate.to_string(), "--max-connections", "1000000"])
            .args(&store)
            .args(&args.serve_flags)
            .env("TICKWIRE_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .map_err(BenchError::Spawn)?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or_else(|| BenchError::Spawn(std::io::Error::other("no stdout")))?;
        std::io::BufReader::new(stdout).read_line(&mut line).map_err(BenchError::Spawn)?;
        let addr = line.trim().rsplit("://").next().unwrap_or_default().to_owned();
        // A local bench: the key rides in the URL (the development profile
        // takes it there), so that /v1/stats is read with it too.
        let query = token.map_or(String::new(), |t| format!("?token={t}"));
        Ok((Started(child, dir), format!("ws://{addr}/v1/ws{query}")))
    }

    /// Runs `args.runs` times and checks the median p99 against the baseline.
    pub async fn bench(args: BenchArgs) -> Result<LoadReport, BenchError> {
        let mut reports = Vec::new();
        for _ in 0..args.runs.max(1) {
            let report = bench_once(&args).await?;
            if args.check_complete {
                if let Some(problem) = incomplete(&report) {
                    return Err(BenchError::Incomplete(problem));
                }
                let offered = report.server_counts.map_or(0, |c| c.offered);
                println!("  complete: {} of {offered} offered updates received, no gap", report.delivered);
            }
            reports.push(report);
        }
        reports.sort_by(|a, b| a.total_us.p99.total_cmp(&b.total_us.p99));
        let median = reports.swap_remove(reports.len() / 2);
        if let Some(path) = &args.baseline {
            let text =
                std::fs::read_to_string(path).map_err(|source| BenchError::File { path: path.clone(), source })?;
            let baseline: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| BenchError::Baseline { path: path.clone(), message: e.to_string() })?;
            let base_p99 = baseline["total_us"]["p99"]
                .as_f64()
                .ok_or_else(|| BenchError::Baseline { path: path.clone(), message: "no total_us.p99".into() })?;
            let now = median.total_us.p99;
            let allowed = base_p99.max(args.p99_floor_us) * args.max_p99_ratio;
            println!("  median p99 {now:.0} µs; baseline {base_p99:.0} µs; fails above {allowed:.0} µs");
            if now > allowed {
                return Err(BenchError::Regression { now, baseline: base_p99, ratio: args.max_p99_ratio });
            }
        }
        Ok(median)
    }

    async fn bench_once(args: &BenchArgs) -> Result<LoadReport, BenchError> {
        crate::app::raise_open_file_limit();
        let symbols: Vec<String> = if args.symbols.is_empty() {
            DEFAULT_UNIVERSE.iter().map(|s| s.symbol.to_owned()).collect()
        } else {
            args.symbols.clone()
        };
        let (started, url, pid) = match &args.url {
            Some(url) => (None, url.clone(), args.server_pid),
            None => {
                let (child, url) = start_gateway(args, &symbols)?;
                let pid = child.0.id();
                (Some(child), url, Some(pid))
            }
        };
        let config = LoadConfig {
            url,
            clients: args.clients,
            symbols,
            symbols_per_client: args.symbols_per_client,
            channels: args.channels.clone(),
            format: args.format,
            warmup: Duration::from_secs_f64(args.warmup_s),
            duration: Duration::from_secs_f64(args.duration_s),
            source_ips: args.source_ips.max(1),
            idle: args.idle,
            server_pid: pid,
        };
        let hostile = match args.hostile {
            true => {
                let authority = config.url.strip_prefix("ws://").and_then(|r| r.split(['/', '?']).next());
                let addr =
                    authority.and_then(|a| a.parse().ok()).ok_or_else(|| LoadError::BadUrl(config.url.clone()))?;
                let stop = tokio_util::sync::CancellationToken::new();
                let mut mix = super::hostile::HostileConfig::standard(addr);
                if !args.hostile_actors.is_empty() {
                    mix.actors = args.hostile_actors.clone();
                }
                Some((tokio::spawn(super::hostile::run(mix, stop.clone())), stop))
            }
            false => None,
        };
        // The server's largest resident size over the run: bounded under the mix?
        let peak_kib = Arc::new(AtomicU64::new(0));
        let sampler = pid.map(|pid| {
            let peak_kib = peak_kib.clone();
            tokio::spawn(async move {
                loop {
                    peak_kib.fetch_max(super::rss_kib(pid).unwrap_or(0), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        });
        let report = run(config).await;
        if let Some(sampler) = sampler {
            sampler.abort();
        }
        let hostile = match hostile {
            Some((mix, stop)) => {
                stop.cancel();
                mix.await.ok()
            }
            None => None,
        };
        let report = report?;
        drop(started);
        let peak_mib = peak_kib.load(Ordering::Relaxed) as f64 / 1024.0;
        print!("{}", table(&[(args.name.clone(), report.clone())]));
        let t = &report.exchange_to_receive_us;
        let (rs, sc) = (&report.receive_to_send_us, &report.send_to_client_us);
        println!(
            "  legs p50/p99 µs: exchange→receive {}/{}  receive→send {}/{}  send→client {}/{}  gaps {}",
            t.p50, t.p99, rs.p50, rs.p99, sc.p50, sc.p99, report.gaps
        );
        match report.server_counts {
            Some(c) => println!(
                "  server withheld: {} quotes conflated, {} trades dropped, {} book resnapshots, {} slow-consumer closes",
                c.conflated, c.dropped_trades, c.book_resnapshots, c.slow_consumer_closes
            ),
            None => println!("  server withheld: unknown (no /v1/stats)"),
        }
        let (ts, ss) = (&report.total_at_socket_us, &report.send_to_socket_us);
        println!(
            "  at the client's socket (kernel timestamp) p50/p90/p99/p99.9 µs: total {}/{}/{}/{}  send→socket {}/{}",
            ts.p50, ts.p90, ts.p99, ts.p999, ss.p50, ss.p99
        );
        if pid.is_some() {
            println!("  server peak RSS over the run: {peak_mib:.1} MiB");
        }
        if let Some(mix) = &hostile {
            println!(
                "  hostile mix: flood {} sent, {} rate_limited, {} closed 1008; churn {} connections ({} refused); \
                 {} unfinished handshakes dropped; everything-reader {} frames; fragments {} sent, {} closed 1009",
                mix.flood_sent,
                mix.flood_rate_limited,
                mix.flood_closed_1008,
                mix.churn_connections,
                mix.churn_refused,
                mix.half_open_dropped,
                mix.everything_frames,
                mix.fragments_sent,
                mix.fragments_closed_1009
            );
        }
        if let Some(path) = &args.json_out {
            use std::io::Write;
            let mut value = serde_json::to_value(&report).unwrap_or_default();
            value["name"] = args.name.clone().into();
            value["server_peak_rss_mib"] = peak_mib.into();
            if let Some(mix) = &hostile {
                value["hostile"] = serde_json::to_value(mix).unwrap_or_default();
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| BenchError::File { path: path.clone(), source })?;
            writeln!(file, "{value}").map_err(|source| BenchError::File { path: path.clone(), source })?;
        }
        Ok(report)
    }
}
