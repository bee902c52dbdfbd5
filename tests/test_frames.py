"""The compiled book frames (operators/_native.c, ``*_frame``) against the handlers' Python.

A handler with a compiled path (``Handler._fast``) must answer every frame exactly as the same
handler without it: the same events and dead letters (key order included), the same counters,
books, numbering and sync state, after every frame. Checked on the recordings (every frame) and
on generated streams: recorded frames re-sent, dropped, reordered, and with any field replaced
by an odd value or removed (the compiled path must hand each such frame to the Python, or do
exactly what it does).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.exchanges import HANDLERS
from connectors.exchanges.base import Handler
from connectors.exchanges.binance import BinanceHandler
from connectors.exchanges.recordings import Frame, data_dir, read_frames
from operators import events
from operators.orderbook import Book

RECORDINGS = [
    ("binance", "hftbacktest/spot/ethusdt_20240808.gz"),
    ("binance_futures", "hftbacktest/usdm/btcusdt_20240808.gz"),
    ("coinbase", "cryptofeed/COINBASE.ws.28.0"),
    ("kraken", "cryptofeed/KRAKEN.ws.50.0"),
    ("okx", "cryptofeed/OKX.ws.1.0"),
    ("bybit", "nautilus_trader/xrpusdt-ob500.data.zip"),
]
FAST = [ex for ex, _ in RECORDINGS]


@cache
def frames_of(name: str, most: int = 40_000) -> list[Frame]:
    out = []
    for fr in read_frames(data_dir() / name):
        out.append(fr)
        if len(out) == most:
            break
    return out


def pair(exchange: str) -> tuple[Handler, Handler]:
    """The handler with its compiled path, and the same handler without (the reference)."""
    fast, ref = HANDLERS[exchange](), HANDLERS[exchange]()
    assert type(fast)._fast is not None
    ref._fast = None  # type: ignore[method-assign]
    ref._fast_raw = None  # type: ignore[method-assign]
    ref._book_type = Book  # the Python book too
    return fast, ref


def feed(h: Handler, fr: Frame, raw: str | bytes | None = None) -> list[dict[str, Any]]:
    raw = fr.raw if raw is None else raw
    return h.on_snapshot(fr.symbol, raw, fr.rts) if fr.kind == "rest" else h.on_frame(raw, fr.rts)


def light_state(h: Handler) -> Any:
    books = {s: (b.seq, b.status, b.depth("bids"), b.depth("asks"), b.top(3, "bids"),
                 b.top(3, "asks")) for s, b in h.books.items()}
    sync = {s: (st.synced, st.fresh, len(st.buffer)) for s, st in h._sync.items()} \
        if isinstance(h, BinanceHandler) else {}
    return dict(h.stats), books, dict(h._seq), sorted(h._unsynced), sync


def full_state(h: Handler) -> Any:
    return light_state(h), {s: b.__getstate__() for s, b in h.books.items()}


def assert_same(fast: Handler, ref: Handler, fr: Frame, raw: str | bytes | None, i: int,
                full: bool) -> None:
    got, want = feed(fast, fr, raw), feed(ref, fr, raw)
    assert orjson.dumps(got) == orjson.dumps(want), f"frame {i}: events differ"
    if full:
        assert full_state(fast) == full_state(ref), f"frame {i}: state differs"
    else:
        assert light_state(fast) == light_state(ref), f"frame {i}: state differs"


def test_the_compiled_frames_are_built() -> None:
    assert events._native is not None, "operators/_native.c is not built (make setup)"
    for ex in FAST:
        assert HANDLERS[ex]._fast is not None, ex


@pytest.mark.parametrize(("exchange", "name"), RECORDINGS)
def test_recording_frame_by_frame(exchange: str, name: str) -> None:
    """Every frame of the recording: the same events and state either way, and the compiled
    path took most book frames (it is not silently handing everything to the Python)."""
    fast, ref = pair(exchange)
    taken = 0

    def counting(compiled: Any) -> Any:
        def count(h: Any, msg: Any, rts: int) -> Any:
            nonlocal taken
            out = compiled(h, msg, rts)
            taken += out is not None
            return out
        return count

    fast._fast = counting(type(fast)._fast)  # type: ignore[method-assign]
    if type(fast)._fast_raw is not None:  # the text read without a decode
        fast._fast_raw = counting(type(fast)._fast_raw)  # type: ignore[method-assign]
    frames = frames_of(name)
    for i, fr in enumerate(frames):
        assert_same(fast, ref, fr, None, i, full=i % 500 == 0 or i == len(frames) - 1)
    books = fast.stats["book_events"] - fast.stats["snapshots"]
    assert books > 40 and taken >= 0.9 * books, (taken, books)


ODD: list[Any] = [None, True, False, 0, 1, -1, 2**63, 2**64 + 1, 1.5, "", "abc", "0", "-1",
                  "1e5", "0.0", "00.10", "\u0661", "12345678901234", "99999999999999999999",
                  "1618678133.0185", "2021-13-01T00:00:00Z", "0000-01-01T00:00:00Z",
                  "2021-04-17T16:43:37.1Z", "buy", "sell", "book-5", "book-x", "books",
                  "depthUpdate", "update", "snapshot", "l2update", [], {}, ["1", "2"],
                  [["1", "0"]], [["0", "1", "1618678133.0"]]]


def _paths(obj: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a decoded frame: dict keys and list indexes, outermost first."""
    out: list[tuple[Any, ...]] = []
    items = obj.items() if isinstance(obj, dict) else \
        enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        out.append((*at, k))
        out += _paths(v, (*at, k))
    return out


def _mutate(raw: str, where: int, odd: int, remove: bool) -> str | None:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    paths = _paths(msg)
    if not paths:
        return None
    path = paths[where % len(paths)]
    node = msg
    for k in path[:-1]:
        node = node[k]
    if remove:
        del node[path[-1]]
    else:
        node[path[-1]] = copy.deepcopy(ODD[odd % len(ODD)])
    return json.dumps(msg, separators=(",", ":"))  # orjson refuses ints past 64 bits


def _respell(raw: str, op: str, where: int) -> str | bytes:
    """The same frame written otherwise (JSON-equal, or a key repeated or added): a path that
    reads the text itself must read it as orjson does, or leave it to orjson."""
    if op == "bytes":
        return raw.encode()
    if op == "space":  # whitespace after one of the separators
        seps = [i for i, c in enumerate(raw) if c in ":,[{"]
        if not seps:
            return raw
        i = seps[where % len(seps)] + 1
        return raw[:i] + " \n"[where % 2] + raw[i:]
    if op == "escape":  # one letter of a string as a \u escape
        letters = [i for i, c in enumerate(raw) if c.isalpha()]
        if not letters:
            return raw
        i = letters[where % len(letters)]
        return raw[:i] + f"\\u{ord(raw[i]):04x}" + raw[i + 1:]
    msg = orjson.loads(raw)
    if not isinstance(msg, dict) or not msg:
        return raw
    items = list(msg.items())
    if op == "reorder":
        k = where % len(items)
        items = items[k:] + items[:k]
        return json.dumps(dict(items), separators=(",", ":"))
    body = raw.rstrip()[:-1]
    if op == "twice":  # a key repeated with another value: JSON readers keep the last
        again = json.dumps(ODD[where % len(ODD)], separators=(",", ":"))
        inner = msg.get("data")
        if isinstance(inner, dict) and inner and where % 2:  # inside Binance's data object
            k = list(inner)[where % len(inner)]
            text = json.dumps(inner, separators=(",", ":"))[:-1] + f",{json.dumps(k)}:{again}}}"
            rest = {k2: v for k2, v in msg.items() if k2 != "data"}
            head = json.dumps(rest, separators=(",", ":"))[:-1]
            return (head + "," if rest else "{") + '"data":' + text + "}"
        k, _ = items[where % len(items)]
        return body + "," + json.dumps(k) + ":" + again + "}"
    return body + ',"zz":1}'  # a key more


step = st.tuples(
    st.sampled_from(["same", "same", "same", "skip", "again", "swap", "odd", "odd", "remove",
                     "cut", "space", "reorder", "escape", "bytes", "twice", "extra",
                     "trail"]),
    st.integers(0, 10**6), st.integers(0, len(ODD) - 1))


@pytest.mark.parametrize("exchange", FAST)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=40), start=st.integers(0, 200))
def test_generated_streams(exchange: str, steps: list[tuple[str, int, int]], start: int) -> None:
    """A synced handler pair, then recorded frames re-sent, dropped, swapped or with a field
    changed: the compiled path answers exactly as the Python after every frame."""
    name = dict(RECORDINGS)[exchange]
    frames = frames_of(name, 6000)
    fast, ref = pair(exchange)
    # sync: up to a point after the first book frames (the snapshots)
    books = [i for i, fr in enumerate(frames) if '"lastUpdateId"' in fr.raw or
             '"snapshot"' in fr.raw or '"as"' in fr.raw or '"action":"snapshot"' in fr.raw]
    sync_to = (books[-1] if len(books) < 20 else books[19]) + 1
    for i, fr in enumerate(frames[:sync_to]):
        assert_same(fast, ref, fr, None, i, full=False)
    i = sync_to + start
    for n, (op, where, odd) in enumerate(steps):
        if i + 1 >= len(frames):
            break
        fr, raw = frames[i], None
        if op == "skip":
            i += 1
            continue
        if op == "swap":
            fr = frames[i + 1]
            frames_to = [fr, frames[i]]
            for f in frames_to:
                assert_same(fast, ref, f, None, n, full=False)
            i += 2
            continue
        if op in ("odd", "remove"):
            raw = _mutate(fr.raw, where, odd, op == "remove")
        elif op == "cut":  # malformed JSON
            raw = fr.raw[: where % max(1, len(fr.raw))]
        elif op == "trail":  # something after the frame: not JSON
            raw = fr.raw + "]"
        elif op in ("space", "reorder", "escape", "bytes", "twice", "extra"):
            raw = _respell(fr.raw, op, where)
        assert_same(fast, ref, fr, raw, n, full=n == len(steps) - 1)
        if op != "again":
            i += 1
    assert full_state(fast) == full_state(ref)


@pytest.mark.parametrize("exchange", ["kraken", "coinbase"])
def test_counters_read_only_at_the_end(exchange: str) -> None:
    """The compiled paths count in the handler's Tally, added to ``stats`` when read: read once
    after a whole session (the Python meanwhile counting in its own dict), they are the
    reference's."""
    name = dict(RECORDINGS)[exchange]
    fast, ref = pair(exchange)
    for fr in frames_of(name):
        feed(fast, fr)
        feed(ref, fr)
    assert fast._tally is not None and ref.stats["checksum_ok" if exchange == "kraken"
                                                  else "book_events"] > 1000
    assert fast.stats == ref.stats
    assert fast.stats == ref.stats  # read again: nothing counted twice


def test_reading_the_counters_changes_nothing() -> None:
    """``stats`` adds the Tally's counts (the compiled paths') to a copy of the Python's: a read
    changes neither (a reader on another thread cannot race the handler's own increments)."""
    native = events._native
    assert native is not None
    with pytest.raises(TypeError):
        native.Tally(1)
    fast, _ = pair("kraken")
    emitted = sum(len(feed(fast, fr)) for fr in frames_of(dict(RECORDINGS)["kraken"])[:200])
    pending = fast._tally
    assert pending is not None
    before = dict(fast._stats)
    with pytest.raises(KeyError):  # a mapping without the counters
        pending.add_to({})
    counts = dict.fromkeys(("events", "book_events", "checksum_ok", "crossed", "resyncs"), 0)
    pending.add_to(counts)
    assert counts["events"] == counts["book_events"] > 100 and counts["checksum_ok"] > 100
    read = fast.stats
    assert read["events"] == before["events"] + counts["events"] == emitted
    read["events"] = -1  # a copy
    assert fast.stats["events"] == emitted and fast._stats == before


def test_frames_set_refuses_what_it_cannot_use() -> None:
    native = events._native
    assert native is not None
    with pytest.raises(ValueError, match="unknown name"):
        native.frames_set("Bogus", object())
    with pytest.raises(TypeError):
        native.frames_set("Book", "not a type")
    from operators.orderbook import Book
    native.frames_set("Book", Book)  # put back (a refused type was cleared)


def test_a_frame_the_compiled_path_refuses_changes_nothing() -> None:
    """None (hand the frame to the Python) comes before any change: numbering, books, counters."""
    fast, _ = pair("kraken")
    frames = frames_of("cryptofeed/KRAKEN.ws.50.0")
    for fr in frames[:200]:
        feed(fast, fr)
    compiled = type(fast)._fast
    assert compiled is not None
    before = full_state(fast)
    update = next(fr for fr in frames[200:] if '"c"' in fr.raw and '"as"' not in fr.raw)
    msg = orjson.loads(update.raw)
    msg[1][next(iter(msg[1]))][0][0] = "-1"  # a price no book takes: the Python words it
    assert compiled(fast, msg, update.rts) is None
    assert full_state(fast) == before


@pytest.mark.parametrize("exchange", ["kraken", "coinbase"])
def test_the_symbols_kept_follow_valid_key(exchange: str) -> None:
    """The compiled paths keep the symbols they found valid (by their text): a valid_key
    registered anew is asked again, and a symbol it refuses goes to the Python."""
    native = events._native
    assert native is not None
    from connectors.exchanges import base
    frames = frames_of(dict(RECORDINGS)[exchange])
    fast = HANDLERS[exchange]()
    compiled = type(fast)._fast_raw
    assert compiled is not None
    for fr in frames[:300]:
        feed(fast, fr)
    taken = 0
    for fr in frames[300:600]:
        if fr.kind == "rest":
            feed(fast, fr)
            continue
        try:
            native.frames_set("valid_key", lambda ex, sym: False)
            assert compiled(fast, fr.raw, fr.rts) is None
        finally:
            native.frames_set("valid_key", base.valid_key)
        out = compiled(fast, fr.raw, fr.rts)
        if out is None:
            feed(fast, fr)
        taken += out is not None
    assert taken > 100


def test_a_callback_that_runs_another_handlers_frame() -> None:
    """A compiled call finds its handler's state once: a Python callback in the middle of it
    (here the symbol function, a new one before each frame so that it is asked) that runs
    another handler's frame leaves each handler its own books, numbers and counters."""
    from connectors.exchanges import kraken
    native = events._native
    assert native is not None
    frames = frames_of("cryptofeed/KRAKEN.ws.50.0")
    fast, ref = pair("kraken")
    other, other_ref = pair("kraken")
    queue, fed, inside = iter(frames), [], []

    def asking(name: str) -> str:
        if not inside:  # the other handler's own frame asks too: not again
            fr = next(queue, None)
            if fr is not None:
                inside.append(fr)
                try:
                    feed(other, fr)
                finally:
                    inside.pop()
                fed.append(fr)
        return kraken.kraken_symbol(name)

    try:
        for i, fr in enumerate(frames):
            native.frames_set("kraken_symbol", lambda name: asking(name))
            assert_same(fast, ref, fr, None, i, full=False)
    finally:
        native.frames_set("kraken_symbol", kraken.kraken_symbol)
    for fr in fed:
        feed(other_ref, fr)
    assert len(fed) > 3000
    assert light_state(other) == light_state(other_ref)


def test_kraken_checksums_of_a_book_that_grows_and_shrinks() -> None:
    """The checksum text a side keeps level by level (reused up to the first level that
    changed) on a book of fewer than 10 levels that grows past 10 and shrinks again, each
    update with its true checksum: every one verified, as the reference does."""
    from connectors.exchanges.kraken import kraken_checksum_py
    fast, ref = pair("kraken")
    asks = {f"{100 + i}.{i}0": f"{i + 1}.5" for i in range(3)}
    bids = {f"{90 - i}.{i}0": f"{i + 2}.25" for i in range(3)}

    def top(side: dict[str, str], best_first_desc: bool) -> list[tuple[str, str]]:
        return sorted(side.items(), key=lambda lv: float(lv[0]), reverse=best_first_desc)[:10]

    def frame(body: dict[str, Any]) -> Frame:
        raw = json.dumps([336, body, "book-1000", "XBT/USD"], separators=(",", ":"))
        return Frame(rts_ns=1_700_000_000_000_000_000, kind="ws", symbol="", raw=raw)

    snap = frame({"as": [[p, q, "1700000000.1"] for p, q in asks.items()],
                  "bs": [[p, q, "1700000000.1"] for p, q in bids.items()]})
    assert_same(fast, ref, snap, None, 0, full=True)
    steps = [("a", f"{103 + i}.5", "1.0") for i in range(9)]  # asks grow behind the best
    steps += [("b", f"{88 - i}.5", "2.0") for i in range(9)]  # then the bids
    steps += [("a", p, "0.00000000") for p in list(asks)[:2]]  # the best asks go
    steps += [("a", "99.9", "3.0"), ("b", "90.00", "7.0"), ("a", "104.5", "0.00000000")]
    for i, (side, px, qty) in enumerate(steps, 1):
        book = asks if side == "a" else bids
        if float(qty):
            book[px] = qty
        else:
            book.pop(px, None)
        crc = kraken_checksum_py(top(asks, False), top(bids, True))
        assert_same(fast, ref, frame({side: [[px, qty, f"1700000000.{i + 1}"]], "c": str(crc)}),
                    None, i, full=True)
    assert fast.stats["checksum_ok"] == ref.stats["checksum_ok"] == len(steps)


def _first_update(exchange: str, fast: Handler, ref: Handler) -> tuple[int, Frame, Any]:
    """Feed both handlers until the next frame is one the compiled path takes; return it."""
    name = dict(RECORDINGS)[exchange]
    frames = frames_of(name, 6000)
    compiled = type(fast)._fast
    assert compiled is not None
    probe = HANDLERS[exchange]()  # one frame ahead of the two: tries each frame first
    for i, fr in enumerate(frames):
        if i > min(50, len(frames) // 2) and fr.kind != "rest":
            msg = orjson.loads(fr.raw)
            if compiled(probe, msg, fr.rts) is not None:
                return i, fr, msg
        assert_same(fast, ref, fr, None, i, full=False)
        feed(probe, fr)
    raise AssertionError("no update the compiled path takes")


def _book_sym(h: Handler, msg: Any) -> str:
    return next(s for s in h.books if s not in h._unsynced)


def _binance_gap_by_one(msg: Any, h: Handler) -> None:
    data = msg.get("data", msg)
    seq = h.books[_book_sym(h, msg)].seq
    assert seq is not None
    data["U"], data["u"] = seq + 2, seq + 5


def _futures_wrong_pu(msg: Any, h: Handler) -> None:
    data = msg.get("data", msg)
    seq = h.books[_book_sym(h, msg)].seq
    assert seq is not None
    data["U"], data["u"], data["pu"] = seq - 1, seq + 3, seq - 7


def _futures_no_pu(msg: Any, h: Handler) -> None:
    """Right after a snapshot (fresh) with ``U <= seq <= u``, a diff without ``pu``: the
    Python reads it and fails (a dead letter); nothing may apply it."""
    sym = _book_sym(h, msg)
    seq = h.books[sym].seq
    assert seq is not None and isinstance(h, BinanceHandler)
    h._sync[sym].fresh = True
    data = msg.get("data", msg)
    data["U"], data["u"] = seq - 1, seq + 3
    del data["pu"]


def _crossing_bid(msg: Any, h: Handler) -> None:
    """A bid at the best ask: the book crosses, the symbol waits for a new snapshot."""
    book = h.books[_book_sym(h, msg)]
    ask = book.best_ask()
    assert ask is not None
    if isinstance(msg, dict) and "changes" in msg:
        msg["changes"] = [["buy", ask[0], "1"]]
    elif isinstance(msg, dict) and "arg" in msg:
        msg["data"][0]["bids"] = [[ask[0], "1", "0", "1"]]
        msg["data"][0]["checksum"] = 0
    elif isinstance(msg, dict):
        msg.get("data", msg)["b"] = [[ask[0], "1"]]
    else:
        msg[1] = {"b": [[ask[0], "1", "1618678133.5"]]}


def _checksum_zero(msg: Any, h: Handler) -> None:
    msg["data"][0]["checksum"] = 0  # OKX: "no checksum"


def _okx_seq_ids(msg: Any, h: Handler) -> None:
    seq = h.books[_book_sym(h, msg)].seq
    assert seq is not None
    msg["data"][0].update(seqId=seq + 1, prevSeqId=seq)


def _okx_seq_ids_bad_checksum(msg: Any, h: Handler) -> None:
    _okx_seq_ids(msg, h)
    msg["data"][0]["checksum"] = 12345  # not the book's: a resync, told without a gap


def _okx_repeated_seq_id(msg: Any, h: Handler) -> None:
    seq = h.books[_book_sym(h, msg)].seq
    msg["data"][0].update(seqId=seq, prevSeqId=seq, bids=[], asks=[])  # a heartbeat: ignored


def _nul_in_names(msg: Any, h: Handler) -> None:
    """A word with a NUL after it is another word (JSON may carry one)."""
    if "changes" in msg:
        msg["type"] = "l2update\u0000x"
    else:
        msg.get("data", msg)["e"] = "depthUpdate\u0000"


def _nul_in_side(msg: Any, h: Handler) -> None:
    msg["changes"] = [["buy\u0000", c[1], c[2]] for c in msg["changes"]]


def _three_letter_side(msg: Any, h: Handler) -> None:
    msg["changes"] = [["bid", c[1], c[2]] for c in msg["changes"]]  # not "buy": the asks


def _before_1970(msg: Any, h: Handler) -> None:
    msg["time"] = "1969-12-31T23:59:59.000Z"  # a negative ts: a dead letter


def _stale(msg: Any, h: Handler) -> None:
    h.books[_book_sym(h, msg)].status = "stale"


CRAFTED = [
    ("binance", _binance_gap_by_one), ("binance_futures", _futures_wrong_pu),
    ("binance_futures", _futures_no_pu),
    ("binance", _crossing_bid), ("binance_futures", _crossing_bid), ("coinbase", _crossing_bid),
    ("kraken", _crossing_bid), ("okx", _crossing_bid), ("okx", _checksum_zero),
    ("okx", _okx_seq_ids), ("okx", _okx_seq_ids_bad_checksum), ("okx", _okx_repeated_seq_id),
    ("coinbase", _nul_in_names), ("binance", _nul_in_names), ("coinbase", _nul_in_side),
    ("coinbase", _before_1970), ("coinbase", _three_letter_side),
    ("binance", _stale), ("coinbase", _stale), ("kraken", _stale), ("okx", _stale),
    ("bybit", _crossing_bid), ("bybit", _stale),
]


@pytest.mark.parametrize(("exchange", "edit"), CRAFTED,
                         ids=[f"{ex}-{f.__name__.strip('_')}" for ex, f in CRAFTED])
def test_crafted_frames(exchange: str, edit: Any) -> None:
    """Frames the recordings lack: a gap of one id, a wrong ``pu``, a book that crosses, OKX's
    zero checksum, a stale book. Then the recording goes on; the two stay the same throughout."""
    fast, ref = pair(exchange)
    i, fr, msg = _first_update(exchange, fast, ref)
    for h in (fast, ref):
        mine = copy.deepcopy(msg)
        edit(mine, h)
    raw = json.dumps(mine, separators=(",", ":"))
    assert_same(fast, ref, fr, raw, i, full=True)
    for j, nxt in enumerate(frames_of(dict(RECORDINGS)[exchange], 6000)[i + 1:i + 80]):
        assert_same(fast, ref, nxt, None, i + 1 + j, full=j % 20 == 0)
    assert full_state(fast) == full_state(ref)


# -- FeedBook against Book -----------------------------------------------------------------------
px_text = st.one_of(  # few prices: books cross, levels repeat
    st.sampled_from(["1", "1.5", "2", "2.50", "3", "10", "0.0001", "0.00010", "99999.99"]),
    st.sampled_from(["1", "1.5", "2", "2.50", "3"]),
    st.from_regex(r"[1-9][0-9]{0,3}(\.[0-9]{1,4})?", fullmatch=True),
    st.just("1" + "0" * 45))  # beyond 128 bits of units: the FeedBook hands over to a Book
qty_text = st.sampled_from(["0", "0.0", "1", "2.5", "0.001", "7", "100.000"])
level = st.tuples(px_text, qty_text)
event = st.tuples(st.sampled_from(["snapshot", "update", "update", "update"]),
                  st.integers(-2, 4),  # the seq step: back, repeat, next, skip
                  st.lists(level, max_size=6), st.lists(level, max_size=6),
                  st.booleans(),  # prev_seq given
                  st.one_of(st.none(), st.tuples(st.sampled_from(["bids", "asks"]),
                                                 st.integers(0, 4))))  # a cut after it


def _book_event(action: str, seq: int, prev: int | None, bids: list[tuple[str, str]],
                asks: list[tuple[str, str]]) -> events.BookEvent:
    ev = events.decode_obj({"type": "book", "ex": "kraken", "sym": "BTC-USD", "ts": 1, "rts": 1,
                            "action": action, "seq": seq,
                            **({"prev_seq": prev} if prev is not None else {}),
                            "bids": [list(lv) for lv in bids], "asks": [list(lv) for lv in asks]})
    assert isinstance(ev, events.BookEvent), ev
    return ev


def _reads(b: Any) -> Any:
    return (b.seq, b.status, b.max_levels, b.crossed(), b.best_bid(), b.best_ask(),
            b.depth("bids"), b.depth("asks"), b.top(3, "bids"), b.top(99, "asks"),
            b.levels("bids"), b.levels("asks"), b.__getstate__())


@settings(max_examples=300, deadline=None)
@given(evs=st.lists(event, min_size=1, max_size=30))
def test_feedbook_answers_as_book(evs: list[Any]) -> None:
    """Generated snapshots and updates (duplicates, gaps, zeros, repeated prices, crossing
    books, a key beyond 128 bits) applied to a FeedBook and to a Book: the same outcomes and
    the same answers to every read after each, and the same cuts."""
    native = events._native
    assert native is not None
    fb, book = native.FeedBook(), Book()
    seq = 0
    for i, (action, step, bids, asks, chained, cut) in enumerate(evs):
        prev = seq if chained else None
        seq = max(0, seq + step)
        ev = _book_event(action, seq, prev, bids, asks)
        assert fb.apply(ev) == book.apply(ev), i
        assert _reads(fb) == _reads(book), i
        if cut is not None:
            assert fb.cut(*cut) == book.cut(*cut), i
            assert _reads(fb) == _reads(book), i


deep_level = st.tuples(st.integers(1, 600).map(lambda t: f"{t / 4:.2f}"),
                       st.sampled_from(["0", "0", "1", "2.5", "0.001"]))


@settings(max_examples=30, deadline=None)
@given(snapshot=st.lists(deep_level, min_size=150, max_size=400),
       side=st.sampled_from(["bids", "asks"]),
       batches=st.lists(st.tuples(st.lists(deep_level, min_size=20, max_size=150),
                                  st.integers(0, 500)), min_size=1, max_size=12))
def test_feedbook_deep_books_as_book(snapshot: list[tuple[str, str]], side: str,
                                     batches: list[tuple[list[tuple[str, str]], int]]) -> None:
    """Books of hundreds of levels (each side a row of chunks of 64 that split, merge and even
    out as levels come and go), updated in large batches anywhere in the book and cut: every
    read as a Book's, the whole book included."""
    native = events._native
    assert native is not None
    fb, book = native.FeedBook(), Book()
    other = "asks" if side == "bids" else "bids"
    for b in (fb, book):
        b.apply(_book_event("snapshot", 1, None, *((snapshot, []) if side == "bids" else
                                                   ([], snapshot))))
    for seq, (levels, depth) in enumerate(batches, 2):
        ev = _book_event("update", seq, seq - 1, *((levels, []) if side == "bids" else
                                                   ([], levels)))
        assert fb.apply(ev) == book.apply(ev)
        assert _reads(fb) == _reads(book)
        if depth % 3 == 0:
            assert fb.cut(side, depth) == book.cut(side, depth)
            assert fb.cut(other, depth) == book.cut(other, depth)
            assert _reads(fb) == _reads(book)


@pytest.mark.parametrize("side", ["bids", "asks"])
def test_feedbook_churn_as_book(side: str) -> None:
    """Blocks of levels added and removed across a deep book, so that its chunks split, empty,
    merge and even out with a neighbour: after each block, every read as a Book's."""
    import random
    native = events._native
    assert native is not None
    rng = random.Random(7)
    fb, book = native.FeedBook(), Book()
    for b in (fb, book):
        b.apply(_book_event("snapshot", 1, None, [], []))
    for seq in range(2, 400):
        start, n = rng.randrange(0, 2000), rng.randrange(1, 150)
        step = rng.choice([1, 1, 2, 5])
        qty = "0" if rng.random() < 0.45 else rng.choice(["1", "2.5"])
        levels = [(f"{1000 + (start + i * step) % 2000}.5", qty) for i in range(n)]
        if rng.random() < 0.3:
            rng.shuffle(levels)
        ev = _book_event("update", seq, seq - 1, *((levels, []) if side == "bids" else
                                                   ([], levels)))
        assert fb.apply(ev) == book.apply(ev) == "applied"
        assert _reads(fb) == _reads(book), seq
    assert 300 < fb.depth(side) < 2000


@pytest.mark.parametrize("order", ["ascending", "descending", "repeated", "repeated descending",
                                   "shuffled", "one"])
def test_feedbook_snapshot_in_any_order(order: str) -> None:
    """A snapshot sent sorted either way is loaded without a sort; with a price repeated (the
    last one wins, a zero removes it) or shuffled, sorted: each as a Book has it."""
    pxs = [f"{100 + i}.5" for i in range(40)]
    if order == "descending":
        pxs.reverse()
    elif order.startswith("repeated"):
        pxs[10] = pxs[9]  # next to each other: the later one's quantity wins
        pxs[20] = pxs[30]
        if order.endswith("descending"):
            pxs.reverse()
    elif order == "shuffled":
        pxs = pxs[::7] + pxs[1::7] + pxs[2::7] + pxs[3::7] + pxs[4::7] + pxs[5::7] + pxs[6::7]
    elif order == "one":
        pxs = pxs[:1]
    levels = [(px, "0" if i == 20 else f"{i + 1}") for i, px in enumerate(pxs)]
    mine, ref = events._native.FeedBook(), Book()  # type: ignore[union-attr]
    for b in (mine, ref):
        assert b.apply(_book_event("snapshot", 1, None, levels, [])) == "applied"
        assert b.apply(_book_event("snapshot", 2, None, [], levels)) == "applied"
    assert _reads(mine) == _reads(ref)


def test_feedbook_refuses_what_book_refuses() -> None:
    native = events._native
    assert native is not None
    fb = native.FeedBook()
    with pytest.raises(ValueError, match="side"):
        fb.top(3, "middle")
    with pytest.raises(ValueError, match="snapshots and updates"):
        fb.apply(_book_event("insert", 1, None, [("1", "1")], []))
    with pytest.raises(TypeError):
        copy.deepcopy(fb)  # not pickled: a handler re-snapshots
    fb.status = "stale"
    assert fb.status == "stale" and fb.seq is None


@pytest.mark.parametrize("key", ["b", "a", "u", "type", "changes", "product_id", "kraken-b",
                                 "kraken-a", "kraken-c", "okx-bids", "okx-checksum", "okx-ts"])
def test_a_key_twice_in_the_text(key: str) -> None:
    """JSON readers keep a repeated key's last value; the paths that read the text (Binance,
    Coinbase, Kraken) must not read both or the first: they leave such a frame to orjson."""
    exchange = "coinbase" if key in ("type", "changes", "product_id") else \
        key.partition("-")[0] if "-" in key else "binance"
    fast, ref = pair(exchange)
    i, fr, msg = _first_update(exchange, fast, ref)
    if exchange == "okx":
        k = key.partition("-")[2]
        again = {"bids": [["1.5", "2", "0", "1"]], "checksum": 12345, "ts": "1652459225999"}[k]
        inner = json.dumps(msg["data"][0], separators=(",", ":"))[:-1]
        inner += f",{json.dumps(k)}:{json.dumps(again, separators=(',', ':'))}}}"
        rest = json.dumps({x: y for x, y in msg.items() if x != "data"}, separators=(",", ":"))
        assert_same(fast, ref, fr, rest[:-1] + ',"data":[' + inner + "]}", i, full=True)
        return
    if exchange == "kraken":
        k = key[-1]
        again = {"b": [["1.5", "2", "1618678133.5"]], "a": [["999999", "1", "1618678133.5"]],
                 "c": "123"}[k]
        part = json.dumps(msg[1], separators=(",", ":"))[:-1]
        part += f",{json.dumps(k)}:{json.dumps(again, separators=(',', ':'))}}}"
        rest = [json.dumps(x, separators=(",", ":")) for x in msg[2:]]
        text = "[" + ",".join([json.dumps(msg[0]), part, *rest]) + "]"
        assert_same(fast, ref, fr, text, i, full=True)
        return
    data = msg.get("data", msg)
    again = {"b": [["1.5", "2"]], "a": [["999999", "1"]], "u": data.get("u"), "type": "snapshot",
             "changes": [["buy", "1.5", "2"]], "product_id": "ETH-EUR"}[key]
    text = json.dumps(data, separators=(",", ":"))[:-1]
    text += f",{json.dumps(key)}:{json.dumps(again, separators=(',', ':'))}}}"
    if "data" in msg:
        text = '{"stream":' + json.dumps(msg["stream"]) + ',"data":' + text + "}"
    assert_same(fast, ref, fr, text, i, full=True)
