"""Offline normalization throughput per exchange, against the raw JSON decode floor.

For each recording the frames are read into memory first (file reading is not measured), then in
the same run, interleaved (the machine may be shared): ``orjson.loads`` of every frame (the floor:
no handler can be faster), and a fresh handler normalizing every frame, best of ``--repeat`` runs
each. Prints frames/s and the ratio (handler time / decode time; the goal of issue 4 is within
3x). The price and quantity strings seen are cached (the memos of ``operators.events``), so
the first run (``cold``: caches cleared before it) parses every string once, and later runs
(``warm``, the best of them) find most strings cached: a live feed sits in between, as it repeats
most prices but keeps sending new quantities.

The issue's goal is about each exchange's *book stream*, while the recordings mix in trades and
frames a handler ignores (Binance's ``bookTicker``: cheap to skip, they flatter the whole-file
ratio). So the last columns time the book frames alone (those whose events include a book event,
REST snapshots too), inside the same whole-session runs (the caches and books as a live session
has them): a clock read around each book frame, for the handler and for its decode alike (the
reads add ~0.1 µs to both sides of frames that cost microseconds).

    .venv/bin/python -m bench.bench_normalize [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from connectors.exchanges import HANDLERS
from connectors.exchanges.recordings import Frame, data_dir, read_frames
from operators.events import clear_caches

DATA = data_dir()
CASES: list[tuple[str, list[str]]] = [
    ("binance", ["hftbacktest/spot/ethusdt_20240808.gz"]),
    ("binance", ["hftbacktest/spot/btcusdt_20240808.gz", "hftbacktest/spot/btcusdt_20240809.gz"]),
    ("binance_futures", ["hftbacktest/usdm/btcusdt_20240808.gz"]),
    ("binance", ["cryptofeed/BINANCE.ws.1.0"]),
    ("coinbase", ["cryptofeed/COINBASE.ws.28.0"]),
    ("kraken", ["cryptofeed/KRAKEN.ws.50.0"]),
    ("okx", ["cryptofeed/OKX.ws.1.0"]),
    ("bybit", ["nautilus_trader/xrpusdt-ob500.data.zip"]),
]


def decode_floor(frames: list[Frame]) -> float:
    loads = orjson.loads
    t0 = time.perf_counter()
    for fr in frames:
        loads(fr.raw)
    return time.perf_counter() - t0


def normalize(exchange: str, frames: list[Frame]) -> tuple[float, int]:
    h = HANDLERS[exchange]()
    events = 0
    t0 = time.perf_counter()
    for fr in frames:
        out = h.on_snapshot(fr.symbol, fr.raw, fr.rts) if fr.kind == "rest" else \
            h.on_frame(fr.raw, fr.rts)
        events += len(out)
    return time.perf_counter() - t0, events


def book_frames(exchange: str, frames: list[Frame]) -> list[bool]:
    """Which frames are of the book stream: their events include a book event."""
    h = HANDLERS[exchange]()
    return [any(e.get("type") == "book" for e in (
        h.on_snapshot(fr.symbol, fr.raw, fr.rts) if fr.kind == "rest" else
        h.on_frame(fr.raw, fr.rts))) for fr in frames]


def book_split(exchange: str, frames: list[Frame], book: list[bool]) -> tuple[float, float]:
    """One whole-session run; the seconds spent in the book frames by a fresh handler, and by
    ``orjson.loads`` of the same frames (each read in between, as the handler's are)."""
    h, loads, clock = HANDLERS[exchange](), orjson.loads, time.perf_counter
    spent = floor = 0.0
    for fr, is_book in zip(frames, book, strict=True):
        t0 = clock()
        if fr.kind == "rest":
            h.on_snapshot(fr.symbol, fr.raw, fr.rts)
        else:
            h.on_frame(fr.raw, fr.rts)
        if is_book:
            t1 = clock()
            loads(fr.raw)
            t2 = clock()
            spent += t1 - t0
            floor += t2 - t1
    return spent, floor


def _kraken_skeleton(raw: str | bytes) -> list[dict[str, Any]]:
    msg = orjson.loads(raw)
    if type(msg) is dict:
        return []
    part = msg[1]
    return [{"type": "book", "ex": "kraken", "sym": msg[-1], "ts": 0, "rts": 0,
             "action": "update", "seq": 1, "prev_seq": 0,
             "bids": [[lv[0], lv[1]] for lv in part.get("b", ())],
             "asks": [[lv[0], lv[1]] for lv in part.get("a", ())]}]


def _coinbase_skeleton(raw: str | bytes) -> list[dict[str, Any]]:
    msg = orjson.loads(raw)
    if msg.get("type") != "l2update":
        return []
    bids: list[list[str]] = []
    asks: list[list[str]] = []
    for side, px, qty in msg["changes"]:
        (bids if side == "buy" else asks).append([px, qty])
    return [{"type": "book", "ex": "coinbase", "sym": msg["product_id"], "ts": 0, "rts": 0,
             "action": "update", "seq": 1, "prev_seq": 0, "bids": bids, "asks": asks}]


# The least any Python handler does with a small book frame: decode it, pick its fields, build
# the event dict. No validation, no sequence check, no book, no checksum.
SKELETONS: list[tuple[str, Callable[[str | bytes], list[dict[str, Any]]]]] = [
    ("cryptofeed/KRAKEN.ws.50.0", _kraken_skeleton),
    ("cryptofeed/COINBASE.ws.28.0", _coinbase_skeleton),
]


def skeletons(repeat: int) -> None:
    print("\nthe least a Python handler does (decode, pick the fields, build the event dict; no "
          "checks, no book), x the decode floor, best of", repeat)
    for name, fn in SKELETONS:
        frames = [fr for fr in read_frames(DATA / name) if fr.kind != "rest"]
        raws = [fr.raw for fr in frames]
        floors, runs = [], []
        for _ in range(repeat):
            floors.append(decode_floor(frames))
            t0 = time.perf_counter()
            for raw in raws:
                fn(raw)
            runs.append(time.perf_counter() - t0)
        print(f"  {Path(name).name:<24} {min(runs) / min(floors):>5.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"{'exchange':<16} {'recording':<24} {'frames':>7} {'events':>7} {'decode f/s':>11} "
          f"{'cold f/s':>9} {'warm f/s':>9} {'cold':>6} {'warm':>6} {'book fr':>7} "
          f"{'book f/s':>9} {'book':>6}")
    for exchange, names in CASES:
        frames = [fr for n in names for fr in read_frames(DATA / n)]
        floors = [decode_floor(frames)]
        clear_caches()
        runs = [normalize(exchange, frames)]
        book = book_frames(exchange, frames)
        splits = []
        for _ in range(args.repeat):
            floors.append(decode_floor(frames))
            runs.append(normalize(exchange, frames))
            splits.append(book_split(exchange, frames, book))
        floor, cold, warm = min(floors), runs[0][0], min(t for t, _ in runs[1:])
        spent, book_floor = min(t for t, _ in splits), min(f for _, f in splits)
        n, nb = len(frames), sum(book)
        print(f"{exchange:<16} {Path(names[0]).name[:24]:<24} {n:>7} {runs[0][1]:>7} "
              f"{n / floor:>11,.0f} {n / cold:>9,.0f} {n / warm:>9,.0f} {cold / floor:>5.1f}x "
              f"{warm / floor:>5.1f}x {nb:>7} {nb / spent:>9,.0f} {spent / book_floor:>5.1f}x")
    skeletons(max(args.repeat, 3))


if __name__ == "__main__":
    main()
