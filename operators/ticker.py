"""Binance-style 24h rolling statistics of one symbol, in event time, at minute granularity.

``TickerState`` is what the ticker flow keeps per ``ex:SYM``; pure like every operator here.

How it works, and why:

- Two-stage aggregation: 1,440 one-minute buckets in a ring (slot = minute index mod 1440), each
  with its own open/high/low/volume/quote volume/count, plus running sums over the window. A trade
  costs O(1); buckets leaving the window are subtracted once (amortized O(1) per minute of event
  time). High, low and the first trade stay exact as buckets expire: the window's high (low,
  first bucket) is kept incrementally and, when the bucket holding it expires, recomputed at the
  next emission by a C-level scan of the 1,440 bucket highs (lows) — at most once per minute of
  event time, and only if a record is emitted.
- The window of a record is the 1,440 buckets ending with the minute of the last trade (greatest
  ``ts``; ties: last arrived): ``openTime`` = that minute − 1439 min, ``closeTime`` = its ``ts``.
  The open (``openPrice``/``firstId``) is the earliest trade of the window (smallest ``ts``; ties:
  first arrived); high/low the first extreme price in that order.
- Decimals print as a ``decimal.Decimal`` reference would: sums keep the largest number of
  decimals among the window's terms (tracked per bucket with counters, so it can shrink when a
  bucket expires), ``priceChange`` = last − open, ``priceChangePercent`` and
  ``weightedAvgPrice`` rounded half-even to 8 places.
- Late: a trade before the current window's start is counted and dead-lettered. Duplicates: a
  trade whose id was accepted with a ``ts`` within ``dedup_ms`` of the newest ``ts`` is counted
  once; a trade re-sent later than that (yet inside the window) would count twice: the bound
  keeps the state small (ids are dropped in arrival order once their ``ts`` is older than the
  horizon; a trade arriving far out of order may keep a few ids longer, never changing the rule).
  Most feeds number their trades: a run of ids that are integers, each greater than every id
  accepted before, cannot hold a duplicate and skips the dictionary of recent ids (``_scan_ids``;
  its lookups and inserts missed the CPU caches and took a quarter of the flow's time). The
  dictionary is only a cache of the ids kept in arrival order: built when an id needs looking up,
  dropped once rising ids make up half of the ids kept.
- Emission: at most once per ``emit_interval_ms`` of event time: at once after a quiet period
  (leading edge), otherwise the latest state when the interval has passed, on the next trade,
  ``advance`` or ``flush``.

>>> from operators.events import decode
>>> def trade(ts, i, px, qty):
...     return decode(f'{{"type":"trade","ex":"binance","sym":"ETH-USDT","ts":{ts},"rts":{ts},'
...                   f'"id":"{i}","px":"{px}","qty":"{qty}","side":"buy"}}')
>>> s = TickerState(TickerParams())
>>> r = s.on_trade(trade(86_400_000, 1, "100.0", "2"))[0]
>>> r["openTime"], r["closeTime"], r["openPrice"], r["volume"], r["count"]
(60000, 86400000, '100.0', '2', 1)
>>> s.on_trade(trade(86_400_400, 2, "101.00", "1.5"))  # throttled
[]
>>> r = s.flush()[0]
>>> r["lastPrice"], r["priceChange"], r["priceChangePercent"], r["weightedAvgPrice"]
('101.00', '1.00', '1.00000000', '100.42857143')
>>> r["quoteVolume"], r["firstId"], r["lastId"]
('351.500', '1', '2')
"""

# Stable module path and class names: stored recovery snapshots refer to them by name
# (operators.ticker.TickerState / TickerParams). Renaming or moving them makes every existing
# snapshot unreadable; change the pickled layout only together with __setstate__.

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from itertools import chain, islice
from operator import add, gt, mul
from typing import Any

import orjson

from operators.events import DeadLetter, Trade, TradeBatch, encode_trade
from operators.fixed import ONE, SCALE, fmt, round_half_even

try:
    from operators import _native
except ImportError:  # pragma: no cover - the pure-Python build
    _native = None  # type: ignore[assignment]

__all__ = ["BUCKETS", "MINUTE", "TickerParams", "TickerState"]

MINUTE = 60_000
BUCKETS = 1440
_SPAN = (BUCKETS - 1) * MINUTE  # openTime = minute of the last trade - _SPAN
_NEG = -(1 << 62)
_EMPTY_LO = 1 << 400  # above any price in units
_QSCALE = 2 * SCALE
_MAX_DP = 2 * SCALE

# One bucket as a mutable list.
(_M, _O_TS, _O, _O_U, _O_DP, _O_ID, _H, _H_TS, _L, _L_TS,
 _V, _V_DP, _Q, _Q_DP, _N) = range(15)


@dataclass(frozen=True)
class TickerParams:
    """Ticker settings (event-time milliseconds)."""

    emit_interval_ms: int = 1000
    dedup_ms: int = 600_000

    def __post_init__(self) -> None:
        if self.emit_interval_ms < 0:
            raise ValueError(f"emit_interval_ms must not be negative: {self.emit_interval_ms}")
        if self.dedup_ms < 0:
            raise ValueError(f"dedup_ms must not be negative: {self.dedup_ms}")


def _scan_ids_py(ids: list[str], start: int, stop: int, floor: int) -> tuple[bool, int]:
    """``(fresh, top)`` for ``ids[start:stop]``. An id is *numeric* when it is the canonical
    decimal of an integer below 2**63. ``fresh``: every id is numeric and greater than the one
    before it, the first greater than ``floor``, so none equals an id whose integer is at most
    ``floor`` or any non-numeric id. ``top``: the greatest of ``floor`` and the numeric ids."""
    fresh, top, prev = True, floor, floor
    for k in range(max(start, 0), min(stop, len(ids))):  # as the C version: no negative indices
        s = ids[k]
        if (type(s) is not str or not s.isascii() or not s.isdigit() or len(s) > 19
                or (s[0] == "0" and len(s) > 1) or int(s) >= 2**63):
            fresh = False
            continue
        n = int(s)
        top = max(top, n)
        if n <= prev:
            fresh = False
        prev = n
    return fresh, top


_scan_ids = _scan_ids_py if _native is None else _native.scan_ids
_ticker_runs = None if _native is None else _native.ticker_runs  # on_trades' common runs


def _top_dp_py(counts: list[int]) -> int:
    """Largest number of decimals that some bucket of the window has."""
    for dp in range(len(counts) - 1, 0, -1):
        if counts[dp]:
            return dp
    return 0


_top_dp = _top_dp_py if _native is None else _native.top_index  # twice a record


class TickerState:
    """The 24h rolling ticker of one symbol (see the module docstring)."""

    __slots__ = ("_b", "_clock", "_dirty", "_ex", "_first_m", "_hi", "_idq", "_ids", "_last",
                 "_lo", "_n", "_next", "_open_t", "_q", "_qdp", "_rising", "_sym", "_throttle",
                 "_top_id", "_v", "_vdp", "_wh", "_wh_m", "_wl", "_wl_m", "params", "stats")

    def __init__(self, params: TickerParams) -> None:
        self.params = params
        self._throttle = params.emit_interval_ms
        self._ex = ""
        self._sym = ""
        self._clock = _NEG  # newest event time seen (trades and advance)
        self._open_t: int | None = None  # start of the current window
        # the last trade: (ts, px, px units, px decimals, id)
        self._last: tuple[int, str, int, int, str] = (_NEG, "", 0, 0, "")
        self._b: list[list[Any] | None] = [None] * BUCKETS
        self._hi = [-1] * BUCKETS  # bucket highs in units (-1: empty), scanned by max()
        self._lo = [_EMPTY_LO] * BUCKETS  # bucket lows in units, scanned by min()
        self._v = 0  # window sums: base volume units, quote volume units (scale 36), count
        self._q = 0
        self._n = 0
        self._vdp = [0] * (_MAX_DP + 1)  # number of buckets whose volume has that many decimals
        self._qdp = [0] * (_MAX_DP + 1)
        # (ts, id) of the trades accepted within dedup_ms, in arrival order: two deques, not one
        # of tuples, so that the garbage collector and the snapshots do not walk one object each.
        self._idq: tuple[deque[int], deque[str]] = (deque(), deque())
        self._ids: dict[str, int] | None = None  # id -> ts of those trades: a cache, see _lookup
        self._top_id = -1  # at least the greatest numeric id among them (see _scan_ids)
        self._rising = 0  # trades accepted with fresh ids since the cache was last needed
        self._derive()
        self._next = _NEG  # clock from which the next record may be emitted
        self._dirty = False  # changed since the last record
        self.stats: dict[str, int] = {"trades": 0, "duplicates": 0, "late": 0, "emitted": 0}

    _PERSIST = ("_ex", "_sym", "_clock", "_open_t", "_last", "_b", "_v", "_q", "_n", "_vdp",
                "_qdp", "_idq", "_next", "_dirty", "stats")

    def __getstate__(self) -> tuple[Any, ...]:
        # _ids, _top_id, _hi and _lo are derived: rebuilt on restore, so snapshots stay small.
        return (self.params, *(getattr(self, a) for a in self._PERSIST))

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.params = state[0]
        self._throttle = self.params.emit_interval_ms
        for a, v in zip(self._PERSIST, state[1:], strict=True):
            setattr(self, a, v)
        if type(self._idq) is deque:  # written before _idq became two deques
            self._idq = (deque(ts for ts, _ in self._idq), deque(tid for _, tid in self._idq))
        self._ids = None
        qid = list(self._idq[1])
        self._top_id = _scan_ids(qid, 0, len(qid), -1)[1]
        self._rising = 0
        self._hi = [-1 if b is None else b[_H][0] for b in self._b]
        self._lo = [_EMPTY_LO if b is None else b[_L][0] for b in self._b]
        self._derive()

    def _derive(self) -> None:
        """Window high/low/first bucket: ``None`` means "recompute from the buckets when needed"."""
        self._wh: int | None = None
        self._wh_m = _NEG
        self._wl: int | None = None
        self._wl_m = _NEG
        self._first_m: int | None = None

    # -- input -----------------------------------------------------------------------------------
    def _lookup(self) -> dict[str, int]:
        """The dictionary of recent ids (id -> newest ``ts`` in the deques), built if dropped."""
        ids = self._ids
        if ids is None:
            ids = {}
            for ts, tid in zip(*self._idq, strict=True):
                if ts > ids.get(tid, _NEG):
                    ids[tid] = ts
            self._ids = ids
        self._rising = 0
        return ids

    def _prune(self, horizon: int) -> None:
        """Forget the ids accepted with a ``ts`` before ``horizon``, in arrival order."""
        qts, qid = self._idq
        ids = self._ids
        while qts and qts[0] < horizon:
            old_ts, old_id = qts.popleft(), qid.popleft()
            if ids is not None and ids.get(old_id) == old_ts:
                del ids[old_id]

    def _remember(self, run_ts: list[int], run_ids: list[str], fresh: bool, top: int) -> None:
        """Keep the ids of accepted trades. The dictionary is dropped once fresh ids make up
        half of those kept: rebuilding it costs one step per id kept, paid for by as many
        trades that did not need it (amortized O(1) a trade)."""
        qts, qid = self._idq
        qts.extend(run_ts)
        qid.extend(run_ids)
        self._top_id = top
        ids = self._ids
        if ids is not None:
            ids.update(zip(run_ids, run_ts, strict=True))
            if fresh:
                self._rising += len(run_ids)
                if 2 * self._rising > len(qts):
                    self._ids = None

    def on_trade(self, t: Trade) -> list[dict[str, Any]]:
        """Account one trade; return the records (ticker, dead letter) to emit now."""
        ts = t.ts
        if self._open_t is not None and ts < self._open_t:
            return [self._late(t)]
        horizon = self._clock - self.params.dedup_ms
        self._prune(horizon)
        tid = t.id
        fresh, top = _scan_ids([tid], 0, 1, self._top_id)
        if not fresh:
            ids = self._lookup()
            if tid in ids and ids[tid] >= horizon:
                self.stats["duplicates"] += 1
                return []
        self._remember([ts], [tid], fresh, top)
        if not self._ex:
            self._ex, self._sym = t.ex, t.sym
        self.stats["trades"] += 1
        if ts > self._clock:
            self._clock = ts
        m = ts - ts % MINUTE
        pu = t.px_u
        if ts >= self._last[0]:
            if self._open_t is None or m - _SPAN > self._open_t:
                self._shift(m - _SPAN)
            self._last = (ts, t.px, pu, t.px_dp, tid)
        slot = (m // MINUTE) % BUCKETS
        b = self._b[slot]
        qu = t.qty_u
        qdp = t.qty_dp
        pqdp = t.px_dp + qdp
        if b is None:
            self._b[slot] = [m, ts, t.px, pu, t.px_dp, tid, (pu, t.px), ts, (pu, t.px), ts,
                             qu, qdp, pu * qu, pqdp, 1]
            self._hi[slot] = pu
            self._lo[slot] = pu
            self._vdp[qdp] += 1
            self._qdp[pqdp] += 1
            if self._first_m is not None and m < self._first_m:
                self._first_m = m
        else:
            self._add(b, slot, ts, tid, t.px, pu, t.px_dp, qu, qdp)
        self._sums(m, pu, qu)
        if self._clock >= self._next:
            return [self._emit()]
        return []

    def on_trades(self, b: TradeBatch) -> list[dict[str, Any]]:
        """``on_trade`` of every trade of ``b`` in order, the records concatenated.

        A run of trades in ``ts`` order, from the clock on, into an existing bucket of the
        newest minute, is the common case: nothing moves the window, none changes the bucket's
        open, the first highest (lowest) price is its high (low), the last trade the last. It is
        folded in at once, with C-level ``max``/``min``/``sum`` over the batch's columns, and
        ends with the first trade at which a record is due, emitted after it as ``on_trade``
        would. Every other trade goes through ``on_trade`` itself. Where operators/_native.c is
        built, ``ticker_runs`` folds such runs with rising numeric ids in C, statement for
        statement the same.
        """
        out: list[dict[str, Any]] = []
        ts, tids, px, pu, pdp, qu, qdp = b.ts, b.ids, b.px, b.px_u, b.px_dp, b.qty_u, b.qty_dp
        n = len(ts)
        down: list[bool] | None = None  # built when first needed (the compiled runs do not)
        buckets = self._b
        i = 0
        while i < n:
            if _ticker_runs is not None:  # the common runs, compiled (operators/_native.c)
                j = _ticker_runs(self, b, i)
                if j > i:
                    i = j
                    if self._dirty and self._clock >= self._next:
                        out.append(self._emit())
                    continue
            if down is None:
                # down[k]: ts[k + 1] < ts[k] (or k is the last): a run from i ends by
                # down.index(True, i)
                down = [*map(gt, ts, islice(ts, 1, None)), True]
            j = i
            t0, clock, open_t = ts[i], self._clock, self._open_t
            m0 = t0 - t0 % MINUTE
            slot = (m0 // MINUTE) % BUCKETS
            bucket = buckets[slot]
            if bucket is not None and t0 >= clock and open_t is not None and m0 - _SPAN <= open_t:
                j = bisect_left(ts, m0 + MINUTE, i, down.index(True, i) + 1)
                j = min(j, bisect_left(ts, self._next, i, j) + 1)
            run_ids = tids[i:j]
            fresh, top = _scan_ids(tids, i, j, self._top_id)
            if j == i or (not fresh and (not self._lookup().keys().isdisjoint(run_ids)
                                         or len(set(run_ids)) < j - i)):
                out.extend(self.on_trade(b.trade(i)))  # not a run, or a duplicate in it
                i += 1
                continue
            assert bucket is not None
            k = j - 1
            self._remember(ts[i:j], run_ids, fresh, top)
            # The last trade's pruning, after the run is kept: on_trade one by one also drops
            # the run's own first ids once the horizon passes them (a horizon shorter than the
            # run); never the last trade's, whose ts is at or after its own horizon.
            self._prune((ts[k - 1] if k > i else clock) - self.params.dedup_ms)
            self.stats["trades"] += j - i
            self._clock = ts[k]
            self._last = (ts[k], px[k], pu[k], pdp[k], tids[k])
            run_pu, run_qu, run_qdp = pu[i:j], qu[i:j], qdp[i:j]
            top, low = max(run_pu), min(run_pu)
            if top > self._hi[slot]:
                h = i + run_pu.index(top)
                self._hi[slot] = top
                bucket[_H] = (top, px[h])
                bucket[_H_TS] = ts[h]
            if low < self._lo[slot]:
                h = i + run_pu.index(low)
                self._lo[slot] = low
                bucket[_L] = (low, px[h])
                bucket[_L_TS] = ts[h]
            v, q = sum(run_qu), sum(map(mul, run_pu, run_qu))
            bucket[_V] += v
            bucket[_Q] += q
            bucket[_N] += j - i
            self._dp(bucket, max(run_qdp), max(map(add, pdp[i:j], run_qdp)))
            wh = self._wh
            if wh is not None and (top > wh or (top == wh and m0 < self._wh_m)):
                self._wh, self._wh_m = top, m0
            wl = self._wl
            if wl is not None and (low < wl or (low == wl and m0 < self._wl_m)):
                self._wl, self._wl_m = low, m0
            self._v += v
            self._q += q
            self._n += j - i
            self._dirty = True
            if self._clock >= self._next:
                out.append(self._emit())
            i = j
        return out

    def _add(self, b: list[Any], slot: int, ts: int, tid: str, px: str, pu: int, pdp: int,
             qu: int, qdp: int) -> None:
        """Account a trade in the existing bucket ``b`` of its minute."""
        if ts < b[_O_TS]:
            b[_O_TS] = ts
            b[_O] = px
            b[_O_U] = pu
            b[_O_DP] = pdp
            b[_O_ID] = tid
        hu = self._hi[slot]
        if pu > hu or (pu == hu and ts < b[_H_TS]):
            self._hi[slot] = pu
            b[_H] = (pu, px)
            b[_H_TS] = ts
        lu = self._lo[slot]
        if pu < lu or (pu == lu and ts < b[_L_TS]):
            self._lo[slot] = pu
            b[_L] = (pu, px)
            b[_L_TS] = ts
        b[_V] += qu
        b[_Q] += pu * qu
        b[_N] += 1
        self._dp(b, qdp, pdp + qdp)

    def _dp(self, b: list[Any], vdp: int, qdp: int) -> None:
        """Bucket ``b`` now has terms with ``vdp`` (``qdp``) decimals in its volume (quote)."""
        if vdp > b[_V_DP]:
            self._vdp[b[_V_DP]] -= 1
            self._vdp[vdp] += 1
            b[_V_DP] = vdp
        if qdp > b[_Q_DP]:
            self._qdp[b[_Q_DP]] -= 1
            self._qdp[qdp] += 1
            b[_Q_DP] = qdp

    def _sums(self, m: int, pu: int, qu: int) -> None:
        """Account an accepted trade of minute ``m`` in the window's extremes and sums."""
        wh = self._wh
        if wh is not None and (pu > wh or (pu == wh and m < self._wh_m)):
            self._wh = pu
            self._wh_m = m
        wl = self._wl
        if wl is not None and (pu < wl or (pu == wl and m < self._wl_m)):
            self._wl = pu
            self._wl_m = m
        self._v += qu
        self._q += pu * qu
        self._n += 1
        self._dirty = True

    def advance(self, now_ms: int) -> list[dict[str, Any]]:
        """Live mode: event time is at least ``now_ms``; emit the pending record if it is due."""
        if now_ms > self._clock:
            self._clock = now_ms
        if self._dirty and self._clock >= self._next:
            return [self._emit()]
        return []

    def flush(self) -> list[dict[str, Any]]:
        """End of input: emit the pending record, if any, regardless of the throttle."""
        return [self._emit()] if self._dirty else []

    settle = flush  # the end of the input for now (a live run's): the same, nothing ends

    def next_deadline(self) -> int | None:
        """Earliest event time (ms) at which ``advance`` would emit, or ``None``."""
        return self._next if self._dirty else None

    # -- internals ------------------------------------------------------------------------------
    def _late(self, t: Trade) -> dict[str, Any]:
        self.stats["late"] += 1
        start = self._open_t or 0
        reason = (f"late trade: ts {t.ts} is before the ticker window start {start} "
                  f"by {start - t.ts} ms")
        raw = orjson.dumps(encode_trade(t)).decode()
        return DeadLetter(reason, raw, f"{t.ex}:{t.sym}", "ticker").record()

    def _shift(self, new_open: int) -> None:
        """Move the window start to ``new_open``, subtracting the buckets that leave it."""
        old = self._open_t
        self._open_t = new_open
        if old is None:
            return
        buckets = self._b
        for m in range(old, min(new_open, old + BUCKETS * MINUTE), MINUTE):
            slot = (m // MINUTE) % BUCKETS
            b = buckets[slot]
            if b is None or b[_M] != m:
                continue
            self._v -= b[_V]
            self._q -= b[_Q]
            self._n -= b[_N]
            self._vdp[b[_V_DP]] -= 1
            self._qdp[b[_Q_DP]] -= 1
            self._hi[slot] = -1
            self._lo[slot] = _EMPTY_LO
            buckets[slot] = None
            if m == self._wh_m:
                self._wh = None
            if m == self._wl_m:
                self._wl = None
            if m == self._first_m:
                self._first_m = None

    def _slot_of(self, values: list[int], v: int) -> int:
        """The slot holding ``v`` that comes first in window order (the ring starts at openTime)."""
        s0 = ((self._open_t or 0) // MINUTE) % BUCKETS
        try:
            return values.index(v, s0)
        except ValueError:
            return values.index(v)

    def _at(self, m: int) -> list[Any]:
        """The bucket of minute ``m`` (or of any minute in its ring slot)."""
        b = self._b[(m // MINUTE) % BUCKETS]
        assert b is not None
        return b

    def _emit(self) -> dict[str, Any]:
        self._dirty = False
        self._next = self._clock + self._throttle
        self.stats["emitted"] += 1
        return self.record()

    def record(self) -> dict[str, Any]:
        """The ticker record of the current state (call only after a trade was accepted)."""
        buckets = self._b
        if self._first_m is None:
            s0 = ((self._open_t or 0) // MINUTE) % BUCKETS
            for s in chain(range(s0, BUCKETS), range(0, s0)):
                b = buckets[s]
                if b is not None:
                    self._first_m = b[_M]
                    break
        if self._wh is None:
            self._wh = max(self._hi)
            self._wh_m = self._at(self._slot_of(self._hi, self._wh) * MINUTE)[_M]
        if self._wl is None:
            self._wl = min(self._lo)
            self._wl_m = self._at(self._slot_of(self._lo, self._wl) * MINUTE)[_M]
        assert self._first_m is not None, "record() needs an accepted trade"
        first, high, low = self._at(self._first_m), self._at(self._wh_m), self._at(self._wl_m)
        last_ts, last_px, last_u, last_dp, last_id = self._last
        open_u = first[_O_U]
        change = last_u - open_u
        v, q = self._v, self._q
        return {"type": "ticker", "ex": self._ex, "sym": self._sym,
                "openTime": self._open_t, "closeTime": last_ts,
                "openPrice": first[_O], "highPrice": high[_H][1], "lowPrice": low[_L][1],
                "lastPrice": last_px,
                "volume": fmt(v, _top_dp(self._vdp)),
                "quoteVolume": fmt(q, _top_dp(self._qdp), _QSCALE),
                "priceChange": fmt(change, max(last_dp, first[_O_DP])),
                "priceChangePercent": round_half_even(100 * change, open_u, 8),
                "weightedAvgPrice": round_half_even(q, v * ONE, 8),
                "count": self._n, "firstId": first[_O_ID], "lastId": last_id}
