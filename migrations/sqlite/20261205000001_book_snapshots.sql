-- Whole books, stored now and then by the history writer, so that the book as
-- it stood at any time is the nearest snapshot before it plus the few book
-- events after it (replay starts and seeks), instead of a scan back to the last
-- reset, which feeds send only at connect and resync. Derived data: rows of
-- book_events keep their meaning. A row is the full book of one instrument
-- after its book event (ts_event, seq); levels are packed as in book_events.

CREATE TABLE book_snapshots (
    instrument_id INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    ts_event      INTEGER NOT NULL,
    ts_recv       INTEGER NOT NULL,
    ts_send       INTEGER NOT NULL,
    bids          BLOB    NOT NULL,
    asks          BLOB    NOT NULL,
    PRIMARY KEY (instrument_id, ts_event, seq)
) WITHOUT ROWID;
