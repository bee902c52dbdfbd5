"""Binance spot and USD-M futures: ``depth`` diffs synced on a REST snapshot, and trades.

Synchronization follows Binance's documented procedure literally:

* spot (``<sym>@depth@100ms`` + ``/api/v3/depth``): buffer diffs until the snapshot arrives;
  drop buffered diffs with ``u <= lastUpdateId``; the first applied diff must have
  ``U <= lastUpdateId + 1``; afterwards each ``U`` must be the previous ``u`` + 1 (diffs with
  ``u`` not above the book's are ignored). ``prev_seq`` is the book's ``seq`` when the diff
  follows it, else ``U - 1`` (so a gap is visible downstream).
* USD-M futures (``depth`` with ``pu`` + ``/fapi/v1/depth``): drop diffs with
  ``u < lastUpdateId``; the first applied diff must have ``U <= lastUpdateId <= u``; afterwards
  each ``pu`` must equal the previous ``u`` (``prev_seq`` = ``pu``).

A snapshot whose ``lastUpdateId`` is older than the first remaining buffered diff is refused
(counted as ``stale_snapshot``; the symbol stays in :meth:`resync_needed`). After a gap the book
waits for a new snapshot, buffering diffs again. ``seq`` = ``u``; the first diff after a snapshot
chains to its ``lastUpdateId``. Snapshot ``ts`` is the answer's ``E`` when present (futures),
else its receive time. Trades (``trade``, or ``aggTrade`` whose ``a`` becomes the id): ``ts`` =
``T``, ``side`` = ``sell`` when the buyer is the maker (``m``), every frame emitted (duplicates
are the consumers' business). ``bookTicker`` and ``kline`` frames are ignored (counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from connectors.exchanges.base import Handler, to_symbol
from operators.events import _native

__all__ = ["BinanceFuturesHandler", "BinanceHandler"]


@dataclass
class _Sync:
    """Sync state of one symbol: buffered diffs until a snapshot is applied."""

    native: str
    synced: bool = False
    fresh: bool = False  # next applied diff is the first after the snapshot
    buffer: list[tuple[dict[str, Any], int]] = field(default_factory=list)


class BinanceHandler(Handler):
    """Binance spot (``futures = False``) combined-stream handler."""

    exchange = "binance"
    _fast = None if _native is None else staticmethod(_native.binance_frame)
    _fast_raw = None if _native is None else staticmethod(_native.binance_raw)
    _book_type = Handler._book_type if _native is None else _native.FeedBook
    futures = False
    snapshot_path = "/api/v3/depth"
    depth_stream = "depth@100ms"

    def __init__(self) -> None:
        super().__init__()
        self._sync: dict[str, _Sync] = {}

    # -- hooks -------------------------------------------------------------------------------
    def subscribe_messages(self, symbols: list[str]) -> list[str]:
        params: list[str] = []
        for s in symbols:
            n = s.replace("-", "").lower()
            params += [f"{n}@{self.depth_stream}", f"{n}@trade"]
        return [orjson.dumps({"method": "SUBSCRIBE", "params": params, "id": 1}).decode()]

    def snapshot_request(self, symbol: str) -> str | None:
        return f"{self.snapshot_path}?symbol={symbol.replace('-', '').upper()}&limit=1000"

    def on_connect(self) -> None:
        """Binance's procedure starts over on every connection: buffer, then a REST snapshot."""
        for sym, st in self._sync.items():
            st.synced, st.fresh, st.buffer = False, False, []
            self._unsynced.add(sym)

    def on_snapshot(self, symbol: str, raw: str | bytes, rts: int) -> list[dict[str, Any]]:
        """Apply a REST ``/depth`` answer; ``symbol`` may be ``""`` when only one is followed."""
        self._raw = raw
        try:
            msg = orjson.loads(raw)
            return self._snapshot(symbol, msg, rts)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            return [self._dead(f"bad {self.exchange} snapshot: {type(e).__name__}: {e}")]

    # -- frames ------------------------------------------------------------------------------
    def _on_message(self, msg: Any, rts: int) -> list[dict[str, Any]]:
        if "lastUpdateId" in msg:  # a REST answer recorded in-stream (hftbacktest)
            return self._snapshot("", msg, rts)
        data = msg["data"] if "stream" in msg else msg
        e = data.get("e")
        if e == "depthUpdate":
            return self._depth(data, rts)
        if e == "trade" or e == "aggTrade":
            tid = data["t"] if e == "trade" else data["a"]
            return [self._trade(self._sym(data["s"]), data["T"], rts, str(tid), data["p"],
                                data["q"], "sell" if data["m"] else "buy")]
        if "result" in data and "id" in data:  # subscription acknowledgement
            return []
        self._stats["ignored"] += 1
        return []

    def _sym(self, native: str) -> str:
        sym = to_symbol(native)
        if sym not in self._sync:
            self._sync[sym] = _Sync(native.upper())
            self._unsynced.add(sym)
        return sym

    def _depth(self, data: dict[str, Any], rts: int) -> list[dict[str, Any]]:
        # Check the fields sync relies on now: a bad diff must not sit in the buffer.
        ids = (data["U"], data["u"], data["E"], data["pu"] if self.futures else 0)
        if any(type(i) is not int for i in ids) or data["U"] > data["u"]:
            raise ValueError(f"bad update ids {ids}")
        if type(data["b"]) is not list or type(data["a"]) is not list:
            raise TypeError("b and a must be lists")
        sym = self._sym(data["s"])
        st = self._sync[sym]
        if not st.synced:
            st.buffer.append((data, rts))
            return []
        return self._apply(sym, st, data, rts)

    def _apply(self, sym: str, st: _Sync, data: dict[str, Any], rts: int) -> list[dict[str, Any]]:
        book = self.book(sym)
        seq: int = book.seq  # type: ignore[assignment]
        first, last = data["U"], data["u"]
        if self.futures:
            if last < seq:
                self._stats["dropped"] += 1
                return []
            if st.fresh:
                prev = seq if (first <= seq <= last or data["pu"] == seq) else data["pu"]
            else:
                prev = data["pu"]
        else:
            if last <= seq:
                self._stats["dropped"] += 1
                return []
            prev = seq if first <= seq + 1 else first - 1
        d, outcome = self._book_event(sym, data["E"], rts, "update", last, prev, data["b"],
                                      data["a"])
        st.fresh = False
        if sym in self._unsynced:  # gap, crossed or invalid: wait for a new snapshot
            st.synced = False
            if outcome == "gap":
                st.buffer = [(data, rts)]
        return [d]

    def _snapshot(self, symbol: str, msg: dict[str, Any], rts: int) -> list[dict[str, Any]]:
        if symbol:
            sym = self._sym(symbol)
        else:
            if len(self._sync) != 1:
                return [self._dead("snapshot without a symbol while following "
                                   f"{len(self._sync)} symbols")]
            sym = next(iter(self._sync))
        st = self._sync[sym]
        last_id: int = msg["lastUpdateId"]
        keep = [(d, r) for d, r in st.buffer
                if (d["u"] >= last_id if self.futures else d["u"] > last_id)]
        self._stats["dropped"] += len(st.buffer) - len(keep)
        if keep:
            first = keep[0][0]["U"]
            too_old = first > last_id if self.futures else first > last_id + 1
            if too_old:
                self._stats["stale_snapshot"] += 1
                st.buffer = keep
                return []
        d, _ = self._book_event(sym, msg.get("E", rts), rts, "snapshot", last_id, None,
                                msg["bids"], msg["asks"])
        out = [d]
        if sym in self._unsynced:  # invalid or crossed snapshot
            st.buffer = keep
            return out
        st.synced, st.fresh, st.buffer = True, True, []
        for i, (data, r) in enumerate(keep):
            out += self._apply(sym, st, data, r)
            if not st.synced:
                st.buffer += keep[i + 1:]
                break
        return out


class BinanceFuturesHandler(BinanceHandler):
    """Binance USD-M futures: the same streams, ``pu`` chaining, ``/fapi/v1/depth`` snapshots."""

    exchange = "binance_futures"
    futures = True
    snapshot_path = "/fapi/v1/depth"
