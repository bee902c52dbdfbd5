"""Order book operator: level changes/s, against a naive book measured in the same run.

    .venv/bin/python -m bench.bench_book

Inputs: the ETHUSDT recording (3,432 depth updates, 106,802 level changes), and synthetic
streams where 90% of the changes fall within 50 ticks of mid, over 1,000 and 20,000 levels a
side. Each update is followed by a top-20 read, as the flow does when it emits with the throttle
off (by default it emits at most every 100 ms: the "every 10th event" rows). The
baseline is what one writes first: a plain dict per side, sorted on every top-N read. The two
sides' runs alternate and the best of each counts (``--repeat``, default 5).
"""

from __future__ import annotations

import argparse
import random
import sys
from functools import partial
from typing import Any

from bench.common import best_of_each, eth_events, table
from operators.events import BookEvent, decode_obj
from operators.orderbook import Book


class NaiveBook:
    def __init__(self) -> None:
        self.bids: dict[int, tuple[str, str]] = {}
        self.asks: dict[int, tuple[str, str]] = {}

    def apply(self, e: BookEvent) -> None:
        if e.action == "snapshot":
            self.bids, self.asks = {}, {}
        for side, levels in ((self.bids, e.bids), (self.asks, e.asks)):
            for pu, ps, qu, qs in levels:
                if qu:
                    side[pu] = (ps, qs)
                else:
                    side.pop(pu, None)

    def top(self, n: int) -> tuple[list[Any], list[Any]]:
        return ([self.bids[p] for p in sorted(self.bids, reverse=True)[:n]],
                [self.asks[p] for p in sorted(self.asks)[:n]])


def synthetic(n_events: int = 20_000, per_event: int = 10, seed: int = 7,
              depth: int = 1000) -> list[BookEvent]:
    """A random walk of mid with ``depth`` levels a side; 90% of changes within 50 ticks of mid."""
    rnd = random.Random(seed)
    mid = 2_000_000  # in ticks of 0.01

    def px(t: int) -> str:
        return f"{t // 100}.{t % 100:02d}"

    snap = {"type": "book", "ex": "syn", "sym": "SYN-USD", "ts": 0, "rts": 0,
            "action": "snapshot", "seq": 1,
            "bids": [[px(mid - i), "1.5"] for i in range(1, depth + 1)],
            "asks": [[px(mid + i), "1.5"] for i in range(1, depth + 1)]}
    out = [snap]
    for s in range(2, n_events + 2):
        mid += rnd.choice((-1, 0, 1))
        sides: dict[str, list[list[str]]] = {"bids": [], "asks": []}
        for _ in range(per_event):
            off = rnd.randint(1, 50) if rnd.random() < 0.9 else rnd.randint(51, depth)
            qty = "0" if rnd.random() < 0.3 else f"{rnd.randint(1, 5000) / 1000:.3f}"
            side = rnd.choice(("bids", "asks"))
            sides[side].append([px(mid - off if side == "bids" else mid + off), qty])
        out.append({"type": "book", "ex": "syn", "sym": "SYN-USD", "ts": s, "rts": s,
                    "action": "update", "seq": s, "prev_seq": s - 1, **sides})
    return books(out)


def books(objs: list[dict[str, Any]]) -> list[BookEvent]:
    """Decoded book events (the inputs are valid: anything else is a bug here)."""
    out = [decode_obj(o) for o in objs]
    events = [e for e in out if isinstance(e, BookEvent)]
    assert len(events) == len(out), "an invalid book event in the bench input"
    return events


def run_book(evs: list[BookEvent], read_every: int) -> None:
    b = Book()
    for i, e in enumerate(evs):
        b.apply(e)
        if i % read_every == 0:
            b.top(20, "bids")
            b.top(20, "asks")


def run_naive(evs: list[BookEvent], read_every: int) -> None:
    b = NaiveBook()
    for i, e in enumerate(evs):
        b.apply(e)
        if i % read_every == 0:
            b.top(20)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5,
                    help="runs of each side, interleaved; the best of each counts (default 5)")
    repeat = ap.parse_args(argv).repeat
    eth = books([d for d in eth_events() if d["type"] == "book"])
    syn = synthetic()
    deep = synthetic(n_events=2_000, depth=20_000)
    rows = []
    for name, evs in (("ETHUSDT recording", eth), ("synthetic, 90% near mid", syn),
                      ("synthetic, 20,000 levels a side", deep)):
        changes = sum(len(e.bids) + len(e.asks) for e in evs[1:])
        for label, every in (("top-20 after every event", 1), ("top-20 every 10th event", 10)):
            t_ours, t_base = best_of_each([partial(run_book, evs, every),
                                           partial(run_naive, evs, every)], repeat)
            ours, base = changes / t_ours, changes / t_base
            rows.append([name, label, ours, base, f"{ours / base:.1f}x"])
    print(table("Order book operator: level changes/s (apply + top-20 reads)",
                ["input", "reads", "our book", "naive dict baseline", "ratio"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
