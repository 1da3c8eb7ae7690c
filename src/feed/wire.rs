//! Pure helpers every venue parser shares: a reusable simd-json tape, a small
//! cursor over it, the raw text of JSON numbers, and RFC 3339 timestamps.
//!
//! Each venue decoder owns one [`JsonScratch`]: the input copy, simd-json's
//! buffers and the tape are reused from message to message, so a warmed-up decoder
//! allocates nothing per message. Values are read through [`J`], a cursor over the
//! tape that also knows, for every number, the exact text the venue sent (Kraken's
//! book checksum is computed over that text, and prices must never pass through a
//! float).

use simd_json::{Buffers, Node, StaticNode, Tape};

use crate::model::{DecimalErrorKind, Nanos, parse_decimal_bytes};

/// Why a venue message could not be turned into events. Parse errors are counted
/// and the message skipped; the venue's own sync rules (update ids, sequence
/// numbers, checksums) catch any book change it carried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("missing or mistyped field {0:?}")]
    Field(&'static str),
    #[error("bad number in field {field:?}: {kind:?}")]
    Number { field: &'static str, kind: DecimalErrorKind },
    #[error("bad timestamp in field {0:?}")]
    Timestamp(&'static str),
    #[error("unknown symbol {0:?}")]
    UnknownSymbol(String),
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
}

/// Reused buffers for parsing one message at a time with simd-json.
pub struct JsonScratch {
    input: Vec<u8>,
    buffers: Buffers,
    tape: Option<Tape<'static>>,
    /// For every tape node that is a number, the byte range of its text in the input.
    spans: Vec<(u32, u32)>,
}

impl Default for JsonScratch {
    fn default() -> Self {
        Self { input: Vec::with_capacity(4096), buffers: Buffers::new(4096), tape: None, spans: Vec::new() }
    }
}

impl JsonScratch {
    /// Parses `bytes` and calls `f` with the root value. `raw_numbers` also records
    /// the text of every number (for [`J::raw`]); without it `raw` returns `None`.
    pub fn parse<R>(
        &mut self,
        bytes: &[u8],
        raw_numbers: bool,
        f: impl FnOnce(J<'_, '_>) -> R,
    ) -> Result<R, ParseError> {
        // simd-json reads past the end in wide steps: the copy carries its own
        // padding, which spares simd-json a second, padded copy of its own.
        self.input.clear();
        self.input.extend_from_slice(bytes);
        self.input.resize(bytes.len() + simd_json::INPUT_PADDING, 0);
        let mut tape: Tape<'_> = self.tape.take().unwrap_or_else(Tape::null).reset();
        let result = simd_json::fill_tape_padded(&mut self.input, bytes.len(), &mut self.buffers, &mut tape);
        let out = match result {
            Ok(()) => {
                self.spans.clear();
                if raw_numbers {
                    number_spans(bytes, self.buffers.structural_indexes(), &tape.0, &mut self.spans);
                }
                Ok(f(J { tape: &tape.0, at: 0, text: bytes, spans: &self.spans }))
            }
            Err(error) => Err(ParseError::Json(error.to_string())),
        };
        self.tape = Some(tape.reset());
        out
    }
}

/// Fills `spans` (indexed like `nodes`) with the byte range of every number's text.
/// simd-json's stage 1 marks the first byte of every scalar as structural, in
/// document order, and the tape holds values in document order too: the k-th
/// number on the tape is the k-th structural position that starts a number.
fn number_spans(text: &[u8], structurals: &[u32], nodes: &[Node<'_>], spans: &mut Vec<(u32, u32)>) {
    spans.resize(nodes.len(), (0, 0));
    let mut starts =
        structurals.iter().map(|&i| i as usize).filter(|&i| matches!(text.get(i), Some(b'-' | b'0'..=b'9')));
    for (slot, node) in spans.iter_mut().zip(nodes) {
        if let Node::Static(StaticNode::I64(_) | StaticNode::U64(_) | StaticNode::F64(_)) = node {
            let Some(start) = starts.next() else { return };
            let len = text[start..]
                .iter()
                .take_while(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                .count();
            *slot = (start as u32, (start + len) as u32);
        }
    }
}

/// A value on a parsed tape.
#[derive(Clone, Copy)]
pub struct J<'t, 'i> {
    tape: &'t [Node<'i>],
    at: usize,
    text: &'t [u8],
    spans: &'t [(u32, u32)],
}

fn width(node: &Node<'_>) -> usize {
    match node {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

impl<'t, 'i> J<'t, 'i> {
    fn node(&self) -> Option<&'t Node<'i>> {
        self.tape.get(self.at)
    }

    fn at(&self, at: usize) -> J<'t, 'i> {
        J { at, ..*self }
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<J<'t, 'i>> {
        let &Node::Object { len, .. } = self.node()? else { return None };
        let mut i = self.at + 1;
        for _ in 0..len {
            let Node::String(k) = self.tape.get(i)? else { return None };
            i += 1;
            if *k == key {
                return Some(self.at(i));
            }
            i += width(self.tape.get(i)?);
        }
        None
    }

    /// The members of an object, in document order.
    pub fn members(&self) -> impl Iterator<Item = (&'i str, J<'t, 'i>)> + use<'t, 'i> {
        let len = match self.node() {
            Some(&Node::Object { len, .. }) => len,
            _ => 0,
        };
        let this = *self;
        let mut i = self.at + 1;
        (0..len).map_while(move |_| {
            let Node::String(k) = this.tape.get(i)? else { return None };
            let value = this.at(i + 1);
            i += 1 + width(this.tape.get(i + 1)?);
            Some((*k, value))
        })
    }

    /// The elements of an array (nothing when this is not an array).
    pub fn items(&self) -> impl Iterator<Item = J<'t, 'i>> + use<'t, 'i> {
        let len = match self.node() {
            Some(&Node::Array { len, .. }) => len,
            _ => 0,
        };
        let this = *self;
        let mut i = self.at + 1;
        (0..len).map_while(move |_| {
            let value = this.at(i);
            i += width(this.tape.get(i)?);
            Some(value)
        })
    }

    pub fn is_array(&self) -> bool {
        matches!(self.node(), Some(Node::Array { .. }))
    }

    pub fn str(&self) -> Option<&'i str> {
        match self.node()? {
            Node::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn u64(&self) -> Option<u64> {
        match self.node()? {
            Node::Static(StaticNode::U64(v)) => Some(*v),
            Node::Static(StaticNode::I64(v)) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// A signed integer (OKX's `prevSeqId` is `-1` on a snapshot).
    pub fn i64(&self) -> Option<i64> {
        match self.node()? {
            Node::Static(StaticNode::I64(v)) => Some(*v),
            Node::Static(StaticNode::U64(v)) => i64::try_from(*v).ok(),
            _ => None,
        }
    }

    pub fn bool(&self) -> Option<bool> {
        match self.node()? {
            Node::Static(StaticNode::Bool(v)) => Some(*v),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.node(), Some(Node::Static(StaticNode::Null)))
    }

    /// The exact text of a JSON number (only when parsed with `raw_numbers`).
    pub fn raw(&self) -> Option<&'t [u8]> {
        match self.node()? {
            Node::Static(StaticNode::I64(_) | StaticNode::U64(_) | StaticNode::F64(_)) => {
                let &(start, end) = self.spans.get(self.at)?;
                (end > start).then(|| &self.text[start as usize..end as usize])
            }
            _ => None,
        }
    }

    /// A required member.
    pub fn req(&self, key: &'static str) -> Result<J<'t, 'i>, ParseError> {
        self.get(key).ok_or(ParseError::Field(key))
    }

    /// A required string member.
    pub fn req_str(&self, key: &'static str) -> Result<&'i str, ParseError> {
        self.get(key).and_then(|v| v.str()).ok_or(ParseError::Field(key))
    }

    /// A required unsigned integer member.
    pub fn req_u64(&self, key: &'static str) -> Result<u64, ParseError> {
        self.get(key).and_then(|v| v.u64()).ok_or(ParseError::Field(key))
    }

    /// A required signed integer member.
    pub fn req_i64(&self, key: &'static str) -> Result<i64, ParseError> {
        self.get(key).and_then(|v| v.i64()).ok_or(ParseError::Field(key))
    }

    /// A required member holding a decimal string (`"0.001"`), as nano-units.
    pub fn req_decimal_str(&self, key: &'static str) -> Result<i64, ParseError> {
        decimal(self.req_str(key)?.as_bytes(), key)
    }

    /// A required member holding a JSON number (`0.10000000`), as nano-units, parsed
    /// from its exact text.
    pub fn req_decimal_num(&self, key: &'static str) -> Result<i64, ParseError> {
        decimal(self.req(key)?.raw().ok_or(ParseError::Field(key))?, key)
    }
}

/// Parses an exact decimal, naming the field on error.
pub fn decimal(text: &[u8], field: &'static str) -> Result<i64, ParseError> {
    parse_decimal_bytes(text).map_err(|kind| ParseError::Number { field, kind })
}

/// A decimal that must not be negative (a price or a size).
pub fn non_negative(text: &[u8], field: &'static str) -> Result<i64, ParseError> {
    let value = decimal(text, field)?;
    if value < 0 {
        return Err(ParseError::Number { field, kind: DecimalErrorKind::InvalidChar });
    }
    Ok(value)
}

/// Milliseconds since the epoch (Binance) as nanoseconds.
pub fn millis_to_nanos(ms: u64) -> Nanos {
    ms.saturating_mul(1_000_000)
}

/// Parses an RFC 3339 timestamp (`2024-05-01T12:00:00.199000Z`, up to nine
/// fraction digits, `Z` or a `±HH:MM` offset) into nanoseconds since the epoch.
pub fn parse_rfc3339_nanos(text: &str) -> Option<Nanos> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0u64, |acc, &d| d.is_ascii_digit().then(|| acc * 10 + u64::from(d - b'0')))
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: u64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            if i - start < 9 {
                nanos = nanos * 10 + u64::from(d - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        nanos *= 10u64.pow(9 - digits.min(9) as u32);
    }
    let offset_s: i64 = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let minutes = (num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?) as i64;
            if *sign == b'+' { minutes * 60 } else { -minutes * 60 }
        }
        _ => return None,
    };
    let days = days_from_civil(year as i64, month as i64, day as i64);
    let secs = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64 - offset_s;
    u64::try_from(secs).ok()?.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_rfc3339_nanos("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_nanos("2023-10-06T17:35:55.440295Z"), Some(1_696_613_755_440_295_000));
        assert_eq!(parse_rfc3339_nanos("2024-05-01T12:00:00.199000Z"), Some(1_714_564_800_199_000_000));
        assert_eq!(parse_rfc3339_nanos("2024-05-01T14:00:00.5+02:00"), Some(1_714_564_800_500_000_000));
        assert_eq!(parse_rfc3339_nanos("2024-05-01T12:00:00.1234567891Z"), Some(1_714_564_800_123_456_789));
        for bad in [
            "",
            "2024-05-01",
            "2024-13-01T00:00:00Z",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00",
            "x".repeat(30).as_str(),
        ] {
            assert_eq!(parse_rfc3339_nanos(bad), None, "{bad}");
        }
    }

    #[test]
    fn cursor_reads_members_items_and_raw_numbers() {
        let mut scratch = JsonScratch::default();
        let text = br#"{"a":[{"price":45283.50,"qty":0.10000000},{"price":-1,"qty":1e3}],"s":"x\"y","n":12393906104898154338,"t":true,"z":null}"#;
        let seen = scratch
            .parse(text, true, |root| {
                let levels: Vec<(Vec<u8>, Vec<u8>)> = root
                    .req("a")
                    .unwrap()
                    .items()
                    .map(|l| {
                        (l.get("price").unwrap().raw().unwrap().to_vec(), l.get("qty").unwrap().raw().unwrap().to_vec())
                    })
                    .collect();
                let keys: Vec<String> = root.members().map(|(k, _)| k.to_owned()).collect();
                (
                    levels,
                    keys,
                    root.req_str("s").unwrap().to_owned(),
                    root.req_u64("n").unwrap(),
                    root.get("t").unwrap().bool(),
                )
            })
            .unwrap();
        assert_eq!(seen.0[0], (b"45283.50".to_vec(), b"0.10000000".to_vec()));
        assert_eq!(seen.0[1], (b"-1".to_vec(), b"1e3".to_vec()));
        assert_eq!(seen.1, ["a", "s", "n", "t", "z"]);
        assert_eq!(seen.2, "x\"y");
        assert_eq!(seen.3, 12_393_906_104_898_154_338);
        assert_eq!(seen.4, Some(true));
        assert!(scratch.parse(b"{\"a\":", false, |_| ()).is_err());
        // Reuse after an error.
        assert_eq!(scratch.parse(b"[1,2]", true, |r| r.items().count()).unwrap(), 2);
    }

    #[test]
    fn signed_integers() {
        let mut scratch = JsonScratch::default();
        let seen = scratch
            .parse(br#"{"prev":-1,"seq":123456,"big":12393906104898154338,"s":"7"}"#, false, |root| {
                (root.req_i64("prev"), root.req_i64("seq"), root.req_i64("big"), root.req_i64("s"))
            })
            .unwrap();
        assert_eq!(seen, (Ok(-1), Ok(123_456), Err(ParseError::Field("big")), Err(ParseError::Field("s"))));
    }
}
