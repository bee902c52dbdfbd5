"""Kraken WebSocket v1 and v2: ``book`` (snapshot + updates with CRC32 checksums), ``trade``.

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

WebSocket v2 (:class:`KrakenV2Handler`, registered as ``kraken_v2``): the same book rules, but
JSON objects with prices and quantities as JSON *numbers*, decoded as text and re-printed at the
pair's precision so that the checksum (also on snapshots) reproduces exactly.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from connectors.exchanges.base import Handler, iso_to_ms, sec_to_ms
from operators.events import Memo, _native

__all__ = ["KrakenHandler", "KrakenV2Handler", "at_precision", "kraken_checksum",
           "kraken_checksum_py", "kraken_v2_checksum", "plain", "v2_loads"]

_ASSETS = {"XBT": "BTC", "XDG": "DOGE"}


@functools.lru_cache(maxsize=4096)
def kraken_symbol(pair: str) -> str:
    """``XBT/USD`` -> ``BTC-USD`` (cached: every frame names its pair)."""
    base, _, quote = pair.upper().partition("/")
    return f"{_ASSETS.get(base, base)}-{_ASSETS.get(quote, quote)}"


def _digits(text: str) -> bytes:
    return text.replace(".", "").lstrip("0").encode()


# Checksum fragment of each (price, quantity) level seen: a checksum is then a join of 20 cached
# fragments and one CRC32, not a re-format of 20 levels per update.
_FRAGMENT = Memo(lambda lv: _digits(lv[0]) + _digits(lv[1]))


def kraken_checksum(asks: list[tuple[str, str]], bids: list[tuple[str, str]]) -> int:
    """CRC32 (unsigned) of the top 10 asks then bids, as Kraken v1 computes it.

    Levels are ``(px, qty)`` tuples as :meth:`Book.top` returns them, or ``[px, qty]`` lists.
    Computed in C where built (verified after every update: the Python join was a quarter of a
    frame's time); :func:`kraken_checksum_py` is the reference, and takes what C does not.
    """
    crc = None if _native is None else _native.kraken_crc(asks, bids)
    return kraken_checksum_py(asks, bids) if crc is None else crc


def kraken_checksum_py(asks: list[tuple[str, str]], bids: list[tuple[str, str]]) -> int:
    """:func:`kraken_checksum` in Python (``[px, qty]`` lists are slower: keyed as tuples)."""
    top, frag = asks[:10] + bids[:10], _FRAGMENT
    try:
        return zlib.crc32(b"".join([frag[lv] for lv in top]))
    except TypeError:  # unhashable [px, qty] lists
        return zlib.crc32(b"".join([frag[tuple(lv)] for lv in top]))


class KrakenHandler(Handler):
    """Kraken v1 public feed (one connection, many pairs)."""

    exchange = "kraken"
    _fast = None if _native is None else staticmethod(_native.kraken_frame)
    _fast_raw = None if _native is None else staticmethod(_native.kraken_raw)
    _book_type = Handler._book_type if _native is None else _native.FeedBook

    def __init__(self, depth: int = 1000) -> None:
        super().__init__()
        self.depth = depth

    def subscribe_messages(self, symbols: list[str]) -> list[str]:
        pairs = [s.replace("-", "/").replace("BTC", "XBT") for s in symbols]
        return [orjson.dumps({"event": "subscribe", "pair": pairs,
                              "subscription": {"name": n, **extra}}).decode()
                for n, extra in (("book", {"depth": self.depth}), ("trade", {}))]

    def _on_message(self, msg: Any, rts: int) -> list[dict[str, Any]]:
        if type(msg) is dict:  # heartbeat, systemStatus, subscriptionStatus
            self._stats["ignored"] += 1
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
        self._stats["ignored"] += 1
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
            self._stats["dropped"] += 1
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
                self._stats["checksum_ok"] += 1
            else:
                return self._checksum_bad(sym, d, numbered=True)
        return [d]

    @staticmethod
    def _truncate(book: Any, d: dict[str, Any], depth: int) -> None:
        """Cut each side to ``depth`` levels, appending the cuts to ``d`` as deletions."""
        for name in ("bids", "asks"):
            for px, qty in book.cut(name, depth):
                dp = len(qty) - qty.index(".") - 1 if "." in qty else 0
                d[name].append([px, "0." + "0" * dp if dp else "0"])


# -- WebSocket v2 --------------------------------------------------------------------------------
_EXP = re.compile(r"^(-?)(\d+)(?:\.(\d*))?[eE]([+-]?\d+)$")
_MAX_EXP = 100  # exponents and precisions beyond this are garbage, not market data


def _no_constant(name: str) -> str:
    raise ValueError(f"{name} is not a decimal")


def v2_loads(raw: str | bytes) -> Any:
    """Parse a v2 frame keeping every JSON number as its exact text (never a float).

    Kraken v2 prints prices and quantities as JSON numbers; parsing them into floats would lose
    digits (and the checksum with them), so numbers stay strings, integers included.
    """
    return json.loads(raw, parse_float=str, parse_int=str, parse_constant=_no_constant)


def plain(num: str) -> str:
    """A JSON number's text as a plain decimal (``"1.5e-05"`` -> ``"0.000015"``), exactly.

    >>> plain("1.5e-05"), plain("2E+3"), plain("0.10")
    ('0.000015', '2000', '0.10')
    """
    m = _EXP.match(num)
    if m is None:
        return num
    sign, whole, frac, exp = m.group(1), m.group(2), m.group(3) or "", int(m.group(4))
    if abs(exp) > _MAX_EXP:  # no price or quantity: refuse before expanding it (memory)
        raise ValueError(f"exponent out of range: {num[:40]!r}")
    digits, point = whole + frac, len(whole) + exp
    if point <= 0:
        digits, point = "0" * (1 - point) + digits, 1
    elif point > len(digits):
        digits += "0" * (point - len(digits))
    head = digits[:point].lstrip("0") or "0"
    tail = digits[point:]
    return f"{sign}{head}.{tail}" if tail else f"{sign}{head}"


def at_precision(num: str, dp: int | None) -> str:
    """``num`` printed with ``dp`` decimals, as Kraken means it (``"0.1"``, 8 -> ``"0.10000000"``).

    Zeros are padded, or stripped beyond ``dp``; a non-zero digit beyond ``dp`` is kept (never
    rounded away: the exchange broke its own precision, and the checksum will say so). ``dp``
    ``None`` (precision unknown) only expands exponents.

    >>> at_precision("0.1", 8), at_precision("45283.50", 1), at_precision("7", 2)
    ('0.10000000', '45283.5', '7.00')
    """
    text = plain(num)
    if dp is None:
        return text
    if not 0 <= dp <= _MAX_EXP:
        raise ValueError(f"precision out of range: {dp}")
    whole, _, frac = text.partition(".")
    if len(frac) < dp:
        frac += "0" * (dp - len(frac))
    elif len(frac) > dp:
        frac = frac[:dp] + frac[dp:].rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def kraken_v2_checksum(asks: Sequence[Sequence[str]], bids: Sequence[Sequence[str]], price_dp: int,
                       qty_dp: int) -> int:
    """CRC32 of the top 10 asks then bids, each number printed at the instrument's precision."""
    return kraken_checksum([(at_precision(p, price_dp), at_precision(q, qty_dp)) for p, q in asks],
                           [(at_precision(p, price_dp), at_precision(q, qty_dp)) for p, q in bids])


if _native is not None:
    _native.frames_set("kraken_symbol", kraken_symbol)
    _native.frames_set("kraken_checksum_py", kraken_checksum_py)


class KrakenV2Handler(Handler):
    """Kraken v2 public feed (``wss://ws.kraken.com/v2``): ``book``, ``trade``, ``instrument``.

    Events keep the exchange name ``kraken`` (same market as v1; the registry names the protocol
    ``kraken_v2``). Numbers are decoded as text (:func:`v2_loads`) and printed at the pair's
    ``price_precision``/``qty_precision``, from the constructor or the ``instrument`` channel
    (subscribed first, so its snapshot precedes the books). Without a precision, values are kept
    as printed and checksums cannot be verified (counted as ``checksum_unverified``). Snapshots
    and updates both carry a CRC32 of the top 10 levels; after every message the book is cut to
    the subscribed depth (the cuts are emitted as zero quantities, as in v1); a mismatch marks the
    pair out of sync until a new snapshot (the live transport re-subscribes by reconnecting).
    Sequences are the handler's own, as in v1: v2 has none. Trade ids are Kraken's ``trade_id``.
    """

    exchange = "kraken"

    def __init__(self, depth: int = 1000,
                 precisions: Mapping[str, tuple[int, int]] | None = None) -> None:
        super().__init__()
        self.depth = depth
        self.precisions: dict[str, tuple[int, int]] = dict(precisions or {})
        self._stats.setdefault("checksum_unverified", 0)
        self._req = 0

    def subscribe_messages(self, symbols: list[str]) -> list[str]:
        pairs = [s.replace("-", "/") for s in symbols]
        subs: list[dict[str, Any]] = []
        if any(s not in self.precisions for s in symbols):
            subs.append({"channel": "instrument", "snapshot": True})
        subs.append({"channel": "book", "symbol": pairs, "depth": self.depth, "snapshot": True})
        subs.append({"channel": "trade", "symbol": pairs, "snapshot": False})
        out = []
        for params in subs:
            self._req += 1
            out.append(orjson.dumps({"method": "subscribe", "params": params,
                                     "req_id": self._req}).decode())
        return out

    _loads = staticmethod(v2_loads)  # numbers decoded as text

    def _on_message(self, msg: Any, rts: int) -> list[dict[str, Any]]:
        if "method" in msg:  # pong, subscription acks
            if msg.get("success") is False:
                return [self._dead(f"kraken refused {msg['method']}: {msg.get('error')}")]
            self._stats["ignored"] += 1
            return []
        channel = msg["channel"]
        if channel == "book":
            out: list[dict[str, Any]] = []
            for d in msg["data"]:
                out += self._book(d, msg["type"] == "snapshot", rts)
            return out
        if channel == "trade":
            return [self._v2_trade(t, rts) for t in msg["data"]]
        if channel == "instrument":
            for p in msg["data"].get("pairs", ()):
                self.precisions[kraken_symbol(p["symbol"])] = (int(p["price_precision"]),
                                                               int(p["qty_precision"]))
        self._stats["ignored"] += 1  # instrument, heartbeat, status, other channels
        return []

    def _v2_trade(self, t: dict[str, Any], rts: int) -> dict[str, Any]:
        sym = kraken_symbol(t["symbol"])
        pdp, qdp = self.precisions.get(sym, (None, None))
        return self._trade(sym, iso_to_ms(t["timestamp"]), rts, str(t["trade_id"]),
                           at_precision(t["price"], pdp), at_precision(t["qty"], qdp), t["side"])

    def _book(self, d: dict[str, Any], snapshot: bool, rts: int) -> list[dict[str, Any]]:
        sym = kraken_symbol(d["symbol"])
        if not snapshot and (sym in self._unsynced or sym not in self.books):
            self._stats["dropped"] += 1
            return []
        pdp, qdp = self.precisions.get(sym, (None, None))
        bids = [[at_precision(lv["price"], pdp), at_precision(lv["qty"], qdp)]
                for lv in d.get("bids", ())]
        asks = [[at_precision(lv["price"], pdp), at_precision(lv["qty"], qdp)]
                for lv in d.get("asks", ())]
        checksum = int(d["checksum"]) if "checksum" in d else None
        ts = iso_to_ms(d["timestamp"]) if "timestamp" in d else rts
        if snapshot:
            ev, outcome = self._book_event(sym, ts, rts, "snapshot", self._next(sym), None,
                                           bids[: self.depth], asks[: self.depth], checksum)
        else:
            ev, outcome = self._book_event(sym, ts, rts, "update", self._next(sym),
                                           self.books[sym].seq, bids, asks, checksum)
        if outcome != "applied":
            return [ev]
        book = self.books[sym]
        self._cut(book, ev, "0" if qdp is None else at_precision("0", qdp))
        if checksum is None:
            return [ev]
        if pdp is None:
            self._stats["checksum_unverified"] += 1
        elif kraken_checksum(book.top(10, "asks"), book.top(10, "bids")) == checksum:
            self._stats["checksum_ok"] += 1
        else:
            return self._checksum_bad(sym, ev, numbered=True)
        return [ev]

    def _cut(self, book: Any, ev: dict[str, Any], zero: str) -> None:
        """Cut each side to the subscribed depth, appending the cuts to ``ev`` as deletions."""
        for name in ("bids", "asks"):
            ev[name] += [[px, zero] for px, _ in book.cut(name, self.depth)]
