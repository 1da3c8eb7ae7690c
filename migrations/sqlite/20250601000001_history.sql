-- The same schema as migrations/postgres for the embedded store. SQLite has no
-- partitions: retention deletes whole days. WITHOUT ROWID keeps each table
-- clustered on its key (instrument, exchange time, sequence).

CREATE TABLE instruments (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    symbol     TEXT    NOT NULL UNIQUE,
    venue      TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    tick_size  INTEGER NOT NULL,
    lot_size   INTEGER NOT NULL
);

CREATE TABLE trades (
    instrument_id INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    ts_event      INTEGER NOT NULL,
    ts_recv       INTEGER NOT NULL,
    ts_send       INTEGER NOT NULL,
    price         INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    side          INTEGER NOT NULL, -- 0 buy, 1 sell (the aggressor)
    trade_id      INTEGER NOT NULL,
    PRIMARY KEY (instrument_id, ts_event, seq)
) WITHOUT ROWID;

CREATE TABLE quotes (
    instrument_id INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    ts_event      INTEGER NOT NULL,
    ts_recv       INTEGER NOT NULL,
    ts_send       INTEGER NOT NULL,
    bid           INTEGER NOT NULL,
    bid_size      INTEGER NOT NULL,
    ask           INTEGER NOT NULL,
    ask_size      INTEGER NOT NULL,
    PRIMARY KEY (instrument_id, ts_event, seq)
) WITHOUT ROWID;

CREATE TABLE book_events (
    instrument_id INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    ts_event      INTEGER NOT NULL,
    ts_recv       INTEGER NOT NULL,
    ts_send       INTEGER NOT NULL,
    reset         INTEGER NOT NULL,
    bids          BLOB    NOT NULL,
    asks          BLOB    NOT NULL,
    PRIMARY KEY (instrument_id, ts_event, seq)
) WITHOUT ROWID;

CREATE TABLE gaps (
    instrument_id INTEGER NOT NULL,
    channel       INTEGER NOT NULL, -- 0 quotes, 1 trades, 2 book
    from_seq      INTEGER NOT NULL,
    to_seq        INTEGER NOT NULL,
    ts_from       INTEGER NOT NULL,
    ts_to         INTEGER NOT NULL,
    reason        TEXT    NOT NULL,
    PRIMARY KEY (instrument_id, channel, ts_from, from_seq)
);
