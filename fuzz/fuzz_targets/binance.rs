//! Any bytes, as a WebSocket message or as a REST snapshot, never panic the
//! Binance parser, and whatever it emits keeps a valid book.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire::feed::Venue;
use tickwire::feed::binance::Binance;
use tickwire::model::InstrumentId;

fuzz_target!(|data: &[u8]| {
    let mut venue = Binance::new(vec![("BTCUSDT".into(), InstrumentId(0))]);
    let (mut out, mut actions) = (Vec::new(), Vec::new());
    // Put the book in sync first so diffs reach the live path.
    let _ = venue.on_message(br#"{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":1,"b":[],"a":[]}"#, 1, &mut out, &mut actions);
    let _ = venue.on_rest(0, br#"{"lastUpdateId":1,"bids":[["1.0","1"]],"asks":[["2.0","1"]]}"#, 1, &mut out, &mut actions);
    let _ = venue.on_message(data, 2, &mut out, &mut actions);
    let _ = venue.on_rest(0, data, 3, &mut out, &mut actions);
    let book = venue.depth(0).book();
    if let (Some(bid), Some(ask)) = (book.best_bid(), book.best_ask()) {
        assert!(bid.0 < ask.0);
    }
});
