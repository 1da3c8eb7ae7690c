//! Shared helpers: start the real server on port 0, and a WebSocket client.
#![allow(dead_code)] // each test binary uses a different subset

pub mod nats;
pub mod store;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tickwire::app::{self, Server};
use tickwire::config::ServeArgs;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Starts the gateway in-process on an ephemeral port with extra `serve` flags.
pub async fn start(extra: &[&str]) -> Server {
    let mut args = vec!["--listen", "127.0.0.1:0", "--static-dir", "/nonexistent"];
    args.extend_from_slice(extra);
    if !extra.contains(&"--store") {
        // No history unless a test asks for it: parallel servers must not share
        // the default SQLite file and journal.
        args.extend_from_slice(&["--store", "none"]);
    }
    let args = ServeArgs::parse_from_args(args).expect("valid test flags");
    app::start(&args).await.expect("server starts")
}

/// Whether a WebSocket to `url` opens within `wait`, trying every 100 ms (a
/// closed connection gives its place under a limit back a moment later).
pub async fn ws_connects_within(url: &str, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        if tokio_tungstenite::connect_async(url).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

pub fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/v1/ws")
}

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A test client speaking JSON over a real WebSocket.
pub struct Client {
    pub socket: Socket,
}

/// What a client saw last: a message or the close frame.
#[derive(Debug)]
pub enum Received {
    Json(Value),
    Close(u16, String),
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let (socket, _) = tokio_tungstenite::connect_async(ws_url(addr)).await.expect("websocket connects");
        Client { socket }
    }

    pub async fn send(&mut self, value: Value) {
        self.socket.send(Message::text(value.to_string())).await.expect("send");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.socket.send(message).await.expect("send");
    }

    pub async fn subscribe(&mut self, channels: &[&str], symbols: &[&str]) {
        self.send(serde_json::json!({"op":"subscribe","channels":channels,"symbols":symbols})).await;
    }

    /// The next message or close, waiting at most `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Received> {
        loop {
            let message = tokio::time::timeout(wait, self.socket.next()).await.ok()??;
            match message {
                Ok(Message::Text(text)) => {
                    return Some(Received::Json(serde_json::from_str(&text).expect("server sends JSON")));
                }
                Ok(Message::Close(frame)) => {
                    let (code, reason) =
                        frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                    return Some(Received::Close(code, reason));
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// The next JSON message (panics on close or timeout).
    pub async fn json(&mut self) -> Value {
        match self.next(Duration::from_secs(10)).await {
            Some(Received::Json(v)) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Reads until a message of type `kind` arrives (skipping data), within 10 s.
    pub async fn until_type(&mut self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Received::Json(v)) if v["type"] == kind => return v,
                Some(Received::Json(_)) => continue,
                other => panic!("expected a {kind} message, got {other:?}"),
            }
        }
    }

    /// Sends a ping and reads until its pong, returning everything before it.
    pub async fn round_trip(&mut self, id: u64) -> Vec<Value> {
        self.send(serde_json::json!({"op":"ping","id":id})).await;
        let mut before = Vec::new();
        loop {
            let v = self.json().await;
            if v["type"] == "pong" && v["id"] == id {
                return before;
            }
            before.push(v);
        }
    }
}

/// Flattens messages into (kind, symbol, channel, seq, message) tuples, one per
/// snapshot or update, in arrival order.
pub fn updates(messages: &[Value]) -> Vec<(String, String, String, u64, Value)> {
    let mut out = Vec::new();
    for m in messages {
        match m["type"].as_str() {
            Some("snapshot") => out.push((
                "snapshot".into(),
                m["symbol"].as_str().unwrap().into(),
                m["channel"].as_str().unwrap().into(),
                m["seq"].as_u64().unwrap(),
                m.clone(),
            )),
            Some("batch") => {
                for u in m["updates"].as_array().unwrap() {
                    out.push((
                        "update".into(),
                        u["symbol"].as_str().unwrap().into(),
                        u["channel"].as_str().unwrap().into(),
                        u["seq"].as_u64().unwrap(),
                        u.clone(),
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

/// The whole HTTP response to a GET of `path` (status line, headers, body).
pub async fn get_text(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.unwrap();
    let mut text = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut text).await.unwrap();
    text
}

pub async fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    // Bodies may be chunked: take the outermost JSON object.
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |e| e + 1);
    (status, serde_json::from_str(&body[start..end]).unwrap_or(Value::Null))
}

/// A WebSocket client written on a bare TCP socket, for behaviour a well-behaved
/// library client cannot show: never reading, never answering pings.
pub struct RawClient {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

/// One server frame: opcode and payload.
#[derive(Debug)]
pub struct RawFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 0x8 && self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        Self::from_stream(TcpStream::connect(addr).await.unwrap()).await
    }

    /// Performs the WebSocket handshake on an already connected socket.
    pub async fn from_stream(mut stream: TcpStream) -> RawClient {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = stream.peer_addr().unwrap();
        let request = format!(
            "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "server closed during handshake");
            buffer.extend_from_slice(&chunk[..n]);
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buffer[..end]).to_string();
                assert!(head.starts_with("HTTP/1.1 101"), "{head}");
                buffer.drain(..end + 4);
                return RawClient { stream, buffer };
            }
        }
    }

    /// Sends a masked text frame (mask key zero, which leaves the payload as is).
    pub async fn send_text(&mut self, text: &str) {
        self.send_text_bytes(text.as_bytes()).await;
    }

    /// Sends a masked text frame holding `payload` as it is (valid UTF-8 or not).
    pub async fn send_text_bytes(&mut self, payload: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let mut frame = vec![0x81];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Reads frames until the connection ends or `wait` passes.
    pub async fn read_frames(&mut self, wait: Duration) -> Vec<RawFrame> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + wait;
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buffer.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        let mut frames = Vec::new();
        let mut at = 0;
        while self.buffer.len() >= at + 2 {
            let opcode = self.buffer[at] & 0x0f;
            let (len, header) = match self.buffer[at + 1] & 0x7f {
                126 if self.buffer.len() >= at + 4 => {
                    (u16::from_be_bytes([self.buffer[at + 2], self.buffer[at + 3]]) as usize, 4)
                }
                127 if self.buffer.len() >= at + 10 => {
                    let bytes: [u8; 8] = self.buffer[at + 2..at + 10].try_into().unwrap();
                    (u64::from_be_bytes(bytes) as usize, 10)
                }
                n if n < 126 => (n as usize, 2),
                _ => break,
            };
            if self.buffer.len() < at + header + len {
                break;
            }
            frames.push(RawFrame { opcode, payload: self.buffer[at + header..at + header + len].to_vec() });
            at += header + len;
        }
        self.buffer.drain(..at);
        frames
    }
}

/// The `tickwire` binary running as a child process.
pub struct Process {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// The line the server printed once listening (`tickwire listening on SCHEME://ADDR`).
    pub listening: String,
}

impl Process {
    /// Starts `tickwire serve` on an ephemeral port and waits until it listens.
    pub fn serve(extra: &[&str]) -> Process {
        Process::serve_with_env(extra, &[])
    }

    /// [`Process::serve`] with environment variables set.
    pub fn serve_with_env(extra: &[&str], env: &[(&str, &str)]) -> Process {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args(["serve", "--listen", "127.0.0.1:0", "--static-dir", "/nonexistent"])
            .args(extra)
            .args(if extra.contains(&"--store") { &[][..] } else { &["--store", "none"][..] })
            .env("TICKWIRE_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line.trim().rsplit("://").next().unwrap().parse().unwrap_or_else(|_| panic!("address in {line:?}"));
        Process { child, addr, listening: line.trim().to_owned() }
    }

    /// Resident set size of the server, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        kib * 1024
    }

    pub fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill").args(["-s", name, &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
