"""Brute-force reference models of candles and tickers over ``decimal.Decimal``.

Slow and obvious on purpose: every result is recomputed from the full list of accepted trades,
with exact decimals (a 200-digit context, so sums and products never round). The operators in
``operators/candles.py`` and ``operators/ticker.py`` must agree with these to the last character.

Order conventions shared with the operators: trades are ordered by ``(ts, arrival)``; open = first,
close = last, high/low = the first trade with the extreme price in that order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

from operators.events import Trade

__all__ = [
    "MINUTE",
    "accept_candles",
    "accept_ticker",
    "as_str",
    "fold_candles",
    "interval_ms",
    "ref_candles",
    "ref_minutes",
    "ref_ticker",
]

MINUTE = 60_000
_UNITS = {"s": 1_000, "m": MINUTE, "h": 3_600_000, "d": 86_400_000}
_PREC = 200
_EIGHT = Decimal("1e-8")


def interval_ms(text: str) -> int:
    """``"5m"`` -> 300000 (independent of ``operators.candles.parse_interval``)."""
    return int(text[:-1]) * _UNITS[text[-1]]


def as_str(d: Decimal) -> str:
    """Plain notation, as the operators print (never ``1E-7``, never ``-0``)."""
    s = format(d, "f")
    if d == 0 and s.startswith("-"):
        s = s[1:]
    return s


def _ordered(trades: Iterable[Trade]) -> list[Trade]:
    return sorted(trades, key=lambda t: t.ts)  # stable: equal ts keep arrival order


# -- candles ----------------------------------------------------------------------------------
def accept_candles(trades: Sequence[Trade], lateness_ms: int) -> tuple[list[Trade], list[Trade],
                                                                          list[Trade]]:
    """Split ``trades`` (in arrival order) into (accepted, late, duplicates).

    Late: ``ts`` < newest ``ts`` seen so far − lateness. Duplicate: an accepted trade had that id.
    """
    accepted: list[Trade] = []
    late: list[Trade] = []
    dups: list[Trade] = []
    seen: set[str] = set()
    newest: int | None = None
    for t in trades:
        if newest is not None and t.ts < newest - lateness_ms:
            late.append(t)
        elif t.id in seen:
            dups.append(t)
        else:
            seen.add(t.id)
            accepted.append(t)
            newest = t.ts if newest is None else max(newest, t.ts)
    return accepted, late, dups


def _candle(group: list[Trade]) -> dict[str, Any]:
    """Decimal candle of trades already in (ts, arrival) order."""
    prices = [Decimal(t.px) for t in group]
    hi = max(range(len(group)), key=lambda i: prices[i])  # max/min return the first extreme
    lo = min(range(len(group)), key=lambda i: prices[i])
    return {"o": group[0].px, "h": group[hi].px, "l": group[lo].px, "c": group[-1].px,
            "v": sum((Decimal(t.qty) for t in group), Decimal(0)),
            "q": sum((Decimal(t.px) * Decimal(t.qty) for t in group), Decimal(0)),
            "n": len(group)}


def ref_minutes(accepted: Sequence[Trade], fill_gaps: bool = True) -> dict[int, dict[str, Any]]:
    """Final one-minute candles (Decimal ``v``/``q``) by open time, gaps filled if asked."""
    with localcontext() as ctx:
        ctx.prec = _PREC
        groups: dict[int, list[Trade]] = {}
        for t in _ordered(accepted):
            groups.setdefault(t.ts - t.ts % MINUTE, []).append(t)
        out = {m: _candle(g) for m, g in groups.items()}
    if fill_gaps and out:
        prev = None
        for m in range(min(out), max(out) + MINUTE, MINUTE):
            if m not in out:
                assert prev is not None
                c = prev["c"]
                out[m] = {"o": c, "h": c, "l": c, "c": c, "v": Decimal(0), "q": Decimal(0),
                          "n": 0}
            prev = out[m]
    return dict(sorted(out.items()))


def fold_candles(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate consecutive candles (Decimal or string ``v``/``q``): the rollup of DESIGN.md."""
    with localcontext() as ctx:
        ctx.prec = _PREC
        hs = [Decimal(p["h"]) for p in parts]
        ls = [Decimal(p["l"]) for p in parts]
        hi = max(range(len(parts)), key=lambda i: hs[i])
        lo = min(range(len(parts)), key=lambda i: ls[i])
        return {"o": parts[0]["o"], "h": parts[hi]["h"], "l": parts[lo]["l"],
                "c": parts[-1]["c"],
                "v": sum((Decimal(p["v"]) for p in parts), Decimal(0)),
                "q": sum((Decimal(p["q"]) for p in parts), Decimal(0)),
                "n": sum(p["n"] for p in parts)}


def ref_candles(accepted: Sequence[Trade], intervals: Sequence[str],
                fill_gaps: bool = True) -> dict[tuple[str, int], dict[str, Any]]:
    """Final candle records (``closed: true``) keyed by ``(iv, t)`` for every interval."""
    if not accepted:
        return {}
    ex, sym = accepted[0].ex, accepted[0].sym
    minutes = ref_minutes(accepted, fill_gaps)
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for name in intervals:
        iv = interval_ms(name)
        buckets: dict[int, list[dict[str, Any]]] = {}
        for m, c in minutes.items():
            buckets.setdefault(m - m % iv, []).append(c)
        for t, parts in sorted(buckets.items()):
            a = fold_candles(parts)
            out[(name, t)] = {"type": "candle", "ex": ex, "sym": sym, "iv": name, "t": t,
                              "T": t + iv - 1, "o": a["o"], "h": a["h"], "l": a["l"],
                              "c": a["c"], "v": as_str(a["v"]), "q": as_str(a["q"]),
                              "n": a["n"], "closed": True}
    return out


# -- ticker -----------------------------------------------------------------------------------
def accept_ticker(trades: Sequence[Trade], dedup_ms: int) -> list[tuple[Trade, str]]:
    """Verdict per trade in arrival order: ``"ok"``, ``"late"`` or ``"duplicate"``.

    Late: ``ts`` before the window start of the last trade so far. Duplicate: an accepted trade
    with that id and ``ts`` >= (newest ``ts`` so far − ``dedup_ms``).
    """
    out: list[tuple[Trade, str]] = []
    seen: dict[str, int] = {}  # id -> newest ts among accepted trades with that id
    last: Trade | None = None
    newest: int | None = None
    for t in trades:
        start = None if last is None else last.ts - last.ts % MINUTE - 1439 * MINUTE
        if start is not None and t.ts < start:
            out.append((t, "late"))
            continue
        horizon = None if newest is None else newest - dedup_ms
        if t.id in seen and (horizon is None or seen[t.id] >= horizon):
            out.append((t, "duplicate"))
            continue
        seen[t.id] = max(seen.get(t.id, t.ts), t.ts)
        out.append((t, "ok"))
        newest = t.ts if newest is None else max(newest, t.ts)
        if last is None or t.ts >= last.ts:
            last = t
    return out


def ref_ticker(accepted: Sequence[Trade]) -> dict[str, Any]:
    """The ticker record of the accepted trades (arrival order), recomputed from scratch."""
    ordered = _ordered(accepted)
    last = ordered[-1]
    open_t = last.ts - last.ts % MINUTE - 1439 * MINUTE
    win = [t for t in ordered if open_t <= t.ts <= last.ts]
    with localcontext() as ctx:
        ctx.prec = _PREC
        a = _candle(win)
        first = win[0]
        change = Decimal(last.px) - Decimal(first.px)
        pct = (Decimal(100) * change / Decimal(first.px)).quantize(_EIGHT, ROUND_HALF_EVEN)
        wavg = (a["q"] / a["v"]).quantize(_EIGHT, ROUND_HALF_EVEN)
        return {"type": "ticker", "ex": last.ex, "sym": last.sym, "openTime": open_t,
                "closeTime": last.ts, "openPrice": first.px, "highPrice": a["h"],
                "lowPrice": a["l"], "lastPrice": last.px, "volume": as_str(a["v"]),
                "quoteVolume": as_str(a["q"]), "priceChange": as_str(change),
                "priceChangePercent": as_str(pct), "weightedAvgPrice": as_str(wavg),
                "count": len(win), "firstId": first.id, "lastId": last.id}
