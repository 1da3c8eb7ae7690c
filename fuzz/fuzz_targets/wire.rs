//! The shared pieces: RFC 3339 timestamps and the raw-number tape cursor.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire::feed::wire::{JsonScratch, parse_rfc3339_nanos};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_rfc3339_nanos(text);
    }
    let mut scratch = JsonScratch::default();
    let _ = scratch.parse(data, true, |root| {
        // Every number's raw text must be a slice of the input that parses or errs cleanly.
        fn walk(v: tickwire::feed::wire::J<'_, '_>, depth: usize) {
            if depth > 64 {
                return;
            }
            if let Some(raw) = v.raw() {
                let _ = tickwire::model::parse_decimal_bytes(raw);
            }
            for item in v.items() {
                walk(item, depth + 1);
            }
            for (_, member) in v.members() {
                walk(member, depth + 1);
            }
        }
        walk(root, 0);
    });
});
