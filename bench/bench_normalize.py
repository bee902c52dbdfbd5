"""Offline normalization throughput per exchange, against the raw JSON decode floor.

For each recording the frames are read into memory first (file reading is not measured), then in
the same run, interleaved (the machine may be shared): ``orjson.loads`` of every frame (the floor:
no handler can be faster), and a fresh handler normalizing every frame, best of ``--repeat`` runs
each. Prints frames/s and the ratio (handler time / decode time; the goal of issue 4 is within
3x). The price and quantity strings seen are cached (the memos of ``operators.events``), so
the first run (``cold``: caches cleared before it) parses every string once, and later runs
(``warm``, the best of them) find most strings cached: a live feed sits in between, as it repeats
most prices but keeps sending new quantities.

    .venv/bin/python -m bench.bench_normalize [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"{'exchange':<16} {'recording':<24} {'frames':>7} {'events':>7} {'decode f/s':>11} "
          f"{'cold f/s':>9} {'warm f/s':>9} {'cold':>6} {'warm':>6}")
    for exchange, names in CASES:
        frames = [fr for n in names for fr in read_frames(DATA / n)]
        floors = [decode_floor(frames)]
        clear_caches()
        runs = [normalize(exchange, frames)]
        for _ in range(args.repeat):
            floors.append(decode_floor(frames))
            runs.append(normalize(exchange, frames))
        floor, cold, warm = min(floors), runs[0][0], min(t for t, _ in runs[1:])
        n = len(frames)
        print(f"{exchange:<16} {Path(names[0]).name[:24]:<24} {n:>7} {runs[0][1]:>7} "
              f"{n / floor:>11,.0f} {n / cold:>9,.0f} {n / warm:>9,.0f} {cold / floor:>5.1f}x "
              f"{warm / floor:>5.1f}x")


if __name__ == "__main__":
    main()
