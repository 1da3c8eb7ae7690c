//! Local exchange servers for feed tests: a scripted WebSocket venue and a REST
//! endpoint, both on 127.0.0.1:0, plus a harness that runs a venue feed's
//! supervisor against them and applies what it emits to a real engine.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tickwire::book::Engine;
use tickwire::feed::supervisor::{self, FeedContext, SupervisorConfig};
use tickwire::feed::{EventBatch, FeedHealth, FeedHealthView, Venue};
use tickwire::model::{Event, InstrumentId, Instruments, Payload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// One step of a scripted connection.
#[derive(Debug, Clone)]
pub enum Step {
    /// Send a text frame.
    Send(String),
    /// Wait (up to 10 s) for a client message containing this text.
    Expect(String),
    Sleep(u64),
    /// Close the connection (a disconnect mid-stream).
    Close,
}

pub fn send(text: impl Into<String>) -> Step {
    Step::Send(text.into())
}

pub fn expect(text: impl Into<String>) -> Step {
    Step::Expect(text.into())
}

/// A scripted venue WebSocket server. Connection `n` (0-based, counting refused
/// ones) plays `script(n)`; after its last step it stays open and silent until
/// the client leaves (a silent stall, when the script means it).
pub struct MockWs {
    pub addr: SocketAddr,
    /// Every client text message, with the connection it came on.
    pub received: Arc<Mutex<Vec<(usize, String)>>>,
    /// Connections accepted (refused ones included).
    pub connections: Arc<AtomicUsize>,
}

impl MockWs {
    /// `refuse_first` connections are closed before the WebSocket handshake.
    pub async fn start(refuse_first: usize, script: impl Fn(usize) -> Vec<Step> + Send + Sync + 'static) -> MockWs {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(script);
        let (log, count) = (received.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                if n < refuse_first {
                    drop(stream);
                    continue;
                }
                let steps = script(n);
                let log = log.clone();
                tokio::spawn(async move {
                    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
                    let (mut sink, mut source) = ws.split();
                    let (client_tx, mut client_rx) = mpsc::channel::<String>(1024);
                    let reader = tokio::spawn(async move {
                        while let Some(Ok(message)) = source.next().await {
                            if let Message::Text(text) = message {
                                log.lock().push((n, text.to_string()));
                                let _ = client_tx.send(text.to_string()).await;
                            }
                        }
                    });
                    for step in steps {
                        match step {
                            Step::Send(text) => {
                                if sink.send(Message::text(text)).await.is_err() {
                                    return;
                                }
                            }
                            Step::Expect(wanted) => {
                                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                                loop {
                                    match tokio::time::timeout_at(deadline, client_rx.recv()).await {
                                        Ok(Some(text)) if text.contains(&wanted) => break,
                                        Ok(Some(_)) => continue,
                                        _ => return,
                                    }
                                }
                            }
                            Step::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                            Step::Close => {
                                let _ = sink.close().await;
                                return;
                            }
                        }
                    }
                    // Stay open and silent until the client goes.
                    let _ = reader.await;
                });
            }
        });
        MockWs { addr, received, connections }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub fn received_on(&self, connection: usize) -> Vec<String> {
        self.received.lock().iter().filter(|(n, _)| *n == connection).map(|(_, m)| m.clone()).collect()
    }
}

/// A REST server answering GETs with `handler(n, path)` → (status, body), where `n`
/// counts requests from 0.
pub struct MockRest {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl MockRest {
    pub async fn start(handler: impl Fn(usize, &str) -> (u16, String) + Send + Sync + 'static) -> MockRest {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let log = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (handler, log) = (handler.clone(), log.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(n) if n > 0 => head.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let n = {
                        let mut log = log.lock();
                        log.push(path.clone());
                        log.len() - 1
                    };
                    let (status, body) = handler(n, &path);
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        MockRest { addr, requests }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Supervisor settings for tests: fast backoff, short stale limit.
pub fn test_config(ws_url: String, rest_url: Option<String>) -> SupervisorConfig {
    SupervisorConfig {
        ws_url,
        rest_url,
        stale_after: Duration::from_millis(400),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        message_interval: Duration::ZERO,
        max_connection_age: None,
        rotation_overlap: Duration::from_millis(150),
        request_timeout: Duration::from_secs(5),
        book_sync_timeout: Duration::from_secs(5),
    }
}

/// A venue feed running against mock servers, with every event it emits applied
/// to a real engine (which refuses crossed or negative books).
pub struct Harness {
    pub health: Arc<FeedHealth>,
    pub events: Vec<Event>,
    pub engine: Engine,
    rx: mpsc::Receiver<EventBatch>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    pub fn start<V: Venue>(venue: V, instruments: &Instruments, config: SupervisorConfig) -> Harness {
        let (tx, rx) = mpsc::channel(64);
        let health = Arc::new(FeedHealth::new("test"));
        let cancel = CancellationToken::new();
        let http = config.rest_url.as_ref().map(|_| supervisor::http_client().unwrap());
        let ctx = FeedContext { tx, health: health.clone(), cancel: cancel.clone(), http };
        let task = tokio::spawn(supervisor::run(venue, config, ctx));
        Harness { health, events: Vec::new(), engine: Engine::new(instruments, 1000), rx, cancel, task }
    }

    /// Receives events until `done` holds for what was received (10 s at most).
    pub async fn until(&mut self, what: &str, done: impl Fn(&Harness) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done(self) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(batch)) => {
                    for mut event in batch {
                        self.engine.apply(&mut event).unwrap_or_else(|e| panic!("engine refused {event:?}: {e}"));
                        self.events.push(event);
                    }
                }
                _ => panic!("timed out waiting for {what}; health {:?}; events {:#?}", self.health.view(), self.events),
            }
        }
    }

    pub fn view(&self) -> FeedHealthView {
        self.health.view()
    }

    pub fn trade_ids(&self) -> Vec<u64> {
        self.events
            .iter()
            .filter_map(|e| match &e.payload {
                Payload::Trade(t) => Some(t.trade_id),
                _ => None,
            })
            .collect()
    }

    /// Book resets so far: (instrument, number of levels).
    pub fn resets(&self) -> Vec<(InstrumentId, usize)> {
        self.events
            .iter()
            .filter_map(|e| match &e.payload {
                Payload::BookReset(d) => Some((e.instrument, d.bids.len() + d.asks.len())),
                _ => None,
            })
            .collect()
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}
