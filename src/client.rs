//! A small client of the v1 protocol, used by `tickwire tail`.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::model::now_nanos;

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
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// One human-readable line for a server message, or `None` for messages not shown.
pub fn describe(message: &Value) -> Vec<String> {
    let now = now_nanos();
    let latency = |u: &Value| {
        u["ts_event"].as_u64().map_or(String::new(), |t| format!("  {:.2} ms", now.saturating_sub(t) as f64 / 1e6))
    };
    let line = |u: &Value, channel: &str, seq: &Value, data: &Value| -> String {
        let symbol = u["symbol"].as_str().unwrap_or("?");
        match channel {
            "quotes" => format!(
                "{symbol:<12} quote #{seq:<8} {} x {}  |  {} x {}{}",
                data["bid"].as_str().unwrap_or("-"),
                data["bid_size"].as_str().unwrap_or("-"),
                data["ask"].as_str().unwrap_or("-"),
                data["ask_size"].as_str().unwrap_or("-"),
                latency(u)
            ),
            "trades" => format!(
                "{symbol:<12} trade #{seq:<8} {} {} @ {}  id {}{}",
                data["side"].as_str().unwrap_or("-"),
                data["size"].as_str().unwrap_or("-"),
                data["price"].as_str().unwrap_or("-"),
                data["trade_id"],
                latency(u)
            ),
            "book" => format!(
                "{symbol:<12} book  #{seq:<8} {} bid level(s), {} ask level(s) changed",
                data["bids"].as_array().map_or(0, Vec::len),
                data["asks"].as_array().map_or(0, Vec::len)
            ),
            other => format!("{symbol:<12} {other} #{seq}"),
        }
    };
    match message["type"].as_str() {
        Some("snapshot") => {
            let channel = message["channel"].as_str().unwrap_or("?");
            vec![format!("{}  (snapshot)", line(message, channel, &message["seq"], &message["data"]))]
        }
        Some("batch") => message["updates"]
            .as_array()
            .map(|updates| {
                updates.iter().map(|u| line(u, u["channel"].as_str().unwrap_or("?"), &u["seq"], u)).collect()
            })
            .unwrap_or_default(),
        Some("gap") => vec![format!(
            "{} {} GAP {}..={} ({})",
            message["symbol"].as_str().unwrap_or("?"),
            message["channel"].as_str().unwrap_or("?"),
            message["from_seq"],
            message["to_seq"],
            message["reason"].as_str().unwrap_or("?")
        )],
        _ => Vec::new(),
    }
}

/// Subscribes to `symbols` on `channels` and writes one line per update to `out`
/// until `count` updates were shown or the connection ends.
pub async fn tail(
    url: &str,
    symbols: &[String],
    channels: &[String],
    count: Option<u64>,
    out: &mut (dyn std::io::Write + Send),
) -> Result<(), ClientError> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|source| ClientError::Connect { url: url.to_owned(), source: Box::new(source) })?;
    let request = serde_json::json!({ "op": "subscribe", "channels": channels, "symbols": symbols });
    socket.send(Message::text(request.to_string())).await.map_err(Box::new)?;
    let mut shown: u64 = 0;
    while let Some(message) = socket.next().await {
        let text = match message.map_err(Box::new)? {
            Message::Text(text) => text,
            Message::Close(frame) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                return Err(ClientError::Closed { code, reason });
            }
            _ => continue,
        };
        let Ok(value) = serde_json::from_str::<Value>(&text) else { continue };
        if value["type"] == "error" {
            let code = value["code"].as_str().unwrap_or("?").to_owned();
            let message = value["message"].as_str().unwrap_or("").to_owned();
            if code == "unknown_symbol" {
                writeln!(out, "warning: {message}")?;
                continue;
            }
            return Err(ClientError::Server { code, message });
        }
        for line in describe(&value) {
            writeln!(out, "{line}")?;
            shown += 1;
            if count.is_some_and(|c| shown >= c) {
                let _ = socket.close(None).await;
                return Ok(());
            }
        }
        out.flush()?;
    }
    Ok(())
}
