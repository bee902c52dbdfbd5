"""Exchange feed handlers, one module per exchange; ``HANDLERS`` maps exchange name -> class."""

from __future__ import annotations

from connectors.exchanges.base import Handler
from connectors.exchanges.binance import BinanceFuturesHandler, BinanceHandler
from connectors.exchanges.bybit import BybitHandler
from connectors.exchanges.coinbase import CoinbaseHandler
from connectors.exchanges.kraken import KrakenHandler
from connectors.exchanges.okx import OkxHandler

__all__ = ["HANDLERS", "Handler"]

HANDLERS: dict[str, type[Handler]] = {
    "binance": BinanceHandler,
    "binance_futures": BinanceFuturesHandler,
    "bybit": BybitHandler,
    "coinbase": CoinbaseHandler,
    "kraken": KrakenHandler,
    "okx": OkxHandler,
}
