"""Coinbase: Exchange ``level2`` + ``matches``, and Advanced Trade ``level2`` + ``market_trades``.

Neither ``level2`` feed numbers its per-product book messages, so the handler does (see
:mod:`connectors.exchanges.base`): the ``snapshot`` takes the product's next number, each update
the following one with ``prev_seq`` chained. Books come in-band (a resync is a re-subscription):
a product out of sync drops its updates until its next snapshot. Advanced Trade numbers every
message of the connection (``sequence_num``): a jump there means frames were lost for any
product, so every book of the connection loses sync.

Times: ``l2update``/``match`` ``time`` (ms, floored); a snapshot carries none, so its ``ts`` is the
receive time. A Coinbase Exchange ``match`` names the maker's side: the taker (our ``side``) is
the other one. ``last_match`` (the product's latest trade, sent after subscribing) is a trade too.
"""

from __future__ import annotations

from typing import Any

import orjson

from connectors.exchanges.base import Handler, iso_to_ms, to_symbol
from operators.events import _native

__all__ = ["CoinbaseHandler"]

_TAKER = {"buy": "sell", "sell": "buy"}


class CoinbaseHandler(Handler):
    """Coinbase Exchange (``ws-feed``) and Advanced Trade market data, by message shape."""

    exchange = "coinbase"
    _fast = None if _native is None else staticmethod(_native.coinbase_frame)
    _fast_raw = None if _native is None else staticmethod(_native.coinbase_raw)
    _book_type = Handler._book_type if _native is None else _native.FeedBook

    def __init__(self, api: str = "exchange") -> None:
        super().__init__()
        if api not in ("exchange", "advanced"):
            raise ValueError(f"api must be 'exchange' or 'advanced', not {api!r}")
        self.api = api  # which subscription a live connection sends; frames decode either way
        self._conn_seq: int | None = None  # Advanced Trade sequence_num

    def subscribe_messages(self, symbols: list[str]) -> list[str]:
        if self.api == "advanced":  # one channel per message; heartbeats keep quiet feeds alive
            return [orjson.dumps({"type": "subscribe", "product_ids": symbols,
                                  "channel": ch}).decode()
                    for ch in ("level2", "market_trades", "heartbeats")]
        return [orjson.dumps({"type": "subscribe", "product_ids": symbols,
                              "channels": ["level2", "matches"]}).decode()]

    def on_connect(self) -> None:
        """``sequence_num`` starts over with each connection."""
        super().on_connect()
        self._conn_seq = None

    def _on_message(self, msg: Any, rts: int) -> list[dict[str, Any]]:
        if "channel" in msg:
            return self._advanced(msg, rts)
        kind = msg.get("type")
        if kind == "l2update":
            sym = to_symbol(msg["product_id"])
            bids: list[list[str]] = []
            asks: list[list[str]] = []
            for side, px, qty in msg["changes"]:
                (bids if side == "buy" else asks).append([px, qty])
            return self._update(sym, iso_to_ms(msg["time"]), rts, bids, asks)
        if kind == "match" or kind == "last_match":
            return [self._trade(to_symbol(msg["product_id"]), iso_to_ms(msg["time"]), rts,
                                str(msg["trade_id"]), msg["price"], msg["size"],
                                _TAKER[msg["side"]])]
        if kind == "snapshot":
            sym = to_symbol(msg["product_id"])
            return self._snapshot(sym, rts, rts, msg["bids"], msg["asks"])
        self._stats["ignored"] += 1
        return []

    def _snapshot(self, sym: str, ts: int, rts: int, bids: list[Any],
                  asks: list[Any]) -> list[dict[str, Any]]:
        d, _ = self._book_event(sym, ts, rts, "snapshot", self._next(sym), None,
                                [lv[:2] for lv in bids], [lv[:2] for lv in asks])
        return [d]

    def _update(self, sym: str, ts: int, rts: int, bids: list[list[str]],
                asks: list[list[str]]) -> list[dict[str, Any]]:
        if sym in self._unsynced or sym not in self.books:
            self._stats["dropped"] += 1
            return []
        d, _ = self._book_event(sym, ts, rts, "update", self._next(sym), self.books[sym].seq,
                                bids, asks)
        return [d]

    # -- Advanced Trade ------------------------------------------------------------------------
    def _advanced(self, msg: dict[str, Any], rts: int) -> list[dict[str, Any]]:
        seq = msg.get("sequence_num")
        if type(seq) is int:
            if self._conn_seq is not None and seq != self._conn_seq + 1:
                self._stats["gaps"] += 1
                for sym in self.books:
                    self._lose_sync(sym)
            self._conn_seq = seq
        channel = msg["channel"]
        out: list[dict[str, Any]] = []
        if channel == "l2_data":
            ts = iso_to_ms(msg["timestamp"])
            for ev in msg["events"]:
                sym = to_symbol(ev["product_id"])
                bids = [[u["price_level"], u["new_quantity"]] for u in ev["updates"]
                        if u["side"] == "bid"]
                asks = [[u["price_level"], u["new_quantity"]] for u in ev["updates"]
                        if u["side"] != "bid"]
                if ev["type"] == "snapshot":
                    out += self._snapshot(sym, ts, rts, bids, asks)
                else:
                    out += self._update(sym, ts, rts, bids, asks)
        elif channel == "market_trades":
            for ev in msg["events"]:
                if ev["type"] != "update":  # the snapshot replays recent history
                    continue
                for t in ev["trades"]:
                    out.append(self._trade(to_symbol(t["product_id"]), iso_to_ms(t["time"]), rts,
                                           str(t["trade_id"]), t["price"], t["size"],
                                           t["side"].lower()))
        else:  # heartbeats, subscriptions
            self._stats["ignored"] += 1
        return out
