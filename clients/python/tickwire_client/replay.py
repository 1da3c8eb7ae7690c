"""Replay of stored events (``GET /v1/replay``): the same typed events as the
live client, from the gateway's history store, at a chosen speed, with
pause, resume, speed and seek controls.

::

    async with TickwireReplay("ws://127.0.0.1:8080/v1/ws", ["BTC-USD"], ["trades", "book"],
                              start="2026-12-04T15:40:00Z", end="2026-12-04T15:45:00Z",
                              speed="max") as replay:
        async for event in replay:
            if isinstance(event, Trade):
                print(event.seq, event.price, replay.books["BTC-USD"].best_bid())

The session opens with a :class:`ReplayStatus` (its ``instruments`` are what
protobuf updates need), then, with the ``book`` channel, each symbol's book as
it stood at ``start`` (a :class:`Snapshot` with ``epoch`` None: stored
sequences belong to no live run), or :class:`BookInvalidated` with ``seq`` 0
where the store holds none (that book's deltas are withheld until a stored
reset, which comes as ``BookInvalidated`` and a ``Snapshot``). Updates follow
in exchange-time order, with :class:`Gap` where the store recorded a hole, and
the session ends with :class:`ReplayEnd` and a close 1000, which ends the
iteration. Every control is answered by a ``ReplayStatus``; a seek also sends
every book again, as it stood at the seek's time. :attr:`TickwireReplay.books`
keeps an :class:`OrderBook` per symbol from all of that.

A replay does not reconnect: a connection lost before ``ReplayEnd`` raises
:class:`TickwireError` (:attr:`TickwireReplay.at` says how far it got; a new
replay can start there). Reading is pull-based, as in the live client: frames are read
only as the caller iterates, and the server paces itself to the socket.
"""

from __future__ import annotations

import collections
import itertools
import json
import urllib.parse
from dataclasses import dataclass
from typing import Iterable, Optional, Union

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from .book import OrderBook
from .client import TickwireError, TimeArg, to_ns
from .codec import FORMATS, SUBPROTOCOLS, Decoder, ProtocolError, encode_ping, encode_replay_control, speed_text
from .events import (
    BookInvalidated,
    BookUpdate,
    Candle,
    Event,
    Gap,
    Instrument,
    Quote,
    ReplayEnd,
    ReplayStatus,
    ServerError,
    Snapshot,
    Trade,
)
from .rest import auth_headers, http_base

__all__ = ["TickwireReplay", "ReplayRefused", "ReplayStats", "replay_url", "STORED_CHANNELS"]

#: The channels the store keeps, which are the ones a replay can read.
STORED_CHANNELS = ("quotes", "trades", "book")

SpeedArg = Union[int, float, str]


class ReplayRefused(TickwireError):
    """The gateway refused the replay before the WebSocket upgrade: ``status``
    is the HTTP status and ``code`` the server's stable code, e.g.
    ``unknown_symbol`` (404), ``bad_range``, ``bad_speed``, ``unknown_channel``,
    ``bad_request`` (400), ``unauthorized`` (401), ``history_disabled`` (503, a
    gateway without a store) or ``too_many_connections`` (503)."""

    def __init__(self, url: str, status: int, code: Optional[str], message: str) -> None:
        super().__init__(f"{url} refused the replay with HTTP {status} {code or ''}: {message}".replace("  ", " "))
        self.url = url
        self.status = status
        self.code = code
        self.message = message


@dataclass
class ReplayStats:
    """What a replay delivered."""

    binary_frames: int = 0
    text_frames: int = 0
    #: Market-data updates (quotes, trades, book deltas).
    updates: int = 0
    #: Book snapshots: at the start, at each seek and at each stored reset.
    snapshots: int = 0
    #: Of ``snapshots``: stored book resets (each after a ``BookInvalidated``).
    resets: int = 0
    gaps: int = 0
    errors: int = 0

    @property
    def stored_events(self) -> int:
        """Stored events received, counted as the server counts ``ReplayEnd.events``:
        the updates and the stored resets."""
        return self.updates + self.resets


def replay_url(
    url: str, symbols: Iterable[str], channels: Iterable[str], from_ns: int, to_ns: int, speed: str
) -> str:
    """The ``/v1/replay`` WebSocket URL of the gateway at ``url`` (its WebSocket
    or HTTP URL, e.g. ``ws://h:8080/v1/ws``) for this range."""
    base = http_base(url)
    scheme, rest = base.split("://", 1)
    scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    query = urllib.parse.urlencode(
        {"symbols": ",".join(symbols), "channels": ",".join(channels), "from": from_ns, "to": to_ns, "speed": speed},
        safe=",:*",
    )
    return f"{scheme}://{rest}/v1/replay?{query}"


class TickwireReplay:
    """A replay session of stored events (``GET /v1/replay``) for asyncio.

    :param url: the gateway's WebSocket or HTTP URL (``ws://h:8080/v1/ws``,
        ``http://h:8080``); the replay endpoint is found from it.
    :param symbols: the symbols to replay, as the live client names them.
    :param channels: stored channels: ``quotes``, ``trades``, ``book``.
    :param start: first exchange time of the range (inclusive) and
    :param end: its end (exclusive): each a :class:`~datetime.datetime` (naive
        taken as UTC), an RFC 3339 string (nanoseconds kept), or ns since the
        Unix epoch.
    :param speed: ``"max"`` or a factor of real time (``1`` real time, ``2.5``).
    :param format: ``"proto"`` (binary protobuf frames) or ``"json"``.
    :param token: access token of a gateway started with ``--auth-token``.

    A refused replay (unknown symbol, bad range, a gateway without a store …)
    raises :class:`ReplayRefused` with the server's ``code`` when it opens.
    """

    def __init__(
        self,
        url: str,
        symbols: Iterable[str],
        channels: Iterable[str],
        start: TimeArg,
        end: TimeArg,
        *,
        speed: SpeedArg = 1,
        format: str = "proto",
        token: Optional[str] = None,
        open_timeout: float = 10.0,
        ping_interval: Optional[float] = 20.0,
        ping_timeout: Optional[float] = 20.0,
        max_message_bytes: int = 64 << 20,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r} (one of {', '.join(FORMATS)})")
        self.symbols = list(symbols)
        if not self.symbols:
            raise ValueError("a replay needs at least one symbol")
        self.channels = list(channels)
        for ch in self.channels:
            if ch not in STORED_CHANNELS:
                raise ValueError(f"a replay reads the stored channels {', '.join(STORED_CHANNELS)}, not {ch!r}")
        #: The range, in ns since the Unix epoch.
        self.from_ns = to_ns(start)
        self.to_ns = to_ns(end)
        self.speed = speed_text(speed)
        self.format = format
        self.token = token or None
        self.url = replay_url(url, self.symbols, self.channels, self.from_ns, self.to_ns, self.speed)
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_message_bytes = max_message_bytes
        self.stats = ReplayStats()
        #: The latest :class:`ReplayStatus` (``None`` before the first).
        self.status: Optional[ReplayStatus] = None
        #: The instruments the replay covers, by symbol (from the first status).
        self.instruments: dict[str, Instrument] = {}
        #: Exchange time (ns) the replay has reached: the last update received,
        #: or the latest status's ``at`` (a seek's target) if that came later.
        self.at = self.from_ns
        #: The :class:`ReplayEnd` once it arrived.
        self.ended: Optional[ReplayEnd] = None
        #: An :class:`OrderBook` per symbol of the ``book`` channel, kept from
        #: the replay's snapshots, deltas and resets (after a seek: the book at
        #: the seek's time). A book is ``valid`` once a snapshot came.
        self.books: dict[str, OrderBook] = {}
        self._decoder = Decoder()
        self._ws: Optional[ClientConnection] = None
        self._pending: collections.deque[Event] = collections.deque()
        self._opened = False
        self._done = False
        self._closing = False
        self._ping_ids = itertools.count(1)
        # Symbols whose stored reset was announced (BookInvalidated, seq > 0)
        # and whose snapshot is due.
        self._resets_due: set[str] = set()

    # ------------------------------------------------------------ public API

    async def __aenter__(self) -> "TickwireReplay":
        await self.connect()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    def __aiter__(self) -> "TickwireReplay":
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._done:
                raise StopAsyncIteration
            ws = self._ws
            if ws is None:
                await self.connect()
                continue
            try:
                frame = await ws.recv()
            except ConnectionClosed as exc:
                self._on_closed(exc)
                continue
            self._on_frame(frame)

    async def connect(self) -> None:
        """Opens the replay (once). Iterating without calling it opens it too.
        Raises :class:`ReplayRefused` when the gateway refuses it."""
        if self._opened:
            if self._ws is None and not self._done:
                raise TickwireError("the replay's connection is gone")
            return
        self._opened = True
        want = SUBPROTOCOLS[self.format]
        try:
            ws = await connect(
                self.url,
                subprotocols=[want],
                open_timeout=self.open_timeout,
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_timeout,
                max_size=self.max_message_bytes,
                compression=None,
                additional_headers=auth_headers(self.token),
            )
        except InvalidStatus as exc:
            self._done = True
            raise _refusal(self.url, exc) from exc
        except InvalidURI as exc:
            self._done = True
            raise TickwireError(f"invalid URL {self.url!r}") from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            self._done = True
            raise TickwireError(f"cannot open the replay at {self.url}: {exc!r}") from exc
        if ws.subprotocol != want:
            await ws.close()
            self._done = True
            raise TickwireError(f"{self.url} did not accept the subprotocol {want} (got {ws.subprotocol!r})")
        self._ws = ws

    async def close(self) -> None:
        """Closes the session; iteration ends once queued events are consumed."""
        self._closing = True
        self._done = True
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def pause(self) -> None:
        """Stops sending events; a ``ReplayStatus`` with ``state="paused"`` answers."""
        await self._send(encode_replay_control(self.format, "pause"))

    async def resume(self) -> None:
        """Sends events again from where the replay paused."""
        await self._send(encode_replay_control(self.format, "resume"))

    async def set_speed(self, speed: SpeedArg) -> None:
        """``"max"`` or a factor of real time (``0.5``, ``1``, ``10``)."""
        await self._send(encode_replay_control(self.format, "speed", speed))

    async def seek(self, at: TimeArg) -> None:
        """Continues from exchange time ``at`` (inside the range; ns, datetime or
        RFC 3339): a ``ReplayStatus`` at ``at``, each book as it stood then,
        then the events from ``at`` on. Outside the range the server answers
        a ``ServerError`` with code ``bad_seek`` and the replay goes on."""
        await self._send(encode_replay_control(self.format, "seek", to_ns(at)))

    async def ping(self, id: Optional[int] = None) -> int:
        """Sends a ping; the :class:`Pong` with the same ``id`` arrives in the stream."""
        ping_id = next(self._ping_ids) if id is None else id
        await self._send(encode_ping(self.format, ping_id))
        return ping_id

    # ------------------------------------------------------------ internals

    async def _send(self, frame) -> None:
        ws = self._ws
        if ws is None:
            raise TickwireError("the replay is not open" if not self._done else "the replay has ended")
        try:
            await ws.send(frame)
        except ConnectionClosed:
            pass  # the reader sees the close

    def _on_closed(self, exc: ConnectionClosed) -> None:
        self._ws = None
        self._done = True
        if self._closing or self.ended is not None:
            return
        code = exc.rcvd.code if exc.rcvd is not None else None
        reason = exc.rcvd.reason if exc.rcvd is not None else "no close frame"
        raise TickwireError(f"the replay closed before its end ({code} {reason}), at {self.at}") from exc

    def _on_frame(self, frame) -> None:
        stats = self.stats
        if isinstance(frame, str):
            stats.text_frames += 1
        else:
            stats.binary_frames += 1
        try:
            events = self._decoder.decode(frame)
        except ProtocolError as exc:
            stats.errors += 1
            self._pending.append(ServerError("client_bad_frame", str(exc)))
            return
        for ev in events:
            if isinstance(ev, (Quote, Trade, BookUpdate, Candle)):
                stats.updates += 1
                self.at = ev.ts_event
                if isinstance(ev, BookUpdate):
                    self._book(ev.symbol).apply(ev)
            elif isinstance(ev, Snapshot):
                stats.snapshots += 1
                if ev.channel == "book":
                    self._book(ev.symbol).apply(ev)
                    if ev.symbol in self._resets_due:
                        self._resets_due.discard(ev.symbol)
                        stats.resets += 1
            elif isinstance(ev, BookInvalidated):
                self._book(ev.symbol).apply(ev)
                if ev.seq:  # a stored reset; seq 0: no book stored before this time
                    self._resets_due.add(ev.symbol)
                else:
                    self._resets_due.discard(ev.symbol)
            elif isinstance(ev, ReplayStatus):
                if ev.instruments:
                    self.instruments = {i.symbol: i for i in ev.instruments}
                self.status = ev
                self.at = ev.at
            elif isinstance(ev, ReplayEnd):
                self.ended = ev
            elif isinstance(ev, Gap):
                stats.gaps += 1
            elif isinstance(ev, ServerError):
                stats.errors += 1
            self._pending.append(ev)

    def _book(self, symbol: str) -> OrderBook:
        book = self.books.get(symbol)
        if book is None:
            book = self.books[symbol] = OrderBook(symbol)
        return book


def _refusal(url: str, exc: InvalidStatus) -> ReplayRefused:
    """The server's JSON error (``{"code","message"}``) of a refused upgrade."""
    response = exc.response
    code, message = None, response.reason_phrase
    try:
        body = json.loads(response.body or b"{}")
        if isinstance(body, dict):
            code, message = body.get("code"), body.get("message", message)
    except ValueError:
        pass
    return ReplayRefused(url, response.status_code, code, str(message))
