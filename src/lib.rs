//! Tickwire: a live market-data streaming gateway.
//!
//! ```text
//! venue feeds ─► feed::<venue> ─► model::Event ─► book (latest state, arc-swap) ─► fanout ─► codec ─► transport ─► clients
//! ```
//! Feeds normalise what they receive into [`model::Event`]s; the engine in [`book`]
//! sequences each event per instrument and channel and publishes the latest state
//! lock-free; [`fanout`] encodes each event once and queues it for every subscriber,
//! batching per connection; [`transport`] speaks WebSocket and REST. [`app`] wires
//! the stages together and owns the shutdown order.

pub mod app;
pub mod book;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod fanout;
pub mod feed;
pub mod jwt;
pub mod keys;
pub mod latency;
pub mod loadgen;
pub mod model;
pub mod replay;
pub mod session;
pub mod store;
pub mod transport;
