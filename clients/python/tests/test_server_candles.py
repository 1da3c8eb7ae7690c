"""Live candles (candles.<interval> channels) against the real server, checked
against the candle history it computes from its store (GET /v1/candles)."""

from __future__ import annotations

import asyncio
import time

import pytest

from conftest import start_server, stop_server
from tickwire_client import Candle, ServerError, Snapshot, TickwireClient, fetch_candles

pytestmark = pytest.mark.server

SECOND = 10**9


@pytest.fixture(scope="module")
def stored_server():
    """A server that keeps history (SQLite in a temporary directory), so that
    GET /v1/candles has trades to compute candles from."""
    srv = start_server(store=True)
    yield srv
    stop_server(srv)


async def closed_candles(client: TickwireClient, want: int, timeout: float) -> tuple[list, list[Candle]]:
    """Everything the client yields until `want` closed candles arrived."""
    events: list = []
    closed: list[Candle] = []

    async def run():
        async for ev in client:
            events.append(ev)
            if isinstance(ev, Candle) and ev.closed:
                closed.append(ev)
                if len(closed) >= want:
                    return

    await asyncio.wait_for(run(), timeout)
    return events, closed


def rest_candle(server, symbol: str, start: int, want_trades: int) -> Candle:
    """The stored 1 s candle at `start`, once the history writer stored all of
    its trades (it trails the live stream a little)."""
    deadline = time.monotonic() + 15
    last = None
    while time.monotonic() < deadline:
        got = [c for c in fetch_candles(server.http_url, symbol, "1s", start - 5 * SECOND, start + 5 * SECOND)
               if c.start == start]
        if got:
            last = got[0]
            if last.trades >= want_trades:
                return last
        time.sleep(0.2)
    pytest.fail(f"GET /v1/candles has no complete {symbol} candle at {start} (last: {last})")


@pytest.mark.parametrize("fmt", ["proto", "json"])
def test_live_one_second_candles_close_and_agree_with_the_stored_history(stored_server, fmt):
    symbol = "BTC-USD"

    async def main():
        async with TickwireClient(stored_server.ws_url, [symbol], ["candles.1s"], format=fmt) as client:
            events, closed = await closed_candles(client, 3, 20)
            return events, closed, client.stats

    events, closed, stats = asyncio.run(main())
    assert (stats.binary_frames > 0) == (fmt == "proto") and (stats.text_frames > 0) == (fmt == "json"), stats
    assert not [ev for ev in events if isinstance(ev, ServerError)], events
    # The subscription starts with the latest candle as a snapshot.
    snap = events[0]
    assert isinstance(snap, Snapshot) and snap.channel == "candles.1s" and snap.symbol == symbol, snap
    assert snap.data is None or isinstance(snap.data, Candle)

    candles = [ev for ev in events if isinstance(ev, Candle)]
    assert all(c.symbol == symbol and c.interval == "1s" and c.channel == "candles.1s" for c in candles)
    # Sequences rise; a bucket is updated until its closed value, then the next begins.
    seqs = [c.seq for c in candles]
    assert seqs == sorted(set(seqs)), seqs
    starts = [c.start for c in closed]
    assert all(s % SECOND == 0 for s in starts), starts
    assert starts == sorted(set(starts)), starts
    for c in closed:
        assert c.trades > 0 and c.volume > 0
        assert c.low <= min(c.open, c.close) and c.high >= max(c.open, c.close), c
        # Every earlier update of that bucket was open, and never beyond its final range.
        earlier = [u for u in candles if u.start == c.start and u.seq < c.seq]
        assert all(not u.closed and u.trades <= c.trades and u.low >= c.low and u.high <= c.high for u in earlier)
        if earlier:
            assert earlier[0].open == c.open
    # Open updates were seen too, not just final values.
    assert any(not c.closed for c in candles)

    # The live closed candles equal the history computed from the stored trades.
    for c in closed:
        stored = rest_candle(stored_server, symbol, c.start, c.trades)
        assert (stored.open, stored.high, stored.low, stored.close) == (c.open, c.high, c.low, c.close), (stored, c)
        assert (stored.volume, stored.trades) == (c.volume, c.trades), (stored, c)
        assert stored.closed and str(stored.close) == str(c.close)


def test_proto_and_json_candles_are_equal(stored_server):
    """Both formats carry the same candle values, to the digit."""
    async def collect(fmt):
        async with TickwireClient(stored_server.ws_url, ["ETH-USD", "AAPL"], ["candles.1s", "candles.1m"],
                                  format=fmt) as client:
            events, _ = await closed_candles(client, 4, 20)
        return {(c.symbol, c.channel, c.seq): c for c in events if isinstance(c, Candle)}

    async def main():
        return await asyncio.gather(collect("proto"), collect("json"))

    p, j = asyncio.run(main())
    common = p.keys() & j.keys()
    assert {k[1] for k in common} >= {"candles.1s", "candles.1m"}, sorted(common)[:5]
    for k in common:
        a, b = p[k], j[k]
        assert (a.start, a.open, a.high, a.low, a.close, a.volume, a.trades, a.closed) == \
            (b.start, b.open, b.high, b.low, b.close, b.volume, b.trades, b.closed), k
        assert (str(a.close), str(a.volume)) == (str(b.close), str(b.volume))
