"""TickwireReplay against the real server (TICKWIRE_BIN) with a store.

A live client (full delivery, so it misses nothing) holds every book for ~3 s
while the server records; the server is then restarted on the same store with
a simulator too slow to matter, and the recorded range is replayed. What a
live subscriber held is the reference: a replay's book at time T must be, level
for level and with its sequence, the book the live client had once everything
before T was applied.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from decimal import Decimal

import pytest

from conftest import CLIENT_DIR, SYMBOLS, start_server, stop_server
from tickwire_client import (
    BookInvalidated,
    BookUpdate,
    Gap,
    OrderBook,
    Pong,
    Quote,
    ReplayEnd,
    ReplayRefused,
    ReplayStatus,
    ServerError,
    Snapshot,
    TickwireClient,
    TickwireError,
    TickwireReplay,
    Trade,
)

pytestmark = pytest.mark.server

CHANNELS = ["quotes", "trades", "book"]
UPDATES = (Quote, Trade, BookUpdate)
FORMATS = ["json", "proto"]

Side = list[tuple[Decimal, Decimal]]


@dataclass
class Recording:
    """A stored run and what the live client received of it."""

    server: object
    #: Before the server started: no book is stored before this.
    before_start: int
    #: The live client's first and last book time, plus one (every book event
    #: of every symbol before `to` reached the live client).
    from_ns: int
    to_ns: int
    #: Per symbol, the live book channel in order: (ts_event, Snapshot | BookUpdate).
    books: dict[str, list]

    def book_at(self, symbol: str, at: int) -> tuple[int, Side, Side]:
        """(seq, bids best first, asks best first) of the live book once every
        book event of `symbol` with ts_event < at was applied."""
        book = OrderBook(symbol)
        for ts, ev in self.books[symbol]:
            if ts >= at:
                break
            if isinstance(ev, BookUpdate):
                assert ev.seq == book.seq + 1, f"{symbol}: the live book stream is contiguous"
            book.apply(ev)
        bids, asks = book.top(depth=10**6)
        return book.seq, bids, asks

    def time_at(self, fraction: float) -> int:
        """An exchange time `fraction` into the run, just after a book update
        of the first symbol (so the book there is not the one at the start)."""
        updates = self.books[SYMBOLS[0]]
        return updates[int(len(updates) * fraction)][0] + 1


@pytest.fixture(scope="module")
def recording():
    before_start = time.time_ns()
    srv = start_server(store=True, rate=1500)
    try:
        books: dict[str, list] = {s: [] for s in SYMBOLS}

        async def live():
            async with TickwireClient(srv.ws_url, SYMBOLS, ["book"], format="json", delivery="full") as client:
                async def run():
                    async for ev in client:
                        assert not isinstance(ev, (Gap, ServerError, BookInvalidated)), ev
                        if isinstance(ev, (Snapshot, BookUpdate)):
                            books[ev.symbol].append((ev.ts_event, ev))
                try:
                    await asyncio.wait_for(run(), 3.0)
                except asyncio.TimeoutError:
                    pass

        asyncio.run(live())
    finally:
        stop_server(srv, keep_store=True)  # SIGTERM: the writer stores everything first
    assert all(len(b) > 200 for b in books.values()), {s: len(b) for s, b in books.items()}
    # The live client's snapshots are of the time it subscribed; the range starts after them.
    from_ns = max(b[0][0] for b in books.values()) + 1
    to_ns = min(b[-1][0] for b in books.values()) + 1
    server = start_server(store_dir=srv.store_dir, rate=1)
    yield Recording(server, before_start, from_ns, to_ns, books)
    stop_server(server)


def sides(snapshot: Snapshot) -> tuple[Side, Side]:
    return list(snapshot.data.bids), list(snapshot.data.asks)


def book_sides(book: OrderBook) -> tuple[Side, Side]:
    return book.top(depth=10**6)


async def replay_all(rec: Recording, fmt: str, start: int, end: int, channels=CHANNELS) -> tuple[list, TickwireReplay]:
    async with TickwireReplay(rec.server.ws_url, SYMBOLS, channels, start, end, speed="max", format=fmt) as replay:
        events = [ev async for ev in replay]
    return events, replay


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_replay_starts_with_the_live_books_and_its_deltas_keep_them_equal(recording, fmt):
    rec = recording
    start = rec.time_at(0.4)
    events, replay = asyncio.run(replay_all(rec, fmt, start, rec.to_ns, ["book"]))

    status = events[0]
    assert isinstance(status, ReplayStatus), events[:2]
    assert (status.state, status.speed, status.from_ns, status.to_ns) == ("playing", "max", start, rec.to_ns)
    assert sorted(i.symbol for i in status.instruments) == sorted(SYMBOLS)
    # Then each symbol's book as it stood at `start`, before any update.
    firsts = events[1:1 + len(SYMBOLS)]
    assert all(isinstance(ev, Snapshot) and ev.channel == "book" for ev in firsts), firsts
    for snap in firsts:
        seq, bids, asks = rec.book_at(snap.symbol, start)
        assert snap.seq == seq, f"{snap.symbol}: the replay's book is at the live sequence at {start}"
        assert sides(snap) == (bids, asks), f"{snap.symbol}: the replay's book is the live one, level for level"
        assert len(bids) >= 10 and len(asks) >= 10, "a real book"
        assert snap.ts_event < start and snap.epoch is None
        assert snap.price_decimals is not None and snap.instrument_id is not None
    # The deltas continue at seq + 1, every one, and only after `start`.
    next_seq = {snap.symbol: snap.seq + 1 for snap in firsts}
    deltas = [ev for ev in events[1 + len(SYMBOLS):] if isinstance(ev, BookUpdate)]
    for ev in deltas:
        assert ev.seq == next_seq[ev.symbol], (ev.symbol, ev.seq, next_seq[ev.symbol])
        assert start <= ev.ts_event < rec.to_ns
        next_seq[ev.symbol] += 1
    assert len(deltas) > 100, len(deltas)
    assert not [ev for ev in events if isinstance(ev, (Gap, ServerError, BookInvalidated, Quote, Trade))]
    # The books the replay kept (start + deltas) are the live books at the end,
    # and each is a valid book: best bid below best ask.
    for symbol in SYMBOLS:
        seq, bids, asks = rec.book_at(symbol, rec.to_ns)
        book = replay.books[symbol]
        assert book.valid and book.seq == seq
        assert book_sides(book) == (bids, asks), symbol
        assert book.best_bid()[0] < book.best_ask()[0]
    assert isinstance(events[-1], ReplayEnd) and events[-1].events == len(deltas)


def test_json_and_protobuf_replays_decode_to_the_same_values(recording):
    rec = recording
    json_events, j = asyncio.run(replay_all(rec, "json", rec.from_ns, rec.to_ns))
    proto_events, p = asyncio.run(replay_all(rec, "proto", rec.from_ns, rec.to_ns))
    assert j.stats.text_frames > 0 and j.stats.binary_frames == 0, j.stats
    assert p.stats.binary_frames > 0 and p.stats.text_frames == 0, p.stats
    kinds = {type(ev) for ev in json_events}
    assert {ReplayStatus, Snapshot, Quote, Trade, BookUpdate, ReplayEnd} <= kinds, kinds
    assert len(json_events) > 1000
    assert len(proto_events) == len(json_events)
    differ = [(a, b) for a, b in zip(json_events, proto_events) if a != b]
    assert not differ, f"{len(differ)} events differ, first: {differ[0]}"
    # Exact decimals: the protobuf mantissa and scale print as the JSON string does.
    for a, b in zip(json_events, proto_events):
        if isinstance(a, Trade):
            assert (str(a.price), str(a.size)) == (str(b.price), str(b.size))


@pytest.mark.parametrize("fmt", FORMATS)
def test_end_counts_every_stored_event_sent_and_a_stored_reset_is_a_book(recording, fmt):
    """From before the first stored book: each book starts as `BookInvalidated`
    seq 0, no delta comes before the stored reset, which arrives as
    `BookInvalidated` and a snapshot at its sequence; `end` counts the updates
    and the resets, and the iteration ends after it (close 1000)."""
    rec = recording
    events, replay = asyncio.run(replay_all(rec, fmt, rec.before_start, rec.to_ns))
    assert isinstance(events[0], ReplayStatus)
    firsts = events[1:1 + len(SYMBOLS)]
    assert [(type(ev), ev.seq) for ev in firsts] == [(BookInvalidated, 0)] * len(SYMBOLS), firsts
    updates, resets, announced = 0, 0, {}
    for ev in events[1 + len(SYMBOLS):]:
        if isinstance(ev, BookInvalidated):
            assert ev.seq > 0
            announced[ev.symbol] = ev.seq
        elif isinstance(ev, Snapshot):
            assert announced.pop(ev.symbol) == ev.seq, "a stored reset: book_invalidated, then the snapshot"
            resets += 1
        if isinstance(ev, UPDATES):
            updates += 1
    assert resets >= len(SYMBOLS), "each symbol's stored reset (the feed's connect) came as a snapshot"
    for symbol in SYMBOLS:
        mine = [ev for ev in events if getattr(ev, "symbol", None) == symbol and ev.channel == "book"]
        reset_at = next(i for i, ev in enumerate(mine) if isinstance(ev, Snapshot))
        assert not [ev for ev in mine[:reset_at] if isinstance(ev, BookUpdate)], f"{symbol}: a delta onto no book"
        assert replay.books[symbol].valid
    end = events[-1]
    assert isinstance(end, ReplayEnd) and (end.from_ns, end.to_ns) == (rec.before_start, rec.to_ns)
    assert end.events == updates + resets, (end.events, updates, resets)
    assert replay.stats.stored_events == end.events and replay.ended == end


async def pump(replay: TickwireReplay, queue: asyncio.Queue) -> None:
    async for ev in replay:
        await queue.put(ev)
    await queue.put(None)


async def next_of(queue: asyncio.Queue, kind, timeout: float = 10.0, skipped: list | None = None):
    """The next event of `kind`; what came before it goes to `skipped`."""
    deadline = time.monotonic() + timeout
    while True:
        ev = await asyncio.wait_for(queue.get(), max(0.01, deadline - time.monotonic()))
        assert ev is not None, f"the replay ended before a {kind}"
        if isinstance(ev, kind):
            return ev
        if skipped is not None:
            skipped.append(ev)


async def books_after(queue: asyncio.Queue) -> dict[str, Snapshot]:
    """The book snapshots that come right after a status, before anything else."""
    books = {}
    while len(books) < len(SYMBOLS):
        ev = await asyncio.wait_for(queue.get(), 10)
        assert isinstance(ev, Snapshot) and ev.channel == "book", f"the books come right after the status: {ev}"
        books[ev.symbol] = ev
    return books


def assert_live_books(rec: Recording, books: dict[str, Snapshot], at: int) -> None:
    for symbol, snap in books.items():
        seq, bids, asks = rec.book_at(symbol, at)
        assert (snap.seq, *sides(snap)) == (seq, bids, asks), f"{symbol}'s book at {at}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_pause_speed_seek_resume_and_ping(recording, fmt):
    rec = recording
    forward, back = rec.time_at(0.75), rec.time_at(0.25)

    async def main():
        queue: asyncio.Queue = asyncio.Queue()
        async with TickwireReplay(rec.server.ws_url, SYMBOLS, CHANNELS, rec.from_ns, rec.to_ns,
                                  speed=1, format=fmt) as replay:
            task = asyncio.create_task(pump(replay, queue))
            first = await next_of(queue, ReplayStatus)
            assert (first.state, first.speed) == ("playing", "1")
            assert_live_books(rec, await books_after(queue), rec.from_ns)

            # Real time: half a second of wall time plays about half a second of the market.
            began = time.monotonic()
            played = []
            while time.monotonic() - began < 0.5:
                try:
                    played.append(await asyncio.wait_for(queue.get(), 0.05))
                except asyncio.TimeoutError:
                    pass
            span = max(ev.ts_event for ev in played if isinstance(ev, UPDATES)) - rec.from_ns
            assert 0.2e9 < span < 1.0e9, f"speed 1 played {span / 1e9:.2f} s of the market in 0.5 s"

            # Paused: a status says so, and nothing follows it.
            await replay.pause()
            paused = await next_of(queue, ReplayStatus)
            assert paused.state == "paused"
            with pytest.raises(asyncio.TimeoutError):
                ev = await asyncio.wait_for(queue.get(), 0.6)
                pytest.fail(f"an event while paused: {ev}")

            # Controls while paused are answered with statuses; pings with pongs.
            await replay.set_speed(2.5)
            assert (await next_of(queue, ReplayStatus)).speed == "2.5"
            ping_id = await replay.ping()
            assert (await next_of(queue, Pong)).id == ping_id
            await replay.seek(rec.to_ns + 10**9)  # outside the range: refused, the replay goes on
            refused = await next_of(queue, ServerError)
            assert refused.code == "bad_seek", refused

            # A seek sends each book as it stood at the seek time, forward and back.
            for at in (forward, back):
                await replay.seek(at)
                status = await next_of(queue, ReplayStatus)
                assert (status.state, status.at) == ("paused", at)
                books = await books_after(queue)
                assert_live_books(rec, books, at)
                for symbol, snap in books.items():
                    assert replay.books[symbol].seq == snap.seq and replay.books[symbol].valid
            assert books["BTC-USD"].seq < rec.book_at("BTC-USD", forward)[0], "seeking back gives an older book"

            # At max speed, resumed: the deltas continue from the seek's books, to the end.
            await replay.set_speed("max")
            await next_of(queue, ReplayStatus)
            await replay.resume()
            resumed = await next_of(queue, ReplayStatus)
            assert (resumed.state, resumed.speed) == ("playing", "max")
            began = time.monotonic()
            rest: list = []
            end = await next_of(queue, ReplayEnd, timeout=20, skipped=rest)
            elapsed = time.monotonic() - began
            assert await queue.get() is None, "the iteration ends after ReplayEnd"
            await task
            return books, rest, end, elapsed, replay

    books, rest, end, elapsed, replay = asyncio.run(main())
    next_seq = {s: snap.seq + 1 for s, snap in books.items()}
    deltas = [ev for ev in rest if isinstance(ev, BookUpdate)]
    for ev in deltas:
        assert ev.seq == next_seq[ev.symbol] and ev.ts_event >= back
        next_seq[ev.symbol] += 1
    # 75 % of the recording at max speed plays far faster than real time.
    assert elapsed < (rec.to_ns - back) / 1e9, elapsed
    assert len(deltas) > 100 and not [ev for ev in rest if isinstance(ev, (Gap, ServerError, Snapshot))]
    for symbol in SYMBOLS:
        assert book_sides(replay.books[symbol]) == rec.book_at(symbol, rec.to_ns)[1:]
    # `events` counts everything sent: before the pause, and after the seek back.
    assert end.events == replay.stats.stored_events


@pytest.mark.parametrize(
    "symbols, channels, speed, where, status, code",
    [
        (["NO-SUCH"], ["trades"], 1, "range", 404, "unknown_symbol"),
        (["BTC-USD"], ["trades"], 1, "reversed", 400, "bad_range"),
        (["BTC-USD"], ["trades"], "fast", "range", 400, "bad_speed"),
    ],
)
def test_a_refused_replay_raises_with_the_servers_code(recording, symbols, channels, speed, where, status, code):
    rec = recording
    start, end = (rec.from_ns, rec.to_ns) if where == "range" else (rec.to_ns, rec.from_ns)

    async def main():
        async with TickwireReplay(rec.server.ws_url, symbols, channels, start, end, speed=speed):
            pytest.fail("the replay opened")

    with pytest.raises(ReplayRefused) as refused:
        asyncio.run(main())
    assert (refused.value.status, refused.value.code) == (status, code), refused.value
    assert code in str(refused.value)


def test_a_server_without_a_store_refuses_replays(server):
    async def main():
        async with TickwireReplay(server.ws_url, ["BTC-USD"], ["trades"], "2026-12-04T15:40:00Z",
                                  "2026-12-04T15:41:00.5Z", speed="max", format="proto"):
            pytest.fail("the replay opened")

    with pytest.raises(ReplayRefused) as refused:
        asyncio.run(main())
    assert (refused.value.status, refused.value.code) == (503, "history_disabled"), refused.value


def test_a_replay_cut_before_its_end_raises_instead_of_ending_quietly():
    """A server shutting down closes the replay with 1001 before `end`: the
    events are incomplete, so iterating raises TickwireError (not a quiet stop)."""
    srv = start_server(store=True, rate=500)
    try:
        start = time.time_ns()
        time.sleep(1.0)
        end = time.time_ns()
        time.sleep(1.0)  # the writer stores what the journal holds

        async def main(seen: list):
            async with TickwireReplay(srv.ws_url, ["BTC-USD"], ["trades"], start, end, speed=0.5) as replay:
                async for ev in replay:
                    seen.append(ev)
                    if isinstance(ev, Trade) and srv.process.poll() is None:
                        srv.process.send_signal(signal.SIGTERM)

        seen: list = []
        with pytest.raises(TickwireError, match="before its end") as cut:
            asyncio.run(main(seen))
    finally:
        stop_server(srv)
    assert "1001" in str(cut.value), cut.value
    assert isinstance(seen[0], ReplayStatus) and not [ev for ev in seen if isinstance(ev, ReplayEnd)]
    last = [ev.ts_event for ev in seen if isinstance(ev, Trade)][-1]
    assert f"at {last}" in str(cut.value), "the error says how far the replay got"


def test_replay_example_prints_rows_and_the_end(recording):
    rec = recording
    script = CLIENT_DIR / "examples" / "replay.py"
    args = [sys.executable, str(script), "--url", rec.server.ws_url, "--from", str(rec.from_ns), "--to", str(rec.to_ns)]
    result = subprocess.run([*args, *SYMBOLS], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("replaying ") and lines[-1].startswith("end: "), result.stdout
    assert int(lines[-1].split()[1]) > 1000
    rows = [line.split() for line in lines[1:-1]]
    assert {r[1] for r in rows} == set(SYMBOLS), result.stdout
    # Every row has the book's best bid and ask (the replay starts with the books).
    assert all(re.fullmatch(r"\d+\.\d+", r[7]) and re.fullmatch(r"\d+\.\d+", r[9]) for r in rows), result.stdout
    refused = subprocess.run([*args, "NO-SUCH"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "unknown_symbol" in refused.stderr, refused
