"""A deliberately naive order book over plain dicts and ``Decimal``: the oracle for the tests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


class RefBook:
    """Same rules as DESIGN.md, written the obvious way (no sorted structures, no fixed point)."""

    def __init__(self, max_levels: int = 0) -> None:
        self.bids: dict[Decimal, tuple[str, Decimal]] = {}
        self.asks: dict[Decimal, tuple[str, Decimal]] = {}
        self.seq: int | None = None
        self.status = "stale"
        self.max_levels = max_levels

    def apply(self, ev: dict[str, Any]) -> str:
        if ev["action"] == "snapshot" and (self.seq is None or ev["seq"] >= self.seq):
            # A snapshot is an update onto an empty book (a repeated price: the last one wins).
            self.bids, self.asks = {}, {}
            for side, levels in ((self.bids, ev["bids"]), (self.asks, ev["asks"])):
                for px, q in levels:
                    if Decimal(q) != 0:
                        side[Decimal(px)] = (px, Decimal(q))
                    else:
                        side.pop(Decimal(px), None)
            self.seq = ev["seq"]
            self._finish()
            return "applied"
        if self.seq is not None and ev["seq"] <= self.seq:
            return "duplicate"
        if self.status == "stale":
            return "skipped"
        if ev.get("prev_seq") is not None and ev["prev_seq"] != self.seq:
            self.status = "stale"
            return "gap"
        for side, levels in ((self.bids, ev["bids"]), (self.asks, ev["asks"])):
            for px, q in levels:
                p, qty = Decimal(px), Decimal(q)
                if ev["action"] == "update":
                    if qty == 0:
                        side.pop(p, None)
                    else:
                        side[p] = (px, qty)
                elif p in side:
                    total = side[p][1] + (qty if ev["action"] == "insert" else -qty)
                    if total <= 0:
                        del side[p]
                    else:
                        side[p] = (side[p][0], total)
                elif ev["action"] == "insert" and qty > 0:
                    side[p] = (px, qty)
        self.seq = ev["seq"]
        self._finish()
        return "applied"

    def _finish(self) -> None:
        if self.max_levels:
            for side, rev in ((self.bids, True), (self.asks, False)):
                for p in sorted(side, reverse=not rev)[: max(0, len(side) - self.max_levels)]:
                    del side[p]
        crossed = self.bids and self.asks and max(self.bids) >= min(self.asks)
        self.status = "crossed" if crossed else "ok"

    def top(self, n: int) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        bids = [(p, self.bids[p][1]) for p in sorted(self.bids, reverse=True)[:n]]
        asks = [(p, self.asks[p][1]) for p in sorted(self.asks)[:n]]
        return bids, asks


def as_decimal(levels: list[list[str]]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(p), Decimal(q)) for p, q in levels]
