"""Live normalization throughput per exchange through the simulator, against the decode floor.

The simulator runs in its own process at full speed (synthetic books, ``--rate 0``: it sends as
fast as the client reads). For each exchange a :class:`connectors.exchanges.live.LiveFeed` (the
real transport: socket, handler, resync, recording) runs for ``--seconds`` while this thread
drains its events, as the ingestion flow does. The frames it received are recorded; in the same
run they are then decoded with ``orjson.loads`` alone (the floor) and normalized again offline by
a fresh handler, so the three numbers compare the same frames.

    .venv/bin/python bench/bench_ingest.py [--seconds 5] [--exchanges binance,okx]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.exchanges.live import FeedOptions, LiveFeed, endpoint_for, make_handler
from connectors.exchanges.normalize import normalize_frames
from connectors.exchanges.recordings import read_frames
from connectors.simulator import VENUES
from tests.util import free_port, wait_until

SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"]


def run_one(ex: str, address: str, seconds: float, tmp: Path) -> dict[str, float]:
    rec = tmp / f"{ex}.ws.1.0"
    feed = LiveFeed(ex, SYMBOLS, endpoint_for(ex, address), FeedOptions(record_path=str(rec)))
    feed.start()
    wait_until(lambda: feed.stats["frames"] > 100, 30, message=f"{ex}: frames flowing")
    n0, t0 = feed.stats["frames"], time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if not feed.drain(1000):
            time.sleep(0.0005)
    n1, t1 = feed.stats["frames"], time.perf_counter()
    feed.stop()
    live = (n1 - n0) / (t1 - t0)
    frames = [f for f in read_frames(rec) if f.kind == "ws"]
    raws = [f.raw for f in frames]
    t = time.perf_counter()
    for r in raws:
        orjson.loads(r)
    decode = len(raws) / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in normalize_frames(make_handler(ex), frames):
        pass
    offline = len(raws) / (time.perf_counter() - t)
    return {"frames": len(raws), "live_fps": live, "offline_fps": offline, "decode_fps": decode,
            "live_vs_decode": decode / live, "offline_vs_decode": decode / offline,
            "gaps": feed.handler.stats["gaps"], "resyncs": feed.handler.stats["resyncs"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--exchanges", default=",".join(VENUES))
    args = ap.parse_args()
    exchanges = [e for e in args.exchanges.split(",") if e]
    port = free_port()
    root = Path(__file__).resolve().parents[1]
    sim = subprocess.Popen([sys.executable, "-m", "connectors.simulator.cli", "--port", str(port),
                            "--rate", "0", "--exchanges", ",".join(exchanges),
                            "--symbols", ",".join(SYMBOLS)], cwd=root,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert sim.stdout is not None
        sim.stdout.readline()  # the MD_* line: the server is up
        print(f"{'exchange':<16}{'frames':>9}{'live f/s':>11}{'offline f/s':>13}"
              f"{'decode f/s':>12}{'live/decode':>13}{'gaps':>6}")
        with tempfile.TemporaryDirectory() as d:
            for ex in exchanges:
                r = run_one(ex, f"127.0.0.1:{port}", args.seconds, Path(d))
                print(f"{ex:<16}{r['frames']:>9}{r['live_fps']:>11,.0f}{r['offline_fps']:>13,.0f}"
                      f"{r['decode_fps']:>12,.0f}{r['live_vs_decode']:>12.1f}x{r['gaps']:>6}")
    finally:
        sim.terminate()
        sim.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
