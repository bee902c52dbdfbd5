"""The canonical events of DESIGN.md: decode, validate, encode.

Decoding never raises: bad input becomes a :class:`DeadLetter` carrying the reason, so that a flow
counts and forwards it instead of dying. Prices and quantities are kept both as the exchange's
string (printed back untouched) and as exact fixed-point units (see :mod:`operators.fixed`).

>>> e = decode(b'{"type":"trade","ex":"binance","sym":"BTC-USDT","ts":1,"rts":2,'
...            b'"id":"7","px":"43000.10","qty":"0.015","side":"buy"}')
>>> e.key, e.px, e.px_u
('binance:BTC-USDT', '43000.10', 43000100000000000000000)
>>> decode(b'{"type":"trade","ex":"binance"}').reason
'trade: missing field sym'

Canonical trades take a fast path; any other spelling of the same JSON decodes to the same trade:

>>> canon = (b'{"type":"trade","ex":"okx","sym":"ETH-USDT","ts":5,"rts":6,"id":"a b",'
...          b'"px":"2.50","qty":"1","side":"sell"}')
>>> _fast_trade(canon.decode()) is not None, _fast_trade(canon.decode().replace(":", ": "))
(True, None)
>>> decode(canon) == decode(canon.decode().replace(":", ": ")) == decode_obj(orjson.loads(canon))
True
>>> decode(canon.replace(b'"1"', b'"-1"')).reason  # fast path declines, full path words it
"trade: quantity must be positive, got '-1'"
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson

from operators.fixed import DecimalError, parse

try:  # the compiled trade scanner, where built (pip install -e .); same results without it
    from operators import _native
except ImportError:  # pragma: no cover - a checkout that was not built
    _native = None  # type: ignore[assignment]
NATIVE = _native is not None  # whether the compiled scanners are in use (flows log it if not)

__all__ = [
    "ACTIONS",
    "MAX_INT",
    "MAX_TS",
    "NATIVE",
    "BookEvent",
    "DeadLetter",
    "Event",
    "Level",
    "Memo",
    "Trade",
    "TradeBatch",
    "book_levels",
    "clear_caches",
    "decode",
    "decode_obj",
    "decode_trades",
    "encode",
    "encode_book_event",
    "encode_trade",
    "px_units",
    "qty_units",
]

ACTIONS = frozenset({"snapshot", "update", "insert", "delete"})
SIDES = frozenset({"buy", "sell"})
_SYM = re.compile(r"[A-Z0-9]+-[A-Z0-9]+\Z")
_EX = re.compile(r"[a-z0-9_]+\Z")

# A level as carried by an event: (price units, price string, quantity units, quantity string).
Level = tuple[int, str, int, str]


@dataclass(slots=True)
class Trade:
    """One trade. ``px_u``/``qty_u`` are exact units, ``px``/``qty`` the exchange's strings."""

    ex: str
    sym: str
    ts: int
    rts: int
    id: str
    px: str
    qty: str
    side: str
    px_u: int = 0
    qty_u: int = 0
    px_dp: int = 0
    qty_dp: int = 0

    @property
    def key(self) -> str:
        return f"{self.ex}:{self.sym}"


@dataclass(slots=True)
class BookEvent:
    """One order book event: a snapshot or a batch of level changes after which ``seq`` holds."""

    ex: str
    sym: str
    ts: int
    rts: int
    action: str
    seq: int
    prev_seq: int | None
    bids: list[Level] = field(default_factory=list)
    asks: list[Level] = field(default_factory=list)
    checksum: int | None = None

    @property
    def key(self) -> str:
        return f"{self.ex}:{self.sym}"


@dataclass(slots=True)
class DeadLetter:
    """Input we refused, with the reason; goes to ``md.deadletter`` (or the replay output)."""

    reason: str
    raw: str
    key: str | None = None
    stage: str = "decode"

    def record(self) -> dict[str, Any]:
        return {"type": "deadletter", "stage": self.stage, "key": self.key,
                "reason": self.reason, "raw": self.raw}


Event = Trade | BookEvent


class _Invalid(ValueError):
    pass


MAX_INT = 2**63 - 1  # integers of events fit a signed 64-bit field (and every JSON encoder)
MAX_TS = 10**13 - 1  # ms since the epoch have 13 digits until 2286: a µs or ns time is refused


def _int(obj: dict[str, Any], name: str, kind: str, optional: bool = False,
         most: int = MAX_INT) -> int | None:
    v = obj.get(name)
    if v is None:
        if optional:
            return None
        raise _Invalid(f"{kind}: missing field {name}")
    if type(v) is not int or v < 0:
        raise _Invalid(f"{kind}: {name} must be a non-negative integer, got {v!r:.40}")
    if v > most:
        what = "milliseconds since the epoch" if most == MAX_TS else "a 64-bit integer"
        raise _Invalid(f"{kind}: {name} must be {what} (at most {most}), got {v!r:.40}")
    return v


def _str(obj: dict[str, Any], name: str, kind: str) -> str:
    v = obj.get(name)
    if v is None:
        raise _Invalid(f"{kind}: missing field {name}")
    if type(v) is not str or not v:
        raise _Invalid(f"{kind}: {name} must be a non-empty string, got {v!r:.40}")
    return v


class Memo(dict[Any, Any]):
    """A bounded cache ``key -> compute(key)`` filled on a miss, in one C-level lookup on a hit.

    ``compute`` raises for a key it refuses (nothing is stored), so a hit can also mean
    "valid". Cleared when full: it is only a cache. :func:`clear_caches` empties every memo
    (benchmarks measure cold runs with it).
    """

    __slots__ = ("compute",)
    MAX = 200_000

    def __init__(self, compute: Callable[[Any], Any]) -> None:
        super().__init__()
        self.compute = compute
        _MEMOS.append(self)

    def __missing__(self, key: Any) -> Any:
        value = self.compute(key)
        if len(self) >= self.MAX:
            self.clear()
        self[key] = value
        return value


_MEMOS: list[Memo] = []


def clear_caches() -> None:
    """Forget every memoized string (as a new process would start)."""
    for m in _MEMOS:
        m.clear()


def _units_at_least(least: int) -> Callable[[Any], int]:
    def units(text: Any) -> int:
        try:
            u = parse(text)[0]
        except DecimalError:
            raise KeyError(text) from None
        if u < least:
            raise KeyError(text)
        return u
    return units


# Exact units of the price and quantity strings seen so far: books repeat the same strings all the
# time, so each is parsed once, and a hit is also a validation.
_PX = Memo(_units_at_least(1))  # prices: > 0
_QTY = Memo(_units_at_least(0))  # quantities: >= 0
_PARSED = Memo(parse)  # (units, decimals): trades need both, their records print sums


def _parse(text: Any) -> tuple[int, int]:
    """``parse``, memoized for strings (one that ``parse`` refuses raises and is not stored)."""
    return _PARSED[text] if type(text) is str else parse(text)


def px_units(text: Any) -> int | None:
    """Units of a valid price (a decimal string > 0), else ``None``."""
    try:
        return _PX[text]
    except (KeyError, TypeError):
        return None


def qty_units(text: Any) -> int | None:
    """Units of a valid quantity (a decimal string >= 0), else ``None``."""
    try:
        return _QTY[text]
    except (KeyError, TypeError):
        return None


def _book_levels_py(raw: Any) -> list[Level] | None:
    """The :data:`Level`\\ s of ``[[px, qty], ...]``, as ``decode_obj`` would build them.

    ``None`` when the levels are not plainly valid pairs (not a list of two-element lists, a bad
    decimal, a price not positive, a negative quantity): the caller then asks ``decode_obj``,
    which accepts what it accepts and words the reason of the rest.
    """
    if type(raw) is not list:
        return None
    if not raw:  # one side of most small updates
        return []
    try:
        for lv in raw:
            if type(lv) is not list:
                return None
        pxs, qtys = _PX, _QTY
        return [(pxs[px], px, qtys[qty], qty) for px, qty in raw]
    except (KeyError, TypeError, ValueError):
        return None


# ``book_levels(raw)``: the compiled loop where built (a C-level partial, no Python frame), else
# the pure-Python one above; tests/test_native.py checks they agree.
book_levels: Callable[[Any], list[Level] | None] = (
    _book_levels_py if _native is None else partial(_native.book_levels, _PX, _QTY))


def _levels(obj: dict[str, Any], name: str) -> list[Level]:
    raw = obj.get(name, [])
    if type(raw) is not list:
        raise _Invalid(f"book: {name} must be a list of [price, quantity]")
    out: list[Level] = []
    append = out.append
    try:
        for lv in raw:
            if type(lv) is not list or len(lv) < 2:
                raise _Invalid(f"book: {name} level must be [price, quantity], got {lv!r:.40}")
            px, qty = lv[0], lv[1]
            pu = _parse(px)[0]
            qu = _parse(qty)[0]
            if pu <= 0:
                raise _Invalid(f"book: {name} price must be positive, got {px!r}")
            if qu < 0:
                raise _Invalid(f"book: {name} quantity must not be negative, got {qty!r}")
            append((pu, px, qu, qty))
    except DecimalError as e:
        raise _Invalid(f"book: {name} {e}") from None
    return out


def _header(obj: dict[str, Any], kind: str) -> tuple[str, str, int, int]:
    ex = _str(obj, "ex", kind)
    sym = _str(obj, "sym", kind)
    if not _EX.match(ex):
        raise _Invalid(f"{kind}: exchange must be lower case [a-z0-9_], got {ex!r:.40}")
    if not _SYM.match(sym):
        raise _Invalid(f"{kind}: symbol must be BASE-QUOTE in upper case, got {sym!r:.40}")
    ts = _int(obj, "ts", kind, most=MAX_TS)
    rts = _int(obj, "rts", kind, most=MAX_TS)
    return ex, sym, ts, rts  # type: ignore[return-value]


def _trade(obj: dict[str, Any]) -> Trade:
    ex, sym, ts, rts = _header(obj, "trade")
    tid = obj.get("id")
    if type(tid) is int:
        tid = str(tid)
    elif type(tid) is not str or not tid:
        raise _Invalid("trade: missing field id" if tid is None else f"trade: bad id {tid!r:.40}")
    px, qty = _str(obj, "px", "trade"), _str(obj, "qty", "trade")
    try:
        pu, pdp = _parse(px)
        qu, qdp = _parse(qty)
    except DecimalError as e:
        raise _Invalid(f"trade: {e}") from None
    if pu <= 0:
        raise _Invalid(f"trade: price must be positive, got {px!r}")
    if qu <= 0:
        raise _Invalid(f"trade: quantity must be positive, got {qty!r}")
    side = obj.get("side")
    if type(side) is not str or side not in SIDES:  # a list here is unhashable
        raise _Invalid(f"trade: side must be buy or sell, got {side!r:.40}")
    return Trade(ex, sym, ts, rts, tid, px, qty, side, pu, qu, pdp, qdp)


def _book(obj: dict[str, Any]) -> BookEvent:
    ex, sym, ts, rts = _header(obj, "book")
    action = obj.get("action")
    if type(action) is not str or action not in ACTIONS:
        raise _Invalid(f"book: unknown action {action!r:.40}")
    seq = _int(obj, "seq", "book")
    prev = _int(obj, "prev_seq", "book", optional=True)
    checksum = obj.get("checksum")
    if checksum is not None and (type(checksum) is not int or abs(checksum) > MAX_INT):
        raise _Invalid(f"book: checksum must be a 64-bit integer, got {checksum!r:.40}")
    bids = book_levels(obj.get("bids", []))  # plainly valid levels, in one pass; else the
    asks = book_levels(obj.get("asks", []))  # checks of _levels, which word the reason
    return BookEvent(ex, sym, ts, rts, action, seq, prev,  # type: ignore[arg-type]
                     _levels(obj, "bids") if bids is None else bids,
                     _levels(obj, "asks") if asks is None else asks, checksum)


def decode_obj(obj: Any, raw: str = "") -> Event | DeadLetter:
    """Validate an already parsed JSON value."""
    if type(obj) is not dict:
        return DeadLetter("event must be a JSON object", raw or f"<{type(obj).__name__}>")
    kind = obj.get("type")
    try:
        if kind == "trade":
            return _trade(obj)
        if kind == "book":
            return _book(obj)
        raise _Invalid(f"unknown event type {kind!r:.40}")
    except _Invalid as e:
        key = None
        if isinstance(obj.get("ex"), str) and isinstance(obj.get("sym"), str):
            key = f"{obj['ex']}:{obj['sym']}"
        # ``raw`` as given (``decode`` fills in the message's text): never a re-encoding of
        # ``obj``, whose nesting orjson.loads allows deeper than orjson.dumps survives.
        return DeadLetter(str(e), raw, key)


# The canonical trade exactly as ingestion prints it (field order of ``encode_trade``, compact, no
# escapes, times of at most 13 digits: ``MAX_TS``). Whatever matches is valid JSON that
# ``orjson`` would decode to these same strings and integers, and its ``ex``/``sym`` pass
# ``_EX``/``_SYM``: ``decode`` then checks only the numbers. Everything else (other shapes,
# spacing, escapes, non-ASCII, any failed check) takes the full path below, which alone words the
# dead-letter reasons.
_FAST_TRADE = re.compile(
    r'\{"type":"trade","ex":"([a-z0-9_]+)","sym":"([A-Z0-9]+-[A-Z0-9]+)",'
    r'"ts":(0|[1-9][0-9]{0,12}),"rts":(0|[1-9][0-9]{0,12}),"id":"([ !#-\[\]-~]+)",'
    r'"px":"([0-9.]+)","qty":"([0-9.]+)","side":"(buy|sell)"\}[ \t\r\n]*\Z'
)


def _fast_trade(text: str) -> Trade | None:
    """The common well-formed trade without building a dict: ~2x cheaper than the full path.
    ``None`` means "not sure": the caller decodes it the long way."""
    m = _FAST_TRADE.match(text)
    if m is None:
        return None
    ex, sym, ts, rts, tid, px, qty, side = m.groups()
    try:
        pu, pdp = _parse(px)
        qu, qdp = _parse(qty)
    except DecimalError:
        return None
    if pu <= 0 or qu <= 0:
        return None
    return Trade(ex, sym, int(ts), int(rts), tid, px, qty, side, pu, qu, pdp, qdp)


def decode(raw: bytes | str) -> Event | DeadLetter:
    """Decode one Kafka value or file line (well-formed trades by a fast path, same result)."""
    if type(raw) is bytes:
        try:
            e = _fast_trade(raw.decode())
        except UnicodeDecodeError:
            e = None
    else:
        e = _fast_trade(raw) if type(raw) is str else None
    if e is not None:
        return e
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return DeadLetter(f"malformed JSON: {e}", text)
    if type(obj) is not dict:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return DeadLetter("event must be a JSON object", text)
    out = decode_obj(obj, "")
    if type(out) is DeadLetter:
        out.raw = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return out


class TradeBatch:
    """Canonical trades of one symbol, in order, as columns: what the candle and ticker states'
    ``on_trades`` read, so that runs of trades fold with C-level ``max``/``min``/``sum`` and no
    ``Trade`` object is built. :meth:`trade` builds the :class:`Trade` of one row for the paths
    that want it (late trades, dead letters, anything uncommon).
    """

    __slots__ = ("ex", "ids", "px", "px_dp", "px_u", "qty", "qty_dp", "qty_u", "rts", "side",
                 "sym", "ts")

    def __init__(self, ex: str, sym: str, columns: Sequence[list[Any]]) -> None:
        self.ex, self.sym = ex, sym
        self.ts: list[int]
        self.rts: list[int]
        self.ids: list[str]
        self.px: list[str]
        self.qty: list[str]
        self.side: list[str]
        self.px_u: list[int]
        self.px_dp: list[int]
        self.qty_u: list[int]
        self.qty_dp: list[int]
        (self.ts, self.rts, self.ids, self.px, self.qty, self.side, self.px_u, self.px_dp,
         self.qty_u, self.qty_dp) = columns

    def __len__(self) -> int:
        return len(self.ts)

    def trade(self, i: int) -> Trade:
        return Trade(self.ex, self.sym, self.ts[i], self.rts[i], self.ids[i], self.px[i],
                     self.qty[i], self.side[i], self.px_u[i], self.qty_u[i], self.px_dp[i],
                     self.qty_dp[i])


def _units(texts: tuple[str, ...]) -> tuple[list[int], list[int]]:
    """Units and decimals of every string (memoized ``parse``), all positive; else raises."""
    units, dps = zip(*map(_PARSED.__getitem__, texts), strict=True)
    if min(units) <= 0:
        raise DecimalError("not positive")
    return list(units), list(dps)


_BATCH_PATTERNS: dict[str, tuple[re.Pattern[str], bytes] | None] = {}


def _batch_pattern(ex: str, sym: str) -> tuple[re.Pattern[str], bytes] | None:
    """``_FAST_TRADE`` for one symbol, one trade a line, and the canonical start of its values
    (for the compiled scanner): ``None`` if ``ex``/``sym`` are invalid."""
    key = f"{ex}:{sym}"
    if key in _BATCH_PATTERNS:
        return _BATCH_PATTERNS[key]
    found = None
    if _EX.match(ex) and _SYM.match(sym):
        head = f'{{"type":"trade","ex":"{ex}","sym":"{sym}","ts":'
        pat = re.compile(
            "^" + re.escape(head) + r'(0|[1-9][0-9]{0,12}),"rts":(0|[1-9][0-9]{0,12}),'
            r'"id":"([ !#-\[\]-~]+)","px":"([0-9.]+)","qty":"([0-9.]+)","side":"(buy|sell)"\}'
            r'[ \t\r]*$', re.M)
        found = pat, head.encode()
    if len(_BATCH_PATTERNS) >= 100_000:
        _BATCH_PATTERNS.clear()
    _BATCH_PATTERNS[key] = found
    return found


def decode_trades(values: list[bytes], ex: str, sym: str) -> TradeBatch | None:
    """The trades of one symbol decoded in one pass, if every value is a canonical trade of
    ``ex``/``sym`` that ``decode`` would accept as is; ``None`` otherwise (decode them one by one:
    that path words the dead letters). By the compiled scanner (``operators/_native.c``) where it
    is built, else by one regex scan over the joined values: either way no per-message Python.

    >>> v = [b'{"type":"trade","ex":"okx","sym":"ETH-USDT","ts":5,"rts":6,"id":"a b",'
    ...      b'"px":"2.50","qty":"1","side":"sell"}']
    >>> b = decode_trades(v * 2, "okx", "ETH-USDT")
    >>> b.ts, b.px_u, b.px_dp, b.trade(1) == decode(v[0])
    ([5, 5], [2500000000000000000, 2500000000000000000], [2, 2], True)
    >>> decode_trades(v, "okx", "BTC-USDT"), decode_trades([v[0].replace(b'"1"', b'"0"')], "okx",
    ...                                                     "ETH-USDT")
    (None, None)
    """
    found = _batch_pattern(ex, sym)
    if found is None:
        return None
    if _native is not None:
        columns = _native.decode_trades(values, found[1], _PARSED)
        return None if columns is None else TradeBatch(ex, sym, columns)
    return _decode_trades_py(values, ex, sym, found[0])


def _decode_trades_py(values: list[bytes], ex: str, sym: str,
                      pat: re.Pattern[str]) -> TradeBatch | None:
    """``decode_trades`` in pure Python: the reference the compiled scanner is tested against."""
    try:
        text = b"\n".join(values).decode()
    except UnicodeDecodeError:
        return None
    rows = pat.findall(text)
    # Matches start at line starts and cannot span lines: as many as values and no newline inside
    # a value means every value matched whole.
    if len(rows) != len(values) or text.count("\n") != len(values) - 1:
        return None
    ts, rts, ids, px, qty, side = zip(*rows, strict=True)
    try:
        px_u, px_dp = _units(px)
        qty_u, qty_dp = _units(qty)
    except DecimalError:
        return None
    return TradeBatch(ex, sym, (list(map(int, ts)), list(map(int, rts)), list(ids), list(px),
                                list(qty), list(side), px_u, px_dp, qty_u, qty_dp))


def encode_trade(t: Trade) -> dict[str, Any]:
    return {"type": "trade", "ex": t.ex, "sym": t.sym, "ts": t.ts, "rts": t.rts, "id": t.id,
            "px": t.px, "qty": t.qty, "side": t.side}


def encode_book_event(e: BookEvent) -> dict[str, Any]:
    d: dict[str, Any] = {"type": "book", "ex": e.ex, "sym": e.sym, "ts": e.ts, "rts": e.rts,
                         "action": e.action, "seq": e.seq}
    if e.prev_seq is not None:
        d["prev_seq"] = e.prev_seq
    d["bids"] = [[lv[1], lv[3]] for lv in e.bids]
    d["asks"] = [[lv[1], lv[3]] for lv in e.asks]
    if e.checksum is not None:
        d["checksum"] = e.checksum
    return d


def encode(obj: dict[str, Any]) -> bytes:
    """The one JSON encoder of the project (compact, UTF-8, key order as built)."""
    return orjson.dumps(obj)
