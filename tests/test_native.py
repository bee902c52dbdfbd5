"""The compiled scanners (operators/_native.c) against the pure-Python paths they replace.

``decode_trades`` must give the same ``TradeBatch`` columns, or the same refusal (``None``), for
any group of values: canonical trades, near misses one byte away, and edge values of every field;
``book_levels`` the same levels, or ``None``, for any JSON value; ``set_levels`` the same book;
the Kraken and OKX checksums the same numbers.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.exchanges.kraken import kraken_checksum, kraken_checksum_py
from connectors.exchanges.okx import okx_checksum, okx_checksum_py
from operators import events
from operators.events import (
    _PARSED,
    _batch_pattern,
    _book_levels_py,
    _decode_trades_py,
    book_levels,
    clear_caches,
    encode,
)
from operators.fixed import fmt, fmt_py
from operators.orderbook import _set_levels, _set_levels_py, _side_top, _side_top_py
from operators.ticker import _scan_ids, _scan_ids_py

EX, SYM = "binance", "ETH-USDT"


def _native_columns(values: list[Any], ex: str = EX, sym: str = SYM) -> Any:
    found = _batch_pattern(ex, sym)
    assert found is not None
    return events._native.decode_trades(values, found[1], _PARSED)


def _python_columns(values: list[Any], ex: str = EX, sym: str = SYM) -> Any:
    found = _batch_pattern(ex, sym)
    assert found is not None
    b = _decode_trades_py(values, ex, sym, found[0])
    if b is None:
        return None
    return (b.ts, b.rts, b.ids, b.px, b.qty, b.side, b.px_u, b.px_dp, b.qty_u, b.qty_dp)


def test_the_compiled_scanner_is_built() -> None:
    assert events.NATIVE and events._native is not None, (
        "operators/_native.c is not built: `make setup` (pip install -e .) compiles it")


number = st.one_of(
    st.from_regex(r"[0-9]{1,6}(\.[0-9]{0,20})?", fullmatch=True),
    st.from_regex(r"0*[0-9]{15,40}(\.[0-9]{0,19})?", fullmatch=True),  # around 38 digits of units
    st.sampled_from(["0", "0.0", "00.10", ".5", "5.", ".", "1.2.3", "", "1e5", "-1", "12",
                     "0" * 99 + "1", "0" * 100 + "1", "1" * 4301, "0" * 4300 + "1"]))
integer = st.one_of(st.integers(0, 10**18), st.sampled_from([0, 10**18 - 1, 10**18, 2**63]))
trade_id = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=0, max_size=8)


@st.composite
def values(draw: st.DrawFn) -> list[bytes]:
    """Canonical trades of EX/SYM, some of them edited into near misses."""
    out = []
    for _ in range(draw(st.integers(1, 6))):
        obj = {"type": "trade", "ex": EX, "sym": SYM, "ts": draw(integer), "rts": draw(integer),
               "id": draw(trade_id), "px": draw(number), "qty": draw(number),
               "side": draw(st.sampled_from(["buy", "sell", "hold"]))}
        raw = encode(obj)
        if draw(st.booleans()):  # a near miss: one byte changed, inserted or removed
            i = draw(st.integers(0, len(raw)))
            b = draw(st.sampled_from([b'"', b"\\", b"\n", b" ", b"\t", b"\r", b"0", b"9", b".",
                                      b"-", b"}", b"{", b":", b",", "\u00e9".encode(), b"\x00",
                                      b"", b"01"]))
            raw = raw[:i] + b + raw[i + draw(st.integers(0, 1)):]
        if draw(st.booleans()):
            raw += draw(st.sampled_from([b" ", b"\r", b" \t", b"\n", b"x"]))
        out.append(raw)
    return out


@settings(max_examples=1500, deadline=None)
@given(values(), st.booleans())
def test_compiled_scanner_equals_the_python_path(vals: list[bytes], cold: bool) -> None:
    if cold:
        clear_caches()  # misses go through the memo's parser (and its refusals)
    assert _native_columns(vals) == _python_columns(vals)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 10**12]), st.sampled_from([0, 1]),
                          st.sampled_from(["1.5", "1.50", "2", "0", "1e5"]),
                          st.sampled_from(["1.5", "2", "0.0", "x"])), min_size=1, max_size=8),
       st.booleans())
def test_repeated_fields_decode_alike(rows: list[tuple[int, int, str, str]], cold: bool) -> None:
    """The scanner reuses the previous row's objects for a repeated time, price or quantity:
    rows drawn from small pools repeat (and refuse) them in every order."""
    if cold:
        clear_caches()
    vals = [encode({"type": "trade", "ex": EX, "sym": SYM, "ts": ts, "rts": rts, "id": "i",
                    "px": px, "qty": qty, "side": "buy"}) for ts, rts, px, qty in rows]
    assert _native_columns(vals) == _python_columns(vals)


def test_accepted_values_decode_like_decode() -> None:
    raw = (b'{"type":"trade","ex":"binance","sym":"ETH-USDT","ts":0,"rts":9999999999999,'
           b'"id":"a !#[]~","px":"2683.80","qty":"0.0150","side":"sell"} \r')
    cols = _native_columns([raw, raw])
    assert cols is not None and cols == _python_columns([raw, raw])
    b = events.TradeBatch(EX, SYM, cols)
    assert b.trade(1) == events.decode(raw)
    assert [type(c[0]) for c in cols] == [int, int, str, str, str, str, int, int, int, int]


def test_refusals() -> None:
    ok = (b'{"type":"trade","ex":"binance","sym":"ETH-USDT","ts":1,"rts":2,"id":"7",'
          b'"px":"1.5","qty":"2","side":"buy"}')
    for bad in (ok.replace(b'"2"', b'"0"'),  # zero quantity
                ok.replace(b'"1.5"', b'"1..5"'),  # not a decimal
                ok.replace(b'"ts":1', b'"ts":12345678901234'),  # 14 digits: not ms
                ok.replace(b'"ts":1', b'"ts":01'),  # leading zero
                ok.replace(b"ETH-USDT", b"BTC-USDT"),  # another symbol
                ok.replace(b'"id":"7"', b'"id":""'),  # empty id
                ok.replace(b'"id":"7"', b'"id":"\\u0037"'),  # an escape
                ok + b"\n"):
        assert _native_columns([ok, bad]) is None, bad
        assert _python_columns([ok, bad]) is None, bad
    assert _native_columns([ok, "not bytes"]) is None
    assert _native_columns([]) is None and _python_columns([]) is None


json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**20), number,
                        st.floats(allow_nan=False), st.text(max_size=4))
level = st.one_of(st.lists(number, min_size=2, max_size=2),  # the common shape
                  st.lists(json_scalar, min_size=0, max_size=3),
                  st.lists(st.lists(number, max_size=2), min_size=2, max_size=2),
                  json_scalar, st.dictionaries(st.text(max_size=2), number, max_size=2))


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.lists(level, max_size=6), json_scalar), st.booleans())
def test_compiled_book_levels_equal_the_python_path(raw: Any, cold: bool) -> None:
    if cold:
        clear_caches()
    assert book_levels(raw) == _book_levels_py(raw)


def test_compiled_units_at_the_digit_boundaries() -> None:
    """The C parser keeps 19 digits in a 64-bit word before each 128-bit step: numbers of
    18 to 39 significant digits, with 0 to 19 decimals, parse as the Python does."""
    for digits in (1, 18, 19, 20, 21, 37, 38, 39):
        for dp in (0, 1, 2, 17, 18, 19):
            for lead in ("", "0", "000"):
                text = lead + "9" * digits
                if dp:
                    text = text[:-dp] + "." + text[-dp:] if dp < len(text) else "0." + text
                for raw in ([[text, "1"]], [["1", text]], [[text.replace("9", "1", 1), text]]):
                    clear_caches()
                    assert book_levels(raw) == _book_levels_py(raw), raw


def test_book_levels_is_the_compiled_one() -> None:
    assert book_levels is not _book_levels_py
    assert book_levels([["2683.80", "0"]]) == [(2683800000000000000000, "2683.80", 0, "0")]
    assert book_levels([["0", "1"]]) is None  # a price must be positive
    assert book_levels([["1", "-1"]]) is None  # a quantity must not be negative
    assert book_levels([["1", "1", "x"]]) is None and book_levels([]) == []


def test_overlong_numbers_are_dead_letters_not_crashes() -> None:
    """Past ``MAX_CHARS`` a number is refused on every path (``int()`` itself raises a plain
    ValueError past 4,300 digits, which must not escape ``decode``)."""
    for px in ("1" * 4301, "0" * 4300 + "1", "1" * 101):
        raw = encode({"type": "trade", "ex": EX, "sym": SYM, "ts": 1, "rts": 1, "id": "1",
                      "px": px, "qty": "1", "side": "buy"})
        assert isinstance(events.decode(raw), events.DeadLetter)
        assert _native_columns([raw]) is None and _python_columns([raw]) is None
        assert book_levels([[px, "1"]]) is None and _book_levels_py([[px, "1"]]) is None
        book = encode({"type": "book", "ex": EX, "sym": SYM, "ts": 1, "rts": 1,
                       "action": "snapshot", "seq": 1, "bids": [[px, "1"]], "asks": []})
        assert isinstance(events.decode(book), events.DeadLetter)


def test_memos_that_change_the_input_do_not_crash_the_scanners() -> None:
    """The memos' parsers are Python code: one that empties or rewrites the list being scanned
    (ours never do) must not make the C code read freed memory."""
    ok = (b'{"type":"trade","ex":"binance","sym":"ETH-USDT","ts":1,"rts":2,"id":"7",'
          b'"px":"PX","qty":"2","side":"buy"}')
    found = _batch_pattern(EX, SYM)
    assert found is not None
    for mutate in (list.clear, lambda v: v.__setitem__(0, b"x" * 200),
                   lambda v: v.__delitem__(slice(1, None))):
        vals = [ok.replace(b"PX", b".5"), ok.replace(b"PX", b"1")]  # ".5" asks the memo

        class Memo(dict[Any, Any]):
            def __missing__(self, key: Any) -> Any:
                mutate(vals)  # noqa: B023 - called within this iteration
                return (10**18, 0)

        memo = Memo()
        cols = events._native.decode_trades(vals, found[1], memo)
        assert cols is not None and len(cols[0]) == 2  # the values as they were at the call
        raw: list[Any] = [[".5", "1"], ["1", "1"], ["2", "1"]]

        class LevelMemo(dict[Any, Any]):
            def __missing__(self, key: Any) -> Any:
                mutate(raw)  # noqa: B023
                return 1

        out = events._native.book_levels(LevelMemo(), LevelMemo(), raw)
        assert out is not None and len(out) == 3


def _outcome(f: Any, *args: Any) -> Any:
    try:
        return ("ok", f(*args))
    except Exception as e:  # the same exception type and message
        return (type(e).__name__, str(e))


_units = st.one_of(
    st.integers(-(10**40), 10**40),
    st.builds(lambda q, k: q * 10**k, st.integers(-(10**25), 10**25), st.integers(0, 40)),
    st.sampled_from([0, 1, -1, 10**18, 10**36, 2**63, 2**64 - 1, 10**100]),
)


@given(_units, st.integers(-3, 40), st.one_of(st.none(), st.integers(-3, 40)))
@settings(max_examples=3000, deadline=None)
def test_compiled_fmt_equals_the_python_fmt(units: int, dp: int, scale: int | None) -> None:
    args = (units, dp) if scale is None else (units, dp, scale)
    assert fmt is events._native.fmt
    assert _outcome(fmt, *args) == _outcome(fmt_py, *args)


def test_compiled_fmt_odd_arguments() -> None:
    for args in [(True, 1), (5 * 10**17, True), (1.5, 2), ("1", 2), (10**18, 2**70),
                 (10**18, 1, 2**70), (10**18,), (1, 2, 3, 4),
                 (10**4300, 1), (10**4316, 1, 18)]:  # str() has a digit limit, not fmt
        assert _outcome(fmt, *args) == _outcome(fmt_py, *args), args
    assert fmt(5 * 10**16, dp=2) == fmt_py(5 * 10**16, dp=2) == "0.05"
    assert _outcome(lambda: fmt(1, 2, scale=18)) == _outcome(lambda: fmt_py(1, 2, scale=18))


_ids = st.lists(st.one_of(
    st.integers(0, 10**20).map(str),
    st.integers(2**63 - 20, 2**63 + 20).map(str),
    st.sampled_from(["", "0", "00", "01", "-1", "+1", " 1", "1 ", "1_0", "\u0661", "12\u0663",
                     "999999999999999999", "1000000000000000000", "9223372036854775807",
                     "9223372036854775808", "99999999999999999999", "abc", "1e3"]),
    st.text(max_size=4),
), max_size=12)


@given(_ids, st.integers(-2, 14), st.integers(-2, 14), st.integers(-1, 2**63 - 1))
@settings(max_examples=3000, deadline=None)
def test_compiled_scan_ids_equals_the_python_one(ids: list[str], start: int, stop: int,
                                                 floor: int) -> None:
    assert _scan_ids is events._native.scan_ids
    assert _scan_ids(ids, start, stop, floor) == _scan_ids_py(ids, start, stop, floor)


_keys = st.integers(1, 40).map(lambda k: k * 10**18 if k % 3 else k * 10**21)  # beyond 64 bits
_changes = st.lists(st.lists(st.tuples(_keys, st.sampled_from([0, 0, 1, 2, 10**30]))), max_size=8)


@given(st.dictionaries(_keys, st.just(("p", "q"))), _keys, st.booleans(), _changes)
@settings(max_examples=1000, deadline=None)
def test_compiled_set_levels_equals_the_python_loop(start: dict[int, tuple[str, str]], edge: int,
                                                    bid: bool,
                                                    batches: list[list[tuple[int, int]]]) -> None:
    """Levels set, replaced and removed (zero), with the head of either side kept sorted, for
    any edge and starting book; keys beyond 64 bits, as prices in units are."""
    assert _set_levels is events._native.set_levels
    books = []
    for f in (_set_levels, _set_levels_py):
        d = dict(start)
        head = sorted(k for k in d if (k <= edge) != bid)
        for batch in batches:
            f(d, head, edge, bid, [(k, f"p{k}", q, f"q{q}") for k, q in batch])
            assert head == sorted(k for k in d if (k <= edge) != bid)
        books.append((d, head))
    assert books[0] == books[1]


@given(st.lists(_keys, unique=True), st.integers(-2, 45), st.booleans())
@settings(max_examples=500, deadline=None)
def test_compiled_side_top_equals_the_python_one(keys: list[int], n: int, bid: bool) -> None:
    head = sorted(keys)
    d = {k: (f"p{k}", "q") for k in keys}
    assert _side_top is events._native.side_top
    assert _side_top(d, head, n, bid) == _side_top_py(d, head, n, bid)
    with pytest.raises(KeyError):
        _side_top({}, [5], 1, bid)


def test_compiled_set_levels_refuses_what_is_not_a_level() -> None:
    for bad in ([(1, "p", 1)], [[1, "p", 1, "q"]], [("1", "p", 1, "q")], [(1.0, "p", 1, "q")]):
        with pytest.raises(TypeError):
            events._native.set_levels({}, [], 0, True, bad)
    with pytest.raises(TypeError):
        events._native.set_levels({}, [], 0, True, ())  # changes must be a list
    with pytest.raises(TypeError):
        events._native.set_levels({}, [], 0, 1, [])  # bid must be a bool


def test_compiled_set_levels_survives_a_head_that_changes_under_it() -> None:
    """Only exact ints reach the head from the book, but an int subclass whose comparison
    empties the list must give an error, not a read past its end (a segfault, found in review)."""
    head: list[int] = []

    class Shrinking(int):
        def __lt__(self, other: object) -> bool:
            head.clear()
            return int.__lt__(self, other)  # type: ignore[operator]

        __hash__ = int.__hash__

    head[:] = [Shrinking(i) for i in range(0, 4000, 2)]
    with pytest.raises(RuntimeError):
        events._native.set_levels({1001: ("p", "q")}, head, 10**9, False, [(1001, "p", 0, "q")])


_text = st.one_of(st.from_regex(r"0*[0-9]{0,6}(\.[0-9]{0,10})?", fullmatch=True),
                  st.text(max_size=6))  # non-ASCII too: the reference takes those
_level = st.one_of(st.tuples(_text, _text), st.lists(_text, min_size=2, max_size=2),
                   st.lists(_text, max_size=3).map(tuple))
_side = st.lists(_level, max_size=12)


@given(_side, _side, st.integers(0, 30))
@settings(max_examples=500, deadline=None)
def test_compiled_checksums_equal_the_python_ones(first: list[Any], second: list[Any],
                                                  n: int) -> None:
    assert _outcome(kraken_checksum, first, second) == _outcome(kraken_checksum_py, first,
                                                                  second)
    assert _outcome(okx_checksum, first, second) == _outcome(okx_checksum_py, first, second)
    mixed = (first, tuple(second))  # a list and a tuple: the reference raises, so must C's path
    assert _outcome(kraken_checksum, *mixed) == _outcome(kraken_checksum_py, *mixed)
    plain = [(str(i), f"0.{i}0") for i in range(n)]  # what Book.top returns (past the caps)
    assert events._native.kraken_crc(plain, plain) == kraken_checksum_py(plain, plain)
    assert events._native.okx_crc(plain, plain) == okx_checksum_py(plain, plain)


def test_the_bench_command_runs_from_anywhere(tmp_path: Any) -> None:
    """``marketdata bench NAME`` (the console script, any working directory) runs bench/NAME."""
    import subprocess
    import sys
    from pathlib import Path

    cli = Path(sys.executable).with_name("marketdata")
    out = subprocess.run([str(cli), "bench", "decode", "--repeat", "1"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Decoding: compiled scanners vs pure Python" in out.stdout


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"a:X-Y", b"b:X-Y", b"", None]),
                          st.binary(max_size=3))))
def test_group_by_key_equals_the_python_grouping(
        messages: list[tuple[bytes | None, bytes]]) -> None:
    from dataflows.common import _group_by_key_py

    assert events._native is not None
    assert events._native.group_by_key(messages) == _group_by_key_py(messages)
    for bad in ([(b"k",)], [(b"k", b"v", 7)], [[b"k", b"v"]]):  # (key, value) tuples only
        with pytest.raises(TypeError):
            events._native.group_by_key(bad)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=40))
def test_top_index_equals_the_python_scan(counts: list[int]) -> None:
    from operators.ticker import _top_dp_py

    assert events._native is not None
    assert events._native.top_index(counts) == _top_dp_py(counts)
