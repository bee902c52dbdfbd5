"""Operator-level micro benchmark: trades/s through CandleState (6 intervals) and TickerState.

Input: the ETH trades of the canonical recording, repeated back to back (each copy shifted by a
whole number of minutes past the previous one, ids made unique) to about 300k trades. Decoding is
not timed: this measures the operators alone, the ceiling for the candle and ticker flows. Each is
fed one ``Trade`` at a time (``on_trade``) and as the flows feed it: ``TradeBatch`` groups of
``--group`` trades (``on_trades``, the same records).

    .venv/bin/python bench/bench_aggregates.py [--trades 300000] [--repeat 3] [--group 400]
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import pickle
import time
from collections.abc import Callable
from typing import Any

import orjson

from connectors.exchanges.recordings import data_dir
from operators.candles import CandleParams, CandleState
from operators.events import Trade, TradeBatch, decode_obj, decode_trades, encode, encode_trade
from operators.ticker import TickerParams, TickerState

DATA = data_dir()
ETH = DATA / "canonical" / "binance_ethusdt_20240808.events.jsonl.gz"
MINUTE = 60_000


def load_trades(target: int) -> list[Trade]:
    """The recording's trades, repeated and shifted in event time to about ``target`` trades."""
    with gzip.open(ETH, "rb") as f:
        base = [decode_obj(orjson.loads(line)) for line in f if b'"trade"' in line]
    trades = [t for t in base if isinstance(t, Trade)]
    t0 = min(t.ts for t in trades)
    span = max(t.ts for t in trades) - t0
    shift = (span // MINUTE + 1) * MINUTE
    out: list[Trade] = []
    rep = 0
    while len(out) < target:
        out.extend(dataclasses.replace(t, ts=t.ts + rep * shift, rts=t.rts + rep * shift,
                                       id=f"{t.id}.{rep}") for t in trades)
        rep += 1
    return out[:target]


def run_each(state: Any, items: list[Any], batched: bool = False) -> tuple[int, Any]:
    """``state.on_trade`` per trade (or ``on_trades`` per ``TradeBatch``); returns the records
    emitted and the state."""
    n = 0
    on = state.on_trades if batched else state.on_trade
    for item in items:
        n += len(on(item))
    return n + len(state.flush()), state


def batches(trades: list[Trade], size: int) -> list[TradeBatch]:
    """``trades`` in ``TradeBatch`` groups of ``size``, as the flows' ``decode_trades`` makes."""
    values = [encode(encode_trade(t)) for t in trades]
    out = []
    for i in range(0, len(values), size):
        b = decode_trades(values[i:i + size], trades[0].ex, trades[0].sym)
        assert b is not None
        out.append(b)
    return out


def run_both(trades: list[Trade]) -> tuple[int, Any]:
    c, k = CandleState(CandleParams()), TickerState(TickerParams())
    n = 0
    for t in trades:
        n += len(c.on_trade(t)) + len(k.on_trade(t))
    return n + len(c.flush()) + len(k.flush()), c


def best_of(fn: Callable[[list[Trade]], tuple[int, Any]], trades: list[Trade],
            repeat: int) -> tuple[float, int]:
    best = float("inf")
    records = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        records, _ = fn(trades)
        best = min(best, time.perf_counter() - t0)
    return best, records


def snapshot_cost(state: Any, trades: list[Trade]) -> tuple[int, float]:
    """Pickled size (bytes) and pickle+unpickle time (µs) of a state mid-stream."""
    for t in trades:
        state.on_trade(t)
    blob = pickle.dumps(state)
    t0 = time.perf_counter()
    for _ in range(200):
        pickle.loads(pickle.dumps(state))
    return len(blob), (time.perf_counter() - t0) / 200 * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trades", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--group", type=int, default=400, help="trades per TradeBatch")
    args = ap.parse_args()
    trades = load_trades(args.trades)
    hours = (trades[-1].ts - trades[0].ts) / 3_600_000
    print(f"{len(trades):,} trades, {hours:.1f} h of event time, best of {args.repeat}")
    print(f"{'operator':<28}{'seconds':>9}{'trades/s':>12}{'µs/trade':>10}{'records':>10}")
    groups = batches(trades, args.group)
    for name, fn in (("CandleState (6 intervals)",
                      lambda tr: run_each(CandleState(CandleParams()), tr)),
                     ("TickerState", lambda tr: run_each(TickerState(TickerParams()), tr)),
                     ("both, one pass", run_both),
                     (f"CandleState, on_trades/{args.group}",
                      lambda _: run_each(CandleState(CandleParams()), groups, batched=True)),
                     (f"TickerState, on_trades/{args.group}",
                      lambda _: run_each(TickerState(TickerParams()), groups, batched=True))):
        secs, records = best_of(fn, trades, args.repeat)
        print(f"{name:<28}{secs:>9.3f}{len(trades) / secs:>12,.0f}"
              f"{secs / len(trades) * 1e6:>10.2f}{records:>10,}")
    part = trades[: min(len(trades), 100_000)]
    for name, state in (("CandleState", CandleState(CandleParams())),
                        ("TickerState", TickerState(TickerParams()))):
        size, us = snapshot_cost(state, part)
        print(f"snapshot {name:<19} {size:>8,} bytes, pickle+unpickle {us:,.0f} µs "
              f"(after {len(part):,} trades)")


if __name__ == "__main__":
    main()
