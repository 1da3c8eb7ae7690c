"""The client's reconnect, resume and de-duplication logic, against a scripted
in-process WebSocket server (no tickwire binary needed)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from tickwire_client import Gap, Instrument, ServerError, Snapshot, TickwireClient, TickwireError, Trade
from tickwire_client._proto import pb

SUBPROTOCOLS = ["tickwire.v1.proto", "tickwire.v1.json"]


class Frames:
    """Server frames for one symbol (BTC-USD, instrument 0) in either format."""

    def __init__(self, fmt: str):
        self.fmt = fmt

    def snapshot(self, seq: int):
        if self.fmt == "proto":
            snap = pb.Snapshot(symbol="BTC-USD", instrument_id=0, channel=pb.CHANNEL_TRADES, seq=seq,
                               price_decimals=2, size_decimals=5, ts_event=1, ts_recv=2, ts_send=3,
                               trade=pb.Trade(price=100, size=1, side=pb.SIDE_BUY, trade_id=seq))
            return pb.ServerMessage(snapshot=snap).SerializeToString()
        return json.dumps({"type": "snapshot", "symbol": "BTC-USD", "channel": "trades", "seq": seq,
                           "data": {"price": "1.00", "size": "0.00001", "side": "buy", "trade_id": seq},
                           "ts_event": 1, "ts_recv": 2, "ts_send": 3})

    def trades(self, seqs):
        if self.fmt == "proto":
            ups = [pb.Update(instrument_id=0, seq=s, ts_event=1000 + s, recv_delta_ns=1, send_delta_ns=1,
                             trade=pb.Trade(price=10000 + s, size=s, side=pb.SIDE_SELL, trade_id=s)) for s in seqs]
            return pb.ServerMessage(batch=pb.Batch(updates=ups)).SerializeToString()
        ups = [{"symbol": "BTC-USD", "channel": "trades", "seq": s, "price": f"{(10000 + s) / 100:.2f}",
                "size": f"{s / 100000:.5f}", "side": "sell", "trade_id": s,
                "ts_event": 1000 + s, "ts_recv": 1001 + s, "ts_send": 1002 + s} for s in seqs]
        return json.dumps({"type": "batch", "updates": ups})

    def gap(self, lo: int, hi: int):
        if self.fmt == "proto":
            return pb.ServerMessage(gap=pb.Gap(symbol="BTC-USD", channel=pb.CHANNEL_TRADES, from_seq=lo, to_seq=hi,
                                               reason="history_exhausted")).SerializeToString()
        return json.dumps({"type": "gap", "symbol": "BTC-USD", "channel": "trades", "from_seq": lo, "to_seq": hi,
                           "reason": "history_exhausted"})

    def error(self, code: str, message: str):
        if self.fmt == "proto":
            return pb.ServerMessage(error=pb.Error(code=code, message=message, op="subscribe")).SerializeToString()
        return json.dumps({"type": "error", "code": code, "message": message, "op": "subscribe"})

    def since_of(self, request) -> dict:
        """{(symbol, channel): seq} from a subscribe request."""
        if self.fmt == "proto":
            assert isinstance(request, bytes)
            sub = pb.ClientMessage.FromString(request).subscribe
            names = {pb.CHANNEL_QUOTES: "quotes", pb.CHANNEL_TRADES: "trades", pb.CHANNEL_BOOK: "book"}
            return {(s.symbol, names[s.channel]): s.seq for s in sub.since}
        assert isinstance(request, str)
        msg = json.loads(request)
        assert msg["op"] == "subscribe"
        return {(sym, ch): seq for sym, per in msg.get("since", {}).items() for ch, seq in per.items()}


async def scripted_server(script):
    """Serves one scripted handler per connection, in order; returns (server, url)."""
    handlers = iter(script)

    async def handler(ws):
        await next(handlers)(ws)

    server = await serve(handler, "127.0.0.1", 0, subprotocols=SUBPROTOCOLS)
    port = server.sockets[0].getsockname()[1]
    return server, f"ws://127.0.0.1:{port}/v1/ws"


async def hold(ws):
    try:
        await ws.wait_closed()
    except Exception:
        pass


@pytest.mark.parametrize("fmt", ["proto", "json"])
def test_resume_sends_since_drops_duplicates_and_survives_gaps(fmt):
    f = Frames(fmt)
    seen_since = []

    async def conn1(ws):
        seen_since.append(f.since_of(await ws.recv()))
        await ws.send(f.snapshot(10))
        await ws.send(f.trades([11, 12, 13, 14, 15]))
        await asyncio.sleep(0.2)
        ws.transport.abort()  # cut mid-stream, no close frame

    async def conn2(ws):
        seen_since.append(f.since_of(await ws.recv()))
        await ws.send(f.trades([14, 15, 16, 17, 18]))  # overlaps what was delivered
        await ws.close(1001, "going away")

    async def conn3(ws):
        seen_since.append(f.since_of(await ws.recv()))
        await ws.send(f.gap(19, 30))
        await ws.send(f.snapshot(30))
        await ws.send(f.trades([31]))
        await hold(ws)

    async def main():
        server, url = await scripted_server([conn1, conn2, conn3])
        got = []
        async with TickwireClient(url, ["BTC-USD"], ["trades"], fmt, backoff_initial=0.01) as client:
            async for ev in client:
                got.append((client.connection, ev))
                if isinstance(ev, Trade) and ev.seq == 31:
                    break
            stats = client.stats
            last = client.last_seqs
        server.close()
        await server.wait_closed()
        return got, stats, last

    got, stats, last = asyncio.run(asyncio.wait_for(main(), 20))
    assert seen_since == [{}, {("BTC-USD", "trades"): 15}, {("BTC-USD", "trades"): 18}]
    trades = [(conn, ev.seq) for conn, ev in got if isinstance(ev, Trade)]
    assert trades == [(1, 11), (1, 12), (1, 13), (1, 14), (1, 15), (2, 16), (2, 17), (2, 18), (3, 31)]
    assert stats.duplicates == 2 and stats.connections == 3
    kinds = [type(ev).__name__ for conn, ev in got if conn == 3]
    assert kinds == ["Gap", "Snapshot", "Trade"]
    assert [ev for _, ev in got if isinstance(ev, Gap)] == [Gap("BTC-USD", "trades", 19, 30, "history_exhausted")]
    assert last == {("BTC-USD", "trades"): 31}
    t16 = next(ev for _, ev in got if isinstance(ev, Trade) and ev.seq == 16)
    assert (t16.price, t16.size, t16.side, t16.trade_id) == (Decimal("100.16"), Decimal("0.00016"), "sell", 16)
    assert (t16.ts_event, t16.ts_recv, t16.ts_send) == (1016, 1017, 1018)
    if fmt == "proto":
        assert stats.text_frames == 0 and stats.binary_frames > 0
    else:
        assert stats.binary_frames == 0 and stats.text_frames > 0


@pytest.mark.parametrize("fmt", ["proto", "json"])
def test_refused_since_starts_the_stream_over_from_a_snapshot(fmt):
    """A server that restarted is behind the client's resume point: it answers
    bad_since and a fresh snapshot; the client takes the snapshot as the new
    start and sends nothing more."""
    f = Frames(fmt)
    requests = []

    async def conn1(ws):
        requests.append(f.since_of(await ws.recv()))
        await ws.send(f.snapshot(100))
        await ws.send(f.trades([101]))
        await asyncio.sleep(0.2)
        ws.transport.abort()

    async def conn2(ws):
        requests.append(f.since_of(await ws.recv()))
        await ws.send(f.error("bad_since", "since 101 is ahead of BTC-USD trades at 5"))
        await ws.send(f.snapshot(5))
        await ws.send(f.trades([6]))
        await hold(ws)

    async def main():
        server, url = await scripted_server([conn1, conn2])
        got = []
        async with TickwireClient(url, ["BTC-USD"], ["trades"], fmt, backoff_initial=0.01) as client:
            async for ev in client:
                got.append(ev)
                if isinstance(ev, Trade) and ev.seq == 6:
                    break
        server.close()
        await server.wait_closed()
        return got

    got = asyncio.run(asyncio.wait_for(main(), 20))
    assert requests == [{}, {("BTC-USD", "trades"): 101}]
    assert [type(ev).__name__ for ev in got] == ["Snapshot", "Trade", "ServerError", "Snapshot", "Trade"]
    assert isinstance(got[2], ServerError) and got[2].code == "bad_since"
    assert isinstance(got[3], Snapshot) and got[3].seq == 5


def test_fatal_close_code_raises():
    async def conn(ws):
        await ws.recv()
        await ws.close(4001, "unauthorized")

    async def main():
        server, url = await scripted_server([conn])
        try:
            async with TickwireClient(url, ["BTC-USD"], ["trades"], backoff_initial=0.01) as client:
                async for _ in client:
                    pass
        finally:
            server.close()
            await server.wait_closed()

    with pytest.raises(TickwireError, match="4001"):
        asyncio.run(asyncio.wait_for(main(), 20))


def test_refused_upgrade_raises_and_unreachable_server_gives_up():
    async def refuse(connection, request):
        return Response(404, "Not Found", Headers([("Content-Length", "0")]), b"")

    async def main():
        server = await serve(lambda ws: None, "127.0.0.1", 0, process_request=refuse)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(TickwireError, match="HTTP 404"):
                async with TickwireClient(f"ws://127.0.0.1:{port}/v1/ws", ["A"]):
                    pass
        finally:
            server.close()
            await server.wait_closed()
        # Nothing listens there any more: gives up after max_attempts.
        with pytest.raises(TickwireError, match="after 3 attempts"):
            async with TickwireClient(f"ws://127.0.0.1:{port}/v1/ws", ["A"], max_attempts=3, backoff_initial=0.01):
                pass

    asyncio.run(asyncio.wait_for(main(), 20))


def test_close_ends_iteration():
    f = Frames("proto")

    async def conn(ws):
        await ws.recv()
        await ws.send(f.snapshot(1))
        await hold(ws)

    async def main():
        server, url = await scripted_server([conn])
        client = TickwireClient(url, ["BTC-USD"], ["trades"])
        events = []
        async with client:
            async for ev in client:
                events.append(ev)
                await client.close()
        server.close()
        await server.wait_closed()
        return events

    events = asyncio.run(asyncio.wait_for(main(), 20))
    assert [type(e).__name__ for e in events] == ["Snapshot"]


def test_an_unannounced_trade_skip_becomes_a_gap_event():
    f = Frames("proto")

    async def conn(ws):
        await ws.recv()
        await ws.send(f.snapshot(10))
        await ws.send(f.trades([11, 12, 15, 16]))
        await hold(ws)

    async def main():
        server, url = await scripted_server([conn])
        got = []
        async with TickwireClient(url, ["BTC-USD"], ["trades"]) as client:
            async for ev in client:
                got.append(ev)
                if isinstance(ev, Trade) and ev.seq == 16:
                    break
        server.close()
        await server.wait_closed()
        return got

    got = asyncio.run(asyncio.wait_for(main(), 20))
    assert [getattr(ev, "seq", None) for ev in got] == [10, 11, 12, None, 15, 16]
    assert got[3] == Gap("BTC-USD", "trades", 13, 14, "unannounced")


@pytest.mark.parametrize(
    "fmt,error",
    [
        # The server names the refused stream: only that resume point is forgotten,
        # whatever the message says.
        ("proto", dict(symbol="BTC-USD", channel=pb.CHANNEL_QUOTES, message="resume refused")),
        ("json", dict(symbol="BTC-USD", channel="quotes", message="resume refused")),
        # An older server without the fields: the message is read instead.
        ("json", dict(message="since 500 is ahead of BTC-USD quotes at 3 (did the server restart?)")),
    ],
)
def test_bad_since_forgets_only_the_stream_the_error_names(fmt, error):
    """Quotes and trades resume; the server refuses only the quotes position
    (say, its quotes sequence started over). The client forgets that one and
    keeps resuming trades from where it was."""
    f = Frames(fmt)
    requests = []

    def error_frame():
        if fmt == "proto":
            return pb.ServerMessage(error=pb.Error(code="bad_since", op="subscribe", **error)).SerializeToString()
        return json.dumps({"type": "error", "code": "bad_since", "op": "subscribe", **error})

    async def conn(ws):
        requests.append(f.since_of(await ws.recv()))
        await ws.send(error_frame())
        await ws.send(f.trades([41]))
        await hold(ws)

    async def main():
        server, url = await scripted_server([conn])
        got = []
        since = {("BTC-USD", "trades"): 40, ("BTC-USD", "quotes"): 500}
        async with TickwireClient(url, ["BTC-USD"], ["quotes", "trades"], fmt, since=since) as client:
            # A protobuf client resuming without snapshots loads the instrument
            # table over REST, which this scripted server does not serve: fake it.
            client._decoder.learn(Instrument(0, "BTC-USD", 2, 5))
            async for ev in client:
                got.append((ev, client.last_seqs))
                if isinstance(ev, Trade):
                    break
        server.close()
        await server.wait_closed()
        return got

    got = asyncio.run(asyncio.wait_for(main(), 20))
    assert requests == [{("BTC-USD", "trades"): 40, ("BTC-USD", "quotes"): 500}]
    (err, after_error), (trade, after_trade) = got
    assert isinstance(err, ServerError) and err.code == "bad_since"
    if "symbol" in error:
        assert (err.symbol, err.channel) == ("BTC-USD", "quotes")
    assert after_error == {("BTC-USD", "trades"): 40}
    assert isinstance(trade, Trade) and trade.seq == 41 and after_trade == {("BTC-USD", "trades"): 41}


def test_token_goes_in_the_authorization_header_and_a_refusal_is_final():
    seen = []

    async def check(connection, request):
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Bearer s3cret":
            body = b'{"code":"unauthorized","message":"a token is required"}'
            return Response(401, "Unauthorized", Headers([("Content-Length", str(len(body))),
                                                         ("WWW-Authenticate", "Bearer")]), body)
        return None

    f = Frames("json")

    async def handler(ws):
        await ws.recv()
        await ws.send(f.snapshot(1))
        await hold(ws)

    async def main():
        server = await serve(handler, "127.0.0.1", 0, subprotocols=SUBPROTOCOLS, process_request=check)
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/ws"
        try:
            with pytest.raises(TickwireError, match="HTTP 401: a token is required"):
                async with TickwireClient(url, ["BTC-USD"], ["trades"], "json", backoff_initial=0.01):
                    pass
            with pytest.raises(TickwireError, match="HTTP 401: the token was refused"):
                async with TickwireClient(url, ["BTC-USD"], ["trades"], "json", token="wrong", backoff_initial=0.01):
                    pass
            async with TickwireClient(url, ["BTC-USD"], ["trades"], "json", token="s3cret") as client:
                async for ev in client:
                    return ev
        finally:
            server.close()
            await server.wait_closed()

    ev = asyncio.run(asyncio.wait_for(main(), 20))
    assert isinstance(ev, Snapshot)
    # One attempt each: a 401 is not retried.
    assert seen == [None, "Bearer wrong", "Bearer s3cret"]


def test_from_time_then_epochs_from_live_markers_and_fresh_snapshots():
    """The first subscribe asks since_time; the live marker's epoch goes with
    the next resume; a gap epoch_changed drops the old position, the fresh
    snapshot's epoch is adopted and sent with the resume after it."""
    f = Frames("json")
    requests = []
    key = ("BTC-USD", "trades")

    def live(seq, epoch):
        return json.dumps({"type": "live", "symbol": "BTC-USD", "channel": "trades", "seq": seq, "epoch": epoch})

    def snapshot(seq, epoch):
        return json.dumps({**json.loads(f.snapshot(seq)), "epoch": epoch})

    async def conn1(ws):
        requests.append(json.loads(await ws.recv()))
        await ws.send(f.trades([5, 6]))  # stored history
        await ws.send(live(6, 9))
        await ws.send(f.trades([7]))
        await asyncio.sleep(0.2)
        ws.transport.abort()

    async def conn2(ws):  # as if the server restarted and could not continue
        requests.append(json.loads(await ws.recv()))
        await ws.send(json.dumps({"type": "gap", "symbol": "BTC-USD", "channel": "trades", "from_seq": 1,
                                  "to_seq": 3, "reason": "epoch_changed"}))
        await ws.send(snapshot(3, 10))
        await ws.send(f.trades([4]))
        await asyncio.sleep(0.2)
        ws.transport.abort()

    async def conn3(ws):
        requests.append(json.loads(await ws.recv()))
        await ws.send(f.trades([5]))
        await hold(ws)

    async def main():
        server, url = await scripted_server([conn1, conn2, conn3])
        got = []
        async with TickwireClient(url, ["BTC-USD"], ["trades"], "json", backoff_initial=0.01,
                                  from_time="2025-12-01T00:00:00.5Z") as client:
            async for ev in client:
                got.append((client.connection, ev))
                if client.connection == 3 and isinstance(ev, Trade):
                    break
            result = got, client.stats, client.last_seqs, client.epoch
        server.close()
        await server.wait_closed()
        return result

    got, stats, last, epoch = asyncio.run(asyncio.wait_for(main(), 20))
    t = 1_764_547_200_500_000_000
    assert requests[0]["since_time"] == t and "since" not in requests[0] and "epoch" not in requests[0]
    assert requests[1]["since"] == {"BTC-USD": {"trades": 7}} and requests[1]["epoch"] == 9
    assert "since_time" not in requests[1]
    assert requests[2]["since"] == {"BTC-USD": {"trades": 4}} and requests[2]["epoch"] == 10
    trades = [(c, ev.seq) for c, ev in got if isinstance(ev, Trade)]
    assert trades == [(1, 5), (1, 6), (1, 7), (2, 4), (3, 5)]
    assert [ev for _, ev in got if type(ev).__name__ == "Live"][0].epoch == 9
    assert stats.gaps == 1 and stats.epoch_changes == 1 and stats.lives == 1 and stats.duplicates == 0, stats
    assert epoch == 10 and last == {key: 5} and last.epochs == {key: 10} and last.epoch == 10


def test_streams_of_different_epochs_resume_in_separate_requests():
    """A cut between two streams' fresh snapshots (a restart half handled)
    leaves resume points of two runs: each goes with its own epoch."""
    from tickwire_client import ResumePoint

    since = ResumePoint({("A", "trades"): 40, ("A", "quotes"): 3, ("B", "trades"): 7},
                        {("A", "trades"): 1, ("A", "quotes"): 2, ("B", "trades"): 1})
    client = TickwireClient("ws://127.0.0.1:1/v1/ws", ["A", "B"], ["quotes", "trades"], "json", since=since)
    frames = sorted((json.loads(fr) for fr in client._subscribe_frames()), key=lambda m: (m.get("epoch") or 0, m["symbols"]))
    assert [(m["symbols"], m["channels"], m.get("since"), m.get("epoch")) for m in frames] == [
        (["B"], ["quotes"], None, None),  # no resume point: a snapshot
        (["A", "B"], ["trades"], {"A": {"trades": 40}, "B": {"trades": 7}}, 1),
        (["A"], ["quotes"], {"A": {"quotes": 3}}, 2),
    ]
    # A plain mapping with epoch= applies it to every resume point.
    client = TickwireClient("ws://127.0.0.1:1/v1/ws", ["A"], ["trades"], "json", since={"A": 40}, epoch=5)
    [frame] = client._subscribe_frames()
    assert json.loads(frame)["epoch"] == 5 and client.epoch == 5 and client.last_seqs.epochs == {("A", "trades"): 5}
