"""Python client for the Tickwire market-data gateway (protocol v1).

::

    import asyncio
    from tickwire_client import TickwireClient, Trade

    async def main():
        async with TickwireClient("ws://127.0.0.1:8080/v1/ws", symbols=["BTC-USD"],
                                  channels=["quotes", "trades"], format="proto") as client:
            async for event in client:
                if isinstance(event, Trade):
                    print(event.symbol, event.seq, event.side, event.size, "@", event.price)

    asyncio.run(main())
"""

from .book import OrderBook
from .client import ClientStats, ResumePoint, TickwireClient, TickwireError, backoff_delay, to_ns
from .codec import (
    Decoder,
    Instrument,
    ProtocolError,
    encode_ping,
    encode_replay_control,
    encode_subscribe,
    encode_unsubscribe,
    to_decimal,
)
from .events import (
    CANDLE_INTERVALS,
    CHANNELS,
    DEFAULT_CHANNELS,
    BookInvalidated,
    BookUpdate,
    Candle,
    Event,
    Gap,
    Level,
    Live,
    Pong,
    Quote,
    ReplayEnd,
    ReplayStatus,
    ServerError,
    Snapshot,
    Trade,
    Update,
    candle_channel,
)
from .replay import ReplayRefused, ReplayStats, TickwireReplay
from .rest import RestError, fetch_candles, fetch_instruments, http_base

__version__ = "0.1.0"

__all__ = [
    "TickwireClient",
    "TickwireError",
    "TickwireReplay",
    "ReplayRefused",
    "ReplayStats",
    "ClientStats",
    "ResumePoint",
    "backoff_delay",
    "to_ns",
    "OrderBook",
    "Decoder",
    "Instrument",
    "ProtocolError",
    "encode_subscribe",
    "encode_unsubscribe",
    "encode_ping",
    "encode_replay_control",
    "to_decimal",
    "CHANNELS",
    "DEFAULT_CHANNELS",
    "CANDLE_INTERVALS",
    "candle_channel",
    "RestError",
    "fetch_candles",
    "fetch_instruments",
    "http_base",
    "Quote",
    "Trade",
    "BookUpdate",
    "Candle",
    "Level",
    "Update",
    "Snapshot",
    "Gap",
    "BookInvalidated",
    "ServerError",
    "Pong",
    "Live",
    "ReplayStatus",
    "ReplayEnd",
    "Event",
]
