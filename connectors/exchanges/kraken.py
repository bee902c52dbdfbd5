"""Kraken WebSocket v1: ``book`` (snapshot + updates with CRC32 checksums) and ``trade``.

Books come in-band: the first ``as``/``bs`` message of a pair is its snapshot (``ts`` = receive
time: it carries no event time). Each update's ``ts`` is the newest level timestamp in it. Kraken
v1 has no sequence number, so the handler numbers each pair's events (see
:mod:`connectors.exchanges.base`). After every update the book is truncated to the subscribed
depth (``book-N``), as Kraken requires: the levels cut are appended to the emitted update with a
zero quantity so that a consumer's book stays identical. Then the checksum ``c`` is verified:
CRC32 of the top 10 asks (best first) then the top 10 bids, each price and quantity with its
decimal point and leading zeros removed. A mismatch marks the pair out of sync; its updates are
dropped until a new snapshot (a re-subscription). Symbols: ``XBT`` -> ``BTC``, ``XDG`` ->
``DOGE``. v1 trades carry no id: the id is ``<time>-<index in the message>``.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from connectors.exchanges.base import Handler, sec_to_ms

__all__ = ["KrakenHandler", "kraken_checksum"]

_ASSETS = {"XBT": "BTC", "XDG": "DOGE"}


def kraken_symbol(pair: str) -> str:
    """``XBT/USD`` -> ``BTC-USD``."""
    base, _, quote = pair.upper().partition("/")
    return f"{_ASSETS.get(base, base)}-{_ASSETS.get(quote, quote)}"


def _ck(text: str) -> str:
    return text.replace(".", "").lstrip("0")


def kraken_checksum(asks: list[list[str]], bids: list[list[str]]) -> int:
    """CRC32 (unsigned) of the top 10 asks then bids, as Kraken v1 computes it."""
    parts = [_ck(px) + _ck(qty) for px, qty in asks[:10]]
    parts += [_ck(px) + _ck(qty) for px, qty in bids[:10]]
    return zlib.crc32("".join(parts).encode())


class KrakenHandler(Handler):
    """Kraken v1 public feed (one connection, many pairs)."""

    exchange = "kraken"

    def __init__(self, depth: int = 1000) -> None:
        super().__init__()
        self.depth = depth
        self._seq: dict[str, int] = {}

    def subscribe_messages(self, symbols: list[str]) -> list[str]:
        pairs = [s.replace("-", "/").replace("BTC", "XBT") for s in symbols]
        return [orjson.dumps({"event": "subscribe", "pair": pairs,
                              "subscription": {"name": n, **extra}}).decode()
                for n, extra in (("book", {"depth": self.depth}), ("trade", {}))]

    def _next(self, sym: str) -> int:
        n = self._seq.get(sym, 0) + 1
        self._seq[sym] = n
        return n

    def _on_message(self, msg: Any, rts: int) -> list[dict[str, Any]]:
        if type(msg) is dict:  # heartbeat, systemStatus, subscriptionStatus
            self.stats["ignored"] += 1
            return []
        channel: str = msg[-2]
        sym = kraken_symbol(msg[-1])
        if channel.startswith("book"):
            depth = int(channel.partition("-")[2] or self.depth)
            return self._book(sym, msg[1:-2], rts, depth)
        if channel == "trade":
            return [self._trade(sym, sec_to_ms(t[2]), rts, f"{t[2]}-{i}", t[0], t[1],
                                "buy" if t[3] == "b" else "sell")
                    for i, t in enumerate(msg[1])]
        self.stats["ignored"] += 1
        return []

    def _book(self, sym: str, parts: list[dict[str, Any]], rts: int,
              depth: int) -> list[dict[str, Any]]:
        first = parts[0]
        if "as" in first or "bs" in first:
            d, _ = self._book_event(sym, rts, rts, "snapshot", self._next(sym), None,
                                    [lv[:2] for lv in first.get("bs", [])],
                                    [lv[:2] for lv in first.get("as", [])])
            return [d]
        if sym in self._unsynced or sym not in self.books:
            self.stats["dropped"] += 1
            return []
        bids: list[list[str]] = []
        asks: list[list[str]] = []
        checksum: str | None = None
        ts = 0
        for p in parts:
            for lv in p.get("b", ()):
                bids.append([lv[0], lv[1]])
                ts = max(ts, sec_to_ms(lv[2]))
            for lv in p.get("a", ()):
                asks.append([lv[0], lv[1]])
                ts = max(ts, sec_to_ms(lv[2]))
            checksum = p.get("c", checksum)
        book = self.books[sym]
        d, outcome = self._book_event(sym, ts, rts, "update", self._next(sym), book.seq,
                                      bids, asks, None if checksum is None else int(checksum))
        if outcome != "applied":
            return [d]
        self._truncate(book, d, depth)
        if checksum is not None:
            mine = kraken_checksum(book.top(10, "asks"), book.top(10, "bids"))
            if mine == int(checksum):
                self.stats["checksum_ok"] += 1
            else:
                self.stats["checksum_bad"] += 1
                self._lose_sync(sym)
        return [d]

    @staticmethod
    def _truncate(book: Any, d: dict[str, Any], depth: int) -> None:
        """Cut each side to ``depth`` levels, appending the cuts to ``d`` as deletions."""
        for side, name in ((book.bids, "bids"), (book.asks, "asks")):
            while len(side) > depth:
                _, (px, _, qty) = side.popitem(-1)
                dp = len(qty) - qty.index(".") - 1 if "." in qty else 0
                d[name].append([px, "0." + "0" * dp if dp else "0"])
