//! API keys in the store (`api_keys`): what `tickwire keys` writes and a
//! serving process reads. Only the SHA-256 of a key's secret is kept.

use sqlx::Row;

use super::{Backend, Store, StoreError, on_pool};

/// One key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The public part of the key (`tw_<key_id>_<secret>`).
    pub key_id: String,
    pub name: String,
    pub secret_sha256: Vec<u8>,
    /// Comma-separated symbol patterns; `None`: every symbol.
    pub symbols: Option<String>,
    /// Comma-separated channels; `None`: every channel.
    pub channels: Option<String>,
    pub max_connections: Option<i64>,
    pub max_subscriptions: Option<i64>,
    pub created_ns: i64,
    pub revoked_ns: Option<i64>,
}

const COLUMNS: &str =
    "key_id, name, secret_sha256, symbols, channels, max_connections, max_subscriptions, created_ns, revoked_ns";

impl Store {
    /// Stores a new key; a live key of the same name is refused
    /// ([`StoreError::KeyNameTaken`]).
    pub async fn add_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let sql = format!("INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)");
        let result = on_pool!(self, pool => {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&key.key_id)
                .bind(&key.name)
                .bind(&key.secret_sha256)
                .bind(&key.symbols)
                .bind(&key.channels)
                .bind(key.max_connections)
                .bind(key.max_subscriptions)
                .bind(key.created_ns)
                .bind(key.revoked_ns)
                .execute(pool)
                .await
                .map(|_| ())
        });
        match result {
            Ok(()) => Ok(()),
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                Err(StoreError::KeyNameTaken(key.name.clone()))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_ns, key_id");
        on_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?;
            rows.iter()
                .map(|r| {
                    Ok(StoredKey {
                        key_id: r.try_get(0)?,
                        name: r.try_get(1)?,
                        secret_sha256: r.try_get(2)?,
                        symbols: r.try_get(3)?,
                        channels: r.try_get(4)?,
                        max_connections: r.try_get(5)?,
                        max_subscriptions: r.try_get(6)?,
                        created_ns: r.try_get(7)?,
                        revoked_ns: r.try_get(8)?,
                    })
                })
                .collect()
        })
    }

    /// Revokes the live key named `name_or_id` (its name or its key id) at
    /// `now`; returns whether one was.
    pub async fn revoke_key(&self, name_or_id: &str, now: i64) -> Result<bool, StoreError> {
        let sql = "UPDATE api_keys SET revoked_ns = $1 WHERE revoked_ns IS NULL AND (name = $2 OR key_id = $2)";
        let done = on_pool!(self, pool => {
            sqlx::query(sql).bind(now).bind(name_or_id).execute(pool).await?.rows_affected()
        });
        Ok(done > 0)
    }
}
