"""A local L2 order book kept from the ``book`` channel."""

from __future__ import annotations

from decimal import Decimal
from typing import Optional

from .events import BookInvalidated, BookUpdate, Level, Snapshot

__all__ = ["OrderBook"]


class OrderBook:
    """The book of one symbol: feed it the ``Snapshot``\\s, ``BookUpdate``\\s and
    ``BookInvalidated`` events of that symbol's ``book`` channel, in order.

    A snapshot replaces the whole book; an update sets each listed level (size 0
    removes it). After ``BookInvalidated`` the book is empty and ``valid`` is
    False until the fresh snapshot that follows.
    """

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.seq = 0
        self.valid = False

    def apply(self, event) -> bool:
        """Applies one event; returns False when it is not for this book."""
        if getattr(event, "symbol", None) != self.symbol:
            return False
        if isinstance(event, Snapshot) and event.channel == "book":
            self.bids.clear()
            self.asks.clear()
            if isinstance(event.data, BookUpdate):
                self._set(self.bids, event.data.bids)
                self._set(self.asks, event.data.asks)
            self.seq = event.seq
            self.valid = True
            return True
        if isinstance(event, BookUpdate):
            self._set(self.bids, event.bids)
            self._set(self.asks, event.asks)
            self.seq = event.seq
            return True
        if isinstance(event, BookInvalidated):
            self.bids.clear()
            self.asks.clear()
            self.valid = False
            return True
        return False

    @staticmethod
    def _set(side: dict[Decimal, Decimal], levels: tuple[Level, ...]) -> None:
        for price, size in levels:
            if size == 0:
                side.pop(price, None)
            else:
                side[price] = size

    def best_bid(self) -> Optional[Level]:
        return max(self.bids.items()) if self.bids else None

    def best_ask(self) -> Optional[Level]:
        return min(self.asks.items()) if self.asks else None

    def top(self, depth: int = 10) -> tuple[list[Level], list[Level]]:
        """Best ``depth`` levels per side, best first."""
        bids = sorted(self.bids.items(), reverse=True)[:depth]
        asks = sorted(self.asks.items())[:depth]
        return bids, asks
