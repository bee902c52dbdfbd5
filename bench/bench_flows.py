"""The flows end to end, Kafka → Bytewax → Redis, with baselines measured in the same run.

    .venv/bin/marketdata stack up && .venv/bin/python -m bench.bench_flows [--quick]
    .venv/bin/python -m bench.bench_flows --only candles,ticker --repeat 3 --against ../before
    .venv/bin/python -m bench.bench_flows --latency --repeat 3 [--rate 10000]

1. Throughput, one process, `python -m bytewax.run dataflows.X:flow` with MD_STOP_AT_END=1 over a
   fresh topic: wall time of the run minus that of the same command over an empty topic (start-up
   and shutdown), so the number is the sustained rate. The trades are the recording three times
   over (915,900 trades, 50 symbols): more than the source's prefetch queue holds, so the flows
   work through a backlog as after a restart. The same wiring with a state that does nothing
   (bench/null_flow.py) is the ceiling of any trade flow here.
2. Latency at a fixed offered load (10,000 events/s), throttle off: for every event, produce-time
   to the pub/sub delivery of the first record that includes it (a record conflated into a later
   one counts at the later one's time), p50/p99; and the same load through the broker alone (a
   bare consumer per partition), the floor no flow can beat.
3. One vs two processes (`-i/-a`) for the order book flow: the scaling ratio on this machine.
4. Baselines, in-process (bytewax.testing.run_main, no Kafka or Redis for either side): candles the
   way Bytewax's docs write them (`TumblingWindower` + `fold_window`, one per interval) and the
   ticker as `SlidingWindower(24h, 1m)` + `fold_window` (on a shorter input), against our flows.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from bisect import bisect_left
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import orjson
import redis

from bench.common import ROOT, eth_events, table
from connectors.kafka import delete_topics, ensure_topics, produce_lines
from dataflows.config import CommonConfig, from_env

PY = sys.executable
_NOISE_S = 0.05  # a run this little longer than an empty one measures noise, not throughput


def relabel(events: list[dict[str, Any]], n_symbols: int, kind: str, ex: str,
            copies: int = 1) -> list[bytes]:
    """The ``kind`` events of ``events`` once per symbol ``S000-USDT``...; trades ``copies`` times
    over, each copy later than the previous one and with its own ids: an input long enough to
    measure a flow working through a backlog (the source's prefetch queue full), not only a
    burst that fits in it."""
    evs = [e for e in events if e["type"] == kind]
    span = max(e["ts"] for e in evs) - min(e["ts"] for e in evs) + 60_000 if evs else 0
    out = []
    for k in range(copies if kind == "trade" else 1):
        for e in evs:
            if k:
                tid = e["id"]  # numbers keep rising, as exchanges' trade ids do
                e = {**e, "ts": e["ts"] + k * span, "rts": e["rts"] + k * span,
                     "id": str(int(tid) + k * 10**12) if tid.isdigit() else f"{tid}-{k}"}
            for i in range(n_symbols):
                out.append(orjson.dumps({**e, "ex": ex, "sym": f"S{i:03d}-USDT"}))
    return out


def _env(prefix: str, cfg: CommonConfig, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"MD_KAFKA_BOOTSTRAP": cfg.kafka_bootstrap, "MD_REDIS_URL": cfg.redis_url,
                "MD_TOPIC_PREFIX": prefix, "MD_START": "earliest", "MD_GROUP_ID": "b" + prefix,
                "MD_LOG_LEVEL": "WARNING"})
    env.update(extra)
    return env


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_flow(flow: str, env: dict[str, str], processes: int = 1, code: Path = ROOT) -> float:
    """Wall seconds of ``python -m bytewax.run dataflows.{flow}:flow`` from checkout ``code``
    (``bench.null_flow:flow`` for ``null``)."""
    addrs = ";".join(f"127.0.0.1:{_free_port()}" for _ in range(processes))
    module = "bench.null_flow" if flow == "null" else f"dataflows.{flow}"
    cmd = [PY, "-m", "bytewax.run", f"{module}:flow"]
    t = time.perf_counter()
    procs = [subprocess.Popen(cmd + (["-i", str(i), "-a", addrs] if processes > 1 else []),
                              cwd=code, env=env) for i in range(processes)]
    for p in procs:
        if p.wait(timeout=900) != 0:
            raise SystemExit(f"{flow} failed")
    return time.perf_counter() - t


def _forget(cfg: CommonConfig, ex: str) -> None:
    """Delete the Redis keys of exchange ``ex``: a repeated run must write, not find them."""
    r = redis.Redis.from_url(cfg.redis_url)
    keys = list(r.scan_iter(f"md:*:{ex}:*", count=10_000))
    for i in range(0, len(keys), 10_000):
        r.delete(*keys[i:i + 10_000])


def _expected(flow: str, lines: list[bytes]) -> dict[tuple[str, str], int]:
    """Per symbol, what Redis shows once ``flow`` read all of ``lines``: the book's last ``seq``,
    the ticker's trade count, the sum of the 1d candles' ``n``."""
    want: dict[tuple[str, str], int] = {}
    for e in map(orjson.loads, lines):
        k = (e["ex"], e["sym"])
        want[k] = max(want.get(k, 0), e["seq"]) if flow == "orderbook" else want.get(k, 0) + 1
    return want


def _check_complete(cfg: CommonConfig, flow: str, want: dict[tuple[str, str], int]) -> None:
    """Raise unless Redis shows ``want`` (:func:`_expected`): a flow that stopped early (at a
    wrong end of a partition, say) would otherwise pass for a fast one."""
    from connectors.redis import read_book, read_candles, read_ticker

    if flow == "null":  # writes nothing to check
        return
    r = redis.Redis.from_url(cfg.redis_url)
    for (ex, sym), n in want.items():
        if flow == "orderbook":
            rec = read_book(r, ex, sym)
            got = rec["seq"] if rec else 0
        elif flow == "ticker":
            rec = read_ticker(r, ex, sym)
            got = rec["count"] if rec else 0
        else:
            got = sum(c["n"] for c in read_candles(r, ex, sym, "1d"))
        if got != n:
            raise SystemExit(f"{flow}: {ex}:{sym} shows {got} in Redis, expected {n}: "
                             "the run did not read every message")


def throughput(cfg: CommonConfig, flow: str, topic: str, lines: list[bytes], units: int,
               processes: int = 1, repeat: int = 1, codes: tuple[Path, ...] = (ROOT,),
               **extra: str) -> list[tuple[float, float]]:
    """(items/s, units/s) sustained per checkout in ``codes``: the best of ``repeat`` runs minus
    the best empty run of the same command, the checkouts interleaved run by run (a shared
    machine's load then weighs on each alike). Every run is checked to have read everything."""
    prefix = f"b{uuid.uuid4().hex[:6]}."
    empty = f"e{uuid.uuid4().hex[:6]}."
    for p in (prefix, empty):
        ensure_topics(cfg.kafka_bootstrap, [p + t for t in ("book", "trades", "deadletter")], 4)
    produce_lines(cfg.kafka_bootstrap, prefix + topic, lines)
    ex = orjson.loads(lines[0])["ex"]
    want = _expected(flow, lines)
    base = {c: float("inf") for c in codes}
    took = dict(base)
    for _ in range(repeat):
        for c in codes:
            base[c] = min(base[c], run_flow(flow, _env(empty, cfg, MD_STOP_AT_END="1", **extra),
                                            processes, c))
            _forget(cfg, ex)
            took[c] = min(took[c], run_flow(flow, _env(prefix, cfg, MD_STOP_AT_END="1", **extra),
                                            processes, c))
            _check_complete(cfg, flow, want)
    _forget(cfg, ex)  # the made-up exchange's records would stay in Redis (doctor, API)
    delete_topics(cfg.kafka_bootstrap, [p + t for p in (prefix, empty)  # in-memory Tansu
                                        for t in ("book", "trades", "deadletter")])
    out = []
    for c in codes:
        net = took[c] - base[c]
        if net < _NOISE_S:  # within the start-up's noise (--quick inputs): no number to give
            out.append((float("nan"), float("nan")))
            continue
        out.append((len(lines) / net, units / net))
    return out


def _pace(rate: int, seconds: float, send: Callable[[int], None]) -> None:
    """Call ``send(i)`` ``rate`` times a second for ``seconds``."""
    t0 = time.time()
    for i in range(int(rate * seconds)):
        send(i)
        ahead = (i + 1) / rate - (time.time() - t0)
        if ahead > 0.002:
            time.sleep(ahead)  # pacing the offered load, not synchronisation


def _p50_p99(lat: list[float]) -> tuple[float, float]:
    if not lat:
        return float("nan"), float("nan")
    lat.sort()
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99)]


def latency(cfg: CommonConfig, flow: str, rate: int, seconds: float
            ) -> tuple[float, float, int, int]:
    """p50/p99 ms from produce to Redis visibility, over every event, at ``rate`` events/s.

    An event is visible when a record that includes it is published: the first book record with
    ``seq`` at or after the event's, the first 1m candle of its minute counting at least as many
    trades. Records that conflation folded into a later one count with that one's time, so the
    measure does not favour batching. Returns (p50, p99, events measured, records received).
    """
    from confluent_kafka import Producer

    prefix = f"l{uuid.uuid4().hex[:6]}."
    ex = f"lat{uuid.uuid4().hex[:4]}"
    ensure_topics(cfg.kafka_bootstrap, [prefix + t for t in ("book", "trades", "deadletter")], 4)
    env = _env(prefix, cfg, MD_EMIT_INTERVAL_MS="0", MD_INTERVALS="1m")
    proc = subprocess.Popen([PY, "-m", "bytewax.run", f"dataflows.{flow}:flow"], cwd=ROOT,
                            env=env)
    ps = redis.Redis.from_url(cfg.redis_url).pubsub()
    ps.psubscribe(f"md:*:{ex}:*")
    book = flow == "orderbook"
    # series (a symbol; a symbol's minute for candles) -> positions seen, arrival times
    seen: dict[Any, tuple[list[int], list[float]]] = {}
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            m = ps.get_message(timeout=0.1)
            if not m or m["type"] != "pmessage":
                continue
            now = time.time()
            rec = orjson.loads(m["data"])
            pos, times = seen.setdefault(rec["sym"] if book else (rec["sym"], rec["t"]), ([], []))
            p = rec["seq"] if book else rec["n"]
            if not pos or p > pos[-1]:
                pos.append(p)
                times.append(now)

    th = threading.Thread(target=listen, daemon=True)
    th.start()
    prod = Producer({"bootstrap.servers": cfg.kafka_bootstrap, "linger.ms": 1,
                     "enable.idempotence": True})
    syms = [f"L{i}-USDT" for i in range(10)]
    last: dict[Any, int] = {}  # series -> its newest position
    sent: list[tuple[Any, int, float]] = []
    topic = prefix + ("book" if book else "trades")

    def send(i: int) -> None:
        sym = syms[i % len(syms)]
        now_ms = int(time.time() * 1000)
        series = sym if book else (sym, now_ms // 60000 * 60000)
        p = last[series] = last.get(series, 0) + 1
        if book:
            ev = {"type": "book", "ex": ex, "sym": sym, "ts": now_ms, "rts": now_ms,
                  "action": "snapshot" if p == 1 else "update", "seq": p,
                  "bids": [[f"100.{p % 100:02d}", "1.5"]], "asks": [["200", "1"]]}
            if p > 1:
                ev["prev_seq"] = p - 1
        else:
            ev = {"type": "trade", "ex": ex, "sym": sym, "ts": now_ms, "rts": now_ms,
                  "id": str(i), "px": "100.5", "qty": "0.25", "side": "buy"}
        sent.append((series, p, time.time()))
        prod.produce(topic, orjson.dumps(ev), f"{ex}:{sym}")
        prod.poll(0)

    _pace(rate, seconds, send)
    prod.flush()
    deadline = time.time() + 10
    while time.time() < deadline and any(not seen.get(k) or seen[k][0][-1] < p
                                         for k, p in list(last.items())):
        time.sleep(0.05)
    stop.set()
    th.join()
    proc.kill()
    proc.wait()
    lat = []
    for series, p, t in sent[rate:]:  # the first second is warm-up (imports, assignment)
        pos, times = seen.get(series, ([], []))
        j = bisect_left(pos, p)
        lat.append((times[j] - t) * 1000 if j < len(pos) else float("inf"))
    return (*_p50_p99(lat), len(lat), sum(len(v[0]) for v in seen.values()))


def broker_floor(cfg: CommonConfig, rate: int, seconds: float) -> tuple[float, float, int]:
    """The same load through the broker alone: produce -> a consumer per partition (as the
    flows' source has), with the same fetch settings, each in a thread blocked on its queue (it
    wakes the moment a message lands, where a flow's source polls). No flow can beat it."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from connectors.kafka import FETCH_DEFAULTS

    topic = f"l{uuid.uuid4().hex[:6]}.floor"
    ensure_topics(cfg.kafka_bootstrap, [topic], 4)
    lat: list[float] = []
    stop = threading.Event()

    def consume(part: int) -> None:
        c = Consumer({"bootstrap.servers": cfg.kafka_bootstrap, "group.id": "md-floor",
                      "enable.auto.commit": False, **FETCH_DEFAULTS})
        c.assign([TopicPartition(topic, part, 0)])
        while not stop.is_set():
            first = c.poll(0.1)  # returns on the first message (consume() waits for all 5,000)
            if first is None:
                continue
            msgs = [first, *c.consume(5000, 0)]
            now = time.time()
            lat.extend((now - float(cast(bytes, m.value()))) * 1000 for m in msgs
                       if m.error() is None)
        c.close()

    threads = [threading.Thread(target=consume, args=(p,), daemon=True) for p in range(4)]
    for th in threads:
        th.start()
    prod = Producer({"bootstrap.servers": cfg.kafka_bootstrap, "linger.ms": 1,
                     "enable.idempotence": True})

    def send(i: int) -> None:
        prod.produce(topic, repr(time.time()).encode(), f"k{i % 10}")
        prod.poll(0)

    _pace(rate, seconds, send)
    prod.flush()
    total = int(rate * seconds)
    deadline = time.time() + 10
    while time.time() < deadline and len(lat) < total:
        time.sleep(0.05)
    stop.set()
    for th in threads:
        th.join()
    got = lat[rate:]
    return (*_p50_p99(got), len(got))


# -- in-process baselines ----------------------------------------------------------------------
def _candle_fold(acc: Any, t: dict[str, Any]) -> Any:
    px, qty = Decimal(t["px"]), Decimal(t["qty"])
    if acc is None:
        return [px, px, px, px, qty, px * qty, 1]
    acc[1] = max(acc[1], px)
    acc[2] = min(acc[2], px)
    acc[3] = px
    acc[4] += qty
    acc[5] += px * qty
    acc[6] += 1
    return acc


def _merge(a: Any, b: Any) -> Any:
    return a if b is None else b


def baseline(lines: list[bytes], windowers: dict[str, Any], wait_s: int) -> float:
    """Trades/s of the computation as Bytewax's docs write it: ``EventClock`` and one
    ``fold_window`` per windower over the decoded trades, keyed by symbol."""
    import bytewax.operators as op
    import bytewax.operators.windowing as win
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    def ts(t: dict[str, Any]) -> datetime:
        return datetime.fromtimestamp(t["ts"] / 1000, tz=UTC)

    flow = Dataflow("baseline")
    s = op.input("in", flow, TestingSource(lines, batch_size=1000))
    trades = op.key_on("key", op.map("decode", s, orjson.loads),
                       lambda t: f"{t['ex']}:{t['sym']}")
    clock = win.EventClock(ts, wait_for_system_duration=timedelta(seconds=wait_s),
                           to_system_utc=lambda dt: None)
    out: list[Any] = []
    for name, windower in windowers.items():
        w = win.fold_window(name, trades, clock, windower, lambda: None, _candle_fold, _merge)
        op.output(f"out_{name}", w.down, TestingSink(out))
    t = time.perf_counter()
    run_main(flow)
    return len(lines) / (time.perf_counter() - t)


def baseline_candles(lines: list[bytes]) -> float:
    import bytewax.operators.windowing as win

    align = datetime(2024, 1, 1, tzinfo=UTC)
    return baseline(lines, {f"c{iv}": win.TumblingWindower(timedelta(minutes=iv), align)
                            for iv in (1, 5, 15, 60, 240, 1440)}, wait_s=2)


def baseline_ticker(lines: list[bytes]) -> float:
    import bytewax.operators.windowing as win

    return baseline(lines, {"t": win.SlidingWindower(timedelta(hours=24), timedelta(minutes=1),
                                                     datetime(2024, 1, 1, tzinfo=UTC))},
                    wait_s=0)


def ours_inprocess(flow_name: str, lines: list[bytes]) -> float:
    from bytewax.testing import TestingSource, run_main

    from connectors.files import DiscardSink
    from dataflows import candles, ticker
    from dataflows.common import build_flow
    from dataflows.config import CandleConfig, TickerConfig
    from operators.events import Trade

    msgs = [(orjson.loads(x)["ex"].encode() + b":" + orjson.loads(x)["sym"].encode(), x)
            for x in lines]
    make = (candles.state_factory(CandleConfig()) if flow_name == "candles"
            else ticker.state_factory(TickerConfig()))
    flow = build_flow(flow_name, TestingSource(msgs, batch_size=1000), Trade, make,
                      DiscardSink(), DiscardSink(), live=False)
    t = time.perf_counter()
    run_main(flow)
    return len(lines) / (time.perf_counter() - t)


def latency_table(cfg: CommonConfig, seconds: float, repeat: int, rate: int = 10_000) -> None:
    """Each flow and the broker floor, interleaved, ``repeat`` rounds (the tail is noisy)."""
    rows: list[list[Any]] = []
    for _ in range(repeat):
        for flow in ("orderbook", "candles"):
            p50, p99, n, recs = latency(cfg, flow, rate, seconds)
            rows.append([flow, f"{p50:.1f}", f"{p99:.1f}", f"{n:,} ({recs:,} records)"])
        p50, p99, n = broker_floor(cfg, rate, seconds)
        rows.append(["broker alone (the floor)", f"{p50:.1f}", f"{p99:.1f}", f"{n:,}"])
    print(table(f"Latency at {rate:,} events/s: produce -> visible in Redis, every event, "
                "throttle off", ["flow", "p50 ms", "p99 ms", "events measured"], rows))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller inputs (a smoke run)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="throughput: best of N runs (and of N empty runs)")
    ap.add_argument("--only", default="",
                    help="throughput of these flows only, e.g. candles,ticker (no other table)")
    ap.add_argument("--latency", action="store_true",
                    help="the latency table only (--repeat N: N interleaved rounds)")
    ap.add_argument("--rate", type=int, default=10_000,
                    help="--latency: offered events/s (default 10,000, the goal's load; lower "
                         "it where a flow cannot sustain that, or the table measures a queue)")
    ap.add_argument("--against", type=Path, metavar="DIR",
                    help="also run the flows from checkout DIR (e.g. a `git worktree` of an "
                         "earlier commit), interleaved with this one: before/after in one run")
    args = ap.parse_args()
    cfg = from_env(CommonConfig)
    events = eth_events()
    n_book = 4 if args.quick else 20
    n_trade = 10 if args.quick else 50
    book_lines = relabel(events, n_book, "book", f"bb{uuid.uuid4().hex[:4]}")
    changes = sum(len(e.get("bids", [])) + len(e.get("asks", [])) for e in events
                  if e["type"] == "book") * n_book
    copies = 1 if args.quick else 3
    trade_lines = relabel(events, n_trade, "trade", f"bt{uuid.uuid4().hex[:4]}", copies)
    only = set(filter(None, args.only.split(",")))
    codes = (ROOT,) if args.against is None else (ROOT, args.against.resolve())
    tag = [""] if args.against is None else ["", f" [{args.against}]"]

    if args.latency:
        latency_table(cfg, 3 if args.quick else 8, args.repeat, args.rate)
        return 0
    rows = []
    if not only or "orderbook" in only:
        one = throughput(cfg, "orderbook", "book", book_lines, changes, repeat=args.repeat,
                         codes=codes)
        two = throughput(cfg, "orderbook", "book", book_lines, changes, processes=2,
                         repeat=args.repeat, codes=codes)
        for t, (ev_s, lv_s), (ev2, lv2) in zip(tag, one, two, strict=True):
            rows.append([f"orderbook, 1 process{t}", f"{len(book_lines):,} book events", ev_s,
                         f"{lv_s:,.0f} level changes/s"])
            rows.append([f"orderbook, 2 processes{t}", f"{len(book_lines):,} book events", ev2,
                         "within start-up noise: no number" if math.isnan(ev2 / ev_s) else
                         f"{lv2:,.0f} level changes/s ({ev2 / ev_s:.2f}x one process)"])
    for flow in ("candles", "ticker"):
        if only and flow not in only:
            continue
        res = throughput(cfg, flow, "trades", trade_lines, 0, repeat=args.repeat, codes=codes)
        for t, (tr, _) in zip(tag, res, strict=True):
            note = "" if t or len(res) == 1 else f"{tr / res[1][0]:.2f}x{tag[1]}"
            rows.append([f"{flow}, 1 process{t}", f"{len(trade_lines):,} trades", tr, note])
    if not only or only & {"candles", "ticker"}:
        (null, *_) = throughput(cfg, "null", "trades", trade_lines, 0, repeat=args.repeat)
        rows.append(["trade flow, state doing nothing", f"{len(trade_lines):,} trades", null[0],
                     "Kafka + Bytewax + decoding: bench/null_flow.py"])
    print(table("Kafka -> flow -> Redis, sustained (run minus an empty run)",
                ["flow", "input", "events/s", "notes"], rows))
    if only:
        return 0

    latency_table(cfg, 3 if args.quick else 8, args.repeat)

    rows = []
    once = trade_lines[: len(trade_lines) // copies]  # the Bytewax windows are slow: one copy
    short = once[: len(once) // (10 if args.quick else 25)]
    ours_c, base_c = ours_inprocess("candles", once), baseline_candles(once)
    rows.append(["candles, 6 intervals", f"{len(once):,}", ours_c, base_c,
                 f"{ours_c / base_c:.1f}x"])
    ours_t, base_t = ours_inprocess("ticker", once), baseline_ticker(short)
    rows.append(["ticker 24h (baseline on the first " f"{len(short):,})", f"{len(once):,}",
                 ours_t, base_t, f"{ours_t / base_t:.0f}x"])
    print(table("In-process (run_main, no Kafka/Redis): ours vs Bytewax windowing, trades/s",
                ["computation", "trades", "ours", "bytewax windows", "ratio"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
