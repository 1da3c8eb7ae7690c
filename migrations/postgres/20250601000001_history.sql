-- Tick history. Prices and sizes are BIGINT nano-units (1e-9), timestamps BIGINT
-- nanoseconds since the Unix epoch. Event tables are range-partitioned by day on
-- ts_event; the writer creates each day's partition before its first row, and
-- retention drops whole partitions. The primary key (instrument, exchange time,
-- sequence) makes writes idempotent and serves time-range scans per instrument.

CREATE TABLE instruments (
    id         INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    symbol     TEXT    NOT NULL UNIQUE,
    venue      TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    tick_size  BIGINT  NOT NULL,
    lot_size   BIGINT  NOT NULL
);

CREATE TABLE trades (
    instrument_id INTEGER  NOT NULL,
    seq           BIGINT   NOT NULL,
    ts_event      BIGINT   NOT NULL,
    ts_recv       BIGINT   NOT NULL,
    ts_send       BIGINT   NOT NULL,
    price         BIGINT   NOT NULL,
    size          BIGINT   NOT NULL,
    side          SMALLINT NOT NULL, -- 0 buy, 1 sell (the aggressor)
    trade_id      BIGINT   NOT NULL,
    PRIMARY KEY (instrument_id, ts_event, seq)
) PARTITION BY RANGE (ts_event);

CREATE TABLE quotes (
    instrument_id INTEGER NOT NULL,
    seq           BIGINT  NOT NULL,
    ts_event      BIGINT  NOT NULL,
    ts_recv       BIGINT  NOT NULL,
    ts_send       BIGINT  NOT NULL,
    bid           BIGINT  NOT NULL,
    bid_size      BIGINT  NOT NULL,
    ask           BIGINT  NOT NULL,
    ask_size      BIGINT  NOT NULL,
    PRIMARY KEY (instrument_id, ts_event, seq)
) PARTITION BY RANGE (ts_event);

-- L2 book changes: levels are packed (price, size) pairs of little-endian i64.
CREATE TABLE book_events (
    instrument_id INTEGER NOT NULL,
    seq           BIGINT  NOT NULL,
    ts_event      BIGINT  NOT NULL,
    ts_recv       BIGINT  NOT NULL,
    ts_send       BIGINT  NOT NULL,
    reset         BOOLEAN NOT NULL,
    bids          BYTEA   NOT NULL,
    asks          BYTEA   NOT NULL,
    PRIMARY KEY (instrument_id, ts_event, seq)
) PARTITION BY RANGE (ts_event);

-- Sequences the store will never hold (the writer's journal overflowed), so that
-- replay and resume announce the hole instead of skipping it silently.
CREATE TABLE gaps (
    instrument_id INTEGER  NOT NULL,
    channel       SMALLINT NOT NULL, -- 0 quotes, 1 trades, 2 book
    from_seq      BIGINT   NOT NULL,
    to_seq        BIGINT   NOT NULL,
    ts_from       BIGINT   NOT NULL,
    ts_to         BIGINT   NOT NULL,
    reason        TEXT     NOT NULL,
    PRIMARY KEY (instrument_id, channel, ts_from, from_seq)
);
