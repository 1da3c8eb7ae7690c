//! PostgreSQL's binary `COPY … TO STDOUT (FORMAT binary)` output, decoded into
//! events. Reading history this way skips sqlx's per-column row decoding, which
//! bounded replay at ~400 k events/s; here a row is a handful of big-endian loads.
//!
//! The format (PostgreSQL docs, "COPY — Binary Format"):
//! ```text
//! header:  "PGCOPY\n\xff\r\n\0" (11) | flags i32 | extension length i32 | extension
//! tuple:   field count i16 (-1 ends the data) | per field: length i32 (-1 = NULL) | bytes
//! ```
//! Integers are big-endian; `BOOLEAN` is one byte; `BYTEA` its raw bytes. The
//! column lists are [`super::rows::COLUMNS`], so each table's tuple shape is known.

use super::rows::{book_payload, side_from_code};
use crate::model::{Channel, Event, InstrumentId, Payload, Price, Quote, Size, Trade};

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Why binary COPY output could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    #[error("not binary COPY output (bad signature)")]
    Signature,
    #[error("output ends inside {0}")]
    Truncated(&'static str),
    #[error("a row has {got} fields; {channel} rows have {want}")]
    FieldCount { channel: &'static str, got: i16, want: usize },
    #[error("field {field} is {got} bytes; expected {want}")]
    FieldSize { field: usize, got: i32, want: usize },
    #[error("book levels are not whole (price, size) pairs")]
    BookLevels,
    #[error("channel {0} is not stored")]
    NotStored(&'static str),
}

/// A cursor over the COPY bytes.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CopyError> {
        let head = self.0.get(..n).ok_or(CopyError::Truncated(what))?;
        self.0 = &self.0[n..];
        Ok(head)
    }
    fn i16(&mut self, what: &'static str) -> Result<i16, CopyError> {
        Ok(i16::from_be_bytes(self.take(2, what)?.try_into().expect("two bytes")))
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, CopyError> {
        Ok(i32::from_be_bytes(self.take(4, what)?.try_into().expect("four bytes")))
    }
}

/// One row's fields, in column order.
struct Fields<'a, 'b> {
    input: &'b mut Input<'a>,
    index: usize,
}

impl<'a> Fields<'a, '_> {
    fn raw(&mut self) -> Result<&'a [u8], CopyError> {
        let len = self.input.i32("a field length")?;
        self.index += 1;
        // Every column is NOT NULL: a negative length is as wrong as a short one.
        let len = usize::try_from(len).map_err(|_| CopyError::FieldSize { field: self.index, got: len, want: 0 })?;
        self.input.take(len, "a field")
    }
    fn sized<const N: usize>(&mut self) -> Result<[u8; N], CopyError> {
        let field = self.index + 1;
        let bytes = self.raw()?;
        bytes.try_into().map_err(|_| CopyError::FieldSize { field, got: bytes.len() as i32, want: N })
    }
    fn i64(&mut self) -> Result<i64, CopyError> {
        Ok(i64::from_be_bytes(self.sized()?))
    }
    fn u64(&mut self) -> Result<u64, CopyError> {
        Ok(self.i64()? as u64)
    }
    fn i32(&mut self) -> Result<i32, CopyError> {
        Ok(i32::from_be_bytes(self.sized()?))
    }
    fn i16(&mut self) -> Result<i16, CopyError> {
        Ok(i16::from_be_bytes(self.sized()?))
    }
    fn bool(&mut self) -> Result<bool, CopyError> {
        Ok(self.sized::<1>()?[0] != 0)
    }
}

/// Fields per row of each stored channel (see `rows::COLUMNS`).
fn field_count(channel: Channel) -> Result<usize, CopyError> {
    match channel {
        Channel::Quotes | Channel::Trades => Ok(9),
        Channel::Book => Ok(8),
        other => Err(CopyError::NotStored(other.as_str())),
    }
}

/// Decodes the whole output of one `COPY (SELECT <COLUMNS of channel> …) TO
/// STDOUT (FORMAT binary)`, appending its rows to `out` in order.
pub fn decode(channel: Channel, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), CopyError> {
    let want = field_count(channel)?;
    let mut input = Input(bytes);
    if input.take(SIGNATURE.len(), "the header").map_err(|_| CopyError::Signature)? != SIGNATURE {
        return Err(CopyError::Signature);
    }
    let _flags = input.i32("the header")?;
    let extension = input.i32("the header")?;
    input.take(usize::try_from(extension).map_err(|_| CopyError::Truncated("the header"))?, "the header")?;
    loop {
        let count = input.i16("a row")?;
        if count == -1 {
            return Ok(()); // the trailer
        }
        if usize::try_from(count).ok() != Some(want) {
            return Err(CopyError::FieldCount { channel: channel.as_str(), got: count, want });
        }
        let mut f = Fields { input: &mut input, index: 0 };
        let instrument = InstrumentId(f.i32()? as u32);
        let (seq, ts_event, ts_recv, ts_send) = (f.u64()?, f.u64()?, f.u64()?, f.u64()?);
        let payload = match channel {
            Channel::Quotes => Payload::Quote(Quote {
                bid: Price(f.i64()?),
                bid_size: Size(f.i64()?),
                ask: Price(f.i64()?),
                ask_size: Size(f.i64()?),
            }),
            Channel::Trades => Payload::Trade(Trade {
                price: Price(f.i64()?),
                size: Size(f.i64()?),
                side: side_from_code(i64::from(f.i16()?)),
                trade_id: f.u64()?,
            }),
            _ => {
                let reset = f.bool()?;
                let (bids, asks) = (f.raw()?, f.raw()?);
                book_payload(reset, bids, asks).ok_or(CopyError::BookLevels)?
            }
        };
        out.push(Event { instrument, seq, ts_event, ts_recv, ts_send, payload });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BookDelta, Side};

    /// Binary COPY output as PostgreSQL writes it, for rows of i32/i64/i16/bool/bytea fields.
    enum F<'a> {
        I16(i16),
        I32(i32),
        I64(i64),
        Bool(bool),
        Bytes(&'a [u8]),
    }

    fn copy_output(rows: &[Vec<F>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        for row in rows {
            out.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for field in row {
                let bytes = match field {
                    F::I16(v) => v.to_be_bytes().to_vec(),
                    F::I32(v) => v.to_be_bytes().to_vec(),
                    F::I64(v) => v.to_be_bytes().to_vec(),
                    F::Bool(v) => vec![u8::from(*v)],
                    F::Bytes(b) => b.to_vec(),
                };
                out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                out.extend_from_slice(&bytes);
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    fn head(id: i32, seq: i64) -> Vec<F<'static>> {
        vec![F::I32(id), F::I64(seq), F::I64(10), F::I64(20), F::I64(30)]
    }

    #[test]
    fn rows_of_every_table_decode() {
        let mut quote = head(3, 1);
        quote.extend([F::I64(100), F::I64(2), F::I64(101), F::I64(-4)]);
        let mut trade = head(3, 2);
        trade.extend([F::I64(100), F::I64(5), F::I16(1), F::I64(77)]);
        let levels = crate::store::rows::pack_levels(&[(Price(99), Size(3))]);
        let mut book = head(4, 3);
        book.extend([F::Bool(true), F::Bytes(&levels), F::Bytes(&[])]);

        let mut out = Vec::new();
        decode(Channel::Quotes, &copy_output(&[quote]), &mut out).unwrap();
        decode(Channel::Trades, &copy_output(&[trade]), &mut out).unwrap();
        decode(Channel::Book, &copy_output(&[book]), &mut out).unwrap();
        let q = Quote { bid: Price(100), bid_size: Size(2), ask: Price(101), ask_size: Size(-4) };
        let t = Trade { price: Price(100), size: Size(5), side: Side::Sell, trade_id: 77 };
        let b = BookDelta { bids: vec![(Price(99), Size(3))], asks: vec![] };
        let event = |id, seq, payload| Event {
            instrument: InstrumentId(id),
            seq,
            ts_event: 10,
            ts_recv: 20,
            ts_send: 30,
            payload,
        };
        assert_eq!(
            out,
            vec![event(3, 1, Payload::Quote(q)), event(3, 2, Payload::Trade(t)), event(4, 3, Payload::BookReset(b)),]
        );
        let mut none = Vec::new();
        decode(Channel::Trades, &copy_output(&[]), &mut none).unwrap();
        assert!(none.is_empty(), "no rows: header and trailer only");
    }

    /// Truncated or garbled output is an error naming what is wrong, never a panic
    /// and never a wrong event.
    #[test]
    fn damaged_output_is_an_error() {
        let mut trade = head(3, 2);
        trade.extend([F::I64(100), F::I64(5), F::I16(0), F::I64(77)]);
        let whole = copy_output(&[trade]);
        for cut in 0..whole.len() {
            let mut out = Vec::new();
            let result = decode(Channel::Trades, &whole[..cut], &mut out);
            assert!(result.is_err(), "cut at {cut} of {}", whole.len());
        }
        assert_eq!(decode(Channel::Trades, b"PGCOPY\nxx", &mut Vec::new()), Err(CopyError::Signature));
        assert!(matches!(
            decode(Channel::Quotes, &whole, &mut Vec::new()),
            Err(CopyError::FieldSize { field: 8, got: 2, want: 8 })
        ));
        let mut short = head(3, 2);
        short.push(F::I64(1));
        assert!(matches!(
            decode(Channel::Trades, &copy_output(&[short]), &mut Vec::new()),
            Err(CopyError::FieldCount { got: 6, want: 9, .. })
        ));
        let mut book = head(4, 3);
        book.extend([F::Bool(false), F::Bytes(&[1, 2, 3]), F::Bytes(&[])]);
        assert_eq!(decode(Channel::Book, &copy_output(&[book]), &mut Vec::new()), Err(CopyError::BookLevels));
        assert!(decode(Channel::Candles1s, &whole, &mut Vec::new()).is_err());
    }
}
