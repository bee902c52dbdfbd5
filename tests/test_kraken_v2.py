"""Kraken WebSocket v2: exact decimals, checksums, truncation, resync, and the simulator's v2 venue.

The documented frames (docs.kraken.com, ``book`` channel: MATIC/USD, price precision 4, quantity
precision 8) must normalize with both checksums reproduced; numbers arrive as JSON numbers and
must come out as the exchange means them, never through a float. Against the simulator, the live
handler must resync after every fault and the book rebuilt from its events must equal the truth.
"""

from __future__ import annotations

import dataclasses
import io
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import simulator
from connectors.exchanges import HANDLERS
from connectors.exchanges.kraken import (
    KrakenV2Handler,
    at_precision,
    kraken_v2_checksum,
    plain,
    v2_loads,
)
from connectors.exchanges.live import FeedOptions, LiveFeed, endpoint_for, make_handler
from connectors.exchanges.normalize import normalize_files
from connectors.simulator.sources import Synthetic
from connectors.simulator.venues import VARIANTS, VENUES, KrakenV2Venue, json_number, make_venue
from operators.events import BookEvent, decode
from operators.fixed import fmt
from operators.orderbook import OK, Book
from tests.util import wait_until

MATIC = "MATIC-USD"
INSTRUMENT = (b'{"channel":"instrument","type":"snapshot","data":{"assets":[],"pairs":['
              b'{"symbol":"MATIC/USD","base":"MATIC","quote":"USD","status":"online",'
              b'"qty_precision":8,"qty_increment":0.00000001,"price_precision":4,'
              b'"cost_precision":5,"price_increment":0.0001,"qty_min":4.5}]}}')
# Kraken's documented snapshot and the update that follows it (checksums as published).
SNAPSHOT = b"""{"channel":"book","type":"snapshot","data":[{"symbol":"MATIC/USD",
"bids":[{"price":0.5666,"qty":4831.75496356},{"price":0.5665,"qty":6658.22734739},
{"price":0.5664,"qty":18724.91513344},{"price":0.5663,"qty":11563.92544914},
{"price":0.5662,"qty":14006.65365711},{"price":0.5661,"qty":17454.85679807},
{"price":0.566,"qty":18097.1547},{"price":0.5659,"qty":33644.89175666},
{"price":0.5658,"qty":148.3464},{"price":0.5657,"qty":606.70854372}],
"asks":[{"price":0.5668,"qty":4410.79769741},{"price":0.5669,"qty":4655.40412487},
{"price":0.567,"qty":49844.89424998},{"price":0.5671,"qty":24306.41678},
{"price":0.5672,"qty":29783.25223475},{"price":0.5673,"qty":57234.71239278},
{"price":0.5674,"qty":45065.04744},{"price":0.5675,"qty":5912.76380354},
{"price":0.5676,"qty":42514.92434778},{"price":0.5677,"qty":36304.0847022}],
"checksum":2439117997}]}"""
UPDATE = (b'{"channel":"book","type":"update","data":[{"symbol":"MATIC/USD",'
          b'"bids":[{"price":0.5657,"qty":1098.3947558}],"asks":[],"checksum":2114181697,'
          b'"timestamp":"2023-10-06T17:35:55.440295Z"}]}')


def _book_frame(kind: str, bids: list[list[str]], asks: list[list[str]], checksum: int,
                sym: str = "MATIC/USD") -> bytes:
    """A v2 book frame with levels printed as JSON numbers, as Kraken does."""
    def side(levels: list[list[str]]) -> str:
        return "[" + ",".join(f'{{"price":{json_number(p)},"qty":{json_number(q)}}}'
                              for p, q in levels) + "]"
    return (f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{sym}","bids":{side(bids)},'
            f'"asks":{side(asks)},"checksum":{checksum},'
            f'"timestamp":"2023-10-06T17:35:56.000000Z"}}]}}').encode()


def _synced(depth: int = 10) -> tuple[KrakenV2Handler, list[dict[str, Any]]]:
    h = KrakenV2Handler(depth=depth)
    out = h.on_frame(INSTRUMENT, 1) + h.on_frame(SNAPSHOT, 2)
    return h, out


# -- decimals ------------------------------------------------------------------------------------
def test_numbers_are_decoded_as_text_never_floats() -> None:
    msg = v2_loads(b'{"a":0.1,"b":12345678901.123456789,"c":1e-05,"d":7}')
    assert msg == {"a": "0.1", "b": "12345678901.123456789", "c": "1e-05", "d": "7"}
    assert float(msg["b"]) != Decimal(msg["b"])  # what a float would have lost
    assert at_precision("0.1", 8) == "0.10000000"
    assert at_precision("1e-05", 8) == "0.00001000"
    assert at_precision("12345678901.123456789", 9) == "12345678901.123456789"
    assert at_precision("45283", 1) == "45283.0" and at_precision("45283.50", 1) == "45283.5"
    assert at_precision("0.123", 2) == "0.123"  # a digit beyond the precision is never rounded
    assert plain("1.5E+3") == "1500" and plain("2.5e-7") == "0.00000025"
    assert at_precision("0.5", None) == "0.5" and plain("4e-01") == "0.4"


@settings(max_examples=300, deadline=None)
@given(units=st.integers(0, 10**20), dp=st.integers(0, 12))
def test_json_number_round_trips_exactly(units: int, dp: int) -> None:
    """The simulator's float-style printer and the handler's reader are exact inverses."""
    text = fmt(units, dp, dp)
    wire = json_number(text)
    assert at_precision(v2_loads(wire), dp) == text
    assert Decimal(plain(wire)) == Decimal(text)


def test_documented_frames_reproduce_both_checksums() -> None:
    h, out = _synced()
    (snap,) = out
    assert snap["action"] == "snapshot" and snap["ex"] == "kraken" and snap["sym"] == MATIC
    assert snap["checksum"] == 2439117997 and snap["ts"] == 2 and snap["seq"] == 1
    assert snap["bids"][6] == ["0.5660", "18097.15470000"]  # 0.566 / 18097.1547 on the wire
    assert snap["asks"][3] == ["0.5671", "24306.41678000"]
    (upd,) = h.on_frame(UPDATE, 3)
    assert upd == {"type": "book", "ex": "kraken", "sym": MATIC, "ts": 1696613755440, "rts": 3,
                   "action": "update", "seq": 2, "prev_seq": 1,
                   "bids": [["0.5657", "1098.39475580"]], "asks": [], "checksum": 2114181697}
    assert h.stats["checksum_ok"] == 2 and h.stats["checksum_bad"] == 0
    assert h.resync_needed() == [] and h.precisions == {MATIC: (4, 8)}
    assert all(isinstance(decode(orjson.dumps(e)), BookEvent) for e in (snap, upd))


def test_precisions_from_the_constructor_equal_the_instrument_channel() -> None:
    h_inst, out = _synced()
    h_ctor = KrakenV2Handler(depth=10, precisions={MATIC: (4, 8)})
    assert not any("instrument" in m for m in h_ctor.subscribe_messages([MATIC]))
    assert h_ctor.on_frame(SNAPSHOT, 2) + h_ctor.on_frame(UPDATE, 3) == \
        out + h_inst.on_frame(UPDATE, 3)
    assert h_ctor.stats["checksum_ok"] == 2


def test_without_precision_values_stay_as_printed_and_checksums_unverified() -> None:
    h = KrakenV2Handler(depth=10)
    (snap,) = h.on_frame(SNAPSHOT, 2)
    assert snap["bids"][6] == ["0.566", "18097.1547"]
    h.on_frame(UPDATE, 3)
    assert h.stats["checksum_unverified"] == 2 and h.stats["checksum_ok"] == 0
    assert h.resync_needed() == []


# -- sync rules ----------------------------------------------------------------------------------
def test_tampered_checksum_triggers_resync() -> None:
    h, out = _synced()
    consumer = Book()  # a book built from the published events, as the order book flow does
    consumer.apply(decode(orjson.dumps(out[-1])))  # type: ignore[arg-type]
    (bad,) = h.on_frame(UPDATE.replace(b"2114181697", b"2114181698"), 3)
    assert bad["action"] == "update"  # published, as a gap: it skips number 2
    assert (bad["seq"], bad["prev_seq"]) == (3, 2)
    assert h.stats["checksum_bad"] == 1 and h.stats["resyncs"] == 1
    assert h.resync_needed() == [MATIC]
    consumer.apply(decode(orjson.dumps(bad)))  # type: ignore[arg-type]
    assert consumer.status == "stale"  # the consumer knows its book is wrong too
    assert h.on_frame(UPDATE, 4) == [] and h.stats["dropped"] == 1
    (snap,) = h.on_frame(SNAPSHOT, 5)  # the re-subscription's snapshot
    assert snap["seq"] == 4 and h.resync_needed() == []  # a dropped update takes no number
    consumer.apply(decode(orjson.dumps(snap)))  # type: ignore[arg-type]
    assert consumer.status == OK
    assert h.on_frame(UPDATE, 6)[0]["prev_seq"] == 4 and h.stats["checksum_ok"] == 3


def test_snapshot_failing_its_checksum_is_followed_by_a_gap() -> None:
    h = KrakenV2Handler(depth=10)
    h.on_frame(INSTRUMENT, 1)
    snap, gap = h.on_frame(SNAPSHOT.replace(b"2439117997", b"2439117998"), 2)
    assert snap["action"] == "snapshot" and "prev_seq" not in snap and snap["seq"] == 1
    assert (gap["action"], gap["seq"], gap["prev_seq"], gap["bids"], gap["asks"]) == \
        ("update", 3, 2, [], [])
    assert h.resync_needed() == [MATIC] and h.stats["checksum_bad"] == 1
    consumer = Book()
    consumer.apply(decode(orjson.dumps(snap)))  # type: ignore[arg-type]
    assert consumer.status == OK
    consumer.apply(decode(orjson.dumps(gap)))  # type: ignore[arg-type]
    assert consumer.status == "stale"  # not "ok" on a book the exchange's checksum refuses
    (good,) = h.on_frame(SNAPSHOT, 3)
    consumer.apply(decode(orjson.dumps(good)))  # type: ignore[arg-type]
    assert good["seq"] == 4 and consumer.status == OK and h.resync_needed() == []


def test_book_is_truncated_to_the_subscribed_depth() -> None:
    h, _ = _synced(depth=10)
    book = h.books[MATIC]
    bids = [["0.5667", "1.00000000"], *book.top(9, "bids")]  # a new best bid: 11 levels
    asks = book.top(10, "asks")
    c = kraken_v2_checksum(asks, bids, 4, 8)
    (upd,) = h.on_frame(_book_frame("update", [["0.5667", "1"]], [], c), 3)
    assert upd["bids"] == [["0.5667", "1.00000000"], ["0.5657", "0.00000000"]]
    assert len(book.bids) == 10 and h.stats["checksum_ok"] == 2
    rebuilt = Book()
    for e in [*_synced()[1], upd]:  # a consumer applying the events gets the same cut book
        ev = decode(orjson.dumps(e))
        assert isinstance(ev, BookEvent)
        rebuilt.apply(ev)
    assert rebuilt.top(99, "bids") == book.top(99, "bids")


def test_repeated_price_in_one_update_applies_in_order() -> None:
    h, _ = _synced()
    book = h.books[MATIC]
    bids = [*book.top(9, "bids"), ["0.5657", "2.00000000"]]  # the last of the two wins
    c = kraken_v2_checksum(book.top(10, "asks"), bids, 4, 8)
    (upd,) = h.on_frame(_book_frame("update", [["0.5657", "1"], ["0.5657", "2"]], [], c), 3)
    assert upd["bids"] == [["0.5657", "1.00000000"], ["0.5657", "2.00000000"]]
    assert h.stats["checksum_ok"] == 2 and book.top(10, "bids")[-1] == ("0.5657", "2.00000000")


def test_trades_control_frames_and_bad_input() -> None:
    h, _ = _synced()
    (t,) = h.on_frame(b'{"channel":"trade","type":"update","data":[{"symbol":"MATIC/USD",'
                      b'"side":"sell","price":0.5147,"qty":6423.46326,"ord_type":"limit",'
                      b'"trade_id":4665846,"timestamp":"2023-09-25T07:49:37.708706Z"}]}', 9)
    assert t == {"type": "trade", "ex": "kraken", "sym": MATIC, "ts": 1695628177708, "rts": 9,
                 "id": "4665846", "px": "0.5147", "qty": "6423.46326000", "side": "sell"}
    for quiet in (b'{"channel":"heartbeat"}', b'{"method":"pong","req_id":3}',
                  b'{"channel":"status","type":"update","data":[{"system":"online"}]}',
                  b'{"method":"subscribe","result":{"channel":"book"},"success":true}'):
        assert h.on_frame(quiet, 10) == []
    (dl,) = h.on_frame(b'{"method":"subscribe","success":false,"error":"Currency pair not '
                       b'supported"}', 11)
    assert dl["type"] == "deadletter" and "not supported" in dl["reason"]
    (dl,) = h.on_frame(b'{"channel":"book","type":"update","data":[{"symbol":"MATIC/USD",'
                       b'"bids":[{"price":NaN,"qty":1}]}]}', 12)
    assert dl["reason"].startswith("malformed JSON")
    (dl,) = h.on_frame(b'{"channel":"trade","data":[{"symbol":"MATIC/USD"}]}', 13)
    assert dl["reason"].startswith("unexpected kraken message")
    assert h.stats["deadletter"] == 3 and h.stats["trades"] == 1


def test_registry_and_subscriptions() -> None:
    assert HANDLERS["kraken_v2"] is KrakenV2Handler
    assert isinstance(make_handler("kraken_v2"), KrakenV2Handler)
    assert "kraken_v2" in VARIANTS and "kraken_v2" not in VENUES  # never in "all venues"
    subs = [orjson.loads(m) for m in KrakenV2Handler(depth=25).subscribe_messages(["BTC-USD"])]
    assert [s["params"]["channel"] for s in subs] == ["instrument", "book", "trade"]
    assert subs[1]["params"] == {"channel": "book", "symbol": ["BTC/USD"], "depth": 25,
                                 "snapshot": True}


# -- the simulator's v2 venue ------------------------------------------------------------------
def _feed_venue(h: KrakenV2Handler, venue: KrakenV2Venue, frames: list[str]) -> list[Any]:
    out: list[Any] = []
    for i, f in enumerate(frames):
        out += h.on_frame(f, i + 1)
    return out


def test_venue_frames_normalize_with_every_checksum_and_equal_the_truth() -> None:
    syms = ["ABC-USD", "XYZ-EUR"]
    venue = make_venue("kraken_v2", syms)
    assert isinstance(venue, KrakenV2Venue)
    h = KrakenV2Handler(depth=10)
    frames = venue.welcome()
    for m in h.subscribe_messages(syms):
        s, answers = venue.on_message(orjson.loads(m))
        frames += answers
        for sym in s:
            frames += [o.text for o in venue.snapshot(sym, 1000)]
    n_changes = 0
    for i, item in enumerate(Synthetic(syms, 0, 3, 10, 0.2)):
        if i == 3000:
            break
        if item.kind == "book":
            prev, seq = venue.apply(item.sym, 2000 + i, item.bids, item.asks)
            frames += [o.text for o in venue.update(item.sym, 2000 + i, prev, seq, item.bids,
                                                    item.asks)]
            n_changes += 1
        else:
            frames += [o.text for o in venue.trade(item.sym, 2000 + i, venue.next_trade_id(),
                                                   item.px, item.qty, item.side)]
    events = _feed_venue(h, venue, frames)
    assert h.stats["checksum_ok"] == n_changes + 2 and h.stats["checksum_bad"] == 0
    assert h.stats["deadletter"] == 0 and h.stats["trades"] == 3000 - n_changes
    rebuilt: dict[str, Book] = {}
    for e in events:
        ev = decode(orjson.dumps(e))
        if isinstance(ev, BookEvent):
            rebuilt.setdefault(ev.sym, Book()).apply(ev)
    for s in syms:
        t = venue.truth(s)
        assert [list(lv) for lv in rebuilt[s].top(99, "bids")] == t["bids"]
        assert [list(lv) for lv in rebuilt[s].top(99, "asks")] == t["asks"]


def test_venue_announces_a_wider_precision_and_the_handler_recovers() -> None:
    venue = KrakenV2Venue(["ABC-USD"])
    h = KrakenV2Handler(depth=10)
    frames = [a for m in h.subscribe_messages(["ABC-USD"]) for a in venue.on_message(
        orjson.loads(m))[1]]
    prev, seq = venue.apply("ABC-USD", 1, [["100.00", "1.00000000"]], [["101.00", "2.00000000"]])
    frames += [o.text for o in venue.update("ABC-USD", 1, prev, seq, [["100.00", "1.00000000"]],
                                            [["101.00", "2.00000000"]])]
    _feed_venue(h, venue, [*frames, *(o.text for o in venue.snapshot("ABC-USD", 2))])
    assert h.resync_needed() == [] and h.precisions["ABC-USD"] == (2, 8)
    prev, seq = venue.apply("ABC-USD", 3, [["100.005", "1.00000000"]], [])
    outs = venue.update("ABC-USD", 3, prev, seq, [["100.005", "1.00000000"]], [])
    assert [o.kind for o in outs] == ["ctl", "book"] and '"price_precision":3' in outs[0].text
    _feed_venue(h, venue, [o.text for o in outs])
    assert h.precisions["ABC-USD"] == (3, 8)
    assert h.resync_needed() == ["ABC-USD"]  # its book was printed at 2 decimals: resync
    (snap,) = _feed_venue(h, venue, [o.text for o in venue.snapshot("ABC-USD", 4)])
    assert snap["bids"][0] == ["100.005", "1.00000000"] and snap["asks"] == [["101.000",
                                                                             "2.00000000"]]
    assert h.resync_needed() == [] and h.stats["checksum_bad"] == 1


# -- live, against the simulator -----------------------------------------------------------------
FAST = FeedOptions(ping_interval_s=0.5, stale_after_s=1.0, backoff_initial_s=0.05,
                   backoff_max_s=0.5, resync_timeout_s=2.0, snapshot_retry_s=0.3)


class Rebuilt:
    """Books rebuilt from the events a live feed emitted (what a downstream flow would see)."""

    def __init__(self, feed: LiveFeed) -> None:
        self.feed = feed
        self.books: dict[str, Book] = {}
        self.events: list[dict[str, Any]] = []

    def pump(self) -> None:
        for e in self.feed.drain(100_000):
            self.events.append(e)
            ev = decode(orjson.dumps(e))
            if isinstance(ev, BookEvent):
                self.books.setdefault(ev.sym, Book()).apply(ev)

    def same(self, sym: str, truth: dict[str, Any]) -> bool:
        self.pump()
        b = self.books.get(sym)
        h = self.feed.handler.books.get(sym)
        return all(x is not None and x.status == OK and
                   all(list(map(list, x.top(1 << 30, s))) == truth[s] for s in ("bids", "asks"))
                   for x in (b, h))


def _converge(sim: simulator.Simulator, rb: Rebuilt, syms: list[str]) -> None:
    sim.pause("kraken_v2")
    try:
        for s in syms:
            wait_until(lambda s=s: rb.same(s, sim.book("kraken_v2", s)), 15,
                       message=f"kraken_v2 {s} rebuilt from the events equals the truth")
    finally:
        sim.resume("kraken_v2")


def _stat(sim: simulator.Simulator, name: str) -> int:
    return int(sim.status("kraken_v2")["kraken_v2"]["stats"].get(name, 0))


def test_live_handler_resyncs_after_every_fault(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:5].upper()
    syms = [f"Z{tag}-USD", f"Y{tag}-EUR"]
    rec = tmp_path / "kraken_v2.ws.1.0"
    with simulator.start(["kraken_v2"], syms, rate=150, seed=9) as sim:
        feed = LiveFeed("kraken_v2", syms, endpoint_for("kraken_v2", sim.address),
                        dataclasses.replace(FAST, record_path=str(rec)))
        rb = Rebuilt(feed)
        feed.start()
        try:
            _converge(sim, rb, syms)
            for kind in ("drop", "duplicate", "reorder", "corrupt", "bad_checksum", "disconnect",
                         "stall"):
                before = _stat(sim, "snapshots")
                applied = _stat(sim, f"fault_{kind}")
                sim.inject("kraken_v2", kind, seconds=1.5)
                wait_until(lambda kind=kind, applied=applied:
                           _stat(sim, f"fault_{kind}") > applied, 10,
                           message=f"{kind} applied")
                sent = _stat(sim, "book_changes")
                wait_until(lambda sent=sent: _stat(sim, "book_changes") > sent + 10, 10,
                           message=f"changes after {kind}")
                if kind in ("bad_checksum", "disconnect", "stall"):
                    wait_until(lambda before=before: _stat(sim, "snapshots") > before, 15,
                               message=f"resync after {kind}")
                _converge(sim, rb, syms)
        finally:
            feed.stop()
        rb.pump()
        assert _stat(sim, "fault_stall") == 1 and _stat(sim, "stalled_frames") > 0
    h = feed.handler.stats
    assert h["checksum_bad"] >= 1 and h["checksum_ok"] > 50 and h["deadletter"] >= 1, h
    assert feed.stats["connects"] >= 3, feed.stats  # disconnect + stall at least
    assert h["checksum_unverified"] == 0 and h["trades"] > 10
    # the raw-frame recording replays offline (`marketdata normalize kraken_v2`) to the same events
    out = io.BytesIO()
    normalize_files("kraken_v2", [rec], out, seq_base=feed.handler.seq_base)
    assert out.getvalue().splitlines() == [orjson.dumps(e) for e in rb.events]


@pytest.mark.parametrize("bad", ["-1", "abc"])
def test_at_precision_leaves_non_numbers_for_validation(bad: str) -> None:
    """Garbage is not silently repaired: the event validation dead-letters it."""
    h, _ = _synced()
    frame = UPDATE.replace(b'"price":0.5657', f'"price":"{bad}"'.encode())
    (dl,) = h.on_frame(frame, 3)
    assert dl["type"] == "deadletter" and h.resync_needed() == [MATIC]
