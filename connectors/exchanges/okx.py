"""OKX v5 public: ``books`` (snapshot + updates, checksums, ``seqId``/``prevSeqId``) and ``trades``.

Books come in-band. With ``seqId`` (current format) ``seq`` = ``seqId`` and an update's
``prev_seq`` = ``prevSeqId``; an update whose ``seqId`` equals its ``prevSeqId`` carries no
change (a keep-alive) and is skipped. Without it (the 2022 format of the recording) the handler
numbers each instrument's events (see :mod:`connectors.exchanges.base`). Each non-zero
``checksum`` is verified after applying: signed CRC32 of the top 25 bids and asks interleaved
(``bid px:bid sz:ask px:ask sz:...``), with the prices and sizes as printed. A gap or mismatch
marks the instrument out of sync; its updates are dropped until a new snapshot (re-subscription).
``ts`` is the message's ``ts``, snapshots included. Trades: ``side`` is the taker's. Symbols:
``BTC-USDT`` as is; a derivative's suffix joins the quote (``BTC-USD-SWAP`` -> ``BTC-USDSWAP``),
since canonical symbols hold one dash.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from connectors.exchanges.base import Handler, crc32_signed, to_symbol
from operators.events import _native

__all__ = ["OkxHandler", "okx_checksum", "okx_checksum_py"]


def okx_checksum(bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> int:
    """OKX's signed CRC32 of the top 25 levels, bids and asks interleaved.

    In C where built (verified after every update); :func:`okx_checksum_py` is the reference,
    and takes what C does not (levels that are not ``(px, qty)`` pairs of ASCII strings).
    """
    crc = None if _native is None else _native.okx_crc(bids, asks)
    return okx_checksum_py(bids, asks) if crc is None else crc


def okx_checksum_py(bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> int:
    """:func:`okx_checksum` in Python."""
    parts: list[str] = []
    for i in range(25):
        if i < len(bids):
            parts += bids[i]
        if i < len(asks):
            parts += asks[i]
    return crc32_signed(":".join(parts))


if _native is not None:
    _native.frames_set("okx_checksum_py", okx_checksum_py)


class OkxHandler(Handler):
    """OKX public WebSocket (``/ws/v5/public``)."""

    exchange = "okx"
    _fast = None if _native is None else staticmethod(_native.okx_frame)
    _fast_raw = None if _native is None else staticmethod(_native.okx_raw)
    _book_type = Handler._book_type if _native is None else _native.FeedBook

    def subscribe_messages(self, symbols: list[str]) -> list[str]:
        args = [{"channel": c, "instId": s} for s in symbols for c in ("books", "trades")]
        return [orjson.dumps({"op": "subscribe", "args": args}).decode()]

    def _on_message(self, msg: Any, rts: int) -> list[dict[str, Any]]:
        if "event" in msg or "data" not in msg:  # subscribe / error / login answers
            self._stats["ignored"] += 1
            return []
        channel = msg["arg"]["channel"]
        if channel.startswith("books"):
            sym = to_symbol(msg["arg"]["instId"])
            out: list[dict[str, Any]] = []
            for data in msg["data"]:
                out += self._book(sym, msg.get("action", "snapshot"), data, rts)
            return out
        if channel == "trades":
            return [self._trade(to_symbol(t["instId"]), int(t["ts"]), rts, str(t["tradeId"]),
                                t["px"], t["sz"], t["side"]) for t in msg["data"]]
        self._stats["ignored"] += 1
        return []

    def _book(self, sym: str, action: str, data: dict[str, Any],
              rts: int) -> list[dict[str, Any]]:
        ts = int(data["ts"])
        bids = [lv[:2] for lv in data.get("bids", ())]
        asks = [lv[:2] for lv in data.get("asks", ())]
        checksum = data.get("checksum") or None
        seq_id = data.get("seqId")
        if action == "snapshot":
            seq = seq_id if seq_id is not None else self._next(sym)
            d, outcome = self._book_event(sym, ts, rts, "snapshot", seq, None, bids, asks,
                                          checksum)
        else:
            if sym in self._unsynced or sym not in self.books:
                self._stats["dropped"] += 1
                return []
            if seq_id is not None:
                prev = data["prevSeqId"]
                if seq_id == prev and not bids and not asks:
                    self._stats["ignored"] += 1
                    return []
                seq = seq_id
            else:
                seq, prev = self._next(sym), self.books[sym].seq
            d, outcome = self._book_event(sym, ts, rts, "update", seq, prev, bids, asks,
                                          checksum)
        if outcome == "applied" and checksum is not None:
            book = self.books[sym]
            if okx_checksum(book.top(25, "bids"), book.top(25, "asks")) == checksum:
                self._stats["checksum_ok"] += 1
            else:
                return self._checksum_bad(sym, d, numbered=seq_id is None)
        return [d]
