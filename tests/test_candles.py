"""The candle operator against the brute-force Decimal reference, generated and real trades."""

from __future__ import annotations

import gzip
import itertools
import logging
import pickle
import random
import re
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.exchanges.recordings import data_dir
from operators import candles as candles_mod
from operators.candles import MINUTE, CandleParams, CandleState, parse_interval
from operators.events import Trade, TradeBatch, decode_obj, decode_trades, encode, encode_trade
from tests.reference import accept_candles, fold_candles, ref_candles, ref_minutes

DATA = data_dir()
ETH = DATA / "canonical" / "binance_ethusdt_20240808.events.jsonl.gz"
BASE = 1_723_161_600_000  # 2024-08-09 00:00:00 UTC
IVS = ("1m", "2m", "5m", "15m", "1h")
FIELDS = ("o", "h", "l", "c", "v", "q", "n")


def mk(ts: int, tid: int | str, px: str, qty: str, ex: str = "test",
       sym: str = "BTC-USDT") -> Trade:
    t = decode_obj({"type": "trade", "ex": ex, "sym": sym, "ts": ts, "rts": ts, "id": str(tid),
                    "px": px, "qty": qty, "side": "buy"})
    assert isinstance(t, Trade), t
    return t


# Equal values printed differently ("10.5" / "10.50") exercise the tie and formatting rules.
price = st.integers(min_value=5, max_value=15).flatmap(
    lambda n: st.sampled_from([f"{n}", f"{n}.0", f"{n}.5", f"{n}.50", f"{n}.125"]))
qty = st.tuples(st.integers(1, 5000), st.integers(0, 4)).map(
    lambda p: format(Decimal(p[0]).scaleb(-p[1]), "f"))
step = st.one_of(st.integers(0, 3_000), st.integers(0, 400_000))  # bursts and gaps (ms)


# Trade ids: mostly rising integers (the ticker's fast path), sometimes ids that are not the
# canonical decimal of an integer (a leading zero, letters) or far above the others.
ids = st.sampled_from(["{}"] * 6 + ["0{}", "a{}", "{}x", "9{}00000000000000", "{}0"])


@st.composite
def trade_lists(draw: st.DrawFn, max_size: int = 50) -> list[Trade]:
    """Trades in ts order (equal ts allowed), starting anywhere within a day."""
    steps = draw(st.lists(st.tuples(step, price, qty), min_size=1, max_size=max_size))
    ts = BASE + draw(st.integers(0, 86_400_000))
    out = []
    for i, (d, px, q) in enumerate(steps):
        ts += d
        out.append(mk(ts, draw(ids).format(1000 + i), px, q))
    return out


def run(state: CandleState, trades: list[Trade], flush: bool = True) -> list[tuple[int, dict]]:
    """Feed ``trades``; return ``(clock, record)`` pairs; flush emissions get clock ``None``."""
    out: list[tuple[Any, dict]] = []
    clock = None
    for t in trades:
        clock = t.ts if clock is None else max(clock, t.ts)
        out.extend((clock, r) for r in state.on_trade(t))
    if flush:
        out.extend((None, r) for r in state.flush())
    return out


def candles(recs: list[tuple[Any, dict]]) -> list[dict]:
    return [r for _, r in recs if r["type"] == "candle"]


def final(recs: list[tuple[Any, dict]]) -> dict[tuple[str, int], dict]:
    """The last record per (iv, t)."""
    return {(r["iv"], r["t"]): r for r in candles(recs)}


def reorder_within(trades: list[Trade], lateness: int, rnd: random.Random) -> list[Trade]:
    """An arrival order in which no trade is late: each trade arrives at ts + d(ts), d <= lateness.

    The delay depends on ``ts`` only, so trades with equal ``ts`` keep their relative order (the
    tie rule is arrival order, which no reordering may change).
    """
    delay: dict[int, int] = {}
    for t in trades:
        delay.setdefault(t.ts, rnd.randint(0, lateness))
    return sorted(trades, key=lambda t: t.ts + delay[t.ts])


def check_emission_rules(recs: list[tuple[Any, dict]], throttle: int) -> None:
    """Exactly one closed record per candle, last; updates at most once per throttle interval."""
    by_key: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in candles(recs):
        by_key[(r["iv"], r["t"])].append(r)
    for key, rs in by_key.items():
        assert [r["closed"] for r in rs].count(True) == 1, key
        assert rs[-1]["closed"], key
    times: dict[str, list[int]] = defaultdict(list)
    for clock, r in recs:
        if clock is not None and not r["closed"] and times[r["iv"]][-1:] != [clock]:
            times[r["iv"]].append(clock)
    for iv, ts in times.items():
        gaps = [b - a for a, b in itertools.pairwise(ts)]
        assert all(g >= max(throttle, 1) for g in gaps), (iv, gaps)


# -- properties -------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(trade_lists(), st.booleans(), st.sampled_from([0, 1000, 5000]))
def test_final_candles_equal_reference(trades: list[Trade], fill: bool, throttle: int) -> None:
    params = CandleParams(intervals=IVS, lateness_ms=2000, emit_interval_ms=throttle,
                          fill_gaps=fill)
    s = CandleState(params)
    recs = run(s, trades)
    assert final(recs) == ref_candles(trades, IVS, fill)
    check_emission_rules(recs, throttle)
    assert s.stats["trades"] == len(trades)
    assert s.stats["late"] == s.stats["duplicates"] == 0
    assert s.stats["emitted"] == len(recs)
    # every open 1m update is the reference candle of the trades of its minute seen so far
    s2 = CandleState(params)
    for k, t in enumerate(trades):
        for r in s2.on_trade(t):
            if r["iv"] == "1m" and not r["closed"]:
                mine = [x for x in trades[: k + 1] if r["t"] <= x.ts <= r["T"]]
                ref = ref_candles(mine, ("1m",), False)[("1m", r["t"])]
                assert {f: r[f] for f in FIELDS} == {f: ref[f] for f in FIELDS}


@settings(max_examples=150, deadline=None)
@given(trade_lists(), st.randoms(use_true_random=False), st.booleans())
def test_reordering_within_lateness_gives_same_candles(
    trades: list[Trade], rnd: random.Random, fill: bool
) -> None:
    lateness = 3000
    params = CandleParams(intervals=IVS, lateness_ms=lateness, fill_gaps=fill)
    shuffled = reorder_within(trades, lateness, rnd)
    s = CandleState(params)
    recs = run(s, shuffled)
    assert s.stats["late"] == 0
    assert final(recs) == final(run(CandleState(params), trades))
    assert final(recs) == ref_candles(trades, IVS, fill)
    check_emission_rules(recs, params.emit_interval_ms)


@settings(max_examples=150, deadline=None)
@given(trade_lists(), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
                               max_size=15))
def test_duplicates_change_nothing(trades: list[Trade], picks: list[tuple[int, int]]) -> None:
    params = CandleParams(intervals=IVS)
    stream = list(trades)
    for a, b in picks:  # a copy of some trade re-sent at some later position
        i = a % len(trades)
        pos = stream.index(trades[i]) + 1
        stream.insert(pos + b % (len(stream) - pos + 1), trades[i])
    s = CandleState(params)
    recs = run(s, stream)
    assert final(recs) == final(run(CandleState(params), trades))
    accepted, late, dups = accept_candles(stream, params.lateness_ms)
    assert accepted == trades
    assert (s.stats["duplicates"], s.stats["late"]) == (len(dups), len(late))
    assert s.stats["duplicates"] + s.stats["late"] == len(picks)
    dead = [r for _, r in recs if r["type"] == "deadletter"]
    assert len(dead) == len(late)
    assert all(d["reason"].startswith("late trade: ") for d in dead)


@settings(max_examples=150, deadline=None)
@given(trade_lists(), st.booleans())
def test_rollup_identity_and_flat_gaps(trades: list[Trade], fill: bool) -> None:
    params = CandleParams(intervals=IVS, fill_gaps=fill)
    fin = final(run(CandleState(params), trades))
    ones = {t: r for (iv, t), r in fin.items() if iv == "1m"}
    for (iv, t), r in fin.items():
        if iv == "1m":
            continue
        parts = [ones[m] for m in sorted(ones) if t <= m <= r["T"]]
        assert parts, (iv, t)
        agg = fold_candles(parts)
        assert (r["o"], r["h"], r["l"], r["c"], r["n"]) == (
            agg["o"], agg["h"], agg["l"], agg["c"], agg["n"])
        assert Decimal(r["v"]) == agg["v"] and Decimal(r["q"]) == agg["q"]
    minutes = sorted(ones)
    if fill:
        assert minutes == list(range(minutes[0], minutes[-1] + MINUTE, MINUTE))
    for prev, m in itertools.pairwise(minutes):
        r = ones[m]
        if r["n"] == 0:
            assert fill
            c = ones[prev]["c"]
            assert (r["o"], r["h"], r["l"], r["c"], r["v"], r["q"]) == (c, c, c, c, "0", "0")
    assert sum(r["n"] for r in ones.values()) == len(trades)


@settings(max_examples=100, deadline=None)
@given(trade_lists(), st.integers(0, 10**6))
def test_snapshot_restore_midstream(trades: list[Trade], cut: int) -> None:
    """A state pickled and restored anywhere continues exactly like the original."""
    params = CandleParams(intervals=IVS)
    k = cut % (len(trades) + 1)
    a = CandleState(params)
    first = run(a, trades[:k], flush=False)
    b = pickle.loads(pickle.dumps(a))
    rest_a = run(a, trades[k:])
    rest_b = run(b, trades[k:])
    assert rest_a == rest_b
    assert a.stats == b.stats
    assert final(first + rest_b) == ref_candles(trades, IVS)


# -- examples ---------------------------------------------------------------------------------
def test_late_trade_is_dead_lettered_with_reason() -> None:
    s = CandleState(CandleParams(intervals=("1m",)))
    s.on_trade(mk(BASE + 100_000, 1, "10", "1"))
    late = mk(BASE + 50_000, 2, "11", "1")
    out = s.on_trade(late)
    assert out == [{"type": "deadletter", "stage": "candles", "key": "test:BTC-USDT",
                    "reason": "late trade: ts 1723161650000 is behind the watermark "
                              "1723161698000 by 48000 ms",
                    "raw": orjson.dumps(encode_trade(late)).decode()}]
    assert s.stats["late"] == 1 and s.stats["trades"] == 1
    # one ms behind the watermark is late, exactly at it is accepted
    assert s.on_trade(mk(BASE + 97_999, 4, "12", "1"))[0]["type"] == "deadletter"
    assert s.on_trade(mk(BASE + 98_000, 3, "12", "1")) == []
    assert (s.stats["trades"], s.stats["late"]) == (2, 2)


def test_ties_follow_arrival_order() -> None:
    """Equal ts: open = first arrived, close = last arrived; equal prices: the first printed."""
    s = CandleState(CandleParams(intervals=("1m", "5m")))
    for i, px in enumerate(["10.50", "10.5", "9.0", "9.00", "10.500"]):
        s.on_trade(mk(BASE + 5, i, px, "1"))
    fin = {r["iv"]: r for r in s.flush()}
    for r in fin.values():
        assert (r["o"], r["h"], r["l"], r["c"], r["n"]) == ("10.50", "10.50", "9.0", "10.500", 5)


def test_duplicate_counted_once_and_old_duplicate_is_late() -> None:
    s = CandleState(CandleParams(intervals=("1m",), emit_interval_ms=0))
    t = mk(BASE + 1000, 1, "10", "1")
    s.on_trade(t)
    assert s.on_trade(t) == []
    assert s.stats["duplicates"] == 1
    s.on_trade(mk(BASE + 10_000, 2, "10", "1"))
    out = s.on_trade(t)  # re-sent after the watermark passed it: its id is no longer kept
    assert out[0]["type"] == "deadletter" and s.stats["late"] == 1
    wm = s.watermark
    assert wm is not None
    assert {k: ts for k, ts in s._ids.items() if ts >= wm} == {"2": BASE + 10_000}


def test_kept_ids_stay_bounded() -> None:
    """Ids the watermark passed are dropped in bulk: at most twice those that count, plus 64."""
    s = CandleState(CandleParams(intervals=("1m",)))
    for i in range(20_000):
        s.on_trade(mk(BASE + i * 50, i, "10", "1"))  # 20 trades/s: 40 ids within the lateness
        assert len(s._ids) <= 2 * 41 + 64 + 1


def test_live_advance_closes_on_time_and_fills_gaps() -> None:
    s = CandleState(CandleParams(intervals=("1m", "5m")))
    assert s.next_deadline() is None and s.advance(BASE) == []
    out = s.on_trade(mk(BASE + 10_000, 1, "10.0", "2"))
    assert [(r["iv"], r["closed"]) for r in out] == [("1m", False), ("5m", False)]
    assert s.next_deadline() == BASE + MINUTE + 2000
    assert s.advance(BASE + MINUTE + 1999) == []
    out = s.advance(BASE + MINUTE + 2000)
    assert [(r["iv"], r["t"], r["closed"]) for r in out] == [("1m", BASE, True)]
    assert s.next_deadline() == BASE + 2 * MINUTE + 2000  # the next (flat) minute
    out = s.advance(BASE + 5 * MINUTE + 2000)  # quiet symbol: minutes 1..4 flat, 5m closes
    assert [(r["iv"], r["t"], r["n"], r["closed"]) for r in out] == [
        ("1m", BASE + m * MINUTE, 0, True) for m in range(1, 5)] + [("5m", BASE, 1, True)]
    assert all((r["o"], r["c"], r["v"], r["q"]) == ("10.0", "10.0", "0", "0") for r in out[:4])
    assert s.stats["filled"] == 4
    # a 5m candle whose first minute is flat opens at the previous close
    out = s.advance(BASE + 6 * MINUTE + 2000)
    assert [(r["iv"], r["t"]) for r in out] == [("1m", BASE + 5 * MINUTE)]
    s.on_trade(mk(BASE + 6 * MINUTE + 2500, 2, "12.0", "1"))
    fin = {(r["iv"], r["t"]): r for r in s.flush()}
    r5 = fin[("5m", BASE + 5 * MINUTE)]
    assert (r5["o"], r5["h"], r5["l"], r5["c"], r5["n"]) == ("10.0", "12.0", "10.0", "12.0", 1)
    assert s.next_deadline() is None


def test_throttled_update_emitted_by_advance_and_deadline() -> None:
    s = CandleState(CandleParams(intervals=("1m",), emit_interval_ms=1000))
    assert len(s.on_trade(mk(BASE + 100, 1, "10", "1"))) == 1  # leading edge
    assert s.on_trade(mk(BASE + 300, 2, "11", "1")) == []
    assert s.next_deadline() == BASE + 1100
    assert s.advance(BASE + 1099) == []
    out = s.advance(BASE + 1100)
    assert [(r["h"], r["n"], r["closed"]) for r in out] == [("11", 2, False)]
    assert s.next_deadline() == BASE + MINUTE + 2000


def test_flush_after_flush_trades_are_late() -> None:
    s = CandleState(CandleParams(intervals=("1m", "1h")))
    s.on_trade(mk(BASE + 1000, 1, "10", "1"))
    assert {r["iv"] for r in s.flush()} == {"1m", "1h"}
    assert s.flush() == []
    out = s.on_trade(mk(BASE + 2000, 2, "10", "1"))
    assert out[0]["type"] == "deadletter"


def test_settle_emits_what_is_throttled_and_closes_nothing() -> None:
    """A live run stopped at the end of its input (a backfill): the throttled update goes out,
    open, and the state carries on; ``flush`` would close the candles for good."""
    s = CandleState(CandleParams(intervals=("1m", "1h"), emit_interval_ms=1000))
    s.on_trade(mk(BASE + 100, 1, "10", "1"))
    assert s.on_trade(mk(BASE + 300, 2, "11", "1")) == []  # throttled
    out = s.settle()
    assert [(r["iv"], r["h"], r["n"], r["closed"]) for r in out] == [
        ("1m", "11", 2, False), ("1h", "11", 2, False)]
    assert s.settle() == []  # nothing pending
    out = s.on_trade(mk(BASE + 2000, 3, "9", "1"))  # the next run: the same minute, not late
    assert [(r["iv"], r["l"], r["n"], r["closed"]) for r in out] == [
        ("1m", "9", 3, False), ("1h", "9", 3, False)]


def test_record_shape() -> None:
    s = CandleState(CandleParams(intervals=("1m",)))
    s.on_trade(mk(BASE + 5, 7, "2683.80000000", "0.00200000", "binance", "ETH-USDT"))
    (r,) = s.flush()
    assert list(r) == ["type", "ex", "sym", "iv", "t", "T", "o", "h", "l", "c", "v", "q", "n",
                       "closed"]
    assert r == {"type": "candle", "ex": "binance", "sym": "ETH-USDT", "iv": "1m", "t": BASE,
                 "T": BASE + 59_999, "o": "2683.80000000", "h": "2683.80000000",
                 "l": "2683.80000000", "c": "2683.80000000", "v": "0.00200000",
                 "q": "5.3676000000000000", "n": 1, "closed": True}


def test_params_validation() -> None:
    assert parse_interval("90m") == 5_400_000
    for bad in ("", "m", "1", "1.5m", "-1m", "0m", "30s", "1M", " 1m"):
        with pytest.raises(ValueError):
            parse_interval(bad)
    with pytest.raises(ValueError):
        CandleParams(intervals=("1m", "60s"))
    with pytest.raises(ValueError):
        CandleParams(intervals=())


def test_pickle_is_small() -> None:
    s = CandleState(CandleParams())
    for i in range(2000):
        s.on_trade(mk(BASE + i * 250, i, f"{100 + i % 7}.5", "0.01"))
    assert len(pickle.dumps(s)) < 4000


# -- real data --------------------------------------------------------------------------------
def eth_trades() -> list[Trade]:
    with gzip.open(ETH, "rb") as f:
        objs = [orjson.loads(line) for line in f]
    trades = [decode_obj(o) for o in objs if o.get("type") == "trade"]
    assert all(isinstance(t, Trade) for t in trades)
    return trades  # type: ignore[return-value]


def test_real_eth_trades_equal_reference() -> None:
    trades = eth_trades()
    assert len(trades) == 6106
    params = CandleParams()
    s = CandleState(params)
    recs = run(s, trades)
    accepted, late, dups = accept_candles(trades, params.lateness_ms)
    assert (s.stats["trades"], s.stats["late"], s.stats["duplicates"]) == (
        len(accepted), len(late), len(dups))
    fin = final(recs)
    assert fin == ref_candles(accepted, params.intervals)
    check_emission_rules(recs, params.emit_interval_ms)
    ones = ref_minutes(accepted)
    assert sum(c["n"] for c in ones.values()) == len(accepted)
    days = [r for (iv, _), r in sorted(fin.items()) if iv == "1d"]  # crosses midnight UTC
    assert [d["t"] for d in days] == [BASE - 86_400_000, BASE]
    assert days[0]["o"] == min(trades, key=lambda t: t.ts).px
    assert days[1]["c"] == max(reversed(trades), key=lambda t: t.ts).px
    assert sum(d["n"] for d in days) == len(accepted) == s.stats["trades"]


def batched(trades: list[Trade], cuts: list[int]) -> list[TradeBatch]:
    """``trades`` (one symbol, canonical) as the flow hands them over: ``decode_trades`` groups."""
    values = [encode(encode_trade(t)) for t in trades]
    bounds = sorted({0, len(values), *(c % (len(values) + 1) for c in cuts)})
    out = []
    for a, b in itertools.pairwise(bounds):
        batch = decode_trades(values[a:b], trades[0].ex, trades[0].sym)
        assert batch is not None
        assert [batch.trade(i) for i in range(len(batch))] == trades[a:b]
        out.append(batch)
    return out


def assert_batches_equal_one_by_one(a: Any, b: Any, trades: list[Trade],
                                    cuts: list[int]) -> None:
    """``b.on_trades`` over ``trades`` cut into batches gives the very records, stats, state and
    flush of ``a.on_trade`` one by one (``a``, ``b``: fresh states with the same params)."""
    done = 0
    for batch in batched(trades, cuts):  # compared after every batch, not only at the end
        part = trades[done:done + len(batch)]
        done += len(batch)
        assert b.on_trades(batch) == [r for t in part for r in a.on_trade(t)]
        assert b.stats == a.stats
        assert b.__getstate__() == a.__getstate__()
    assert done == len(trades)
    assert b.flush() == a.flush()


@contextmanager
def runs_in(where: str, module: Any = candles_mod, name: str = "_candle_runs") -> Iterator[None]:
    """``on_trades`` with its common runs compiled (``module.name``, from operators/_native.c,
    as the flows run) or in Python (the pure-Python build, and the reference for the C code)."""
    saved = getattr(module, name)
    if where == "python":
        setattr(module, name, None)
    else:
        assert saved is not None, "operators/_native.c is not built (`make setup`)"
    try:
        yield
    finally:
        setattr(module, name, saved)


@pytest.mark.parametrize("where", ["compiled", "python"])
@settings(max_examples=200, deadline=None)
@given(trades=trade_lists(), rnd=st.randoms(use_true_random=False),
       cuts=st.lists(st.integers(0, 10**6)), throttle=st.sampled_from([0, 1000]),
       fill=st.booleans())
def test_on_trades_equals_on_trade_one_by_one(where: str, trades: list[Trade], rnd: random.Random,
                                              cuts: list[int], throttle: int,
                                              fill: bool) -> None:
    """The batch entry point gives the very records, stats and state of ``on_trade`` one by one,
    also with late, re-sent and reordered trades."""
    trades = reorder_within(trades, 5000, rnd)
    trades += [trades[rnd.randrange(len(trades))] for _ in range(len(trades) // 5)]  # re-sent
    rnd.shuffle(trades[-len(trades) // 4:])  # some beyond the lateness: late
    params = CandleParams(intervals=IVS, emit_interval_ms=throttle, fill_gaps=fill)
    with runs_in(where):
        assert_batches_equal_one_by_one(CandleState(params), CandleState(params), trades, cuts)


@pytest.mark.parametrize("where", ["compiled", "python"])
def test_runs_at_the_epoch_and_with_huge_settings(where: str) -> None:
    """Times within the lateness of the epoch (a negative watermark: Python's floored minute,
    not C's truncated one) and settings too large for a machine word (an emit interval meaning
    "never") give what ``on_trade`` gives, compiled or not. Found by a review's fuzzing."""
    near = [mk(t, i + 1, "10.5", "1") for i, t in enumerate([100, 200, 300, 2500, 61_000])]
    later = [mk(BASE + 100 * i, i + 1, f"{10 + i % 3}.5", "1") for i in range(30)]
    with runs_in(where):
        for trades, params in [
                (near, CandleParams(intervals=("1m",))),
                (near, CandleParams(intervals=IVS, lateness_ms=5000)),
                (later, CandleParams(intervals=IVS, emit_interval_ms=sys.maxsize)),
                (later, CandleParams(intervals=IVS, emit_interval_ms=2**70)),
                (later, CandleParams(intervals=IVS, lateness_ms=2**63))]:
            for cuts in ([1], [2, 3], []):
                assert_batches_equal_one_by_one(CandleState(params), CandleState(params), trades,
                                                cuts)


@pytest.mark.parametrize("where", ["compiled", "python"])
def test_runs_with_time_going_back_and_ids_repeated_within(where: str) -> None:
    """A run ends where time steps back; an id repeated inside what would be one run leaves the
    run to ``on_trade`` (which counts the duplicate) with nothing of it kept."""
    steps = [0, 3000, 2000, 2000, 5000, 4000, 61_000, 60_500, 60_500, 59_000, 62_000, 62_500]
    trades = [mk(BASE + t, 500 + i, f"{10 + i % 4}.5", "1") for i, t in enumerate(steps)]
    trades.insert(9, mk(BASE + 61_200, 508, "9.5", "2"))  # id 508 again, after a seen one
    trades += [mk(BASE + t, i, "11", "1") for t, i in [(63_000, 700), (63_100, 701),
                                                       (63_200, 700)]]  # 700 again in a run
    with runs_in(where):
        for throttle, cut in itertools.product([0, 1000, 2500, 60_000], range(1, len(trades))):
            params = CandleParams(intervals=IVS, emit_interval_ms=throttle)
            one, many = CandleState(params), CandleState(params)
            for part in (trades[:cut], trades[cut:]):  # the state compared after each batch
                assert many.on_trades(batched(part, [])[0]) == [r for t in part
                                                                for r in one.on_trade(t)]
                assert many.__getstate__() == one.__getstate__()
            assert many.stats["duplicates"] == 2
            assert many.flush() == one.flush()


def test_restores_snapshots_written_with_an_id_heap() -> None:
    """Snapshots stored when the state also kept a heap of ``(ts, id)`` after ``_ids`` resume."""
    trades = [mk(BASE + 300 * i, i % 50, "10.5", "1") for i in range(400)]  # re-sent ids too
    a = CandleState(CandleParams(intervals=IVS))
    for t in trades[:200]:
        a.on_trade(t)
    state = list(a.__getstate__())
    k = 1 + CandleState._PERSIST.index("_ids")
    state.insert(k + 1, sorted((ts, tid) for tid, ts in state[k].items()))
    b = CandleState.__new__(CandleState)
    b.__setstate__(pickle.loads(pickle.dumps(tuple(state))))  # a copy, as a restore gives
    assert b.__getstate__() == a.__getstate__()
    assert [b.on_trade(t) for t in trades[200:]] == [a.on_trade(t) for t in trades[200:]]
    assert b.stats == a.stats


@pytest.mark.parametrize("where", ["compiled", "python"])
@pytest.mark.parametrize("throttle", [0, 1000, 5000])
def test_on_trades_equals_on_trade_on_real_trades(throttle: int, where: str) -> None:
    """Dense real trades (long runs, an update due every second) in flow-sized batches."""
    trades = eth_trades()
    params = CandleParams(emit_interval_ms=throttle)
    with runs_in(where):
        assert_batches_equal_one_by_one(CandleState(params), CandleState(params), trades,
                                        list(range(0, len(trades), 397)))
    # ids the watermark passed are dropped as the runs go, not only once a minute
    s = CandleState(params)
    with runs_in(where):
        for batch in batched(trades, list(range(0, len(trades), 397))):
            s.on_trades(batch)
            assert len(s._ids) <= s._prune_at + len(batch)


def test_flow_config_refuses_values_the_flow_cannot_use() -> None:
    """``MD_*`` values of the right type that the flow would fail on later (a traceback in a
    replay, a crash at start) are refused when the configuration is read, in one line."""
    from dataflows.config import BookConfig, CandleConfig, TickerConfig, from_env
    from dataflows.ingest import IngestConfig

    for env, message in [({"MD_INTERVALS": "1m,90s"}, "'90s' is not a whole number of minutes"),
                         ({"MD_INTERVALS": "1m,60s"}, "duplicate candle intervals"),
                         ({"MD_LATENESS_MS": "-1"}, "must not be negative"),
                         ({"MD_START": "yesterday"}, "start must be earliest, latest or ms"),
                         ({"MD_BATCH_SIZE": "0"}, "batch_size must be at least 1")]:
        with pytest.raises(SystemExit, match=f"invalid configuration: .*{message}"):
            from_env(CandleConfig, env)
    assert from_env(TickerConfig, {"MD_START": "1700000000000"}).start == "1700000000000"
    # the other flows' own settings: a depth of 0 printed every bid and no ask
    for cls, env, message in [
            (BookConfig, {"MD_DEPTH": "0"}, "depth must be at least 1"),
            (BookConfig, {"MD_MAX_LEVELS": "-1"}, "max_levels must not be negative"),
            (BookConfig, {"MD_EMIT_INTERVAL_MS": "-1"}, "emit_interval_ms .*must not be negative"),
            (TickerConfig, {"MD_EMIT_INTERVAL_MS": "-1"}, "emit_interval_ms must not be negative"),
            # a bad bucket was a Rust panic at the first event; bad feeds one inside the flow
            (BookConfig, {"MD_GROUPING": "ETH-USDT"}, "grouping 'ETH-USDT'"),
            (BookConfig, {"MD_GROUPING": "BTC-USDT=0"}, "'0' for 'BTC-USDT': .*must be positive"),
            (CandleConfig, {"MD_RETENTION": "0"}, "retention must be at least 1"),
            (TickerConfig, {"MD_LOG_LEVEL": "LOUD"}, "log_level must be DEBUG"),
            (TickerConfig, {"MD_METRICS_PORT": "99999"}, "metrics_port must be 0"),
            (IngestConfig, {"MD_FEEDS": "foo:BTC-USDT"}, "unknown exchange 'foo'"),
            (IngestConfig, {"MD_FEEDS": "binance:BTCUSDT"}, "is not exchange:BASE-QUOTE"),
            (IngestConfig, {"MD_ENDPOINTS": "garbage"}, "is not exchange=ws_url"),
            (IngestConfig, {"MD_CONNECTIONS_PER_EXCHANGE": "0"}, "at least 1"),
            (IngestConfig, {"MD_PING_INTERVAL_MS": "-1"}, "must not be negative"),
            (IngestConfig, {"MD_BACKOFF_MAX_MS": "1"}, "must not be below"),
            (IngestConfig, {"MD_FEEDS": ""}, "none given"),
            (CandleConfig, {"MD_KAFKA_BOOTSTRAP": " "}, "at least one host:port"),
            (TickerConfig, {"MD_REDIS_URL": "http://x"}, "must start with redis://"),
            (BookConfig, {"MD_TOPIC_PREFIX": "a b"}, "Kafka's topic names")]:
        with pytest.raises(SystemExit, match=f"invalid configuration: .*{message}"):
            from_env(cls, env)
    with pytest.raises(SystemExit, match=r"^invalid MD_BATCH_SIZE: not an integer: 'abc'$"):
        from_env(TickerConfig, {"MD_BATCH_SIZE": "abc"})
    with pytest.raises(SystemExit, match=r"at least 1: 0 \(set by MD_BATCH_SIZE\)$"):
        from_env(TickerConfig, {"MD_BATCH_SIZE": "0"})  # the variable, not only the field
    with pytest.raises(SystemExit, match=r"at least 1: 0$"):
        from_env(TickerConfig, {"MD_BATCH_SIZE": "5"}, batch_size=0)  # a flag set it
    assert from_env(BookConfig, {"MD_GROUPING": "0.5,binance:BTC-USDT=10"}).grouping
    assert from_env(IngestConfig, {"MD_FEEDS": "okx:BTC-USDT,kraken:ETH-USD"}).feeds


def test_misspelled_variables_are_named_with_the_closest_setting(
        caplog: pytest.LogCaptureFixture) -> None:
    from dataflows import config

    env = {"MD_BATCHSIZE": "10", "MD_LATENES_MS": "5", "MD_WHATEVER": "1", "MD_START": "latest",
           "PATH": "/bin"}
    with caplog.at_level(logging.WARNING, logger="dataflows.config"):
        cfg = config.from_env(config.CandleConfig, env)
        config.from_env(config.TickerConfig, env)  # once per process, not per config read
    assert cfg.batch_size == 5000 and cfg.lateness_ms == 2000 and cfg.start == "latest"
    assert [r.getMessage() for r in caplog.records] == [
        "MD_BATCHSIZE is not a marketdata setting (did you mean MD_BATCH_SIZE?): ignored",
        "MD_LATENES_MS is not a marketdata setting (did you mean MD_LATENESS_MS?): ignored",
        "MD_WHATEVER is not a marketdata setting: ignored"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dataflows.config"):
        book = config.from_env(config.BookConfig, {
            "MD_GROUPING": "1,binanse:BTC-USDT=10,binance:ETH-USDT=0.5,ETH-BTC=0.01"})
    assert book.grouping  # still accepted: events may come from a producer of our own
    assert [r.getMessage() for r in caplog.records] == [
        "grouping 'binanse:BTC-USDT': no feed handler produces exchange 'binanse' "
        "(they produce binance, binance_futures, bybit, coinbase, kraken, okx)"]


def test_every_variable_the_project_reads_or_documents_is_known() -> None:
    """The list the warning above checks against is complete: no working setting is called
    misspelled, in the code, the scripts, the compose file or the README."""
    from dataflows.config import known_variables

    root = Path(__file__).resolve().parents[1]
    files = [p for p in root.rglob("*") if p.is_file() and (p.suffix in (".py", ".sh", ".yaml")
                                                           or p.name in ("README.md", "run"))
             and not {".venv", ".git", "tests"} & set(p.relative_to(root).parts)]
    lines = [line for p in files for line in p.read_text(errors="replace").splitlines()
             if "not a marketdata setting" not in line]  # but the README's misspelled example
    used = {m for line in lines for m in re.findall(r"\bMD_[A-Z][A-Z0-9_]*[A-Z0-9]\b", line)}
    assert {"MD_KAFKA_BOOTSTRAP", "MD_FEEDS", "MD_API_PORT", "MD_STATE_DIR"} <= used  # the scan
    assert used - known_variables() == set()


def test_live_clock_waits_for_a_source_that_is_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Live, a quiet symbol's event time follows the clock, but not while the Kafka source is
    behind: with a backlog the clock runs ahead of the data, and a minute closed on the clock
    while trades of it still waited in Kafka, read later and dead-lettered as late."""
    from connectors import kafka
    from dataflows import candles as candle_flow
    from dataflows.common import _Logic
    from dataflows.config import CandleConfig

    make = candle_flow.state_factory(CandleConfig(intervals=["1m"]))
    t = 1_700_000_040_000  # the start of a minute

    def msg(ts: int, tid: int) -> tuple[bytes, bytes, int]:
        return (b"binance:ETH-USDT", b'{"type":"trade","ex":"binance","sym":"ETH-USDT","ts":%d,'
                b'"rts":%d,"id":"%d","px":"1.5","qty":"2","side":"buy"}' % (ts, ts, tid), 0)

    for behind, late in ((True, 0), (False, 1)):
        monkeypatch.setattr(kafka, "_BEHIND", {"md.trades#0"} if behind else set())
        logic = _Logic("candles", Trade, make, True, None)
        logic.on_batch([msg(t, 1)])
        logic.wall -= 120_000  # two minutes of wall time with no trade of this symbol read
        logic.on_notify()
        out, _ = logic.on_batch([msg(t + 10_000, 2)])  # traded 10 s later, read only now
        dead = [r for _, d in out for r in d]
        assert len(dead) == late, dead
        assert all("late trade" in r["reason"] for r in dead)
