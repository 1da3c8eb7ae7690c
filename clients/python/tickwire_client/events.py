"""Typed events a :class:`~tickwire_client.TickwireClient` yields.

Market data (``Quote``, ``Trade``, ``BookUpdate``, ``Candle``) carries exact values:
prices and sizes are :class:`decimal.Decimal`, timestamps are integer
nanoseconds since the Unix epoch, and ``seq`` is the sequence number of the
(symbol, channel) stream. The same classes describe a ``Snapshot``'s data.

Everything else the server says is an event too: ``Snapshot``, ``Gap``,
``BookInvalidated``, ``ServerError``, ``Pong`` and ``Live``; a replay
(:class:`~tickwire_client.TickwireReplay`) adds ``ReplayStatus`` and ``ReplayEnd``. Use ``isinstance``
or ``match`` to pick what a script needs::

    async for event in client:
        match event:
            case Trade(symbol=s, price=p, size=q): ...
            case Gap(): log.warning("lost %s", event)
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Optional, Union

__all__ = [
    "Quote",
    "Trade",
    "BookUpdate",
    "Candle",
    "Level",
    "Update",
    "Snapshot",
    "Gap",
    "BookInvalidated",
    "ServerError",
    "Pong",
    "Live",
    "ReplayStatus",
    "ReplayEnd",
    "Instrument",
    "Event",
    "CHANNELS",
    "DEFAULT_CHANNELS",
    "CANDLE_INTERVALS",
    "candle_channel",
]

#: Widths of the live candle channels (``candles.<interval>``), in the protobuf
#: ``CandleInterval`` enum's order.
CANDLE_INTERVALS = ("1s", "1m", "5m", "1h", "1d")

#: Every channel of protocol v1, in the protobuf ``Channel`` enum's order.
CHANNELS = ("quotes", "trades", "book", *(f"candles.{i}" for i in CANDLE_INTERVALS))

#: What a client subscribes to when it names no channels.
DEFAULT_CHANNELS = ("quotes", "trades", "book")


def candle_channel(interval: str) -> str:
    """``"1m"`` → ``"candles.1m"``."""
    if interval not in CANDLE_INTERVALS:
        raise ValueError(f"unknown candle interval {interval!r} (one of {', '.join(CANDLE_INTERVALS)})")
    return f"candles.{interval}"

#: One book level: (price, size). A size of 0 in an update removes the level.
Level = tuple[Decimal, Decimal]


@dataclass(frozen=True, slots=True)
class Quote:
    """Best bid and offer of ``symbol`` at sequence ``seq`` of its quotes stream."""

    channel: ClassVar[str] = "quotes"
    symbol: str
    seq: int
    bid: Decimal
    bid_size: Decimal
    ask: Decimal
    ask_size: Decimal
    ts_event: int
    ts_recv: int
    ts_send: int

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2

    @property
    def spread(self) -> Decimal:
        return self.ask - self.bid


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade; ``side`` is the aggressor, ``"buy"`` or ``"sell"``."""

    channel: ClassVar[str] = "trades"
    symbol: str
    seq: int
    price: Decimal
    size: Decimal
    side: Optional[str]
    trade_id: int
    ts_event: int
    ts_recv: int
    ts_send: int


@dataclass(frozen=True, slots=True)
class BookUpdate:
    """Book levels, best first. In an update: the changed levels only (size 0
    removes a level). As a ``Snapshot``'s data: the whole top of book."""

    channel: ClassVar[str] = "book"
    symbol: str
    seq: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    ts_event: int
    ts_recv: int
    ts_send: int


@dataclass(frozen=True, slots=True)
class Candle:
    """OHLCV of the trades of ``symbol`` with ``start <= ts_event < start + interval``,
    from a ``candles.<interval>`` channel (``interval`` is ``"1s"``, ``"1m"``,
    ``"5m"``, ``"1h"`` or ``"1d"``; ``start`` is ns since the epoch, aligned to it).

    The server sends the same bucket again as trades arrive (the value so far,
    ``closed=False``) and a last time with ``closed=True`` and its final value;
    history of closed candles comes from ``GET /v1/candles`` (see
    :func:`tickwire_client.fetch_candles`), which agrees with the live closed ones.
    """

    symbol: str
    seq: int
    interval: str
    start: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int
    closed: bool
    ts_event: int
    ts_recv: int
    ts_send: int

    @property
    def channel(self) -> str:
        return f"candles.{self.interval}"


#: A market-data update from a batch.
Update = Union[Quote, Trade, BookUpdate, Candle]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state of one channel of one symbol at ``seq``; updates continue at
    ``seq + 1``. ``data`` is ``None`` before the channel's first event.

    ``instrument_id``, ``price_decimals`` and ``size_decimals`` come with every
    protobuf snapshot; on a JSON connection they are ``None`` unless the server
    sends them (JSON carries exact decimal strings and needs no scale).
    """

    symbol: str
    channel: str
    seq: int
    data: Optional[Update]
    ts_event: int
    ts_recv: int
    ts_send: int
    instrument_id: Optional[int] = None
    price_decimals: Optional[int] = None
    size_decimals: Optional[int] = None
    #: The server run that assigned ``seq`` (``None`` from servers without
    #: epochs); a resume by sequence sends it back.
    epoch: Optional[int] = None


@dataclass(frozen=True, slots=True)
class Gap:
    """Sequences ``from_seq..=to_seq`` of (symbol, channel) will never arrive.

    ``reason`` is ``"slow_consumer"`` (the client fell behind),
    ``"history_exhausted"`` (a resume reached further back than the server's
    history; a fresh ``Snapshot`` follows) or ``"epoch_changed"`` (the resume
    point comes from another server run whose sequences do not continue here;
    a fresh ``Snapshot`` of the new run follows). The client itself
    reports ``"unannounced"`` when trade sequences jump with no notice from
    the server (trades are never conflated, so that is a server fault).
    """

    symbol: str
    channel: str
    from_seq: int
    to_seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class BookInvalidated:
    """The client's copy of the book is wrong; a fresh book ``Snapshot`` follows."""

    symbol: str
    seq: int
    channel: ClassVar[str] = "book"


@dataclass(frozen=True, slots=True)
class ServerError:
    """An ``error`` message: a stable ``code`` (e.g. ``"unknown_symbol"``), a
    human ``message`` and the ``op`` it answers, when known. An error about one
    stream also names it: ``symbol`` and ``channel`` (e.g. the stream whose
    ``since`` a ``bad_since`` refused); both are ``None`` otherwise, and from
    servers older than these fields. The connection stays open. Codes the
    client itself raises start with ``client_``."""

    code: str
    message: str
    op: Optional[str] = None
    symbol: Optional[str] = None
    channel: Optional[str] = None


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to :meth:`TickwireClient.ping`."""

    id: object
    ts_send: Optional[int] = None


@dataclass(frozen=True, slots=True)
class Live:
    """A stream served from stored history (a resume, or ``from_time``) has
    caught up: ``seq`` is the last stored update sent, live updates follow from
    ``seq + 1``. ``epoch`` is the server run of what follows (the client adopts
    it for the stream's resume point)."""

    symbol: Optional[str] = None
    channel: Optional[str] = None
    seq: Optional[int] = None
    epoch: Optional[int] = None


@dataclass(frozen=True, slots=True)
class Instrument:
    """An instrument's identity and scales, as ``GET /v1/instruments`` lists it
    (``instrument_id`` is its position there): what a protobuf ``Update`` needs
    to be decoded. Learnt from snapshots and from a replay's first status."""

    instrument_id: int
    symbol: str
    price_decimals: int
    size_decimals: int


@dataclass(frozen=True, slots=True)
class ReplayStatus:
    """The state of a replay session (``replay`` message, protobuf
    ``ReplayStatus``): sent first, and as the answer to every control.

    ``state`` is ``"playing"`` or ``"paused"``; ``speed`` is ``"max"`` or the
    factor of real time as text (``"2.5"``); ``at`` is the exchange time of the
    last event sent, or of the seek target; ``from_ns`` and ``to_ns`` are the
    replay's range (the wire's ``from`` and ``to``). All times are ns since the
    Unix epoch. ``instruments`` is filled in the first status only: every
    instrument the replay covers."""

    state: str
    speed: str
    at: int
    from_ns: int
    to_ns: int
    instruments: tuple[Instrument, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplayEnd:
    """The replay range has been sent in full (``end``, protobuf ``ReplayEnd``);
    the server closes with 1000 next. ``events`` counts the stored events sent:
    every update, and every stored book reset (sent as ``BookInvalidated`` and a
    ``Snapshot``); not the books sent at the start or at a seek."""

    events: int
    from_ns: int
    to_ns: int


#: Anything the client yields.
Event = Union[
    Quote, Trade, BookUpdate, Candle, Snapshot, Gap, BookInvalidated, ServerError, Pong, Live, ReplayStatus, ReplayEnd
]
