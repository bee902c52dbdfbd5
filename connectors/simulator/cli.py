"""``marketdata simulate``: run the exchange simulator in the foreground.

Synthetic (default): ``--exchanges binance,okx --symbols BTC-USDT,ETH-USDT --rate 50``.
Recorded: ``--demo [--speed 10]`` replays the sessions of ``shared/data`` looped. Faults by
probability: ``--faults drop=0.01,duplicate=0.01`` (``--stall-seconds``); on command:
``curl 'http://127.0.0.1:PORT/_sim/fault?ex=binance&kind=drop'``. It prints the ``MD_*`` settings
that point ``marketdata ingest`` at it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from typing import Any

from connectors import simulator
from connectors.simulator.server import FAULTS
from connectors.simulator.venues import VARIANTS

__all__ = ["register", "run"]


def _list(text: str | None) -> list[str] | None:
    return [p.strip() for p in text.split(",") if p.strip()] if text else None


def parse_faults(text: str) -> dict[str, float]:
    """``drop=0.01,stall=0.001`` -> ``{"drop": 0.01, "stall": 0.001}`` (kinds checked)."""
    out: dict[str, float] = {}
    for part in _list(text) or []:
        kind, _, p = part.partition("=")
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(FAULTS)}")
        out[kind] = float(p or "0.01")
    return out


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("simulate", help="serve simulated exchange feeds on 127.0.0.1",
                              description=__doc__.splitlines()[0].replace("``", ""))
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port to serve on (default 8765)")
    p.add_argument("--exchanges", help=f"default: all ({', '.join(simulator.VENUES)}); also "
                   f"on request: {', '.join(VARIANTS)} (another protocol of an exchange above)")
    p.add_argument("--symbols", default="BTC-USDT,ETH-USDT", help="synthetic symbols")
    p.add_argument("--rate", type=float, default=50.0,
                   help="synthetic items/s per exchange (0: as fast as clients read)")
    p.add_argument("--seed", type=int, default=1, help="synthetic: random seed (default 1)")
    p.add_argument("--demo", action="store_true",
                   help="replay the recordings of shared/data, looped, instead of synthetic")
    p.add_argument("--speed", type=float, default=1.0,
                   help="--demo: 1 real time, 10 ten times faster, 0 as fast as possible")
    p.add_argument("--no-loop", dest="loop", action="store_false", help="--demo: play once")
    p.add_argument("--faults", default="", help="probabilities, e.g. drop=0.01,duplicate=0.01")
    p.add_argument("--stall-seconds", type=float, default=2.0,
                   help="how long an injected stall lasts (default 2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        if args.speed < 0 or args.rate < 0 or args.stall_seconds < 0:
            raise ValueError("--speed, --rate and --stall-seconds must not be negative")
        probs = parse_faults(args.faults)
        exchanges = _list(args.exchanges)
        if args.demo:
            sim = simulator.start_demo(exchanges or list(simulator.DEMO_RECORDINGS),
                                       speed=args.speed, loop=args.loop, host=args.host,
                                       port=args.port)
        else:
            sim = simulator.start(exchanges or list(simulator.VENUES),
                                  _list(args.symbols) or ["BTC-USDT"], rate=args.rate,
                                  seed=args.seed, host=args.host, port=args.port)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"simulate: {e}", file=sys.stderr)
        return 2
    if probs:
        sim.set_probs(None, seconds=args.stall_seconds, **probs)
    env = sim.ingest_env()
    print(f"simulator on {sim.address}: {len(sim.feeds())} feeds; point ingestion at it with:",
          file=sys.stderr)
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    sys.stdout.flush()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with contextlib.suppress(KeyboardInterrupt):
        done.wait()
    sim.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m connectors.simulator.cli [options]``."""
    parser = argparse.ArgumentParser(prog="marketdata")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["simulate", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
