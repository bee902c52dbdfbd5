"""``marketdata demo``: the whole pipeline on recorded sessions, in one command.

Stack up → the exchange simulator replaying the recorded sessions of ``shared/data`` (several
exchanges and symbols, looped, in each exchange's wire protocol) → the ingestion flow (the live
feed handlers, over WebSocket) → Kafka → the order book, candle and ticker flows (each
``python -m bytewax.run``) → Redis → the API and dashboard → a live status view in the terminal
until Ctrl-C, which stops everything the demo started. ``--duration`` runs it headless for a
bounded time (the demo test does).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import redis

from api.cli import port
from dataflows.config import CommonConfig, from_env

__all__ = ["register", "run_demo"]

ROOT = Path(__file__).resolve().parents[1]
FLOWS = ("ingest", "orderbook", "candles", "ticker")


def _say(msg: str) -> None:
    print(f"\033[1m==>\033[0m {msg}" if sys.stderr.isatty() else f"==> {msg}", file=sys.stderr,
          flush=True)


def _produced(cfg: CommonConfig) -> int:
    """Messages in the book and trade topics (sum of high watermarks): the events/s gauge."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": cfg.kafka_bootstrap, "group.id": "marketdata-demo-view"})
    try:
        total = 0
        for name in ("book", "trades"):
            topic = cfg.topic(name)
            for p in c.list_topics(topic, timeout=2).topics[topic].partitions:
                total += c.get_watermark_offsets(TopicPartition(topic, p), timeout=2)[1]
        return total
    finally:
        c.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(name: str, cmd: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _status_lines(client: redis.Redis, t0: float, rate: float, api: str, feeds: set[str],
                  procs: dict[str, subprocess.Popen[bytes]], cfg: CommonConfig) -> list[str]:
    from connectors.redis import read_candles, read_ticker

    lines = [f"marketdata demo — up {time.time() - t0:4.0f}s — {rate:,.0f} events/s into Kafka "
             f"— dashboard: {api}",
             "flows: " + "  ".join(f"{n}={'running' if p.poll() is None else f'EXIT {p.poll()}'}"
                                   for n, p in procs.items())]
    try:
        from connectors.kafka import partition_lag

        lag = {f: sum(partition_lag(cfg.kafka_bootstrap, f"marketdata-demo-{f}",
                                    [cfg.topic("book" if f == "orderbook" else "trades")])
                      .values()) for f in FLOWS[1:]}
        lines.append("lag:   " + "  ".join(f"{f}={v:,}" for f, v in lag.items()))
    except Exception as e:  # the view must not die with the broker: say so
        lines.append(f"lag:   unavailable ({e})")
    lines.append("")
    lines.append("(lag: as committed by the flows' last snapshots, every epoch)")
    lines.append(f"{'exchange':<10} {'symbol':<11} {'status':<8} {'bid':>14} {'ask':>14} "
                 f"{'age':>7}  {'1m candle o/h/l/c':<44} {'24h %':>9}")
    keys = sorted(k for k in (k.decode()[8:] for k in client.scan_iter("md:book:*", count=500))
                  if k in feeds)
    for key in keys[:24]:
        ex, _, sym = key.partition(":")
        raw = client.hget(f"md:book:{key}", "data")
        if raw is None:
            continue
        b = orjson.loads(raw)
        now_ms = time.time() * 1000  # read after the book: the lag query above takes a second
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
    import logging

    logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per connection
    from connectors.simulator import start_demo
    from marketdata import stack

    cfg: CommonConfig = from_env(CommonConfig)
    state = Path(os.environ.get("MD_STATE_DIR", ROOT / ".state"))
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", api_port)) == 0:
            _say(f"port {api_port} is taken (another demo or API?): stop it, or pass --api-port")
            return 2
    _say("starting the local stack (broker + Redis)")
    stack.up()
    _say(f"starting the exchange simulator (recorded sessions, looped at {speed:g}x)")
    sim = start_demo(speed=speed)
    feeds = sim.feeds()
    exchanges = {f.partition(":")[0] for f in feeds}
    _say(f"{len(exchanges)} exchanges, {len(feeds)} feeds on {sim.address}")
    # A new session: the recordings replay with their own sequence numbers, which Redis (never
    # moving a reader backwards) would refuse after an earlier run. Start these symbols afresh.
    client = redis.Redis.from_url(cfg.redis_url)
    stale = [k for f in feeds for k in client.scan_iter(f"md:*:{f}*", count=1000)]
    if stale:
        client.delete(*stale)
    # Topics of this run's own: nothing produced while a flow starts is missed, and no flow has
    # to skip through earlier runs' events (the local broker ignores start timestamps).
    from connectors.kafka import delete_topics, ensure_topics

    prefix = f"{cfg.topic_prefix}demo-{int(time.time())}."
    topics = [prefix + t for t in ("book", "trades", "deadletter")]
    ensure_topics(cfg.kafka_bootstrap, topics)
    _say(f"this run's topics: {', '.join(topics)} (deleted at the "
         "end; `marketdata doctor` finds them through the flows' heartbeats)")
    cfg = from_env(CommonConfig, topic_prefix=prefix)
    env = dict(os.environ)
    env.update({"MD_KAFKA_BOOTSTRAP": cfg.kafka_bootstrap, "MD_REDIS_URL": cfg.redis_url,
                "MD_TOPIC_PREFIX": prefix, "MD_START": "earliest", "PYTHONUNBUFFERED": "1",
                **sim.ingest_env()})
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def shutdown(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    old = signal.signal(signal.SIGTERM, shutdown)
    old_hup = signal.signal(signal.SIGHUP, shutdown)  # a closed terminal stops it cleanly too
    try:
        for i, flow in enumerate(FLOWS):
            _say(f"starting the {flow} flow (python -m bytewax.run dataflows.{flow}:flow)")
            procs[flow] = _spawn(flow, [sys.executable, "-m", "bytewax.run",
                                        f"dataflows.{flow}:flow"],
                                 {**env, "MD_GROUP_ID": f"marketdata-demo-{flow}",
                                  "MD_METRICS_PORT": str(9100 + i),
                                  # Bytewax's own metrics: one free port per process
                                  "BYTEWAX_DATAFLOW_API_ENABLED": "1",
                                  "BYTEWAX_DATAFLOW_API_PORT": str(_free_port())}, logs)
        api = f"http://127.0.0.1:{api_port}/?ex=binance&sym=ETH-USDT"
        _say(f"starting the API: {api}")
        procs["api"] = _spawn("api", [sys.executable, "-m", "marketdata.cli", "api",
                                      "--port", str(api_port)], env, logs)
        t0 = last = time.time()
        full = 0.0  # when the whole view was last printed (not on a terminal: every 10 s)
        produced, rate = _produced(cfg), 0.0
        while not stopping and (duration is None or time.time() - t0 < duration):
            for name, p in procs.items():
                if p.poll() is not None:
                    _say(f"{name} exited with {p.returncode}; see {logs / (name + '.log')}")
                    return 1
            if view and time.time() - last >= 1:
                now, count = time.time(), _produced(cfg)
                rate, produced, last = (count - produced) / (now - last), count, now
                lines = _status_lines(client, t0, rate, api, set(feeds), procs, cfg)
                if sys.stdout.isatty():
                    sys.stdout.write("\033[H\033[2J" + "\n".join(lines) + "\n(Ctrl-C to stop)\n")
                elif now - full >= 10:  # a log file: the whole view now and then
                    sys.stdout.write("\n".join(lines) + "\n\n")
                    full = now
                else:
                    sys.stdout.write("\n".join(lines[:2]) + "\n")
                sys.stdout.flush()
            time.sleep(0.2)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGHUP, old_hup)
        _say("stopping the demo")
        for p in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        sim.stop()
        try:  # this run's topics: each run makes its own, and in-memory Tansu keeps them all
            delete_topics(cfg.kafka_bootstrap, topics)
        except RuntimeError as e:
            _say(f"could not delete this run's topics: {e}")
        _say("stopped (the broker and Redis stay up: `marketdata stack down` stops them)")


def _cmd(args: argparse.Namespace) -> int:
    return run_demo(args.duration, args.speed, args.api_port, view=not args.no_view)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="run the whole pipeline on recorded sessions",
                              description=__doc__.splitlines()[0].replace("``", ""))
    p.add_argument("--duration", type=float, default=None,
                   help="stop after this many seconds (default: until Ctrl-C)")
    # string defaults: argparse converts them at parse time, so a bad MD_* value is this
    # command's one-line error, not a traceback of every command (`marketdata --help` included)
    p.add_argument("--speed", type=float, default=os.environ.get("MD_DEMO_SPEED") or "1",
                   help="replay speed factor (MD_DEMO_SPEED, default 1: real time)")
    p.add_argument("--api-port", type=port, default=os.environ.get("MD_API_PORT") or "8000",
                   dest="api_port", help="API and dashboard port (MD_API_PORT, default 8000)")
    p.add_argument("--no-view", action="store_true", help="no live terminal view")
    p.set_defaults(func=_cmd)
