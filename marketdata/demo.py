"""``marketdata demo``: the whole pipeline on recorded sessions, in one command.

Stack up → recorded sessions of several exchanges and symbols, looped at (accelerated) real time
into Kafka → the order book, candle and ticker flows (``python -m bytewax.run``) → Redis → the API
and dashboard → a live status view in the terminal until Ctrl-C, which stops everything the demo
started. ``--duration`` runs it headless for a bounded time (the demo test does).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import redis

from dataflows.config import CommonConfig, from_env

__all__ = ["register", "run_demo"]

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FLOWS = ("orderbook", "candles", "ticker")
# (exchange handler, recording files): the sessions the demo loops
SESSIONS: list[tuple[str, list[str]]] = [
    ("binance", ["hftbacktest/spot/btcusdt_20240808.gz"]),
    ("coinbase", ["cryptofeed/COINBASE.ws.28.0"]),
    ("kraken", ["cryptofeed/KRAKEN.ws.50.0"]),
    ("okx", ["cryptofeed/OKX.ws.1.0"]),
]
CANONICAL = DATA / "canonical" / "binance_ethusdt_20240808.events.jsonl.gz"


def _say(msg: str) -> None:
    print(f"\033[1m==>\033[0m {msg}" if sys.stderr.isatty() else f"==> {msg}", file=sys.stderr,
          flush=True)


def load_sessions(cache: Path) -> list[list[dict[str, Any]]]:
    """Canonical events of each recorded session (normalized once, then cached)."""
    import gzip

    from connectors.exchanges.normalize import normalize_files

    cache.mkdir(parents=True, exist_ok=True)
    out = []
    with gzip.open(CANONICAL, "rb") as fh:
        out.append([orjson.loads(x) for x in fh])
    for ex, files in SESSIONS:
        target = cache / f"{ex}.jsonl"
        if not target.exists():
            buf = io.BytesIO()
            normalize_files(ex, [DATA / f for f in files], buf)
            target.write_bytes(buf.getvalue())
        evs = [orjson.loads(x) for x in target.read_bytes().splitlines()]
        out.append([e for e in evs if e.get("type") in ("book", "trade")])
    return out


def _spawn(name: str, cmd: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _status_lines(client: redis.Redis, t0: float, feeders: list[Any], api: str,
                  procs: dict[str, subprocess.Popen[bytes]], cfg: CommonConfig) -> list[str]:
    from connectors.redis import read_candles, read_ticker

    now_ms = time.time() * 1000
    sent = sum(f.sent for f in feeders)
    lines = [f"marketdata demo — up {time.time() - t0:5.0f}s — {sent:,} events produced "
             f"({sent / max(time.time() - t0, 1e-9):,.0f}/s) — dashboard: {api}",
             "flows: " + "  ".join(f"{n}={'running' if p.poll() is None else f'EXIT {p.poll()}'}"
                                   for n, p in procs.items())]
    try:
        from connectors.kafka import partition_lag

        lag = {f: sum(partition_lag(cfg.kafka_bootstrap, f"marketdata-demo-{f}",
                                    [cfg.topic("book" if f == "orderbook" else "trades")])
                      .values()) for f in FLOWS}
        lines.append("lag:   " + "  ".join(f"{f}={v:,}" for f, v in lag.items()))
    except Exception as e:  # the view must not die with the broker: say so
        lines.append(f"lag:   unavailable ({e})")
    lines.append("")
    lines.append(f"{'exchange':<10} {'symbol':<11} {'status':<8} {'bid':>14} {'ask':>14} "
                 f"{'age':>7}  {'1m candle o/h/l/c':<44} {'24h %':>9}")
    exchanges = {"binance"} | {ex for ex, _ in SESSIONS}
    keys = sorted(k for k in (k.decode()[8:] for k in client.scan_iter("md:book:*", count=500))
                  if k.partition(":")[0] in exchanges)
    for key in keys[:24]:
        ex, _, sym = key.partition(":")
        raw = client.hget(f"md:book:{key}", "data")
        if raw is None:
            continue
        b = orjson.loads(raw)
        bid = b["bids"][0][0] if b["bids"] else "-"
        ask = b["asks"][0][0] if b["asks"] else "-"
        age = f"{(now_ms - b['ts']) / 1000:.1f}s"
        c = read_candles(client, ex, sym, "1m", limit=1)
        cs = f"{c[-1]['o']}/{c[-1]['h']}/{c[-1]['l']}/{c[-1]['c']}" if c else "-"
        t = read_ticker(client, ex, sym)
        pct = t["priceChangePercent"][:7] if t else "-"
        lines.append(f"{ex:<10} {sym:<11} {b['status']:<8} {bid:>14} {ask:>14} {age:>7}  "
                     f"{cs[:44]:<44} {pct:>9}")
    return lines


def run_demo(duration: float | None, speed: float, api_port: int, view: bool) -> int:
    from connectors.feeder import Feeder
    from marketdata import stack

    cfg: CommonConfig = from_env(CommonConfig)
    state = Path(os.environ.get("MD_STATE_DIR", ROOT / ".state"))
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _say("starting the local stack (broker + Redis)")
    stack.up()
    _say("loading the recorded sessions")
    sessions = load_sessions(state / "demo")
    n_keys = len({(e["ex"], e["sym"]) for s in sessions for e in s})
    _say(f"{len(sessions)} sessions, {n_keys} exchange/symbol pairs, "
         f"{sum(len(s) for s in sessions):,} events a pass, looped at {speed:g}x")
    env = dict(os.environ)
    env.update({"MD_KAFKA_BOOTSTRAP": cfg.kafka_bootstrap, "MD_REDIS_URL": cfg.redis_url,
                # from now on: old demo runs' events in the topics are skipped, and nothing
                # produced while a flow starts up is missed
                "MD_START": str(int(time.time() * 1000)), "PYTHONUNBUFFERED": "1"})
    procs: dict[str, subprocess.Popen[bytes]] = {}
    feeders: list[Feeder] = []
    stopping = False

    def shutdown(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    old = signal.signal(signal.SIGTERM, shutdown)
    try:
        for i, flow in enumerate(FLOWS):
            _say(f"starting the {flow} flow (python -m bytewax.run dataflows.{flow}:flow)")
            procs[flow] = _spawn(flow, [sys.executable, "-m", "bytewax.run",
                                        f"dataflows.{flow}:flow"],
                                 {**env, "MD_GROUP_ID": f"marketdata-demo-{flow}",
                                  "MD_METRICS_PORT": str(9100 + i)}, logs)
        api = f"http://127.0.0.1:{api_port}/?ex=binance&sym=ETH-USDT"
        _say(f"starting the API: {api}")
        procs["api"] = _spawn("api", [sys.executable, "-m", "marketdata.cli", "api",
                                      "--port", str(api_port)], env, logs)
        client = redis.Redis.from_url(cfg.redis_url)
        _say("replaying the sessions into Kafka")
        for events in sessions:
            f = Feeder(cfg.kafka_bootstrap, cfg.topic_prefix, events, speed=speed)
            f.start()
            feeders.append(f)
        t0 = time.time()
        last = 0.0
        while not stopping and (duration is None or time.time() - t0 < duration):
            for name, p in procs.items():
                if p.poll() is not None:
                    _say(f"{name} exited with {p.returncode}; see {logs / (name + '.log')}")
                    return 1
            if view and time.time() - last >= 1:
                last = time.time()
                lines = _status_lines(client, t0, feeders, api, procs, cfg)
                if sys.stdout.isatty():
                    sys.stdout.write("\033[H\033[2J" + "\n".join(lines) + "\n(Ctrl-C to stop)\n")
                else:
                    sys.stdout.write("\n".join(lines[:2]) + "\n")
                sys.stdout.flush()
            time.sleep(0.2)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, old)
        _say("stopping the demo")
        for f in feeders:
            f.stop()
        for f in feeders:
            f.join(timeout=15)
        for p in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        _say("stopped (the broker and Redis stay up: `marketdata stack down` stops them)")


def _cmd(args: argparse.Namespace) -> int:
    return run_demo(args.duration, args.speed, args.api_port, view=not args.no_view)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="run the whole pipeline on recorded sessions",
                              description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=None,
                   help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--speed", type=float, default=float(os.environ.get("MD_DEMO_SPEED", 5)),
                   help="replay speed factor (MD_DEMO_SPEED, default 5)")
    p.add_argument("--api-port", type=int, default=int(os.environ.get("MD_API_PORT", 8000)),
                   dest="api_port", help="API and dashboard port (MD_API_PORT, default 8000)")
    p.add_argument("--no-view", action="store_true", help="no live terminal view")
    p.set_defaults(func=_cmd)
