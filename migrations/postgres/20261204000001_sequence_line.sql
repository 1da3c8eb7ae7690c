-- A sequence means one thing forever: from here on, every (instrument, channel)
-- sequence continues across restarts from the highest one this store has seen.
-- stream_heads keeps that highest sequence (written in the same transaction as
-- the events, and by gap records), so a start needs no scan of the event tables.
-- Rows stored before this migration came from runs whose sequences restarted;
-- sequence_line.started_ns marks where the continuous line begins, and resume
-- reads only rows sent after it.

CREATE TABLE stream_heads (
    instrument_id INTEGER  NOT NULL,
    channel       SMALLINT NOT NULL, -- 0 quotes, 1 trades, 2 book
    last_seq      BIGINT   NOT NULL,
    PRIMARY KEY (instrument_id, channel)
);

INSERT INTO stream_heads (instrument_id, channel, last_seq)
    SELECT instrument_id, 0, MAX(seq) FROM quotes GROUP BY instrument_id;
INSERT INTO stream_heads (instrument_id, channel, last_seq)
    SELECT instrument_id, 1, MAX(seq) FROM trades GROUP BY instrument_id;
INSERT INTO stream_heads (instrument_id, channel, last_seq)
    SELECT instrument_id, 2, MAX(seq) FROM book_events GROUP BY instrument_id;
INSERT INTO stream_heads (instrument_id, channel, last_seq)
    SELECT instrument_id, channel, MAX(to_seq) FROM gaps WHERE true GROUP BY instrument_id, channel
    ON CONFLICT (instrument_id, channel) DO UPDATE SET last_seq = GREATEST(stream_heads.last_seq, excluded.last_seq);

CREATE TABLE sequence_line (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    started_ns BIGINT  NOT NULL
);
INSERT INTO sequence_line (id, started_ns)
    VALUES (1, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint * 1000);

-- Resume reads one stream by sequence.
CREATE INDEX quotes_seq ON quotes (instrument_id, seq);
CREATE INDEX trades_seq ON trades (instrument_id, seq);
CREATE INDEX book_events_seq ON book_events (instrument_id, seq);
