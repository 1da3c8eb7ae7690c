#!/usr/bin/env python3
"""Rolling VWAP and spread per symbol, printed as a table every second.

    make -C clients/python vwap                       # ws://127.0.0.1:8080/v1/ws, BTC-USD ETH-USD AAPL
    clients/python/.venv/bin/python clients/python/examples/vwap.py \
        --url ws://127.0.0.1:8080/v1/ws BTC-USD ETH-USD

Subscribes to quotes and trades. VWAP = sum(price * size) / sum(size) over the
trades of the last --window seconds (by exchange time), computed in exact
decimals; the spread is the latest quote's ask - bid, also in basis points of
the mid. "lag ms" is how old the latest update was when it arrived
(local clock - ts_event). The connection reconnects and resumes by itself;
gaps, if any, are counted in the "gaps" column.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Optional

# Run from a checkout without installing: the package sits one directory up.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tickwire_client import Gap, Quote, ServerError, Snapshot, TickwireClient, TickwireError, Trade  # noqa: E402


@dataclass
class SymbolStats:
    window_ns: int
    trades: collections.deque = field(default_factory=collections.deque)  # (ts_event, price, size)
    notional: Decimal = Decimal(0)
    volume: Decimal = Decimal(0)
    last: Optional[Decimal] = None
    quote: Optional[Quote] = None
    lag_ns: Optional[int] = None
    gaps: int = 0

    def add_trade(self, t: Trade) -> None:
        self.trades.append((t.ts_event, t.price, t.size))
        self.notional += t.price * t.size
        self.volume += t.size
        self.last = t.price

    def expire(self, now_ns: int) -> None:
        horizon = now_ns - self.window_ns
        while self.trades and self.trades[0][0] < horizon:
            _, price, size = self.trades.popleft()
            self.notional -= price * size
            self.volume -= size

    def vwap(self) -> Optional[Decimal]:
        if not self.volume:
            return None
        digits = -self.last.as_tuple().exponent if self.last is not None else 2
        return (self.notional / self.volume).quantize(Decimal(1).scaleb(-(max(digits, 0) + 2)))


def fmt(value, width: int) -> str:
    return ("-" if value is None else str(value)).rjust(width)


def render(stats: dict[str, SymbolStats], client: TickwireClient, window: float) -> str:
    now_ns = time.time_ns()
    lines = [
        f"{time.strftime('%H:%M:%S')}  VWAP over {window:g} s  ({client.format}, connection {client.connection}, "
        f"{client.stats.updates} updates)",
        f"{'symbol':<10}{'last':>12}{'vwap':>14}{'volume':>14}{'trades':>8}{'bid':>12}{'ask':>12}"
        f"{'spread':>10}{'bps':>8}{'lag ms':>8}{'gaps':>6}",
    ]
    for symbol, s in stats.items():
        s.expire(now_ns)
        q = s.quote
        spread = bps = None
        if q is not None:
            spread = q.spread
            if q.mid:
                bps = (spread / q.mid * 10_000).quantize(Decimal("0.01"))
        lag = None if s.lag_ns is None else f"{s.lag_ns / 1e6:.2f}"
        lines.append(
            f"{symbol:<10}{fmt(s.last, 12)}{fmt(s.vwap(), 14)}{fmt(s.volume if s.trades else None, 14)}"
            f"{len(s.trades):>8}{fmt(q and q.bid, 12)}{fmt(q and q.ask, 12)}{fmt(spread, 10)}{fmt(bps, 8)}"
            f"{fmt(lag, 8)}{s.gaps:>6}"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    window_ns = int(args.window * 1e9)
    stats = {s: SymbolStats(window_ns) for s in args.symbols}
    async with TickwireClient(args.url, symbols=args.symbols, channels=["quotes", "trades"], format=args.format,
                              token=args.token) as client:

        async def consume() -> None:
            async for event in client:
                if isinstance(event, ServerError):
                    print(f"server error {event.code}: {event.message}", file=sys.stderr, flush=True)
                    continue
                s = stats.get(getattr(event, "symbol", None))
                if s is None:
                    continue
                if isinstance(event, Trade):
                    s.add_trade(event)
                    s.lag_ns = time.time_ns() - event.ts_event
                elif isinstance(event, Quote):
                    s.quote = event
                    s.lag_ns = time.time_ns() - event.ts_event
                elif isinstance(event, Snapshot):
                    if isinstance(event.data, Quote):
                        s.quote = event.data
                    elif isinstance(event.data, Trade):
                        s.last = event.data.price
                elif isinstance(event, Gap):
                    s.gaps += 1

        async def show() -> None:
            while True:
                await asyncio.sleep(args.interval)
                print(render(stats, client, args.window) + "\n", flush=True)

        tasks = [asyncio.create_task(consume()), asyncio.create_task(show())]
        try:
            done, _ = await asyncio.wait(
                tasks, timeout=args.duration or None, return_when=asyncio.FIRST_EXCEPTION
            )
            for task in done:
                task.result()  # re-raise a failure (e.g. the server refused us)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Rolling VWAP and spread per symbol from a Tickwire gateway.")
    parser.add_argument("symbols", nargs="*", default=["BTC-USD", "ETH-USD"], help="symbols (default: BTC-USD ETH-USD)")
    parser.add_argument("--url", default=os.environ.get("TICKWIRE_URL", "ws://127.0.0.1:8080/v1/ws"))
    parser.add_argument("--format", choices=["proto", "json"], default="proto")
    parser.add_argument("--token", default=os.environ.get("TICKWIRE_TOKEN"),
                        help="access token of a gateway started with --auth-token (default: $TICKWIRE_TOKEN)")
    parser.add_argument("--window", type=float, default=60.0, help="VWAP window in seconds (default 60)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between tables (default 1)")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (default: run until Ctrl-C)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log connects and reconnects")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0
    except TickwireError as exc:
        print(f"vwap: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
