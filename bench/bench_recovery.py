"""Recovery cost: snapshot duration and size per epoch, and the throughput cost of recovery.

1. Per epoch, for N symbols (10 → 1,000) with books of D levels per side: the time to pickle every
   key's state (``_Logic.snapshot``, what Bytewax calls for each key touched in an epoch), the
   bytes it makes, and the time to write those rows into a recovery partition the way Bytewax does
   (one SQLite transaction, ``INSERT ... ON CONFLICT``).
2. Throughput of the order book flow over generated events (in process, file-like source, no
   Kafka or Redis, so only recovery differs) without recovery and with snapshots every 1 s and
   10 s, interleaved in the same run.

Run: ``.venv/bin/python bench/bench_recovery.py [--events 300000] [--repeat 2]``.
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from bytewax.recovery import RecoveryConfig
from bytewax.testing import TestingSource, run_main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.files import DiscardSink
from dataflows.common import _Logic, build_flow
from dataflows.config import BookConfig
from dataflows.orderbook import state_factory
from operators.events import BookEvent
from recovery import stores

T0 = 1_700_000_000_000


def _snapshot_event(sym: str, depth: int, seq: int) -> bytes:
    return orjson.dumps({
        "type": "book", "ex": "bench", "sym": sym, "ts": T0, "rts": T0, "action": "snapshot",
        "seq": seq, "bids": [[f"{10_000 - i}.25", "1.5"] for i in range(depth)],
        "asks": [[f"{10_001 + i}.25", "0.75"] for i in range(depth)]})


def snapshot_cost(symbols: int, depth: int) -> dict[str, float]:
    """Pickle time and bytes of one epoch touching every key, and its SQLite write time."""
    make = state_factory(BookConfig())
    logics = []
    for i in range(symbols):
        key = f"bench:S{i}-USD"
        lg = _Logic("orderbook", BookEvent, make, False, None)
        lg.on_batch([(key.encode(), _snapshot_event(f"S{i}-USD", depth, 1), T0)])
        logics.append((key, lg))
    t = time.perf_counter()
    blobs = [(k, pickle.dumps(lg.snapshot())) for k, lg in logics]  # Bytewax pickles it again
    pickle_s = time.perf_counter() - t
    size = sum(len(b) for _, b in blobs)
    d = Path(tempfile.mkdtemp(prefix="mdbench-"))
    try:
        stores.init(d, 1)
        conn = sqlite3.connect(d / "part-0.sqlite3")
        conn.execute("PRAGMA journal_mode=WAL")
        t = time.perf_counter()
        with conn:
            conn.executemany(
                "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES (?,?,?,?) "
                "ON CONFLICT (step_id, state_key, snap_epoch) DO UPDATE "
                "SET ser_change = EXCLUDED.ser_change",
                [("orderbook.orderbook", k, 2, b) for k, b in blobs])
        write_s = time.perf_counter() - t
        conn.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return {"pickle_ms": pickle_s * 1e3, "write_ms": write_s * 1e3, "bytes": size}


def _events(n: int, symbols: int) -> list[tuple[bytes, bytes, int]]:
    out = []
    seq = dict.fromkeys(range(symbols), 1)
    for s in range(symbols):
        out.append((f"bench:S{s}-USD".encode(), _snapshot_event(f"S{s}-USD", 20, 1), T0))
    for i in range(n):
        s = i % symbols
        seq[s] += 1
        ts = T0 + i
        ev = {"type": "book", "ex": "bench", "sym": f"S{s}-USD", "ts": ts, "rts": ts,
              "action": "update", "seq": seq[s], "prev_seq": seq[s] - 1,
              "bids": [[f"{9_990 + i % 10}.25", str(i % 3)]], "asks": []}
        out.append((f"bench:S{s}-USD".encode(), orjson.dumps(ev), ts))
    return out


def throughput(events: list[Any], interval_s: int | None) -> float:
    """Events per second through the order book flow; ``None``: without recovery."""
    df = build_flow("orderbook", TestingSource(events, batch_size=1000), BookEvent,
                    state_factory(BookConfig()), DiscardSink(), DiscardSink(), live=False)
    d = Path(tempfile.mkdtemp(prefix="mdbench-"))
    try:
        rc = None
        if interval_s is not None:
            stores.init(d, 4)
            rc = RecoveryConfig(str(d))
        t = time.perf_counter()
        run_main(df, epoch_interval=timedelta(seconds=interval_s or 10), recovery_config=rc)
        return len(events) / (time.perf_counter() - t)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    print("snapshot of one epoch touching every key (order book state)")
    print(f"{'symbols':>8} {'depth':>6} {'pickle ms':>10} {'sqlite ms':>10} {'KiB':>9} "
          f"{'B/key':>7}")
    for symbols in (10, 100, 1000):
        for depth in (20, 200, 1000):
            r = snapshot_cost(symbols, depth)
            print(f"{symbols:>8} {depth:>6} {r['pickle_ms']:>10.2f} {r['write_ms']:>10.2f} "
                  f"{r['bytes'] / 1024:>9.1f} {r['bytes'] / symbols:>7.0f}")

    events = _events(args.events, args.symbols)
    modes: list[tuple[str, int | None]] = [("none", None), ("-s 1", 1), ("-s 10", 10)]
    rates: dict[str, list[float]] = {m: [] for m, _ in modes}
    throughput(events[:20_000], None)  # warm-up
    for _ in range(args.repeat):
        for name, iv in modes:
            rates[name].append(throughput(events, iv))
    base = max(rates["none"])
    print(f"\norder book flow throughput, {len(events)} events, {args.symbols} symbols, "
          f"best of {args.repeat} (interleaved)")
    print(f"{'recovery':>10} {'events/s':>10} {'cost':>7}")
    for name, _ in modes:
        best = max(rates[name])
        print(f"{name:>10} {best:>10.0f} {100 * (1 - best / base):>6.1f}%")


if __name__ == "__main__":
    main()
