//! Any bytes never panic the Coinbase parser, and its book never crosses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire::feed::Venue;
use tickwire::feed::coinbase::Coinbase;
use tickwire::model::InstrumentId;

fuzz_target!(|data: &[u8]| {
    let mut venue = Coinbase::new(vec![("BTC-USD".into(), InstrumentId(0))]);
    let (mut out, mut actions) = (Vec::new(), Vec::new());
    let snapshot = br#"{"channel":"l2_data","timestamp":"2024-05-01T12:00:00.2Z","sequence_num":1,"events":[{"type":"snapshot","product_id":"BTC-USD","updates":[{"side":"bid","event_time":"2024-05-01T12:00:00.199Z","price_level":"1.0","new_quantity":"1"},{"side":"offer","event_time":"2024-05-01T12:00:00.199Z","price_level":"2.0","new_quantity":"1"}]}]}"#;
    let _ = venue.on_message(snapshot, 1, &mut out, &mut actions);
    let _ = venue.on_message(data, 2, &mut out, &mut actions);
    let (book, _) = venue.book(0);
    if let (Some(bid), Some(ask)) = (book.best_bid(), book.best_ask()) {
        assert!(bid.0 < ask.0);
    }
});
