"""Recovery cost: snapshot duration and size per epoch, and the throughput cost of recovery.

1. Per epoch, for N symbols (10 → 1,000) with books of D levels per side: the time to pickle every
   key's state (``_Logic.snapshot``, what Bytewax calls for each key touched in an epoch), the
   bytes it makes, and the time to write those rows into a recovery partition the way Bytewax does
   (one SQLite transaction, ``INSERT ... ON CONFLICT``).
2. Throughput of the order book flow over generated events (in process, file-like source, no
   Kafka or Redis, so only recovery differs) without recovery and with snapshots every 10 s and
   1 s: each run in a fresh process, runs long enough for several epochs, modes interleaved and
   rotated; best wall-clock rate and median CPU rate (the latter barely moved by other load on a
   shared machine), with the number and time of ``_Logic.snapshot`` calls and the store size.

Run: ``.venv/bin/python bench/bench_recovery.py [--events 1000000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import orjson
from bytewax.recovery import RecoveryConfig
from bytewax.testing import TestingSource, run_main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.files import DiscardSink
from connectors.kafka import Message
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
        batch: list[Message] = [(key.encode(), _snapshot_event(f"S{i}-USD", depth, 1))]
        lg.on_batch(batch)
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


def _events(n: int, symbols: int, depth: int = 20) -> list[tuple[bytes, bytes]]:
    """A snapshot of ``depth`` levels per symbol, then ``n`` updates round-robin over symbols
    (every key is touched in every epoch: the worst case for snapshots)."""
    out = []
    seq = dict.fromkeys(range(symbols), 1)
    for s in range(symbols):
        out.append((f"bench:S{s}-USD".encode(), _snapshot_event(f"S{s}-USD", depth, 1)))
    for i in range(n):
        s = i % symbols
        seq[s] += 1
        ts = T0 + i
        ev = {"type": "book", "ex": "bench", "sym": f"S{s}-USD", "ts": ts, "rts": ts,
              "action": "update", "seq": seq[s], "prev_seq": seq[s] - 1,
              "bids": [[f"{9_990 + i % 10}.25", str(i % 3)]], "asks": []}
        out.append((f"bench:S{s}-USD".encode(), orjson.dumps(ev)))
    return out


def _run_once(events: int, symbols: int, depth: int, interval_s: int | None) -> dict[str, float]:
    """One flow run in this process; what it costs, with ``_Logic.snapshot`` timed inside it.

    Without recovery the epoch is 10 s, as ``python -m bytewax.run`` without ``-r`` uses (its
    ``run.py``); with recovery the epoch is the snapshot interval, as ``-s`` sets it.
    """
    evs = _events(events, symbols, depth)
    calls, spent = [0], [0.0]
    real = _Logic.snapshot

    def timed(self: _Logic) -> bytes:
        t = time.perf_counter()
        blob = real(self)
        spent[0] += time.perf_counter() - t
        calls[0] += 1
        return blob

    _Logic.snapshot = timed  # type: ignore[method-assign]
    df = build_flow("orderbook", TestingSource(evs, batch_size=1000), BookEvent,
                    state_factory(BookConfig()), DiscardSink(), DiscardSink(), live=False)
    d = Path(tempfile.mkdtemp(prefix="mdbench-"))
    try:
        rc = None
        if interval_s is not None:
            stores.init(d, 4)
            rc = RecoveryConfig(str(d))
        gc.collect()
        w, c = time.perf_counter(), time.process_time()
        run_main(df, epoch_interval=timedelta(seconds=interval_s or 10), recovery_config=rc)
        wall, cpu = time.perf_counter() - w, time.process_time() - c
        size = sum(f.stat().st_size for f in d.iterdir()) if rc else 0
    finally:
        shutil.rmtree(d, ignore_errors=True)
        _Logic.snapshot = real  # type: ignore[method-assign]
    return {"events": len(evs), "wall_s": wall, "cpu_s": cpu, "snap_calls": calls[0],
            "snap_ms": spent[0] * 1e3, "store_bytes": size}


def throughput(events: int, symbols: int, depth: int, interval_s: int | None) -> dict[str, float]:
    """``_run_once`` in a fresh interpreter: every mode gets the same process layout and heap."""
    cmd = [sys.executable, __file__, "--one", "none" if interval_s is None else str(interval_s),
           "--events", str(events), "--symbols", str(symbols), "--depth", str(depth)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000,
                    help="book updates per run (~30-40 s here: several 10 s epochs)")
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--depth", type=int, default=20, help="levels per side of each book")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--modes", default="none,10,1", help="comma-separated: none or -s seconds")
    ap.add_argument("--skip-snapshot-table", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        iv = None if args.one == "none" else int(args.one)
        print(json.dumps(_run_once(args.events, args.symbols, args.depth, iv)))
        return

    if not args.skip_snapshot_table:
        print("snapshot of one epoch touching every key (order book state)")
        print(f"{'symbols':>8} {'depth':>6} {'pickle ms':>10} {'sqlite ms':>10} {'KiB':>9} "
              f"{'B/key':>7}")
        for symbols in (10, 100, 1000):
            for depth in (20, 200, 1000):
                c = snapshot_cost(symbols, depth)
                print(f"{symbols:>8} {depth:>6} {c['pickle_ms']:>10.2f} {c['write_ms']:>10.2f} "
                      f"{c['bytes'] / 1024:>9.1f} {c['bytes'] / symbols:>7.0f}", flush=True)

    modes = [(m, None if m == "none" else int(m)) for m in args.modes.split(",")]
    runs: dict[str, list[dict[str, float]]] = {m: [] for m, _ in modes}
    throughput(20_000, args.symbols, args.depth, None)  # warm-up: page cache, .pyc files
    for r in range(args.repeat):
        # Interleaved and rotated, so that a burst of load from elsewhere hits every mode alike.
        for name, iv in modes[r % len(modes):] + modes[:r % len(modes)]:
            runs[name].append(throughput(args.events, args.symbols, args.depth, iv))
            x = runs[name][-1]
            print(f"  run {r + 1} {name:>5}: {x['events'] / x['wall_s']:>8.0f} ev/s wall, "
                  f"{x['events'] / x['cpu_s']:>8.0f} ev/s cpu, {x['snap_calls']:.0f} snapshots "
                  f"in {x['snap_ms']:.0f} ms", flush=True)
    n = runs[modes[0][0]][0]["events"]
    print(f"\norder book flow, {n} events, {args.symbols} symbols, depth {args.depth}, "
          f"{args.repeat} interleaved runs per mode, each in a fresh process")
    print(f"{'recovery':>8} {'best wall/s':>12} {'cost':>6} {'median cpu/s':>13} {'cost':>6} "
          f"{'snapshots':>10} {'snap ms':>8} {'store KiB':>10}")
    best = {m: max(x["events"] / x["wall_s"] for x in rs) for m, rs in runs.items()}
    cpu = {m: _median([x["events"] / x["cpu_s"] for x in rs]) for m, rs in runs.items()}
    b0, c0 = best[modes[0][0]], cpu[modes[0][0]]
    for name, _ in modes:
        rs = runs[name]
        calls = _median([x["snap_calls"] for x in rs])
        print(f"{name if name == 'none' else '-s ' + name:>8} {best[name]:>12.0f} "
              f"{100 * (1 - best[name] / b0):>5.1f}% {cpu[name]:>13.0f} "
              f"{100 * (1 - cpu[name] / c0):>5.1f}% {calls:>10.0f} "
              f"{_median([x['snap_ms'] for x in rs]):>8.1f} "
              f"{_median([x['store_bytes'] for x in rs]) / 1024:>10.0f}")


if __name__ == "__main__":
    main()
