//! Protobuf encoders and the client-message decoder (schema: `proto/tickwire/v1`).
//!
//! An update is encoded once as a complete entry of `Batch.updates` (field key,
//! length, `Update` bytes). A protobuf `repeated` field is the concatenation of its
//! entries, so a batch frame is a `ServerMessage.batch` header followed by the
//! fragments as they are: no re-encoding per connection.

use std::collections::HashMap;

use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use super::{ClientRequest, Delivery, ErrorCode, RequestError, SinceSpec, Subscription};
use crate::book::InstrumentState;
use crate::model::{
    Candle, CandleInterval, Channel, Event, Instrument, MAX_DECIMALS, Nanos, Payload, Price, Side, Size,
};

/// Types generated from the schema.
#[allow(clippy::all, missing_docs)] // generated code
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/tickwire.v1.rs"));
}

/// Field number of `Batch.updates` and of `ServerMessage.batch`.
const BATCH_UPDATES_FIELD: u32 = 1;
const SERVER_BATCH_FIELD: u32 = 2;

const POW10: [i64; 10] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000];

/// A nano-unit value in the instrument's own scale (`decimals` digits).
fn mantissa(nanos: i64, decimals: u8) -> i64 {
    nanos / POW10[usize::from(MAX_DECIMALS - decimals.min(MAX_DECIMALS))]
}

pub fn channel(channel: Channel) -> pb::Channel {
    match channel {
        Channel::Quotes => pb::Channel::Quotes,
        Channel::Trades => pb::Channel::Trades,
        Channel::Book => pb::Channel::Book,
        Channel::Candles1s => pb::Channel::Candles1s,
        Channel::Candles1m => pb::Channel::Candles1m,
        Channel::Candles5m => pb::Channel::Candles5m,
        Channel::Candles1h => pb::Channel::Candles1h,
        Channel::Candles1d => pb::Channel::Candles1d,
    }
}

fn candle_interval(interval: CandleInterval) -> pb::CandleInterval {
    match interval {
        CandleInterval::S1 => pb::CandleInterval::CandleInterval1s,
        CandleInterval::M1 => pb::CandleInterval::CandleInterval1m,
        CandleInterval::M5 => pb::CandleInterval::CandleInterval5m,
        CandleInterval::H1 => pb::CandleInterval::CandleInterval1h,
        CandleInterval::D1 => pb::CandleInterval::CandleInterval1d,
    }
}

fn candle(inst: &Instrument, c: &Candle) -> pb::Candle {
    let price = |p: Price| mantissa(p.0, inst.price_decimals);
    let scale = POW10[usize::from(MAX_DECIMALS - inst.size_decimals.min(MAX_DECIMALS))];
    pb::Candle {
        interval: candle_interval(c.interval) as i32,
        start: c.start,
        open: price(c.open),
        high: price(c.high),
        low: price(c.low),
        close: price(c.close),
        volume: i64::try_from(c.volume / i128::from(scale)).unwrap_or(if c.volume < 0 { i64::MIN } else { i64::MAX }),
        trades: c.trades,
        closed: c.closed,
    }
}

fn quote(inst: &Instrument, q: &crate::model::Quote) -> pb::Quote {
    pb::Quote {
        bid: mantissa(q.bid.0, inst.price_decimals),
        bid_size: mantissa(q.bid_size.0, inst.size_decimals),
        ask: mantissa(q.ask.0, inst.price_decimals),
        ask_size: mantissa(q.ask_size.0, inst.size_decimals),
    }
}

fn trade(inst: &Instrument, t: &crate::model::Trade) -> pb::Trade {
    pb::Trade {
        price: mantissa(t.price.0, inst.price_decimals),
        size: mantissa(t.size.0, inst.size_decimals),
        side: match t.side {
            Side::Buy => pb::Side::Buy,
            Side::Sell => pb::Side::Sell,
        } as i32,
        trade_id: t.trade_id,
    }
}

fn book(inst: &Instrument, bids: &[(Price, Size)], asks: &[(Price, Size)]) -> pb::Book {
    let levels = |side: &[(Price, Size)]| {
        side.iter()
            .map(|(p, s)| pb::Level {
                price: mantissa(p.0, inst.price_decimals),
                size: mantissa(s.0, inst.size_decimals),
            })
            .collect()
    };
    pb::Book { bids: levels(bids), asks: levels(asks) }
}

/// The `Update` message for a sequenced event.
pub fn update(inst: &Instrument, event: &Event) -> pb::Update {
    use pb::update::Data;
    pb::Update {
        instrument_id: inst.id.0,
        seq: event.seq,
        ts_event: event.ts_event,
        recv_delta_ns: event.ts_recv.saturating_sub(event.ts_event),
        send_delta_ns: event.ts_send.saturating_sub(event.ts_recv),
        data: Some(match &event.payload {
            Payload::Quote(q) => Data::Quote(quote(inst, q)),
            Payload::Trade(t) => Data::Trade(trade(inst, t)),
            Payload::Book(d) | Payload::BookReset(d) => Data::Book(book(inst, &d.bids, &d.asks)),
            Payload::Candle(c) => Data::Candle(candle(inst, c)),
        }),
    }
}

/// Appends one entry of `Batch.updates`: key, length, and the `Update`.
pub fn encode_update(out: &mut Vec<u8>, inst: &Instrument, event: &Event) {
    let update = update(inst, event);
    encode_key(BATCH_UPDATES_FIELD, WireType::LengthDelimited, out);
    encode_varint(update.encoded_len() as u64, out);
    update.encode_raw(out);
}

/// The header that makes `body_len` bytes of concatenated fragments a complete
/// `ServerMessage { batch: Batch { updates } }`.
pub fn batch_header(out: &mut Vec<u8>, body_len: usize) {
    encode_key(SERVER_BATCH_FIELD, WireType::LengthDelimited, out);
    encode_varint(body_len as u64, out);
}

/// Bytes the batch header takes for a body of `body_len` bytes.
pub fn batch_header_len(body_len: usize) -> usize {
    1 + encoded_len_varint(body_len as u64)
}

fn server(kind: pb::server_message::Kind) -> Vec<u8> {
    pb::ServerMessage { kind: Some(kind) }.encode_to_vec()
}

/// A `Snapshot` of one channel of one instrument.
pub fn encode_snapshot(out: &mut Vec<u8>, inst: &Instrument, ch: Channel, state: &InstrumentState, epoch: u64) {
    use pb::snapshot::Data;
    let mut snapshot = pb::Snapshot {
        epoch,
        symbol: inst.symbol.to_string(),
        instrument_id: inst.id.0,
        channel: channel(ch) as i32,
        price_decimals: u32::from(inst.price_decimals),
        size_decimals: u32::from(inst.size_decimals),
        ..pb::Snapshot::default()
    };
    let clocks = match ch {
        Channel::Quotes => state.quote.map(|q| {
            snapshot.data = Some(Data::Quote(quote(inst, &q.value)));
            (q.ts_event, q.ts_recv, q.ts_send)
        }),
        Channel::Trades => state.last_trade.map(|t| {
            snapshot.data = Some(Data::Trade(trade(inst, &t.value)));
            (t.ts_event, t.ts_recv, t.ts_send)
        }),
        Channel::Book => {
            snapshot.data = Some(Data::Book(book(inst, &state.book.bids, &state.book.asks)));
            Some((state.book.ts_event, state.book.ts_recv, state.book.ts_send))
        }
        Channel::Candles1s | Channel::Candles1m | Channel::Candles5m | Channel::Candles1h | Channel::Candles1d => {
            ch.candle_interval().and_then(|i| state.candles[i.index()]).map(|c| {
                snapshot.data = Some(Data::Candle(candle(inst, &c.value)));
                (c.ts_event, c.ts_recv, c.ts_send)
            })
        }
    };
    snapshot.seq = match ch {
        Channel::Book => state.book.seq,
        other => state.seqs[other.index()],
    };
    (snapshot.ts_event, snapshot.ts_recv, snapshot.ts_send) = clocks.unwrap_or_default();
    out.extend_from_slice(&server(pb::server_message::Kind::Snapshot(snapshot)));
}

pub fn encode_gap(out: &mut Vec<u8>, symbol: &str, ch: Channel, from_seq: u64, to_seq: u64, reason: &str) {
    let gap =
        pb::Gap { symbol: symbol.to_owned(), channel: channel(ch) as i32, from_seq, to_seq, reason: reason.into() };
    out.extend_from_slice(&server(pb::server_message::Kind::Gap(gap)));
}

pub fn encode_book_invalidated(out: &mut Vec<u8>, symbol: &str, seq: u64) {
    let message = pb::BookInvalidated { symbol: symbol.to_owned(), seq };
    out.extend_from_slice(&server(pb::server_message::Kind::BookInvalidated(message)));
}

pub fn encode_error(err: &RequestError) -> Vec<u8> {
    server(pb::server_message::Kind::Error(pb::Error {
        code: err.code.as_str().to_owned(),
        message: err.message.clone(),
        op: err.op.clone().unwrap_or_default(),
        symbol: err.about.as_ref().map(|(symbol, _)| symbol.clone()).unwrap_or_default(),
        channel: err.about.as_ref().map_or(pb::Channel::Unspecified, |&(_, c)| channel(c)) as i32,
    }))
}

pub fn encode_ack(subscribed: bool, symbols: &[&str], channels: &[Channel], aliases: &[(&str, &str)]) -> Vec<u8> {
    let symbols: Vec<String> = symbols.iter().map(|s| (*s).to_owned()).collect();
    let channels: Vec<i32> = channels.iter().map(|&c| channel(c) as i32).collect();
    let aliases = aliases.iter().map(|&(name, symbol)| (name.to_owned(), symbol.to_owned())).collect();
    server(if subscribed {
        pb::server_message::Kind::Subscribed(pb::Subscribed { symbols, channels, aliases })
    } else {
        pb::server_message::Kind::Unsubscribed(pb::Unsubscribed { symbols, channels, aliases })
    })
}

pub fn encode_auth_status(state: &str, expires_at: u64) -> Vec<u8> {
    server(pb::server_message::Kind::Auth(pb::AuthStatus { state: state.to_owned(), expires_at }))
}

pub fn encode_pong(id: u64, ts_send: Nanos) -> Vec<u8> {
    server(pb::server_message::Kind::Pong(pb::Pong { id, ts_send }))
}

pub fn encode_live(symbol: &str, ch: Channel, seq: u64, epoch: u64) -> Vec<u8> {
    server(pb::server_message::Kind::Live(pb::Live {
        symbol: symbol.to_owned(),
        channel: channel(ch) as i32,
        seq,
        epoch,
    }))
}

/// The channel a protobuf enum value names.
pub fn channel_of(value: pb::Channel) -> Option<Channel> {
    Some(match value {
        pb::Channel::Unspecified => return None,
        pb::Channel::Quotes => Channel::Quotes,
        pb::Channel::Trades => Channel::Trades,
        pb::Channel::Book => Channel::Book,
        pb::Channel::Candles1s => Channel::Candles1s,
        pb::Channel::Candles1m => Channel::Candles1m,
        pb::Channel::Candles5m => Channel::Candles5m,
        pb::Channel::Candles1h => Channel::Candles1h,
        pb::Channel::Candles1d => Channel::Candles1d,
    })
}

fn channel_from(value: i32, op: &str) -> Result<Channel, RequestError> {
    match pb::Channel::try_from(value).ok().and_then(channel_of) {
        Some(channel) => Ok(channel),
        None => Err(RequestError::new(ErrorCode::UnknownChannel, format!("no channel number {value}"), Some(op))),
    }
}

/// Decodes one binary frame of a protobuf connection.
pub fn decode_request(bytes: &[u8]) -> Result<ClientRequest, RequestError> {
    use pb::client_message::Op;
    let message = pb::ClientMessage::decode(bytes)
        .map_err(|e| RequestError::new(ErrorCode::InvalidMessage, format!("not a ClientMessage: {e}"), None))?;
    match message.op {
        None => Err(RequestError::new(ErrorCode::UnknownOp, "ClientMessage without an op", None)),
        Some(Op::Ping(ping)) => Ok(ClientRequest::Ping { id: Some(ping.id.into()) }),
        Some(Op::Auth(auth)) => Ok(ClientRequest::Auth { token: auth.token }),
        Some(Op::Replay(_)) => Err(RequestError::new(
            ErrorCode::UnknownOp,
            "replay controls are only accepted on /v1/replay",
            Some("replay"),
        )),
        Some(Op::Unsubscribe(u)) => {
            let channels = u.channels.iter().map(|&c| channel_from(c, "unsubscribe")).collect::<Result<_, _>>()?;
            Subscription::new("unsubscribe", channels, u.symbols, HashMap::new(), None).map(ClientRequest::Unsubscribe)
        }
        Some(Op::Subscribe(s)) => {
            let channels: Vec<Channel> =
                s.channels.iter().map(|&c| channel_from(c, "subscribe")).collect::<Result<_, _>>()?;
            let mut since: HashMap<String, SinceSpec> = HashMap::new();
            for entry in s.since {
                let spec = since.entry(entry.symbol).or_default();
                match pb::Channel::try_from(entry.channel) {
                    Ok(pb::Channel::Unspecified) => spec.all = Some(entry.seq),
                    _ => {
                        let ch = channel_from(entry.channel, "subscribe")?;
                        spec.per_channel[ch.index()] = Some(entry.seq);
                    }
                }
            }
            let delivery = match pb::Delivery::try_from(s.delivery) {
                Ok(pb::Delivery::Unspecified) => None,
                Ok(pb::Delivery::Full) => Some(Delivery::Full),
                Ok(pb::Delivery::SnapshotOnLag) => Some(Delivery::SnapshotOnLag),
                Ok(pb::Delivery::Conflate) => Some(Delivery::Conflate { interval_ms: s.conflate_ms }),
                Err(_) => {
                    return Err(RequestError::new(
                        ErrorCode::BadRequest,
                        format!("no delivery number {}", s.delivery),
                        Some("subscribe"),
                    ));
                }
            };
            let mut sub = Subscription::new("subscribe", channels, s.symbols, since, delivery)?;
            sub.epoch = (s.epoch != 0).then_some(s.epoch);
            sub.since_time = (s.since_time != 0).then_some(s.since_time);
            sub.check_start("subscribe")?;
            Ok(ClientRequest::Subscribe(sub))
        }
    }
}
