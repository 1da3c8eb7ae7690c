"""Encoding and decoding of protocol v1 frames, against the generated schema."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest

from tickwire_client import (
    CHANNELS,
    DEFAULT_CHANNELS,
    BookInvalidated,
    BookUpdate,
    Candle,
    Decoder,
    Gap,
    Instrument,
    Live,
    OrderBook,
    Pong,
    ProtocolError,
    Quote,
    ReplayEnd,
    ReplayStatus,
    ServerError,
    Snapshot,
    Trade,
    backoff_delay,
    candle_channel,
    encode_ping,
    encode_replay_control,
    encode_subscribe,
    encode_unsubscribe,
    http_base,
    to_decimal,
)
from tickwire_client._proto import pb

BTC = dict(symbol="BTC-USD", instrument_id=0, price_decimals=2, size_decimals=5)


def snapshot_frame(channel=pb.CHANNEL_QUOTES, seq=1041, **data) -> bytes:
    snap = pb.Snapshot(channel=channel, seq=seq, ts_event=1, ts_recv=2, ts_send=3, **BTC, **data)
    return pb.ServerMessage(snapshot=snap).SerializeToString()


def test_to_decimal_is_exact():
    assert to_decimal(6412350, 2) == Decimal("64123.50")
    assert str(to_decimal(6412350, 2)) == "64123.50"
    assert str(to_decimal(-5, 3)) == "-0.005"
    assert str(to_decimal(558, 0)) == "558"
    assert str(to_decimal(0, 4)) == "0.0000"
    big = 2**63 - 1
    assert to_decimal(big, 9) == Decimal(big) / Decimal(10**9)
    assert to_decimal(-(2**63), 0) == Decimal(-(2**63))


def test_proto_snapshot_then_batch_resolves_symbol_scale_and_clocks():
    d = Decoder()
    [snap] = d.decode(snapshot_frame(quote=pb.Quote(bid=6412350, bid_size=42100, ask=6412400, ask_size=120000)))
    assert snap == Snapshot(
        "BTC-USD", "quotes", 1041,
        Quote("BTC-USD", 1041, Decimal("64123.50"), Decimal("0.42100"), Decimal("64124.00"), Decimal("1.20000"), 1, 2, 3),
        1, 2, 3, 0, 2, 5,
    )
    batch = pb.Batch(
        updates=[
            pb.Update(instrument_id=0, seq=1042, ts_event=1_000, recv_delta_ns=50, send_delta_ns=7,
                      quote=pb.Quote(bid=6412300, bid_size=1, ask=6412400, ask_size=2)),
            pb.Update(instrument_id=0, seq=7, ts_event=2_000, recv_delta_ns=0, send_delta_ns=1,
                      trade=pb.Trade(price=6412400, size=270, side=pb.SIDE_SELL, trade_id=449)),
            pb.Update(instrument_id=0, seq=9, ts_event=3_000, recv_delta_ns=1, send_delta_ns=1,
                      book=pb.Book(bids=[pb.Level(price=6412300, size=0)], asks=[pb.Level(price=6412500, size=10)])),
        ]
    )
    q, t, b = d.decode(pb.ServerMessage(batch=batch).SerializeToString())
    assert q == Quote("BTC-USD", 1042, Decimal("64123.00"), Decimal("0.00001"), Decimal("64124.00"), Decimal("0.00002"),
                      1_000, 1_050, 1_057)
    assert q.channel == "quotes" and q.spread == Decimal("1.00")
    assert t == Trade("BTC-USD", 7, Decimal("64124.00"), Decimal("0.00270"), "sell", 449, 2_000, 2_000, 2_001)
    assert t.channel == "trades"
    assert b == BookUpdate("BTC-USD", 9, ((Decimal("64123.00"), Decimal("0")),), ((Decimal("64125.00"), Decimal("0.00010")),),
                           3_000, 3_001, 3_002)


def test_proto_update_for_unknown_instrument_is_a_client_error_not_a_crash():
    d = Decoder()
    frame = pb.ServerMessage(batch=pb.Batch(updates=[pb.Update(instrument_id=5, seq=1, quote=pb.Quote())])).SerializeToString()
    [err] = d.decode(frame)
    assert isinstance(err, ServerError) and err.code == "client_unknown_instrument"


def test_proto_control_messages():
    d = Decoder()
    msg = lambda **kw: pb.ServerMessage(**kw).SerializeToString()  # noqa: E731
    assert d.decode(msg(gap=pb.Gap(symbol="A", channel=pb.CHANNEL_TRADES, from_seq=3, to_seq=9, reason="history_exhausted"))) == [
        Gap("A", "trades", 3, 9, "history_exhausted")
    ]
    assert d.decode(msg(book_invalidated=pb.BookInvalidated(symbol="A", seq=4))) == [BookInvalidated("A", 4)]
    assert d.decode(msg(error=pb.Error(code="unknown_symbol", message="no instrument X", op="subscribe"))) == [
        ServerError("unknown_symbol", "no instrument X", "subscribe")
    ]
    assert d.decode(msg(pong=pb.Pong(id=7, ts_send=99))) == [Pong(7, 99)]
    assert d.decode(msg(live=pb.Live(symbol="A", channel=pb.CHANNEL_TRADES, seq=12, epoch=77))) == [
        Live("A", "trades", 12, 77)
    ]
    assert d.decode(b"") == []  # an empty ServerMessage: nothing to deliver
    # A snapshot before the channel's first event has no data.
    [snap] = d.decode(snapshot_frame(channel=pb.CHANNEL_TRADES, seq=0))
    assert snap.data is None and snap.channel == "trades" and snap.seq == 0


def test_malformed_frames_raise_protocol_error():
    d = Decoder()
    with pytest.raises(ProtocolError):
        d.decode(b"\xff\xff\xff\xff")
    with pytest.raises(ProtocolError):
        d.decode("{not json")
    with pytest.raises(ProtocolError):
        d.decode('{"type":"batch","updates":[{"symbol":"A"}]}')
    with pytest.raises(ProtocolError):
        d.decode('{"type":"batch","updates":[{"symbol":"A","channel":"trades","seq":1,"price":"x","size":"1",'
                 '"side":"buy","trade_id":1,"ts_event":1,"ts_recv":1,"ts_send":1}]}')


def test_json_messages_from_the_protocol_document():
    d = Decoder()
    batch = {
        "type": "batch",
        "updates": [
            {"symbol": "BTC-USD", "channel": "quotes", "seq": 1042, "bid": "64123.50", "bid_size": "0.4210",
             "ask": "64124.00", "ask_size": "1.2000", "ts_event": 1, "ts_recv": 2, "ts_send": 3},
            {"symbol": "BTC-USD", "channel": "trades", "seq": 160, "price": "63996.80", "size": "0.00270",
             "side": "sell", "trade_id": 449, "ts_event": 4, "ts_recv": 5, "ts_send": 6},
            {"symbol": "AAPL", "channel": "book", "seq": 340, "bids": [], "asks": [["228.47", "232"]],
             "ts_event": 7, "ts_recv": 8, "ts_send": 9},
        ],
    }
    q, t, b = d.decode(json.dumps(batch))
    assert q == Quote("BTC-USD", 1042, Decimal("64123.50"), Decimal("0.4210"), Decimal("64124.00"), Decimal("1.2000"), 1, 2, 3)
    assert str(q.bid_size) == "0.4210"
    assert t == Trade("BTC-USD", 160, Decimal("63996.80"), Decimal("0.00270"), "sell", 449, 4, 5, 6)
    assert b == BookUpdate("AAPL", 340, (), ((Decimal("228.47"), Decimal("232")),), 7, 8, 9)
    [snap] = d.decode('{"type":"snapshot","symbol":"BTC-USD","channel":"trades","seq":0,"data":null,'
                      '"ts_event":0,"ts_recv":0,"ts_send":0}')
    assert snap == Snapshot("BTC-USD", "trades", 0, None, 0, 0, 0)
    assert d.decode('{"type":"gap","symbol":"BTC-USD","channel":"trades","from_seq":1043,"to_seq":1990,'
                    '"reason":"history_exhausted"}') == [Gap("BTC-USD", "trades", 1043, 1990, "history_exhausted")]
    assert d.decode('{"type":"error","code":"unknown_symbol","message":"no instrument NO-SUCH","op":"subscribe"}') == [
        ServerError("unknown_symbol", "no instrument NO-SUCH", "subscribe")
    ]
    assert d.decode('{"type":"book_invalidated","symbol":"A","channel":"book","seq":5}') == [BookInvalidated("A", 5)]
    assert d.decode('{"type":"pong","id":3,"ts_send":10}') == [Pong(3, 10)]
    assert d.decode('{"type":"something_new"}') == []


def test_proto_and_json_give_equal_values():
    d = Decoder()
    d.decode(snapshot_frame())
    frame = pb.ServerMessage(batch=pb.Batch(updates=[
        pb.Update(instrument_id=0, seq=5, ts_event=10, recv_delta_ns=1, send_delta_ns=2,
                  trade=pb.Trade(price=6399680, size=270, side=pb.SIDE_BUY, trade_id=1)),
    ])).SerializeToString()
    [from_proto] = d.decode(frame)
    [from_json] = d.decode('{"type":"batch","updates":[{"symbol":"BTC-USD","channel":"trades","seq":5,'
                           '"price":"63996.80","size":"0.00270","side":"buy","trade_id":1,'
                           '"ts_event":10,"ts_recv":11,"ts_send":13}]}')
    assert from_proto == from_json
    assert (str(from_proto.price), str(from_proto.size)) == (str(from_json.price), str(from_json.size))


def test_subscribe_encodings_carry_since_per_channel():
    since = {("BTC-USD", "quotes"): 12, ("BTC-USD", "trades"): 40, ("AAPL", "trades"): 3}
    frame = encode_subscribe("json", ["BTC-USD", "AAPL"], ["quotes", "trades"], since, delivery="conflate", conflate_ms=100)
    assert json.loads(frame) == {
        "op": "subscribe",
        "channels": ["quotes", "trades"],
        "symbols": ["BTC-USD", "AAPL"],
        "since": {"AAPL": {"trades": 3}, "BTC-USD": {"quotes": 12, "trades": 40}},
        "delivery": "conflate",
        "conflate_ms": 100,
    }
    assert "since" not in json.loads(encode_subscribe("json", ["A"], ["book"]))

    msg = pb.ClientMessage.FromString(encode_subscribe("proto", ["BTC-USD", "AAPL"], ["quotes", "trades"], since))
    sub = msg.subscribe
    assert list(sub.channels) == [pb.CHANNEL_QUOTES, pb.CHANNEL_TRADES]
    assert list(sub.symbols) == ["BTC-USD", "AAPL"]
    assert sorted((s.symbol, s.channel, s.seq) for s in sub.since) == [
        ("AAPL", pb.CHANNEL_TRADES, 3), ("BTC-USD", pb.CHANNEL_QUOTES, 12), ("BTC-USD", pb.CHANNEL_TRADES, 40)
    ]
    assert sub.delivery == pb.DELIVERY_UNSPECIFIED

    assert pb.ClientMessage.FromString(encode_ping("proto", 9)).ping.id == 9
    assert json.loads(encode_ping("json", 9)) == {"op": "ping", "id": 9}
    assert list(pb.ClientMessage.FromString(encode_unsubscribe("proto", ["A"], ["book"])).unsubscribe.channels) == [pb.CHANNEL_BOOK]
    assert json.loads(encode_unsubscribe("json", ["A"], ["book"])) == {"op": "unsubscribe", "channels": ["book"], "symbols": ["A"]}
    with pytest.raises(ValueError):
        encode_subscribe("proto", ["A"], ["news"])
    with pytest.raises(ValueError):
        encode_subscribe("xml", ["A"], ["quotes"])


def test_backoff_is_jittered_exponential_and_capped():
    rng = random.Random(1)
    for attempt in range(12):
        ceiling = min(10.0, 0.25 * 2**attempt)
        delays = [backoff_delay(attempt, 0.25, 10.0, rng) for _ in range(50)]
        assert all(ceiling / 2 <= x <= ceiling for x in delays)
        assert len(set(delays)) > 1  # jittered
    assert backoff_delay(1000, 0.25, 10.0, rng) <= 10.0


def test_order_book_applies_snapshot_deltas_and_invalidation():
    D = Decimal
    book = OrderBook("A")
    snap = Snapshot("A", "book", 10, BookUpdate("A", 10, ((D("10.0"), D("1")), (D("9.5"), D("2"))), ((D("10.5"), D("3")),), 0, 0, 0), 0, 0, 0)
    assert book.apply(snap) and book.valid
    book.apply(BookUpdate("A", 11, ((D("10.0"), D("0")),), ((D("10.4"), D("1")),), 0, 0, 0))
    assert book.best_bid() == (D("9.5"), D("2"))
    assert book.best_ask() == (D("10.4"), D("1"))
    assert book.top(5) == ([(D("9.5"), D("2"))], [(D("10.4"), D("1")), (D("10.5"), D("3"))])
    assert not book.apply(BookUpdate("B", 1, (), (), 0, 0, 0))
    book.apply(BookInvalidated("A", 12))
    assert not book.valid and book.best_bid() is None


def test_proto_candles_in_snapshots_and_batches():
    d = Decoder()
    candle = pb.Candle(interval=pb.CANDLE_INTERVAL_1M, start=1_764_547_200_000_000_000, open=6412000, high=6413150,
                       low=6411800, close=6412400, volume=341000, trades=27, closed=False)
    [snap] = d.decode(snapshot_frame(channel=pb.CHANNEL_CANDLES_1M, seq=52, candle=candle))
    expected = Candle("BTC-USD", 52, "1m", 1_764_547_200_000_000_000, Decimal("64120.00"), Decimal("64131.50"),
                      Decimal("64118.00"), Decimal("64124.00"), Decimal("3.41000"), 27, False, 1, 2, 3)
    assert snap.channel == "candles.1m" and snap.data == expected
    assert snap.data.channel == "candles.1m"
    # A candle without its interval (a sender that leaves it unset) takes the snapshot's channel.
    bare = pb.Candle(start=5, open=1, high=1, low=1, close=1, volume=1, trades=1)
    [snap] = d.decode(snapshot_frame(channel=pb.CHANNEL_CANDLES_5M, seq=1, candle=bare))
    assert snap.data.interval == "5m"
    # A snapshot before the first trade carries no candle.
    [snap] = d.decode(snapshot_frame(channel=pb.CHANNEL_CANDLES_1S, seq=0))
    assert snap.channel == "candles.1s" and snap.data is None

    closed = pb.Candle(interval=pb.CANDLE_INTERVAL_1S, start=2_000_000_000, open=100, high=300, low=50, close=200,
                       volume=12345, trades=3, closed=True)
    batch = pb.Batch(updates=[pb.Update(instrument_id=0, seq=9, ts_event=10, recv_delta_ns=1, send_delta_ns=2, candle=closed)])
    [c] = d.decode(pb.ServerMessage(batch=batch).SerializeToString())
    assert c == Candle("BTC-USD", 9, "1s", 2_000_000_000, Decimal("1.00"), Decimal("3.00"), Decimal("0.50"),
                       Decimal("2.00"), Decimal("0.12345"), 3, True, 10, 11, 13)
    assert c.channel == "candles.1s" and c.closed


def test_json_candles_from_the_protocol_document_equal_protobuf():
    d = Decoder()
    d.decode(snapshot_frame())
    update = ('{"symbol":"BTC-USD","channel":"candles.1m","seq":52,"start":1764547200000000000,"open":"64120.00",'
              '"high":"64131.50","low":"64118.00","close":"64124.00","volume":"3.41000","trades":27,"closed":false,'
              '"ts_event":10,"ts_recv":11,"ts_send":13}')
    [from_json] = d.decode('{"type":"batch","updates":[' + update + ']}')
    candle = pb.Candle(interval=pb.CANDLE_INTERVAL_1M, start=1_764_547_200_000_000_000, open=6412000, high=6413150,
                       low=6411800, close=6412400, volume=341000, trades=27)
    frame = pb.ServerMessage(batch=pb.Batch(updates=[
        pb.Update(instrument_id=0, seq=52, ts_event=10, recv_delta_ns=1, send_delta_ns=2, candle=candle)])).SerializeToString()
    [from_proto] = d.decode(frame)
    assert from_json == from_proto
    assert [str(x) for x in (from_json.open, from_json.volume)] == ["64120.00", "3.41000"]
    assert from_json.closed is False and from_json.interval == "1m"

    [snap] = d.decode('{"type":"snapshot","symbol":"BTC-USD","channel":"candles.1h","seq":0,"data":null,'
                      '"ts_event":0,"ts_recv":0,"ts_send":0}')
    assert snap == Snapshot("BTC-USD", "candles.1h", 0, None, 0, 0, 0)
    [snap] = d.decode('{"type":"snapshot","symbol":"BTC-USD","channel":"candles.1d","seq":4,"data":{"start":0,'
                      '"open":"1","high":"2","low":"0.5","close":"1.5","volume":"10","trades":2,"closed":true},'
                      '"ts_event":1,"ts_recv":2,"ts_send":3}')
    assert snap.data == Candle("BTC-USD", 4, "1d", 0, Decimal("1"), Decimal("2"), Decimal("0.5"), Decimal("1.5"),
                               Decimal("10"), 2, True, 1, 2, 3)
    with pytest.raises(ProtocolError):
        d.decode('{"type":"batch","updates":[' + update.replace('"closed":false', '"closed":"no"') + ']}')
    with pytest.raises(ProtocolError):
        d.decode('{"type":"batch","updates":[' + update.replace('"channel":"candles.1m"', '"channel":"candles.2m"') + ']}')


def test_candle_channels_encode_in_both_formats():
    frame = encode_subscribe("proto", ["BTC-USD"], ["candles.1s", "candles.1d", "trades"], {("BTC-USD", "candles.1s"): 7})
    sub = pb.ClientMessage.FromString(frame).subscribe
    assert list(sub.channels) == [pb.CHANNEL_CANDLES_1S, pb.CHANNEL_CANDLES_1D, pb.CHANNEL_TRADES]
    assert [(s.channel, s.seq) for s in sub.since] == [(pb.CHANNEL_CANDLES_1S, 7)]
    assert json.loads(encode_subscribe("json", ["A"], [candle_channel("5m")])) == {
        "op": "subscribe", "channels": ["candles.5m"], "symbols": ["A"]}
    assert CHANNELS == ("quotes", "trades", "book", "candles.1s", "candles.1m", "candles.5m", "candles.1h", "candles.1d")
    assert CHANNELS[:3] == DEFAULT_CHANNELS
    with pytest.raises(ValueError):
        candle_channel("2m")
    with pytest.raises(ValueError):
        encode_subscribe("json", ["A"], ["candles.2m"])


def test_errors_name_their_stream_in_both_formats():
    d = Decoder()
    frame = pb.ServerMessage(error=pb.Error(code="bad_since", message="m", op="subscribe", symbol="BTC-USD",
                                            channel=pb.CHANNEL_CANDLES_1M)).SerializeToString()
    assert d.decode(frame) == [ServerError("bad_since", "m", "subscribe", "BTC-USD", "candles.1m")]
    assert d.decode('{"type":"error","code":"bad_since","message":"m","op":"subscribe","symbol":"ETH-USD",'
                    '"channel":"quotes"}') == [ServerError("bad_since", "m", "subscribe", "ETH-USD", "quotes")]
    # Errors about no one stream (and older servers) leave both unset.
    [e] = d.decode(pb.ServerMessage(error=pb.Error(code="unknown_op", message="m")).SerializeToString())
    assert (e.op, e.symbol, e.channel) == (None, None, None)
    [e] = d.decode('{"type":"error","code":"unknown_op","message":"m","op":null}')
    assert (e.op, e.symbol, e.channel) == (None, None, None)


def test_http_base_from_stream_urls():
    assert http_base("ws://127.0.0.1:8080/v1/ws") == "http://127.0.0.1:8080"
    assert http_base("wss://example.com/api/v1/ws?format=proto") == "https://example.com/api"
    assert http_base("http://h:1") == "http://h:1"
    assert http_base("https://h/v1") == "https://h"


def test_epochs_decode_from_snapshots_and_live_markers_in_both_formats():
    d = Decoder()
    [snap] = d.decode(snapshot_frame(channel=pb.CHANNEL_TRADES, seq=5, epoch=1234))
    assert (snap.seq, snap.epoch) == (5, 1234)
    # A protobuf snapshot from a server without epochs (field 14 unset).
    [snap] = d.decode(snapshot_frame(channel=pb.CHANNEL_TRADES, seq=5))
    assert snap.epoch is None
    [snap] = d.decode('{"type":"snapshot","symbol":"BTC-USD","channel":"quotes","seq":3,"epoch":99,"data":null,'
                      '"ts_event":1,"ts_recv":2,"ts_send":3}')
    assert (snap.seq, snap.epoch) == (3, 99)
    assert d.decode('{"type":"live","symbol":"BTC-USD","channel":"trades","seq":5120,"epoch":99}') == [
        Live("BTC-USD", "trades", 5120, 99)
    ]
    assert d.decode('{"type":"gap","symbol":"A","channel":"book","from_seq":8,"to_seq":3,"reason":"epoch_changed"}') == [
        Gap("A", "book", 8, 3, "epoch_changed")
    ]


def test_subscribe_carries_the_epoch_with_since_and_since_time_alone():
    since = {("BTC-USD", "trades"): 40}
    msg = json.loads(encode_subscribe("json", ["BTC-USD"], ["trades"], since, epoch=7))
    assert msg["since"] == {"BTC-USD": {"trades": 40}} and msg["epoch"] == 7 and "since_time" not in msg
    sub = pb.ClientMessage.FromString(encode_subscribe("proto", ["BTC-USD"], ["trades"], since, epoch=7)).subscribe
    assert (sub.epoch, sub.since_time, [s.seq for s in sub.since]) == (7, 0, [40])
    # No since: no epoch (it names the run of the since sequences only).
    assert "epoch" not in json.loads(encode_subscribe("json", ["A"], ["trades"], epoch=7))
    t = 1_764_547_200_123_456_789
    msg = json.loads(encode_subscribe("json", ["A"], ["trades", "quotes"], since_time=t))
    assert msg["since_time"] == t and "since" not in msg and "epoch" not in msg
    sub = pb.ClientMessage.FromString(encode_subscribe("proto", ["A"], ["trades"], since_time=t)).subscribe
    assert sub.since_time == t and not sub.since and sub.epoch == 0
    with pytest.raises(ValueError):
        encode_subscribe("json", ["A"], ["trades"], since, since_time=t)


def test_times_convert_to_ns_exactly():
    from datetime import datetime, timedelta, timezone

    from tickwire_client import to_ns

    assert to_ns(1_764_547_200_000_000_001) == 1_764_547_200_000_000_001
    assert to_ns("2025-12-01T00:00:00Z") == 1_764_547_200 * 10**9
    assert to_ns("2025-12-01T00:00:00.123456789Z") == 1_764_547_200_123_456_789
    assert to_ns("2025-12-01T01:00:00.5+01:00") == 1_764_547_200_500_000_000
    aware = datetime(2025, 12, 1, 1, 0, 0, 250, tzinfo=timezone(timedelta(hours=1)))
    assert to_ns(aware) == 1_764_547_200_000_250_000
    assert to_ns(datetime(2025, 12, 1)) == 1_764_547_200 * 10**9  # naive: UTC
    for bad in ("2025-12-01", "yesterday", -1, 1.5, True):
        with pytest.raises((ValueError, TypeError)):
            to_ns(bad)


def test_resume_point_keeps_epochs_and_round_trips_through_json():
    from tickwire_client import ResumePoint

    rp = ResumePoint({("BTC-USD", "trades"): 40, ("BTC-USD", "quotes"): 12}, {("BTC-USD", "trades"): 7,
                                                                             ("BTC-USD", "quotes"): 7})
    assert rp[("BTC-USD", "trades")] == 40 and rp == {("BTC-USD", "trades"): 40, ("BTC-USD", "quotes"): 12}
    assert rp.epoch == 7
    again = ResumePoint.from_json(json.loads(json.dumps(rp.to_json())))
    assert again == rp and again.epochs == rp.epochs
    mixed = ResumePoint(rp, {("BTC-USD", "trades"): 7, ("BTC-USD", "quotes"): 8})
    assert mixed.epoch is None


def test_replay_status_and_end_decode_the_same_in_both_formats_and_teach_the_instruments():
    status = pb.ReplayStatus(state=pb.ReplayStatus.STATE_PAUSED, speed="2.5", at=15, to=20,
                             instruments=[pb.InstrumentInfo(instrument_id=3, symbol="AAPL", price_decimals=2,
                                                            size_decimals=0)])
    setattr(status, "from", 10)  # `from` is a Python keyword
    p = Decoder()
    [from_proto] = p.decode(pb.ServerMessage(replay=status).SerializeToString())
    j = Decoder()
    [from_json] = j.decode('{"type":"replay","state":"paused","speed":"2.5","at":15,"from":10,"to":20,'
                           '"instruments":[{"instrument_id":3,"symbol":"AAPL","price_decimals":2,"size_decimals":0}]}')
    assert from_proto == from_json == ReplayStatus("paused", "2.5", 15, 10, 20, (Instrument(3, "AAPL", 2, 0),))
    # A protobuf update of an instrument no snapshot introduced decodes with the status's table.
    update = pb.Update(instrument_id=3, seq=7, ts_event=100, trade=pb.Trade(price=22850, size=5, side=pb.SIDE_SELL))
    [trade] = p.decode(pb.ServerMessage(batch=pb.Batch(updates=[update])).SerializeToString())
    assert trade == Trade("AAPL", 7, Decimal("228.50"), Decimal("5"), "sell", 0, 100, 100, 100)
    end = pb.ReplayEnd(events=42, to=20)
    setattr(end, "from", 10)
    assert p.decode(pb.ServerMessage(end=end).SerializeToString()) == [ReplayEnd(42, 10, 20)]
    assert j.decode('{"type":"end","events":42,"from":10,"to":20}') == [ReplayEnd(42, 10, 20)]
    # A later status lists no instruments; the table stays.
    [later] = j.decode('{"type":"replay","state":"playing","speed":"max","at":16,"from":10,"to":20}')
    assert later.instruments == () and j.instruments[3].symbol == "AAPL"


def test_a_replay_book_snapshot_has_no_epoch_in_either_format():
    # A replay's snapshots carry epoch 0 (no live run); protobuf cannot send 0 apart from unset.
    [p] = Decoder().decode(snapshot_frame(channel=pb.CHANNEL_BOOK, seq=5, epoch=0, book=pb.Book()))
    [j] = Decoder().decode('{"type":"snapshot","symbol":"BTC-USD","channel":"book","seq":5,"epoch":0,'
                           '"data":{"bids":[],"asks":[]},"ts_event":1,"ts_recv":2,"ts_send":3}')
    assert p.epoch is None and j.epoch is None


@pytest.mark.parametrize(
    "op, value, want_json, want_proto",
    [
        ("pause", None, {"op": "pause"}, "pause"),
        ("resume", None, {"op": "resume"}, "resume"),
        ("speed", "max", {"op": "speed", "speed": "max"}, "speed"),
        ("speed", 2.5, {"op": "speed", "speed": "2.5"}, "speed"),
        ("speed", 10, {"op": "speed", "speed": "10"}, "speed"),
        ("seek", 1_764_851_400_123_456_789, {"op": "seek", "to": 1_764_851_400_123_456_789}, "seek_to"),
    ],
)
def test_replay_controls_encode_in_both_formats(op, value, want_json, want_proto):
    assert json.loads(encode_replay_control("json", op, value)) == want_json
    control = pb.ClientMessage.FromString(encode_replay_control("proto", op, value)).replay
    assert control.WhichOneof("action") == want_proto
    if op == "speed":
        assert control.speed == want_json["speed"]
    if op == "seek":
        assert control.seek_to == value


@pytest.mark.parametrize("op, value", [("speed", 0), ("speed", -1.5), ("speed", float("nan")), ("speed", True),
                                       ("speed", None), ("pause", 1), ("seek", -1), ("seek", "soon"), ("warp", None)])
def test_bad_replay_controls_are_refused_before_sending(op, value):
    with pytest.raises(ValueError):
        encode_replay_control("json", op, value)
