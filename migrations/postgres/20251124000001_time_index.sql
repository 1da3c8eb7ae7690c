-- Replay reads every instrument of a table in exchange-time order. Rows of all
-- instruments are written together, so reading them per instrument along the
-- primary key visits each heap page once per instrument; this index reads them
-- in time order, each heap page about once. (On the partitioned parents, so
-- every day partition, present and future, gets one.)
CREATE INDEX quotes_time ON quotes (ts_event, instrument_id, seq);
CREATE INDEX trades_time ON trades (ts_event, instrument_id, seq);
CREATE INDEX book_events_time ON book_events (ts_event, instrument_id, seq);
