"""What every exchange feed handler shares: symbol and time conversion, its books, its counters.

A handler is a pure state machine for one exchange connection: a transport (a live WebSocket, a
recording being replayed) feeds it frames with their receive time and it answers with canonical
event dicts (DESIGN.md, "Canonical events") plus dead-letter records, never raising on bad input.
It keeps its own :class:`operators.orderbook.Book` per symbol (a ``_native.FeedBook``, the same
in C, for the handlers with a compiled path), built from exactly the events it emits, so that
gaps, checksum mismatches and crossed books are seen where they happen and the symbol can be
re-snapshotted (:meth:`Handler.resync_needed`). Plain book updates of Binance, Coinbase, Kraken
v1, OKX and Bybit take a compiled path (``Handler._fast``, ``operators/_native.c``); this module's
Python stays their reference.

Sequence numbers: where the exchange gives none (Kraken v1, OKX before ``seqId``, Coinbase
Exchange ``level2``), the handler numbers each symbol's book events itself, 1, 2, 3, ... starting
with the first snapshot and never going back (a resync snapshot takes the next number), and chains
``prev_seq`` to the previous number, so that the order book operator detects gaps uniformly.
Live, the numbers start after ``seq_base``, the handler's creation time in microseconds, so that a
restarted ingestion's numbers stay above the previous run's: from 1 again, every book downstream
would take its new snapshot for an old one re-delivered, and freeze. Offline (``normalize``) they
start at 1, a function of the recording alone.
A book that fails the exchange's checksum reaches consumers as a gap (a failing update skips a
number; a failing snapshot is followed by an empty update that does): their book turns ``stale``
until the resync snapshot, as the handler's own does.

>>> to_symbol("ETHUSDT"), to_symbol("blzeth"), sec_to_ms("1633998512.0633569")
('ETH-USDT', 'BLZ-ETH', 1633998512063)
>>> iso_to_ms("2021-04-17T16:43:37.075687Z")
1618677817075
"""

from __future__ import annotations

import calendar
import functools
import zlib
from collections.abc import Callable
from typing import Any

import orjson

from operators.events import (
    MAX_INT,
    MAX_TS,
    BookEvent,
    DeadLetter,
    _native,
    book_levels,
    decode_obj,
    encode_book_event,
    px_units,
    qty_units,
)
from operators.orderbook import CROSSED, GAP, Book

__all__ = [
    "QUOTES",
    "STAGE",
    "Handler",
    "crc32_signed",
    "iso_to_ms",
    "sec_to_ms",
    "to_symbol",
]

STAGE = "normalize"

# Quote assets, longest first so that "FDUSD" wins over "USD" and "USDT" over "USD".
QUOTES: tuple[str, ...] = tuple(sorted({
    "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "USDS", "DAI", "PAX", "UST", "USD", "EUR",
    "GBP", "TRY", "BRL", "AUD", "JPY", "RUB", "UAH", "NGN", "ZAR", "PLN", "RON", "ARS", "MXN",
    "COP", "CZK", "IDR", "BIDR", "IDRT", "BVND", "VAI", "CHF", "CAD", "KRW", "BTC", "ETH", "BNB",
    "XRP", "TRX", "DOGE", "DOT", "SOL", "EURI", "AEUR", "PERP",
}, key=lambda q: (-len(q), q)))


@functools.lru_cache(maxsize=4096)
def to_symbol(native: str) -> str:
    """``BASE-QUOTE`` upper case from a concatenated exchange symbol ("ethusdt" -> "ETH-USDT").

    Already separated symbols ("BTC-USD", "XBT/USD") keep their split. Raises ``ValueError`` when
    no known quote asset ends the symbol: guessing would publish under a wrong key.
    """
    s = native.upper()
    for sep in ("-", "/", "_"):
        if sep in s:
            base, _, quote = s.partition(sep)
            return f"{base}-{quote.replace(sep, '')}"
    for q in QUOTES:
        if s.endswith(q) and len(s) > len(q):
            return f"{s[: -len(q)]}-{q}"
    raise ValueError(f"cannot split symbol {native!r}: unknown quote asset")


def sec_to_ms(text: str) -> int:
    """Milliseconds (floor) of a decimal seconds string, exactly: no float on the way."""
    whole, _, frac = text.partition(".")
    return int(whole) * 1000 + int((frac + "000")[:3])


def sec_to_ns(text: str) -> int:
    """Nanoseconds (floor) of a decimal seconds string, exactly (recordings are merged on it)."""
    whole, _, frac = text.partition(".")
    return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])


def iso_to_ms(text: str) -> int:
    """Milliseconds (floor) of an ISO-8601 UTC time such as ``2021-04-17T16:43:37.075687Z``.

    The whole seconds are cached: a feed repeats them in every message of that second.
    """
    whole, dot, frac = text.partition(".")
    if not dot:
        return _iso_whole_ms(text)
    return _iso_whole_ms(whole) + int((frac.rstrip("Z") + "000")[:3])


@functools.lru_cache(maxsize=256)
def _iso_whole_ms(text: str) -> int:
    """Milliseconds of ``YYYY-MM-DDTHH:MM:SS[Z]`` (no fraction)."""
    date, _, clock = text.rstrip("Z").partition("T")
    y, mo, d = date.split("-")
    h, mi, s = clock.split(":")
    return calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0)) * 1000


def crc32_signed(text: str) -> int:
    """CRC32 as a signed 32-bit int (OKX prints it that way)."""
    v = zlib.crc32(text.encode())
    return v - (1 << 32) if v & 0x80000000 else v


@functools.lru_cache(maxsize=4096)
def valid_key(ex: str, sym: str) -> bool:
    """Whether canonical events accept exchange ``ex`` and symbol ``sym``.

    Asked of ``decode_obj`` itself (on a probe trade), so the fast paths below share its rules.
    """
    probe = {"type": "trade", "ex": ex, "sym": sym, "ts": 0, "rts": 0, "id": "0", "px": "1",
             "qty": "1", "side": "buy"}
    return not isinstance(decode_obj(probe), DeadLetter)


def _uint(v: Any, most: int = MAX_INT) -> bool:
    return type(v) is int and 0 <= v <= most


def _ms(v: Any) -> bool:
    return _uint(v, MAX_TS)


STAT_NAMES = ("frames", "events", "trades", "book_events", "snapshots", "gaps", "resyncs",
              "checksum_ok", "checksum_bad", "crossed", "deadletter", "dropped", "ignored",
              "stale_snapshot")


class Handler:
    """Base of every exchange handler: the shared hooks, books, counters and dead letters."""

    exchange: str = ""

    def __init__(self) -> None:
        self._stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        # These three, and the class's exchange, are bound once: the compiled paths hold them.
        self.books: dict[str, Book] = {}
        self._unsynced: set[str] = set()
        self._seq: dict[str, int] = {}  # the numbers of feeds without a sequence of their own
        self._raw: str | bytes = b""
        # The compiled paths' counters (``stats`` adds them up), and their hold on those.
        self._tally = _native.Tally(self.books, self._unsynced, self._seq, self.exchange) \
            if _native is not None else None
        self.seq_base = 0  # where they start (live: the creation time, module doc)

    @property
    def stats(self) -> dict[str, int]:
        """The counters (``STAT_NAMES``, and a handler's own), as a new dict.

        The compiled paths count in ``_tally`` (a dict update per counter was a tenth of a
        small frame), the Python in ``_stats``; a read adds them up and changes neither, so a
        reader on another thread (the ingestion flow's metrics) cannot race the increments.
        """
        out = dict(self._stats)
        if self._tally is not None:
            self._tally.add_to(out)
        return out

    # -- hooks a transport drives ------------------------------------------------------------
    def subscribe_messages(self, symbols: list[str]) -> list[str]:
        """The messages a live connection sends after connecting (JSON text)."""
        raise NotImplementedError

    def snapshot_request(self, symbol: str) -> str | None:
        """REST path of a depth snapshot for ``symbol``; ``None`` when books come in-band."""
        return None

    # The frame parser: a handler whose numbers must stay text (Kraken v2) gives its own.
    _loads: Callable[[str | bytes], Any] = staticmethod(orjson.loads)
    # The compiled path of the exchange's plain book update (``operators/_native.c``, "book
    # frames"), where built: ``(handler, msg, rts) -> events``, or ``None`` with nothing changed
    # for any other frame, which ``_on_message`` (the reference) then takes.
    _fast: Callable[[Any, Any, int], list[dict[str, Any]] | None] | None = None
    # The handler's own books: a handler with a compiled path keeps ``_native.FeedBook``s (the
    # same calls and results as ``Book``'s, in C: see there).
    _book_type: Callable[[], Any] = Book  # a Book, or what answers as one
    # What garbage in a field raises while a frame is handled: a dead letter, never a crash.
    GARBAGE = (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError,
               RecursionError)

    # A compiled path that reads the frame's text itself, before any decode (Coinbase, Binance,
    # Kraken v1, OKX: ``*_raw`` in ``operators/_native.c``): ``(handler, raw, rts) -> events |
    # None``, ``None`` with nothing changed for any other text (then decoded as before).
    _fast_raw: Callable[[Any, str | bytes, int], list[dict[str, Any]] | None] | None = None

    def on_frame(self, raw: str | bytes, rts: int) -> list[dict[str, Any]]:
        """One WebSocket frame received at ``rts`` (ms) -> canonical events and dead letters."""
        self._stats["frames"] += 1
        self._raw = raw
        fast_raw = self._fast_raw  # read once: a class attribute read from an instance is slow
        if fast_raw is not None:
            try:
                fast = fast_raw(self, raw, rts)
            except self.GARBAGE as e:
                return self._garbage(e)
            if fast is not None:
                return fast
        try:
            msg = self._loads(raw)
        except (ValueError, RecursionError) as e:  # bad JSON or UTF-8 (ValueErrors), nesting
            return [self._dead(f"malformed JSON: {e}")]
        try:
            if self._fast is not None:
                fast = self._fast(self, msg, rts)
                if fast is not None:
                    return fast
            out = self._on_message(msg, rts)
        except self.GARBAGE as e:  # garbage in any field: a dead letter, never a crash
            return self._garbage(e)
        return out

    def _garbage(self, e: Exception) -> list[dict[str, Any]]:
        return [self._dead(f"unexpected {self.exchange} message: {type(e).__name__}: {e}")]

    def on_snapshot(self, symbol: str, raw: str | bytes, rts: int) -> list[dict[str, Any]]:
        """A REST depth snapshot answer for ``symbol`` received at ``rts`` (ms)."""
        self._raw = raw
        return [self._dead(f"{self.exchange} takes no REST snapshots")]

    def on_connect(self) -> None:
        """A (re)connection is about to subscribe: every known book waits for a new snapshot.

        Frames lost while disconnected cannot be rewound, so no book is trusted across
        connections. Not counted as a resync (the transport counts reconnections).
        """
        self._unsynced.update(self.books)

    def resync_needed(self) -> list[str]:
        """Symbols whose book is out of sync (never synced, gap, checksum, crossed), sorted.

        A query, not a queue: a symbol stays listed until a new snapshot has been applied.
        """
        return sorted(self._unsynced)

    def book(self, sym: str) -> Book:
        """The handler's own book of ``sym`` (canonical symbol)."""
        b = self.books.get(sym)
        if b is None:
            b = self.books[sym] = self._book_type()
        return b

    # -- for subclasses ----------------------------------------------------------------------
    def _on_message(self, msg: Any, rts: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _dead(self, reason: str, key: str | None = None) -> dict[str, Any]:
        self._stats["deadletter"] += 1
        raw = self._raw
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return DeadLetter(reason, text, key, STAGE).record()

    def _next(self, sym: str) -> int:
        """The next number of ``sym``'s book events, for feeds that give none (module doc)."""
        n = self._seq.get(sym, self.seq_base) + 1
        self._seq[sym] = n
        return n

    def _checksum_bad(self, sym: str, d: dict[str, Any], numbered: bool) -> list[dict[str, Any]]:
        """The book after event ``d`` fails the exchange's checksum: count it, wait for a new
        snapshot, and return what to publish. Where the handler numbers the events itself
        (``numbered``), consumers are told by a gap, so that their book, built from the same
        levels, turns ``stale`` until the resync snapshot instead of passing for ``ok``: an
        update skips a number; a snapshot is followed by an empty update that does.
        """
        self._stats["checksum_bad"] += 1
        self._lose_sync(sym)
        if not numbered:
            return [d]
        if d["action"] != "snapshot":
            d["prev_seq"] = d["seq"]
            d["seq"] = self._next(sym)
            return [d]
        skipped = self._next(sym)
        gap = encode_book_event(BookEvent(self.exchange, sym, d["ts"], d["rts"], "update",
                                          self._next(sym), skipped))
        self._stats["book_events"] += 1
        self._stats["events"] += 1
        return [d, gap]

    def _lose_sync(self, sym: str) -> None:
        if sym not in self._unsynced:
            self._stats["resyncs"] += 1
            self._unsynced.add(sym)

    def _trade(self, sym: str, ts: int, rts: int, tid: str, px: str, qty: str,
               side: str) -> dict[str, Any]:
        """A validated trade dict in canonical key order (or a dead letter).

        Checked here when every field is plainly valid; anything else goes through
        ``decode_obj``, which alone words the dead-letter reasons.
        """
        d = {"type": "trade", "ex": self.exchange, "sym": sym, "ts": ts, "rts": rts, "id": tid,
             "px": px, "qty": qty, "side": side}
        if not (valid_key(self.exchange, sym) and _ms(ts) and _ms(rts) and type(tid) is str
                and tid and (side == "buy" or side == "sell") and px_units(px)
                and qty_units(qty)):  # a zero quantity is falsy: decode_obj words it
            ev = decode_obj(d)
            if isinstance(ev, DeadLetter):
                return self._dead(ev.reason, ev.key)
        self._stats["trades"] += 1
        self._stats["events"] += 1
        return d

    def _book_event(self, sym: str, ts: int, rts: int, action: str, seq: int,
                    prev_seq: int | None, bids: list[Any], asks: list[Any],
                    checksum: int | None = None) -> tuple[dict[str, Any], str]:
        """Build, validate and apply one book event to the handler's own book.

        ``bids``/``asks`` are ``[[px, qty], ...]`` with the exchange's strings, emitted as they
        are. The :class:`BookEvent` applied is built from them directly when every field is
        plainly valid (``action`` is the handler's own), else by ``decode_obj`` from
        the emitted dict. Returns the dict to emit (or a dead letter) and the :meth:`Book.apply`
        outcome. A gap, an invalid event or a crossed book marks the symbol out of sync.
        """
        d: dict[str, Any] = {"type": "book", "ex": self.exchange, "sym": sym, "ts": ts,
                             "rts": rts, "action": action, "seq": seq}
        if prev_seq is not None:
            d["prev_seq"] = prev_seq
        d["bids"] = bids
        d["asks"] = asks
        if checksum is not None:
            d["checksum"] = checksum
        lb = book_levels(bids)
        la = book_levels(asks) if lb is not None else None
        if (lb is not None and la is not None and valid_key(self.exchange, sym) and _ms(ts)
                and _ms(rts) and _uint(seq) and (prev_seq is None or _uint(prev_seq))
                and (checksum is None or (type(checksum) is int and abs(checksum) <= MAX_INT))):
            ev = BookEvent(self.exchange, sym, ts, rts, action, seq, prev_seq, lb, la, checksum)
        else:
            full = decode_obj(d)
            if isinstance(full, DeadLetter):
                self._lose_sync(sym)
                return self._dead(full.reason, full.key), "invalid"
            ev = full  # type: ignore[assignment]  # a book dict decodes to a BookEvent
            # emitted as applied: [px, qty] pairs (a level may have carried more: it is dumped
            # again downstream, and no exchange value should be, unchecked)
            d["bids"] = [[lv[1], lv[3]] for lv in ev.bids]
            d["asks"] = [[lv[1], lv[3]] for lv in ev.asks]
        book = self.book(sym)
        outcome = book.apply(ev)
        if action == "snapshot":
            self._stats["snapshots"] += 1
            self._unsynced.discard(sym)
        if outcome == GAP:
            self._stats["gaps"] += 1
            self._lose_sync(sym)
        elif book.status == CROSSED:
            self._stats["crossed"] += 1
            self._lose_sync(sym)
        self._stats["book_events"] += 1
        self._stats["events"] += 1
        return d, outcome


def levels2(levels: list[list[Any]]) -> list[list[Any]]:
    """``[[px, qty], ...]`` from levels carrying extra fields (orders count, timestamps)."""
    return [lv[:2] for lv in levels]


if _native is not None:  # what the compiled book frames call back (see Handler._fast)
    _native.frames_set("valid_key", valid_key)
    _native.frames_set("to_symbol", to_symbol)
