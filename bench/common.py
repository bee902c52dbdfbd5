"""Shared helpers of the benchmarks: timing, tables, the recorded data."""

from __future__ import annotations

import gzip
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from connectors.exchanges.recordings import data_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = data_dir()
ETH = DATA / "canonical" / "binance_ethusdt_20240808.events.jsonl.gz"


def eth_events() -> list[dict[str, Any]]:
    with gzip.open(ETH, "rb") as fh:
        return [orjson.loads(x) for x in fh]


def best_of_each(fns: list[Callable[[], Any]], repeat: int = 5) -> list[float]:
    """Best wall time (seconds) of ``repeat`` runs of each of ``fns``, their runs interleaved:
    the best run is the least disturbed by the other core's load, and a noisy neighbour slows
    each alike, so a ratio between them holds better than from runs taken one after another."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [["—" if isinstance(c, float) and math.isnan(c) else  # no measurement
                         f"{c:,.0f}" if isinstance(c, float) and c >= 100 else
                         f"{c:.2f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"## {title}", f"({platform.python_implementation()} {platform.python_version()}, "
             f"{platform.machine()}, measured {when})",
             "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |"
              for r in cells[1:]]
    return "\n".join(lines)
