"""``marketdata``: one command line for the whole pipeline (see ``marketdata --help``)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

from dataflows import config as cfgmod
from recovery.stores import FLOWS

__all__ = ["main"]


def _flow_config(flow: str, args: argparse.Namespace) -> Any:
    cls = {"orderbook": cfgmod.BookConfig, "candles": cfgmod.CandleConfig,
           "ticker": cfgmod.TickerConfig}[flow]
    names = {f.name for f in dataclasses.fields(cls)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    if isinstance(overrides.get("intervals"), str):
        overrides["intervals"] = [s.strip() for s in overrides["intervals"].split(",") if s]
    return cfgmod.from_env(cls, **overrides)


def _replay_builder(flow: str) -> Callable[..., Any]:
    replay: Callable[..., Any] = importlib.import_module(f"dataflows.{flow}").replay
    return replay


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def cmd_replay(args: argparse.Namespace) -> int:
    from bytewax.testing import run_main

    from connectors import files
    from dataflows import metrics

    try:
        if args.input != "-":  # standard input is read once, by the flow
            files.open_lines(args.input).close()
    except OSError as e:
        print(f"marketdata replay: cannot read {args.input}: {e.strerror or e}", file=sys.stderr)
        return 2
    for path in (args.output, args.deadletters):
        if path and path != "-":
            if args.input != "-" and _same_file(path, args.input):
                print(f"marketdata replay: {path} is the input: writing it would destroy it",
                      file=sys.stderr)
                return 2
            try:
                open(path, "ab").close()  # the sinks truncate it; fail here, in one line
            except OSError as e:
                print(f"marketdata replay: cannot write {path}: {e.strerror or e}",
                      file=sys.stderr)
                return 2
    files.READ_ERRORS.clear()
    files.BROKEN_PIPES.clear()
    cfg = _flow_config(args.flow, args)
    flow = _replay_builder(args.flow)(cfg, args.input, args.output, args.deadletters)
    def counts() -> tuple[float, dict[str, float]]:  # process-wide counters: take the change
        return (metrics.EVENTS_IN.labels(args.flow)._value.get(),
                {t: metrics.RECORDS_OUT.labels(args.flow, t)._value.get()
                 for t in ("book", "candle", "ticker", "deadletter")})

    started = time.perf_counter()
    in0, out0 = counts()
    src = "standard input" if args.input == "-" else args.input
    dst = "standard output" if args.output == "-" else args.output
    print(f"replaying {src} through {args.flow} -> {dst}", file=sys.stderr)
    run_main(flow, epoch_interval=None)
    took = time.perf_counter() - started
    if files.READ_ERRORS:  # what was read went through; say where the input broke off
        print(f"marketdata replay: cannot read {src} to its end: {files.READ_ERRORS[0]}",
              file=sys.stderr)
        return 2
    if files.BROKEN_PIPES:  # the reader went away (`| head`): stop quietly, as Unix tools do
        return 0
    in1, out1 = counts()
    n_in, out = in1 - in0, {t: out1[t] - out0[t] for t in out1}
    emitted = sum(v for t, v in out.items() if t != "deadletter")
    print(f"done in {took:.2f}s: {n_in:.0f} events in, {emitted:.0f} records out, "
          f"{out['deadletter']:.0f} dead letters"
          + (f" (see {args.deadletters})" if args.deadletters and out["deadletter"] else ""),
          file=sys.stderr)
    if n_in and not emitted and out["deadletter"] >= n_in:
        print("marketdata replay: every line was a dead letter: is the input canonical events? "
              "(a raw exchange recording needs `marketdata normalize` first; --deadletters FILE "
              "shows the reasons)", file=sys.stderr)
        return 1  # nothing usable came out: a script or a backfill must not go on as if it had
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from dataflows.ingest import IngestConfig

    configs = [(flow, _flow_config(flow, argparse.Namespace())) for flow in FLOWS]
    for flow, cfg in [*configs, ("ingest", cfgmod.from_env(IngestConfig))]:
        print(f"[{flow}]  ({type(cfg).__name__})")
        rows = cfgmod.describe(cfg)
        wide = max(len(name) for name, _, _ in rows)
        for name, env, value in rows:
            note = (f"  (empty: marketdata-{flow})" if name == "group_id" and not value
                    and flow in FLOWS else "")
            print(f"  {name:<{wide}} {env:<{wide + 3}} {value!r}{note}")
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    """Canonical events from a file into Kafka, for a live backfill: book events to the book
    topic, trades to the trades topic, keyed ``ex:SYM`` as ingestion writes them."""
    from connectors import files
    from connectors.kafka import KafkaSource, produce_lines

    cfg = cfgmod.from_env(cfgmod.CommonConfig)
    topics = {"book": cfg.topic("book"), "trade": cfg.topic("trades")}
    try:  # both topics must exist (a mistyped MD_TOPIC_PREFIX would make new ones)
        KafkaSource(cfg.kafka_bootstrap, list(topics.values()), fail_after_s=10).list_parts()
    except RuntimeError as e:
        print(f"marketdata produce: {e}", file=sys.stderr)
        return 2
    lines: dict[Any, list[bytes]] = {"book": [], "trade": []}
    other = 0
    try:
        with files.open_lines(args.input) as fh:
            for line in fh:
                line = line.rstrip(b"\r\n")
                if not line.strip():
                    continue
                key, kind = files.event_key_and_type(line)
                if key is None or kind not in lines:
                    other += 1  # a flow would dead-letter it: say so, do not send it
                    continue
                lines[kind].append(line)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        print(f"marketdata produce: cannot read {args.input}: {e}", file=sys.stderr)
        return 2
    for kind, topic in topics.items():
        if lines[kind]:
            n = produce_lines(cfg.kafka_bootstrap, topic, lines[kind])
            print(f"produced {n:,} {kind} events to {topic} (keyed ex:SYM)")
    if other:
        print(f"marketdata produce: {other:,} lines are not book or trade events with ex and "
              "sym: not produced", file=sys.stderr)
    return 0 if lines["book"] or lines["trade"] else 1


BENCHES = {"book": "bench.bench_book", "aggregates": "bench.bench_aggregates",
           "decode": "bench.bench_decode",
           "flows": "bench.bench_flows", "normalize": "bench.bench_normalize",
           "ingest": "bench.bench_ingest", "api": "bench.bench_api",
           "recovery": "bench.bench_recovery"}


def cmd_bench(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    # bench/ is not installed: it runs from the checkout (python -m from its root)
    root = Path(__file__).resolve().parents[1]
    names = list(BENCHES) if args.name == "all" else [args.name]
    rc = 0
    for name in names:
        module = BENCHES[name]
        if not (root / (module.replace(".", "/") + ".py")).is_file():
            print(f"(no {module} in {root})", file=sys.stderr)
            rc = 1
            continue
        print(f"==> {name}: python -m {module} {' '.join(args.args)}", file=sys.stderr,
              flush=True)
        rc |= subprocess.call([sys.executable, "-m", module, *args.args], cwd=root)
    return rc


def _add_replay(sub: Any) -> None:
    p = sub.add_parser(
        "replay", help="run a flow over a file of canonical events (deterministic)",
        description="Run a flow over canonical events from a file (one JSON object a line, in file "
        "order; .gz allowed) instead of Kafka, writing what it emits as JSON lines instead of "
        "Redis. Timers and watermarks follow event time; open windows are flushed at the end.")
    p.add_argument("flow", choices=FLOWS)
    p.add_argument("--input", required=True,
                   help="events.jsonl or events.jsonl.gz ('-' for standard input)")
    p.add_argument("--output", required=True, help="out.jsonl ('-' for standard output)")
    p.add_argument("--deadletters", help="write rejected events here (JSON lines)")
    g = p.add_argument_group("flow settings (default: MD_* variables, then built-in defaults)")
    g.add_argument("--depth", type=int, help="order book: levels per side (20)")
    g.add_argument("--emit-interval-ms", type=int, dest="emit_interval_ms",
                   help="event-time throttle per symbol (book 100, candles/ticker 1000)")
    g.add_argument("--max-levels", type=int, dest="max_levels",
                   help="order book: cap on stored levels per side (0: none)")
    g.add_argument("--grouping", help="book: price bucket, e.g. 0.5 or BTC-USDT=10,ETH-USDT=1")
    g.add_argument("--intervals", help="candles: e.g. 1m,5m,15m,1h,4h,1d")
    g.add_argument("--lateness-ms", type=int, dest="lateness_ms", help="candles: allowed lateness")
    g.add_argument("--no-fill", dest="fill_gaps", action="store_const", const=False,
                   help="candles: skip intervals without trades instead of filling them flat")
    p.set_defaults(func=cmd_replay)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("marketdata")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marketdata",
        description="Real-time crypto market data: exchange feeds -> Kafka -> Bytewax order "
        "books, candles and tickers -> Redis. Flows themselves run with "
        "`python -m bytewax.run dataflows.X:flow`.")
    parser.add_argument("--log-level", default=None,
                        help="DEBUG, INFO, WARNING, ERROR (default MD_LOG_LEVEL or INFO)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_replay(sub)
    pb = sub.add_parser("bench", help="run the benchmarks (bench/), printing tables",
                        description="Run benchmarks; each prints its numbers beside a baseline "
                        "measured in the same run. Needs `marketdata stack up` for flows/api.")
    pb.add_argument("name", nargs="?", default="all", choices=["all", *BENCHES])
    pb.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark")
    pb.set_defaults(func=cmd_bench)
    pc = sub.add_parser("config", help="print the effective configuration of every flow",
                        description="Print each flow's settings with their MD_* variable and "
                        "value (MD_* variables, else the defaults); refuse values a flow cannot "
                        "use.")
    pc.set_defaults(func=cmd_config)
    pp = sub.add_parser("produce", help="put a file of canonical events into Kafka (a backfill)",
                        description="Produce canonical events (one JSON object a line, .gz or - "
                        "for standard input) to MD_TOPIC_PREFIX's book and trades topics, keyed "
                        "ex:SYM as ingestion writes them, with an idempotent producer; then run "
                        "the flows with MD_STOP_AT_END=1. Lines that are not book or trade "
                        "events are counted and not sent.")
    pp.add_argument("--input", required=True, help="events.jsonl[.gz], or - for standard input")
    pp.set_defaults(func=cmd_produce)
    for module in ("marketdata.stack", "connectors.exchanges.normalize", "marketdata.demo",
                   "api.cli", "recovery.cli", "marketdata.doctor", "dataflows.ingest",
                   "connectors.simulator.cli"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError:  # pragma: no cover - a part not built yet
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = args.log_level or cfgmod.from_env(cfgmod.CommonConfig).log_level
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `marketdata config | head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
