"""Access tokens against the real server started with --auth-token: refused
without (HTTP 401), streaming with, on the WebSocket and on REST alike."""

from __future__ import annotations

import asyncio

import pytest

from conftest import start_server, stop_server
from tickwire_client import RestError, Snapshot, TickwireClient, TickwireError, Trade, fetch_candles, fetch_instruments

pytestmark = pytest.mark.server

TOKEN = "py-client-s3cret"


@pytest.fixture(scope="module")
def auth_server():
    srv = start_server("--auth-token", TOKEN)
    yield srv
    stop_server(srv)


async def first_trades(client: TickwireClient, n: int) -> list:
    events: list = []

    async def run():
        async for ev in client:
            events.append(ev)
            if sum(isinstance(e, Trade) for e in events) >= n:
                return

    await asyncio.wait_for(run(), 10)
    return events


@pytest.mark.parametrize("fmt", ["proto", "json"])
def test_stream_needs_the_token(auth_server, fmt):
    async def refused(token):
        with pytest.raises(TickwireError, match="HTTP 401") as info:
            async with TickwireClient(auth_server.ws_url, ["BTC-USD"], ["trades"], fmt, token=token,
                                      backoff_initial=0.01, max_attempts=3):
                pass
        return str(info.value)

    async def main():
        without = await refused(None)
        wrong = await refused("not-the-token")
        async with TickwireClient(auth_server.ws_url, ["BTC-USD"], ["trades"], fmt, token=TOKEN) as client:
            events = await first_trades(client, 5)
            stats = client.stats
        return without, wrong, events, stats

    without, wrong, events, stats = asyncio.run(main())
    assert "a token is required" in without and "the token was refused" in wrong
    assert isinstance(events[0], Snapshot) and events[0].symbol == "BTC-USD"
    assert [ev.symbol for ev in events if isinstance(ev, Trade)] == ["BTC-USD"] * 5
    assert stats.connections == 1


def test_rest_needs_the_token(auth_server):
    with pytest.raises(RestError) as info:
        fetch_instruments(auth_server.ws_url)
    assert (info.value.status, info.value.code) == (401, "unauthorized")
    with pytest.raises(RestError) as info:
        fetch_candles(auth_server.http_url, "BTC-USD", "1m", token="wrong")
    assert info.value.status == 401
    listed = [i["symbol"] for i in fetch_instruments(auth_server.ws_url, token=TOKEN)]
    assert {"BTC-USD", "ETH-USD", "AAPL"} <= set(listed)


def test_protobuf_resume_in_a_new_client_loads_instruments_with_the_token(auth_server):
    """A protobuf client handed saved resume points (and no snapshots) learns the
    instrument table from GET /v1/instruments: that request carries the token too."""
    async def main():
        async with TickwireClient(auth_server.ws_url, ["AAPL"], ["trades"], "proto", token=TOKEN) as a:
            await first_trades(a, 3)
            saved = a.last_seqs
        async with TickwireClient(auth_server.ws_url, ["AAPL"], ["trades"], "proto", token=TOKEN, since=saved) as b:
            return saved, await first_trades(b, 3)

    saved, events = asyncio.run(main())
    assert all(isinstance(ev, Trade) and ev.symbol == "AAPL" and ev.price > 0 for ev in events), events
    assert events[0].seq == saved[("AAPL", "trades")] + 1


def test_vwap_example_takes_a_token(auth_server):
    import subprocess
    import sys

    from conftest import CLIENT_DIR

    script = CLIENT_DIR / "examples" / "vwap.py"
    base = [sys.executable, str(script), "--url", auth_server.ws_url, "--duration", "2", "BTC-USD"]
    ok = subprocess.run([*base, "--token", TOKEN], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "BTC-USD" in ok.stdout and "vwap" in ok.stdout, ok.stdout
    refused = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
