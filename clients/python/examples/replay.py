#!/usr/bin/env python3
"""Replays a stored range and prints, per second of exchange time, each
symbol's trades, last price and top of book (kept from the replay's books).

    clients/python/.venv/bin/python clients/python/examples/replay.py \
        --url ws://127.0.0.1:8080/v1/ws --from 2026-12-04T15:40:00Z --to 2026-12-04T15:45:00Z \
        --speed max BTC-USD ETH-USD

--from defaults to five minutes ago and --to to now; times are RFC 3339 or ns
since the epoch. Needs a gateway with a store (`tickwire serve` keeps one by
default). --speed is a factor of real time (1, 10) or max.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal
from typing import Optional

# Run from a checkout without installing: the package sits one directory up.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tickwire_client import (  # noqa: E402
    BookInvalidated,
    Gap,
    ReplayEnd,
    ReplayStatus,
    ServerError,
    TickwireError,
    TickwireReplay,
    Trade,
)


def clock(ns: int) -> str:
    return datetime.fromtimestamp(ns // 10**9, timezone.utc).strftime("%H:%M:%S")


def time_arg(text: str):
    return int(text) if text.isdigit() else text


async def run(args: argparse.Namespace) -> int:
    now = time.time_ns()
    start = args.start if args.start is not None else now - 300 * 10**9
    end = args.end if args.end is not None else now
    trades: dict[str, int] = {s: 0 for s in args.symbols}
    last: dict[str, Optional[Decimal]] = {s: None for s in args.symbols}
    second: Optional[int] = None

    async with TickwireReplay(args.url, args.symbols, ["trades", "book"], start, end, speed=args.speed,
                              format=args.format, token=args.token) as replay:

        def row() -> None:
            for symbol in args.symbols:
                book = replay.books.get(symbol)
                bid = book.best_bid() if book and book.valid else None
                ask = book.best_ask() if book and book.valid else None
                print(f"{clock(second * 10**9)}  {symbol:<10}{trades[symbol]:>6} trades  last {last[symbol] or '-':>12}"
                      f"  bid {bid[0] if bid else '-':>12}  ask {ask[0] if ask else '-':>12}", flush=True)
                trades[symbol] = 0

        async for event in replay:
            match event:
                case ReplayStatus(instruments=instruments) if instruments:
                    print(f"replaying {clock(event.from_ns)}..{clock(event.to_ns)} UTC at speed {event.speed}: "
                          f"{', '.join(i.symbol for i in instruments)}", flush=True)
                case Trade():
                    at = event.ts_event // 10**9
                    if second is not None and at != second:
                        row()
                    second = at
                    trades[event.symbol] += 1
                    last[event.symbol] = event.price
                case BookInvalidated(seq=0):
                    print(f"{event.symbol}: no stored book before the start; it comes with the next reset", flush=True)
                case Gap():
                    print(f"{event.symbol} {event.channel}: the store has no {event.from_seq}..{event.to_seq}"
                          f" ({event.reason})", flush=True)
                case ServerError():
                    print(f"server error {event.code}: {event.message}", file=sys.stderr, flush=True)
                case ReplayEnd():
                    if second is not None:
                        row()
                    print(f"end: {event.events} stored events", flush=True)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Replay stored trades and books from a Tickwire gateway.")
    parser.add_argument("symbols", nargs="*", default=["BTC-USD", "ETH-USD"], help="symbols (default: BTC-USD ETH-USD)")
    parser.add_argument("--url", default=os.environ.get("TICKWIRE_URL", "ws://127.0.0.1:8080/v1/ws"))
    parser.add_argument("--from", dest="start", type=time_arg, help="start: RFC 3339 or ns (default: 5 minutes ago)")
    parser.add_argument("--to", dest="end", type=time_arg, help="end: RFC 3339 or ns (default: now)")
    parser.add_argument("--speed", default="max", help="a factor of real time (1, 10) or max (default)")
    parser.add_argument("--format", choices=["proto", "json"], default="proto")
    parser.add_argument("--token", default=os.environ.get("TICKWIRE_TOKEN"),
                        help="access token of a gateway started with --auth-token (default: $TICKWIRE_TOKEN)")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0
    except TickwireError as exc:  # ReplayRefused included: it names the server's code
        print(f"replay: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
