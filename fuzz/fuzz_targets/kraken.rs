//! Any bytes never panic the Kraken parser (raw number text, checksums, book).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire::feed::Venue;
use tickwire::feed::kraken::Kraken;
use tickwire::model::InstrumentId;

const SNAPSHOT: &str = include_str!("../../tests/fixtures/kraken/book_snapshot_checksum_vector.json");

fuzz_target!(|data: &[u8]| {
    let mut venue = Kraken::new(vec![("BTC/USD".into(), InstrumentId(0))], 10);
    let (mut out, mut actions) = (Vec::new(), Vec::new());
    let _ = venue.on_message(SNAPSHOT.as_bytes(), 1, &mut out, &mut actions);
    let _ = venue.on_message(data, 2, &mut out, &mut actions);
    let (book, live) = venue.book(0);
    if live {
        let (bids, asks) = book.depth();
        assert!(bids <= 10 && asks <= 10);
    }
});
