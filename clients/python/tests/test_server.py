"""The client against the real tickwire server (TICKWIRE_BIN), started on an
ephemeral port by the `server` fixture (conftest.py)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time

import pytest

from conftest import CLIENT_DIR, SYMBOLS, start_server, stop_server
from tickwire_client import BookUpdate, Candle, Gap, Quote, ServerError, Snapshot, TickwireClient, Trade

pytestmark = pytest.mark.server

UPDATES = (Quote, Trade, BookUpdate)


async def collect(client: TickwireClient, seconds: float, sink: list) -> None:
    """Appends (connection, event) to `sink` for `seconds`."""
    async def run():
        async for ev in client:
            sink.append((client.connection, ev))

    try:
        await asyncio.wait_for(run(), seconds)
    except asyncio.TimeoutError:
        pass


def test_proto_and_json_clients_decode_the_same_values(server):
    async def main():
        proto_events, json_events = [], []
        async with TickwireClient(server.ws_url, SYMBOLS, format="proto") as p, \
                TickwireClient(server.ws_url, SYMBOLS, format="json") as j:
            await asyncio.gather(collect(p, 3.0, proto_events), collect(j, 3.0, json_events))
            return proto_events, json_events, p.stats, j.stats

    proto_events, json_events, pstats, jstats = asyncio.run(main())

    # The formats really are what was asked for.
    assert pstats.binary_frames > 0 and pstats.text_frames == 0, pstats
    assert jstats.text_frames > 0 and jstats.binary_frames == 0, jstats
    for events in (proto_events, json_events):
        assert not [ev for _, ev in events if isinstance(ev, ServerError)]

    def updates(events):
        return {(ev.symbol, ev.channel, ev.seq): ev for _, ev in events if isinstance(ev, UPDATES)}

    p, j = updates(proto_events), updates(json_events)
    common = p.keys() & j.keys()
    for symbol in SYMBOLS:
        for channel in ("quotes", "trades", "book"):
            assert any(k[:2] == (symbol, channel) for k in common), f"no common {symbol} {channel} update"
    assert len(common) >= 500, f"only {len(common)} updates seen by both"
    mismatched = [(p[k], j[k]) for k in sorted(common) if p[k] != j[k]]
    assert not mismatched, f"{len(mismatched)} of {len(common)} differ, first: {mismatched[0]}"
    # Exact decimals: the protobuf mantissa and scale print as the JSON string does.
    for k in sorted(common):
        a, b = p[k], j[k]
        if isinstance(a, Trade):
            assert (str(a.price), str(a.size), a.side, a.trade_id) == (str(b.price), str(b.size), b.side, b.trade_id)
            assert a.side in ("buy", "sell")
        elif isinstance(a, Quote):
            assert [str(x) for x in (a.bid, a.bid_size, a.ask, a.ask_size)] == [str(x) for x in (b.bid, b.bid_size, b.ask, b.ask_size)]
        assert a.ts_event <= a.ts_recv <= a.ts_send
        assert a.ts_send > 1_600_000_000 * 10**9  # ns since the epoch

    # Snapshots: one per (symbol, channel) for each client; protobuf ones carry
    # the instrument id and the scales, and equal data where both are at one seq.
    def snapshots(events):
        return {(ev.symbol, ev.channel): ev for _, ev in events if isinstance(ev, Snapshot)}

    ps, js = snapshots(proto_events), snapshots(json_events)
    assert set(ps) == set(js) == {(s, c) for s in SYMBOLS for c in ("quotes", "trades", "book")}
    assert ps[("BTC-USD", "quotes")].price_decimals == 2
    assert len({s.instrument_id for s in ps.values()}) == len(SYMBOLS)
    for key, snap in ps.items():
        if js[key].seq == snap.seq:
            assert snap.data == js[key].data, key


def last_on_connection(events, connection: int) -> dict:
    """The last sequence per (symbol, channel) delivered on one connection
    (frames already buffered when the socket was cut are still delivered)."""
    last = {}
    for c, ev in events:
        if c == connection and isinstance(ev, (*UPDATES, Snapshot)):
            last[(ev.symbol, ev.channel)] = ev.seq
    return last


def check_every_trade_once(events, since_snapshot: dict) -> dict:
    """Trades per symbol must run seq+1, seq+2, … from the snapshot without a
    hole or a repeat. Returns {symbol: [seqs]}."""
    seqs: dict[str, list[int]] = {}
    for _, ev in events:
        if isinstance(ev, Trade):
            seqs.setdefault(ev.symbol, []).append(ev.seq)
    for symbol, got in seqs.items():
        start = since_snapshot[symbol] + 1
        assert got == list(range(start, start + len(got))), f"{symbol}: trades are not every sequence exactly once"
    return seqs


@pytest.mark.parametrize("fmt", ["proto", "json"])
def test_resume_after_a_client_side_cut_delivers_every_trade_once(server, fmt):
    async def main():
        events: list = []
        async with TickwireClient(server.ws_url, SYMBOLS, format=fmt, backoff_initial=0.05) as client:
            await collect(client, 1.5, events)
            cut_seqs = client.last_seqs
            client.drop_connection()  # abrupt: no close handshake
            await asyncio.sleep(0.5)  # the market moves on meanwhile
            reconnect_ns = time.time_ns()
            await collect(client, 1.5, events)
            return events, cut_seqs, reconnect_ns, client.stats

    events, cut_seqs, reconnect_ns, stats = asyncio.run(main())
    assert stats.connections == 2, stats
    assert not [ev for _, ev in events if isinstance(ev, (Gap, ServerError))], "a short cut must be covered by the ring"

    snap_seq = {ev.symbol: ev.seq for c, ev in events if isinstance(ev, Snapshot) and ev.channel == "trades" and c == 1}
    seqs = check_every_trade_once(events, snap_seq)

    # The second connection resumed: no snapshot, and its first trade per symbol
    # is the one right after the last the first connection delivered. (A book
    # snapshot may still come: a book reset inside the missed range, or a
    # resnapshot when the replay fills the outbox; both are by design.)
    second = [ev for c, ev in events if c == 2]
    last1 = last_on_connection(events, 1)
    assert all(last1[k] >= seq for k, seq in cut_seqs.items())
    resnapshots = {(ev.symbol, ev.channel) for ev in second if isinstance(ev, Snapshot)}
    assert not {k for k in resnapshots if k[1] != "book"}, f"a resume must not start from a snapshot: {resnapshots}"
    for symbol in SYMBOLS:
        first_trades = [ev.seq for ev in second if isinstance(ev, Trade) and ev.symbol == symbol]
        assert first_trades, f"no {symbol} trade after the reconnect"
        assert first_trades[0] == last1[(symbol, "trades")] + 1
        assert len(seqs[symbol]) > 20
    # Trades that happened while disconnected arrived from the history ring.
    replayed = [ev for ev in second if isinstance(ev, Trade) and ev.ts_event < reconnect_ns]
    assert len(replayed) >= 10, f"only {len(replayed)} trades replayed"
    # The server sent exactly the missed updates: nothing the client had to drop.
    assert stats.duplicates == 0, stats
    # Every channel resumed right where it stopped.
    for (symbol, channel), seq in last1.items():
        if (symbol, channel) in resnapshots:
            continue
        after = [ev.seq for ev in second if isinstance(ev, UPDATES) and (ev.symbol, ev.channel) == (symbol, channel)]
        if after:
            assert after[0] == seq + 1, (symbol, channel, seq, after[:3])


def test_unknown_symbol_is_reported_and_the_rest_streams(server):
    async def main():
        events: list = []
        async with TickwireClient(server.ws_url, ["BTC-USD", "NO-SUCH"], ["trades"], format="proto") as client:
            await collect(client, 1.0, events)
        return [ev for _, ev in events]

    events = asyncio.run(main())
    errors = [ev for ev in events if isinstance(ev, ServerError)]
    assert [e.code for e in errors] == ["unknown_symbol"], errors
    assert any(isinstance(ev, Trade) and ev.symbol == "BTC-USD" for ev in events)


def test_vwap_example_prints_rows(server):
    script = CLIENT_DIR / "examples" / "vwap.py"
    result = subprocess.run(
        [sys.executable, str(script), "--url", server.ws_url, "--duration", "3", "--window", "10", *SYMBOLS],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    tables = [t for t in result.stdout.split("\n\n") if t.strip()]
    assert len(tables) >= 2, result.stdout
    last = tables[-1].splitlines()
    assert last[1].split()[:3] == ["symbol", "last", "vwap"]
    rows = {line.split()[0]: line.split() for line in last[2:]}
    assert set(rows) == set(SYMBOLS), result.stdout
    for symbol, cols in rows.items():
        # last, vwap, volume and the trade count are numbers once trades flowed.
        assert re.fullmatch(r"\d+(\.\d+)?", cols[2]), (symbol, cols)
        assert int(cols[4]) > 0, (symbol, cols)


@pytest.mark.parametrize("fmt", ["proto", "json"])
def test_resume_past_the_ring_gets_a_gap_and_a_fresh_snapshot(fmt):
    """With a tiny history ring a short cut is already too long: the server
    names the missing range (history_exhausted) and sends a fresh snapshot;
    the stream continues from it with every later sequence exactly once."""
    srv = start_server("--ring-depth", "16")
    try:
        async def main():
            events: list = []
            async with TickwireClient(srv.ws_url, SYMBOLS, ["trades", "quotes"], format=fmt,
                                      backoff_initial=0.05) as client:
                await collect(client, 1.0, events)
                cut_seqs = client.last_seqs
                client.drop_connection()
                await asyncio.sleep(1.0)
                await collect(client, 1.0, events)
                return events, cut_seqs, client.stats

        events, cut_seqs, stats = asyncio.run(main())
    finally:
        stop_server(srv)
    assert stats.connections == 2 and stats.duplicates == 0, stats
    second = [ev for c, ev in events if c == 2]
    last1 = last_on_connection(events, 1)
    for symbol in SYMBOLS:
        for channel in ("trades", "quotes"):
            mine = [ev for ev in second if getattr(ev, "symbol", None) == symbol and ev.channel == channel]
            gap, snap = mine[0], mine[1]
            assert isinstance(gap, Gap) and gap.reason == "history_exhausted", mine[:2]
            assert gap.from_seq == last1[(symbol, channel)] + 1
            assert isinstance(snap, Snapshot) and snap.seq == gap.to_seq
            later = [ev.seq for ev in mine[2:] if isinstance(ev, UPDATES)]
            if channel == "trades":
                assert later == list(range(snap.seq + 1, snap.seq + 1 + len(later))), symbol
            else:
                assert later and later[0] > snap.seq


@pytest.mark.parametrize("fmt", ["proto", "json"])
def test_a_resume_point_ahead_of_the_server_starts_over_from_a_snapshot(server, fmt):
    """As after a server restart: the saved since is ahead of the stream; the
    server says bad_since and the client subscribes again from a snapshot."""
    async def main():
        events: list = []
        async with TickwireClient(server.ws_url, ["BTC-USD"], ["trades"], format=fmt,
                                  since={"BTC-USD": 10**12}) as client:
            await collect(client, 1.0, events)
        return [ev for _, ev in events]

    events = asyncio.run(main())
    assert isinstance(events[0], ServerError) and events[0].code == "bad_since", events[:2]
    # The error names the refused stream in its own fields.
    assert (events[0].symbol, events[0].channel) == ("BTC-USD", "trades"), events[0]
    assert isinstance(events[1], Snapshot) and events[1].symbol == "BTC-USD", events[:2]
    trades = [ev.seq for ev in events[2:] if isinstance(ev, Trade)]
    assert trades and trades == list(range(events[1].seq + 1, events[1].seq + 1 + len(trades)))


@pytest.mark.parametrize("fmt", ["proto", "json"])
def test_bad_since_on_one_stream_restarts_only_that_stream(server, fmt):
    """Resuming quotes, trades and 1 s candles where only the candles position is
    ahead of the server: the error names that stream (a channel the old
    message-parsing fallback did not know), the client forgets only that
    position, the candles start over from a snapshot, and the others resume."""
    async def main():
        first: list = []
        async with TickwireClient(server.ws_url, ["ETH-USD"], ["quotes", "trades"], format=fmt) as a:
            await collect(a, 0.8, first)
            saved = a.last_seqs
        since = {**saved, ("ETH-USD", "candles.1s"): 10**12}
        events: list = []
        # A plain dict copy loses the epochs of last_seqs: hand it over with epoch=.
        async with TickwireClient(server.ws_url, ["ETH-USD"], ["quotes", "trades", "candles.1s"], format=fmt,
                                  since=since, epoch=saved.epoch) as b:
            async def run():
                async for ev in b:
                    events.append((ev, b.last_seqs))
                    if isinstance(ev, Candle):
                        return
            await asyncio.wait_for(run(), 10)
        return saved, events

    saved, events = asyncio.run(main())
    errors = [(i, ev, seqs) for i, (ev, seqs) in enumerate(events) if isinstance(ev, ServerError)]
    assert len(errors) == 1, [e for _, e, _ in errors]
    index, error, seqs_after = errors[0]
    assert (error.code, error.symbol, error.channel) == ("bad_since", "ETH-USD", "candles.1s"), error
    assert ("ETH-USD", "candles.1s") not in seqs_after
    assert seqs_after[("ETH-USD", "trades")] >= saved[("ETH-USD", "trades")]
    snaps = [ev for ev, _ in events if isinstance(ev, Snapshot)]
    assert [(s.symbol, s.channel) for s in snaps] == [("ETH-USD", "candles.1s")], snaps
    trades = [ev.seq for ev, _ in events if isinstance(ev, Trade)]
    start = saved[("ETH-USD", "trades")] + 1
    assert trades == list(range(start, start + len(trades)))


def test_resume_from_saved_seqs_in_a_new_client(server):
    """A script that saved client.last_seqs continues in a new process-like
    client: protobuf updates without a snapshot decode with the instrument
    table from GET /v1/instruments."""
    async def main():
        first: list = []
        async with TickwireClient(server.ws_url, ["ETH-USD"], ["trades"], format="proto") as a:
            await collect(a, 0.8, first)
            saved = a.last_seqs
        second: list = []
        async with TickwireClient(server.ws_url, ["ETH-USD"], ["trades"], format="proto", since=saved) as b:
            await collect(b, 0.8, second)
        return saved, [ev for _, ev in second]

    saved, events = asyncio.run(main())
    assert not [ev for ev in events if not isinstance(ev, Trade)], events[:3]
    seqs = [ev.seq for ev in events]
    start = saved[("ETH-USD", "trades")] + 1
    assert seqs == list(range(start, start + len(seqs))) and seqs
    assert all(ev.symbol == "ETH-USD" and ev.price > 0 for ev in events)


def test_ping_and_subscribe_later(server):
    async def main():
        events: list = []
        async with TickwireClient(server.ws_url, ["AAPL"], ["quotes"], format="proto") as client:
            ping_id = await client.ping()
            await client.subscribe(["BTC-USD"], ["trades"])
            await collect(client, 1.0, events)
        return ping_id, [ev for _, ev in events]

    ping_id, events = asyncio.run(main())
    pongs = [ev for ev in events if type(ev).__name__ == "Pong"]
    assert [p.id for p in pongs] == [ping_id] and pongs[0].ts_send > 0
    assert any(isinstance(ev, Trade) and ev.symbol == "BTC-USD" for ev in events)
    assert any(isinstance(ev, Quote) and ev.symbol == "AAPL" for ev in events)
