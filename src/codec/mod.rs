//! The wire protocol, v1: what clients send, what the server answers, and the
//! stable codes both sides rely on. Encoders are pure functions over byte buffers.

pub mod json;
pub mod proto;

use std::collections::HashMap;

use serde::Deserialize;

use crate::model::Channel;

/// WebSocket close codes the server uses; each has one meaning.
pub mod close {
    /// The client asked to close.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Persistent abuse (client messages far over the rate limit).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A text frame that is not valid UTF-8 (RFC 6455, 7.4.1).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A message larger than the configured maximum.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The service restarted its sequences (a cluster's bus began a new epoch):
    /// reconnect and resume; the resume is answered with `epoch_changed`.
    pub const SERVICE_RESTART: u16 = 1012;
    /// No pong or message within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4000;
    /// The client fell too far behind under the `close` slow-consumer policy.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The connection's API key was revoked (`tickwire keys revoke`).
    pub const KEY_REVOKED: u16 = 4003;
    /// The connection's token (JWT) expired and was not refreshed.
    pub const TOKEN_EXPIRED: u16 = 4001;
}

/// Stable error codes of `{"type":"error"}` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The text frame is not JSON.
    InvalidJson,
    /// JSON, but not a valid request (missing or mistyped fields).
    BadRequest,
    /// `op` names no operation.
    UnknownOp,
    UnknownSymbol,
    /// A name that is another spelling of several instruments.
    AmbiguousSymbol,
    /// The connection's key may not use a symbol or channel it asked for.
    NotEntitled,
    /// A credential sent on the connection (`auth`) was refused.
    Unauthorized,
    /// More client messages a second than the server takes.
    RateLimited,
    UnknownChannel,
    /// The request would exceed the per-connection subscription limit.
    TooManySymbols,
    /// A frame type the connection's format does not accept (binary on JSON).
    UnsupportedFrame,
    /// A binary frame that is not a valid protobuf `ClientMessage`.
    InvalidMessage,
    /// A `since` the server cannot honour (ahead of the stream).
    BadSince,
    /// A delivery policy or interval outside what the server allows.
    BadDelivery,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::UnknownSymbol => "unknown_symbol",
            ErrorCode::AmbiguousSymbol => "ambiguous_symbol",
            ErrorCode::NotEntitled => "not_entitled",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::UnknownChannel => "unknown_channel",
            ErrorCode::TooManySymbols => "too_many_symbols",
            ErrorCode::UnsupportedFrame => "unsupported_frame",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::BadSince => "bad_since",
            ErrorCode::BadDelivery => "bad_delivery",
        }
    }
}

/// A request the server could not act on: sent back as an error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct RequestError {
    pub code: ErrorCode,
    pub message: String,
    /// The `op` the error answers, when known.
    pub op: Option<String>,
    /// The symbol and channel the error is about, when it is about one (so that a
    /// client can act on it without reading the message, e.g. on `bad_since`).
    pub about: Option<(String, Channel)>,
}

impl RequestError {
    pub fn new(code: ErrorCode, message: impl Into<String>, op: Option<&str>) -> Self {
        Self { code, message: message.into(), op: op.map(str::to_owned), about: None }
    }

    /// The same error, naming the symbol and channel it is about.
    pub fn about(mut self, symbol: &str, channel: Channel) -> Self {
        self.about = Some((symbol.to_owned(), channel));
        self
    }
}

/// A client's request, validated for shape (symbols are resolved by the session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRequest {
    Subscribe(Subscription),
    Unsubscribe(Subscription),
    /// `id` is echoed back verbatim in the pong.
    Ping {
        id: Option<serde_json::Value>,
    },
    /// A fresh token for a connection opened with a JSON Web Token.
    Auth {
        token: String,
    },
}

/// The encoding a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// JSON text frames.
    Json = 0,
    /// Protobuf binary frames.
    Proto = 1,
}

impl Format {
    pub const COUNT: usize = 2;

    pub fn index(self) -> usize {
        self as usize
    }

    /// The WebSocket subprotocol naming this format.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Format::Json => "tickwire.v1.json",
            Format::Proto => "tickwire.v1.proto",
        }
    }

    pub fn from_subprotocol(name: &str) -> Option<Format> {
        match name.trim() {
            "tickwire.v1.json" => Some(Format::Json),
            "tickwire.v1.proto" => Some(Format::Proto),
            _ => None,
        }
    }

    pub fn from_param(name: &str) -> Option<Format> {
        match name {
            "json" => Some(Format::Json),
            "proto" | "protobuf" => Some(Format::Proto),
            _ => None,
        }
    }

    /// Appends a snapshot message.
    pub fn encode_snapshot(
        self,
        out: &mut Vec<u8>,
        inst: &crate::model::Instrument,
        channel: Channel,
        state: &crate::book::InstrumentState,
        epoch: u64,
    ) {
        match self {
            Format::Json => json::encode_snapshot(out, inst, channel, state, epoch),
            Format::Proto => proto::encode_snapshot(out, inst, channel, state, epoch),
        }
    }

    /// Appends a gap message for the inclusive range `from..=to`.
    pub fn encode_gap(
        self,
        out: &mut Vec<u8>,
        symbol: &str,
        channel: Channel,
        from: u64,
        to: u64,
        reason: json::GapReason,
    ) {
        match self {
            Format::Json => json::encode_gap(out, symbol, channel, from, to, reason),
            Format::Proto => proto::encode_gap(out, symbol, channel, from, to, reason.as_str()),
        }
    }

    pub fn encode_book_invalidated(self, out: &mut Vec<u8>, symbol: &str, seq: u64) {
        match self {
            Format::Json => json::encode_book_invalidated(out, symbol, seq),
            Format::Proto => proto::encode_book_invalidated(out, symbol, seq),
        }
    }

    pub fn encode_live(self, symbol: &str, channel: Channel, seq: u64, epoch: u64) -> Vec<u8> {
        match self {
            Format::Json => json::encode_live(symbol, channel, seq, epoch),
            Format::Proto => proto::encode_live(symbol, channel, seq, epoch),
        }
    }

    pub fn encode_error(self, err: &RequestError) -> Vec<u8> {
        match self {
            Format::Json => json::encode_error(err),
            Format::Proto => proto::encode_error(err),
        }
    }

    /// The answer to an applied subscribe (`subscribed: true`) or unsubscribe:
    /// the symbols and channels it made active or inactive.
    pub fn encode_ack(
        self,
        subscribed: bool,
        symbols: &[&str],
        channels: &[Channel],
        aliases: &[(&str, &str)],
    ) -> Vec<u8> {
        match self {
            Format::Json => json::encode_ack(subscribed, symbols, channels, aliases),
            Format::Proto => proto::encode_ack(subscribed, symbols, channels, aliases),
        }
    }

    /// The connection's token is `state` ("expiring", "refreshed"), valid
    /// until `expires_at`.
    pub fn encode_auth_status(self, state: &str, expires_at: u64) -> Vec<u8> {
        match self {
            Format::Json => serde_json::to_vec(&serde_json::json!({
                "type": "auth",
                "state": state,
                "expires_at": expires_at,
            }))
            .unwrap_or_default(),
            Format::Proto => proto::encode_auth_status(state, expires_at),
        }
    }

    pub fn encode_pong(self, id: Option<&serde_json::Value>, ts_send: crate::model::Nanos) -> Vec<u8> {
        match self {
            Format::Json => json::encode_pong(id, ts_send),
            Format::Proto => proto::encode_pong(id.and_then(serde_json::Value::as_u64).unwrap_or(0), ts_send),
        }
    }

    /// Appends one update as this format's batch fragment.
    pub fn encode_update(self, out: &mut Vec<u8>, inst: &crate::model::Instrument, event: &crate::model::Event) {
        match self {
            Format::Json => json::encode_update(out, inst, event),
            Format::Proto => proto::encode_update(out, inst, event),
        }
    }
}

/// How a subscription treats a client that cannot keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Every update; a client too far behind is closed with 4008.
    Full,
    /// Quotes and books at most every `interval_ms`; trades in full.
    Conflate { interval_ms: u32 },
    /// A lagging client gets a gap and a fresh snapshot instead of a backlog.
    SnapshotOnLag,
}

/// Resume points for one symbol: one for every channel of the request, or one per channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinceSpec {
    pub all: Option<u64>,
    pub per_channel: [Option<u64>; Channel::COUNT],
}

impl SinceSpec {
    pub fn for_channel(&self, channel: Channel) -> Option<u64> {
        self.per_channel[channel.index()].or(self.all)
    }
}

/// The symbols and channels a subscribe or unsubscribe names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub channels: Vec<Channel>,
    pub symbols: Vec<String>,
    /// Last sequence the client saw, per symbol (resume).
    pub since: HashMap<String, SinceSpec>,
    /// `None`: the server's default.
    pub delivery: Option<Delivery>,
    /// The epoch the `since` sequences come from (see [`crate::model::SequenceLine`]).
    pub epoch: Option<u64>,
    /// Start from stored history at this exchange time (ns) instead of a snapshot.
    pub since_time: Option<crate::model::Nanos>,
}

impl Subscription {
    /// Checks what every format must: channels and symbols named.
    pub fn new(
        op: &str,
        channels: Vec<Channel>,
        symbols: Vec<String>,
        since: HashMap<String, SinceSpec>,
        delivery: Option<Delivery>,
    ) -> Result<Self, RequestError> {
        if channels.is_empty() || symbols.is_empty() {
            return Err(RequestError::new(ErrorCode::BadRequest, format!("{op} needs channels and symbols"), Some(op)));
        }
        Ok(Self { channels, symbols, since, delivery, epoch: None, since_time: None })
    }

    /// `since` and `since_time` say where to start in two ways; a request may use one.
    pub fn check_start(&self, op: &str) -> Result<(), RequestError> {
        if self.since_time.is_some() && !self.since.is_empty() {
            return Err(RequestError::new(
                ErrorCode::BadSince,
                "since and since_time cannot be combined: since resumes by sequence, since_time starts at a time",
                Some(op),
            ));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct RawSubscription {
    channels: Vec<String>,
    symbols: Vec<String>,
    #[serde(default)]
    since: HashMap<String, serde_json::Value>,
    #[serde(default)]
    delivery: Option<String>,
    #[serde(default)]
    conflate_ms: Option<u32>,
    #[serde(default)]
    epoch: Option<u64>,
    #[serde(default)]
    since_time: Option<serde_json::Value>,
}

/// `since_time`: integer nanoseconds since the epoch, or an RFC 3339 string.
fn parse_since_time(value: Option<serde_json::Value>, op: &str) -> Result<Option<crate::model::Nanos>, RequestError> {
    let bad = |detail: String| RequestError::new(ErrorCode::BadSince, format!("since_time: {detail}"), Some(op));
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(Some).ok_or_else(|| bad(format!("{n} is not nanoseconds since the epoch")))
        }
        Some(serde_json::Value::String(text)) => crate::model::parse_time(&text).map(Some).map_err(bad),
        Some(other) => Err(bad(format!("{other} is neither nanoseconds nor an RFC 3339 time"))),
    }
}

/// Interval of a `conflate` subscription that names none, in milliseconds.
pub const DEFAULT_CONFLATE_MS: u32 = 250;

fn parse_since(raw: HashMap<String, serde_json::Value>, op: &str) -> Result<HashMap<String, SinceSpec>, RequestError> {
    let bad = |symbol: &str| {
        RequestError::new(
            ErrorCode::BadSince,
            format!("since.{symbol} must be a sequence number or an object of them per channel"),
            Some(op),
        )
    };
    let mut out = HashMap::with_capacity(raw.len());
    for (symbol, value) in raw {
        let mut spec = SinceSpec::default();
        match &value {
            serde_json::Value::Number(n) => spec.all = Some(n.as_u64().ok_or_else(|| bad(&symbol))?),
            serde_json::Value::Object(per_channel) => {
                for (name, seq) in per_channel {
                    let channel = Channel::parse(name).ok_or_else(|| bad(&symbol))?;
                    spec.per_channel[channel.index()] = Some(seq.as_u64().ok_or_else(|| bad(&symbol))?);
                }
            }
            _ => return Err(bad(&symbol)),
        }
        out.insert(symbol, spec);
    }
    Ok(out)
}

pub(crate) fn parse_delivery(
    name: Option<&str>,
    conflate_ms: Option<u32>,
    op: &str,
) -> Result<Option<Delivery>, RequestError> {
    match name {
        None => Ok(None),
        Some("full") => Ok(Some(Delivery::Full)),
        Some("snapshot_on_lag") => Ok(Some(Delivery::SnapshotOnLag)),
        Some("conflate") => Ok(Some(Delivery::Conflate { interval_ms: conflate_ms.unwrap_or(DEFAULT_CONFLATE_MS) })),
        Some(other) => Err(RequestError::new(
            ErrorCode::BadDelivery,
            format!("no delivery {other:?} (full, conflate, snapshot_on_lag)"),
            Some(op),
        )),
    }
}

#[derive(Deserialize)]
struct RawPing {
    #[serde(default)]
    id: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawAuth {
    token: String,
}

/// Parses one JSON text frame. Unknown fields are ignored; every failure names a
/// stable code.
pub fn parse_request(text: &str) -> Result<ClientRequest, RequestError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| RequestError::new(ErrorCode::InvalidJson, format!("not JSON: {e}"), None))?;
    let Some(op) = value.get("op").and_then(|op| op.as_str()).map(str::to_owned) else {
        return Err(RequestError::new(ErrorCode::BadRequest, "a request needs a string field \"op\"", None));
    };
    let bad = |e: serde_json::Error| RequestError::new(ErrorCode::BadRequest, format!("{op}: {e}"), Some(&op));
    match op.as_str() {
        "subscribe" | "unsubscribe" => {
            let raw: RawSubscription = serde_json::from_value(value).map_err(bad)?;
            let channels = raw
                .channels
                .iter()
                .map(|name| {
                    Channel::parse(name).ok_or_else(|| {
                        RequestError::new(
                            ErrorCode::UnknownChannel,
                            format!("no channel {name:?} (channels: {})", Channel::NAMES),
                            Some(&op),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let since = parse_since(raw.since, &op)?;
            let delivery = parse_delivery(raw.delivery.as_deref(), raw.conflate_ms, &op)?;
            let mut sub = Subscription::new(&op, channels, raw.symbols, since, delivery)?;
            sub.epoch = raw.epoch;
            sub.since_time = parse_since_time(raw.since_time, &op)?;
            sub.check_start(&op)?;
            Ok(if op == "subscribe" { ClientRequest::Subscribe(sub) } else { ClientRequest::Unsubscribe(sub) })
        }
        "ping" => {
            let raw: RawPing = serde_json::from_value(value).map_err(bad)?;
            Ok(ClientRequest::Ping { id: raw.id })
        }
        "auth" => {
            let raw: RawAuth = serde_json::from_value(value).map_err(bad)?;
            Ok(ClientRequest::Auth { token: raw.token })
        }
        other => Err(RequestError::new(
            ErrorCode::UnknownOp,
            format!("unknown op {other:?} (ops: subscribe, unsubscribe, ping, auth)"),
            Some(other),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_map_aliases_to_symbols_in_both_formats() {
        use prost::Message as _;
        let aliases = [("BTCUSDT", "binance:BTC-USDT")];
        let json: serde_json::Value =
            serde_json::from_slice(&Format::Json.encode_ack(true, &["binance:BTC-USDT"], &[Channel::Quotes], &aliases))
                .unwrap();
        assert_eq!(json["aliases"], serde_json::json!({"BTCUSDT": "binance:BTC-USDT"}));
        let plain: serde_json::Value =
            serde_json::from_slice(&Format::Json.encode_ack(false, &["AAPL"], &[Channel::Trades], &[])).unwrap();
        assert!(plain.get("aliases").is_none(), "only where an alias was used: {plain}");
        let bytes = Format::Proto.encode_ack(true, &["binance:BTC-USDT"], &[Channel::Quotes], &aliases);
        let message = crate::codec::proto::pb::ServerMessage::decode(bytes.as_slice()).unwrap();
        match message.kind {
            Some(crate::codec::proto::pb::server_message::Kind::Subscribed(ack)) => {
                assert_eq!(ack.symbols, ["binance:BTC-USDT"]);
                assert_eq!(ack.aliases.get("BTCUSDT").map(String::as_str), Some("binance:BTC-USDT"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_requests_and_ignores_unknown_fields() {
        let req = parse_request(
            r#"{"op":"subscribe","channels":["quotes","trades"],"symbols":["BTC-USD"],"since":{"BTC-USD":5},"x":1}"#,
        )
        .unwrap();
        let ClientRequest::Subscribe(sub) = req else { panic!("not a subscribe") };
        assert_eq!(sub.channels, vec![Channel::Quotes, Channel::Trades]);
        assert_eq!(sub.since["BTC-USD"].for_channel(Channel::Trades), Some(5));
        let req = parse_request(
            r#"{"op":"subscribe","channels":["quotes","trades"],"symbols":["A"],"since":{"A":{"trades":9}},"delivery":"conflate","conflate_ms":100}"#,
        )
        .unwrap();
        let ClientRequest::Subscribe(sub) = req else { panic!("not a subscribe") };
        assert_eq!(sub.since["A"].for_channel(Channel::Trades), Some(9));
        assert_eq!(sub.since["A"].for_channel(Channel::Quotes), None);
        assert_eq!(sub.delivery, Some(Delivery::Conflate { interval_ms: 100 }));
        assert_eq!(parse_request(r#"{"op":"ping","id":7}"#).unwrap(), ClientRequest::Ping { id: Some(7.into()) });
    }

    #[test]
    fn every_bad_request_has_its_code() {
        let code = |text: &str| parse_request(text).unwrap_err().code;
        assert_eq!(code("hello"), ErrorCode::InvalidJson);
        assert_eq!(code("{}"), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"op":"dance"}"#), ErrorCode::UnknownOp);
        assert_eq!(code(r#"{"op":"subscribe","channels":["quotes"]}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"op":"subscribe","channels":["news"],"symbols":["A"]}"#), ErrorCode::UnknownChannel);
        assert_eq!(code(r#"{"op":"subscribe","channels":[],"symbols":["A"]}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"op":"subscribe","channels":["quotes"],"symbols":["A"],"since":{"A":"x"}}"#),
            ErrorCode::BadSince
        );
        assert_eq!(
            code(r#"{"op":"subscribe","channels":["quotes"],"symbols":["A"],"delivery":"some"}"#),
            ErrorCode::BadDelivery
        );
    }
}
