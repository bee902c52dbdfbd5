"""Offline normalization throughput per exchange, against the raw JSON decode floor.

For each recording the frames are read into memory first (file reading is not measured), then in
the same run, interleaved (the machine may be shared): ``orjson.loads`` of every frame (the floor:
no handler can be faster), and a fresh handler normalizing every frame, best of ``--repeat`` runs
each. Prints frames/s and the ratio (handler time / decode time; the goal of issue 4 is within
3x). Best of N is the steady state of a long-running process: the handlers' caches of price and
quantity strings (module-level) are warm after the first run.

    .venv/bin/python -m bench.bench_normalize [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import orjson

from connectors.exchanges import HANDLERS
from connectors.exchanges.recordings import Frame, read_frames

DATA = Path("/work/shared/data")
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
    print(f"{'exchange':<16} {'recording':<28} {'frames':>8} {'events':>7} "
          f"{'decode f/s':>11} {'normalize f/s':>13} {'ratio':>6}")
    for exchange, names in CASES:
        frames = [fr for n in names for fr in read_frames(DATA / n)]
        floors, runs = [], []
        for _ in range(args.repeat):
            floors.append(decode_floor(frames))
            runs.append(normalize(exchange, frames))
        floor, best = min(floors), min(t for t, _ in runs)
        n = len(frames)
        print(f"{exchange:<16} {Path(names[0]).name[:28]:<28} {n:>8} {runs[0][1]:>7} "
              f"{n / floor:>11,.0f} {n / best:>13,.0f} {best / floor:>5.1f}x")


if __name__ == "__main__":
    main()
