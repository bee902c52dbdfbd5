"""Crash and resume with real processes: two Bytewax processes, real broker, real Redis, kill -9.

Per flow and seed: produce generated events (several symbols) to fresh topics with several
partitions; run the flow as two processes (``-i/-a``, ``-w 2``) with a recovery store and
stop-at-end; ``kill -9`` one process at a random point (or right as a snapshot lands), then both;
restart (once with a different worker count); let it finish. The final Redis state must equal the
replay reference's, and a reader polling Redis the whole time must never see a book's ``seq`` go
back, a candle lose trades (``n`` down) or a ticker move back.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from bytewax.testing import run_main
from confluent_kafka.admin import AdminClient

from connectors.kafka import ensure_topics, produce_lines
from connectors.redis import read_book, read_candles, read_ticker
from dataflows import candles, orderbook, ticker
from dataflows.config import BookConfig, CandleConfig, TickerConfig
from recovery import stores
from tests.flowrun import stopped_at_end
from tests.util import free_port, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SYMS = ["AAA-USD", "BBB-USD", "CCC-USD", "DDD-USD", "EEE-USD"]
IVS = ["1m", "5m"]
T0 = 1_700_000_000_000
N_EVENTS = 30_000
BATCH = 20  # small batches: the run lasts a few seconds, so kills land mid-stream


# --- input ---------------------------------------------------------------------------------------

def _book_events(ex: str, rng: random.Random) -> list[bytes]:
    seq = dict.fromkeys(SYMS, 1000)
    out = []
    for s in SYMS:
        out.append({"type": "book", "ex": ex, "sym": s, "ts": T0, "rts": T0, "action": "snapshot",
                    "seq": seq[s], "bids": [[f"{p}.1", "1"] for p in range(90, 100)],
                    "asks": [[f"{p}.1", "1"] for p in range(100, 110)]})
    for i in range(N_EVENTS):
        s = rng.choice(SYMS)
        seq[s] += 1
        ts = T0 + i * 37
        out.append({"type": "book", "ex": ex, "sym": s, "ts": ts, "rts": ts, "action": "update",
                    "seq": seq[s], "prev_seq": seq[s] - 1,
                    "bids": [[f"{rng.randint(90, 99)}.1", rng.choice(["0", "2", "3.5"])]],
                    "asks": [[f"{rng.randint(100, 109)}.1", rng.choice(["0", "1", "0.25"])]]})
    return [orjson.dumps(e) for e in out]


def _trade_events(ex: str, rng: random.Random) -> list[bytes]:
    ids = dict.fromkeys(SYMS, 0)
    out = []
    for i in range(N_EVENTS):
        s = rng.choice(SYMS)
        ids[s] += 1
        ts = T0 + i * 61
        out.append({"type": "trade", "ex": ex, "sym": s, "ts": ts, "rts": ts, "id": str(ids[s]),
                    "px": f"{rng.randint(9000, 11000) / 100:.2f}",
                    "qty": f"0.{rng.randint(1, 9999):04d}", "side": rng.choice(["buy", "sell"])})
    return [orjson.dumps(e) for e in out]


FLOWS: dict[str, dict[str, Any]] = {
    "orderbook": {"topic": "book", "events": _book_events, "replay": orderbook.replay,
                  "cfg": BookConfig()},
    "candles": {"topic": "trades", "events": _trade_events, "replay": candles.replay,
                "cfg": CandleConfig(intervals=IVS)},
    "ticker": {"topic": "trades", "events": _trade_events, "replay": ticker.replay,
               "cfg": TickerConfig()},
}


# --- Redis state and the monotonicity watcher -------------------------------------------------

def _state(client: redis.Redis, flow: str, ex: str) -> dict[str, Any]:
    if flow == "orderbook":
        return {s: read_book(client, ex, s) for s in SYMS}
    if flow == "ticker":
        return {s: read_ticker(client, ex, s) for s in SYMS}
    return {f"{s}:{iv}": read_candles(client, ex, s, iv) for s in SYMS for iv in IVS}


def _expected(flow: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The final state the replay reference leaves: the newest record per identity."""
    if flow == "candles":
        by: dict[tuple[str, str, int], dict[str, Any]] = {}
        for r in records:
            k = (r["sym"], r["iv"], r["t"])
            cur = by.get(k)
            if cur is None or (r["n"], r["closed"]) >= (cur["n"], cur["closed"]):
                by[k] = r
        return {f"{s}:{iv}": [by[k] for k in sorted(by) if k[0] == s and k[1] == iv]
                for s in SYMS for iv in IVS}
    last: dict[str, Any] = dict.fromkeys(SYMS)
    for r in records:
        last[r["sym"]] = r
    return last


class Watcher(threading.Thread):
    """Polls Redis during the whole run; records any step backwards."""

    def __init__(self, url: str, flow: str, ex: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.flow, self.ex = flow, ex
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.polls = 0
        self.seen: dict[Any, tuple[Any, ...]] = {}

    def _see(self, key: Any, version: tuple[Any, ...]) -> None:
        old = self.seen.get(key)
        if old is not None and version < old:
            self.errors.append(f"{key}: {old} -> {version}")
        self.seen[key] = version

    def run(self) -> None:
        while not self.stop.is_set():
            st = _state(self.client, self.flow, self.ex)
            for key, val in st.items():
                if self.flow == "orderbook" and val:
                    self._see(key, (val["seq"],))
                elif self.flow == "ticker" and val:
                    self._see(key, (val["closeTime"], val["count"]))
                elif self.flow == "candles":
                    for c in val or []:
                        self._see((key, c["t"]), (c["n"],))
            self.polls += 1
            self.stop.wait(0.02)


# --- processes -----------------------------------------------------------------------------------

class Cluster:
    """Two ``bytewax.run`` processes of one flow sharing one recovery store."""

    def __init__(self, flow: str, store: Path, env: dict[str, str], logs: Path) -> None:
        self.flow, self.store, self.env, self.logs = flow, store, env, logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.runs = 0

    def start(self, workers: int) -> None:
        self.runs += 1
        ports = [free_port(), free_port()]
        addrs = ";".join(f"127.0.0.1:{p}" for p in ports)
        self.procs = []
        for i in range(2):
            log = open(self.logs / f"{self.flow}-{self.runs}-{i}.log", "wb")  # noqa: SIM115
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "bytewax.run", f"dataflows.{self.flow}:flow",
                 "-r", str(self.store), "-s", "1", "-b", "0", "-w", str(workers),
                 "-i", str(i), "-a", addrs],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT))
            log.close()

    def kill(self, which: list[int]) -> None:
        for i in which:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.procs[i].pid, signal.SIGKILL)

    def reap(self, timeout: float) -> None:
        """Wait for every process to end; kill -9 whatever a dead peer left hanging."""
        with contextlib.suppress(AssertionError):
            wait_until(lambda: all(p.poll() is not None for p in self.procs), timeout,
                       message="processes to exit after the peer died")
        self.kill([0, 1])
        for p in self.procs:
            p.wait(10)

    def finish(self, timeout: float) -> list[int]:
        wait_until(lambda: all(p.poll() is not None for p in self.procs), timeout,
                   message=f"{self.flow} to reach the end of its input")
        return [int(p.returncode) for p in self.procs]

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)


def _epochs(store: Path) -> int:
    info = stores.read_store(store)
    return max(info.epochs) if info.epochs else 0


def _kill_point(cluster: Cluster, rng: random.Random, watcher: Watcher) -> None:
    """A random point: after some Redis progress, or right as a new snapshot epoch lands."""
    if rng.random() < 0.5:
        target = _epochs(cluster.store) + 1
        wait_until(lambda: _epochs(cluster.store) >= target or not cluster.alive(), 60,
                   interval=0.01, message="a new snapshot epoch")
    else:
        target = watcher.polls + rng.randint(3, 25)
        wait_until(lambda: watcher.polls >= target or not cluster.alive(), 60, interval=0.01,
                   message="some progress")


@pytest.fixture
def env_for(stack: tuple[str, str]) -> Iterator[Any]:
    bootstrap, url = stack
    prefixes: list[str] = []

    def make(flow: str) -> tuple[str, dict[str, str]]:
        prefix = f"crash{uuid.uuid4().hex[:8]}."
        prefixes.append(prefix)
        ensure_topics(bootstrap, [f"{prefix}{t}" for t in ("book", "trades", "deadletter")],
                      partitions=4)
        env = {**os.environ, "MD_KAFKA_BOOTSTRAP": bootstrap, "MD_REDIS_URL": url,
               "MD_TOPIC_PREFIX": prefix, "MD_START": "earliest", "MD_STOP_AT_END": "1",
               "MD_GROUP_ID": f"crash-{flow}-{uuid.uuid4().hex[:6]}",
               "MD_BATCH_SIZE": str(BATCH), "MD_METRICS_PORT": "0", "PYTHONPATH": str(ROOT)}
        if flow == "candles":
            env["MD_INTERVALS"] = ",".join(IVS)
        return prefix, env

    yield make
    topics = [f"{p}{t}" for p in prefixes for t in ("book", "trades", "deadletter")]
    if topics:
        for fut in AdminClient({"bootstrap.servers": bootstrap}).delete_topics(topics).values():
            with contextlib.suppress(Exception):
                fut.result(timeout=2)


def _replay_reference(flow: str, lines: list[bytes], work: Path) -> list[dict[str, Any]]:
    src, out = work / "in.jsonl.gz", work / "ref.jsonl"
    with gzip.open(src, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    spec = FLOWS[flow]
    run_main(spec["replay"](spec["cfg"], str(src), str(out)))
    return [orjson.loads(x) for x in out.read_bytes().splitlines() if x.strip()]


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("flow", "seed", "workers"), [
    ("orderbook", 1, (2, 2, 2)),
    ("candles", 2, (2, 2, 1)),
    ("ticker", 3, (2, 1, 2)),
])
def test_kill9_and_resume_equals_reference(flow: str, seed: int, workers: tuple[int, int, int],
                                           env_for: Any, stack: tuple[str, str]) -> None:
    bootstrap, url = stack
    rng = random.Random(seed)
    prefix, env = env_for(flow)
    ex = prefix.rstrip(".")
    spec = FLOWS[flow]
    lines = spec["events"](ex, random.Random(seed * 7919))
    work = Path(tempfile.mkdtemp(prefix="mdcrash-"))
    try:
        expected = _expected(flow, stopped_at_end(_replay_reference(flow, lines, work), lines))
        produce_lines(bootstrap, f"{prefix}{spec['topic']}", lines)
        store = stores.init(work / "store" / flow, 8)
        cluster = Cluster(flow, store, env, work)
        watcher = Watcher(url, flow, ex)
        watcher.start()
        try:
            # 1: kill -9 one process mid-stream; its peer dies or hangs with it.
            cluster.start(workers[0])
            _kill_point(cluster, rng, watcher)
            assert cluster.alive(), "input too small: the flow ended before the first kill"
            cluster.kill([rng.randint(0, 1)])
            cluster.reap(20)
            # 2: resume (maybe with another worker count), then kill -9 both.
            cluster.start(workers[1])
            _kill_point(cluster, rng, watcher)
            cluster.kill([0, 1])
            cluster.reap(5)
            assert stores.check(flow, store, [f"{prefix}{spec['topic']}"]).usable
            # 3: resume to the end.
            cluster.start(workers[2])
            rcs = cluster.finish(150)
            logs = "\n".join(p.read_text(errors="replace")[-2000:]
                             for p in sorted(work.glob(f"{flow}-{cluster.runs}-*.log")))
            assert rcs == [0, 0], logs
        finally:
            cluster.kill([0, 1])
            watcher.stop.set()
            watcher.join(5)
        final = _state(watcher.client, flow, ex)
        assert watcher.polls > 10
        assert watcher.errors == [], watcher.errors[:5]
        assert final == expected
    finally:
        if not os.environ.get("MD_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
