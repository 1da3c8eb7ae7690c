//! Sources of market data. Each turns its input into [`model::Event`]s and sends
//! them in batches to the engine over a bounded channel; when the engine falls
//! behind, the feed waits. Every feed reports its health through [`FeedHealth`].
//!
//! [`model::Event`]: crate::model::Event

pub mod replay;
pub mod simulator;

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::model::{Event, Nanos, now_nanos};

/// Events a feed hands to the engine in one message.
pub type EventBatch = Vec<Event>;

/// Where a feed's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FeedState {
    Connecting = 0,
    Live = 1,
    Reconnecting = 2,
    Stopped = 3,
}

impl FeedState {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedState::Connecting => "connecting",
            FeedState::Live => "live",
            FeedState::Reconnecting => "reconnecting",
            FeedState::Stopped => "stopped",
        }
    }
    fn from_u8(value: u8) -> Self {
        match value {
            1 => FeedState::Live,
            2 => FeedState::Reconnecting,
            3 => FeedState::Stopped,
            _ => FeedState::Connecting,
        }
    }
}

/// Counters a feed updates and `/healthz`, `/v1/feeds` and `/metrics` read.
/// Plain atomics: the feed never waits for a reader.
#[derive(Debug)]
pub struct FeedHealth {
    pub name: String,
    state: AtomicU8,
    messages: AtomicU64,
    last_message_ns: AtomicU64,
    resyncs: AtomicU64,
    parse_errors: AtomicU64,
    reconnects: AtomicU64,
    started_ns: Nanos,
}

/// A point-in-time copy of [`FeedHealth`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedHealthView {
    pub name: String,
    pub state: &'static str,
    pub messages: u64,
    /// Milliseconds since the last message, `None` before the first.
    pub last_message_age_ms: Option<u64>,
    /// Average since the feed started.
    pub messages_per_sec: f64,
    pub resyncs: u64,
    pub parse_errors: u64,
    pub reconnects: u64,
}

impl FeedHealth {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            state: AtomicU8::new(FeedState::Connecting as u8),
            messages: AtomicU64::new(0),
            last_message_ns: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            parse_errors: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            started_ns: now_nanos(),
        }
    }

    pub fn set_state(&self, state: FeedState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn state(&self) -> FeedState {
        FeedState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn record_messages(&self, count: u64, at: Nanos) {
        self.messages.fetch_add(count, Ordering::Relaxed);
        self.last_message_ns.store(at, Ordering::Relaxed);
        metrics::counter!("tickwire_feed_messages_total", "feed" => self.name.clone()).increment(count);
    }

    pub fn record_parse_error(&self) {
        self.parse_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tickwire_feed_parse_errors_total", "feed" => self.name.clone()).increment(1);
    }

    pub fn record_resync(&self) {
        self.resyncs.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tickwire_feed_resyncs_total", "feed" => self.name.clone()).increment(1);
    }

    pub fn record_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tickwire_feed_reconnects_total", "feed" => self.name.clone()).increment(1);
    }

    pub fn view(&self) -> FeedHealthView {
        let now = now_nanos();
        let messages = self.messages.load(Ordering::Relaxed);
        let last = self.last_message_ns.load(Ordering::Relaxed);
        let elapsed_s = (now.saturating_sub(self.started_ns) as f64 / 1e9).max(1e-3);
        FeedHealthView {
            name: self.name.clone(),
            state: self.state().as_str(),
            messages,
            last_message_age_ms: (last != 0).then(|| now.saturating_sub(last) / 1_000_000),
            messages_per_sec: (messages as f64 / elapsed_s * 10.0).round() / 10.0,
            resyncs: self.resyncs.load(Ordering::Relaxed),
            parse_errors: self.parse_errors.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }
}
