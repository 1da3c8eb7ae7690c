//! Rows as the database takes them: PostgreSQL `COPY` text and SQLite multi-row
//! `INSERT`s, built from events by pure code. Every value is an integer (or hex
//! bytes), so nothing needs quoting or escaping.

use crate::model::{BookDelta, Channel, Event, Payload, Price, Side, Size};

/// Column lists of the event tables, in the order of [`Channel`].
pub const COLUMNS: [&str; Channel::STORED_COUNT] = [
    "instrument_id, seq, ts_event, ts_recv, ts_send, bid, bid_size, ask, ask_size",
    "instrument_id, seq, ts_event, ts_recv, ts_send, price, size, side, trade_id",
    "instrument_id, seq, ts_event, ts_recv, ts_send, reset, bids, asks",
];

/// Rows in SQLite statements, at most: 9 columns × 3,000 stays under SQLite's
/// 32,766 bound on terms and keeps each statement a few hundred KiB.
const SQLITE_ROWS_PER_STATEMENT: usize = 3_000;

/// `COPY … FROM STDIN` text for each event table.
#[derive(Debug, Default)]
pub struct CopyTables {
    pub data: [Vec<u8>; Channel::STORED_COUNT],
}

fn push_int(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Packs book levels as little-endian (price, size) i64 pairs (what
/// [`push_levels_hex`] writes as hex).
pub fn pack_levels(levels: &[(Price, Size)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(levels.len() * 16);
    for (price, size) in levels {
        out.extend_from_slice(&price.0.to_le_bytes());
        out.extend_from_slice(&size.0.to_le_bytes());
    }
    out
}

/// The inverse of [`pack_levels`]; `None` when the length is not a whole number of levels.
pub fn unpack_levels(bytes: &[u8]) -> Option<Vec<(Price, Size)>> {
    if !bytes.len().is_multiple_of(16) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(16)
            .map(|c| {
                let price = i64::from_le_bytes(c[..8].try_into().unwrap_or_default());
                let size = i64::from_le_bytes(c[8..].try_into().unwrap_or_default());
                (Price(price), Size(size))
            })
            .collect(),
    )
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

fn push_levels_hex(out: &mut Vec<u8>, levels: &[(Price, Size)], prefix: &[u8]) {
    out.extend_from_slice(prefix);
    for (price, size) in levels {
        push_hex(out, &price.0.to_le_bytes());
        push_hex(out, &size.0.to_le_bytes());
    }
}

fn side_code(side: Side) -> i64 {
    match side {
        Side::Buy => 0,
        Side::Sell => 1,
    }
}

/// Appends one row's values separated by `sep`, with bytea/blob values written
/// through `blob` (COPY text: `\\x…`; SQLite: `X'…'`).
fn push_values(out: &mut Vec<u8>, event: &Event, sep: u8, blob: fn(&mut Vec<u8>, &[(Price, Size)])) {
    let head = [
        event.instrument.0 as i64,
        event.seq as i64,
        event.ts_event as i64,
        event.ts_recv as i64,
        event.ts_send as i64,
    ];
    for (i, value) in head.into_iter().enumerate() {
        if i > 0 {
            out.push(sep);
        }
        push_int(out, value);
    }
    let mut ints = |values: &[i64]| {
        for &value in values {
            out.push(sep);
            push_int(out, value);
        }
    };
    match &event.payload {
        Payload::Quote(q) => ints(&[q.bid.0, q.bid_size.0, q.ask.0, q.ask_size.0]),
        Payload::Trade(t) => ints(&[t.price.0, t.size.0, side_code(t.side), t.trade_id as i64]),
        Payload::Book(d) | Payload::BookReset(d) => {
            ints(&[i64::from(matches!(event.payload, Payload::BookReset(_)))]);
            out.push(sep);
            blob(out, &d.bids);
            out.push(sep);
            blob(out, &d.asks);
        }
        // Derived; callers keep stored channels only.
        Payload::Candle(_) => {}
    }
}

/// COPY text rows of every event, split by table.
pub fn copy_text(events: &[Event]) -> CopyTables {
    let mut tables = CopyTables::default();
    for event in events.iter().filter(|e| e.channel().is_stored()) {
        let out = &mut tables.data[event.channel().index()];
        push_values(out, event, b'\t', |out, levels| push_levels_hex(out, levels, b"\\\\x"));
        // PostgreSQL's text format reads booleans as 0/1 too.
        out.push(b'\n');
    }
    tables
}

/// `INSERT OR IGNORE` statements holding every event.
pub fn sqlite_inserts(events: &[Event]) -> Vec<String> {
    let mut statements = Vec::new();
    for channel in Channel::STORED {
        let table = super::EVENT_TABLES[channel.index()];
        let mut rows = events.iter().filter(|e| e.channel() == channel).peekable();
        while rows.peek().is_some() {
            let mut sql = Vec::with_capacity(64 << 10);
            sql.extend_from_slice(
                format!("INSERT OR IGNORE INTO {table} ({}) VALUES ", COLUMNS[channel.index()]).as_bytes(),
            );
            for (i, event) in rows.by_ref().take(SQLITE_ROWS_PER_STATEMENT).enumerate() {
                if i > 0 {
                    sql.push(b',');
                }
                sql.push(b'(');
                push_values(&mut sql, event, b',', |out, levels| {
                    out.extend_from_slice(b"X'");
                    push_levels_hex(out, levels, b"");
                    out.push(b'\'');
                });
                sql.push(b')');
            }
            // Only ASCII digits, hex, punctuation and our own identifiers.
            statements.push(String::from_utf8(sql).unwrap_or_default());
        }
    }
    statements
}

/// Rebuilds a book payload from its stored columns.
pub fn book_payload(reset: bool, bids: &[u8], asks: &[u8]) -> Option<Payload> {
    let delta = BookDelta { bids: unpack_levels(bids)?, asks: unpack_levels(asks)? };
    Some(if reset { Payload::BookReset(delta) } else { Payload::Book(delta) })
}

pub fn side_from_code(code: i64) -> Side {
    if code == 0 { Side::Buy } else { Side::Sell }
}

/// The statement that raises `stream_heads` to the highest sequence of each
/// (instrument, channel) in `events` (store ids), in the writer's transaction;
/// `None` when no event is stored. `postgres` picks `GREATEST` over SQLite's `max`.
pub fn heads_upsert(events: &[Event], postgres: bool) -> Option<String> {
    let mut heads: Vec<(u32, usize, u64)> = Vec::new();
    for event in events.iter().filter(|e| e.channel().is_stored()) {
        let key = (event.instrument.0, event.channel().index());
        match heads.iter_mut().find(|(i, c, _)| (*i, *c) == key) {
            Some(head) => head.2 = head.2.max(event.seq),
            None => heads.push((key.0, key.1, event.seq)),
        }
    }
    if heads.is_empty() {
        return None;
    }
    let values: Vec<String> = heads.iter().map(|(i, c, s)| format!("({i},{c},{s})")).collect();
    let greatest = if postgres { "GREATEST" } else { "max" };
    Some(format!(
        "INSERT INTO stream_heads (instrument_id, channel, last_seq) VALUES {} \
         ON CONFLICT (instrument_id, channel) DO UPDATE SET last_seq = {greatest}(stream_heads.last_seq, excluded.last_seq)",
        values.join(",")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{InstrumentId, Quote, Trade};

    fn events() -> Vec<Event> {
        let mut quote = Event::new(
            InstrumentId(7),
            10,
            11,
            Payload::Quote(Quote { bid: Price(1), bid_size: Size(2), ask: Price(3), ask_size: Size(4) }),
        );
        quote.seq = 1;
        quote.ts_send = 12;
        let mut trade = Event::new(
            InstrumentId(7),
            10,
            11,
            Payload::Trade(Trade { price: Price(-5), size: Size(6), side: Side::Sell, trade_id: 99 }),
        );
        trade.seq = 1;
        let book = Event::new(
            InstrumentId(7),
            10,
            11,
            Payload::BookReset(BookDelta { bids: vec![(Price(1), Size(2))], asks: vec![] }),
        );
        vec![quote, trade, book]
    }

    #[test]
    fn copy_rows_are_tab_separated_integers() {
        let tables = copy_text(&events());
        assert_eq!(String::from_utf8_lossy(&tables.data[0]), "7\t1\t10\t11\t12\t1\t2\t3\t4\n");
        assert_eq!(String::from_utf8_lossy(&tables.data[1]), "7\t1\t10\t11\t0\t-5\t6\t1\t99\n");
        assert_eq!(
            String::from_utf8_lossy(&tables.data[2]),
            "7\t0\t10\t11\t0\t1\t\\\\x01000000000000000200000000000000\t\\\\x\n"
        );
    }

    #[test]
    fn sqlite_statements_hold_every_row() {
        let statements = sqlite_inserts(&events());
        assert_eq!(statements.len(), 3);
        assert!(statements[0].ends_with("VALUES (7,1,10,11,12,1,2,3,4)"), "{}", statements[0]);
        assert!(statements[2].contains("X'01000000000000000200000000000000',X''"), "{}", statements[2]);
        let many: Vec<Event> = (0..7_000).map(|_| events()[0].clone()).collect();
        assert_eq!(sqlite_inserts(&many).len(), 3);
    }

    #[test]
    fn levels_round_trip() {
        let levels = vec![(Price(64_000_000_000_000), Size(1)), (Price(-1), Size(i64::MAX))];
        assert_eq!(unpack_levels(&pack_levels(&levels)), Some(levels));
        assert_eq!(unpack_levels(&[0; 15]), None);
        assert_eq!(book_payload(false, &[], &[]), Some(Payload::Book(BookDelta::default())));
    }
}
