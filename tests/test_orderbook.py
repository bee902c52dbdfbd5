"""The order book operator against a naive reference, on generated streams and on real data."""

from __future__ import annotations

import gzip
import json
import pickle
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.exchanges.recordings import data_dir
from operators.events import BookEvent, DeadLetter, decode, decode_obj
from operators.orderbook import Book, BookParams, BookState, Grouping
from tests.book_reference import RefBook, as_decimal

DATA = data_dir()
ETH = DATA / "canonical" / "binance_ethusdt_20240808.events.jsonl.gz"


def _ev(action: str, seq: int, prev: int | None, bids: list, asks: list, ts: int) -> dict:
    d: dict[str, Any] = {"type": "book", "ex": "test", "sym": "BTC-USDT", "ts": ts, "rts": ts,
                         "action": action, "seq": seq, "bids": bids, "asks": asks}
    if prev is not None:
        d["prev_seq"] = prev
    return d


def _book_event(d: dict) -> BookEvent:
    e = decode_obj(d)
    assert isinstance(e, BookEvent), e
    return e


# -- generated streams ------------------------------------------------------------------------
price = st.integers(min_value=90, max_value=110).flatmap(
    lambda t: st.sampled_from([f"{t}.5", f"{t}.50", f"{t}"]))
qty = st.sampled_from(["0", "0.0", "1", "2.5", "0.125", "3.00", "10", "0.001"])
levels = st.lists(st.tuples(price, qty).map(list), max_size=6)


@st.composite
def streams(draw: st.DrawFn) -> list[dict]:
    """Snapshots, the four actions, duplicates, gaps, snapshot resets, out-of-chain prev_seq."""
    out: list[dict] = []
    seq, ts = 100, 1_000
    for _ in range(draw(st.integers(1, 60))):
        kind = draw(st.sampled_from(["update"] * 6 + ["insert", "delete", "delete", "snapshot",
                                                      "dup", "gap", "noprev"]))
        ts += draw(st.sampled_from([0, 1, 30, 99, 100, 250]))
        if kind == "dup" and out:
            out.append(dict(draw(st.sampled_from(out)), ts=ts))
            continue
        step = draw(st.integers(1, 3))
        if kind == "snapshot" or not out:
            seq += step
            out.append(_ev("snapshot", seq, None, draw(levels), draw(levels), ts))
            continue
        prev = seq if kind != "gap" else seq - 1
        seq += step
        action = kind if kind in ("insert", "delete") else "update"
        out.append(_ev(action, seq, None if kind == "noprev" else prev, draw(levels),
                       draw(levels), ts))
    return out


@settings(max_examples=150, deadline=None)
@given(streams(), st.sampled_from([0, 3]), st.sampled_from([1, 5]))
def test_book_equals_reference_after_every_event(evs: list[dict], cap: int, depth: int) -> None:
    state = BookState("test:BTC-USDT", BookParams(depth=depth, emit_interval_ms=100,
                                                   max_levels=cap))
    ref = RefBook(cap)
    history: dict[tuple[int | None, str], tuple] = {}
    records: list[dict] = []
    for d in evs:
        records += state.on_event(_book_event(d))
        ref.apply(d)
        b = state.book
        assert (b.seq, b.status) == (ref.seq, ref.status)
        assert [(Decimal(p), Decimal(q)) for _, p, _, q in b.levels("bids")] == \
            ref.top(10**6)[0]
        assert [(Decimal(p), Decimal(q)) for _, p, _, q in b.levels("asks")] == \
            ref.top(10**6)[1]
        history[(ref.seq, ref.status)] = ref.top(depth)
    records += state.flush()
    last_emit = None
    for r in records:
        assert (as_decimal(r["bids"]), as_decimal(r["asks"])) == history[(r["seq"], r["status"])]
        assert len(r["bids"]) <= depth and len(r["asks"]) <= depth
    # the last record shows the final state
    if records:
        assert (records[-1]["seq"], records[-1]["status"]) == (ref.seq, ref.status)
        assert (as_decimal(records[-1]["bids"]), as_decimal(records[-1]["asks"])) == ref.top(depth)
    del last_emit


@settings(max_examples=100, deadline=None)
@given(streams())
def test_emission_is_throttled_and_never_misses_a_status_change(evs: list[dict]) -> None:
    state = BookState("test:BTC-USDT", BookParams(depth=5, emit_interval_ms=100))
    stamped: list[tuple[int, dict]] = []
    for d in evs:
        before = state.book.status
        seq = state.book.seq
        snap = d["action"] == "snapshot" and (seq is None or d["seq"] >= seq)
        recs = state.on_event(_book_event(d))
        stamped += [(d["ts"], r) for r in recs]
        if snap or state.book.status != before:
            assert recs and recs[-1]["seq"] == state.book.seq, "snapshot/status change not emitted"
    # Records never go back in sequence, and two records of the same status are 100 ms apart
    # in event time unless a snapshot forced the second one.
    for (_, a), (_, b) in pairwise(stamped):
        assert b["seq"] >= a["seq"]


@settings(max_examples=150, deadline=None)
@given(streams(), st.sampled_from([0, 3]), st.integers(1, 3), st.integers(1, 6))
def test_small_head_refills_and_trims_exactly(evs: list[dict], cap: int, head: int,
                                              n: int) -> None:
    """Only a book's best keys are kept sorted: with a head of 1-3 keys, every read crosses a
    refill or a trim, and must still equal the reference."""
    b, wide, ref, g = Book(cap, head=head), Book(cap), RefBook(cap), Grouping("1")
    for d in evs:
        b.apply(_book_event(d))
        wide.apply(_book_event(d))
        ref.apply(d)
        assert (b.seq, b.status) == (ref.seq, ref.status)
        best = b.best_bid(), b.best_ask()  # first: a read of n may refill the head
        assert tuple(as_decimal([x]) if x else [] for x in best) == ref.top(1)
        assert (as_decimal(b.top(n, "bids")), as_decimal(b.top(n, "asks"))) == ref.top(n)
        for side in ("bids", "asks"):
            assert g.top(b, n, side) == g.top(wide, n, side)
    restored = pickle.loads(pickle.dumps(b))
    assert restored.levels("bids") == b.levels("bids") and restored.top(n, "asks") == \
        b.top(n, "asks")


def _ref_grouped(ref: RefBook, side: str, n: int, bucket: Decimal) -> list[tuple[Decimal,
                                                                                 Decimal]]:
    """Price grouping the obvious way: every level to its bucket (bids down, asks up), summed."""
    sums: dict[Decimal, Decimal] = {}
    for p, (_, q) in (ref.bids if side == "bids" else ref.asks).items():
        whole, rest = divmod(p, bucket)
        b = (whole + (1 if rest and side == "asks" else 0)) * bucket
        sums[b] = sums.get(b, Decimal(0)) + q
    return [(b, sums[b]) for b in sorted(sums, reverse=side == "bids")[:n]]


@settings(max_examples=150, deadline=None)
@given(streams(), st.sampled_from(["0.5", "1", "3", "0.01"]), st.sampled_from([1, 2, 64]),
       st.integers(1, 6))
def test_grouped_top_equals_the_reference(evs: list[dict], bucket: str, head: int,
                                          n: int) -> None:
    """Buckets of one to hundreds of levels, read through heads that must widen, equal the
    naive grouping of the reference book after every event."""
    b, ref, g = Book(head=head), RefBook(), Grouping(bucket)
    for d in evs:
        b.apply(_book_event(d))
        ref.apply(d)
        for side in ("bids", "asks"):
            assert as_decimal(g.top(b, n, side)) == _ref_grouped(ref, side, n, Decimal(bucket))


def test_head_trim_keeps_its_edge_key() -> None:
    """A trimmed head keeps its worst key inside the edge: deleting it must leave the head."""
    b = Book(head=1)
    b.apply(_book_event(_ev("snapshot", 1, None, [[str(p), "1"] for p in range(10, 4, -1)],
                            [[str(p), "1"] for p in range(11, 17)], 0)))
    assert [p for p, _ in b.top(6, "bids")] == ["10", "9", "8", "7", "6", "5"]
    assert [p for p, _ in b.top(6, "asks")] == ["11", "12", "13", "14", "15", "16"]
    b.apply(_book_event(_ev("update", 2, 1, [], [], 0)))  # trims both heads to one key
    b.apply(_book_event(_ev("update", 3, 2, [["10", "0"]], [["11", "0"]], 0)))
    assert b.best_bid() == ("9", "1") and b.best_ask() == ("12", "1")
    assert b.top(2, "bids") == [("9", "1"), ("8", "1")]
    assert b.top(2, "asks") == [("12", "1"), ("13", "1")]


def test_throttle_leading_edge_and_timer() -> None:
    s = BookState("test:BTC-USDT", BookParams(depth=1, emit_interval_ms=100))
    snap = _book_event(_ev("snapshot", 1, None, [["10", "1"]], [["11", "1"]], 1000))
    assert len(s.on_event(snap)) == 1
    assert s.on_event(_book_event(_ev("update", 2, 1, [["10", "2"]], [], 1010))) == []
    assert s.on_event(_book_event(_ev("update", 3, 2, [["10", "3"]], [], 1050))) == []
    assert s.next_deadline() == 1100
    # The timer fires at 1100 with the state as of seq 3, before the event at 1120 is applied.
    out = s.on_event(_book_event(_ev("update", 4, 3, [["10", "4"]], [], 1120)))
    assert [(r["seq"], r["bids"]) for r in out] == [(3, [("10", "3")])]
    assert s.advance(1199) == [] and [r["seq"] for r in s.advance(1200)] == [4]
    # Leading edge: a change after a quiet period is emitted at once.
    assert [r["seq"] for r in s.on_event(_book_event(_ev("update", 5, 4, [], [], 5000)))] == [5]


def test_actions_gap_and_resnapshot() -> None:
    b = Book()
    b.apply(_book_event(_ev("snapshot", 10, None, [["100.0", "1"], ["99", "2"]], [["101", "1"]],
                            0)))
    assert b.apply(_book_event(_ev("insert", 11, 10, [["100.0", "0.5"], ["98", "1"]], [], 0))) \
        == "applied"
    assert b.top(3, "bids") == [("100.0", "1.5"), ("99", "2"), ("98", "1")]
    b.apply(_book_event(_ev("delete", 12, 11, [["100.0", "1.5"], ["99", "0.5"]], [], 0)))
    assert b.top(3, "bids") == [("99", "1.5"), ("98", "1")]
    assert b.apply(_book_event(_ev("update", 12, 11, [["99", "0"]], [], 0))) == "duplicate"
    assert b.apply(_book_event(_ev("update", 14, 13, [["99", "0"]], [], 0))) == "gap"
    assert b.status == "stale"
    assert b.apply(_book_event(_ev("update", 15, 14, [["99", "0"]], [], 0))) == "skipped"
    assert b.top(3, "bids") == [("99", "1.5"), ("98", "1")]
    b.apply(_book_event(_ev("snapshot", 20, None, [["50", "1"]], [["49", "1"]], 0)))
    assert (b.status, b.top(5, "bids"), b.top(5, "asks")) == ("crossed", [("50", "1")],
                                                               [("49", "1")])


def test_grouping_rounds_bids_down_and_asks_up() -> None:
    b = Book()
    b.apply(_book_event(_ev("snapshot", 1, None,
                            [["100.7", "1"], ["100.2", "0.5"], ["99.9", "2.25"]],
                            [["101.1", "1"], ["101.5", "2"], ["102.4", "0.1"]], 0)))
    g = Grouping("0.5")
    assert g.top(b, 5, "bids") == [("100.5", "1"), ("100.0", "0.5"), ("99.5", "2.25")]
    assert g.top(b, 5, "asks") == [("101.5", "3"), ("102.5", "0.1")]
    assert Grouping("1").top(b, 1, "bids") == [("100", "1.5")]


def test_snapshot_pickles_small_and_restores_exactly() -> None:
    s = BookState("test:BTC-USDT", BookParams(depth=3))
    s.on_event(_book_event(_ev("snapshot", 1, None, [["10", "1"], ["9", "2"]], [["11", "1"]],
                               1000)))
    s.on_event(_book_event(_ev("update", 2, 1, [["10", "5"]], [], 1010)))
    t = pickle.loads(pickle.dumps(s))
    assert t.record() == s.record() and t.next_deadline() == s.next_deadline()
    assert t.book.levels("bids") == s.book.levels("bids")


# -- real data --------------------------------------------------------------------------------
def _eth_book_events() -> list[dict]:
    with gzip.open(ETH, "rb") as fh:
        return [d for d in map(orjson.loads, fh) if d["type"] == "book"]


def test_eth_recording_has_no_gap_and_matches_reference_at_every_record() -> None:
    state = BookState("binance:ETH-USDT", BookParams())
    ref = RefBook()
    history: dict[int, tuple] = {}
    records = []
    for d in _eth_book_events():
        records += state.on_event(_book_event(d))
        assert ref.apply(d) == "applied"
        history[ref.seq] = ref.top(20)
    records += state.flush()
    assert state.counts.get("gap", 0) == 0 and state.counts.get("skipped", 0) == 0
    assert state.counts["applied"] == 3433
    assert len(records) > 1000
    for r in records:
        assert r["status"] == "ok"
        assert (as_decimal(r["bids"]), as_decimal(r["asks"])) == history[r["seq"]]


# -- the flow over files (replay) ---------------------------------------------------------------
def _replay(tmp: Path, lines: list[bytes], name: str = "out") -> tuple[bytes, list[dict]]:
    from bytewax.testing import run_main

    from dataflows.config import BookConfig
    from dataflows.orderbook import replay

    src = tmp / f"{name}.in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out, dl = tmp / f"{name}.jsonl", tmp / f"{name}.dl.jsonl"
    run_main(replay(BookConfig(), str(src), str(out), str(dl)))
    return out.read_bytes(), [json.loads(x) for x in dl.read_bytes().splitlines()]


def test_replay_is_deterministic(tmp_path: Path) -> None:
    with gzip.open(ETH, "rb") as fh:
        lines = fh.read().splitlines()
    a, _ = _replay(tmp_path, lines, "a")
    b, _ = _replay(tmp_path, lines, "b")
    assert a == b and a.count(b"\n") > 1000


@pytest.mark.parametrize(("bad", "reason"), [
    (b'{"type":"book","ex":"x","sym":"A-B"', "malformed JSON"),
    (b'{"type":"book","ex":"x","sym":"A-B","ts":1,"rts":1,"action":"merge","seq":9,'
     b'"bids":[],"asks":[]}', "unknown action"),
    (b'{"type":"book","ex":"x","sym":"A-B","ts":1,"rts":1,"action":"update","seq":9,'
     b'"bids":[["1","-2"]],"asks":[]}', "must not be negative"),
    (b'{"type":"book","ex":"x","sym":"A-B","rts":1,"action":"update","seq":9,'
     b'"bids":[],"asks":[]}', "missing field ts"),
    (b'{"type":"book","ex":"x","sym":"A-B","ts":1,"rts":1,"action":"update","seq":9,'
     b'"bids":[["abc","1"]],"asks":[]}', "not a plain decimal"),
    (b'{"type":"book","ex":"x","sym":"A-B","ts":1,"rts":1,"action":"update","seq":9,'
     b'"bids":[[1.5,"1"]],"asks":[]}', "expected a decimal string"),
    (b'[1,2]', "JSON object"),
])
def test_bad_input_is_deadlettered_and_the_flow_goes_on(tmp_path: Path, bad: bytes,
                                                         reason: str) -> None:
    good = [orjson.dumps(_ev("snapshot", 1, None, [["10", "1"]], [["11", "1"]], 1000)),
            orjson.dumps(_ev("update", 2, 1, [["10", "2"]], [], 2000))]
    out, dls = _replay(tmp_path, [good[0], bad, good[1]])
    recs = [json.loads(x) for x in out.splitlines()]
    assert [r["seq"] for r in recs] == [1, 2]
    assert len(dls) == 1 and reason in dls[0]["reason"], dls
    assert dls[0]["type"] == "deadletter" and dls[0]["raw"]


def test_decode_rejects_what_it_cannot_hold_exactly() -> None:
    for bad in (b'{"type":"trade","ex":"b","sym":"A-B","ts":1,"rts":1,"id":"1","px":"1e5",'
                b'"qty":"1","side":"buy"}',
                b'{"type":"trade","ex":"b","sym":"A-B","ts":1,"rts":1,"id":"1","px":"NaN",'
                b'"qty":"1","side":"buy"}',
                b'{"type":"trade","ex":"b","sym":"ab","ts":1,"rts":1,"id":"1","px":"1",'
                b'"qty":"1","side":"buy"}',
                b'{"type":"trade","ex":"b","sym":"A-B","ts":"x","rts":1,"id":"1","px":"1",'
                b'"qty":"1","side":"buy"}'):
        assert isinstance(decode(bad), DeadLetter)
