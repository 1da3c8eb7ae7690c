-- API keys (`tickwire keys`): a key is `tw_<key_id>_<secret>`; only the
-- SHA-256 of the secret is kept. Entitlements are the symbol patterns and the
-- channels the key may use (NULL: all) and its limits (NULL: the server's).
-- A revoked key keeps its row (revoked_ns) and its name may be given again.

CREATE TABLE api_keys (
    key_id            TEXT    PRIMARY KEY,
    name              TEXT    NOT NULL,
    secret_sha256     BYTEA   NOT NULL,
    symbols           TEXT,
    channels          TEXT,
    max_connections   BIGINT,
    max_subscriptions BIGINT,
    created_ns        BIGINT  NOT NULL,
    revoked_ns        BIGINT
);

CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_ns IS NULL;
