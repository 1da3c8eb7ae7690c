//! JSON encoders for server messages.
//!
//! Updates are written by hand into a byte buffer: this is the hot path (each event
//! is encoded once and the bytes shared by every subscriber), and symbols are
//! validated at instrument creation to need no escaping. A batch frame is
//! [`BATCH_OPEN`], the ready update fragments joined by commas, and [`BATCH_CLOSE`].
//! Rarer messages (errors, pongs) go through `serde_json`.

use crate::book::InstrumentState;
use crate::model::{
    Candle, Channel, Event, Instrument, Nanos, Payload, Price, Quote, Size, Trade, write_decimal, write_decimal_wide,
};

use super::RequestError;

/// Start of a batch frame; fragments follow, separated by `,`.
pub const BATCH_OPEN: &[u8] = br#"{"type":"batch","updates":["#;
/// End of a batch frame.
pub const BATCH_CLOSE: &[u8] = b"]}";

fn push_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

fn push_price(out: &mut Vec<u8>, inst: &Instrument, price: Price) {
    out.push(b'"');
    write_decimal(out, price.0, inst.price_decimals);
    out.push(b'"');
}

fn push_size(out: &mut Vec<u8>, inst: &Instrument, size: Size) {
    out.push(b'"');
    write_decimal(out, size.0, inst.size_decimals);
    out.push(b'"');
}

fn push_clocks(out: &mut Vec<u8>, ts_event: Nanos, ts_recv: Nanos, ts_send: Nanos) {
    out.extend_from_slice(br#","ts_event":"#);
    push_u64(out, ts_event);
    out.extend_from_slice(br#","ts_recv":"#);
    push_u64(out, ts_recv);
    out.extend_from_slice(br#","ts_send":"#);
    push_u64(out, ts_send);
}

fn push_quote_fields(out: &mut Vec<u8>, inst: &Instrument, q: &Quote) {
    out.extend_from_slice(br#""bid":"#);
    push_price(out, inst, q.bid);
    out.extend_from_slice(br#","bid_size":"#);
    push_size(out, inst, q.bid_size);
    out.extend_from_slice(br#","ask":"#);
    push_price(out, inst, q.ask);
    out.extend_from_slice(br#","ask_size":"#);
    push_size(out, inst, q.ask_size);
}

fn push_trade_fields(out: &mut Vec<u8>, inst: &Instrument, t: &Trade) {
    out.extend_from_slice(br#""price":"#);
    push_price(out, inst, t.price);
    out.extend_from_slice(br#","size":"#);
    push_size(out, inst, t.size);
    out.extend_from_slice(br#","side":""#);
    out.extend_from_slice(t.side.as_str().as_bytes());
    out.extend_from_slice(br#"","trade_id":"#);
    push_u64(out, t.trade_id);
}

fn push_levels(out: &mut Vec<u8>, inst: &Instrument, levels: &[(Price, Size)]) {
    out.push(b'[');
    for (i, &(price, size)) in levels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        push_price(out, inst, price);
        out.push(b',');
        push_size(out, inst, size);
        out.push(b']');
    }
    out.push(b']');
}

fn push_book_fields(out: &mut Vec<u8>, inst: &Instrument, bids: &[(Price, Size)], asks: &[(Price, Size)]) {
    out.extend_from_slice(br#""bids":"#);
    push_levels(out, inst, bids);
    out.extend_from_slice(br#","asks":"#);
    push_levels(out, inst, asks);
}

fn push_candle_fields(out: &mut Vec<u8>, inst: &Instrument, c: &Candle) {
    out.extend_from_slice(br#""start":"#);
    push_u64(out, c.start);
    for (name, price) in
        [(&br#","open":"#[..], c.open), (br#","high":"#, c.high), (br#","low":"#, c.low), (br#","close":"#, c.close)]
    {
        out.extend_from_slice(name);
        push_price(out, inst, price);
    }
    out.extend_from_slice(br#","volume":""#);
    write_decimal_wide(out, c.volume, inst.size_decimals);
    out.extend_from_slice(br#"","trades":"#);
    push_u64(out, c.trades);
    out.extend_from_slice(if c.closed { br#","closed":true"# } else { br#","closed":false"# });
}

fn push_head(out: &mut Vec<u8>, inst: &Instrument, channel: Channel, seq: u64) {
    out.extend_from_slice(br#""symbol":""#);
    out.extend_from_slice(inst.symbol.as_bytes());
    out.extend_from_slice(br#"","channel":""#);
    out.extend_from_slice(channel.as_str().as_bytes());
    out.extend_from_slice(br#"","seq":"#);
    push_u64(out, seq);
}

/// Appends one update object (an element of a batch's `updates`).
pub fn encode_update(out: &mut Vec<u8>, inst: &Instrument, event: &Event) {
    out.push(b'{');
    push_head(out, inst, event.channel(), event.seq);
    out.push(b',');
    match &event.payload {
        Payload::Quote(q) => push_quote_fields(out, inst, q),
        Payload::Trade(t) => push_trade_fields(out, inst, t),
        Payload::Book(d) | Payload::BookReset(d) => push_book_fields(out, inst, &d.bids, &d.asks),
        Payload::Candle(c) => push_candle_fields(out, inst, c),
    }
    push_clocks(out, event.ts_event, event.ts_recv, event.ts_send);
    out.push(b'}');
}

/// Appends a `snapshot` message for one channel of one instrument: the state at
/// `seq`, after which deltas continue at `seq + 1`. `data` is `null` before the
/// channel's first event.
pub fn encode_snapshot(out: &mut Vec<u8>, inst: &Instrument, channel: Channel, state: &InstrumentState, epoch: u64) {
    out.extend_from_slice(br#"{"type":"snapshot","instrument_id":"#);
    push_u64(out, u64::from(inst.id.0));
    out.extend_from_slice(br#","price_decimals":"#);
    push_u64(out, u64::from(inst.price_decimals));
    out.extend_from_slice(br#","size_decimals":"#);
    push_u64(out, u64::from(inst.size_decimals));
    out.push(b',');
    let clocks = match channel {
        Channel::Book => {
            let book = &state.book;
            push_head(out, inst, channel, book.seq);
            out.extend_from_slice(br#","data":{"#);
            push_book_fields(out, inst, &book.bids, &book.asks);
            out.push(b'}');
            (book.ts_event, book.ts_recv, book.ts_send)
        }
        _ => {
            push_head(out, inst, channel, state.seqs[channel.index()]);
            out.extend_from_slice(br#","data":"#);
            match channel {
                Channel::Quotes => push_latest(out, state.quote.as_ref(), |out, q| push_quote_fields(out, inst, q)),
                Channel::Trades => {
                    push_latest(out, state.last_trade.as_ref(), |out, t| push_trade_fields(out, inst, t))
                }
                _ => {
                    let candle = channel.candle_interval().and_then(|i| state.candles[i.index()].as_ref());
                    push_latest(out, candle, |out, c| push_candle_fields(out, inst, c))
                }
            }
        }
    };
    push_clocks(out, clocks.0, clocks.1, clocks.2);
    out.extend_from_slice(br#","epoch":"#);
    push_u64(out, epoch);
    out.push(b'}');
}

/// `{…}` of a channel's latest value, or `null` before its first event; returns
/// the value's clocks (zero without one).
fn push_latest<T>(
    out: &mut Vec<u8>,
    latest: Option<&crate::book::Stamped<T>>,
    push_fields: impl FnOnce(&mut Vec<u8>, &T),
) -> (u64, u64, u64) {
    match latest {
        Some(v) => {
            out.push(b'{');
            push_fields(out, &v.value);
            out.push(b'}');
            (v.ts_event, v.ts_recv, v.ts_send)
        }
        None => {
            out.extend_from_slice(b"null");
            (0, 0, 0)
        }
    }
}

/// Why a range of sequences will never reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The client fell behind and the slow-consumer policy dropped updates.
    SlowConsumer,
    /// The range is older than the recent-history ring.
    HistoryExhausted,
    /// The client's sequences come from another run and do not continue here.
    EpochChanged,
}

impl GapReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::SlowConsumer => "slow_consumer",
            GapReason::HistoryExhausted => "history_exhausted",
            GapReason::EpochChanged => "epoch_changed",
        }
    }
}

/// Appends a `gap` message naming the inclusive range `from_seq..=to_seq`.
pub fn encode_gap(out: &mut Vec<u8>, symbol: &str, channel: Channel, from_seq: u64, to_seq: u64, reason: GapReason) {
    out.extend_from_slice(br#"{"type":"gap","symbol":""#);
    out.extend_from_slice(symbol.as_bytes());
    out.extend_from_slice(br#"","channel":""#);
    out.extend_from_slice(channel.as_str().as_bytes());
    out.extend_from_slice(br#"","from_seq":"#);
    push_u64(out, from_seq);
    out.extend_from_slice(br#","to_seq":"#);
    push_u64(out, to_seq);
    out.extend_from_slice(br#","reason":""#);
    out.extend_from_slice(reason.as_str().as_bytes());
    out.extend_from_slice(br#""}"#);
}

/// A `book_invalidated` message: the book the client holds is wrong; a fresh
/// snapshot follows.
pub fn encode_book_invalidated(out: &mut Vec<u8>, symbol: &str, seq: u64) {
    out.extend_from_slice(br#"{"type":"book_invalidated","symbol":""#);
    out.extend_from_slice(symbol.as_bytes());
    out.extend_from_slice(br#"","channel":"book","seq":"#);
    push_u64(out, seq);
    out.push(b'}');
}

/// A `live` message: a resume served from stored history (or from an earlier
/// run) has caught up; live updates of `epoch` follow from `seq + 1`.
pub fn encode_live(symbol: &str, channel: Channel, seq: u64, epoch: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(br#"{"type":"live","symbol":""#);
    out.extend_from_slice(symbol.as_bytes());
    out.extend_from_slice(br#"","channel":""#);
    out.extend_from_slice(channel.as_str().as_bytes());
    out.extend_from_slice(br#"","seq":"#);
    push_u64(&mut out, seq);
    out.extend_from_slice(br#","epoch":"#);
    push_u64(&mut out, epoch);
    out.push(b'}');
    out
}

/// An `error` message.
pub fn encode_error(err: &RequestError) -> Vec<u8> {
    let mut value = serde_json::json!({
        "type": "error",
        "code": err.code.as_str(),
        "message": err.message,
        "op": err.op,
    });
    if let Some((symbol, channel)) = &err.about {
        value["symbol"] = symbol.as_str().into();
        value["channel"] = channel.as_str().into();
    }
    serde_json::to_vec(&value).unwrap_or_default()
}

/// A `subscribed` or `unsubscribed` acknowledgement.
/// A `subscribed` / `unsubscribed` message; `aliases` (the client's name, the
/// symbol it stands for) only where the request used another spelling.
pub fn encode_ack(subscribed: bool, symbols: &[&str], channels: &[Channel], aliases: &[(&str, &str)]) -> Vec<u8> {
    let channels: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
    let kind = if subscribed { "subscribed" } else { "unsubscribed" };
    let mut value = serde_json::json!({ "type": kind, "symbols": symbols, "channels": channels });
    if !aliases.is_empty() {
        value["aliases"] =
            aliases.iter().map(|&(name, symbol)| (name.to_owned(), serde_json::Value::from(symbol))).collect();
    }
    serde_json::to_vec(&value).unwrap_or_default()
}

/// A `pong` answering a `ping`, echoing its `id`.
pub fn encode_pong(id: Option<&serde_json::Value>, ts_send: Nanos) -> Vec<u8> {
    let value = serde_json::json!({ "type": "pong", "id": id, "ts_send": ts_send });
    serde_json::to_vec(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Engine;
    use crate::model::{AssetKind, BookDelta, InstrumentId, InstrumentSpec, Instruments, Side};

    fn setup() -> (Instruments, Engine) {
        let mut t = Instruments::new();
        t.add(InstrumentSpec {
            symbol: "BTC-USD".into(),
            venue: "sim".into(),
            kind: AssetKind::Crypto,
            tick_size: Price::parse("0.01").unwrap(),
            lot_size: Size::parse("0.0001").unwrap(),
        })
        .unwrap();
        let engine = Engine::new(&t, 10);
        (t, engine)
    }

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    /// Every channel's snapshot is valid JSON: `data` is null before the channel's
    /// first event, then holds the latest value with its clocks.
    #[test]
    fn snapshots_before_and_after_the_first_event() {
        let (t, mut engine) = setup();
        let reader = engine.reader();
        let inst = t.get(InstrumentId(0));
        let snapshot = |channel| {
            let mut out = Vec::new();
            encode_snapshot(&mut out, inst, channel, &reader.load(InstrumentId(0)), 7);
            json(&out)
        };
        for channel in [Channel::Quotes, Channel::Trades, Channel::Candles1m] {
            let v = snapshot(channel);
            assert!(v["data"].is_null(), "{channel:?}: {v}");
            assert_eq!((v["seq"].as_u64(), v["ts_event"].as_u64()), (Some(0), Some(0)));
        }
        let trade = Trade {
            price: Price::parse("100").unwrap(),
            size: Size::parse("2").unwrap(),
            side: Side::Buy,
            trade_id: 7,
        };
        let mut event = Event::new(InstrumentId(0), 5_000_000_000, 5_000_000_100, Payload::Trade(trade));
        engine.apply(&mut event).unwrap();
        let mut candles = Vec::new();
        engine.drain_candles(&mut candles);
        let v = snapshot(Channel::Trades);
        assert_eq!((v["seq"].as_u64(), v["ts_event"].as_u64()), (Some(1), Some(5_000_000_000)));
        assert_eq!((v["data"]["price"].as_str(), v["data"]["trade_id"].as_u64()), (Some("100.00"), Some(7)));
        let v = snapshot(Channel::Candles1m);
        assert_eq!((v["data"]["open"].as_str(), v["data"]["trades"].as_u64()), (Some("100.00"), Some(1)), "{v}");
        assert!(snapshot(Channel::Quotes)["data"].is_null(), "no quote yet");
    }

    #[test]
    fn quote_update_matches_protocol() {
        let (t, mut engine) = setup();
        let quote = Quote {
            bid: Price::parse("64123.5").unwrap(),
            bid_size: Size::parse("0.421").unwrap(),
            ask: Price::parse("64124").unwrap(),
            ask_size: Size::parse("1.2").unwrap(),
        };
        let mut event = Event::new(InstrumentId(0), 10, 20, Payload::Quote(quote));
        engine.apply(&mut event).unwrap();
        let mut out = Vec::new();
        encode_update(&mut out, t.get(InstrumentId(0)), &event);
        let v = json(&out);
        assert_eq!(v["symbol"], "BTC-USD");
        assert_eq!(v["channel"], "quotes");
        assert_eq!(v["seq"], 1);
        assert_eq!(v["bid"], "64123.50");
        assert_eq!(v["bid_size"], "0.4210");
        assert_eq!(v["ask"], "64124.00");
        assert_eq!(v["ask_size"], "1.2000");
        assert_eq!(v["ts_event"], 10);
        assert_eq!(v["ts_recv"], 20);
        assert_eq!(v["ts_send"].as_u64().unwrap(), event.ts_send);
    }

    #[test]
    fn batch_of_fragments_is_valid_json_and_snapshots_carry_seq() {
        let (t, mut engine) = setup();
        let inst = t.get(InstrumentId(0));
        let trade = Trade {
            price: Price::parse("1.5").unwrap(),
            size: Size::parse("2").unwrap(),
            side: Side::Sell,
            trade_id: 9,
        };
        let delta = BookDelta { bids: vec![(Price::parse("1").unwrap(), Size::parse("3").unwrap())], asks: vec![] };
        let mut events = [
            Event::new(InstrumentId(0), 1, 1, Payload::Trade(trade)),
            Event::new(InstrumentId(0), 1, 1, Payload::Book(delta)),
        ];
        let mut frame = BATCH_OPEN.to_vec();
        for (i, e) in events.iter_mut().enumerate() {
            engine.apply(e).unwrap();
            if i > 0 {
                frame.push(b',');
            }
            encode_update(&mut frame, inst, e);
        }
        let mut candles = Vec::new();
        engine.drain_candles(&mut candles);
        for e in &candles {
            frame.push(b',');
            encode_update(&mut frame, inst, e);
        }
        frame.extend_from_slice(BATCH_CLOSE);
        let v = json(&frame);
        assert_eq!(v["type"], "batch");
        assert_eq!(v["updates"][0]["side"], "sell");
        assert_eq!(v["updates"][0]["trade_id"], 9);
        assert_eq!(v["updates"][1]["bids"][0][1], "3.0000");
        let candle = &v["updates"][3];
        assert_eq!(candle["channel"], "candles.1m");
        assert_eq!(
            (&candle["open"], &candle["volume"], &candle["trades"]),
            (&v["updates"][0]["price"], &v["updates"][0]["size"], &serde_json::json!(1))
        );
        assert_eq!(candle["closed"], false);

        let state = engine.reader().load(InstrumentId(0));
        for channel in Channel::ALL {
            let mut out = Vec::new();
            encode_snapshot(&mut out, inst, channel, &state, 7);
            let v = json(&out);
            assert_eq!(v["type"], "snapshot");
            assert_eq!(v["channel"], channel.as_str());
            let expected = if channel == Channel::Quotes { 0 } else { 1 };
            assert_eq!(v["seq"], expected);
        }
        let mut out = Vec::new();
        encode_gap(&mut out, "BTC-USD", Channel::Trades, 3, 9, GapReason::SlowConsumer);
        assert_eq!(json(&out)["to_seq"], 9);
    }
}
