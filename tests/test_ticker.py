"""The 24h ticker operator against the brute-force Decimal reference, generated and real trades."""

from __future__ import annotations

import itertools
import pickle
import sys
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import ticker as ticker_mod
from operators.events import Trade, encode_trade
from operators.ticker import MINUTE, TickerParams, TickerState
from tests.reference import accept_ticker, ref_ticker
from tests.test_candles import (
    BASE,
    assert_batches_equal_one_by_one,
    batched,
    eth_trades,
    ids,
    mk,
    price,
    qty,
)
from tests.test_candles import runs_in as candle_runs_in

HOUR = 3_600_000
DAY = 24 * HOUR


@st.composite
def ticker_streams(draw: st.DrawFn) -> list[Trade]:
    """Trades over ~1-2 days, partly out of order (some beyond the window: late), some re-sent."""
    n = draw(st.integers(1, 45))
    ts = BASE + draw(st.integers(0, DAY))
    out: list[Trade] = []
    for i in range(n):
        ts += draw(st.one_of(st.integers(0, 2_000), st.integers(0, 90_000),
                             st.integers(0, 4 * HOUR)))
        back = draw(st.one_of(st.just(0), st.integers(0, 5 * MINUTE),
                              st.integers(0, 30 * HOUR)))
        out.append(mk(ts - back, draw(ids).format(1000 + i), draw(price), draw(qty)))
        if draw(st.integers(0, 5)) == 0:  # re-send an earlier trade
            out.append(out[draw(st.integers(0, len(out) - 1))])
    return out


def feed(s: TickerState, trades: list[Trade]) -> list[tuple[int, int, dict[str, Any]]]:
    """``(index of the trade just fed, clock, record)``; flush records get index ``len(trades)``."""
    out = []
    clock = None
    for k, t in enumerate(trades):
        clock = t.ts if clock is None else max(clock, t.ts)
        out.extend((k, clock, r) for r in s.on_trade(t))
    out.extend((len(trades), clock, r) for r in s.flush())
    return out


@settings(max_examples=200, deadline=None)
@given(ticker_streams(), st.sampled_from([0, 1000, 60_000]), st.sampled_from([600_000, 3 * HOUR]))
def test_every_ticker_equals_reference(trades: list[Trade], throttle: int, dedup: int) -> None:
    s = TickerState(TickerParams(emit_interval_ms=throttle, dedup_ms=dedup))
    recs = feed(s, trades)
    verdicts = accept_ticker(trades, dedup)
    ok = [t for t, v in verdicts if v == "ok"]
    assert s.stats["trades"] == len(ok)
    assert s.stats["late"] == sum(v == "late" for _, v in verdicts)
    assert s.stats["duplicates"] == sum(v == "duplicate" for _, v in verdicts)
    tickers = [(k, c, r) for k, c, r in recs if r["type"] == "ticker"]
    dead = [(k, r) for k, _, r in recs if r["type"] == "deadletter"]
    assert [k for k, _ in dead] == [k for k, (_, v) in enumerate(verdicts) if v == "late"]
    for k, r in dead:
        assert r["stage"] == "ticker" and r["key"] == "test:BTC-USDT"
        assert r["reason"].startswith(f"late trade: ts {trades[k].ts} is before the ticker window")
        assert r["raw"] == orjson.dumps(encode_trade(trades[k])).decode()
    for k, _, r in tickers:
        so_far = [t for t, v in verdicts[: k + 1] if v == "ok"]
        assert r == ref_ticker(so_far)
    assert s.stats["emitted"] == len(tickers)
    # throttle: at most one record per emit interval of event time (flush excepted)
    clocks = [c for k, c, _ in tickers if k < len(trades)]
    if throttle:
        assert all(b - a >= throttle for a, b in itertools.pairwise(clocks))
    # the last record reflects every accepted trade; nothing is left pending
    if ok:
        assert tickers[-1][2] == ref_ticker(ok)
    assert s.next_deadline() is None and s.flush() == []


@settings(max_examples=100, deadline=None)
@given(ticker_streams(), st.integers(0, 10**6))
def test_snapshot_restore_midstream(trades: list[Trade], cut: int) -> None:
    k = cut % (len(trades) + 1)
    a = TickerState(TickerParams())
    for t in trades[:k]:
        a.on_trade(t)
    b = pickle.loads(pickle.dumps(a))
    assert feed(a, trades[k:]) == feed(b, trades[k:])
    assert a.stats == b.stats


def test_buckets_expire_exactly() -> None:
    s = TickerState(TickerParams(emit_interval_ms=0))
    s.on_trade(mk(BASE + 10, 1, "500.0", "1.12"))  # the high, and 2 then 9 decimals of volume
    s.on_trade(mk(BASE + 20, 7, "400.0", "0.000000009"))
    s.on_trade(mk(BASE + 30 * MINUTE, 2, "10.5", "2"))
    r = s.on_trade(mk(BASE + DAY - 1, 3, "11", "0.5"))[0]  # BASE's minute is still in the window
    assert (r["openTime"], r["highPrice"], r["count"]) == (BASE, "500.0", 4)
    assert r["volume"] == "3.620000009"
    r = s.on_trade(mk(BASE + DAY + MINUTE + 1, 4, "12", "1.5"))[0]  # now it has left the window
    assert r["openTime"] == BASE + 2 * MINUTE
    assert (r["openPrice"], r["firstId"], r["highPrice"], r["lowPrice"]) == (
        "10.5", "2", "12", "10.5")
    assert (r["volume"], r["count"]) == ("4.0", 3)  # the sum prints fewer decimals again
    assert r["priceChange"] == "1.5" and r["priceChangePercent"] == "14.28571429"
    late = s.on_trade(mk(BASE + 20, 5, "1", "1"))
    assert late[0]["type"] == "deadletter" and s.stats["late"] == 1
    r = s.on_trade(mk(BASE + 3 * DAY, 6, "13", "1"))[0]  # a jump beyond the whole window
    assert (r["count"], r["volume"], r["openPrice"], r["lastId"]) == (1, "1", "13", "6")


def test_equal_highs_in_ring_order() -> None:
    """Equal extremes printed differently: the earliest minute wins, also across the ring's wrap."""
    s = TickerState(TickerParams(emit_interval_ms=0))
    s.on_trade(mk(BASE + 1000 * MINUTE, 1, "20.0", "1"))  # ring slot 1000
    s.on_trade(mk(BASE + DAY + 100 * MINUTE, 2, "20.00", "1"))  # ring slot 100, a day later
    r = s.on_trade(mk(BASE + DAY + 500 * MINUTE, 3, "15", "1"))[0]
    assert r["openTime"] == BASE + 501 * MINUTE
    assert (r["highPrice"], r["lowPrice"], r["openPrice"]) == ("20.0", "15", "20.0")


def test_throttle_trailing_emission_and_deadline() -> None:
    s = TickerState(TickerParams(emit_interval_ms=1000))
    assert s.next_deadline() is None and s.advance(BASE) == []
    assert len(s.on_trade(mk(BASE, 1, "10", "1"))) == 1  # leading edge
    assert s.on_trade(mk(BASE + 400, 2, "11", "1")) == []
    assert s.next_deadline() == BASE + 1000
    assert s.advance(BASE + 999) == []
    (r,) = s.advance(BASE + 1000)
    assert (r["lastPrice"], r["count"]) == ("11", 2)
    assert s.next_deadline() is None and s.advance(BASE + 5000) == []
    # an older trade inside the window changes the state but not the last trade
    (r,) = s.on_trade(mk(BASE - 3 * HOUR, 3, "9", "1"))
    assert (r["openPrice"], r["lastPrice"], r["count"], r["closeTime"]) == (
        "9", "11", 3, BASE + 400)
    assert s.on_trade(mk(BASE + 400, 2, "11", "1")) == [] and s.stats["duplicates"] == 1


def test_ties_follow_arrival_order() -> None:
    s = TickerState(TickerParams(emit_interval_ms=0))
    s.on_trade(mk(BASE + 5, 1, "10.50", "1"))
    s.on_trade(mk(BASE + 5, 2, "10.5", "1"))
    r = s.on_trade(mk(BASE + 5, 3, "10.500", "1"))[0]
    assert (r["openPrice"], r["highPrice"], r["lowPrice"], r["lastPrice"]) == (
        "10.50", "10.50", "10.50", "10.500")
    assert (r["firstId"], r["lastId"], r["priceChange"]) == ("1", "3", "0.000")


def test_record_shape() -> None:
    s = TickerState(TickerParams())
    (r,) = s.on_trade(mk(BASE + 7, 1, "2683.80000000", "0.00200000", "binance", "ETH-USDT"))
    assert list(r) == ["type", "ex", "sym", "openTime", "closeTime", "openPrice", "highPrice",
                       "lowPrice", "lastPrice", "volume", "quoteVolume", "priceChange",
                       "priceChangePercent", "weightedAvgPrice", "count", "firstId", "lastId"]
    assert r["quoteVolume"] == "5.3676000000000000" and r["weightedAvgPrice"] == "2683.80000000"
    assert r["priceChange"] == "0.00000000"
    assert r["priceChangePercent"] == "0.00000000"
    assert (r["openTime"], r["closeTime"], r["count"]) == (BASE - 1439 * MINUTE, BASE + 7, 1)


def test_params_validation() -> None:
    with pytest.raises(ValueError):
        TickerParams(emit_interval_ms=-1)


def test_pickle_is_compact() -> None:
    s = TickerState(TickerParams())
    for i in range(5000):  # ~1 trade/s for 83 minutes
        s.on_trade(mk(BASE + i * 1000, i, f"{100 + i % 7}.5", "0.01"))
    size = len(pickle.dumps(s))
    assert size < 60_000, size


def test_real_eth_tickers_equal_reference() -> None:
    trades = eth_trades()
    s = TickerState(TickerParams())
    recs = feed(s, trades)
    verdicts = accept_ticker(trades, 600_000)
    assert all(v == "ok" for _, v in verdicts)
    tickers = [(k, r) for k, _, r in recs if r["type"] == "ticker"]
    assert len(tickers) > 200  # ~1 per second of a 6-minute recording
    for k, r in tickers:
        assert r == ref_ticker(trades[: k + 1])
    assert tickers[-1][1]["count"] == len(trades)


def runs_in(where: str) -> Any:
    """``on_trades`` with its common runs compiled (``ticker_runs``) or in Python."""
    return candle_runs_in(where, ticker_mod, "_ticker_runs")


@pytest.mark.parametrize("where", ["compiled", "python"])
@settings(max_examples=200, deadline=None)
@given(trades=ticker_streams(), cuts=st.lists(st.integers(0, 10**6)),
       throttle=st.sampled_from([0, 1000, 60_000]),
       dedup=st.sampled_from([600_000, 60_000, 1000, 0]))
def test_on_trades_equals_on_trade_one_by_one(where: str, trades: list[Trade], cuts: list[int],
                                              throttle: int, dedup: int) -> None:
    """The batch entry point gives the very records, stats and state of ``on_trade`` one by one
    (the streams include late and re-sent trades; short duplicate horizons forget ids often)."""
    with runs_in(where):
        assert_batches_equal_one_by_one(TickerState(TickerParams(throttle, dedup)),
                                        TickerState(TickerParams(throttle, dedup)), trades, cuts)


@pytest.mark.parametrize("where", ["compiled", "python"])
def test_rising_ids_with_time_going_back(where: str) -> None:
    """Ids that rise while the time steps back (an exchange's clock, not its numbering): a run
    ends where time goes back, as the last trade is the one with the greatest time."""
    steps = [0, 3000, 2000, 2000, 5000, 4000, 61_000, 60_500, 60_500, 59_000, 62_000]
    trades = [mk(BASE + t, 500 + i, f"{10 + i % 4}.5", "1") for i, t in enumerate(steps)]
    with runs_in(where):
        for throttle, cut in itertools.product([0, 1000, 2500, 60_000], range(1, len(trades))):
            one, many = TickerState(TickerParams(throttle)), TickerState(TickerParams(throttle))
            for part in (trades[:cut], trades[cut:]):  # the state compared after each batch
                assert many.on_trades(one_batch(part)) == [r for t in part
                                                           for r in one.on_trade(t)]
                assert many.__getstate__() == one.__getstate__()
                assert many.flush() == one.flush()


@pytest.mark.parametrize("where", ["compiled", "python"])
def test_huge_settings_and_times_at_the_epoch(where: str) -> None:
    """An emit interval or duplicate horizon too large for a machine word ("never"), and times
    near the epoch, give what ``on_trade`` gives, compiled or not."""
    later = [mk(BASE + 100 * i, i + 1, f"{10 + i % 3}.5", "1") for i in range(30)]
    near = [mk(t, i + 1, "10.5", "1") for i, t in enumerate([0, 100, 200, 60_000, 61_000])]
    with runs_in(where):
        for trades, params in [(later, TickerParams(sys.maxsize)), (later, TickerParams(2**70)),
                               (later, TickerParams(1000, 2**63)), (near, TickerParams(0, 0)),
                               (near, TickerParams(1000))]:
            for cuts in ([1], [2, 3], []):
                assert_batches_equal_one_by_one(TickerState(params), TickerState(params), trades,
                                                cuts)


@pytest.mark.parametrize("where", ["compiled", "python"])
def test_ids_at_the_horizon_are_kept(where: str) -> None:
    """An id whose ``ts`` is exactly the duplicate horizon still counts (``ts >= horizon``): the
    batch path forgets ids at the same moment as ``on_trade``."""
    trades = [mk(BASE + 250 * i, 100 + i, "10.5", "1") for i in range(40)]
    trades += [trades[30], trades[33]]  # re-sent: one at the horizon, one inside it
    with runs_in(where):
        for dedup in (1000, 1250, 2000):
            assert_batches_equal_one_by_one(TickerState(TickerParams(1000, dedup)),
                                            TickerState(TickerParams(1000, dedup)), trades,
                                            [20, 38, 41])


def test_restores_snapshots_written_with_one_deque_of_pairs() -> None:
    """Snapshots stored before ``_idq`` became two deques (one deque of ``(ts, id)``) resume."""
    from collections import deque

    trades = [mk(BASE + 700 * i, i, f"{10 + i % 7}.5", "1") for i in range(60)]
    trades += trades[40:50]  # re-sent
    a = TickerState(TickerParams())
    for t in trades[:30]:
        a.on_trade(t)
    state = list(a.__getstate__())
    k = 1 + TickerState._PERSIST.index("_idq")
    state[k] = deque(zip(*state[k], strict=True))
    b = TickerState.__new__(TickerState)
    b.__setstate__(pickle.loads(pickle.dumps(tuple(state))))  # a copy, as a restore gives
    assert b.__getstate__() == a.__getstate__()
    assert [b.on_trade(t) for t in trades[30:]] == [a.on_trade(t) for t in trades[30:]]
    assert a.stats["duplicates"] == 10
    assert b.stats == a.stats


@pytest.mark.parametrize("where", ["compiled", "python"])
@pytest.mark.parametrize("throttle", [0, 1000, 60_000])
def test_on_trades_equals_on_trade_on_real_trades(throttle: int, where: str) -> None:
    """Dense real trades (long runs, a record due every second) in flow-sized batches."""
    trades = eth_trades()
    with runs_in(where):
        assert_batches_equal_one_by_one(TickerState(TickerParams(throttle)),
                                        TickerState(TickerParams(throttle)), trades,
                                        list(range(0, len(trades), 397)))


def one_batch(trades: list[Trade]) -> Any:
    return batched(trades, [])[0]


def test_rising_ids_skip_the_id_dictionary_and_duplicates_still_count() -> None:
    """A long run of rising numeric ids drops the dictionary of recent ids; a trade re-sent
    after that, or one with an id that is not numeric, is still checked against every id kept."""
    trades = [mk(BASE + 100 * i, 5000 + i, "10.5", "1") for i in range(700)]
    s = TickerState(TickerParams(emit_interval_ms=0))
    s.on_trades(one_batch(trades[:300]))
    s.on_trade(mk(BASE + 100 * 300, "x1", "10.5", "1"))  # not numeric: needs the dictionary
    assert s._ids is not None
    s.on_trades(one_batch(trades[300:]))
    assert s._ids is None  # rising ids since: more than half of those kept
    before = dict(s.stats)
    s.on_trades(one_batch([trades[7], trades[699], mk(BASE + 70_000, "x1", "10.5", "1"),
                       mk(BASE + 70_000, "04999", "10.5", "1")]))
    assert s.stats["duplicates"] == before["duplicates"] + 3
    assert s.stats["trades"] == before["trades"] + 1  # "04999" is not "4999"
    b = pickle.loads(pickle.dumps(s))
    assert b._ids is None and b._top_id == s._top_id == 5699
    assert b.on_trade(trades[10]) == [] and b.stats["duplicates"] == s.stats["duplicates"] + 1
