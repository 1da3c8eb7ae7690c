//! The wire protocol, v1: what clients send, what the server answers, and the
//! stable codes both sides rely on. Encoders are pure functions over byte buffers.

pub mod json;

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
    /// A message larger than the configured maximum.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// No pong or message within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4000;
    /// Authentication failed.
    pub const UNAUTHORIZED: u16 = 4001;
    /// The client fell too far behind under the `close` slow-consumer policy.
    pub const SLOW_CONSUMER: u16 = 4008;
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
    UnknownChannel,
    /// The request would exceed the per-connection subscription limit.
    TooManySymbols,
    /// A frame type the connection's format does not accept (binary on JSON).
    UnsupportedFrame,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::UnknownSymbol => "unknown_symbol",
            ErrorCode::UnknownChannel => "unknown_channel",
            ErrorCode::TooManySymbols => "too_many_symbols",
            ErrorCode::UnsupportedFrame => "unsupported_frame",
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
}

impl RequestError {
    pub fn new(code: ErrorCode, message: impl Into<String>, op: Option<&str>) -> Self {
        Self { code, message: message.into(), op: op.map(str::to_owned) }
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
}

/// The symbols and channels a subscribe or unsubscribe names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub channels: Vec<Channel>,
    pub symbols: Vec<String>,
    /// Last sequence the client saw, per symbol (resume).
    pub since: HashMap<String, u64>,
}

#[derive(Deserialize)]
struct RawSubscription {
    channels: Vec<String>,
    symbols: Vec<String>,
    #[serde(default)]
    since: HashMap<String, u64>,
}

#[derive(Deserialize)]
struct RawPing {
    #[serde(default)]
    id: Option<serde_json::Value>,
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
                            format!("no channel {name:?} (channels: quotes, trades, book)"),
                            Some(&op),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if channels.is_empty() || raw.symbols.is_empty() {
                return Err(RequestError::new(
                    ErrorCode::BadRequest,
                    format!("{op} needs channels and symbols"),
                    Some(&op),
                ));
            }
            let sub = Subscription { channels, symbols: raw.symbols, since: raw.since };
            Ok(if op == "subscribe" { ClientRequest::Subscribe(sub) } else { ClientRequest::Unsubscribe(sub) })
        }
        "ping" => {
            let raw: RawPing = serde_json::from_value(value).map_err(bad)?;
            Ok(ClientRequest::Ping { id: raw.id })
        }
        other => Err(RequestError::new(
            ErrorCode::UnknownOp,
            format!("unknown op {other:?} (ops: subscribe, unsubscribe, ping)"),
            Some(other),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_ignores_unknown_fields() {
        let req = parse_request(
            r#"{"op":"subscribe","channels":["quotes","trades"],"symbols":["BTC-USD"],"since":{"BTC-USD":5},"x":1}"#,
        )
        .unwrap();
        let ClientRequest::Subscribe(sub) = req else { panic!("not a subscribe") };
        assert_eq!(sub.channels, vec![Channel::Quotes, Channel::Trades]);
        assert_eq!(sub.since["BTC-USD"], 5);
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
    }
}
