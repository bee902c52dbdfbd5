"""Exchange feed handlers, one module per exchange; ``HANDLERS`` maps exchange name -> class.

A second protocol of the same exchange gets its own name (``kraken_v2``); its events keep the
exchange's name (``kraken``), so both feed the same ``ex:SYM`` keys: run one or the other.
"""

from __future__ import annotations

from connectors.exchanges.base import Handler
from connectors.exchanges.binance import BinanceFuturesHandler, BinanceHandler
from connectors.exchanges.bybit import BybitHandler
from connectors.exchanges.coinbase import CoinbaseHandler
from connectors.exchanges.kraken import KrakenHandler, KrakenV2Handler
from connectors.exchanges.okx import OkxHandler

__all__ = ["HANDLERS", "Handler"]

HANDLERS: dict[str, type[Handler]] = {
    "binance": BinanceHandler,
    "binance_futures": BinanceFuturesHandler,
    "bybit": BybitHandler,
    "coinbase": CoinbaseHandler,
    "kraken": KrakenHandler,
    "kraken_v2": KrakenV2Handler,  # WebSocket v2; its events keep the exchange name "kraken"
    "okx": OkxHandler,
}
