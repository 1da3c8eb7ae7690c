"""The client against a cluster: a private nats-server (free port, temporary
storage), one ingest node and two gateways (TICKWIRE_BIN). Given both gateway
URLs, the client moves to the other gateway when its own is killed and resumes
there with no gap and no duplicate."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import SYMBOLS, start_server, stop_server
from tickwire_client import Gap, ServerError, Snapshot, TickwireClient, Trade

pytestmark = pytest.mark.server


def nats_binary() -> str | None:
    for path in ("/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"):
        if Path(path).exists():
            return path
    return shutil.which("nats-server")


@pytest.fixture()
def nats():
    binary = nats_binary()
    if binary is None:
        pytest.fail("nats-server is not installed (apt-get install nats-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = tempfile.mkdtemp(prefix="tickwire-nats-")
    process = subprocess.Popen(
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "nats-server did not listen"
            time.sleep(0.05)
    yield f"nats://127.0.0.1:{port}"
    process.kill()
    process.wait()
    shutil.rmtree(store, ignore_errors=True)


@pytest.mark.parametrize("fmt", ["proto", "json"])
def test_a_killed_gateways_clients_resume_on_the_other_without_a_gap(nats, fmt):
    ingest = start_server("--role", "ingest", "--nats", nats, "--bus-checkpoint-ms", "200", rate=400)
    gateways = [start_server("--role", "gateway", "--nats", nats) for _ in range(2)]
    try:
        async def main():
            events = []
            urls = [g.ws_url for g in gateways]
            async with TickwireClient(urls, SYMBOLS, ["trades", "quotes"], fmt,
                                      backoff_initial=0.05, backoff_max=0.3) as client:
                async def read(seconds):
                    try:
                        await asyncio.wait_for(_collect(client, events), seconds)
                    except asyncio.TimeoutError:
                        pass

                await read(2.0)
                gateways[0].process.send_signal(signal.SIGKILL)
                await read(4.0)
                return events, client

        events, client = asyncio.run(main())
    finally:
        for srv in [*gateways, ingest]:
            stop_server(srv)
    assert client.stats.connections == 2, client.stats
    assert client.url == gateways[1].ws_url
    assert client.stats.duplicates == 0, client.stats
    bad = [ev for _, ev in events if isinstance(ev, (Gap, ServerError))]
    assert not bad, bad[:3]
    # No snapshot on the second connection: every stream resumed by sequence.
    assert not [ev for c, ev in events if c == 2 and isinstance(ev, Snapshot)]
    for symbol in SYMBOLS:
        trades = [ev.seq for _, ev in events if isinstance(ev, Trade) and ev.symbol == symbol]
        snap = [ev.seq for c, ev in events if isinstance(ev, Snapshot) and ev.symbol == symbol and ev.channel == "trades"]
        assert trades and trades == list(range(snap[0] + 1, snap[0] + 1 + len(trades))), (symbol, trades[:5])
    assert [ev for c, ev in events if c == 2 and isinstance(ev, Trade)], "trades flowed on the other gateway"


async def _collect(client, sink):
    async for ev in client:
        sink.append((client.connection, ev))
