//! Any bytes never panic the OKX parser (levels and their text, sequence ids,
//! checksums, the book), and a book it keeps in sync is never crossed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire::feed::Venue;
use tickwire::feed::okx::Okx;
use tickwire::model::InstrumentId;

/// OKX's documented full snapshot, with the checksum its levels hash to.
const SNAPSHOT: &str = include_str!("../../tests/fixtures/okx/book_snapshot.json");

fuzz_target!(|data: &[u8]| {
    let mut venue = Okx::new(vec![("BTC-USDT".into(), InstrumentId(0))]);
    venue.on_connection_start();
    let (mut out, mut actions) = (Vec::new(), Vec::new());
    let snapshot = SNAPSHOT.replace("-855196043", "-2102840145");
    let _ = venue.on_message(snapshot.as_bytes(), 1, &mut out, &mut actions);
    assert!(venue.book(0).1, "the snapshot syncs the book");
    let _ = venue.on_message(data, 2, &mut out, &mut actions);
    let (book, live) = venue.book(0);
    if live {
        let levels = book.to_delta();
        if let (Some(bid), Some(ask)) = (levels.bids.first(), levels.asks.first()) {
            assert!(bid.0 < ask.0, "a synced book is never crossed");
        }
    }
});
