//! Who publishes: one ingest node at a time holds the ingest lease; others
//! stand by and take over when it lapses.
//!
//! The lease is the last message on `{prefix}._cluster._ingest.lease` in the
//! event stream, written with JetStream's compare-and-set
//! (`Nats-Expected-Last-Subject-Sequence`): the holder renews it every
//! [`RENEW`] by publishing after its own last lease message; a standby takes
//! it only when the last one is older than [`EXPIRES`], and only one of
//! several standbys can win the same lapsed lease. A holder whose renewal is
//! refused (another node took the lease while it was cut off) exits at once
//! with code 3, so that it never publishes beside the new holder; its
//! supervisor restarts it as a standby. Anything it still published is
//! deduplicated by `Nats-Msg-Id` (`symbol/channel/seq`): a sequence never
//! names two contents on the bus.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use tokio_util::sync::CancellationToken;

use super::{Bus, BusError};

/// How often the holder renews the lease.
pub const RENEW: Duration = Duration::from_secs(1);
/// A lease not renewed for this long may be taken over.
pub const EXPIRES: Duration = Duration::from_secs(3);

/// The exit code of an ingest node that lost its lease.
pub const LOST_LEASE_EXIT: i32 = 3;

/// The ingest lease, held.
pub struct Lease {
    bus: Bus,
    subject: String,
    node: String,
    /// Stream sequence of this node's last lease message.
    last: u64,
}

fn subject(bus: &Bus) -> String {
    format!("{}._cluster._ingest.lease", bus.config.prefix)
}

/// Publishes `node` as the lease holder, provided the last lease message is
/// still the one at `after` (0: there is none). Ok(Some(seq)) when written.
async fn write(bus: &Bus, subject: &str, node: &str, after: u64) -> Result<Option<u64>, String> {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, after.to_string().as_str());
    let ack = bus
        .js
        .publish_with_headers(subject.to_owned(), headers, node.to_owned().into())
        .await
        .map_err(|e| e.to_string())?
        .await;
    match ack {
        Ok(ack) => Ok(Some(ack.sequence)),
        Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
        Err(error) => Err(error.to_string()),
    }
}

/// Waits until this node holds the ingest lease (standing by while another
/// live node does). `None` when `stop` came first.
pub async fn acquire(bus: &Bus, stop: &CancellationToken) -> Result<Option<Lease>, BusError> {
    let stream = bus.stream().await?;
    let subject = subject(bus);
    let node = format!("{}-{}", hostname(), std::process::id());
    let mut standing_by = false;
    loop {
        let (after, holder_age) = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => {
                let age = (time::OffsetDateTime::now_utc() - message.time).unsigned_abs();
                let holder = String::from_utf8_lossy(&message.payload).into_owned();
                // An empty holder: released by a node that stopped.
                if age < EXPIRES && !holder.is_empty() {
                    if !standing_by {
                        tracing::info!(%holder, "standing by: another ingest node holds the ingest lease");
                        standing_by = true;
                    }
                    (None, age)
                } else {
                    (Some(message.sequence), age)
                }
            }
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => (Some(0), Duration::ZERO),
            Err(error) => {
                tracing::warn!(%error, "cannot read the ingest lease; retrying");
                (None, Duration::ZERO)
            }
        };
        if let Some(after) = after {
            match write(bus, &subject, &node, after).await {
                Ok(Some(last)) => {
                    if after > 0 {
                        metrics::counter!("tickwire_bus_failovers_total").increment(1);
                        tracing::warn!(lapsed_for = ?holder_age, "took over the ingest lease: this node now publishes");
                    } else {
                        tracing::info!("holding the ingest lease");
                    }
                    return Ok(Some(Lease { bus: bus.clone(), subject, node, last }));
                }
                Ok(None) => tracing::info!("another node took the lapsed ingest lease first"),
                Err(error) => tracing::warn!(%error, "cannot write the ingest lease; retrying"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

impl Lease {
    /// Renews the lease every [`RENEW`] until `stop`; exits the process when
    /// another node holds it now (see the module's doc).
    pub async fn keep(mut self, stop: CancellationToken) {
        let mut every = tokio::time::interval(RENEW);
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    // Released: a standby takes over at once, not after EXPIRES.
                    let _ = write(&self.bus, &self.subject, "", self.last).await;
                    return;
                }
                _ = every.tick() => {}
            }
            match write(&self.bus, &self.subject, &self.node, self.last).await {
                Ok(Some(last)) => self.last = last,
                Ok(None) => match self.holder().await {
                    // The stream was recreated (deleted by an operator): the lease is free.
                    Ok(None) => match write(&self.bus, &self.subject, &self.node, 0).await {
                        Ok(Some(last)) => self.last = last,
                        other => tracing::warn!(?other, "cannot take the ingest lease in the new stream; retrying"),
                    },
                    Ok(Some((holder, last))) if holder == self.node => self.last = last,
                    Ok(Some((holder, _))) => {
                        tracing::error!(
                            %holder,
                            "another ingest node took the ingest lease while this one was cut off: exiting so that only one publishes"
                        );
                        std::process::exit(LOST_LEASE_EXIT);
                    }
                    Err(error) => tracing::warn!(%error, "cannot read the ingest lease; retrying"),
                },
                Err(error) => tracing::warn!(%error, "cannot renew the ingest lease; retrying"),
            }
        }
    }
}

impl Lease {
    /// The node named in the last lease message and its sequence, if any.
    async fn holder(&self) -> Result<Option<(String, u64)>, String> {
        let stream = self.bus.stream().await.map_err(|e| e.to_string())?;
        match stream.get_last_raw_message_by_subject(&self.subject).await {
            Ok(message) => Ok(Some((String::from_utf8_lossy(&message.payload).into_owned(), message.sequence))),
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(error.to_string()),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "node".into())
}
