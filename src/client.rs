//! A Rust client of the v1 protocol, JSON or protobuf: subscribe, iterate decoded
//! updates, reconnect with jittered exponential backoff and resume from the last
//! sequence seen, so that across reconnects every sequence arrives exactly once
//! (or is announced by a `gap`). `tickwire tail` is built on it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use rand::RngExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::codec::Format;
use crate::codec::proto::pb;
use crate::model::{Candle, CandleInterval, Channel, MAX_DECIMALS, Nanos, Price, Side, Size, now_nanos, parse_decimal};

/// Why the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: Box<tokio_tungstenite::tungstenite::Error> },
    #[error("connection failed: {0}")]
    Socket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("server error {code}: {message}")]
    Server { code: String, message: String },
    #[error("server closed the connection ({code}: {reason})")]
    Closed { code: u16, reason: String },
    #[error("undecodable server message: {0}")]
    Decode(String),
    #[error("client settings: {0}")]
    Config(String),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// The values of one update or snapshot, in model units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Quote { bid: Price, bid_size: Size, ask: Price, ask_size: Size },
    Trade { price: Price, size: Size, side: Side, trade_id: u64 },
    Book { bids: Vec<(Price, Size)>, asks: Vec<(Price, Size)> },
    Candle(Candle),
}

/// One sequenced update or snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub symbol: Arc<str>,
    pub channel: Channel,
    pub seq: u64,
    pub ts_event: Nanos,
    pub ts_recv: Nanos,
    pub ts_send: Nanos,
    /// `None` for a snapshot of a channel that had no event yet.
    pub data: Option<Data>,
}

/// What the stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    Snapshot(Update),
    Update(Update),
    Gap {
        symbol: String,
        channel: Channel,
        from_seq: u64,
        to_seq: u64,
        reason: String,
    },
    BookInvalidated {
        symbol: String,
        seq: u64,
    },
    /// A request was refused; the stream goes on.
    Error {
        code: String,
        message: String,
    },
    /// The connection was re-established and the subscription resumed.
    Reconnected {
        attempt: u32,
    },
    /// A resume served from stored history caught up; live updates follow `seq`.
    Live {
        symbol: String,
        channel: Channel,
        seq: u64,
    },
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Gateway WebSocket URL; several, comma-separated, are tried in turn when
    /// one cannot be reached (gateways of one cluster resume each other's streams).
    pub url: String,
    pub format: Format,
    pub symbols: Vec<String>,
    pub channels: Vec<Channel>,
    /// Reconnect after a lost connection (resuming from the last sequence).
    pub reconnect: bool,
    pub max_backoff: Duration,
    /// Start from stored history at this exchange time (ns) instead of a
    /// snapshot (`since_time`; the server needs a store). Reconnects resume by
    /// sequence as usual.
    pub from_time: Option<crate::model::Nanos>,
    /// A token, key or JWT for a gateway that requires one, sent as
    /// `Authorization: Bearer` on the upgrade (never in the URL).
    pub token: Option<String>,
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A subscribed stream that survives reconnects.
pub struct StreamClient {
    config: ClientConfig,
    socket: Option<Socket>,
    /// Last sequence delivered per (symbol, channel): the resume point and the
    /// duplicate filter.
    last_seq: HashMap<(Arc<str>, Channel), u64>,
    /// The epoch of each stream's sequence in `last_seq` (from its latest
    /// snapshot or `live` marker); sent back with it, so a server that restarted
    /// never continues it with another run's updates.
    epochs: HashMap<(Arc<str>, Channel), u64>,
    /// Protobuf: symbol and decimals per instrument id, learnt from snapshots.
    instruments: HashMap<u32, (Arc<str>, u8, u8)>,
    pending: std::collections::VecDeque<StreamEvent>,
    attempt: u32,
    /// Which of the configured URLs is in use.
    url_index: usize,
    /// Updates the server sent twice (dropped here); zero on a correct server.
    pub duplicates: u64,
}

fn channel_name(channel: Channel) -> &'static str {
    channel.as_str()
}

fn scale(mantissa: i64, decimals: u32) -> i64 {
    let decimals = decimals.min(u32::from(MAX_DECIMALS));
    mantissa.saturating_mul(10_i64.pow(u32::from(MAX_DECIMALS) - decimals))
}

impl StreamClient {
    /// Connects and subscribes.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let mut client = Self::new(config);
        let urls = client.config.url.split(',').filter(|u| !u.trim().is_empty()).count().max(1);
        let mut opened = client.open().await;
        for _ in 1..urls {
            if opened.is_ok() {
                break;
            }
            opened = client.open().await;
        }
        opened.map(|()| client)
    }

    /// A client not connected yet.
    fn new(config: ClientConfig) -> Self {
        Self {
            config,
            socket: None,
            last_seq: HashMap::new(),
            epochs: HashMap::new(),
            instruments: HashMap::new(),
            pending: Default::default(),
            attempt: 0,
            url_index: 0,
            duplicates: 0,
        }
    }

    /// The URL connections go to now.
    pub fn url(&self) -> &str {
        let urls: Vec<&str> = self.config.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        urls.get(self.url_index % urls.len().max(1)).copied().unwrap_or(&self.config.url)
    }

    async fn open(&mut self) -> Result<(), ClientError> {
        let opened = self.open_current().await;
        if opened.is_err() {
            self.url_index += 1; // the next attempt tries the next gateway
        }
        opened
    }

    async fn open_current(&mut self) -> Result<(), ClientError> {
        let url = self.url().to_owned();
        let connect_error = |source| ClientError::Connect { url: url.clone(), source: Box::new(source) };
        let mut request = url.as_str().into_client_request().map_err(connect_error)?;
        let protocol = self.config.format.subprotocol().parse().expect("a valid header value");
        request.headers_mut().insert("Sec-WebSocket-Protocol", protocol);
        if let Some(token) = &self.config.token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| ClientError::Config("the token is not a valid header value".into()))?;
            request.headers_mut().insert("Authorization", value);
        }
        // tungstenite zeroes its whole read chunk before every read; its 128 KiB
        // default costs more than the frames we read. Larger frames still arrive whole.
        let ws_config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 << 10);
        let (mut socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true)
            .await
            .map_err(connect_error)?;
        for message in self.subscribe_messages() {
            socket.send(message).await.map_err(Box::new)?;
        }
        self.socket = Some(socket);
        Ok(())
    }

    /// The subscribe requests for a (re)connection. Each stream resumes with the
    /// epoch of its own last snapshot or `live` marker; a request carries one
    /// epoch, so when streams hold different epochs (a connection lost during a
    /// server restart) each goes in a request of its own.
    fn subscribe_messages(&self) -> Vec<Message> {
        let resume: Vec<(&str, Channel, u64, Option<u64>)> = self
            .last_seq
            .iter()
            .filter(|((symbol, _), _)| self.config.symbols.iter().any(|s| s.as_str() == &**symbol))
            .map(|((symbol, channel), seq)| {
                (&**symbol, *channel, *seq, self.epochs.get(&(symbol.clone(), *channel)).copied())
            })
            .collect();
        let mut epochs: Vec<Option<u64>> = resume.iter().map(|r| r.3).collect();
        epochs.sort_unstable();
        epochs.dedup();
        if epochs.len() <= 1 {
            let symbols: Vec<&str> = self.config.symbols.iter().map(String::as_str).collect();
            return vec![self.request(&symbols, &self.config.channels, &resume)];
        }
        let mut requests = Vec::new();
        for symbol in &self.config.symbols {
            for &channel in &self.config.channels {
                let mine: Vec<_> = resume.iter().filter(|r| r.0 == symbol && r.1 == channel).copied().collect();
                requests.push(self.request(&[symbol.as_str()], &[channel], &mine));
            }
        }
        requests
    }

    /// One subscribe request: `resume` entries (all of one epoch) resume, the
    /// other streams start from a snapshot or from `from_time`.
    fn request(&self, symbols: &[&str], channels: &[Channel], resume: &[(&str, Channel, u64, Option<u64>)]) -> Message {
        let epoch = resume.iter().find_map(|r| r.3);
        let since_time = if resume.is_empty() { self.config.from_time } else { None };
        match self.config.format {
            Format::Json => {
                let mut since: HashMap<&str, serde_json::Map<String, Value>> = HashMap::new();
                for &(symbol, channel, seq, _) in resume {
                    since.entry(symbol).or_default().insert(channel_name(channel).to_owned(), seq.into());
                }
                let channels: Vec<_> = channels.iter().map(|c| channel_name(*c)).collect();
                let mut request = serde_json::json!({
                    "op": "subscribe", "channels": channels, "symbols": symbols, "since": since,
                });
                if let Some(epoch) = epoch {
                    request["epoch"] = epoch.into();
                }
                if let Some(at) = since_time {
                    request["since_time"] = at.into();
                }
                Message::text(request.to_string())
            }
            Format::Proto => {
                let subscribe = pb::Subscribe {
                    epoch: epoch.unwrap_or(0),
                    since_time: since_time.unwrap_or(0),
                    channels: channels.iter().map(|c| crate::codec::proto::channel(*c) as i32).collect(),
                    symbols: symbols.iter().map(|s| (*s).to_owned()).collect(),
                    since: resume
                        .iter()
                        .map(|&(symbol, channel, seq, _)| pb::Since {
                            symbol: symbol.to_owned(),
                            channel: crate::codec::proto::channel(channel) as i32,
                            seq,
                        })
                        .collect(),
                    ..pb::Subscribe::default()
                };
                let message = pb::ClientMessage { op: Some(pb::client_message::Op::Subscribe(subscribe)) };
                Message::binary(message.encode_to_vec())
            }
        }
    }

    /// The last sequence delivered for `symbol` and `channel`.
    pub fn last_seq(&self, symbol: &str, channel: Channel) -> Option<u64> {
        self.last_seq.get(&(Arc::from(symbol), channel)).copied()
    }

    /// Drops the connection as if the network failed (for tests and drills); the
    /// next call to [`Self::next`] reconnects and resumes.
    pub fn cut(&mut self) {
        self.socket = None;
    }

    /// The next event, reconnecting and resuming as needed. `Ok(None)` when the
    /// server closed the stream and reconnecting is off.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, ClientError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            let Some(socket) = self.socket.as_mut() else {
                self.reconnect().await?;
                continue;
            };
            let message = match socket.next().await {
                Some(Ok(message)) => message,
                Some(Err(error)) if !self.config.reconnect => return Err(Box::new(error).into()),
                None if !self.config.reconnect => return Ok(None),
                _ => {
                    self.socket = None;
                    continue;
                }
            };
            match message {
                Message::Text(text) => self.on_json(&text)?,
                Message::Binary(bytes) => self.on_proto(&bytes)?,
                Message::Close(frame) => {
                    let (code, reason) =
                        frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                    self.socket = None;
                    if !self.config.reconnect {
                        return Err(ClientError::Closed { code, reason });
                    }
                }
                _ => {}
            }
        }
    }

    async fn reconnect(&mut self) -> Result<(), ClientError> {
        loop {
            self.attempt += 1;
            // Full jitter: a random wait up to an exponentially growing cap.
            let cap = Duration::from_millis(100u64 << self.attempt.min(10)).min(self.config.max_backoff);
            let wait = cap.mul_f64(rand::rng().random::<f64>());
            tokio::time::sleep(wait).await;
            match self.open().await {
                Ok(()) => {
                    self.pending.push_back(StreamEvent::Reconnected { attempt: self.attempt });
                    self.attempt = 0;
                    return Ok(());
                }
                Err(error) => tracing::debug!(%error, attempt = self.attempt, "reconnect failed"),
            }
        }
    }

    fn note_epoch(&mut self, symbol: &Arc<str>, channel: Channel, epoch: Option<u64>) {
        if let Some(epoch) = epoch {
            self.epochs.insert((symbol.clone(), channel), epoch);
        }
    }

    /// Delivers an update unless its sequence was already delivered.
    fn deliver(&mut self, update: Update, snapshot: bool) {
        let key = (update.symbol.clone(), update.channel);
        let last = self.last_seq.get(&key).copied().unwrap_or(0);
        if snapshot {
            // A snapshot restarts the count (its state covers everything up to seq).
            self.last_seq.insert(key, update.seq);
            self.pending.push_back(StreamEvent::Snapshot(update));
        } else if update.seq > last {
            self.last_seq.insert(key, update.seq);
            self.pending.push_back(StreamEvent::Update(update));
        } else {
            self.duplicates += 1;
        }
    }

    fn on_json(&mut self, text: &str) -> Result<(), ClientError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ClientError::Decode(e.to_string()))?;
        let decode = |e: String| ClientError::Decode(format!("{e} in {text}"));
        match value["type"].as_str() {
            Some("snapshot") => {
                let update = json_update(&value, Some(&value["data"])).map_err(decode)?;
                self.note_epoch(&update.symbol, update.channel, value["epoch"].as_u64());
                self.deliver(update, true);
            }
            Some("batch") => {
                for item in value["updates"].as_array().into_iter().flatten() {
                    let update = json_update(item, Some(item)).map_err(decode)?;
                    self.deliver(update, false);
                }
            }
            Some("gap") => self.pending.push_back(StreamEvent::Gap {
                symbol: value["symbol"].as_str().unwrap_or_default().to_owned(),
                channel: Channel::parse(value["channel"].as_str().unwrap_or_default()).unwrap_or(Channel::Trades),
                from_seq: value["from_seq"].as_u64().unwrap_or(0),
                to_seq: value["to_seq"].as_u64().unwrap_or(0),
                reason: value["reason"].as_str().unwrap_or_default().to_owned(),
            }),
            Some("live") => {
                if let Some(channel) = Channel::parse(value["channel"].as_str().unwrap_or_default()) {
                    let symbol: Arc<str> = value["symbol"].as_str().unwrap_or_default().into();
                    self.note_epoch(&symbol, channel, value["epoch"].as_u64());
                }
                self.pending.push_back(StreamEvent::Live {
                    symbol: value["symbol"].as_str().unwrap_or_default().to_owned(),
                    channel: Channel::parse(value["channel"].as_str().unwrap_or_default()).unwrap_or(Channel::Trades),
                    seq: value["seq"].as_u64().unwrap_or(0),
                });
            }
            Some("book_invalidated") => self.pending.push_back(StreamEvent::BookInvalidated {
                symbol: value["symbol"].as_str().unwrap_or_default().to_owned(),
                seq: value["seq"].as_u64().unwrap_or(0),
            }),
            Some("error") => self.pending.push_back(StreamEvent::Error {
                code: value["code"].as_str().unwrap_or_default().to_owned(),
                message: value["message"].as_str().unwrap_or_default().to_owned(),
            }),
            _ => {}
        }
        Ok(())
    }

    fn on_proto(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        use pb::server_message::Kind;
        let message = pb::ServerMessage::decode(bytes).map_err(|e| ClientError::Decode(e.to_string()))?;
        match message.kind {
            Some(Kind::Snapshot(s)) => {
                let symbol: Arc<str> = s.symbol.as_str().into();
                self.note_epoch(&symbol, proto_channel(s.channel)?, (s.epoch != 0).then_some(s.epoch));
                let (pd, sd) = (s.price_decimals, s.size_decimals);
                self.instruments.insert(s.instrument_id, (symbol.clone(), pd as u8, sd as u8));
                let data = s.data.map(|d| match d {
                    pb::snapshot::Data::Quote(q) => proto_quote(&q, pd, sd),
                    pb::snapshot::Data::Trade(t) => proto_trade(&t, pd, sd),
                    pb::snapshot::Data::Book(b) => proto_book(&b, pd, sd),
                    pb::snapshot::Data::Candle(c) => proto_candle(&c, pd, sd),
                });
                let channel = proto_channel(s.channel)?;
                let update = Update {
                    symbol,
                    channel,
                    seq: s.seq,
                    ts_event: s.ts_event,
                    ts_recv: s.ts_recv,
                    ts_send: s.ts_send,
                    data,
                };
                self.deliver(update, true);
            }
            Some(Kind::Batch(batch)) => {
                for u in batch.updates {
                    let Some((symbol, pd, sd)) = self.instruments.get(&u.instrument_id).cloned() else {
                        return Err(ClientError::Decode(format!("update for unknown instrument {}", u.instrument_id)));
                    };
                    let (pd, sd) = (u32::from(pd), u32::from(sd));
                    let (channel, data) = match u.data {
                        Some(pb::update::Data::Quote(q)) => (Channel::Quotes, proto_quote(&q, pd, sd)),
                        Some(pb::update::Data::Trade(t)) => (Channel::Trades, proto_trade(&t, pd, sd)),
                        Some(pb::update::Data::Book(b)) => (Channel::Book, proto_book(&b, pd, sd)),
                        Some(pb::update::Data::Candle(c)) => match proto_candle(&c, pd, sd) {
                            Data::Candle(candle) => (Channel::candles(candle.interval), Data::Candle(candle)),
                            _ => unreachable!("proto_candle makes candles"),
                        },
                        None => return Err(ClientError::Decode("update without data".into())),
                    };
                    let ts_recv = u.ts_event + u.recv_delta_ns;
                    let update = Update {
                        symbol,
                        channel,
                        seq: u.seq,
                        ts_event: u.ts_event,
                        ts_recv,
                        ts_send: ts_recv + u.send_delta_ns,
                        data: Some(data),
                    };
                    self.deliver(update, false);
                }
            }
            Some(Kind::Gap(g)) => self.pending.push_back(StreamEvent::Gap {
                symbol: g.symbol,
                channel: proto_channel(g.channel)?,
                from_seq: g.from_seq,
                to_seq: g.to_seq,
                reason: g.reason,
            }),
            Some(Kind::BookInvalidated(b)) => {
                self.pending.push_back(StreamEvent::BookInvalidated { symbol: b.symbol, seq: b.seq });
            }
            Some(Kind::Error(e)) => self.pending.push_back(StreamEvent::Error { code: e.code, message: e.message }),
            Some(Kind::Live(live)) => {
                let channel = proto_channel(live.channel)?;
                self.note_epoch(&Arc::from(live.symbol.as_str()), channel, (live.epoch != 0).then_some(live.epoch));
                self.pending.push_back(StreamEvent::Live {
                    symbol: live.symbol,
                    channel: proto_channel(live.channel)?,
                    seq: live.seq,
                });
            }
            // Replay messages belong to /v1/replay, not to this stream.
            Some(
                Kind::Pong(_)
                | Kind::Replay(_)
                | Kind::End(_)
                | Kind::Subscribed(_)
                | Kind::Unsubscribed(_)
                | Kind::Auth(_),
            )
            | None => {}
        }
        Ok(())
    }
}

fn proto_channel(value: i32) -> Result<Channel, ClientError> {
    pb::Channel::try_from(value)
        .ok()
        .and_then(crate::codec::proto::channel_of)
        .ok_or_else(|| ClientError::Decode(format!("channel {value}")))
}

fn proto_candle(c: &pb::Candle, pd: u32, sd: u32) -> Data {
    let interval = match pb::CandleInterval::try_from(c.interval) {
        Ok(pb::CandleInterval::CandleInterval1m) => CandleInterval::M1,
        Ok(pb::CandleInterval::CandleInterval5m) => CandleInterval::M5,
        Ok(pb::CandleInterval::CandleInterval1h) => CandleInterval::H1,
        Ok(pb::CandleInterval::CandleInterval1d) => CandleInterval::D1,
        _ => CandleInterval::S1,
    };
    Data::Candle(Candle {
        interval,
        start: c.start,
        open: Price(scale(c.open, pd)),
        high: Price(scale(c.high, pd)),
        low: Price(scale(c.low, pd)),
        close: Price(scale(c.close, pd)),
        volume: i128::from(scale(c.volume, sd)),
        trades: c.trades,
        closed: c.closed,
    })
}

fn proto_quote(q: &pb::Quote, pd: u32, sd: u32) -> Data {
    Data::Quote {
        bid: Price(scale(q.bid, pd)),
        bid_size: Size(scale(q.bid_size, sd)),
        ask: Price(scale(q.ask, pd)),
        ask_size: Size(scale(q.ask_size, sd)),
    }
}

fn proto_trade(t: &pb::Trade, pd: u32, sd: u32) -> Data {
    Data::Trade {
        price: Price(scale(t.price, pd)),
        size: Size(scale(t.size, sd)),
        side: if t.side == pb::Side::Sell as i32 { Side::Sell } else { Side::Buy },
        trade_id: t.trade_id,
    }
}

fn proto_book(b: &pb::Book, pd: u32, sd: u32) -> Data {
    let levels =
        |side: &[pb::Level]| side.iter().map(|l| (Price(scale(l.price, pd)), Size(scale(l.size, sd)))).collect();
    Data::Book { bids: levels(&b.bids), asks: levels(&b.asks) }
}

fn json_update(head: &Value, data: Option<&Value>) -> Result<Update, String> {
    let text = |v: &Value, key: &str| v[key].as_str().ok_or_else(|| format!("missing {key}")).map(str::to_owned);
    let decimal = |v: &Value, key: &str| parse_decimal(&text(v, key)?).map_err(|e| e.to_string());
    let channel = Channel::parse(&text(head, "channel")?).ok_or("unknown channel")?;
    let data = match data {
        Some(d) if !d.is_null() => Some(match channel {
            Channel::Quotes => Data::Quote {
                bid: Price(decimal(d, "bid")?),
                bid_size: Size(decimal(d, "bid_size")?),
                ask: Price(decimal(d, "ask")?),
                ask_size: Size(decimal(d, "ask_size")?),
            },
            Channel::Trades => Data::Trade {
                price: Price(decimal(d, "price")?),
                size: Size(decimal(d, "size")?),
                side: if d["side"] == "sell" { Side::Sell } else { Side::Buy },
                trade_id: d["trade_id"].as_u64().ok_or("missing trade_id")?,
            },
            Channel::Book => {
                let levels = |key: &str| -> Result<Vec<(Price, Size)>, String> {
                    d[key]
                        .as_array()
                        .ok_or_else(|| format!("missing {key}"))?
                        .iter()
                        .map(|level| {
                            let p = level[0].as_str().ok_or("bad level")?;
                            let s = level[1].as_str().ok_or("bad level")?;
                            Ok((
                                Price(parse_decimal(p).map_err(|e| e.to_string())?),
                                Size(parse_decimal(s).map_err(|e| e.to_string())?),
                            ))
                        })
                        .collect()
                };
                Data::Book { bids: levels("bids")?, asks: levels("asks")? }
            }
            other => Data::Candle(Candle {
                interval: other.candle_interval().ok_or("unknown channel")?,
                start: d["start"].as_u64().ok_or("missing start")?,
                open: Price(decimal(d, "open")?),
                high: Price(decimal(d, "high")?),
                low: Price(decimal(d, "low")?),
                close: Price(decimal(d, "close")?),
                volume: i128::from(decimal(d, "volume")?),
                trades: d["trades"].as_u64().ok_or("missing trades")?,
                closed: d["closed"].as_bool().ok_or("missing closed")?,
            }),
        }),
        _ => None,
    };
    Ok(Update {
        symbol: text(head, "symbol")?.into(),
        channel,
        seq: head["seq"].as_u64().ok_or("missing seq")?,
        ts_event: head["ts_event"].as_u64().unwrap_or(0),
        ts_recv: head["ts_recv"].as_u64().unwrap_or(0),
        ts_send: head["ts_send"].as_u64().unwrap_or(0),
        data,
    })
}

/// One terminal line for an event.
pub fn describe(event: &StreamEvent) -> String {
    let latency = |u: &Update| format!("{:.2} ms", now_nanos().saturating_sub(u.ts_event) as f64 / 1e6);
    let line = |u: &Update| match &u.data {
        None => format!("{:<14} {:<6} #{:<8} (no data yet)", u.symbol, u.channel.as_str(), u.seq),
        Some(Data::Quote { bid, bid_size, ask, ask_size }) => {
            format!("{:<14} quote  #{:<8} {bid} x {bid_size}  |  {ask} x {ask_size}  {}", u.symbol, u.seq, latency(u))
        }
        Some(Data::Trade { price, size, side, trade_id }) => format!(
            "{:<14} trade  #{:<8} {} {size} @ {price}  id {trade_id}  {}",
            u.symbol,
            u.seq,
            side.as_str(),
            latency(u)
        ),
        Some(Data::Book { bids, asks }) => {
            format!("{:<14} book   #{:<8} {} bid / {} ask level(s)", u.symbol, u.seq, bids.len(), asks.len())
        }
        Some(Data::Candle(c)) => {
            let mut volume = Vec::new();
            crate::model::write_decimal_wide(&mut volume, c.volume, MAX_DECIMALS);
            format!(
                "{:<14} {:<10} #{:<8} O {} H {} L {} C {} V {} ({} trades){}",
                u.symbol,
                u.channel.as_str(),
                u.seq,
                c.open,
                c.high,
                c.low,
                c.close,
                String::from_utf8_lossy(&volume).trim_end_matches('0').trim_end_matches('.'),
                c.trades,
                if c.closed { " closed" } else { "" }
            )
        }
    };
    match event {
        StreamEvent::Snapshot(u) => format!("{}  (snapshot)", line(u)),
        StreamEvent::Update(u) => line(u),
        StreamEvent::Gap { symbol, channel, from_seq, to_seq, reason } => {
            format!("{symbol:<14} {} GAP #{from_seq}..=#{to_seq} ({reason})", channel.as_str())
        }
        StreamEvent::BookInvalidated { symbol, seq } => format!("{symbol:<14} book invalidated at #{seq}"),
        StreamEvent::Error { code, message } => format!("error {code}: {message}"),
        StreamEvent::Reconnected { attempt } => format!("-- reconnected after {attempt} attempt(s), resumed"),
        StreamEvent::Live { symbol, channel, seq } => {
            format!("{symbol:<14} {} caught up from history at #{seq}; live", channel.as_str())
        }
    }
}

/// Follows `config` and writes one line per event to `out` until `count` updates
/// were shown (or forever).
pub async fn tail(
    config: ClientConfig,
    count: Option<u64>,
    out: &mut (dyn std::io::Write + Send),
) -> Result<(), ClientError> {
    let mut client = StreamClient::connect(config).await?;
    let mut shown: u64 = 0;
    while let Some(event) = client.next().await? {
        if let StreamEvent::Error { code, message } = &event
            && code != "unknown_symbol"
        {
            return Err(ClientError::Server { code: code.clone(), message: message.clone() });
        }
        writeln!(out, "{}", describe(&event))?;
        if matches!(event, StreamEvent::Snapshot(_) | StreamEvent::Update(_)) {
            shown += 1;
            if count.is_some_and(|c| shown >= c) {
                break;
            }
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(format: Format) -> StreamClient {
        StreamClient::new(ClientConfig {
            url: "ws://127.0.0.1:1/v1/ws".into(),
            format,
            symbols: vec!["A".into(), "B".into()],
            channels: vec![Channel::Trades],
            reconnect: true,
            max_backoff: Duration::from_secs(1),
            from_time: Some(7),
            token: None,
        })
    }

    fn json(message: &Message) -> Value {
        serde_json::from_str(message.to_text().unwrap()).unwrap()
    }

    #[test]
    fn each_stream_resumes_with_its_own_epoch() {
        let mut c = client(Format::Json);
        let first = c.subscribe_messages();
        assert_eq!(first.len(), 1);
        assert_eq!(json(&first[0])["since_time"], 7, "a first subscribe starts at from_time");

        let (a, b): (Arc<str>, Arc<str>) = ("A".into(), "B".into());
        c.last_seq.insert((a.clone(), Channel::Trades), 10);
        c.last_seq.insert((b.clone(), Channel::Trades), 20);
        c.epochs.insert((a.clone(), Channel::Trades), 5);
        c.epochs.insert((b.clone(), Channel::Trades), 5);
        let same = c.subscribe_messages();
        assert_eq!(same.len(), 1, "one epoch, one request");
        let request = json(&same[0]);
        assert_eq!((request["epoch"].as_u64(), request["since"]["B"]["trades"].as_u64()), (Some(5), Some(20)));
        assert!(request.get("since_time").is_none(), "a resume is by sequence");

        // Cut during a restart: B already saw the new run.
        c.epochs.insert((b, Channel::Trades), 6);
        let split: Vec<Value> = c.subscribe_messages().iter().map(json).collect();
        assert_eq!(split.len(), 2, "one request per epoch: {split:?}");
        for request in &split {
            let symbol = request["symbols"][0].as_str().unwrap();
            let expected = if symbol == "A" { 5 } else { 6 };
            assert_eq!(request["epoch"], expected, "{request}");
            assert_eq!(request["symbols"].as_array().unwrap().len(), 1);
        }
    }
}
