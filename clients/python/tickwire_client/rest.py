"""The gateway's REST side, as far as stream clients need it: the instrument
table and candle history (``GET /v1/candles``).

Plain ``urllib`` (no extra dependency); the calls block, so from asyncio code
run them with ``asyncio.to_thread``. With an access token they send
``Authorization: Bearer <token>``, as the stream connection does.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal
from typing import Optional

from .events import CANDLE_INTERVALS, Candle

__all__ = ["RestError", "http_base", "auth_headers", "get_json", "fetch_instruments", "fetch_candles"]


class RestError(Exception):
    """A REST call answered with an HTTP error: ``status`` and the server's
    ``code`` (e.g. ``"unauthorized"``, ``"bad_interval"``) when it sent one."""

    def __init__(self, url: str, status: int, code: Optional[str], message: str) -> None:
        super().__init__(f"{url}: HTTP {status} {code or ''}: {message}".replace("  ", " "))
        self.url = url
        self.status = status
        self.code = code
        self.message = message


def http_base(url: str) -> str:
    """The gateway's HTTP base URL (``http://host:port``, with any path prefix
    before ``/v1``) from its WebSocket or HTTP URL:
    ``ws://h:8080/v1/ws`` → ``http://h:8080``, ``wss://h/api/v1/ws`` → ``https://h/api``."""
    parts = urllib.parse.urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path
    cut = path.find("/v1/")
    if cut < 0 and path.endswith("/v1"):
        cut = len(path) - 3
    prefix = path[:cut] if cut >= 0 else path.rstrip("/")
    return urllib.parse.urlunsplit((scheme, parts.netloc, prefix, "", ""))


def auth_headers(token: Optional[str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def get_json(url: str, token: Optional[str] = None, timeout: float = 10.0) -> dict:
    """GETs ``url`` and parses its JSON body; raises :class:`RestError` on an HTTP error."""
    request = urllib.request.Request(url, headers={"Accept": "application/json", **auth_headers(token)})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        code, message = None, exc.reason
        try:
            body = json.loads(exc.read() or b"{}")
            code, message = body.get("code"), body.get("message", message)
        except (ValueError, AttributeError):
            pass
        raise RestError(url, exc.code, code, str(message)) from exc


def fetch_instruments(base: str, token: Optional[str] = None, timeout: float = 10.0) -> list[dict]:
    """``GET /v1/instruments``: the list, in instrument-id order."""
    return list(get_json(f"{http_base(base)}/v1/instruments", token, timeout)["instruments"])


def fetch_candles(
    base: str,
    symbol: str,
    interval: str,
    from_ns: Optional[int] = None,
    to_ns: Optional[int] = None,
    token: Optional[str] = None,
    timeout: float = 10.0,
) -> list[Candle]:
    """``GET /v1/candles``: OHLCV computed from the stored trades, oldest first
    (default range: the last hour). ``base`` is the gateway's HTTP or WebSocket URL.

    The candles come as :class:`Candle` values with ``seq=0`` and no clocks
    (REST candles have none); ``closed`` is set for every bucket that ended by
    ``to`` (default: now), so only the last one may still be filling. Trades reach
    the store a moment after the live stream, so the newest bucket can trail the
    live candle by that much."""
    if interval not in CANDLE_INTERVALS:
        raise ValueError(f"unknown candle interval {interval!r} (one of {', '.join(CANDLE_INTERVALS)})")
    query = {"symbol": symbol, "interval": interval}
    if from_ns is not None:
        query["from"] = str(from_ns)
    if to_ns is not None:
        query["to"] = str(to_ns)
    url = f"{http_base(base)}/v1/candles?{urllib.parse.urlencode(query)}"
    end = to_ns if to_ns is not None else time.time_ns()
    body = get_json(url, token, timeout)
    width = _INTERVAL_NS[interval]
    out = []
    for c in body.get("candles", []):
        start = int(c["t"])
        out.append(
            Candle(
                symbol, 0, interval, start,
                Decimal(c["open"]), Decimal(c["high"]), Decimal(c["low"]), Decimal(c["close"]),
                Decimal(c["volume"]), int(c.get("trades", 0)),
                start + width <= end,
                0, 0, 0,
            )
        )
    return out


_INTERVAL_NS = {"1s": 10**9, "1m": 60 * 10**9, "5m": 300 * 10**9, "1h": 3600 * 10**9, "1d": 86400 * 10**9}
