//! Coinbase Advanced Trade: trades, best bid/offer and the L2 book, anonymous.
//!
//! Docs: <https://docs.cdp.coinbase.com/advanced-trade/docs/ws-overview> and
//! <https://docs.cdp.coinbase.com/advanced-trade/docs/ws-channels> (channels
//! `level2`, `market_trades`, `ticker`, `heartbeats`; message `sequence_num`).
//!
//! Why Advanced Trade and not Exchange: Exchange's `level2` needs authentication and
//! its anonymous `level2_batch` has no sequence numbers, so a lost message could
//! only be guessed at; Advanced Trade's `level2` is public and every message on a
//! connection carries `sequence_num`, one more than the last. We subscribe (one
//! message per channel, right after connecting: Coinbase closes connections that
//! do not subscribe within 5 s) `heartbeats` (which also keeps `level2` open on
//! quiet products), `level2`, `market_trades` and `ticker`.
//!
//! Book sync: a `snapshot` event replaces a product's book (`BookReset`), `update`
//! events change levels (`new_quantity` `"0"` removes one). A `sequence_num` that
//! is not the last plus one means a message was lost, and nothing says which
//! product's: every book is withdrawn (`BookReset` with no levels) and `level2` is
//! resubscribed, which brings fresh snapshots. A product whose update would cross
//! its book is withdrawn and resubscribed alone.
//!
//! Trades: `side` is taken as the taker's (aggressor's) side. Coinbase's
//! Advanced Trade documentation lists `market_trades`' `side` as `BUY`/`SELL`
//! without saying whose
//! (<https://docs.cdp.coinbase.com/advanced-trade/docs/ws-channels#market-trades-channel>);
//! the older Exchange API says its trades' `side` is the *maker's*
//! (<https://docs.cdp.coinbase.com/exchange/reference/exchangerestapi_getproducttrades>),
//! and Coinbase's published Advanced Trade schema says "Taker side of the
//! trade". We follow the schema; this is not settled by Coinbase's own prose,
//! and `docs/VENUES.md` says so. Trade ids are numeric strings increasing per
//! product; trades already seen (a `snapshot` after a reconnect, which repeats the
//! last trades) are dropped by id, which also fills short reconnect holes.
//!
//! Instruments: `coinbase:BTC-USD`, tick and lot [`VENUE_INCREMENT`].
//!
//! [`VENUE_INCREMENT`]: super::VENUE_INCREMENT

use rustc_hash::FxHashMap;

use super::l2::LocalBook;
use super::wire::{J, JsonScratch, ParseError, non_negative, parse_rfc3339_nanos};
use super::{Action, Venue};
use crate::model::{BookDelta, Event, InstrumentId, Nanos, Payload, Price, Quote, Side, Size, Trade};

/// Our symbol for a Coinbase product: `BTC-USD` → `coinbase:BTC-USD`.
pub fn instrument_symbol(product: &str) -> String {
    format!("coinbase:{}", product.to_ascii_uppercase())
}

struct Product {
    id: String,
    instrument: InstrumentId,
    book: LocalBook,
    live: bool,
    published: bool,
    last_trade_id: Option<u64>,
}

impl Product {
    fn withdraw(&mut self, ts_recv: Nanos, out: &mut Vec<Event>) {
        self.book.clear();
        self.live = false;
        super::withdraw_book(&mut self.published, self.instrument, ts_recv, out);
    }
}

/// The Coinbase Advanced Trade protocol for a set of products.
pub struct Coinbase {
    json: JsonScratch,
    products: Vec<Product>,
    by_id: FxHashMap<String, usize>,
    /// Last `sequence_num` on the current connection.
    last_sequence: Option<u64>,
    trades: Vec<(usize, Nanos, Trade)>,
}

fn subscribe(kind: &str, channel: &str, products: &[&str]) -> String {
    let ids: Vec<String> = products.iter().map(|p| format!("\"{p}\"")).collect();
    format!(r#"{{"type":"{kind}","product_ids":[{}],"channel":"{channel}"}}"#, ids.join(","))
}

fn ts(value: Option<J<'_, '_>>, field: &'static str) -> Result<Nanos, ParseError> {
    value.and_then(|v| v.str()).and_then(parse_rfc3339_nanos).ok_or(ParseError::Timestamp(field))
}

impl Coinbase {
    /// `products`: Coinbase product id (`BTC-USD`) and the instrument it feeds.
    pub fn new(products: Vec<(String, InstrumentId)>) -> Self {
        let by_id = products.iter().enumerate().map(|(i, (p, _))| (p.clone(), i)).collect();
        let products = products
            .into_iter()
            .map(|(id, instrument)| Product {
                id,
                instrument,
                book: LocalBook::default(),
                live: false,
                published: false,
                last_trade_id: None,
            })
            .collect();
        Self { json: JsonScratch::default(), products, by_id, last_sequence: None, trades: Vec::new() }
    }

    /// The book of the `index`-th product and whether it is in sync (for tests).
    pub fn book(&self, index: usize) -> (&LocalBook, bool) {
        (&self.products[index].book, self.products[index].live)
    }

    fn resubscribe(&self, products: &[&str], actions: &mut Vec<Action>) {
        actions.push(Action::Send(subscribe("unsubscribe", "level2", products)));
        actions.push(Action::Send(subscribe("subscribe", "level2", products)));
    }
}

/// Parses one `l2_data` event's levels.
///
/// ```json
/// {"type":"update","product_id":"BTC-USD","updates":[
///   {"side":"bid","event_time":"2024-05-01T12:00:00.298000Z","price_level":"63211.50","new_quantity":"0"}]}
/// ```
fn l2_levels(event: J<'_, '_>) -> Result<(BookDelta, Option<Nanos>), ParseError> {
    let mut delta = BookDelta::default();
    let mut latest: Option<Nanos> = None;
    let updates = event.req("updates")?;
    if !updates.is_array() {
        return Err(ParseError::Field("updates"));
    }
    for update in updates.items() {
        let price = Price(non_negative(update.req_str("price_level")?.as_bytes(), "price_level")?);
        let size = Size(non_negative(update.req_str("new_quantity")?.as_bytes(), "new_quantity")?);
        match update.req_str("side")? {
            "bid" => delta.bids.push((price, size)),
            "offer" | "ask" => delta.asks.push((price, size)),
            _ => return Err(ParseError::Field("side")),
        }
        if let Some(t) = update.get("event_time").and_then(|t| t.str()).and_then(parse_rfc3339_nanos) {
            latest = Some(latest.map_or(t, |l| l.max(t)));
        }
    }
    Ok((delta, latest))
}

impl Venue for Coinbase {
    fn venue(&self) -> &'static str {
        "coinbase"
    }

    /// The `heartbeats` channel sends one message a second (Advanced Trade
    /// WebSocket channels, "Heartbeats channel"): three missed is a dead connection.
    fn stale_limit(&self) -> std::time::Duration {
        std::time::Duration::from_secs(3)
    }

    fn subscriptions(&mut self) -> Vec<String> {
        let ids: Vec<&str> = self.products.iter().map(|p| p.id.as_str()).collect();
        vec![
            r#"{"type":"subscribe","channel":"heartbeats"}"#.to_owned(),
            subscribe("subscribe", "level2", &ids),
            subscribe("subscribe", "market_trades", &ids),
            subscribe("subscribe", "ticker", &ids),
        ]
    }

    fn on_connection_start(&mut self) {
        self.last_sequence = None;
    }

    fn on_message(
        &mut self,
        text: &[u8],
        ts_recv: Nanos,
        out: &mut Vec<Event>,
        actions: &mut Vec<Action>,
    ) -> Result<(), ParseError> {
        let Self { json, products, by_id, last_sequence, trades } = self;
        let lookup = |event: J<'_, '_>| -> Result<usize, ParseError> {
            let id = event.req_str("product_id")?;
            by_id.get(id).copied().ok_or_else(|| ParseError::UnknownSymbol(id.to_owned()))
        };
        let mut resubscribe: Vec<usize> = Vec::new();
        let mut gap = false;
        json.parse(text, false, |root| -> Result<(), ParseError> {
            if root.get("type").and_then(|t| t.str()) == Some("error") {
                tracing::warn!(message = root.get("message").and_then(|m| m.str()), "coinbase error message");
                return Ok(());
            }
            let channel = root.req_str("channel")?;
            let sequence = root.req_u64("sequence_num")?;
            if let Some(last) = *last_sequence
                && sequence != last + 1
            {
                gap = sequence > last;
            }
            *last_sequence = Some(sequence.max(last_sequence.unwrap_or(0)));
            if gap {
                return Ok(());
            }
            let events = root.req("events")?;
            match channel {
                "l2_data" => {
                    let ts_msg = ts(root.get("timestamp"), "timestamp")?;
                    for event in events.items() {
                        let index = lookup(event)?;
                        let (delta, latest) = l2_levels(event)?;
                        let ts_event = latest.unwrap_or(ts_msg);
                        let product = &mut products[index];
                        match event.req_str("type")? {
                            "snapshot" => {
                                if product.book.reset(&delta).is_err() {
                                    product.withdraw(ts_recv, out);
                                    resubscribe.push(index);
                                    continue;
                                }
                                product.live = true;
                                product.published = true;
                                out.push(Event::new(
                                    product.instrument,
                                    ts_event,
                                    ts_recv,
                                    Payload::BookReset(product.book.to_delta()),
                                ));
                            }
                            "update" if product.live => {
                                if product.book.apply(&delta).is_err() {
                                    product.withdraw(ts_recv, out);
                                    resubscribe.push(index);
                                    continue;
                                }
                                out.push(Event::new(product.instrument, ts_event, ts_recv, Payload::Book(delta)));
                            }
                            "update" => {}
                            _ => return Err(ParseError::Field("type")),
                        }
                    }
                }
                // {"channel":"market_trades","timestamp":"…","sequence_num":3,"events":[{"type":"update","trades":[
                //   {"trade_id":"631112233","product_id":"BTC-USD","price":"63211.51","size":"0.0025","side":"BUY","time":"…"}]}]}
                "market_trades" => {
                    trades.clear();
                    for event in events.items() {
                        for trade in event.req("trades")?.items() {
                            let index = lookup(trade)?;
                            let trade_id: u64 =
                                trade.req_str("trade_id")?.parse().map_err(|_| ParseError::Field("trade_id"))?;
                            let side = match trade.req_str("side")? {
                                "BUY" | "buy" => Side::Buy,
                                "SELL" | "sell" => Side::Sell,
                                _ => return Err(ParseError::Field("side")),
                            };
                            trades.push((
                                index,
                                ts(trade.get("time"), "time")?,
                                Trade {
                                    price: Price(non_negative(trade.req_str("price")?.as_bytes(), "price")?),
                                    size: Size(non_negative(trade.req_str("size")?.as_bytes(), "size")?),
                                    side,
                                    trade_id,
                                },
                            ));
                        }
                    }
                    // Snapshots list the newest first.
                    trades.sort_by_key(|(index, _, trade)| (*index, trade.trade_id));
                    for &(index, ts_event, trade) in trades.iter() {
                        let product = &mut products[index];
                        if product.last_trade_id.is_some_and(|last| trade.trade_id <= last) {
                            continue;
                        }
                        product.last_trade_id = Some(trade.trade_id);
                        out.push(Event::new(product.instrument, ts_event, ts_recv, Payload::Trade(trade)));
                    }
                }
                // {"channel":"ticker","timestamp":"…","sequence_num":4,"events":[{"type":"update","tickers":[
                //   {"type":"ticker","product_id":"BTC-USD","best_bid":"63211.50","best_bid_quantity":"0.41", …}]}]}
                "ticker" | "ticker_batch" => {
                    let ts_event = ts(root.get("timestamp"), "timestamp")?;
                    for event in events.items() {
                        for ticker in event.req("tickers")?.items() {
                            let index = lookup(ticker)?;
                            let quote = Quote {
                                bid: Price(non_negative(ticker.req_str("best_bid")?.as_bytes(), "best_bid")?),
                                bid_size: Size(non_negative(
                                    ticker.req_str("best_bid_quantity")?.as_bytes(),
                                    "best_bid_quantity",
                                )?),
                                ask: Price(non_negative(ticker.req_str("best_ask")?.as_bytes(), "best_ask")?),
                                ask_size: Size(non_negative(
                                    ticker.req_str("best_ask_quantity")?.as_bytes(),
                                    "best_ask_quantity",
                                )?),
                            };
                            out.push(Event::new(products[index].instrument, ts_event, ts_recv, Payload::Quote(quote)));
                        }
                    }
                }
                _ => {}
            }
            Ok(())
        })??;
        if gap {
            let mut all = Vec::with_capacity(self.products.len());
            for product in &mut self.products {
                product.withdraw(ts_recv, out);
                actions.push(Action::Resync { symbol: product.id.clone(), reason: "sequence_num gap" });
                all.push(product.id.clone());
            }
            let ids: Vec<&str> = all.iter().map(String::as_str).collect();
            self.resubscribe(&ids, actions);
        }
        for index in resubscribe {
            let id = self.products[index].id.clone();
            actions.push(Action::Resync { symbol: id.clone(), reason: "book crossed" });
            self.resubscribe(&[&id], actions);
        }
        Ok(())
    }

    fn on_disconnect(&mut self, ts_recv: Nanos, out: &mut Vec<Event>) {
        for product in &mut self.products {
            product.withdraw(ts_recv, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: InstrumentId = InstrumentId(0);

    fn px(text: &str) -> Price {
        Price::parse(text).unwrap()
    }
    fn sz(text: &str) -> Size {
        Size::parse(text).unwrap()
    }

    fn feed(c: &mut Coinbase, text: &str) -> (Vec<Event>, Vec<Action>) {
        let (mut out, mut actions) = (Vec::new(), Vec::new());
        c.on_message(text.as_bytes(), 7, &mut out, &mut actions).unwrap();
        (out, actions)
    }

    const SNAPSHOT: &str = r#"{"channel": "l2_data", "client_id": "", "timestamp": "2024-05-01T12:00:00.200000Z", "sequence_num": 1, "events": [{"type": "snapshot", "product_id": "BTC-USD", "updates": [{"side": "bid", "event_time": "2024-05-01T12:00:00.199000Z", "price_level": "63211.50", "new_quantity": "0.41000000"}, {"side": "bid", "event_time": "2024-05-01T12:00:00.199000Z", "price_level": "63211.00", "new_quantity": "1.20000000"}, {"side": "offer", "event_time": "2024-05-01T12:00:00.199000Z", "price_level": "63211.51", "new_quantity": "0.02150000"}, {"side": "offer", "event_time": "2024-05-01T12:00:00.199000Z", "price_level": "63212.00", "new_quantity": "0.75000000"}]}]}"#;
    const UPDATE: &str = r#"{"channel": "l2_data", "client_id": "", "timestamp": "2024-05-01T12:00:00.300000Z", "sequence_num": 2, "events": [{"type": "update", "product_id": "BTC-USD", "updates": [{"side": "bid", "event_time": "2024-05-01T12:00:00.298000Z", "price_level": "63211.50", "new_quantity": "0"}, {"side": "offer", "event_time": "2024-05-01T12:00:00.298000Z", "price_level": "63211.90", "new_quantity": "0.33000000"}]}]}"#;

    #[test]
    fn level2_snapshot_then_update() {
        let mut c = Coinbase::new(vec![("BTC-USD".into(), ID)]);
        let (out, _) = feed(&mut c, SNAPSHOT);
        let t = parse_rfc3339_nanos("2024-05-01T12:00:00.199000Z").unwrap();
        assert_eq!(
            out,
            [Event::new(
                ID,
                t,
                7,
                Payload::BookReset(BookDelta {
                    bids: vec![(px("63211.50"), sz("0.41")), (px("63211.00"), sz("1.2"))],
                    asks: vec![(px("63211.51"), sz("0.0215")), (px("63212.00"), sz("0.75"))],
                })
            )]
        );
        let (out, _) = feed(&mut c, UPDATE);
        let t = parse_rfc3339_nanos("2024-05-01T12:00:00.298000Z").unwrap();
        assert_eq!(
            out,
            [Event::new(
                ID,
                t,
                7,
                Payload::Book(BookDelta {
                    bids: vec![(px("63211.50"), Size::ZERO)],
                    asks: vec![(px("63211.90"), sz("0.33"))]
                })
            )]
        );
        assert_eq!(c.book(0).0.best_bid(), Some((px("63211.00"), sz("1.2"))));
    }

    #[test]
    fn trades_and_ticker() {
        let mut c = Coinbase::new(vec![("BTC-USD".into(), ID)]);
        let (out, _) = feed(
            &mut c,
            r#"{"channel": "market_trades", "client_id": "", "timestamp": "2024-05-01T12:00:00.400000Z", "sequence_num": 3, "events": [{"type": "update", "trades": [{"trade_id": "631112233", "product_id": "BTC-USD", "price": "63211.51", "size": "0.0025", "side": "BUY", "time": "2024-05-01T12:00:00.398000Z"}]}]}"#,
        );
        assert_eq!(
            out,
            [Event::new(
                ID,
                parse_rfc3339_nanos("2024-05-01T12:00:00.398000Z").unwrap(),
                7,
                Payload::Trade(Trade {
                    price: px("63211.51"),
                    size: sz("0.0025"),
                    side: Side::Buy,
                    trade_id: 631_112_233
                })
            )]
        );
        let (out, _) = feed(
            &mut c,
            r#"{"channel": "ticker", "client_id": "", "timestamp": "2024-05-01T12:00:00.500000Z", "sequence_num": 4, "events": [{"type": "update", "tickers": [{"type": "ticker", "product_id": "BTC-USD", "price": "63211.51", "volume_24_h": "8123.44917025", "low_24_h": "62010.00", "high_24_h": "63500.00", "low_52_w": "25000.00", "high_52_w": "73800.00", "price_percent_chg_24_h": "1.30", "best_bid": "63211.50", "best_bid_quantity": "0.41000000", "best_ask": "63211.51", "best_ask_quantity": "0.02150000"}]}]}"#,
        );
        assert_eq!(
            out,
            [Event::new(
                ID,
                parse_rfc3339_nanos("2024-05-01T12:00:00.5Z").unwrap(),
                7,
                Payload::Quote(Quote {
                    bid: px("63211.50"),
                    bid_size: sz("0.41"),
                    ask: px("63211.51"),
                    ask_size: sz("0.0215")
                })
            )]
        );
        let (out, _) = feed(
            &mut c,
            r#"{"channel": "heartbeats", "timestamp": "2024-05-01T12:00:01.000000Z", "sequence_num": 5, "events": [{"current_time": "2024-05-01 12:00:01.000000000 +0000 UTC m=+12.345678901", "heartbeat_counter": 12}]}"#,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn sequence_gap_withdraws_books_and_resubscribes() {
        let mut c = Coinbase::new(vec![("BTC-USD".into(), ID)]);
        feed(&mut c, SNAPSHOT);
        let (out, actions) = feed(&mut c, &UPDATE.replace("\"sequence_num\": 2", "\"sequence_num\": 4"));
        assert_eq!(out, [Event::new(ID, 7, 7, Payload::BookReset(BookDelta::default()))]);
        assert_eq!(
            actions,
            [
                Action::Resync { symbol: "BTC-USD".into(), reason: "sequence_num gap" },
                Action::Send(r#"{"type":"unsubscribe","product_ids":["BTC-USD"],"channel":"level2"}"#.into()),
                Action::Send(r#"{"type":"subscribe","product_ids":["BTC-USD"],"channel":"level2"}"#.into()),
            ]
        );
        // Updates are dropped until the fresh snapshot.
        assert!(feed(&mut c, &UPDATE.replace("\"sequence_num\": 2", "\"sequence_num\": 5")).0.is_empty());
        let (out, _) = feed(&mut c, &SNAPSHOT.replace("\"sequence_num\": 1", "\"sequence_num\": 6"));
        assert!(matches!(out[0].payload, Payload::BookReset(ref d) if d.bids.len() == 2));
    }
}
