//! API keys and what each may use.
//!
//! A key reads `tw_<key id>_<secret>`: the key id (8 hex digits) finds the key,
//! the secret (64 hex digits, 256 random bits) proves it. The store keeps only
//! the secret's SHA-256 (a random 256-bit secret needs no slow hash: there is
//! nothing to guess), so a copy of the database grants nothing.
//!
//! [`Entitlements`] say which symbols (patterns, as subscriptions take them)
//! and which uses (`quotes`, `trades`, `book`, `candles`, `history`, `replay`)
//! a key may have, and how many connections and subscriptions it may hold.
//! They are checked when a stream starts or a request arrives, never per
//! update. A serving process keeps the live keys in a [`KeyRing`], refreshed
//! from the store every [`REFRESH`]: a key revoked with `tickwire keys revoke`
//! is refused from then on, and its open connections are told to close
//! (see [`LiveKey::revoked`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::model::{Channel, Instrument};
use crate::store::keys::StoredKey;
use crate::store::{Store, StoreError};

/// The key id of a credential made from a JSON Web Token (its name is the
/// token's subject).
pub const JWT_KEY_ID: &str = "jwt";
/// How often a server reads the keys again (so a revocation takes effect
/// within about this long).
pub const REFRESH: Duration = Duration::from_millis(500);

/// What a key is used for, as entitlements name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Use {
    Quotes,
    Trades,
    Book,
    /// Every `candles.*` channel, and `GET /v1/candles`.
    Candles,
    /// `GET /v1/history/*`.
    History,
    /// `/v1/replay`.
    Replay,
}

impl Use {
    pub const ALL: [Use; 6] = [Use::Quotes, Use::Trades, Use::Book, Use::Candles, Use::History, Use::Replay];

    pub fn as_str(self) -> &'static str {
        match self {
            Use::Quotes => "quotes",
            Use::Trades => "trades",
            Use::Book => "book",
            Use::Candles => "candles",
            Use::History => "history",
            Use::Replay => "replay",
        }
    }

    pub fn parse(name: &str) -> Option<Use> {
        Use::ALL.into_iter().find(|u| u.as_str() == name)
    }

    /// The use a stream channel is.
    pub fn of(channel: Channel) -> Use {
        match channel {
            Channel::Quotes => Use::Quotes,
            Channel::Trades => Use::Trades,
            Channel::Book => Use::Book,
            _ => Use::Candles,
        }
    }
}

/// Why a key or its entitlements were refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unknown channel {0:?} in --channels (quotes, trades, book, candles, history, replay)")]
    UnknownUse(String),
    #[error("bad symbol pattern {0:?}: letters, digits, : . _ - / and *")]
    BadPattern(String),
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    #[error("no live key named {0:?}")]
    NoSuchKey(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one key may use; `None` fields allow everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entitlements {
    /// Symbol patterns (`BTC-USD`, `binance:*`, `*-USD`).
    pub symbols: Option<Vec<String>>,
    pub uses: Option<Vec<Use>>,
    /// Open connections of every transport at once.
    pub max_connections: Option<u32>,
    /// Subscriptions (symbol × channel) on one connection.
    pub max_subscriptions: Option<u32>,
}

impl Entitlements {
    /// From the comma-separated lists `tickwire keys add` takes (empty: all).
    pub fn parse(
        symbols: Option<&str>,
        channels: Option<&str>,
        max_connections: Option<u32>,
        max_subscriptions: Option<u32>,
    ) -> Result<Entitlements, KeyError> {
        let list = |text: Option<&str>| -> Option<Vec<String>> {
            let items: Vec<String> =
                text?.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
            (!items.is_empty()).then_some(items)
        };
        let symbols = list(symbols);
        for pattern in symbols.iter().flatten() {
            let valid = pattern.len() <= 64
                && pattern
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-' | b'/' | b'*'));
            if !valid {
                return Err(KeyError::BadPattern(pattern.clone()));
            }
        }
        let uses = match list(channels) {
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|n| Use::parse(n).ok_or_else(|| KeyError::UnknownUse(n.clone())))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        if max_connections == Some(0) {
            return Err(KeyError::ZeroLimit("--max-connections"));
        }
        if max_subscriptions == Some(0) {
            return Err(KeyError::ZeroLimit("--max-subscriptions"));
        }
        Ok(Entitlements { symbols, uses, max_connections, max_subscriptions })
    }

    /// Whether the key may see `instrument` (as a pattern subscription
    /// matches: the symbol, or `venue:symbol` for an unqualified one).
    pub fn allows_symbol(&self, instrument: &Instrument) -> bool {
        let Some(patterns) = &self.symbols else { return true };
        patterns.iter().any(|p| instrument.matches(p))
    }

    pub fn allows(&self, what: Use) -> bool {
        self.uses.as_ref().is_none_or(|uses| uses.contains(&what))
    }

    /// What of `symbols` and `uses` this key may not have, said for the
    /// client ("symbols ETH-USD, AAPL; channels trades"), or none.
    pub fn denial<'a>(&self, denied_symbols: impl IntoIterator<Item = &'a str>, uses: &[Use]) -> Option<String> {
        let symbols: Vec<&str> = denied_symbols.into_iter().collect();
        let mut uses_denied: Vec<&str> = Vec::new();
        for &what in uses {
            if !self.allows(what) && !uses_denied.contains(&what.as_str()) {
                uses_denied.push(what.as_str());
            }
        }
        let mut parts = Vec::new();
        if !symbols.is_empty() {
            parts.push(format!("symbols {}", symbols.join(", ")));
        }
        if !uses_denied.is_empty() {
            parts.push(format!("channels {}", uses_denied.join(", ")));
        }
        (!parts.is_empty()).then(|| format!("this key may not use {}", parts.join("; ")))
    }

    /// The symbols and channels lists as stored (comma-separated, or none).
    fn stored_lists(&self) -> (Option<String>, Option<String>) {
        (
            self.symbols.as_ref().map(|s| s.join(",")),
            self.uses.as_ref().map(|u| u.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(",")),
        )
    }
}

/// A new key, before it is stored.
#[derive(Debug)]
pub struct NewKey {
    /// The whole key, shown once.
    pub secret: String,
    pub stored: StoredKey,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Makes a key named `name` with `entitlements`.
pub fn generate(name: &str, entitlements: &Entitlements, now: i64) -> NewKey {
    let key_id = hex(&rand::random::<[u8; 4]>());
    let secret = hex(&rand::random::<[u8; 32]>());
    let (symbols, channels) = entitlements.stored_lists();
    NewKey {
        stored: StoredKey {
            key_id: key_id.clone(),
            name: name.to_owned(),
            secret_sha256: digest(&secret).to_vec(),
            symbols,
            channels,
            max_connections: entitlements.max_connections.map(i64::from),
            max_subscriptions: entitlements.max_subscriptions.map(i64::from),
            created_ns: now,
            revoked_ns: None,
        },
        secret: format!("tw_{key_id}_{secret}"),
    }
}

/// The (key id, secret) of a presented key, if it has a key's shape.
fn split_key(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix("tw_")?;
    let (key_id, secret) = rest.split_once('_')?;
    (key_id.len() == 8 && !secret.is_empty()).then_some((key_id, secret))
}

/// Whether a presented credential looks like an API key (rather than a
/// static token).
pub fn is_key(presented: &str) -> bool {
    split_key(presented).is_some()
}

/// A key a serving process accepts, with what its connections share.
#[derive(Debug)]
pub struct LiveKey {
    pub key_id: String,
    pub name: String,
    secret_sha256: [u8; 32],
    pub entitlements: Entitlements,
    /// Cancelled when the key is revoked: its connections close.
    pub revoked: CancellationToken,
    /// Connections open with this key now.
    connections: AtomicU32,
    /// When the credential stops being valid, in ns since the epoch (a JWT's
    /// `exp`; a refresh moves it); 0: never.
    expires_ns: AtomicU64,
}

impl LiveKey {
    fn from_stored(key: &StoredKey) -> Option<LiveKey> {
        let entitlements = Entitlements::parse(
            key.symbols.as_deref(),
            key.channels.as_deref(),
            key.max_connections.and_then(|n| u32::try_from(n).ok()),
            key.max_subscriptions.and_then(|n| u32::try_from(n).ok()),
        )
        .ok()?;
        Some(LiveKey {
            key_id: key.key_id.clone(),
            name: key.name.clone(),
            secret_sha256: key.secret_sha256.as_slice().try_into().ok()?,
            entitlements,
            revoked: CancellationToken::new(),
            connections: AtomicU32::new(0),
            expires_ns: AtomicU64::new(0),
        })
    }

    /// The live state of a verified token (a JWT): `name` is its subject.
    pub fn for_token(name: &str, entitlements: Entitlements, expires_ns: u64) -> LiveKey {
        LiveKey {
            key_id: JWT_KEY_ID.into(),
            name: name.to_owned(),
            secret_sha256: [0; 32],
            entitlements,
            revoked: CancellationToken::new(),
            connections: AtomicU32::new(0),
            expires_ns: AtomicU64::new(expires_ns),
        }
    }

    /// When the credential expires (ns since the epoch), or 0 for never.
    pub fn expires_ns(&self) -> u64 {
        self.expires_ns.load(Ordering::Acquire)
    }

    /// A fresh token of the same subject moves the expiry.
    pub fn extend(&self, expires_ns: u64) {
        self.expires_ns.store(expires_ns, Ordering::Release);
    }

    /// Resolves once the credential has expired (never for one that does
    /// not); a refresh meanwhile is honoured.
    pub async fn expired(&self) {
        loop {
            let at = self.expires_ns();
            if at == 0 {
                return std::future::pending().await;
            }
            let now = crate::model::now_nanos();
            if now >= at {
                return;
            }
            tokio::time::sleep(Duration::from_nanos(at - now)).await;
        }
    }

    /// Takes one of the key's connections, unless it holds its maximum.
    pub fn open_connection(self: &Arc<Self>) -> Option<KeyConnection> {
        let max = self.entitlements.max_connections.unwrap_or(u32::MAX);
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| KeyConnection { key: self.clone() })
    }
}

/// One of a key's connections; given back on drop.
#[derive(Debug)]
pub struct KeyConnection {
    pub key: Arc<LiveKey>,
}

impl Drop for KeyConnection {
    fn drop(&mut self) {
        self.key.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The live keys of a serving process, by key id.
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: ArcSwap<FxHashMap<String, Arc<LiveKey>>>,
}

impl KeyRing {
    /// The live key `presented` is, if it is one.
    pub fn check(&self, presented: &str) -> Option<Arc<LiveKey>> {
        let (key_id, secret) = split_key(presented)?;
        let key = self.keys.load().get(key_id)?.clone();
        (key.secret_sha256 == digest(secret) && !key.revoked.is_cancelled()).then_some(key)
    }

    /// Reads the keys from the store: new ones are taken, revoked ones (or
    /// deleted, or changed) are dropped and their connections told to close.
    pub async fn refresh(&self, store: &Store) -> Result<(), StoreError> {
        let stored = store.keys().await?;
        let current = self.keys.load();
        let mut next = FxHashMap::default();
        for key in stored.iter().filter(|k| k.revoked_ns.is_none()) {
            let kept = current.get(&key.key_id).filter(|live| live.secret_sha256[..] == key.secret_sha256[..]);
            match kept {
                Some(live) => {
                    next.insert(key.key_id.clone(), live.clone());
                }
                None => {
                    if let Some(live) = LiveKey::from_stored(key) {
                        next.insert(key.key_id.clone(), Arc::new(live));
                    } else {
                        tracing::warn!(key = %key.name, "a stored key with unreadable entitlements is not accepted");
                    }
                }
            }
        }
        for (key_id, live) in current.iter() {
            if !next.contains_key(key_id) {
                tracing::info!(key = %live.name, key_id = %key_id, "key revoked: closing its connections");
                metrics::counter!("tickwire_keys_revoked_total").increment(1);
                live.revoked.cancel();
            }
        }
        self.keys.store(Arc::new(next));
        Ok(())
    }

    /// Refreshes every [`REFRESH`] until `stop`; a failed read keeps the
    /// keys as they were (and says so once per failure streak).
    pub async fn run(self: Arc<Self>, store: Store, stop: CancellationToken) {
        let mut failing = false;
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            match self.refresh(&store).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("API keys read again");
                }
                Ok(()) => {}
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "cannot read the API keys; keeping the last ones read");
                }
                Err(_) => {}
            }
        }
    }
}

/// `tickwire keys add`: stores a new key and returns it (its secret shown once).
pub async fn add(store: &Store, name: &str, entitlements: &Entitlements, now: i64) -> Result<NewKey, KeyError> {
    let key = generate(name, entitlements, now);
    store.add_key(&key.stored).await?;
    Ok(key)
}

/// `tickwire keys revoke`.
pub async fn revoke(store: &Store, name_or_id: &str, now: i64) -> Result<(), KeyError> {
    if store.revoke_key(name_or_id, now).await? { Ok(()) } else { Err(KeyError::NoSuchKey(name_or_id.to_owned())) }
}

/// A stored key as `tickwire keys list` and `show` print it (never a secret).
pub fn describe(key: &StoredKey) -> serde_json::Value {
    serde_json::json!({
        "name": key.name,
        "key_id": key.key_id,
        "symbols": key.symbols.as_deref().map_or_else(|| vec!["*"], |s| s.split(',').collect::<Vec<_>>()),
        "channels": key
            .channels
            .as_deref()
            .map_or_else(|| Use::ALL.iter().map(|u| u.as_str()).collect(), |c| c.split(',').collect::<Vec<_>>()),
        "max_connections": key.max_connections,
        "max_subscriptions": key.max_subscriptions,
        "created_ns": key.created_ns,
        "revoked_ns": key.revoked_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AssetKind, InstrumentSpec, Instruments, Price, Size};

    fn instrument(symbol: &str, venue: &str) -> Instrument {
        let mut t = Instruments::new();
        let spec = InstrumentSpec {
            symbol: symbol.into(),
            venue: venue.into(),
            kind: AssetKind::Crypto,
            tick_size: Price(1),
            lot_size: Size(1),
        };
        let id = t.add(spec).unwrap();
        t.get(id).clone()
    }

    #[test]
    fn entitlements_allow_what_they_name() {
        let e = Entitlements::parse(Some("BTC-USD, binance:*"), Some("quotes,history"), Some(2), None).unwrap();
        assert!(e.allows_symbol(&instrument("BTC-USD", "sim")));
        assert!(e.allows_symbol(&instrument("binance:ETH-USDT", "binance")));
        assert!(!e.allows_symbol(&instrument("ETH-USD", "sim")));
        assert!(e.allows(Use::Quotes) && e.allows(Use::History));
        assert!(!e.allows(Use::Trades) && !e.allows(Use::Replay) && !e.allows(Use::of(Channel::Candles1m)));
        let all = Entitlements::parse(None, Some(" "), None, None).unwrap();
        assert!(all.allows(Use::Replay) && all.allows_symbol(&instrument("AAPL", "sim")));
        assert!(matches!(Entitlements::parse(None, Some("news"), None, None), Err(KeyError::UnknownUse(_))));
        assert!(matches!(Entitlements::parse(Some("a b"), None, None, None), Err(KeyError::BadPattern(_))));
        assert!(matches!(Entitlements::parse(None, None, Some(0), None), Err(KeyError::ZeroLimit(_))));
    }

    #[test]
    fn a_key_is_checked_by_its_secret_and_stored_only_as_a_hash() {
        let key = generate("desk", &Entitlements::default(), 1);
        assert!(key.secret.starts_with(&format!("tw_{}_", key.stored.key_id)) && key.secret.len() == 3 + 8 + 1 + 64);
        assert_ne!(key.stored.secret_sha256, key.secret.as_bytes());
        assert!(!hex(&key.stored.secret_sha256).contains(&key.secret[12..]));
        let ring = KeyRing::default();
        let live = Arc::new(LiveKey::from_stored(&key.stored).unwrap());
        ring.keys.store(Arc::new([(key.stored.key_id.clone(), live.clone())].into_iter().collect()));
        assert!(ring.check(&key.secret).is_some());
        let mut wrong = key.secret.clone();
        wrong.pop();
        wrong.push(if key.secret.ends_with('0') { '1' } else { '0' });
        assert!(ring.check(&wrong).is_none(), "a wrong secret");
        assert!(ring.check("tw_00000000_abc").is_none(), "an unknown key id");
        assert!(ring.check("s3cret").is_none() && !is_key("s3cret"));
        live.revoked.cancel();
        assert!(ring.check(&key.secret).is_none(), "a revoked key");
    }

    #[test]
    fn a_key_holds_at_most_its_connections() {
        let mut key = generate("one", &Entitlements::default(), 1);
        key.stored.max_connections = Some(1);
        let live = Arc::new(LiveKey::from_stored(&key.stored).unwrap());
        let first = live.open_connection().expect("the first");
        assert!(live.open_connection().is_none(), "the second is refused");
        drop(first);
        assert!(live.open_connection().is_some(), "given back on drop");
    }
}
