"""Pure encoding and decoding of protocol v1 frames (no I/O).

:class:`Decoder` turns one server frame (protobuf ``bytes`` or JSON ``str``)
into a list of typed events. It keeps the instrument table that protobuf
updates need: an ``Update`` names its symbol by ``instrument_id`` and carries
prices and sizes as int64 mantissas; the id, the symbol and both scales come
with every ``Snapshot`` of that symbol.

``encode_subscribe`` / ``encode_unsubscribe`` / ``encode_ping`` build client
frames in either format, and ``encode_replay_control`` the controls of a replay
session (``/v1/replay``), whose ``replay`` and ``end`` messages decode as
:class:`ReplayStatus` and :class:`ReplayEnd`.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Iterable, Mapping, Optional, Union

from ._proto import pb
from .events import (
    CANDLE_INTERVALS,
    CHANNELS,
    BookInvalidated,
    BookUpdate,
    Candle,
    Event,
    Gap,
    Instrument,
    Live,
    Pong,
    Quote,
    ReplayEnd,
    ReplayStatus,
    ServerError,
    Snapshot,
    Trade,
    Update,
)

__all__ = [
    "Decoder",
    "Instrument",
    "ProtocolError",
    "FORMATS",
    "SUBPROTOCOLS",
    "encode_subscribe",
    "encode_unsubscribe",
    "encode_ping",
    "encode_replay_control",
    "REPLAY_CONTROLS",
    "to_decimal",
]

FORMATS = ("proto", "json")
#: The WebSocket subprotocol that selects each format.
SUBPROTOCOLS = {"proto": "tickwire.v1.proto", "json": "tickwire.v1.json"}

_CHANNEL_TO_PB = {
    "quotes": pb.CHANNEL_QUOTES,
    "trades": pb.CHANNEL_TRADES,
    "book": pb.CHANNEL_BOOK,
    "candles.1s": pb.CHANNEL_CANDLES_1S,
    "candles.1m": pb.CHANNEL_CANDLES_1M,
    "candles.5m": pb.CHANNEL_CANDLES_5M,
    "candles.1h": pb.CHANNEL_CANDLES_1H,
    "candles.1d": pb.CHANNEL_CANDLES_1D,
}
_PB_TO_CHANNEL = {v: k for k, v in _CHANNEL_TO_PB.items()}
_PB_TO_INTERVAL = {
    pb.CANDLE_INTERVAL_1S: "1s",
    pb.CANDLE_INTERVAL_1M: "1m",
    pb.CANDLE_INTERVAL_5M: "5m",
    pb.CANDLE_INTERVAL_1H: "1h",
    pb.CANDLE_INTERVAL_1D: "1d",
}
assert tuple(_CHANNEL_TO_PB) == CHANNELS and tuple(_PB_TO_INTERVAL.values()) == CANDLE_INTERVALS
_PB_TO_SIDE = {pb.SIDE_BUY: "buy", pb.SIDE_SELL: "sell"}
_PB_TO_STATE = {pb.ReplayStatus.STATE_PLAYING: "playing", pb.ReplayStatus.STATE_PAUSED: "paused"}
_DELIVERY_TO_PB = {
    "full": pb.DELIVERY_FULL,
    "conflate": pb.DELIVERY_CONFLATE,
    "snapshot_on_lag": pb.DELIVERY_SNAPSHOT_ON_LAG,
}

Frame = Union[bytes, str]
#: Resume points: the last sequence seen per (symbol, channel).
SinceMap = Mapping[tuple[str, str], int]


class ProtocolError(ValueError):
    """A frame the client cannot decode (malformed protobuf or JSON)."""


def to_decimal(mantissa: int, decimals: int) -> Decimal:
    """``mantissa × 10^-decimals``, exactly (``6412350, 2`` → ``Decimal('64123.50')``)."""
    # Exact: an int64 has at most 19 digits, under the default context's 28.
    return Decimal(mantissa).scaleb(-decimals)


def _check_channel(channel: str) -> str:
    if channel not in _CHANNEL_TO_PB:
        raise ValueError(f"unknown channel {channel!r} (channels: {', '.join(CHANNELS)})")
    return channel


# ---------------------------------------------------------------- client frames


def encode_subscribe(
    fmt: str,
    symbols: Iterable[str],
    channels: Iterable[str],
    since: Optional[SinceMap] = None,
    delivery: Optional[str] = None,
    conflate_ms: Optional[int] = None,
    *,
    epoch: Optional[int] = None,
    since_time: Optional[int] = None,
) -> Frame:
    """A ``subscribe`` request. ``since`` maps (symbol, channel) to the last
    sequence seen; those streams resume instead of starting from a snapshot.
    ``epoch`` is the server run those sequences come from (the ``epoch`` of the
    snapshot or live marker they continue); it is sent only with ``since``.
    ``since_time`` (ns since the Unix epoch) starts from stored history at that
    exchange time instead of a snapshot; it cannot be combined with ``since``."""
    symbols = list(symbols)
    channels = [_check_channel(c) for c in channels]
    since = dict(since or {})
    if since and since_time is not None:
        raise ValueError("since and since_time cannot be combined in one subscribe")
    if since_time is not None and (isinstance(since_time, bool) or not isinstance(since_time, int) or since_time < 0):
        raise ValueError(f"since_time must be a non-negative integer of ns, not {since_time!r}")
    if not since:
        epoch = None
    if delivery is not None and delivery not in _DELIVERY_TO_PB:
        raise ValueError(f"unknown delivery {delivery!r} (one of {', '.join(_DELIVERY_TO_PB)})")
    if fmt == "proto":
        sub = pb.Subscribe(
            channels=[_CHANNEL_TO_PB[c] for c in channels],
            symbols=symbols,
            since=[
                pb.Since(symbol=s, channel=_CHANNEL_TO_PB[_check_channel(c)], seq=seq)
                for (s, c), seq in sorted(since.items())
            ],
        )
        if delivery is not None:
            sub.delivery = _DELIVERY_TO_PB[delivery]
        if conflate_ms is not None:
            sub.conflate_ms = conflate_ms
        if epoch is not None:
            sub.epoch = epoch
        if since_time is not None:
            sub.since_time = since_time
        return pb.ClientMessage(subscribe=sub).SerializeToString()
    if fmt == "json":
        msg: dict = {"op": "subscribe", "channels": channels, "symbols": symbols}
        if since:
            per_symbol: dict[str, dict[str, int]] = {}
            for (s, c), seq in sorted(since.items()):
                per_symbol.setdefault(s, {})[_check_channel(c)] = seq
            msg["since"] = per_symbol
            if epoch is not None:
                msg["epoch"] = epoch
        if since_time is not None:
            msg["since_time"] = since_time
        if delivery is not None:
            msg["delivery"] = delivery
        if conflate_ms is not None:
            msg["conflate_ms"] = conflate_ms
        return json.dumps(msg, separators=(",", ":"))
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


def encode_unsubscribe(fmt: str, symbols: Iterable[str], channels: Iterable[str]) -> Frame:
    symbols = list(symbols)
    channels = [_check_channel(c) for c in channels]
    if fmt == "proto":
        msg = pb.ClientMessage(
            unsubscribe=pb.Unsubscribe(channels=[_CHANNEL_TO_PB[c] for c in channels], symbols=symbols)
        )
        return msg.SerializeToString()
    if fmt == "json":
        return json.dumps({"op": "unsubscribe", "channels": channels, "symbols": symbols}, separators=(",", ":"))
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


def encode_ping(fmt: str, id: int) -> Frame:
    if fmt == "proto":
        return pb.ClientMessage(ping=pb.Ping(id=id)).SerializeToString()
    if fmt == "json":
        return json.dumps({"op": "ping", "id": id}, separators=(",", ":"))
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


#: The controls of a replay session, and whether each takes a value.
REPLAY_CONTROLS = {"pause": False, "resume": False, "speed": True, "seek": True}


def speed_text(speed: Union[int, float, Decimal, str]) -> str:
    """A replay speed as the server reads it: ``"max"`` or a factor of real
    time (``2.5`` → ``"2.5"``). A string goes as it is (the server judges it:
    ``bad_speed``); a number must be positive and finite."""
    if isinstance(speed, str):
        if not speed.strip():
            raise ValueError("a replay speed is \"max\" or a positive factor, not an empty string")
        return speed.strip()
    if isinstance(speed, (int, float, Decimal)) and not isinstance(speed, bool):
        value = Decimal(str(speed))
    else:
        raise ValueError(f"a replay speed is \"max\" or a positive factor, not {speed!r}")
    if not value.is_finite() or value <= 0:
        raise ValueError(f"a replay speed is \"max\" or a positive factor, not {speed!r}")
    return format(value.normalize(), "f")


def encode_replay_control(fmt: str, op: str, value: Union[int, float, Decimal, str, None] = None) -> Frame:
    """A control of a replay session: ``pause``, ``resume``, ``speed`` (value:
    ``"max"`` or a factor) or ``seek`` (value: ns since the Unix epoch). JSON
    ``{"op":…}`` text, or a protobuf ``ClientMessage`` holding a ``ReplayControl``.
    (A replay's ``ping`` is :func:`encode_ping`.)"""
    if op not in REPLAY_CONTROLS:
        raise ValueError(f"unknown replay control {op!r} (one of {', '.join(REPLAY_CONTROLS)})")
    if REPLAY_CONTROLS[op] != (value is not None):
        raise ValueError(f"replay control {op!r} " + ("needs a value" if REPLAY_CONTROLS[op] else "takes no value"))
    if op == "speed":
        value = speed_text(value)  # type: ignore[arg-type]
    if op == "seek" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"seek takes ns since the Unix epoch, not {value!r}")
    if fmt == "proto":
        if op == "pause":
            control = pb.ReplayControl(pause=pb.ReplayControl.Pause())
        elif op == "resume":
            control = pb.ReplayControl(resume=pb.ReplayControl.Resume())
        elif op == "speed":
            control = pb.ReplayControl(speed=value)
        else:
            control = pb.ReplayControl(seek_to=value)
        return pb.ClientMessage(replay=control).SerializeToString()
    if fmt == "json":
        msg: dict = {"op": op}
        if op == "speed":
            msg["speed"] = value
        elif op == "seek":
            msg["to"] = value
        return json.dumps(msg, separators=(",", ":"))
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


# ---------------------------------------------------------------- server frames


class Decoder:
    """Decodes server frames of either format into events.

    Holds the instrument table learnt from protobuf snapshots (it survives
    reconnects: instrument ids are stable while the server runs).
    """

    def __init__(self) -> None:
        self.instruments: dict[int, Instrument] = {}

    def learn(self, instrument: Instrument) -> None:
        self.instruments[instrument.instrument_id] = instrument

    def decode(self, frame: Frame) -> list[Event]:
        """Decodes one frame: ``bytes`` as protobuf, ``str`` as JSON."""
        if isinstance(frame, (bytes, bytearray, memoryview)):
            return self.decode_proto(bytes(frame))
        return self.decode_json(frame)

    # ------------------------------------------------------------ protobuf

    def _pb_data(
        self,
        kind: Optional[str],
        holder,
        inst: Instrument,
        seq: int,
        clocks: tuple[int, int, int],
        channel: Optional[str] = None,
    ) -> Optional[Update]:
        pd, sd = inst.price_decimals, inst.size_decimals
        dec = to_decimal
        if kind == "quote":
            q = holder.quote
            return Quote(inst.symbol, seq, dec(q.bid, pd), dec(q.bid_size, sd), dec(q.ask, pd), dec(q.ask_size, sd), *clocks)
        if kind == "trade":
            t = holder.trade
            return Trade(inst.symbol, seq, dec(t.price, pd), dec(t.size, sd), _PB_TO_SIDE.get(t.side), t.trade_id, *clocks)
        if kind == "book":
            b = holder.book
            bids = tuple((dec(lv.price, pd), dec(lv.size, sd)) for lv in b.bids)
            asks = tuple((dec(lv.price, pd), dec(lv.size, sd)) for lv in b.asks)
            return BookUpdate(inst.symbol, seq, bids, asks, *clocks)
        if kind == "candle":
            c = holder.candle
            # The candle names its width; a snapshot's channel does too.
            interval = _PB_TO_INTERVAL.get(c.interval) or _interval_of(channel)
            if interval is None:
                return None
            return Candle(
                inst.symbol, seq, interval, c.start,
                dec(c.open, pd), dec(c.high, pd), dec(c.low, pd), dec(c.close, pd),
                dec(c.volume, sd), c.trades, c.closed, *clocks,
            )
        return None

    def decode_proto(self, frame: bytes) -> list[Event]:
        msg = pb.ServerMessage()
        try:
            msg.ParseFromString(frame)
        except Exception as exc:  # google.protobuf.message.DecodeError
            raise ProtocolError(f"malformed protobuf frame ({len(frame)} bytes): {exc}") from exc
        kind = msg.WhichOneof("kind")
        if kind == "batch":
            out: list[Event] = []
            instruments = self.instruments
            for u in msg.batch.updates:
                inst = instruments.get(u.instrument_id)
                if inst is None:
                    out.append(
                        ServerError(
                            "client_unknown_instrument",
                            f"update seq {u.seq} names instrument_id {u.instrument_id}, which no snapshot introduced",
                        )
                    )
                    continue
                ts_event = u.ts_event
                ts_recv = ts_event + u.recv_delta_ns
                clocks = (ts_event, ts_recv, ts_recv + u.send_delta_ns)
                data = self._pb_data(u.WhichOneof("data"), u, inst, u.seq, clocks)
                if data is None:
                    out.append(ServerError("client_empty_update", f"update seq {u.seq} of {inst.symbol} has no data"))
                else:
                    out.append(data)
            return out
        if kind == "snapshot":
            s = msg.snapshot
            inst = Instrument(s.instrument_id, s.symbol, s.price_decimals, s.size_decimals)
            self.learn(inst)
            clocks = (s.ts_event, s.ts_recv, s.ts_send)
            channel = _PB_TO_CHANNEL.get(s.channel, "unspecified")
            data = self._pb_data(s.WhichOneof("data"), s, inst, s.seq, clocks, channel)
            return [
                Snapshot(
                    s.symbol, channel, s.seq, data, *clocks, s.instrument_id, s.price_decimals, s.size_decimals,
                    s.epoch or None,
                )
            ]
        if kind == "gap":
            g = msg.gap
            return [Gap(g.symbol, _PB_TO_CHANNEL.get(g.channel, "unspecified"), g.from_seq, g.to_seq, g.reason)]
        if kind == "book_invalidated":
            return [BookInvalidated(msg.book_invalidated.symbol, msg.book_invalidated.seq)]
        if kind == "error":
            e = msg.error
            return [ServerError(e.code, e.message, e.op or None, e.symbol or None, _PB_TO_CHANNEL.get(e.channel))]
        if kind == "pong":
            return [Pong(msg.pong.id, msg.pong.ts_send)]
        if kind == "live":
            lv = msg.live
            return [Live(lv.symbol or None, _PB_TO_CHANNEL.get(lv.channel), lv.seq, lv.epoch or None)]
        if kind == "replay":
            r = msg.replay
            instruments = tuple(
                Instrument(i.instrument_id, i.symbol, i.price_decimals, i.size_decimals) for i in r.instruments
            )
            for inst in instruments:
                self.learn(inst)
            state = _PB_TO_STATE.get(r.state, "unspecified")
            return [ReplayStatus(state, r.speed, r.at, getattr(r, "from"), r.to, instruments)]
        if kind == "end":
            return [ReplayEnd(msg.end.events, getattr(msg.end, "from"), msg.end.to)]
        # An empty message, or a kind newer than this schema: nothing to deliver.
        return []

    # ------------------------------------------------------------ JSON

    def decode_json(self, frame: str) -> list[Event]:
        try:
            msg = json.loads(frame)
        except ValueError as exc:
            raise ProtocolError(f"malformed JSON frame: {exc}") from exc
        if not isinstance(msg, dict):
            raise ProtocolError("a JSON frame must be an object")
        kind = msg.get("type")
        try:
            if kind == "batch":
                return [self._json_update(u) for u in msg["updates"]]
            if kind == "snapshot":
                channel = msg["channel"]
                clocks = (msg["ts_event"], msg["ts_recv"], msg["ts_send"])
                data = msg.get("data")
                value = None if data is None else _json_data(channel, msg["symbol"], msg["seq"], data, clocks)
                return [
                    Snapshot(
                        msg["symbol"],
                        channel,
                        msg["seq"],
                        value,
                        *clocks,
                        msg.get("instrument_id"),
                        msg.get("price_decimals"),
                        msg.get("size_decimals"),
                        _epoch(msg.get("epoch")),
                    )
                ]
            if kind == "gap":
                return [Gap(msg["symbol"], msg["channel"], msg["from_seq"], msg["to_seq"], msg.get("reason", ""))]
            if kind == "book_invalidated":
                return [BookInvalidated(msg["symbol"], msg["seq"])]
            if kind == "error":
                return [
                    ServerError(
                        msg.get("code", ""),
                        msg.get("message", ""),
                        msg.get("op"),
                        msg.get("symbol") or None,
                        msg.get("channel") or None,
                    )
                ]
            if kind == "pong":
                return [Pong(msg.get("id"), msg.get("ts_send"))]
            if kind == "live":
                return [Live(msg.get("symbol"), msg.get("channel"), msg.get("seq"), _epoch(msg.get("epoch")))]
            if kind == "replay":
                instruments = tuple(
                    Instrument(int(i["instrument_id"]), i["symbol"], int(i["price_decimals"]), int(i["size_decimals"]))
                    for i in msg.get("instruments") or ()
                )
                for inst in instruments:
                    self.learn(inst)
                return [
                    ReplayStatus(
                        msg["state"], str(msg["speed"]), int(msg["at"]), int(msg["from"]), int(msg["to"]), instruments
                    )
                ]
            if kind == "end":
                return [ReplayEnd(int(msg["events"]), int(msg["from"]), int(msg["to"]))]
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise ProtocolError(f"malformed {kind} message: {exc!r}") from exc
        return []  # a message type newer than this client

    def _json_update(self, u: dict) -> Update:
        clocks = (u["ts_event"], u["ts_recv"], u["ts_send"])
        return _json_data(u["channel"], u["symbol"], u["seq"], u, clocks)


def _epoch(value) -> Optional[int]:
    # 0 names no server run (a replay's book snapshots: stored sequences resume
    # no live run); protobuf cannot tell it from an unset field, so both are None.
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"epoch must be an integer, not {value!r}")
    return value or None


def _levels(levels) -> tuple:
    return tuple((Decimal(p), Decimal(s)) for p, s in levels)


def _json_data(channel: str, symbol: str, seq: int, d: dict, clocks: tuple[int, int, int]) -> Update:
    if channel == "quotes":
        return Quote(symbol, seq, Decimal(d["bid"]), Decimal(d["bid_size"]), Decimal(d["ask"]), Decimal(d["ask_size"]), *clocks)
    if channel == "trades":
        return Trade(symbol, seq, Decimal(d["price"]), Decimal(d["size"]), d.get("side"), d["trade_id"], *clocks)
    if channel == "book":
        return BookUpdate(symbol, seq, _levels(d["bids"]), _levels(d["asks"]), *clocks)
    interval = _interval_of(channel)
    if interval is not None:
        closed = d["closed"]
        if not isinstance(closed, bool):
            raise TypeError(f"candle closed must be true or false, not {closed!r}")
        return Candle(
            symbol, seq, interval, int(d["start"]),
            Decimal(d["open"]), Decimal(d["high"]), Decimal(d["low"]), Decimal(d["close"]),
            Decimal(d["volume"]), int(d["trades"]), closed, *clocks,
        )
    raise KeyError(f"channel {channel!r}")


def _interval_of(channel: Optional[str]) -> Optional[str]:
    """``"candles.1m"`` → ``"1m"``; ``None`` for any other channel."""
    if channel and channel.startswith("candles."):
        interval = channel[len("candles."):]
        if interval in CANDLE_INTERVALS:
            return interval
    return None
