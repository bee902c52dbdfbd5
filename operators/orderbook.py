"""The L2 order book of one symbol, and its throttled output records.

``Book`` keeps each side in a dict keyed by exact price units, holding ``(price, quantity)`` as the
exchange wrote them (printed back untouched; ``insert``/``delete`` arithmetic re-parses them,
exactly), with only the best keys kept sorted (``_Side``): reads need the top, not the whole book.

``BookState`` is what the order book flow keeps per ``ex:SYM``: the book, the emission timer of
DESIGN.md (at most one record per ``emit_interval_ms`` of event time, only after a change, at once
after a snapshot or a status change) and counters. It is pure: the flow feeds it events and, in
live mode, the clock.

>>> from operators.events import decode
>>> s = BookState("binance:BTC-USDT", BookParams(depth=2))
>>> recs = s.on_event(decode(b'{"type":"book","ex":"binance","sym":"BTC-USDT","ts":1000,'
...     b'"rts":1000,"action":"snapshot","seq":5,"bids":[["10.0","1"],["9.5","2"],["9.0","3"]],'
...     b'"asks":[["10.5","1"]]}'))
>>> recs[0]["bids"], recs[0]["asks"], recs[0]["status"]
([('10.0', '1'), ('9.5', '2')], [('10.5', '1')], 'ok')
>>> s.on_event(decode(b'{"type":"book","ex":"binance","sym":"BTC-USDT","ts":1050,"rts":1050,'
...     b'"action":"update","seq":6,"prev_seq":5,"bids":[["10.0","0"]],"asks":[]}'))
[]
>>> [r["bids"] for r in s.flush()]
[[('9.5', '2'), ('9.0', '3')]]
"""

# Stable module path and class names: stored recovery snapshots refer to them by name. Renaming
# BookState or Book (or moving this module) makes every existing snapshot unreadable.

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from operators.events import _PARSED, BookEvent, Level, _native
from operators.fixed import decimals, fmt, parse

__all__ = ["CROSSED", "OK", "STALE", "Book", "BookParams", "BookState", "Grouping",
           "parse_groupings"]

OK, STALE, CROSSED = "ok", "stale", "crossed"

# Outcomes of Book.apply
APPLIED, DUPLICATE, GAP, SKIPPED = "applied", "duplicate", "gap", "skipped"


# Beyond any price (units of a decimal of at most fixed.MAX_CHARS characters, < 2**392): an edge
# that admits every key, or none.
_BIG = 1 << 400


def _set_levels_py(d: dict[int, tuple[str, str]], head: list[int], edge: int, bid: bool,
                   levels: list[Level]) -> None:
    """:meth:`_Side.set`'s loop: each level's quantity set in ``d`` (zero removes the level),
    ``head`` kept sorted. ``(key <= edge) != bid`` is "key belongs in the head" for both sides:
    for bids the edge is one unit below the head's worst key."""
    for key, ps, qu, qs in levels:
        if qu:
            if key not in d and (key <= edge) != bid:
                insort(head, key)
            d[key] = (ps, qs)
        elif key in d:
            del d[key]
            if (key <= edge) != bid:
                del head[bisect_left(head, key)]


def _best_of(head: list[int], n: int, bid: bool) -> list[int]:
    """The best ``n`` keys of an ascending head, best first (bids: its last ``n``)."""
    n = max(0, min(n, len(head)))  # head[-0:] would be all of it
    return head[len(head) - n:][::-1] if bid else head[:n]


def _side_top_py(d: dict[int, tuple[str, str]], head: list[int], n: int,
                 bid: bool) -> list[tuple[str, str]]:
    """:meth:`_Side.top` once the head holds enough keys: the values of its best ``n``."""
    return [d[k] for k in _best_of(head, n, bid)]


# The same loops compiled where built (operators/_native.c): the first was a quarter of
# normalizing a depth stream in Python; tests/test_native.py checks they agree.
_set_levels = _set_levels_py if _native is None else _native.set_levels
_side_top = _side_top_py if _native is None else _native.side_top


def _own(text: str) -> tuple[int, int]:
    """``parse`` of a quantity the book holds: input, or its own sum of inputs (no length cap).

    Through the events' memo (a grouped book re-reads hundreds of levels per record: parsing
    them each time made it ~50x slower than a plain one); a sum past the memo's 100 characters
    is parsed here."""
    try:
        return _PARSED[text]
    except ValueError:
        return parse(text, None)


def _level(v: tuple[str, str]) -> tuple[str, int, str]:
    return v[0], _own(v[1])[0], v[1]


class _Side:
    """One side of a book: every level in a dict, only the best ones kept sorted.

    Reads want the best few levels; keeping every key sorted (as a ``SortedDict`` does) costs
    ~0.5 µs of Python per insert or delete anywhere in the book, and depth streams insert or
    delete a level in every other change, mostly far from the top (the ETHUSDT recording: 50%).
    So only ``head`` is sorted: every key on the good side of ``edge`` (asks: ``key <= edge``,
    bids: ``key > edge``), an ascending list kept by C ``bisect`` and refilled from the dict
    (C ``heapq``, O(levels)) when deletions leave fewer keys than a read needs: on the
    recordings, once per few hundred events. Values are ``(px, qty)`` as the exchange wrote
    them: records print them as JSON arrays, and a tuple is cheaper to build than a list.
    """

    __slots__ = ("bid", "edge", "head", "levels", "size")

    def __init__(self, bid: bool, size: int) -> None:
        self.bid = bid
        self.size = size  # keys kept in the head after a refill or a trim
        self.levels: dict[int, tuple[str, str]] = {}  # price units -> (px, qty)
        self.head: list[int] = []
        self.edge = -_BIG if bid else _BIG  # an empty side: every key belongs in the head

    def __len__(self) -> int:
        return len(self.levels)

    def clear(self) -> None:
        """Empty the side, with an edge that admits no key: a snapshot's levels go to the dict
        only, and the head is built once, at the first read."""
        self.levels = {}
        self.head = []
        self.edge = _BIG if self.bid else -_BIG

    def set(self, levels: list[Level]) -> None:
        """Set each level's quantity (zero removes it): the hot loop of every depth update."""
        _set_levels(self.levels, self.head, self.edge, self.bid, levels)
        if len(self.head) > 4 * self.size:
            self._trim_head()

    def put(self, key: int, value: tuple[str, str]) -> None:
        if key not in self.levels and (key <= self.edge) != self.bid:
            insort(self.head, key)
        self.levels[key] = value

    def drop(self, key: int) -> tuple[str, str]:
        if (key <= self.edge) != self.bid:
            del self.head[bisect_left(self.head, key)]
        return self.levels.pop(key)

    def _trim_head(self) -> None:
        head, n = self.head, self.size
        if self.bid:
            del head[:-n]
            self.edge = head[0] - 1
        else:
            del head[n:]
            self.edge = head[-1]

    def _refill(self, n: int) -> None:
        d, want = self.levels, max(n, self.size)
        if len(d) <= want:
            self.head = sorted(d)
            self.edge = -_BIG if self.bid else _BIG
        elif self.bid:
            self.head = heapq.nlargest(want, d)[::-1]
            self.edge = self.head[0] - 1
        else:
            self.head = heapq.nsmallest(want, d)
            self.edge = self.head[-1]

    def best(self) -> int | None:
        """The best key (if the head holds any key, it holds the best one)."""
        if not self.head:
            if not self.levels:
                return None
            self._refill(1)
        return self.head[-1] if self.bid else self.head[0]

    def sorted_at_least(self, n: int) -> None:
        """Make the head hold the best ``n`` keys (or all of them): a refill if it is short."""
        if len(self.head) < n and len(self.head) < len(self.levels):
            self._refill(n)

    def best_keys(self, n: int) -> list[int]:
        """The best ``n`` price keys, best first."""
        self.sorted_at_least(n)
        return _best_of(self.head, n, self.bid)

    def top(self, n: int) -> list[tuple[str, str]]:
        self.sorted_at_least(n)
        return _side_top(self.levels, self.head, n, self.bid)

    def ordered(self) -> list[int]:
        """Every key, best first (snapshots, grouping, full-depth reads: not the hot path)."""
        return sorted(self.levels, reverse=self.bid)

    def cut(self, depth: int) -> list[tuple[str, str]]:
        """Remove the levels beyond the best ``depth``, worst first; return their values."""
        extra = len(self.levels) - depth
        if extra <= 0:
            return []
        pick = heapq.nsmallest if self.bid else heapq.nlargest
        return [self.drop(k) for k in pick(extra, self.levels)]


class Book:
    """Bids and asks of one symbol with the sequence and sync status of DESIGN.md.

    ``head``: how many of each side's best keys stay sorted (reads deeper than that sort more).
    """

    __slots__ = ("asks", "bids", "max_levels", "seq", "status")

    def __init__(self, max_levels: int = 0, head: int = 64) -> None:
        self.bids = _Side(True, head)
        self.asks = _Side(False, head)
        self.seq: int | None = None
        self.status = STALE  # until the first snapshot
        self.max_levels = max_levels

    # -- state -------------------------------------------------------------------------------
    def __getstate__(self) -> tuple[Any, ...]:
        # Taken every epoch for every touched symbol, restored once per resume: so only the
        # exchange's strings, one space-joined string per column and side, best first (4 objects
        # instead of 6 per level: ~2.5x faster to pickle, ~3x smaller). Units are re-parsed on
        # restore, exactly: every stored string parses back to its key.
        bv = list(map(self.bids.levels.__getitem__, self.bids.ordered()))
        av = list(map(self.asks.levels.__getitem__, self.asks.ordered()))
        return (" ".join([v[0] for v in bv]), " ".join([v[1] for v in bv]),
                " ".join([v[0] for v in av]), " ".join([v[1] for v in av]),
                self.seq, self.status, self.max_levels, self.bids.size)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        if len(state) == 5:  # the first form: (±price key, (px, qty units, qty)) pairs
            bids, asks, self.seq, self.status, self.max_levels = state
            pairs: tuple[list[tuple[int, str, str]], ...] = (
                [(-k, v[0], v[2]) for k, v in bids], [(k, v[0], v[2]) for k, v in asks])
            size = 64
        else:  # best-first strings, with the head size since it was added
            bp, bq, ap, aq, self.seq, self.status, self.max_levels, *rest = state
            size = rest[0] if rest else 64
            pairs = tuple([(parse(p)[0], p, q) for p, q in zip(ps.split(), qs.split(),
                                                                    strict=True)]
                          for ps, qs in ((bp, bq), (ap, aq)))
        self.bids, self.asks = _Side(True, size), _Side(False, size)
        for side, levels in zip((self.bids, self.asks), pairs, strict=True):
            side.clear()
            side.levels = {k: (p, q) for k, p, q in levels}

    # -- changes -----------------------------------------------------------------------------
    def apply(self, e: BookEvent) -> str:
        """Apply one event; return ``applied``, ``duplicate``, ``gap`` or ``skipped``.

        A snapshot replaces the whole book (never merges) unless it is older than the book (a
        re-delivered one: a duplicate). Otherwise an event not newer than the book is a duplicate;
        a ``prev_seq`` that does not follow the book's ``seq`` is a gap, which marks the book
        stale; a stale book (or one never snapshotted) skips everything until the next snapshot.
        Sequences must not go backwards for a symbol: feed handlers renumber exchange resets.
        """
        if e.action == "snapshot" and (self.seq is None or e.seq >= self.seq):
            self.bids.clear()
            self.asks.clear()
            self.bids.set(e.bids)
            self.asks.set(e.asks)
            self.seq = e.seq
            if self.max_levels:
                self._trim()
            self.status = CROSSED if self.crossed() else OK
            return APPLIED
        if self.seq is not None and e.seq <= self.seq:
            return DUPLICATE
        if self.status == STALE:
            return SKIPPED
        if e.prev_seq is not None and e.prev_seq != self.seq:
            self.status = STALE
            return GAP
        if e.action == "update":
            if e.bids:
                self.bids.set(e.bids)
            if e.asks:
                self.asks.set(e.asks)
        elif e.action == "insert":
            self._add(self.bids, e.bids, 1)
            self._add(self.asks, e.asks, 1)
        else:  # delete
            self._add(self.bids, e.bids, -1)
            self._add(self.asks, e.asks, -1)
        self.seq = e.seq
        if self.max_levels:
            self._trim()
        self.status = CROSSED if self.crossed() else OK
        return APPLIED

    @staticmethod
    def _add(side: _Side, levels: list[Level], direction: int) -> None:
        for key, ps, qu, qs in levels:
            old = side.levels.get(key)
            if old is None:
                if direction > 0 and qu:
                    side.put(key, (ps, qs))
                continue
            old_u, old_dp = _own(old[1])
            total = old_u + direction * qu
            if total <= 0:
                side.drop(key)
            else:
                side.levels[key] = (old[0], fmt(total, max(old_dp, decimals(qs))))

    def _trim(self) -> None:
        self.bids.cut(self.max_levels)
        self.asks.cut(self.max_levels)

    def cut(self, side: str, depth: int) -> list[tuple[str, str]]:
        """Drop the levels of ``side`` beyond the best ``depth``; return them as ``(px, qty)``,
        worst first.

        For feeds that truncate their book to the subscribed depth (Kraken), which must publish
        the cut levels as deletions.
        """
        return (self.bids if side == "bids" else self.asks).cut(depth)

    # -- reads -------------------------------------------------------------------------------
    def crossed(self) -> bool:
        b, a = self.bids.best(), self.asks.best()
        return b is not None and a is not None and b >= a

    def best_bid(self) -> tuple[str, str] | None:
        top = self.bids.top(1)
        return top[0] if top else None

    def best_ask(self) -> tuple[str, str] | None:
        top = self.asks.top(1)
        return top[0] if top else None

    def top(self, n: int, side: str) -> list[tuple[str, str]]:
        """The best ``n`` levels of ``side`` (``"bids"``/``"asks"``) as ``[(px, qty), ...]``
        (JSON arrays once encoded, as DESIGN.md's records have them)."""
        return (self.bids if side == "bids" else self.asks).top(n)

    def depth(self, side: str) -> int:
        """How many levels ``side`` holds."""
        return len(self.bids if side == "bids" else self.asks)

    def levels(self, side: str) -> list[tuple[int, str, int, str]]:
        """Every level of ``side``, best first, as ``(px units, px, qty units, qty)``."""
        s = self.bids if side == "bids" else self.asks
        return [(k, *_level(s.levels[k])) for k in s.ordered()]


class Grouping:
    """Price grouping: bids rounded down, asks up, to a bucket; quantities summed exactly."""

    __slots__ = ("dp", "units")

    def __init__(self, bucket: str) -> None:
        self.units, self.dp = parse(bucket)
        if self.units <= 0:
            raise ValueError(f"grouping bucket must be positive, got {bucket!r}")

    def top(self, book: Book, n: int, side: str) -> list[tuple[str, str]]:
        """The best ``n`` buckets of ``side`` as ``(bucket price, summed quantity)``.

        Each bucket's keys are a slice of the side's sorted head found by ``bisect``, its
        quantities summed at C level: a bucket of many ticks holds hundreds of levels, and a
        level-by-level walk made grouped books ~50x slower than plain ones. The head is widened
        to what a read needed and stays that wide (no re-sort from the dict at every record).
        """
        src = book.bids if side == "bids" else book.asks
        while True:
            out = self._buckets(src, n)
            if out is not None:
                return out
            src.size = max(src.size, 2 * len(src.head))
            src.sorted_at_least(src.size)  # the head ran out before n buckets

    def _buckets(self, src: _Side, n: int) -> list[tuple[str, str]] | None:
        """:meth:`top` over ``src``'s head; ``None`` if the head ends before ``n`` buckets
        while the side holds more levels."""
        head, levels, g = src.head, src.levels, self.units
        if not head and levels:
            return None
        out: list[tuple[str, str]] = []
        i = len(head) if src.bid else 0  # bids: head[j:i] from the top down; asks: head[i:j]
        while len(out) < n and (i > 0 if src.bid else i < len(head)):
            if src.bid:
                b = head[i - 1] // g * g
                j = bisect_left(head, b, 0, i)
                keys, i = head[j:i], j
                complete = j > 0 or len(head) == len(levels)
            else:
                b = -(-head[i] // g) * g
                j = bisect_right(head, b, i)
                keys, i = head[i:j], j
                complete = j < len(head) or len(head) == len(levels)
            if not complete:
                return None
            texts = [levels[k][1] for k in keys]
            try:
                parsed = list(map(_PARSED.__getitem__, texts))
            except ValueError:  # a sum past the memo's 100 characters
                parsed = list(map(_own, texts))
            out.append((fmt(b, self.dp), fmt(sum(map(itemgetter(0), parsed)),
                                             max(map(itemgetter(1), parsed)))))
        src.size = max(src.size, len(head) - i if src.bid else i)
        return out


def parse_groupings(spec: str) -> tuple[str, dict[str, str]]:
    """``"10"`` (every symbol) or ``"BTC-USDT=10,binance:ETH-USDT=0.5"`` -> (default, per key or
    symbol); raises ``ValueError`` on a bucket that is not a positive decimal.

    >>> parse_groupings("0.5,binance:BTC-USDT=10")
    ('0.5', {'binance:BTC-USDT': '10'})
    """
    default, per = "", {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "=" in part:
            k, v = part.split("=", 1)
            per[k.strip()] = v.strip()
        else:
            default = part
    for key, bucket in [("", default), *per.items()]:
        try:
            if bucket:
                Grouping(bucket)
        except ValueError as e:  # DecimalError too
            where = f" for {key!r}" if key else ""
            raise ValueError(f"grouping {bucket!r}{where}: {e}") from None
    return default, per


@dataclass(frozen=True)
class BookParams:
    """Output settings of the order book flow (changing them changes the records, not the state)."""

    depth: int = 20
    emit_interval_ms: int = 100
    max_levels: int = 0
    grouping: str = ""  # bucket size, "" for none

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"depth must be at least 1: {self.depth}")
        if self.emit_interval_ms < 0 or self.max_levels < 0:
            raise ValueError("emit_interval_ms and max_levels must not be negative")


class BookState:
    """Per-symbol state of the order book flow: book, emission timer, counters."""

    __slots__ = ("book", "counts", "deadline", "ex", "grouping", "last_emit", "last_ts",
                 "params", "pending", "sym")

    def __init__(self, key: str, params: BookParams) -> None:
        self.ex, _, self.sym = key.partition(":")
        self.params = params
        self.book = Book(params.max_levels, head=max(64, 2 * params.depth))
        self.grouping = Grouping(params.grouping) if params.grouping else None
        self.last_emit: int | None = None  # event time of the last emission
        self.last_ts = 0  # newest event time seen
        self.pending = False  # the book changed since the last emission
        self.deadline: int | None = None
        self.counts: dict[str, int] = {}

    def __getstate__(self) -> tuple[Any, ...]:
        # The params as a plain tuple: a dataclass pickles through copyreg, slower and bigger.
        p = self.params
        return (self.ex, self.sym, (p.depth, p.emit_interval_ms, p.max_levels, p.grouping),
                self.book, self.last_emit, self.last_ts, self.pending, self.deadline, self.counts)

    def __setstate__(self, s: tuple[Any, ...]) -> None:
        (self.ex, self.sym, params, self.book, self.last_emit, self.last_ts, self.pending,
         self.deadline, self.counts) = s
        self.params = params if isinstance(params, BookParams) else BookParams(*params)
        self.grouping = Grouping(self.params.grouping) if self.params.grouping else None

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def record(self) -> dict[str, Any]:
        """The book record of DESIGN.md for the current state."""
        b, n = self.book, self.params.depth
        if self.grouping is not None:
            bids, asks = self.grouping.top(b, n, "bids"), self.grouping.top(b, n, "asks")
        else:
            bids, asks = b.top(n, "bids"), b.top(n, "asks")
        return {"type": "book", "ex": self.ex, "sym": self.sym, "ts": self.last_ts,
                "seq": b.seq, "status": b.status, "bids": bids, "asks": asks}

    def _emit(self, at: int) -> dict[str, Any]:
        self.last_emit = at
        self.pending = False
        self.deadline = None
        self._count("emitted")
        return self.record()

    def advance(self, now: int) -> list[dict[str, Any]]:
        """Event time (or, live, the clock) reached ``now``: fire the timer if it is due."""
        if self.pending and self.deadline is not None and now >= self.deadline:
            return [self._emit(self.deadline)]
        return []

    def on_event(self, e: BookEvent) -> list[dict[str, Any]]:
        """Apply one event; return the records to emit now."""
        ts = e.ts if e.ts > self.last_ts else self.last_ts
        out = self.advance(ts)
        before = self.book.status
        outcome = self.book.apply(e)
        self._count(outcome)
        if outcome in (DUPLICATE, SKIPPED):
            return out
        self.last_ts = ts
        interval = self.params.emit_interval_ms
        if (e.action == "snapshot" or self.book.status != before or self.last_emit is None
                or ts >= self.last_emit + interval):
            out.append(self._emit(ts))
        elif not self.pending:
            self.pending = True
            self.deadline = self.last_emit + interval
        return out

    def next_deadline(self) -> int | None:
        return self.deadline if self.pending else None

    def flush(self) -> list[dict[str, Any]]:
        """End of input: emit what is pending."""
        return [self._emit(self.last_ts)] if self.pending else []

    settle = flush  # the end of the input for now (a live run's): the same, nothing ends


if _native is not None:  # what the feed handlers' books (FeedBook) fall back to
    _native.frames_set("Book", Book)
    _native.frames_set("own", _own)
