"""Run the real flows as `python -m bytewax.run` subprocesses, for the integration tests."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

import orjson

from connectors.exchanges.recordings import data_dir
from tests.util import free_port

ROOT = Path(__file__).resolve().parents[1]
DATA = data_dir()
ETH = DATA / "canonical" / "binance_ethusdt_20240808.events.jsonl.gz"


def recorded_events(exchanges: Iterable[str], symbols: Iterable[str]) -> list[bytes]:
    """The ETHUSDT recording re-labelled as several exchanges × symbols (a real multi-key feed)."""
    with gzip.open(ETH, "rb") as fh:
        base = [orjson.loads(x) for x in fh]
    out: list[bytes] = []
    pairs = [(e, s) for e in exchanges for s in symbols]
    for d in base:  # interleaved, as a real topic would be
        for ex, sym in pairs:
            out.append(orjson.dumps({**d, "ex": ex, "sym": sym}))
    return out


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}."


def flow_env(prefix: str, bootstrap: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"MD_KAFKA_BOOTSTRAP": bootstrap, "MD_REDIS_URL": redis_url,
                "MD_TOPIC_PREFIX": prefix, "MD_START": "earliest",
                "MD_GROUP_ID": f"g-{prefix}", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def start_flow(flow: str, env: dict[str, str], processes: int = 1, workers: int = 1,
               log_dir: Path | None = None,
               extra_args: list[str] | None = None) -> list[subprocess.Popen[bytes]]:
    """Start ``dataflows.{flow}:flow`` as ``processes`` cooperating processes (``-i/-a``)."""
    args = [sys.executable, "-m", "bytewax.run", f"dataflows.{flow}:flow", "-w", str(workers)]
    args += extra_args or []
    procs = []
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    for i in range(processes):
        cmd = list(args)
        if processes > 1:
            cmd += ["-i", str(i), "-a", addresses]
        out = open(log_dir / f"{flow}-{i}.log", "wb") if log_dir else subprocess.DEVNULL  # noqa: SIM115
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out,
                                      stderr=subprocess.STDOUT))
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait(timeout=30)


def stopped_at_end(records: list[dict], events: list[bytes], lateness_ms: int = 2000) -> list[dict]:
    """Replay's records as a live run stopped at the end of its input (``MD_STOP_AT_END``) leaves
    them. Replay ends time there: every candle closes, gaps up to the last trade are filled. A
    live run ends only its input: a candle that its symbol's watermark (newest trade time minus
    the lateness, to the minute) has not passed stays open with the same trades, and a minute
    with no trade after the watermark is not filled yet."""
    newest: dict[tuple[str, str], int] = {}
    for line in events:
        e = orjson.loads(line)
        if e["type"] == "trade":
            k = (e["ex"], e["sym"])
            newest[k] = max(newest.get(k, 0), e["ts"])
    out = []
    for r in records:
        if r["type"] == "candle":
            wm = newest[(r["ex"], r["sym"])] - lateness_ms
            if r["T"] + 1 > wm - wm % 60_000:  # not passed: open, or not there at all
                if r["n"] == 0 and r["t"] >= wm - wm % 60_000:
                    continue
                r = {**r, "closed": False}
        out.append(r)
    return out
