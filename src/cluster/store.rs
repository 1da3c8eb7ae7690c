//! The store role: history written from a durable JetStream consumer.
//!
//! One durable pull consumer (`--bus-store-consumer`, `tickwire-store` by
//! default) serves every store node of the cluster, so each event goes to one
//! writer. A node fetches a batch, writes it to the store in one transaction
//! (idempotently: rows already stored are skipped), and only then acknowledges
//! each of its messages (the last confirmed by the server). A store that is down is retried with backoff and nothing is
//! acknowledged meanwhile; a node killed between the write and the
//! acknowledgement gets the batch again, and the idempotent write stores each
//! event once. Candles and checkpoints are derived data and are not stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, Consumer, DeliverPolicy, pull};
use futures_util::StreamExt;
use rustc_hash::FxHashMap;
use tokio_util::sync::CancellationToken;

use super::Bus;
use super::wire::{self, CHECKPOINT_TOKEN, channel_of_token, token};
use crate::model::{Event, InstrumentId, Instruments, now_nanos};
use crate::store::{Store, StoreIds};

/// What the store role counts beyond its metrics (its warnings are rate-limited by them).
#[derive(Debug, Default)]
struct StoreRoleStats {
    write_errors: AtomicU64,
    skipped: AtomicU64,
}

/// Most messages per fetch (and per store transaction).
const BATCH: usize = 20_000;
/// A batch not acknowledged within this goes to another writer (or again to
/// this one); a writer that is retrying says so before it runs out.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// Writes history from the bus until `stop`. Stopping anywhere is safe: what
/// is not acknowledged comes again, and is stored once.
pub async fn run(bus: Bus, store: Store, ids: Arc<StoreIds>, instruments: Arc<Instruments>, stop: CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = write_from_bus(bus, store, ids, instruments) => {}
    }
}

async fn write_from_bus(bus: Bus, store: Store, ids: Arc<StoreIds>, instruments: Arc<Instruments>) {
    let stats = StoreRoleStats::default();
    let by_token: FxHashMap<(String, String), InstrumentId> =
        instruments.iter().map(|inst| ((token(&inst.venue), token(&inst.symbol)), inst.id)).collect();
    let mut backoff = Duration::from_millis(100);
    loop {
        let consumer = match consumer(&bus).await {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "store role: cannot open the durable consumer; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        loop {
            let batch = consumer.fetch().max_messages(BATCH).expires(Duration::from_millis(500)).messages().await;
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "store role: fetch failed; reopening the consumer");
                    break;
                }
            };
            let mut messages = Vec::new();
            while let Some(message) = batch.next().await {
                match message {
                    Ok(message) => messages.push(message),
                    Err(error) => {
                        tracing::debug!(%error, "store role: fetch ended early");
                        break;
                    }
                }
            }
            let Some(last) = messages.last() else { continue };
            if let Ok(info) = last.info() {
                metrics::gauge!("tickwire_bus_store_consumer_pending").set(info.pending as f64);
            }
            let mut events = Vec::with_capacity(messages.len());
            for message in &messages {
                if message.info().is_ok_and(|info| info.delivered > 1) {
                    metrics::counter!("tickwire_bus_redeliveries_total").increment(1);
                }
                match decode(&message.subject, &message.payload, &by_token) {
                    Decoded::Event(mut event) => {
                        event.instrument = InstrumentId(ids.store_id(event.instrument) as u32);
                        events.push(event);
                    }
                    Decoded::NotStored => {}
                    Decoded::Bad(reason) => {
                        let skipped = stats.skipped.fetch_add(1, Ordering::Relaxed) + 1;
                        metrics::counter!("tickwire_bus_bad_messages_total").increment(1);
                        if skipped.is_power_of_two() {
                            tracing::warn!(subject = %message.subject, reason, skipped, "store role: a bus message it cannot store: skipped");
                        }
                    }
                }
            }
            let newest = events.iter().map(|e| e.ts_recv).max().unwrap_or(0);
            let mut delay = Duration::from_millis(50);
            let mut progress = tokio::time::Instant::now();
            loop {
                match store.write(&events, true).await {
                    Ok(written) => {
                        metrics::counter!("tickwire_store_written_total").increment(written);
                        break;
                    }
                    Err(error) => {
                        let errors = stats.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
                        metrics::counter!("tickwire_store_write_errors_total").increment(1);
                        if errors.is_power_of_two() {
                            tracing::warn!(%error, errors, "store role: write failed; retrying (nothing is acknowledged meanwhile)");
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                        if progress.elapsed() >= ACK_WAIT / 2 {
                            // Still ours: the server waits another ACK_WAIT.
                            progress = tokio::time::Instant::now();
                            for message in &messages {
                                let _ = message.ack_with(async_nats::jetstream::AckKind::Progress).await;
                            }
                        }
                    }
                }
            }
            if newest > 0 {
                metrics::gauge!("tickwire_store_lag_seconds").set(now_nanos().saturating_sub(newest) as f64 / 1e9);
            }
            // Every message is acknowledged on its own ("explicit"): acknowledging
            // only the last would also acknowledge messages delivered to a
            // writer that died before storing them. The last is confirmed.
            for message in &messages[..messages.len() - 1] {
                if let Err(error) = message.ack().await {
                    tracing::debug!(%error, "store role: acknowledgement not sent; the message comes again (stored once)");
                }
            }
            if let Err(error) = last.double_ack().await {
                tracing::warn!(%error, "store role: acknowledgement not confirmed; the batch may come again (stored once)");
            }
        }
    }
}

async fn consumer(bus: &Bus) -> Result<Consumer<pull::Config>, String> {
    let stream = bus.stream().await.map_err(|e| e.to_string())?;
    let name = bus.config.store_consumer.clone();
    stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                description: Some("tickwire store role: history writer".into()),
                filter_subject: bus.config.subjects(),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: (BATCH * 4) as i64,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())
}

enum Decoded {
    Event(Event),
    NotStored,
    Bad(&'static str),
}

fn decode(subject: &str, payload: &[u8], by_token: &FxHashMap<(String, String), InstrumentId>) -> Decoded {
    let mut tokens = subject.split('.');
    let (Some(_prefix), Some(venue), Some(symbol), Some(last), None) =
        (tokens.next(), tokens.next(), tokens.next(), tokens.next(), tokens.next())
    else {
        return Decoded::Bad("subject is not prefix.venue.symbol.channel");
    };
    // Checkpoints, and the cluster's own subjects (`_cluster`: the ingest lease).
    if last == CHECKPOINT_TOKEN || venue.starts_with('_') {
        return Decoded::NotStored;
    }
    let Some(channel) = channel_of_token(last) else { return Decoded::Bad("unknown channel") };
    if !channel.is_stored() {
        return Decoded::NotStored;
    }
    let Some(id) = by_token.get(&(venue.to_string(), symbol.to_string())) else {
        return Decoded::Bad("an instrument this node does not know (start it with the ingest node's --feed)");
    };
    match wire::decode_event(payload, *id) {
        Ok(event) if event.channel() == channel => Decoded::Event(event),
        Ok(_) => Decoded::Bad("event of another channel than its subject"),
        Err(_) => Decoded::Bad("does not decode"),
    }
}
