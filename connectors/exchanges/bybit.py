"""Bybit v5 public: ``orderbook.{depth}.{symbol}`` (snapshot/delta) and ``publicTrade``.

A ``snapshot`` message (also the one Bybit re-sends after a service restart, with ``u`` = 1)
replaces the book. ``seq`` = ``u``; a delta's ``prev_seq`` is ``u - 1``: Bybit's update ids of a
book stream are consecutive, so a lost delta shows as a gap and marks the symbol out of sync (its
deltas are dropped until the next snapshot, i.e. a re-subscription). ``ts`` is the message's
``ts``. Trades: ``S`` is the taker's side, ``i`` the id, ``T`` the time.
"""

from __future__ import annotations

from typing import Any

import orjson

from connectors.exchanges.base import Handler, to_symbol
from operators.events import _native

__all__ = ["BybitHandler"]


class BybitHandler(Handler):
    """Bybit v5 public stream (spot or linear: the same messages)."""

    exchange = "bybit"
    _fast = None if _native is None else staticmethod(_native.bybit_frame)
    _book_type = Handler._book_type if _native is None else _native.FeedBook

    def __init__(self, depth: int = 500) -> None:
        super().__init__()
        self.depth = depth

    def subscribe_messages(self, symbols: list[str]) -> list[str]:
        args: list[str] = []
        for s in symbols:
            n = s.replace("-", "")
            args += [f"orderbook.{self.depth}.{n}", f"publicTrade.{n}"]
        return [orjson.dumps({"op": "subscribe", "args": args}).decode()]

    def _on_message(self, msg: Any, rts: int) -> list[dict[str, Any]]:
        topic = msg.get("topic")
        if topic is None:  # subscription answers, pongs
            self._stats["ignored"] += 1
            return []
        if topic.startswith("orderbook."):
            data = msg["data"]
            sym = to_symbol(data["s"])
            u: int = data["u"]
            if msg["type"] == "snapshot":
                d, _ = self._book_event(sym, msg["ts"], rts, "snapshot", u, None, data["b"],
                                        data["a"])
                return [d]
            if sym in self._unsynced or sym not in self.books:
                self._stats["dropped"] += 1
                return []
            d, _ = self._book_event(sym, msg["ts"], rts, "update", u, u - 1, data["b"],
                                    data["a"])
            return [d]
        if topic.startswith("publicTrade."):
            return [self._trade(to_symbol(t["s"]), t["T"], rts, str(t["i"]), t["p"], t["v"],
                                t["S"].lower()) for t in msg["data"]]
        self._stats["ignored"] += 1
        return []
