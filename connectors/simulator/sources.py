"""What the simulator plays: a synthetic random walk, or a recorded session looped.

A source yields :class:`Item`\\ s: an absolute L2 change (``bids``/``asks`` as ``[[px, qty]]``,
``qty`` ``0`` removes) or a trade, each with the delay in seconds since the previous item. The
venue applies changes to its true books and renders them; times, sequence numbers and trade ids
are the venue's own (so a looped recording never repeats an id or goes back in time).

Prices and quantities are integers (cents, 1e-8 units) printed as fixed decimals: never floats.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from connectors.exchanges import HANDLERS
from connectors.exchanges.normalize import normalize_frames
from connectors.exchanges.recordings import read_frames

__all__ = ["Item", "Synthetic", "load_recording", "recording_items"]


@dataclass(slots=True)
class Item:
    """A book change or a trade (``kind``) for ``sym``, ``delay`` seconds after the last item."""

    kind: str
    sym: str
    delay: float = 0.0
    bids: list[list[str]] = field(default_factory=list)
    asks: list[list[str]] = field(default_factory=list)
    px: str = ""
    qty: str = ""
    side: str = ""


def _px(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _qty(units: int) -> str:
    return f"{units // 100_000_000}.{units % 100_000_000:08d}"


class _Walk:
    """One symbol's plausible book: ``levels`` price slots per side around a moving mid."""

    def __init__(self, rng: random.Random, levels: int) -> None:
        self.rng, self.levels = rng, levels
        self.mid = rng.randrange(10_000, 500_000)  # cents
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}

    def _q(self) -> int:
        return self.rng.randrange(1_000_000, 500_000_000)

    def fill(self) -> tuple[list[list[str]], list[list[str]]]:
        """Every slot filled: the initial change."""
        for i in range(1, self.levels + 1):
            self.bids[self.mid - i] = self._q()
            self.asks[self.mid + i] = self._q()
        return self._levels(self.bids, list(self.bids)), self._levels(self.asks, list(self.asks))

    @staticmethod
    def _levels(side: dict[int, int], prices: list[int]) -> list[list[str]]:
        return [[_px(p), _qty(side.get(p, 0))] for p in prices]

    def step(self) -> tuple[list[list[str]], list[list[str]]]:
        """One change of one to three levels, or a move of the mid by one tick."""
        rng = self.rng
        if rng.random() < 0.15:
            return self._move(1 if rng.random() < 0.5 else -1)
        touched: dict[str, list[int]] = {"b": [], "a": []}
        for _ in range(rng.randint(1, 3)):
            s = "b" if rng.random() < 0.5 else "a"
            side = self.bids if s == "b" else self.asks
            p = self.mid - rng.randint(1, self.levels) if s == "b" else \
                self.mid + rng.randint(1, self.levels)
            if p in side and len(side) > 2 and rng.random() < 0.25:
                del side[p]
            else:
                side[p] = self._q()
            if p not in touched[s]:
                touched[s].append(p)
        return self._levels(self.bids, touched["b"]), self._levels(self.asks, touched["a"])

    def _move(self, d: int) -> tuple[list[list[str]], list[list[str]]]:
        old = self.mid
        self.mid += d
        bids_t: list[int] = []
        asks_t: list[int] = []
        # slots that left the band (or would cross) are removed, the new slots filled
        for p in list(self.bids):
            if not (self.mid - self.levels <= p < self.mid):
                del self.bids[p]
                bids_t.append(p)
        for p in list(self.asks):
            if not (self.mid < p <= self.mid + self.levels):
                del self.asks[p]
                asks_t.append(p)
        new_bid, new_ask = (old, old + self.levels + 1) if d > 0 else \
            (old - self.levels - 1, old)
        if self.mid - self.levels <= new_bid < self.mid:
            self.bids[new_bid] = self._q()
            bids_t.append(new_bid)
        if self.mid < new_ask <= self.mid + self.levels:
            self.asks[new_ask] = self._q()
            asks_t.append(new_ask)
        return self._levels(self.bids, bids_t), self._levels(self.asks, asks_t)

    def trade(self) -> tuple[str, str, str]:
        rng = self.rng
        side = "buy" if rng.random() < 0.5 else "sell"
        book = self.asks if side == "buy" else self.bids
        p = (min(book) if side == "buy" else max(book)) if book else self.mid
        return _px(p), _qty(rng.randrange(100_000, 50_000_000)), side


class Synthetic:
    """Random-walk books for ``symbols`` at ``rate`` items/s in total (0: as fast as possible).

    ``trade_ratio`` of the items are trades. Deterministic for a given ``seed``. Books hold at
    most ``levels`` levels per side, so every level is inside Kraken's 10-level checksum when
    ``levels`` <= 10 (a lost update is then always visible).
    """

    def __init__(self, symbols: list[str], rate: float = 50.0, seed: int = 1, levels: int = 10,
                 trade_ratio: float = 0.2) -> None:
        self.symbols, self.rate, self.trade_ratio = list(symbols), rate, trade_ratio
        self.rng = random.Random(seed)
        self.walks = {s: _Walk(self.rng, levels) for s in self.symbols}

    def __iter__(self) -> Iterator[Item]:
        for s, w in self.walks.items():
            bids, asks = w.fill()
            yield Item("book", s, 0.0, bids, asks)
        delay = 1.0 / self.rate if self.rate > 0 else 0.0
        rng = self.rng
        while True:
            s = self.symbols[rng.randrange(len(self.symbols))]
            w = self.walks[s]
            if rng.random() < self.trade_ratio:
                px, qty, side = w.trade()
                yield Item("trade", s, delay, px=px, qty=qty, side=side)
            else:
                bids, asks = w.step()
                if bids or asks:
                    yield Item("book", s, delay, bids, asks)


@dataclass(slots=True)
class Recorded:
    """A recording as items with their receive times (ms); see :func:`load_recording`."""

    exchange: str
    symbols: list[str]
    items: list[tuple[int, Item]]


def load_recording(exchange: str, paths: list[Path]) -> Recorded:
    """Normalize recordings of ``exchange`` (the handlers' own code) into replayable items.

    Snapshots become changes against the book so far (levels missing from the snapshot are
    removed), so the venue's books follow the recording exactly. Several paths (e.g. one per
    symbol) are merged by receive time, each path's events kept in the handler's order: after
    a REST snapshot (Binance) the handler emits the buffered updates that follow it, received
    before it; sorted by their own receive time they went before the snapshot, whose change
    (computed after them) then missed their new levels, left stale in the book: the simulated
    BTC-USDT book crossed after 1,754 changes and stayed crossed.
    """
    items: list[tuple[int, int, Item]] = []
    for n, path in enumerate(paths):
        handler = HANDLERS[exchange]()
        books: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        at = 0  # receive time, never going back within a path
        for i, ev in enumerate(normalize_frames(handler, read_frames(Path(path)))):
            at = max(at, ev["rts"])
            t = ev.get("type")
            if t == "trade":
                items.append((at, n * 10**9 + i, Item("trade", ev["sym"], px=ev["px"],
                                                      qty=ev["qty"], side=ev["side"])))
            elif t == "book":
                bids, asks = books.setdefault(ev["sym"], ({}, {}))
                if ev["action"] == "snapshot":
                    cb = [[p, "0"] for p in bids if p not in {x[0] for x in ev["bids"]}]
                    ca = [[p, "0"] for p in asks if p not in {x[0] for x in ev["asks"]}]
                    bids.clear()
                    asks.clear()
                else:
                    cb, ca = [], []
                for side, lv, ch in ((bids, ev["bids"], cb), (asks, ev["asks"], ca)):
                    for p, q in lv:
                        ch.append([p, q])
                        side[p] = q
                items.append((at, n * 10**9 + i, Item("book", ev["sym"], bids=cb, asks=ca)))
    items.sort(key=lambda x: (x[0], x[1]))
    symbols = sorted({it.sym for _, _, it in items})
    return Recorded(exchange, symbols, [(rts, it) for rts, _, it in items])


def recording_items(rec: Recorded, speed: float = 1.0, loop: bool = True) -> Iterator[Item]:
    """The recording's items paced by receive time / ``speed`` (0: no pacing), looped.

    Each loop starts with the recording's first snapshot again, played as a change against the
    book the previous loop ended with (absolute levels: levels only in the old book are zeroed).
    """
    first = True
    last_rts: int | None = None
    ended: dict[str, tuple[set[str], set[str]]] = {}
    while True:
        seen: dict[str, tuple[set[str], set[str]]] = {}
        for rts, it in rec.items:
            delay = 0.0 if last_rts is None or speed <= 0 else max(0, rts - last_rts) / 1000 / speed
            last_rts = rts
            out = Item(it.kind, it.sym, delay, list(it.bids), list(it.asks), it.px, it.qty,
                       it.side)
            if it.kind == "book":
                b, a = seen.setdefault(it.sym, (set(), set()))
                if not first and it.sym in ended:  # first change of a symbol in a new loop
                    ob, oa = ended.pop(it.sym)
                    out.bids += [[p, "0"] for p in ob if p not in {x[0] for x in it.bids}]
                    out.asks += [[p, "0"] for p in oa if p not in {x[0] for x in it.asks}]
                for side, lv in ((b, out.bids), (a, out.asks)):
                    for p, q in lv:
                        if _is_zero(q):
                            side.discard(p)
                        else:
                            side.add(p)
            yield out
        if not loop:
            return
        first = False
        ended = seen
        last_rts = None


def _is_zero(q: str) -> bool:
    return not q.replace("0", "").replace(".", "")
