//! Quotas that keep one client from crowding out the others: connections per
//! client address and per JWT subject, concurrent replays and history rows per
//! key. Each is a setting (`serve --help`), each refusal is a 429 with a JSON
//! reason, and each is counted in `tickwire_quota_refused_total{quota}`.
//!
//! Every check happens when a connection or request starts, never per update:
//! the fan-out path does not know quotas exist.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use rustc_hash::FxHashMap;

use super::ApiError;
use super::access::Grant;

/// The address a request came from (a request extension set where the
/// connection is accepted).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

/// Who is calling: the key or token it was let in with, if any, and its address.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub grant: Option<Grant>,
    pub ip: Option<IpAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller { grant: parts.extensions.get::<Grant>().cloned(), ip: parts.extensions.get::<Peer>().map(|p| p.0) })
    }
}

impl Caller {
    pub fn grant(&self) -> Option<&Grant> {
        self.grant.as_ref()
    }

    /// Whom per-key quotas count against: the API key, the JWT subject, or
    /// (without either: an open API or a static token) the client address.
    pub fn principal(&self) -> String {
        match (&self.grant, self.ip) {
            (Some(Grant(key)), _) if key.key_id == crate::keys::JWT_KEY_ID => format!("sub:{}", key.name),
            (Some(Grant(key)), _) => format!("key:{}", key.key_id),
            (None, Some(ip)) => format!("ip:{ip}"),
            (None, None) => "anonymous".into(),
        }
    }
}

/// What a quota limits (the `quota` label of `tickwire_quota_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    IpConnections,
    SubjectConnections,
    Replays,
    HistoryRows,
}

impl Quota {
    pub fn name(self) -> &'static str {
        match self {
            Quota::IpConnections => "ip_connections",
            Quota::SubjectConnections => "subject_connections",
            Quota::Replays => "replays",
            Quota::HistoryRows => "history_rows",
        }
    }

    /// Counts a refusal under this quota.
    pub fn refused(self) {
        metrics::counter!("tickwire_quota_refused_total", "quota" => self.name()).increment(1);
    }
}

/// The quota settings (`serve`): 0 switches one off.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuotaLimits {
    pub connections_per_ip: u32,
    pub replays_per_key: u32,
    pub history_rows_per_min: u64,
}

/// Live counts against the quotas.
#[derive(Debug, Default)]
pub struct Quotas {
    limits: QuotaLimits,
    /// Held connections per client address, per JWT subject, and running
    /// replays per principal; an entry goes when its count reaches zero.
    held: [Mutex<FxHashMap<String, u32>>; 3],
    /// Rows each principal may still read (may go below zero: a page is
    /// never cut short; the debt delays the next request).
    rows: Mutex<FxHashMap<String, RowBudget>>,
}

/// Row budgets kept before the full ones are forgotten.
const PRUNE_AT: usize = 4096;

#[derive(Debug)]
struct RowBudget {
    rows: f64,
    at: Instant,
}

/// A place taken under a counted quota; given back on drop.
#[derive(Debug)]
pub struct Held {
    quotas: Arc<Quotas>,
    quota: usize,
    key: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.quotas.held[self.quota].lock().expect("quota lock");
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

impl Quotas {
    pub fn new(limits: QuotaLimits) -> Self {
        Quotas { limits, ..Quotas::default() }
    }

    fn take(self: &Arc<Self>, quota: Quota, key: String, max: u32) -> Option<Held> {
        let index = match quota {
            Quota::IpConnections => 0,
            Quota::SubjectConnections => 1,
            Quota::Replays => 2,
            Quota::HistoryRows => unreachable!("rows are a budget, not a count"),
        };
        let mut held = self.held[index].lock().expect("quota lock");
        let count = held.entry(key.clone()).or_insert(0);
        if *count >= max {
            if *count == 0 {
                held.remove(&key);
            }
            quota.refused();
            return None;
        }
        *count += 1;
        Some(Held { quotas: self.clone(), quota: index, key })
    }

    /// A streaming connection's places: under the per-address cap and, for a
    /// JWT, its subject's `tw_max_connections` (keys count their own).
    pub fn open_connection(self: &Arc<Self>, caller: &Caller) -> Result<Vec<Held>, ApiError> {
        let mut taken = Vec::new();
        if let (Some(ip), max @ 1..) = (caller.ip, self.limits.connections_per_ip) {
            let held = self.take(Quota::IpConnections, ip.to_string(), max).ok_or_else(|| {
                too_many("too_many_connections", format!("this address holds its maximum of {max} connections"))
            })?;
            taken.push(held);
        }
        if let Some(Grant(key)) = &caller.grant
            && key.key_id == crate::keys::JWT_KEY_ID
            && let Some(max) = key.entitlements.max_connections
        {
            let held = self.take(Quota::SubjectConnections, key.name.clone(), max).ok_or_else(|| {
                too_many(
                    "too_many_connections",
                    format!("subject {:?} holds its maximum of {max} connections", key.name),
                )
            })?;
            taken.push(held);
        }
        Ok(taken)
    }

    /// A replay's place among the caller's concurrent replays.
    pub fn start_replay(self: &Arc<Self>, caller: &Caller) -> Result<Option<Held>, ApiError> {
        let max = self.limits.replays_per_key;
        if max == 0 {
            return Ok(None);
        }
        self.take(Quota::Replays, caller.principal(), max)
            .map(Some)
            .ok_or_else(|| too_many("quota_exceeded", format!("at most {max} replays may run at once per key")))
    }

    /// Refuses a history request while the caller's row budget is spent.
    pub fn check_rows(&self, caller: &Caller) -> Result<(), ApiError> {
        let per_min = self.limits.history_rows_per_min;
        if per_min == 0 {
            return Ok(());
        }
        let mut budgets = self.rows.lock().expect("quota lock");
        let now = Instant::now();
        let rate = per_min as f64 / 60.0;
        if budgets.len() >= PRUNE_AT {
            // A budget refilled to the full is the same as none: forget it,
            // so that many callers (addresses) cannot grow the table forever.
            budgets.retain(|_, b| b.rows + now.duration_since(b.at).as_secs_f64() * rate < per_min as f64);
        }
        let budget = budgets.entry(caller.principal()).or_insert(RowBudget { rows: per_min as f64, at: now });
        budget.rows = (budget.rows + now.duration_since(budget.at).as_secs_f64() * rate).min(per_min as f64);
        budget.at = now;
        if budget.rows > 0.0 {
            return Ok(());
        }
        Quota::HistoryRows.refused();
        let wait = (-budget.rows / rate).max(1.0).ceil() as u64;
        let mut error = too_many("quota_exceeded", format!("history is limited to {per_min} rows a minute per key"));
        error.retry_after = Some(wait);
        Err(error)
    }

    /// Charges `rows` read to the caller's budget.
    pub fn spend_rows(&self, caller: &Caller, rows: usize) {
        if self.limits.history_rows_per_min == 0 {
            return;
        }
        let mut budgets = self.rows.lock().expect("quota lock");
        if let Some(budget) = budgets.get_mut(&caller.principal()) {
            budget.rows -= rows as f64;
        }
    }
}

fn too_many(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn caller(ip: &str) -> Caller {
        Caller { grant: None, ip: Some(ip.parse().unwrap()) }
    }

    #[test]
    fn connections_per_address_are_counted_and_given_back() {
        let quotas = Arc::new(Quotas::new(QuotaLimits { connections_per_ip: 2, ..QuotaLimits::default() }));
        let a = caller("10.0.0.1");
        let first = quotas.open_connection(&a).unwrap();
        let _second = quotas.open_connection(&a).unwrap();
        let refused = quotas.open_connection(&a).unwrap_err();
        assert_eq!((refused.status, refused.code), (StatusCode::TOO_MANY_REQUESTS, "too_many_connections"));
        assert!(quotas.open_connection(&caller("10.0.0.2")).is_ok(), "another address is not affected");
        drop(first);
        assert!(quotas.open_connection(&a).is_ok(), "a closed connection gives its place back");
        assert!(quotas.held[0].lock().unwrap().len() <= 2, "no entry outlives its connections");
    }

    #[test]
    fn replays_per_principal() {
        let quotas = Arc::new(Quotas::new(QuotaLimits { replays_per_key: 1, ..QuotaLimits::default() }));
        let a = caller("10.0.0.1");
        let running = quotas.start_replay(&a).unwrap();
        assert_eq!(quotas.start_replay(&a).unwrap_err().code, "quota_exceeded");
        drop(running);
        assert!(quotas.start_replay(&a).unwrap().is_some());
    }

    #[test]
    fn row_budget_refuses_once_spent_and_refills() {
        let quotas = Quotas::new(QuotaLimits { history_rows_per_min: 600, ..QuotaLimits::default() });
        let a = caller("10.0.0.1");
        quotas.check_rows(&a).unwrap();
        quotas.spend_rows(&a, 1_200); // a page past the budget is served whole: a debt
        let refusal = quotas.check_rows(&a).unwrap_err();
        assert_eq!(refusal.code, "quota_exceeded");
        assert!(refusal.retry_after.is_some_and(|s| s >= 59), "{:?}", refusal.retry_after);
        assert!(quotas.check_rows(&caller("10.0.0.2")).is_ok(), "budgets are per principal");
        // 600 a minute refills 10 a second: the debt of 600 takes a minute.
        quotas.rows.lock().unwrap().get_mut("ip:10.0.0.1").unwrap().at -= Duration::from_secs(61);
        assert!(quotas.check_rows(&a).is_ok());
        // Many callers do not grow the table past its pruning point by much:
        // full budgets are forgotten.
        for i in 0..3 * PRUNE_AT {
            quotas.check_rows(&caller(&format!("10.1.{}.{}", i / 250, i % 250))).unwrap();
        }
        assert!(quotas.rows.lock().unwrap().len() <= PRUNE_AT + 1);
    }
}
