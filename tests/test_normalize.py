"""Feed handlers and ``marketdata normalize`` over the recordings of shared/data."""

from __future__ import annotations

import argparse
import calendar
import gzip
import io
import zlib
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.exchanges import HANDLERS
from connectors.exchanges.base import iso_to_ms, sec_to_ms, to_symbol
from connectors.exchanges.binance import BinanceFuturesHandler, BinanceHandler
from connectors.exchanges.bybit import BybitHandler
from connectors.exchanges.coinbase import CoinbaseHandler
from connectors.exchanges.kraken import KrakenHandler, kraken_checksum
from connectors.exchanges.normalize import normalize_file, normalize_files, register
from connectors.exchanges.okx import OkxHandler, okx_checksum
from connectors.exchanges.recordings import (
    Frame,
    RecordingError,
    data_dir,
    detect_format,
    read_frames,
)
from operators.events import DeadLetter, _levels, book_levels, decode, decode_obj
from operators.orderbook import Book

DATA = data_dir()
ETH = DATA / "hftbacktest/spot/ethusdt_20240808.gz"
BTC = [DATA / "hftbacktest/spot/btcusdt_20240808.gz", DATA / "hftbacktest/spot/btcusdt_20240809.gz"]
USDM = DATA / "hftbacktest/usdm/btcusdt_20240808.gz"
CANONICAL = DATA / "canonical/binance_ethusdt_20240808.events.jsonl.gz"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="shared recordings not available")

_FRAMES: dict[Path, list[Frame]] = {}


def frames(path: Path) -> list[Frame]:
    if path not in _FRAMES:
        _FRAMES[path] = list(read_frames(path))
    return _FRAMES[path]


def feed(h: Any, frs: list[Frame]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for fr in frs:
        out += h.on_snapshot(fr.symbol, fr.raw, fr.rts) if fr.kind == "rest" else \
            h.on_frame(fr.raw, fr.rts)
    return out


def lines(events: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(e) for e in events]


# -- the oracle ------------------------------------------------------------------------------
def test_binance_spot_reproduces_the_canonical_file_exactly() -> None:
    buf = io.BytesIO()
    stats = normalize_file("binance", ETH, buf)
    ours = buf.getvalue()
    with gzip.open(CANONICAL, "rb") as f:
        ref = f.read()
    ours_l, ref_l = ours.splitlines(), ref.splitlines()
    assert len(ours_l) == len(ref_l) == 9539
    for i, (a, b) in enumerate(zip(ours_l, ref_l, strict=True)):
        assert orjson.loads(a) == orjson.loads(b), f"line {i + 1}"
    assert ours == ref  # byte-identical, compact separators and key order included
    assert stats["gaps"] == 0 and stats["deadletter"] == 0 and stats["snapshots"] == 1


def test_every_emitted_event_decodes_as_canonical() -> None:
    h = BinanceHandler()
    for ev in feed(h, frames(ETH)[:3000]):
        assert not hasattr(decode(orjson.dumps(ev)), "reason"), ev


# -- every recording, zero gaps --------------------------------------------------------------
RECORDINGS = [
    ("binance", BTC),
    ("binance_futures", [USDM]),
    ("binance", [DATA / "cryptofeed/BINANCE.ws.1.0"]),
    ("coinbase", [DATA / "cryptofeed/COINBASE.ws.28.0"]),
    ("kraken", [DATA / "cryptofeed/KRAKEN.ws.50.0"]),
    ("okx", [DATA / "cryptofeed/OKX.ws.1.0"]),
    ("bybit", [DATA / "nautilus_trader/xrpusdt-ob500.data.zip"]),
]


@pytest.mark.parametrize(("exchange", "paths"), RECORDINGS,
                         ids=[f"{e}:{p[0].name}" for e, p in RECORDINGS])
def test_recording_normalizes_without_gaps(exchange: str, paths: list[Path]) -> None:
    buf = io.BytesIO()
    stats = normalize_files(exchange, paths, buf)
    events = [orjson.loads(x) for x in buf.getvalue().splitlines()]
    assert stats["gaps"] == 0 and stats["resyncs"] == 0 and stats["crossed"] == 0
    assert stats["deadletter"] == 0 and stats["checksum_bad"] == 0
    assert stats["unsynced_at_end"] == 0 and stats["stale_snapshot"] == 0
    assert stats["snapshots"] >= 1 and stats["book_events"] > stats["snapshots"]
    # prev_seq chains to the previous event's seq, per symbol, everywhere.
    last: dict[str, int] = {}
    for e in events:
        assert e["type"] in ("book", "trade") and e["ex"] == exchange
        if e["type"] != "book":
            continue
        if e["action"] == "snapshot":
            assert "prev_seq" not in e
        else:
            assert e["prev_seq"] == last[e["sym"]], e
            assert e["seq"] > e["prev_seq"]
        last[e["sym"]] = e["seq"]


@pytest.mark.parametrize(("exchange", "recording", "marker", "at_least"), [
    ("kraken", "cryptofeed/KRAKEN.ws.50.0", '"c":"', 4000),
    ("okx", "cryptofeed/OKX.ws.1.0", '"checksum":', 250),
])
def test_every_checksum_reproduces(exchange: str, recording: str, marker: str,
                                   at_least: int) -> None:
    path = DATA / recording
    with_checksum = sum(1 for fr in frames(path) if marker in fr.raw)
    stats = normalize_file(exchange, path, io.BytesIO())
    assert with_checksum > at_least
    assert stats["checksum_ok"] == with_checksum and stats["checksum_bad"] == 0


def test_kraken_checksum_of_documented_levels() -> None:
    # Kraken's documented example of the v1 checksum input: each number without its decimal
    # point and leading zeros, asks then bids; levels as Book.top's tuples or as JSON lists.
    asks = [("0.05005", "0.00000500"), ("0.05010", "0.00000500")]
    bids = [("0.05000", "0.00000500")]
    want = zlib.crc32(b"5005500" b"5010500" b"5000500")
    assert kraken_checksum(asks, bids) == want
    assert kraken_checksum([list(lv) for lv in asks], [list(lv) for lv in bids]) == want


def test_binance_btcusdt_two_files_are_one_session() -> None:
    h = BinanceHandler()
    first = feed(h, frames(BTC[0]))
    second = feed(h, frames(BTC[1]))
    assert sum(e["action"] == "snapshot" for e in first + second if e["type"] == "book") == 1
    books = [e for e in second if e["type"] == "book"]
    assert books[0]["prev_seq"] == [e for e in first if e["type"] == "book"][-1]["seq"]
    trades = [int(e["id"]) for e in first + second if e["type"] == "trade"]
    assert sorted(set(trades)) == list(range(min(trades), max(trades) + 1))  # contiguous ids
    assert h.stats["gaps"] == 0 and h.resync_needed() == []


@pytest.mark.parametrize(("cls", "paths"), [(BinanceHandler, BTC), (BinanceHandler, [ETH]),
                                            (BinanceFuturesHandler, [USDM])],
                         ids=["btcusdt", "ethusdt", "usdm"])
def test_book_ticker_matches_rebuilt_book(cls: type[BinanceHandler], paths: list[Path]) -> None:
    h = cls()
    at_update: dict[int, tuple[str, str]] = {}
    tickers: list[tuple[int, str, str]] = []
    for path in paths:
        for fr in frames(path):
            if fr.kind == "rest":
                h.on_snapshot(fr.symbol, fr.raw, fr.rts)
                continue
            out = h.on_frame(fr.raw, fr.rts)
            if "@bookTicker" in fr.raw:
                d = orjson.loads(fr.raw)["data"]
                tickers.append((d["u"], d["b"], d["a"]))
            for e in out:
                if e["type"] == "book":
                    book = h.books[e["sym"]]
                    at_update[e["seq"]] = (book.best_bid()[0], book.best_ask()[0])  # type: ignore[index]
    matched = [(u, b, a) for u, b, a in tickers if u in at_update]
    print(len(matched), "bookTicker ids coincide with depth ids")
    assert len(matched) >= 2
    for u, b, a in matched:
        assert at_update[u] == (b, a), u


def test_futures_first_update_chains_to_snapshot_then_pu() -> None:
    out = [e for e in feed(BinanceFuturesHandler(), frames(USDM)[:400]) if e["type"] == "book"]
    snap, first, second = out[0], out[1], out[2]
    assert snap["action"] == "snapshot" and snap["ts"] == 1723161256501  # the answer's E
    assert first["prev_seq"] == snap["seq"] == 5123107852948
    raw = [orjson.loads(fr.raw)["data"] for fr in frames(USDM)[:400]
           if "depthUpdate" in fr.raw]
    by_u = {d["u"]: d for d in raw}
    assert by_u[first["seq"]]["U"] <= snap["seq"] <= first["seq"]
    assert second["prev_seq"] == by_u[second["seq"]]["pu"] == first["seq"]


# -- faults ----------------------------------------------------------------------------------
def test_binance_gap_is_detected_and_resynced() -> None:
    h = BinanceHandler()
    frs = frames(ETH)
    depth = [i for i, fr in enumerate(frs) if "depthUpdate" in fr.raw]
    cut = depth[20]  # drop one diff after sync
    feed(h, frs[:cut])
    assert h.resync_needed() == []
    out = feed(h, frs[cut + 1: depth[25]])
    assert h.stats["gaps"] == 1 and h.resync_needed() == ["ETH-USDT"]
    assert h.books["ETH-USDT"].status == "stale"
    assert sum(e["type"] == "book" for e in out) == 1  # the gapping diff, then buffering
    # A fresh snapshot covering the buffered diffs brings the symbol back.
    buffered = [orjson.loads(frs[i].raw)["data"] for i in depth[21:25]]
    snap = {"lastUpdateId": buffered[1]["u"], "bids": [["1.00", "1"]], "asks": [["9999.00", "1"]]}
    out = h.on_snapshot("ETHUSDT", orjson.dumps(snap), 1)
    assert h.resync_needed() == [] and h.stats["snapshots"] == 2
    assert [e["action"] for e in out] == ["snapshot", "update", "update"]
    assert out[1]["prev_seq"] == snap["lastUpdateId"]


def test_binance_stale_snapshot_is_refused() -> None:
    h = BinanceHandler()
    diff = {"stream": "ethusdt@depth@100ms", "data": {"e": "depthUpdate", "E": 5, "s": "ETHUSDT",
                                                      "U": 100, "u": 105, "b": [], "a": []}}
    assert h.on_frame(orjson.dumps(diff), 1) == []
    assert h.resync_needed() == ["ETH-USDT"]
    old = {"lastUpdateId": 90, "bids": [], "asks": []}
    assert h.on_snapshot("ETHUSDT", orjson.dumps(old), 2) == []
    assert h.stats["stale_snapshot"] == 1 and h.resync_needed() == ["ETH-USDT"]
    good = {"lastUpdateId": 101, "bids": [["10", "1"]], "asks": [["11", "1"]]}
    out = h.on_snapshot("ETHUSDT", orjson.dumps(good), 3)
    assert [(e["action"], e["seq"], e.get("prev_seq")) for e in out] == \
        [("snapshot", 101, None), ("update", 105, 101)]
    assert h.snapshot_request("ETH-USDT") == "/api/v3/depth?symbol=ETHUSDT&limit=1000"


def _tamper(frs: list[Frame], needle: str, nth: int, old: str, new: str) -> list[Frame]:
    idx = [i for i, fr in enumerate(frs) if needle in fr.raw][nth]
    fr = frs[idx]
    assert old in fr.raw
    return [*frs[:idx], fr._replace(raw=fr.raw.replace(old, new, 1)), *frs[idx + 1:]]


def test_kraken_checksum_mismatch_requests_resync() -> None:
    frs = frames(DATA / "cryptofeed/KRAKEN.ws.50.0")
    tampered = _tamper(frs, '"c":"', 30, '"c":"', '"c":"1')
    bad = orjson.loads(next(fr.raw for fr in tampered if '"c":"1' in fr.raw
                            and fr.raw not in {f.raw for f in frs}))
    sym = bad[-1].replace("XBT", "BTC").replace("/", "-")
    h = KrakenHandler()
    out = feed(h, tampered)
    assert h.stats["checksum_bad"] == 1 and h.resync_needed() == [sym]
    assert h.stats["dropped"] > 0  # updates of that pair wait for a new snapshot
    # the update that failed is published as a gap (it skips a number): a book rebuilt from the
    # events turns stale there, as the handler's own did, instead of staying "ok" but wrong
    consumer = Book()
    statuses = []
    for d in out:
        if d["type"] == "book" and d["sym"] == sym:
            consumer.apply(decode_obj(d))  # type: ignore[arg-type]
            statuses.append(consumer.status)
    assert statuses[-1] == "stale" and statuses.count("stale") == 1 and statuses[0] == "ok"


def test_okx_checksum_mismatch_requests_resync() -> None:
    frs = frames(DATA / "cryptofeed/OKX.ws.1.0")
    tampered = _tamper(frs, '"instId":"BTC-USDT"},"action":"update"', 5, '"checksum":',
                       '"checksum":1')
    h = OkxHandler()
    out = feed(h, tampered)
    assert h.stats["checksum_bad"] == 1 and h.resync_needed() == ["BTC-USDT"]
    assert h.stats["dropped"] > 0
    # numbered by the handler (no seqId in this format): the failed update skips a number, and a
    # book rebuilt from the events turns stale there
    consumer = Book()
    for d in out:
        if d["type"] == "book" and d["sym"] == "BTC-USDT":
            consumer.apply(decode_obj(d))  # type: ignore[arg-type]
    assert consumer.status == "stale"
    # a new snapshot restores sync
    snap = next(fr for fr in frs if '"action":"snapshot"' in fr.raw and "BTC-USDT" in fr.raw)
    out = h.on_frame(snap.raw, snap.rts)
    assert out[0]["action"] == "snapshot" and h.resync_needed() == []


def test_bybit_gap_detected() -> None:
    frs = frames(DATA / "nautilus_trader/xrpusdt-ob500.data.zip")
    h = BybitHandler()
    feed(h, frs[:10] + frs[11:])
    assert h.stats["gaps"] == 1 and h.resync_needed() == ["XRP-USDT"]
    assert h.stats["dropped"] == len(frs) - 12


@pytest.mark.parametrize("exchange", sorted(HANDLERS))
@pytest.mark.parametrize("raw", [b'{"stream": "x", "data": {', b"\xff\xfe", b"[1, 2", b""])
def test_malformed_frame_becomes_a_dead_letter(exchange: str, raw: bytes) -> None:
    h = HANDLERS[exchange]()
    (dl,) = h.on_frame(raw, 1)
    assert dl["type"] == "deadletter" and dl["stage"] == "normalize"
    assert dl["reason"].startswith("malformed JSON") and isinstance(dl["raw"], str)
    assert h.stats["deadletter"] == 1 and h.stats["events"] == 0


@pytest.mark.parametrize(("exchange", "raw"), [
    ("binance", b'{"stream":"a@depth","data":{"e":"depthUpdate","s":"ETHUSDT"}}'),
    ("binance", b'{"stream":"a@trade","data":{"e":"trade","s":"ETHUSDT","p":"1"}}'),
    ("okx", b'{"data": 7}'),
    ("okx", b'{"arg":{"channel":"trades"},"data":[{"px":"1"}]}'),
    ("kraken", b'[1, {"a": [["x"]]}, "trade", "XBT/USD"]'),
    ("coinbase", b'{"type":"match","product_id":"BTC-USD"}'),
    ("bybit", b'{"topic":"orderbook.50.BTCUSDT","type":"snapshot","data":{"s":"BTCUSDT"}}'),
])
def test_unexpected_frame_becomes_a_dead_letter(exchange: str, raw: bytes) -> None:
    h = HANDLERS[exchange]()
    (dl,) = h.on_frame(raw, 1)
    assert dl["type"] == "deadletter" and dl["raw"] == raw.decode()
    assert dl["reason"].startswith(f"unexpected {exchange} message")


def test_bad_decimal_is_dead_lettered_and_unsyncs() -> None:
    h = BinanceHandler()
    trade = {"stream": "ethusdt@trade", "data": {"e": "trade", "E": 1, "s": "ETHUSDT", "t": 7,
                                                 "p": "1e5", "q": "1", "T": 1, "m": False}}
    (dl,) = h.on_frame(orjson.dumps(trade), 1)
    assert dl["type"] == "deadletter" and "decimal" in dl["reason"] and dl["key"] == \
        "binance:ETH-USDT"
    snap = {"lastUpdateId": 5, "bids": [["NaN", "1"]], "asks": []}
    (dl,) = h.on_snapshot("ETHUSDT", orjson.dumps(snap), 1)
    assert dl["type"] == "deadletter" and h.resync_needed() == ["ETH-USDT"]


def test_crossed_book_requests_resync() -> None:
    h = BybitHandler()
    snap = {"topic": "orderbook.50.BTCUSDT", "type": "snapshot", "ts": 1,
            "data": {"s": "BTCUSDT", "b": [["10", "1"]], "a": [["11", "1"]], "u": 1}}
    delta = {"topic": "orderbook.50.BTCUSDT", "type": "delta", "ts": 2,
             "data": {"s": "BTCUSDT", "b": [["12", "1"]], "a": [], "u": 2}}
    h.on_frame(orjson.dumps(snap), 1)
    assert h.resync_needed() == []
    h.on_frame(orjson.dumps(delta), 2)
    assert h.stats["crossed"] == 1 and h.resync_needed() == ["BTC-USDT"]


# -- exchange details ------------------------------------------------------------------------
def test_coinbase_seq_and_taker_side() -> None:
    h = CoinbaseHandler()
    h.on_frame(b'{"type":"snapshot","product_id":"BTC-USD","bids":[["10.00","1"]],'
               b'"asks":[["11.00","2"]]}', 5)
    (up,) = h.on_frame(b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","10.50",'
                       b'"3"],["sell","11.00","0"]],"time":"2021-04-17T16:43:37.075687Z"}', 6)
    assert (up["seq"], up["prev_seq"], up["ts"]) == (2, 1, 1618677817075)
    assert up["bids"] == [["10.50", "3"]] and up["asks"] == [["11.00", "0"]]
    (t,) = h.on_frame(b'{"type":"match","trade_id":9,"side":"sell","size":"1","price":"10.50",'
                      b'"product_id":"BTC-USD","time":"2021-04-17T16:43:37.089723Z"}', 7)
    assert (t["id"], t["side"], t["ts"]) == ("9", "buy", 1618677817089)


def test_kraken_truncates_to_subscribed_depth() -> None:
    h = KrakenHandler()
    snap = [1, {"as": [["5.0", "1.00", "1.1"], ["6.0", "1.00", "1.1"]],
                "bs": [["4.0", "1.00", "1.1"], ["3.0", "2.50", "1.1"]]}, "book-2", "XBT/USD"]
    h_out = h.on_frame(orjson.dumps(snap), 1)
    assert h_out[0]["action"] == "snapshot" and h_out[0]["seq"] == 1
    new_bid = ["4.5", "1.00", "2.123456"]
    bids_after = [["4.5", "1.00"], ["4.0", "1.00"]]
    asks_after = [["5.0", "1.00"], ["6.0", "1.00"]]
    c = str(kraken_checksum(asks_after, bids_after))
    (up,) = h.on_frame(orjson.dumps([1, {"b": [new_bid], "c": c}, "book-2", "XBT/USD"]), 2)
    assert up["sym"] == "BTC-USD" and up["ts"] == 2123 and up["seq"] == 2
    assert up["bids"] == [["4.5", "1.00"], ["3.0", "0.00"]]  # the cut level, deleted
    assert h.stats["checksum_ok"] == 1
    # A consumer applying exactly the emitted events ends with the handler's (truncated) book.
    consumer = Book()
    for e in [*h_out, up]:
        consumer.apply(decode(orjson.dumps(e)))  # type: ignore[arg-type]
    assert consumer.top(5, "bids") == h.books["BTC-USD"].top(5, "bids")
    assert [list(lv) for lv in consumer.top(5, "bids")] == bids_after
    assert [list(lv) for lv in consumer.top(5, "asks")] == asks_after


def test_okx_checksum_of_documented_shape() -> None:
    # Interleaving with unequal depths: the longer side continues alone.
    bids = [["3366.1", "7"], ["3366", "6"]]
    asks = [["3366.8", "9"]]
    v = zlib.crc32(b"3366.1:7:3366.8:9:3366:6")
    assert okx_checksum(bids, asks) == (v - (1 << 32) if v >= 1 << 31 else v)


# -- the fast paths equal decode_obj ---------------------------------------------------------
# Handlers build the BookEvent/trade checks straight from the exchange's strings; whatever they
# accept, emit or refuse must be exactly what validating the emitted dict with decode_obj gives.
_TEXT = st.sampled_from(["1", "0", "0.00", "2.50", "00.10", "5", "55", "-1", "1e5", "NaN", "",
                         " 1", "1.0000000000000000001", "43000.10"])
_ANY = _TEXT | st.integers(-1, 2) | st.floats(allow_nan=False, width=16) | st.none() | \
    st.booleans()
_LEVEL = st.lists(_TEXT, min_size=2, max_size=2) | st.lists(_ANY, max_size=3) | _ANY | \
    st.dictionaries(_TEXT, _TEXT, min_size=2, max_size=2)
_LEVELS = st.lists(_LEVEL, max_size=4) | _ANY
_INT = st.integers(0, 3) | _ANY
_SYMS = st.sampled_from(["BTC-USDT", "ETH-USDT", "btc-usdt", "BTC_USDT", ""])


def _book_after(book: Book) -> tuple[Any, ...]:
    return book.seq, book.status, book.levels("bids"), book.levels("asks")


def _check_book_events(events: list[tuple[Any, ...]]) -> None:
    h = BybitHandler()
    books: dict[str, Book] = {}
    for sym, ts, rts, snap, seq, prev, bids, asks, checksum in events:
        action = "snapshot" if snap else "update"
        d, outcome = h._book_event(sym, ts, rts, action, seq, prev, bids, asks, checksum)
        want = {"type": "book", "ex": "bybit", "sym": sym, "ts": ts, "rts": rts,
                "action": action, "seq": seq}
        if prev is not None:
            want["prev_seq"] = prev
        want.update(bids=bids, asks=asks)
        if checksum is not None:
            want["checksum"] = checksum
        ev = decode_obj(want)
        if isinstance(ev, DeadLetter):
            assert outcome == "invalid" and d["type"] == "deadletter"
            assert (d["reason"], d["key"]) == (ev.reason, ev.key)
            continue
        assert orjson.dumps(d) == orjson.dumps(want)
        assert outcome == books.setdefault(sym, Book()).apply(ev)  # type: ignore[arg-type]
        assert _book_after(h.books[sym]) == _book_after(books[sym])


_SEQ = st.integers(0, 3)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["BTC-USDT", "ETH-USDT"]), _SEQ, _SEQ, st.booleans(),
                          _SEQ, _SEQ | st.none(), _LEVELS, _LEVELS, _SEQ | st.none()),
                min_size=1, max_size=6))
def test_book_event_fast_path_equals_decode_obj_levels(events: list[tuple[Any, ...]]) -> None:
    _check_book_events(events)


_PAIRS = st.lists(st.tuples(st.sampled_from(["1", "2.5", "3"]),
                            st.sampled_from(["0", "1", "0.50"])).map(list), max_size=3)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_SYMS, _INT, _INT, st.booleans(), _INT, _INT | st.none(), _PAIRS,
                          _PAIRS, _INT | st.none()), min_size=1, max_size=6))
def test_book_event_fast_path_equals_decode_obj_fields(events: list[tuple[Any, ...]]) -> None:
    _check_book_events(events)


@settings(max_examples=400, deadline=None)
@given(_SYMS, _INT, _INT, _ANY | st.just("7"), _ANY, _ANY,
       st.sampled_from(["buy", "sell", "Buy", ""]) | _ANY)
def test_trade_fast_path_equals_decode_obj(sym: Any, ts: Any, rts: Any, tid: Any, px: Any,
                                           qty: Any, side: Any) -> None:
    d = BybitHandler()._trade(sym, ts, rts, tid, px, qty, side)
    want = {"type": "trade", "ex": "bybit", "sym": sym, "ts": ts, "rts": rts, "id": tid,
            "px": px, "qty": qty, "side": side}
    ev = decode_obj(want)
    if isinstance(ev, DeadLetter):
        assert (d["type"], d["reason"], d["key"]) == ("deadletter", ev.reason, ev.key)
    else:
        assert orjson.dumps(d) == orjson.dumps(want)


@pytest.mark.parametrize(("native", "sym"), [("ETHUSDT", "ETH-USDT"), ("xrpusdt", "XRP-USDT"),
                                             ("BLZETH", "BLZ-ETH"), ("RUNEEUR", "RUNE-EUR"),
                                             ("BTCFDUSD", "BTC-FDUSD"), ("BTC-USD", "BTC-USD"),
                                             ("BTC-USD-SWAP", "BTC-USDSWAP")])
def test_symbols(native: str, sym: str) -> None:
    assert to_symbol(native) == sym


def test_unknown_quote_is_refused() -> None:
    with pytest.raises(ValueError):
        to_symbol("FOOBAR")


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2 * 10**9), st.integers(min_value=0, max_value=10**9 - 1),
       st.integers(min_value=1, max_value=9))
def test_sec_to_ms_is_exact_floor(whole: int, frac: int, digits: int) -> None:
    text = f"{whole}.{str(frac).rjust(9, '0')[:digits]}"
    assert sec_to_ms(text) == int((Decimal(text) * 1000).to_integral_value(ROUND_FLOOR))


def test_iso_to_ms() -> None:
    assert iso_to_ms("1970-01-01T00:00:00Z") == 0
    assert iso_to_ms("2023-02-09T20:32:50.714964855Z") == 1675974770714


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)),
       st.integers(min_value=0, max_value=9), st.booleans())
def test_iso_to_ms_is_exact_floor(t: datetime, digits: int, zulu: bool) -> None:
    frac = f"{t.microsecond:06d}000"[:digits]
    text = t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if digits else "") + ("Z" if zulu else "")
    want = calendar.timegm(t.timetuple()) * 1000 + int((frac + "000")[:3])
    assert iso_to_ms(text) == want


def test_subscribe_messages_and_snapshot_requests() -> None:
    assert orjson.loads(BinanceFuturesHandler().subscribe_messages(["BTC-USDT"])[0])["params"] \
        == ["btcusdt@depth@100ms", "btcusdt@trade"]
    assert BinanceFuturesHandler().snapshot_request("BTC-USDT") == \
        "/fapi/v1/depth?symbol=BTCUSDT&limit=1000"
    assert orjson.loads(KrakenHandler().subscribe_messages(["BTC-USD"])[0])["pair"] == ["XBT/USD"]
    for cls in (KrakenHandler, OkxHandler, CoinbaseHandler, BybitHandler):
        assert cls().snapshot_request("BTC-USD") is None
        assert all(orjson.loads(m) for m in cls().subscribe_messages(["BTC-USD"]))


# -- the CLI ---------------------------------------------------------------------------------
def _cli(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command"))
    return p.parse_args(argv)


def test_cli_writes_events_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "okx.jsonl"
    args = _cli(["normalize", "okx", "--input", str(DATA / "cryptofeed/OKX.ws.1.0"),
                 "--output", str(out)])
    assert args.func(args) == 0
    assert len(out.read_bytes().splitlines()) == 364
    err = capsys.readouterr().err
    assert "checksum_ok=290" in err and "gaps=0" in err


def test_cli_unreadable_input_fails_clearly(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.gz"
    bad.write_bytes(b"not gzip")
    args = _cli(["normalize", "binance", "--input", str(bad), "--output", str(tmp_path / "o")])
    assert args.func(args) == 2
    assert "cannot read input" in capsys.readouterr().err
    args = _cli(["normalize", "binance", "--input", str(tmp_path / "missing.ws.1.0"),
                 "--output", "-"])
    assert args.func(args) == 2


def test_cli_names_an_unwritable_output_and_a_recording_of_another_exchange(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    okx = str(DATA / "cryptofeed/OKX.ws.1.0")
    args = _cli(["normalize", "okx", "--input", okx, "--output", str(tmp_path / "no/dir/o")])
    assert args.func(args) == 2
    assert f"cannot write {tmp_path / 'no/dir/o'}" in capsys.readouterr().err
    args = _cli(["normalize", "coinbase", "--input", okx, "--output", str(tmp_path / "o")])
    assert args.func(args) == 1  # nothing came out: a script must not go on
    assert "no event from 410 frames: is this a recording of coinbase?" in capsys.readouterr().err


def test_replay_names_an_unwritable_output(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from marketdata import cli

    canonical = str(DATA / "canonical/binance_ethusdt_20240808.events.jsonl.gz")
    assert cli.main(["replay", "ticker", "--input", canonical,
                     "--output", str(tmp_path / "no/dir/o")]) == 2
    assert f"cannot write {tmp_path / 'no/dir/o'}" in capsys.readouterr().err


def test_replay_of_a_raw_recording_says_what_to_do(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from marketdata import cli

    raw = tmp_path / "raw.jsonl"
    raw.write_text('{"e":"depthUpdate","s":"ETHUSDT"}\n' * 3)
    assert cli.main(["replay", "orderbook", "--input", str(raw),
                     "--output", str(tmp_path / "o")]) == 1  # nothing came out
    assert "needs `marketdata normalize` first" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("marketdata ")


def test_the_rest_half_of_a_cryptofeed_recording_is_named_as_such() -> None:
    with pytest.raises(RecordingError, match=r"REST answers .* give its \*\.ws\.N\.0 file"):
        detect_format(DATA / "cryptofeed/BINANCE.http.0.0")
    with pytest.raises(RecordingError, match="unknown recording format"):
        detect_format(Path("session.txt"))


_PLAIN = st.tuples(st.sampled_from(["1", "2.50", "43000.10", "00.10"]),
                   st.sampled_from(["0", "0.00", "1", "2.50"])).map(list)


@settings(max_examples=500, deadline=None)
@given(st.lists(_PLAIN | _LEVEL, max_size=5) | st.lists(_PLAIN, max_size=5) | _ANY)
def test_book_levels_fast_path_equals_the_checked_loop(raw: Any) -> None:
    """``decode_obj`` takes levels from ``book_levels`` when it accepts them: exactly what the
    checked loop (``_levels``, which words the reasons) would have built; plainly valid
    ``[px, qty]`` string pairs always take the fast path."""
    fast = book_levels(raw)
    try:
        slow = _levels({"bids": raw}, "bids")
    except ValueError:
        assert fast is None
        return
    plain = type(raw) is list and all(type(lv) is list and len(lv) == 2 and
                                      all(type(x) is str for x in lv) for lv in raw)
    assert fast == slow if plain else fast is None or fast == slow


@pytest.mark.parametrize("exchange, recording", [("kraken", "cryptofeed/KRAKEN.ws.50.0"),
                                                  ("coinbase", "cryptofeed/COINBASE.ws.28.0")])
def test_a_restarted_live_handler_numbers_above_the_last_run(exchange: str, recording: str) -> None:
    """Ingestion restarted: a handler numbering its own books starts above the previous run's
    numbers, so the books downstream take its snapshots. From 1 again, the order book operator
    took each new snapshot for an old one re-delivered and froze every such book, status ok."""
    from connectors.exchanges.live import make_handler
    from operators.orderbook import BookParams, BookState

    frs = frames(DATA / recording)
    assert feed(HANDLERS[exchange](), frs[:50])[0]["seq"] == 1  # offline: from the recording
    first = [e for e in feed(make_handler(exchange), frs) if e["type"] == "book"]
    second = [e for e in feed(make_handler(exchange), frs[: len(frs) // 2])
              if e["type"] == "book"]
    assert min(e["seq"] for e in second) > max(e["seq"] for e in first)
    sym = second[-1]["sym"]
    state = BookState(f"{exchange}:{sym}", BookParams(depth=1000, emit_interval_ms=0))
    fresh = Book()
    for e in first + second:
        if e["sym"] == sym:
            state.on_event(decode(orjson.dumps(e)))  # type: ignore[arg-type]
    for e in second:
        if e["sym"] == sym:
            fresh.apply(decode(orjson.dumps(e)))  # type: ignore[arg-type]
    assert state.book.status == fresh.status == "ok"
    assert state.record()["bids"] == fresh.top(1000, "bids")
    assert state.record()["asks"] == fresh.top(1000, "asks")
    assert state.book.seq == second[-1]["seq"]
