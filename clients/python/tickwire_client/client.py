"""The asyncio client: connect, subscribe, iterate decoded events, reconnect and resume.

::

    async with TickwireClient("ws://127.0.0.1:8080/v1/ws", symbols=["BTC-USD"]) as client:
        async for event in client:
            if isinstance(event, Trade):
                print(event.symbol, event.seq, event.price, event.size)

Reading is pull-based: frames are read from the socket only as the caller
iterates, so an event always belongs to the connection that was current when
it was yielded (``client.connection``), and a consumer that stops reading lets
the server's slow-consumer policy (conflation, gap notices) take over.

When a connection drops, the next iteration reconnects with jittered
exponential backoff and subscribes again with ``since`` = the last sequence
seen per (symbol, channel) and the epoch (server run) those sequences come
from. The server replays what was missed from its
recent-history ring, or announces a :class:`Gap` and sends a fresh
:class:`Snapshot`. Updates whose sequence was already delivered are dropped, so
every sequence reaches the caller at most once, in order. A resume point from
another server run that the server cannot continue is answered with a
:class:`Gap` (``reason="epoch_changed"``) and a fresh snapshot of the new run.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import random
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Mapping, Optional, Union

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from .codec import (
    FORMATS,
    SUBPROTOCOLS,
    Decoder,
    Instrument,
    ProtocolError,
    encode_ping,
    encode_subscribe,
    encode_unsubscribe,
)
from .events import (
    CHANNELS,
    DEFAULT_CHANNELS,
    BookUpdate,
    Candle,
    Event,
    Gap,
    Live,
    Quote,
    ServerError,
    Snapshot,
    Trade,
)
from .rest import auth_headers, fetch_instruments

__all__ = ["TickwireClient", "TickwireError", "ClientStats", "ResumePoint", "backoff_delay", "to_ns"]

log = logging.getLogger("tickwire_client")

#: Close codes after which reconnecting cannot help.
FATAL_CLOSE_CODES = {
    1002: "protocol error",
    1003: "unsupported data",
    1007: "invalid frame payload",
    1008: "policy violation",
    1009: "message too big",
    4001: "unauthorized",
}

# "since 9 is ahead of BTC-USD trades at 3": the bad_since message of servers
# that do not name the stream in the error's symbol and channel fields yet.
_BAD_SINCE = re.compile(r"ahead of (?P<symbol>\S+) (?P<channel>quotes|trades|book|candles\.\w+)(?=\s|$)")

SinceArg = Mapping[Union[str, tuple[str, str]], Union[int, Mapping[str, int]]]
TimeArg = Union[datetime, str, int]

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<tz>[Zz]|[+-]\d{2}:\d{2})"
)


def to_ns(value: TimeArg) -> int:
    """Nanoseconds since the Unix epoch from an ``int`` (already ns), an aware
    :class:`~datetime.datetime` (a naive one is taken as UTC), or an RFC 3339
    string such as ``"2026-12-04T15:40:00.123456789Z"`` (nanosecond digits kept)."""
    if isinstance(value, bool):
        raise TypeError(f"not a time: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a time before 1970 is not a valid since_time: {value}")
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        delta = value - datetime(1970, 1, 1, tzinfo=timezone.utc)
        ns = (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000
        return to_ns(ns)
    if isinstance(value, str):
        m = _RFC3339.fullmatch(value.strip())
        if not m:
            raise ValueError(f"not an RFC 3339 time (e.g. 2026-12-04T15:40:00Z): {value!r}")
        tz = "+00:00" if m["tz"] in ("Z", "z") else m["tz"]
        whole = datetime.fromisoformat(f"{m['date']}T{m['time']}{tz}")
        frac = (m["frac"] or "").ljust(9, "0")
        return to_ns(whole) + int(frac or 0)
    raise TypeError(f"a time is a datetime, an RFC 3339 string or ns since the epoch, not {type(value).__name__}")


class ResumePoint(dict):
    """Resume points: ``{(symbol, channel): last seq}``, plus the epoch (server
    run) each sequence belongs to in :attr:`epochs`.

    It is what :attr:`TickwireClient.last_seqs` returns, and a plain ``dict``
    for code that reads it as one. Handed to a new client as ``since=``, the
    epochs go with it. To keep it across processes, save :meth:`to_json` and
    load it with :meth:`from_json` (a plain ``dict`` copy loses the epochs; pass
    ``epoch=`` to the client then).
    """

    def __init__(self, seqs=(), epochs: Optional[Mapping[tuple[str, str], Optional[int]]] = None) -> None:
        super().__init__(seqs)
        #: The epoch per (symbol, channel); ``None`` where unknown.
        self.epochs: dict[tuple[str, str], Optional[int]] = {k: (epochs or {}).get(k) for k in self}

    @property
    def epoch(self) -> Optional[int]:
        """The epoch of every resume point when they share one (the usual case:
        one server run), else ``None``."""
        values = set(self.epochs.values())
        return values.pop() if len(values) == 1 else None

    def to_json(self) -> dict:
        """A JSON-ready form: ``{"streams": [{"symbol", "channel", "seq", "epoch"}]}``."""
        return {
            "streams": [
                {"symbol": s, "channel": c, "seq": seq, "epoch": self.epochs.get((s, c))}
                for (s, c), seq in sorted(self.items())
            ]
        }

    @classmethod
    def from_json(cls, data: Mapping) -> "ResumePoint":
        seqs, epochs = {}, {}
        for item in data["streams"]:
            key = (item["symbol"], item["channel"])
            seqs[key] = int(item["seq"])
            epoch = item.get("epoch")
            epochs[key] = None if epoch is None else int(epoch)
        return cls(seqs, epochs)

    def __repr__(self) -> str:
        return f"ResumePoint({dict(self)!r}, epochs={self.epochs!r})"


class TickwireError(Exception):
    """The client cannot go on: a fatal close, a refused handshake, or the
    reconnect attempts ran out."""


@dataclass
class ClientStats:
    """Counters over the client's life (all connections)."""

    #: Connections opened (the first one included).
    connections: int = 0
    binary_frames: int = 0
    text_frames: int = 0
    #: Market-data updates delivered to the caller.
    updates: int = 0
    #: Updates dropped because their sequence had already been delivered.
    duplicates: int = 0
    #: Gap notices, whatever the reason (``epoch_changed`` included), and
    #: skips the client announced itself.
    gaps: int = 0
    #: Of ``gaps``: resume points the server could not continue because they
    #: came from another server run (``epoch_changed``).
    epoch_changes: int = 0
    #: ``live`` markers: streams served from stored history that caught up.
    lives: int = 0
    snapshots: int = 0
    errors: int = 0


def backoff_delay(attempt: int, initial: float = 0.25, cap: float = 10.0, rng: random.Random | None = None) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based): an
    exponential ceiling ``min(cap, initial * 2**attempt)`` with "equal jitter",
    uniformly in ``[ceiling / 2, ceiling]``, so that many clients dropped at
    once do not come back in step."""
    ceiling = min(cap, initial * (2 ** min(attempt, 32)))
    return (rng or random).uniform(ceiling / 2, ceiling)


def _normalise_since(since: Optional[SinceArg], channels: Iterable[str]) -> dict[tuple[str, str], int]:
    """Accepts ``{(sym, ch): seq}``, ``{sym: {ch: seq}}`` or ``{sym: seq}`` (every channel)."""
    out: dict[tuple[str, str], int] = {}
    for key, value in (since or {}).items():
        if isinstance(key, tuple):
            out[(key[0], key[1])] = int(value)  # type: ignore[arg-type]
        elif isinstance(value, Mapping):
            for ch, seq in value.items():
                out[(key, ch)] = int(seq)
        else:
            for ch in channels:
                out[(key, ch)] = int(value)
    return out


class TickwireClient:
    """A Tickwire WebSocket client (protocol v1) for asyncio.

    :param url: the gateway's WebSocket endpoint, e.g. ``ws://127.0.0.1:8080/v1/ws``;
        several (a list, or comma-separated) for the gateways of one cluster:
        when one cannot be reached the client moves to the next and resumes
        there by sequence.
    :param symbols: symbols to subscribe to at connect.
    :param channels: channels for those symbols: ``quotes``, ``trades``, ``book``
        (the default) and the live candles ``candles.1s``, ``candles.1m``,
        ``candles.5m``, ``candles.1h``, ``candles.1d`` (yielded as :class:`Candle`).
    :param format: ``"proto"`` (binary protobuf frames) or ``"json"``.
    :param since: resume points to start from, e.g. saved ``client.last_seqs``
        (a :class:`ResumePoint`, which carries the epochs too), or
        ``{(symbol, channel): seq}``, ``{symbol: {channel: seq}}`` or ``{symbol: seq}``.
    :param epoch: the server run (``client.epoch``) the sequences of a plain
        ``since`` mapping come from; overrides the epochs of a :class:`ResumePoint`.
        Without one, the server honours ``since`` only where it can prove the
        sequences continue, and otherwise answers ``Gap(reason="epoch_changed")``
        and a fresh snapshot.
    :param from_time: start from stored history at this exchange time instead
        of a snapshot (a :class:`~datetime.datetime`, an RFC 3339 string, or ns
        since the Unix epoch): the stored updates from then on, a :class:`Live`
        marker, then the live stream. Applies to the streams without a resume
        point in ``since``; reconnects resume by sequence. Needs a server with a
        store (otherwise it answers ``bad_since`` and a snapshot); candles are not
        stored and start from a snapshot.
    :param delivery: the subscription's slow-consumer policy: ``"full"``,
        ``"conflate"`` (with ``conflate_ms``) or ``"snapshot_on_lag"``; default:
        the server's.
    :param reconnect: reconnect and resume when the connection drops.
    :param max_attempts: consecutive failed connection attempts before giving up
        with :class:`TickwireError` (``None``: never give up).
    :param backoff_initial: first backoff ceiling in seconds; doubles per failed
        attempt up to ``backoff_max``.
    :param token: access token of a gateway started with ``--auth-token``: sent
        as ``Authorization: Bearer <token>`` on the WebSocket upgrade and on the
        REST calls the client makes. A missing or wrong token is refused with
        HTTP 401, raised as :class:`TickwireError` (reconnecting cannot help).
    """

    def __init__(
        self,
        url: str | list[str],
        symbols: Iterable[str] = (),
        channels: Iterable[str] = DEFAULT_CHANNELS,
        format: str = "proto",
        *,
        since: Optional[SinceArg] = None,
        epoch: Optional[int] = None,
        from_time: Optional[TimeArg] = None,
        delivery: Optional[str] = None,
        conflate_ms: Optional[int] = None,
        reconnect: bool = True,
        max_attempts: Optional[int] = None,
        backoff_initial: float = 0.25,
        backoff_max: float = 10.0,
        open_timeout: float = 10.0,
        ping_interval: Optional[float] = 20.0,
        ping_timeout: Optional[float] = 20.0,
        max_message_bytes: int = 64 << 20,
        rng: Optional[random.Random] = None,
        token: Optional[str] = None,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r} (one of {', '.join(FORMATS)})")
        channels = list(channels)
        for ch in channels:
            if ch not in CHANNELS:
                raise ValueError(f"unknown channel {ch!r} (channels: {', '.join(CHANNELS)})")
        #: Every gateway URL given (``url`` may be a list, or comma-separated):
        #: a connection that fails moves to the next, and resumes there.
        self.urls = [u.strip() for u in (url.split(",") if isinstance(url, str) else url) if u.strip()]
        if not self.urls:
            raise ValueError("no gateway URL given")
        #: The URL in use.
        self.url = self.urls[0]
        self._url_index = 0
        self.token = token or None
        self.format = format
        self.delivery = delivery
        self.conflate_ms = conflate_ms
        self.reconnect = reconnect
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_message_bytes = max_message_bytes
        self.stats = ClientStats()
        #: Number of the current connection (1 for the first); events yielded
        #: between two reconnects all come from the same connection.
        self.connection = 0
        self._rng = rng or random.Random()
        # symbol -> channels, in subscription order.
        self._subs: dict[str, list[str]] = {}
        for s in symbols:
            self._add_sub(s, channels)
        self._last: dict[tuple[str, str], int] = _normalise_since(since, channels)
        # The epoch of each resume point in `_last` (None: unknown).
        self._epochs: dict[tuple[str, str], Optional[int]] = {
            key: (epoch if epoch is not None else getattr(since, "epochs", {}).get(key)) for key in self._last
        }
        #: The epoch (server run) of the latest snapshot or live marker received,
        #: or of the resume points given; ``None`` before any.
        self.epoch: Optional[int] = epoch if epoch is not None else getattr(since, "epoch", None)
        # Streams that start from stored history at this time (ns) while they
        # have no resume point.
        self._start_time: dict[tuple[str, str], int] = {}
        if from_time is not None:
            self.from_time = to_ns(from_time)
            for s in self._subs:
                for ch in self._subs[s]:
                    if (s, ch) not in self._last:
                        self._start_time[(s, ch)] = self.from_time
        else:
            self.from_time = None
        self._decoder = Decoder()
        self._ws: Optional[ClientConnection] = None
        self._pending: collections.deque[Event] = collections.deque()
        self._closing = False
        self._ping_ids = itertools.count(1)
        self._opened_at = 0.0
        # Consecutive connections that dropped within `backoff_max` of opening.
        self._unstable = 0

    # ------------------------------------------------------------ public API

    async def __aenter__(self) -> "TickwireClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    def __aiter__(self) -> "TickwireClient":
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._closing:
                raise StopAsyncIteration
            ws = self._ws
            if ws is None:
                await self._connect_with_backoff()
                continue
            try:
                frame = await ws.recv()
            except ConnectionClosed as exc:
                self._on_closed(ws, exc)
                continue
            self._on_frame(frame)

    async def connect(self) -> None:
        """Opens the first connection (retrying per the backoff settings) and
        subscribes. Iterating without calling it connects too."""
        if self._ws is None:
            await self._connect_with_backoff()

    async def close(self) -> None:
        """Closes the connection; iteration ends once queued events are consumed."""
        self._closing = True
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def subscribe(
        self,
        symbols: Iterable[str],
        channels: Iterable[str] = DEFAULT_CHANNELS,
        *,
        from_time: Optional[TimeArg] = None,
    ) -> None:
        """Adds symbols (kept across reconnects). ``from_time`` starts the new
        streams from stored history, as the constructor's does."""
        symbols, channels = list(symbols), list(channels)
        at = None if from_time is None else to_ns(from_time)
        for s in symbols:
            self._add_sub(s, channels)
            if at is not None:
                for ch in channels:
                    if (s, ch) not in self._last:
                        self._start_time[(s, ch)] = at
        if self._ws is not None:
            for frame in self._subscribe_frames({(s, c) for s in symbols for c in channels}):
                await self._send(frame)

    async def unsubscribe(self, symbols: Iterable[str], channels: Optional[Iterable[str]] = None) -> None:
        """Removes channels of symbols (default: every channel they are subscribed to)."""
        symbols = list(symbols)
        if channels is None:
            channels = [c for c in CHANNELS if any(c in self._subs.get(s, ()) for s in symbols)]
            if not channels:
                return
        channels = list(channels)
        for s in symbols:
            kept = [c for c in self._subs.get(s, []) if c not in channels]
            if kept:
                self._subs[s] = kept
            else:
                self._subs.pop(s, None)
        if self._ws is not None:
            await self._send(encode_unsubscribe(self.format, symbols, channels))

    async def ping(self, id: Optional[int] = None) -> int:
        """Sends a ping; the :class:`Pong` with the same ``id`` arrives in the stream."""
        ping_id = next(self._ping_ids) if id is None else id
        if self._ws is not None:
            await self._send(encode_ping(self.format, ping_id))
        return ping_id

    @property
    def last_seqs(self) -> ResumePoint:
        """The last sequence delivered per (symbol, channel): the resume points,
        as a :class:`ResumePoint` (a ``dict``) that also holds the epoch of each.
        Pass it as ``since=`` to a new client to continue where this one stopped."""
        return ResumePoint(self._last, self._epochs)

    @property
    def subscriptions(self) -> dict[str, list[str]]:
        return {s: list(c) for s, c in self._subs.items()}

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def drop_connection(self) -> None:
        """Cuts the TCP connection abruptly, without a close handshake (for tests
        and drills): the next iteration reconnects and resumes."""
        if self._ws is not None:
            self._ws.transport.abort()

    # ------------------------------------------------------------ internals

    def _add_sub(self, symbol: str, channels: Iterable[str]) -> None:
        have = self._subs.setdefault(symbol, [])
        for ch in channels:
            if ch not in CHANNELS:
                raise ValueError(f"unknown channel {ch!r} (channels: {', '.join(CHANNELS)})")
            if ch not in have:
                have.append(ch)

    def _start_of(self, key: tuple[str, str]) -> tuple:
        """How a stream starts: ``("seq", epoch)`` resumes, ``("time", ns)``
        starts from stored history, ``("snapshot",)`` from a snapshot."""
        seq = self._last.get(key)
        if seq is not None and seq > 0:
            return ("seq", self._epochs.get(key))
        if key in self._start_time:
            return ("time", self._start_time[key])
        return ("snapshot",)

    def _subscribe_frames(self, only: Optional[set[tuple[str, str]]] = None) -> list:
        """The subscribe requests for every subscribed stream (or those in
        ``only``). A request carries one epoch or one since_time for all its
        streams, so streams are grouped by how they start; usually that is one
        request (per distinct channel set)."""
        groups: dict[tuple, list[str]] = {}
        for s, chans in self._subs.items():
            chans = [c for c in chans if only is None or (s, c) in only]
            if not chans:
                continue
            starts = {c: self._start_of((s, c)) for c in chans}
            if len(set(starts.values())) == 1:
                groups.setdefault((tuple(chans), starts[chans[0]]), []).append(s)
            else:  # rare: one symbol's channels start differently
                for c in chans:
                    groups.setdefault(((c,), starts[c]), []).append(s)
        frames = []
        for (chans, start), syms in groups.items():
            since = {(s, c): self._last[(s, c)] for s in syms for c in chans} if start[0] == "seq" else None
            frames.append(
                encode_subscribe(
                    self.format,
                    syms,
                    list(chans),
                    since,
                    self.delivery,
                    self.conflate_ms,
                    epoch=start[1] if start[0] == "seq" else None,
                    since_time=start[1] if start[0] == "time" else None,
                )
            )
        return frames

    async def _send(self, frame) -> None:
        ws = self._ws
        if ws is None:
            return
        try:
            await ws.send(frame)
        except ConnectionClosed:
            pass  # the reader sees the close and reconnects; the subscription is kept

    async def _connect_with_backoff(self) -> None:
        """Connects and subscribes; returns without a connection only when closing."""
        first = self.stats.connections == 0
        failures = 0  # failed attempts in this call
        while not self._closing:
            if not first or failures:
                # `_unstable` counts connections that dropped soon after opening,
                # so a server that accepts and drops at once is not hammered.
                delay = backoff_delay(self._unstable + failures, self.backoff_initial, self.backoff_max, self._rng)
                log.info("tickwire: reconnecting to %s in %.2f s", self.url, delay)
                await asyncio.sleep(delay)
                if self._closing:
                    return
            try:
                await self._open()
                return
            except TickwireError:
                raise
            except (OSError, asyncio.TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
                if isinstance(exc, InvalidStatus):
                    status = exc.response.status_code
                    if status == 401:
                        why = "a token is required (token=...)" if not self.token else "the token was refused"
                        raise TickwireError(f"{self.url} refused the WebSocket upgrade with HTTP 401: {why}") from exc
                    if 400 <= status < 500 and status not in (408, 429):
                        raise TickwireError(f"{self.url} refused the WebSocket upgrade with HTTP {status}") from exc
                elif isinstance(exc, InvalidURI):
                    raise TickwireError(f"invalid URL {self.url!r}") from exc
                elif isinstance(exc, InvalidHandshake):
                    raise TickwireError(f"WebSocket handshake with {self.url} failed: {exc}") from exc
                failures += 1
                # The next attempt goes to the next gateway, if there are several.
                self._url_index = (self._url_index + 1) % len(self.urls)
                self.url = self.urls[self._url_index]
                if first and not self.reconnect and failures >= len(self.urls):
                    raise TickwireError(f"cannot connect to {self.url}: {exc!r}") from exc
                if self.max_attempts is not None and failures >= self.max_attempts:
                    raise TickwireError(f"cannot connect to {self.url} after {failures} attempts: {exc!r}") from exc
                log.warning("tickwire: connecting to %s failed: %r", self.url, exc)

    async def _open(self) -> None:
        want = SUBPROTOCOLS[self.format]
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
        if ws.subprotocol != want:
            await ws.close()
            raise TickwireError(f"{self.url} did not accept the subprotocol {want} (got {ws.subprotocol!r})")
        if self.format == "proto" and self._needs_instruments():
            await self._load_instruments()
        self._ws = ws
        self._opened_at = time.monotonic()
        self.stats.connections += 1
        self.connection = self.stats.connections
        resumed = {k: v for k, v in self._last.items() if k[0] in self._subs}
        log.info(
            "tickwire: connected to %s (%s, connection %d%s)",
            self.url,
            self.format,
            self.connection,
            f", resuming {len(resumed)} streams" if resumed else "",
        )
        for frame in self._subscribe_frames():
            await ws.send(frame)

    def _needs_instruments(self) -> bool:
        # Resuming a protobuf stream without ever having seen a snapshot of the
        # symbol (a `since=` handed to a new client): updates name instruments
        # by id only, so learn the table from GET /v1/instruments.
        # The same for streams that start from stored history (from_time).
        known = {i.symbol for i in self._decoder.instruments.values()}
        streams = [*self._last, *self._start_time]
        return any(s not in known for (s, _c) in streams if s in self._subs)

    async def _load_instruments(self) -> None:
        try:
            listing = await asyncio.to_thread(fetch_instruments, self.url, self.token, self.open_timeout)
            for index, item in enumerate(listing):
                self._decoder.learn(
                    Instrument(index, item["symbol"], int(item["price_decimals"]), int(item["size_decimals"]))
                )
        except Exception as exc:  # the stream still works for symbols that get snapshots
            log.warning("tickwire: cannot load instruments for %s: %r", self.url, exc)

    def _on_closed(self, ws: ClientConnection, exc: ConnectionClosed) -> None:
        if self._ws is ws:
            self._ws = None
        if self._closing:
            return
        if time.monotonic() - self._opened_at < self.backoff_max:
            self._unstable += 1
        else:
            self._unstable = 0
        code = exc.rcvd.code if exc.rcvd is not None else None
        reason = exc.rcvd.reason if exc.rcvd is not None else ""
        if code in FATAL_CLOSE_CODES:
            raise TickwireError(f"server closed the connection: {code} {FATAL_CLOSE_CODES[code]} ({reason})") from exc
        if not self.reconnect:
            raise TickwireError(f"connection closed ({code} {reason})") from exc
        log.warning("tickwire: connection %d lost (%s); resuming", self.connection, code or "no close frame")

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
        last = self._last
        pending = self._pending
        for ev in events:
            if isinstance(ev, (Quote, Trade, BookUpdate, Candle)):
                key = (ev.symbol, ev.channel)
                seen = last.get(key)
                if seen is not None and ev.seq <= seen:
                    stats.duplicates += 1
                    continue
                if seen is not None and ev.seq > seen + 1 and key[1] == "trades":
                    # Trades are never conflated: a skip the server did not
                    # announce is announced here, so it cannot pass unseen.
                    gap = Gap(ev.symbol, "trades", seen + 1, ev.seq - 1, "unannounced")
                    log.warning("tickwire: %s trades jumped from %d to %d with no gap notice", ev.symbol, seen, ev.seq)
                    stats.gaps += 1
                    pending.append(gap)
                if key not in last:
                    # The first update of a stream started from stored history
                    # (from_time): it is from the run that wrote that history;
                    # its epoch is unknown until the live marker.
                    self._epochs[key] = None
                    self._start_time.pop(key, None)
                last[key] = ev.seq
                stats.updates += 1
            elif isinstance(ev, Snapshot):
                # The stream continues at seq + 1, whatever came before (a fresh
                # snapshot after a gap, or after a server restart), in its epoch.
                key = (ev.symbol, ev.channel)
                last[key] = ev.seq
                self._epochs[key] = ev.epoch
                self._start_time.pop(key, None)
                if ev.epoch is not None:
                    self.epoch = ev.epoch
                stats.snapshots += 1
            elif isinstance(ev, Live):
                # Stored history caught up: what follows is the live stream of
                # the server's current run, so the resume point is of its epoch.
                if ev.symbol is not None and ev.channel is not None:
                    key = (ev.symbol, ev.channel)
                    self._start_time.pop(key, None)
                    if key not in last and ev.seq:
                        # Nothing stored after from_time: live continues after seq.
                        last[key] = ev.seq
                    # (A live seq past the last update received is a skip: the
                    # next update shows it, and a trade skip becomes a Gap.)
                    self._epochs[key] = ev.epoch
                if ev.epoch is not None:
                    self.epoch = ev.epoch
                stats.lives += 1
            elif isinstance(ev, Gap):
                key = (ev.symbol, ev.channel)
                if ev.reason == "epoch_changed":
                    # The resume point belongs to another run: forget it (the
                    # fresh snapshot that follows sets the stream's new one).
                    last.pop(key, None)
                    self._epochs.pop(key, None)
                    stats.epoch_changes += 1
                elif ev.to_seq > last.get(key, 0):
                    last[key] = ev.to_seq
                stats.gaps += 1
            elif isinstance(ev, ServerError):
                stats.errors += 1
                if ev.code == "bad_since":
                    self._on_bad_since(ev)
            pending.append(ev)

    def _on_bad_since(self, error: ServerError) -> None:
        """The server refused a resume point: it is ahead of the stream, which
        happens when the server restarted and its sequences began again. The
        server subscribes that stream afresh and sends its snapshot right after
        the error, so the client only forgets the stale position (the error is
        still yielded).

        The error names the stream in its ``symbol`` and ``channel`` fields;
        from an older server without them, the message is read instead, and
        failing that every resume point of the subscription is forgotten."""
        symbol, channel = error.symbol, error.channel
        if symbol is None:
            m = _BAD_SINCE.search(error.message)
            if m:
                symbol, channel = m["symbol"], m["channel"]
        if symbol is not None and channel is not None:
            keys = {(symbol, channel)}
        elif symbol is not None:
            keys = {k for k in self._last if k[0] == symbol}
        else:
            keys = {k for k in self._last if k[0] in self._subs}
        for key in keys:
            self._last.pop(key, None)
            self._epochs.pop(key, None)
            # A refused since_time (no store) is not asked for again.
            self._start_time.pop(key, None)
        log.warning("tickwire: the server refused to resume %s (%s); the server restarts them from snapshots", sorted(keys), error.message)
