"""OHLCV candles of one symbol in event time: late data, duplicates, gap filling, throttled output.

``CandleState`` is what the candle flow keeps per ``ex:SYM``. It is pure: the flow feeds it trades
and, in live mode, the clock (``advance``); it returns the records of DESIGN.md "Outputs" to emit.

How it works, and why:

- Only one-minute candles are built from trades. Every configured interval is the fold of its
  one-minute candles (open of the first, close of the last, max, min, sums), so the rollup
  identity of DESIGN.md holds by construction, gap-filled minutes included.
- Event time. ``clock`` is the newest trade time seen (or the time given to ``advance``); the
  watermark is ``clock - lateness_ms``. A trade older than the watermark is late: counted and
  dead-lettered. A candle is closed once the watermark is past its ``T``; an accepted trade has
  ``ts >= watermark > T`` of every closed candle, so closed candles never change and are folded
  into their higher-interval candles and dropped from state at once (memory stays bounded: the
  open minutes, one sealed aggregate per open higher candle, and the ids below).
- Order. Within a candle, the open is the trade with the smallest ``ts`` (ties: first arrived),
  the close the one with the largest ``ts`` (ties: last arrived), the high/low the first of the
  extreme price in that same ``(ts, arrival)`` order (only visible when equal prices are printed
  differently, e.g. ``"1.5"`` and ``"1.50"``). Any reordering within the lateness that keeps trades
  with equal ``ts`` in their relative order therefore gives the same candles.
- Duplicates. The id of an accepted trade counts while its ``ts`` is at or after the watermark
  (the trades of the last ``lateness_ms`` of event time, plus any with a later ``ts``); ids the
  watermark passed are dropped in bulk once they outnumber the others (no per-trade upkeep).
  The late check comes first, so a re-sent trade older than what is kept is counted late, never
  counted twice (assuming a re-sent trade carries its original ``ts``).
- Gap filling. With ``fill_gaps``, a minute without trades between the first trade and the
  watermark is filled flat at the previous close (``v`` = ``q`` = ``"0"``, ``n`` = 0) when it
  closes; a higher candle is the fold of its minutes, so one whose first minutes are flat opens at
  the previous close, and a fully flat hour is flat. ``flush`` fills only up to the last trade's
  minute (no flat tail after the end of input). A gap longer than a week (``_MAX_FILL``) is
  filled for its first week only and the rest counted in ``stats["unfilled"]``: one trade stamped
  years off (a bad clock) would otherwise make millions of flat candles and stall the symbol.
- Emission. Per interval, changed candles are emitted with ``closed: false`` at most once per
  ``emit_interval_ms`` of event time (leading edge: at once after a quiet period; otherwise when
  the interval has passed, on the next trade, ``advance`` or ``flush``), and exactly once with
  ``closed: true`` when the watermark passes ``T``. Within one call: closed records first, then
  updates; each group by interval in configured order, then ``t``. Flat-only candles are emitted
  only when closed.
- ``flush`` ends the input: everything still open is emitted closed and the watermark moves past
  the last candle it closed (later trades falling into those candles would be late); gap filling
  stops there (it resumes, from the next trade on, if input continues).

>>> from operators.events import decode
>>> def trade(ts, i, px, qty):
...     return decode(f'{{"type":"trade","ex":"binance","sym":"ETH-USDT","ts":{ts},"rts":{ts},'
...                   f'"id":"{i}","px":"{px}","qty":"{qty}","side":"buy"}}')
>>> s = CandleState(CandleParams(intervals=("1m", "5m")))
>>> [(r["iv"], r["o"], r["v"], r["closed"]) for r in s.on_trade(trade(60_000, 1, "10.0", "1"))]
[('1m', '10.0', '1', False), ('5m', '10.0', '1', False)]
>>> s.on_trade(trade(60_500, 2, "12.50", "0.5"))  # throttled: within emit_interval_ms
[]
>>> [(r["iv"], r["t"], r["T"], r["h"], r["c"], r["v"], r["q"], r["n"], r["closed"])
...  for r in s.flush()]
[('1m', 60000, 119999, '12.50', '12.50', '1.5', '16.250', 2, True), \
('5m', 0, 299999, '12.50', '12.50', '1.5', '16.250', 2, True)]
>>> s.on_trade(trade(61_000, 3, "11", "1"))[0]["reason"]  # the watermark is past everything
'late trade: ts 61000 is behind the watermark 300000 by 239000 ms'
"""

# Stable module path and class names: stored recovery snapshots refer to them by name
# (operators.candles.CandleState / CandleParams). Renaming or moving them makes every existing
# snapshot unreadable; change the pickled layout only together with __setstate__.

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass
from itertools import islice
from operator import add, gt, mul
from typing import Any

import orjson

from operators.events import DeadLetter, Trade, TradeBatch, encode_trade
from operators.fixed import SCALE, fmt

try:
    from operators._native import candle_runs as _candle_runs  # on_trades' common runs
except ImportError:  # pragma: no cover - the pure-Python build
    _candle_runs = None  # type: ignore[assignment]

__all__ = ["MINUTE", "CandleParams", "CandleState", "parse_interval"]

MINUTE = 60_000
_UNIT_MS = {"s": 1_000, "m": MINUTE, "h": 3_600_000, "d": 86_400_000}
_INTERVAL = re.compile(r"([0-9]+)([smhd])\Z")
_NEG = -(1 << 62)
_INF = 1 << 62
_QSCALE = 2 * SCALE  # px * qty units
_PRUNE_MIN = 64  # stale ids tolerated before a bulk drop
_MAX_FILL = 7 * 1440  # flat minutes filled in one gap at most (a week; see "Gap filling")

# One candle as a mutable list (fast to update, small to pickle). Aggregates of several minutes
# use the same layout; their *_TS fields are then meaningless.
_O_TS, _O, _H_U, _H, _H_TS, _L_U, _L, _L_TS, _C_TS, _C_U, _C, _V, _V_DP, _Q, _Q_DP, _N = range(16)


def parse_interval(text: str) -> int:
    """Milliseconds of a candle interval such as ``"1m"``; candles are built from whole minutes.

    >>> parse_interval("1m"), parse_interval("4h"), parse_interval("1d"), parse_interval("120s")
    (60000, 14400000, 86400000, 120000)
    >>> parse_interval("30s")
    Traceback (most recent call last):
    ...
    ValueError: candle interval '30s' is not a whole number of minutes
    >>> parse_interval("1w")
    Traceback (most recent call last):
    ...
    ValueError: bad candle interval '1w': expected <number><s|m|h|d>, e.g. '5m'
    """
    m = _INTERVAL.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"bad candle interval {text!r}: expected <number><s|m|h|d>, e.g. '5m'")
    ms = int(m.group(1)) * _UNIT_MS[m.group(2)]
    if ms == 0 or ms % MINUTE:
        raise ValueError(f"candle interval {text!r} is not a whole number of minutes")
    return ms


@dataclass(frozen=True)
class CandleParams:
    """Candle settings. They are saved with the state: a state restored from a snapshot keeps
    the settings it was saved with (new intervals need a fresh recovery store)."""

    intervals: tuple[str, ...] = ("1m", "5m", "15m", "1h", "4h", "1d")
    lateness_ms: int = 2000
    emit_interval_ms: int = 1000
    fill_gaps: bool = True

    def __post_init__(self) -> None:
        if not self.intervals:
            raise ValueError("at least one candle interval is needed")
        ms = [parse_interval(i) for i in self.intervals]
        if len(set(ms)) != len(ms):
            raise ValueError(f"duplicate candle intervals: {list(self.intervals)}")
        if self.lateness_ms < 0 or self.emit_interval_ms < 0:
            raise ValueError("lateness_ms and emit_interval_ms must not be negative")


def _new(ts: int, px: str, pu: int, qu: int, qdp: int, pdp: int) -> list[Any]:
    return [ts, px, pu, px, ts, pu, px, ts, ts, pu, px, qu, qdp, pu * qu, pdp + qdp, 1]


def _flat(close_u: int, close: str, t: int) -> list[Any]:
    return [t, close, close_u, close, t, close_u, close, t, t, close_u, close, 0, 0, 0, 0, 0]


def _add(c: list[Any], ts: int, px: str, pu: int, pdp: int, qu: int, qdp: int) -> None:
    """Account a trade in the candle ``c`` of its minute (see "Order" above for the ties)."""
    if ts < c[_O_TS]:
        c[_O_TS] = ts
        c[_O] = px
    hu = c[_H_U]
    if pu > hu or (pu == hu and ts < c[_H_TS]):
        c[_H_U] = pu
        c[_H] = px
        c[_H_TS] = ts
    lu = c[_L_U]
    if pu < lu or (pu == lu and ts < c[_L_TS]):
        c[_L_U] = pu
        c[_L] = px
        c[_L_TS] = ts
    if ts >= c[_C_TS]:
        c[_C_TS] = ts
        c[_C_U] = pu
        c[_C] = px
    c[_V] += qu
    if qdp > c[_V_DP]:
        c[_V_DP] = qdp
    c[_Q] += pu * qu
    if pdp + qdp > c[_Q_DP]:
        c[_Q_DP] = pdp + qdp
    c[_N] += 1


def _fold(acc: list[Any], c: list[Any]) -> None:
    """Fold candle ``c`` (later in time) into ``acc``; ties on high/low keep the earlier one."""
    if c[_H_U] > acc[_H_U]:
        acc[_H_U] = c[_H_U]
        acc[_H] = c[_H]
    if c[_L_U] < acc[_L_U]:
        acc[_L_U] = c[_L_U]
        acc[_L] = c[_L]
    acc[_C_U] = c[_C_U]
    acc[_C] = c[_C]
    acc[_V] += c[_V]
    if c[_V_DP] > acc[_V_DP]:
        acc[_V_DP] = c[_V_DP]
    acc[_Q] += c[_Q]
    if c[_Q_DP] > acc[_Q_DP]:
        acc[_Q_DP] = c[_Q_DP]
    acc[_N] += c[_N]


class CandleState:
    """The candles of one symbol at every configured interval (see the module docstring)."""

    __slots__ = ("_clock", "_dirty", "_done", "_ex", "_fill", "_ids", "_ivs", "_last", "_late_ms",
                 "_marked", "_names", "_next", "_open", "_prune_at", "_sealed", "_soonest", "_sym",
                 "_throttle", "_wm", "params", "stats")

    def __init__(self, params: CandleParams) -> None:
        self._configure(params)
        self._ex = ""
        self._sym = ""
        self._clock = _NEG  # newest event time seen (trades and advance)
        self._wm = _NEG  # watermark
        self._done = _NEG  # every minute before this one is closed
        self._last: tuple[int, str] | None = None  # (units, string) close of the last closed minute
        self._open: dict[int, list[Any]] = {}  # minute start -> candle, minutes not closed yet
        n = len(self._ivs)
        self._sealed: list[dict[int, list[Any]]] = [{} for _ in range(n)]  # closed minutes, folded
        self._dirty: list[set[int]] = [set() for _ in range(n)]  # changed, not yet emitted
        self._next = [_NEG] * n  # per interval: clock from which an update may be emitted
        self._soonest = _INF  # min(self._next[i]) over intervals with dirty candles
        self._marked: int | None = None  # minute whose bucket is in every dirty set
        self._ids: dict[str, int] = {}  # id -> ts of accepted trades (those < watermark: stale)
        self._prune_at = _PRUNE_MIN  # drop the stale ids when there are more than this
        self.stats: dict[str, int] = {"trades": 0, "duplicates": 0, "late": 0, "emitted": 0,
                                      "filled": 0}

    def _configure(self, params: CandleParams) -> None:
        self.params = params
        self._names = tuple(params.intervals)
        self._ivs = tuple(parse_interval(i) for i in params.intervals)
        self._late_ms = params.lateness_ms
        self._throttle = params.emit_interval_ms
        self._fill = params.fill_gaps

    _PERSIST = ("_ex", "_sym", "_clock", "_wm", "_done", "_last", "_open", "_sealed", "_dirty",
                "_next", "_soonest", "_marked", "_ids", "stats")

    def __getstate__(self) -> tuple[Any, ...]:
        # Only the ids that count, in the order they were accepted: the snapshot of a state does
        # not depend on when stale ids happened to be dropped (a resumed flow's equals the
        # uninterrupted one's).
        wm = self._wm
        return (self.params, *({k: ts for k, ts in self._ids.items() if ts >= wm} if a == "_ids"
                               else getattr(self, a) for a in self._PERSIST))

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._configure(state[0])
        values = list(state[1:])
        if len(values) == len(self._PERSIST) + 1:  # written with a heap of (ts, id) after _ids
            del values[self._PERSIST.index("_ids") + 1]
        for a, v in zip(self._PERSIST, values, strict=True):
            setattr(self, a, v)
        self._prune_at = max(_PRUNE_MIN, 2 * len(self._ids))

    @property
    def watermark(self) -> int | None:
        """Current watermark (event-time ms), ``None`` before the first trade or clock tick."""
        return None if self._wm == _NEG else self._wm

    # -- input -----------------------------------------------------------------------------------
    def on_trade(self, t: Trade) -> list[dict[str, Any]]:
        """Account one trade; return the records (candles, dead letters) to emit now."""
        ts = t.ts
        if ts < self._wm:
            return [self._late(t)]
        tid = t.id
        ids = self._ids
        seen = ids.get(tid)
        if seen is not None:
            if seen >= self._wm:
                self.stats["duplicates"] += 1
                return []
            del ids[tid]  # stale (before the watermark): re-accepted, last in acceptance order
        ids[tid] = ts
        if not self._ex:
            self._ex, self._sym = t.ex, t.sym
        self.stats["trades"] += 1
        out: list[dict[str, Any]] = []
        if ts > self._clock:
            self._clock = ts
            self._move(ts - self._late_ms, out)
        m = ts - ts % MINUTE
        c = self._open.get(m)
        pu = t.px_u
        if c is None:
            self._open[m] = _new(ts, t.px, pu, t.qty_u, t.qty_dp, t.px_dp)
        else:
            _add(c, ts, t.px, pu, t.px_dp, t.qty_u, t.qty_dp)
        if m == self._marked and self._clock < self._soonest:
            if out:
                self.stats["emitted"] += len(out)
            return out  # its buckets are already pending and no interval is due
        for i, iv in enumerate(self._ivs):
            self._dirty[i].add(m - m % iv)
        self._marked = m
        self._emit_due(out)
        self.stats["emitted"] += len(out)
        return out

    def on_trades(self, b: TradeBatch) -> list[dict[str, Any]]:
        """``on_trade`` of every trade of ``b`` in order, the records concatenated.

        A run of trades in ``ts`` order, from the clock on, into an open minute, closing none, is
        the common case: no trade of it is late, each moves the clock, none changes the open, the
        first highest (lowest) price is its high (low) and the last its close. It is folded into
        its candle at once, with C-level ``max``/``min``/``sum`` over the batch's columns, and
        ends with the first trade at which updates are due, emitted after it as ``on_trade``
        would. Every other trade goes through ``on_trade`` itself. Where operators/_native.c is
        built, ``candle_runs`` folds such runs in C, statement for statement the same.
        """
        out: list[dict[str, Any]] = []
        ts, tids, px, pu, pdp, qu, qdp = b.ts, b.ids, b.px, b.px_u, b.px_dp, b.qty_u, b.qty_dp
        n = len(ts)
        down: list[bool] | None = None  # built when first needed (the compiled runs do not)
        ids, opened = self._ids, self._open
        i = 0
        while i < n:
            if _candle_runs is not None:  # the common runs, compiled (operators/_native.c)
                j = _candle_runs(self, b, i)
                if j > i:
                    i = j
                    t = ts[j - 1]
                    m0 = t - t % MINUTE
                    if m0 != self._marked or self._clock >= self._soonest:
                        self._mark(m0, out)
                    continue
            j = i
            t0, clock = ts[i], self._clock
            m0 = t0 - t0 % MINUTE
            c = opened.get(m0)
            if c is not None and t0 >= clock:
                # updates are due from: the soonest throttle of the dirty intervals, all of them
                # once this minute is marked dirty in each
                due = self._soonest if m0 == self._marked else min(self._next)
                end = min(m0 + MINUTE, self._done + MINUTE + self._late_ms)  # no minute closes
                if down is None:
                    # down[k]: ts[k + 1] < ts[k] (or k is the last): a run from i ends by
                    # down.index(True, i)
                    down = [*map(gt, ts, islice(ts, 1, None)), True]
                j = bisect_left(ts, end, i, down.index(True, i) + 1)
                j = min(j, bisect_left(ts, due, i, j) + 1)
            run_ids = tids[i:j]
            if j == i or not ids.keys().isdisjoint(run_ids) or len(set(run_ids)) < j - i:
                out.extend(self.on_trade(b.trade(i)))  # not a run, or an id seen (or stale)
                i += 1
                continue
            assert c is not None
            run_pu, run_qu, run_qdp = pu[i:j], qu[i:j], qdp[i:j]
            top = max(run_pu)
            if top > c[_H_U]:
                k = i + run_pu.index(top)
                c[_H_U], c[_H], c[_H_TS] = top, px[k], ts[k]
            low = min(run_pu)
            if low < c[_L_U]:
                k = i + run_pu.index(low)
                c[_L_U], c[_L], c[_L_TS] = low, px[k], ts[k]
            k = j - 1
            c[_C_TS], c[_C_U], c[_C] = ts[k], pu[k], px[k]
            c[_V] += sum(run_qu)
            c[_V_DP] = max(c[_V_DP], max(run_qdp))
            c[_Q] += sum(map(mul, run_pu, run_qu))
            c[_Q_DP] = max(c[_Q_DP], max(map(add, pdp[i:j], run_qdp)))
            c[_N] += j - i
            ids.update(zip(run_ids, ts[i:j], strict=True))
            self.stats["trades"] += j - i
            if ts[k] > clock:
                self._clock = ts[k]
                self._move(ts[k] - self._late_ms, out)  # prunes ids; closes nothing before end
            if m0 != self._marked or self._clock >= self._soonest:
                self._mark(m0, out)
            i = j
        return out

    def _mark(self, m0: int, out: list[dict[str, Any]]) -> None:
        """Minute ``m0`` changed: its candle of every interval is pending; emit what is due."""
        for x, iv in enumerate(self._ivs):
            self._dirty[x].add(m0 - m0 % iv)
        self._marked = m0
        before = len(out)
        self._emit_due(out)
        self.stats["emitted"] += len(out) - before

    def advance(self, now_ms: int) -> list[dict[str, Any]]:
        """Live mode: event time is at least ``now_ms``. Close what the watermark passed and emit
        the throttled updates whose time has come."""
        out: list[dict[str, Any]] = []
        if now_ms > self._clock:
            self._clock = now_ms
            self._move(now_ms - self._late_ms, out)
        self._emit_due(out)
        self.stats["emitted"] += len(out)
        return out

    def flush(self) -> list[dict[str, Any]]:
        """End of input: emit every open or pending candle closed; the state is final after it."""
        out: list[dict[str, Any]] = []
        if self._open:
            self._close_until(max(self._open) + MINUTE, out)
        end = _NEG
        for i, sealed in enumerate(self._sealed):
            iv = self._ivs[i]
            for b in sorted(sealed):
                out.append(self._record(i, b, sealed[b], True))
                end = max(end, b + iv)
            sealed.clear()
            self._dirty[i].clear()
        self._soonest = _INF
        self._marked = None
        pos = {name: i for i, name in enumerate(self._names)}
        out.sort(key=lambda r: (pos[r["iv"]], r["t"]))
        self._last = None  # no flat minutes after the end of input
        if end > self._wm:
            self._done = max(self._done, end)
            self._clock = max(self._clock, end + self._late_ms)
            self._move(end, out)
        self.stats["emitted"] += len(out)
        return out

    def settle(self) -> list[dict[str, Any]]:
        """The end of the input for now, not of time (a live run stopped at the end of its
        partitions, a backfill): emit the throttled updates at once, close nothing the
        watermark has not passed. ``flush`` would close today's candles, and the state would
        carry them closed into the next run."""
        out: list[dict[str, Any]] = []
        self._next = [_NEG] * len(self._ivs)
        self._emit_due(out)
        self.stats["emitted"] += len(out)
        return out

    def next_deadline(self) -> int | None:
        """Earliest event time (ms) at which ``advance`` would emit something, or ``None``."""
        best = self._soonest
        lat = self._late_ms
        start: int | None = None  # the next minute to close
        if self._fill and self._last is not None:
            start = self._done
        elif self._open:
            start = min(self._open)
        if start is not None:
            best = min(best, start + MINUTE + lat)
        for i, iv in enumerate(self._ivs):
            sealed = self._sealed[i]
            if sealed:
                b = min(sealed)
            elif start is not None:
                b = start - start % iv
            else:
                continue
            best = min(best, b + iv + lat)
        return None if best >= _INF else best

    # -- internals ------------------------------------------------------------------------------
    def _late(self, t: Trade) -> dict[str, Any]:
        self.stats["late"] += 1
        reason = (f"late trade: ts {t.ts} is behind the watermark {self._wm} "
                  f"by {self._wm - t.ts} ms")
        raw = orjson.dumps(encode_trade(t)).decode()
        return DeadLetter(reason, raw, f"{t.ex}:{t.sym}", "candles").record()

    def _move(self, wm: int, out: list[dict[str, Any]]) -> None:
        """Raise the watermark to ``wm``: close the minutes it passed, drop stale ids in bulk."""
        if wm <= self._wm:
            return
        self._wm = wm
        ids = self._ids
        if len(ids) > self._prune_at:  # amortized O(1) a trade; in place: callers hold ``ids``
            live = {tid: ts for tid, ts in ids.items() if ts >= wm}
            ids.clear()
            ids.update(live)
            self._prune_at = max(_PRUNE_MIN, 2 * len(live))
        bound = wm - wm % MINUTE
        if bound > self._done:
            self._close_until(bound, out)

    def _close_until(self, bound: int, out: list[dict[str, Any]]) -> None:
        """Close every minute before ``bound`` (filling gaps), then the candles that end by it."""
        opened = self._open
        if self._fill and self._last is not None:
            m = self._done  # every minute from here on is either open or a gap to fill
        else:
            m = min((k for k in opened if k < bound), default=bound)
        gap_end = fill_end = m  # the gap being filled: its end, and where filling stops in it
        while m < bound:
            c = opened.pop(m, None)
            if c is None:
                if not self._fill or self._last is None:
                    m = min((k for k in opened if k < bound), default=bound)
                    continue
                if m >= gap_end:  # a new gap: up to the next minute with trades, or the bound
                    gap_end = min((k for k in opened if m < k < bound), default=bound)
                    fill_end = min(gap_end, m + _MAX_FILL * MINUTE)
                if m >= fill_end:  # the rest of a gap longer than _MAX_FILL stays unfilled
                    self.stats["unfilled"] = self.stats.get("unfilled", 0) + (gap_end - m) // MINUTE
                    m = gap_end
                    continue
                c = _flat(self._last[0], self._last[1], m)
                self.stats["filled"] += 1
            self._seal(m, c)
            self._last = (c[_C_U], c[_C])
            m += MINUTE
        if bound > self._done:
            self._done = bound
        self._marked = None
        for i, sealed in enumerate(self._sealed):
            iv = self._ivs[i]
            dirty = self._dirty[i]
            for b in sorted(b for b in sealed if b + iv <= bound):
                out.append(self._record(i, b, sealed.pop(b), True))
                dirty.discard(b)
        self._soonest = min((self._next[i] for i, d in enumerate(self._dirty) if d), default=_INF)

    def _seal(self, m: int, c: list[Any]) -> None:
        """Fold the closed minute ``m`` into the sealed aggregate of every interval."""
        for i, iv in enumerate(self._ivs):
            b = m - m % iv
            sealed = self._sealed[i]
            acc = sealed.get(b)
            if acc is None:
                sealed[b] = c.copy()
                if c[_N] == 0 and any(b <= k < b + iv for k in self._open):
                    self._dirty[i].add(b)  # a flat first minute changes a candle with trades
            else:
                _fold(acc, c)

    def _emit_due(self, out: list[dict[str, Any]]) -> None:
        """Emit the pending updates of every interval whose throttle allows it now."""
        clock = self._clock
        soonest = _INF
        minutes: list[int] | None = None  # the open minutes, in order, once needed
        for i, dirty in enumerate(self._dirty):
            if not dirty:
                continue
            nxt = self._next[i]
            if clock >= nxt:
                if minutes is None:
                    minutes = sorted(self._open)
                for b in sorted(dirty):
                    acc = self._current(i, b, minutes)
                    if acc is not None:
                        out.append(self._record(i, b, acc, False))
                dirty.clear()
                self._next[i] = clock + self._throttle
                self._marked = None
            elif nxt < soonest:
                soonest = nxt
        self._soonest = soonest

    def _current(self, i: int, b: int, minutes: list[int]) -> list[Any] | None:
        """The candle of interval ``i`` opening at ``b`` as known now (not closed); ``minutes``
        are the open minutes in order. Read it, do not change it: it may be an open minute's."""
        iv = self._ivs[i]
        if iv == MINUTE:
            return self._open.get(b)
        acc = self._sealed[i].get(b)
        copied = False
        for m in minutes[bisect_left(minutes, b):bisect_left(minutes, b + iv)]:
            if acc is None:
                acc = self._open[m]
            else:
                if not copied:
                    acc, copied = acc.copy(), True
                _fold(acc, self._open[m])
        return acc

    def _record(self, i: int, b: int, a: list[Any], closed: bool) -> dict[str, Any]:
        return {"type": "candle", "ex": self._ex, "sym": self._sym, "iv": self._names[i],
                "t": b, "T": b + self._ivs[i] - 1, "o": a[_O], "h": a[_H], "l": a[_L],
                "c": a[_C], "v": fmt(a[_V], a[_V_DP]), "q": fmt(a[_Q], a[_Q_DP], _QSCALE),
                "n": a[_N], "closed": closed}
