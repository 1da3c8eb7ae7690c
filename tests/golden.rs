//! The wire, byte for byte: a scripted sequence of events and protocol messages
//! encoded in JSON and protobuf, as the fan-out frames them, compared with the
//! committed `tests/golden/frames.{json,proto}.txt`. A change to any frame fails
//! here first; a deliberate change of the protocol regenerates them with
//! `UPDATE_GOLDEN=1 cargo test --test golden` and shows up in review.

use std::sync::Arc;

use bytes::Bytes;
use tickwire::book::{BookLevels, InstrumentState, Stamped};
use tickwire::codec::json::GapReason;
use tickwire::codec::{ErrorCode, Format, RequestError};
use tickwire::fanout::{Encoded, Item, build_frames};
use tickwire::feed::simulator::{DEFAULT_UNIVERSE, Simulator};
use tickwire::model::{
    BookDelta, Candle, CandleInterval, Channel, Event, InstrumentId, Instruments, Payload, Price, Quote, Side, Size,
    Trade,
};

const T0: u64 = 1_764_547_200_000_000_000;
const EPOCH: u64 = 1_764_547_199_123_456;

fn px(text: &str) -> Price {
    Price::parse(text).unwrap()
}

fn sz(text: &str) -> Size {
    Size::parse(text).unwrap()
}

fn event(id: u32, seq: u64, offset_us: u64, payload: Payload) -> Event {
    let ts_event = T0 + offset_us * 1_000;
    Event {
        instrument: InstrumentId(id),
        seq,
        ts_event,
        ts_recv: ts_event + 150_000,
        ts_send: ts_event + 210_000,
        payload,
    }
}

/// The scripted updates: every payload kind, two instruments.
fn script() -> Vec<Event> {
    let quote = |bid: &str, ask: &str| {
        Payload::Quote(Quote { bid: px(bid), bid_size: sz("0.42"), ask: px(ask), ask_size: sz("1.2") })
    };
    let trade =
        |price: &str, side, trade_id| Payload::Trade(Trade { price: px(price), size: sz("0.015"), side, trade_id });
    let levels = |bids: &[(&str, &str)], asks: &[(&str, &str)]| BookDelta {
        bids: bids.iter().map(|(p, s)| (px(p), sz(s))).collect(),
        asks: asks.iter().map(|(p, s)| (px(p), sz(s))).collect(),
    };
    let candle = |closed| {
        Payload::Candle(Box::new(Candle {
            interval: CandleInterval::M1,
            start: T0,
            open: px("64120"),
            high: px("64131.5"),
            low: px("64118"),
            close: px("64124"),
            volume: 3_410_000_000,
            trades: 27,
            closed,
        }))
    };
    vec![
        event(0, 1041, 1, quote("64123.5", "64124")),
        event(0, 88, 2, trade("64124", Side::Buy, 9912)),
        event(0, 89, 3, trade("64123.5", Side::Sell, 9913)),
        event(0, 77, 4, Payload::Book(levels(&[("64123.5", "0.5"), ("64120", "0")], &[("64124", "1.25")]))),
        event(0, 78, 5, Payload::BookReset(levels(&[("64100", "2")], &[("64200", "3")]))),
        event(0, 52, 6, candle(false)),
        event(0, 53, 7, candle(true)),
        event(12, 7, 8, quote("189.12", "189.14")),
        event(12, 8, 9, trade("189.13", Side::Buy, 1)),
    ]
}

/// A state as a subscriber's snapshot reads it.
fn state(events: &[Event]) -> InstrumentState {
    let stamp = |e: &Event| (e.seq, e.ts_event, e.ts_recv, e.ts_send);
    let mut state = InstrumentState::default();
    for e in events.iter().filter(|e| e.instrument == InstrumentId(0)) {
        let (seq, ts_event, ts_recv, ts_send) = stamp(e);
        state.seqs[e.channel().index()] = seq;
        match &e.payload {
            Payload::Quote(q) => state.quote = Some(Stamped { value: *q, seq, ts_event, ts_recv, ts_send }),
            Payload::Trade(t) => state.last_trade = Some(Stamped { value: *t, seq, ts_event, ts_recv, ts_send }),
            Payload::Book(d) | Payload::BookReset(d) => {
                state.book = Arc::new(BookLevels {
                    seq,
                    ts_event,
                    ts_recv,
                    ts_send,
                    bids: d.bids.clone(),
                    asks: d.asks.clone(),
                });
            }
            Payload::Candle(c) => {
                let mut candles = *state.candles;
                candles[c.interval.index()] = Some(Stamped { value: **c, seq, ts_event, ts_recv, ts_send });
                state.candles = Arc::new(candles);
            }
        }
    }
    state
}

/// Every frame a client could see for the script, in one format.
fn frames(format: Format) -> Vec<Bytes> {
    let mut instruments = Instruments::new();
    Simulator::new(DEFAULT_UNIVERSE, &mut instruments, 1).unwrap();
    let events = script();
    let mut formats = [false; Format::COUNT];
    formats[format.index()] = true;
    let btc = instruments.get(InstrumentId(0));
    let state = state(&events);
    let mut items = Vec::new();
    for channel in [Channel::Quotes, Channel::Trades, Channel::Book, Channel::Candles1m] {
        let mut out = Vec::new();
        format.encode_snapshot(&mut out, btc, channel, &state, EPOCH);
        items.push(Item::Message(Bytes::from(out)));
    }
    items.extend(events.iter().map(|e| Item::Update(Arc::new(Encoded::new(&instruments, e, formats)))));
    let mut message = |bytes: Vec<u8>| items.push(Item::Message(Bytes::from(bytes)));
    let mut gap = Vec::new();
    format.encode_gap(&mut gap, "BTC-USD", Channel::Trades, 90, 120, GapReason::SlowConsumer);
    message(gap);
    let mut gap = Vec::new();
    format.encode_gap(&mut gap, "BTC-USD", Channel::Trades, 1, 4, GapReason::EpochChanged);
    message(gap);
    let mut invalidated = Vec::new();
    format.encode_book_invalidated(&mut invalidated, "BTC-USD", 79);
    message(invalidated);
    message(format.encode_live("BTC-USD", Channel::Trades, 5120, EPOCH));
    let error = RequestError::new(ErrorCode::UnknownSymbol, "no instrument NO-SUCH", Some("subscribe"));
    message(format.encode_error(&error));
    message(format.encode_pong(Some(&serde_json::json!(7)), T0));
    let mut out = Vec::new();
    build_frames(&items, format, 1 << 20, &mut out);
    out
}

fn rendered(format: Format) -> String {
    let frames = frames(format);
    let lines: Vec<String> = match format {
        Format::Json => frames.iter().map(|f| String::from_utf8(f.to_vec()).unwrap()).collect(),
        Format::Proto => frames.iter().map(|f| f.iter().map(|b| format!("{b:02x}")).collect()).collect(),
    };
    lines.join("\n") + "\n"
}

#[test]
fn frames_are_byte_for_byte_the_committed_ones() {
    for (format, name) in [(Format::Json, "frames.json.txt"), (Format::Proto, "frames.proto.txt")] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
        let now = rendered(format);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &now).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path).expect("golden frames (UPDATE_GOLDEN=1 writes them)");
        for (i, (a, b)) in golden.lines().zip(now.lines()).enumerate() {
            assert_eq!(a, b, "{name}: frame {i} changed");
        }
        assert_eq!(golden.lines().count(), now.lines().count(), "{name}: frame count changed");
    }
}
