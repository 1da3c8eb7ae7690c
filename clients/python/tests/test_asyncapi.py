"""proto/asyncapi.yaml describes what the server really sends.

Every JSON message a real server sends on /v1/ws, /v1/sse, /v1/poll and
/v1/replay is validated against the document's schemas (which forbid fields
they do not name), and the messages a client sends are validated against the
request schemas before they are sent. A field added to the protocol without
the document fails here.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import websockets
import yaml

from conftest import start_server, stop_server

pytestmark = pytest.mark.server

DOCUMENT = yaml.safe_load((Path(__file__).resolve().parents[3] / "proto" / "asyncapi.yaml").read_text())


def validator(schema: str) -> jsonschema.Draft7Validator:
    """A validator of one component schema, with the whole document as its
    root so that every ``$ref`` in it resolves."""
    assert schema in DOCUMENT["components"]["schemas"], schema
    return jsonschema.Draft7Validator({**DOCUMENT, "$ref": f"#/components/schemas/{schema}"})


SERVER = validator("ServerMessage")
REPLAY = validator("ReplayServerMessage")
REQUESTS = {op: validator(name) for op, name in [("subscribe", "Subscribe"), ("unsubscribe", "Unsubscribe"), ("ping", "Ping")]}


def check(v: jsonschema.Draft7Validator, message: dict) -> None:
    errors = sorted(v.iter_errors(message), key=lambda e: e.path)
    assert not errors, f"{json.dumps(message)[:400]}\n" + "\n".join(e.message for e in errors[:5])


def test_the_document_is_asyncapi_3_and_its_operations_name_real_channels():
    assert DOCUMENT["asyncapi"].startswith("3.")
    for name, operation in DOCUMENT["operations"].items():
        channel = operation["channel"]["$ref"].split("/")[-1]
        assert channel in DOCUMENT["channels"], name
        for message in operation["messages"]:
            assert message["$ref"].split("/")[-1] in DOCUMENT["channels"][channel]["messages"], (name, message)
    # Strict: an update with a field the document does not name is refused.
    update = {"symbol": "BTC-USD", "channel": "trades", "seq": 1, "price": "1.00", "size": "2.0", "side": "buy",
              "trade_id": 3, "ts_event": 1, "ts_recv": 2, "ts_send": 3}
    check(SERVER, {"type": "batch", "updates": [update]})
    assert not SERVER.is_valid({"type": "batch", "updates": [{**update, "venue_extra": 1}]})
    assert not SERVER.is_valid({"type": "batch", "updates": [{**update, "price": 1.0}]}), "prices are strings"


def test_websocket_and_fallback_messages_match_the_document():
    srv = start_server(store=True, rate=500)
    try:
        seen = asyncio.run(ws_session(srv.ws_url, since_time=time.time_ns() - 2_000_000_000))
        sse = read_sse(f"{srv.http_url}/v1/sse?symbols=BTC-USD,ETH-USD&channels=quotes,trades,book,candles.1s", 40)
        first = get_json(f"{srv.http_url}/v1/poll?symbols=BTC-USD&channels=quotes,trades,book")
        second = get_json(f"{srv.http_url}/v1/poll?symbols=BTC-USD&channels=quotes,trades,book&cursor={first['cursor']}")
    finally:
        stop_server(srv)
    assert {"snapshot", "batch", "live", "error", "pong", "subscribed", "unsubscribed"} <= seen, seen
    for message in sse + first["messages"] + second["messages"]:
        check(SERVER, message)
    assert {m["type"] for m in sse} >= {"snapshot", "batch"}
    assert any(m["type"] == "batch" for m in second["messages"]), second


async def ws_session(url: str, since_time: int) -> set[str]:
    """Subscribes, pings, makes every kind of request the server answers, and
    validates everything it sends; returns the message types seen."""
    seen: set[str] = set()
    aliased = False
    requests = [
        {"op": "subscribe", "symbols": ["BTC-USD", "ETH-USD"], "channels": ["quotes", "trades", "book", "candles.1s"]},
        {"op": "ping", "id": 7},
        {"op": "subscribe", "symbols": ["NO-SUCH"], "channels": ["quotes"]},
        {"op": "subscribe", "symbols": ["AAPL"], "channels": ["trades"], "delivery": "sometimes"},
        {"op": "subscribe", "symbols": ["AAPL"], "channels": ["trades"], "since_time": since_time},
        {"op": "unsubscribe", "symbols": ["ETH-USD"], "channels": ["book"]},
        {"op": "subscribe", "symbols": ["*-USD", "aapl"], "channels": ["quotes"]},
    ]
    async with websockets.connect(url) as ws:
        for request in requests:
            if request.get("delivery") == "sometimes":
                assert not REQUESTS["subscribe"].is_valid(request), "the document refuses what the server refuses"
            else:
                check(REQUESTS[request["op"]], request)
            await ws.send(json.dumps(request))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                text = await asyncio.wait_for(ws.recv(), timeout=1)
            except asyncio.TimeoutError:
                continue
            message = json.loads(text)
            check(SERVER, message)
            seen.add(message["type"])
            aliased = aliased or bool(message.get("aliases"))
            if {"batch", "live", "unsubscribed"} <= seen and aliased and time.monotonic() > deadline - 3:
                break
    assert aliased, "an acknowledgement with aliases was seen and validated"
    return seen


def read_sse(url: str, count: int) -> list[dict]:
    """The first ``count`` events' data of an SSE stream."""
    out: list[dict] = []
    with urllib.request.urlopen(url, timeout=10) as response:
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("data:"):
                out.append(json.loads(line[5:]))
                if len(out) >= count:
                    break
    return out


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_replay_messages_match_the_document():
    srv = start_server(store=True, rate=1000)
    try:
        start = time.time_ns()
        time.sleep(1.5)
        end = time.time_ns()
        # The writer stores what the journal holds within about a second.
        time.sleep(1.5)
        url = (f"ws://{srv.addr}/v1/replay?symbols=BTC-USD,ETH-USD&channels=quotes,trades,book"
               f"&from={start}&to={end}&speed=max")

        async def main() -> list[dict]:
            messages = []
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({"op": "pause"}))
                await ws.send(json.dumps({"op": "speed", "speed": "max"}))
                await ws.send(json.dumps({"op": "resume"}))
                await ws.send(json.dumps({"op": "seek", "to": start + 500_000_000}))
                await ws.send(json.dumps({"op": "ping", "id": 1}))
                await ws.send(json.dumps({"op": "warp"}))
                async for text in ws:
                    messages.append(json.loads(text))
            return messages

        messages = asyncio.run(main())
    finally:
        stop_server(srv)
    for message in messages:
        check(REPLAY, message)
    types = {m["type"] for m in messages}
    assert {"replay", "snapshot", "batch", "end", "pong", "error"} <= types, types
    assert messages[-1]["type"] == "end"
