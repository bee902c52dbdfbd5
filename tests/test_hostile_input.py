"""Garbage and hostile input never stops a flow: each case here did (a fuzzing audit found them).

Decoding, the feed handlers and the per-symbol states must turn anything into events or counted
dead letters; an exception escaping them stops the Bytewax flow, and a hang stalls the symbol.
"""

from __future__ import annotations

import orjson

from connectors.exchanges import HANDLERS
from connectors.exchanges.binance import BinanceHandler
from operators.candles import MINUTE, CandleParams, CandleState
from operators.events import MAX_TS, DeadLetter, decode
from operators.orderbook import BookParams, BookState

T0 = 1_723_161_255_611  # a trade time of the recordings (ms)


def _trade(ts: int, tid: str = "1", px: str = "10") -> bytes:
    return orjson.dumps({"type": "trade", "ex": "binance", "sym": "ETH-USDT", "ts": ts,
                         "rts": ts, "id": tid, "px": px, "qty": "1", "side": "buy"})


def test_deeply_nested_invalid_events_are_dead_letters() -> None:
    """The dead letter carries the message's own text: re-encoding the parsed input overflowed
    orjson.dumps' depth (a TypeError) or, at its limit, corrupted memory (the process died)."""
    deep = "[" * 252 + "0" + "]" * 252
    for raw in (b'{"a":' + b"[" * 254 + b"]" * 254 + b"}",
                ('{"type":"trade","x":[' + ",".join([deep] * 50) + "]}").encode()):
        dl = decode(raw)
        assert isinstance(dl, DeadLetter) and dl.raw == raw.decode()


def test_times_must_be_milliseconds() -> None:
    assert not isinstance(decode(_trade(MAX_TS)), DeadLetter)
    for ts in (MAX_TS + 1, T0 * 1000, 2**64 - 1):  # 14+ digits: µs, ns, garbage
        dl = decode(_trade(ts))
        assert isinstance(dl, DeadLetter) and "milliseconds since the epoch" in dl.reason


def test_a_trade_years_ahead_fills_a_week_and_returns() -> None:
    """One trade stamped far off used to fill every minute in between (millions of candles: the
    symbol's flow stalled, for ever at 2**63 ms)."""
    s = CandleState(CandleParams(intervals=("1m",)))
    first = decode(_trade(T0))
    far = decode(_trade(T0 + 10 * 365 * 1440 * MINUTE, "2"))
    assert not isinstance(first, DeadLetter) and not isinstance(far, DeadLetter)
    s.on_trade(first)
    out = s.on_trade(far)
    assert s.stats["filled"] == 7 * 1440
    assert s.stats["unfilled"] > 3_000 * 1440
    assert len(out) <= 7 * 1440 + 2
    closed = [r for r in out + s.flush() if r["closed"]]
    assert closed[-1]["o"] == "10" and closed[-1]["n"] == 1


def test_prices_of_many_digits_keep_the_book_consistent() -> None:
    big = "1" + "0" * 60  # beyond the book's old edge sentinel (2**256 units)
    s = BookState("binance:ETH-USDT", BookParams(depth=5, emit_interval_ms=0))
    for seq, asks in ((1, [[big, "1"]]), (2, [[big, "0"]]), (3, [["5", "1"]])):
        e = decode(orjson.dumps({"type": "book", "ex": "binance", "sym": "ETH-USDT", "ts": T0,
                                 "rts": T0, "action": "snapshot" if seq == 1 else "update",
                                 "seq": seq, "bids": [], "asks": asks}))
        assert not isinstance(e, DeadLetter)
        out = s.on_event(e)
    assert out[-1]["asks"] == [("5", "1")]


def _dead(exchange: str, frame: object) -> dict[str, object]:
    h = HANDLERS[exchange]()
    out = h.on_frame(orjson.dumps(frame) if not isinstance(frame, bytes) else frame, T0)
    assert [e["type"] for e in out] == ["deadletter"], out
    orjson.dumps(out)  # what ingestion does next
    return out[0]


def test_handlers_turn_garbage_fields_into_dead_letters() -> None:
    # a year of 20 digits (OverflowError in the calendar)
    _dead("coinbase", {"type": "match", "product_id": "BTC-USD", "trade_id": 1, "price": "1",
                       "size": "1", "side": "buy", "time": "99999999999999999999-01-01T00:00:00Z"})
    # exponents that would expand to gigabytes (MemoryError), nesting past json's recursion
    trade = {"symbol": "BTC/USD", "side": "buy", "price": "1e999999999999", "qty": "1",
             "ord_type": "market", "trade_id": 1, "timestamp": "2024-08-08T00:00:00.000Z"}
    _dead("kraken_v2", {"channel": "trade", "type": "update", "data": [trade]})
    _dead("kraken_v2", b"[" * 100_000 + b"]" * 100_000)
    # times and checksums beyond 64 bits (ingestion's encoder refused the event: TypeError)
    _dead("okx", {"arg": {"channel": "trades", "instId": "BTC-USDT"},
                  "data": [{"instId": "BTC-USDT", "tradeId": "1", "px": "1", "sz": "1",
                            "side": "buy", "ts": "99999999999999999999"}]})


def test_levels_with_extra_fields_are_emitted_as_pairs() -> None:
    """A level ``[px, qty, <anything>]`` is accepted as [px, qty]; the handler emits the pair, not
    the exchange's extra value (which ingestion would dump unchecked)."""
    h = BinanceHandler()
    h.on_frame(orjson.dumps({"lastUpdateId": 1, "bids": [["1", "1"]], "asks": [["2", "1"]]}), T0)
    h._sync.clear()  # a snapshot frame without symbol needs one followed symbol
    h.on_snapshot("ETHUSDT", orjson.dumps({"lastUpdateId": 1, "bids": [["1", "1"]],
                                           "asks": [["2", "1"]]}), T0)
    diff = {"e": "depthUpdate", "E": T0, "s": "ETHUSDT", "U": 2, "u": 2,
            "b": [["1", "2", [[[[0]]]]]], "a": []}
    (ev,) = h.on_frame(orjson.dumps({"stream": "ethusdt@depth@100ms", "data": diff}), T0)
    assert ev["type"] == "book" and ev["bids"] == [["1", "2"]]


def test_quantities_summed_past_the_input_bound_stay_usable() -> None:
    """``insert`` adds to a level: a sum may outgrow the 100 characters an input may carry, and the
    book must still read it back (it raised DecimalError on the next insert, delete or record)."""
    s = BookState("binance:ETH-USDT", BookParams(depth=5, emit_interval_ms=0, grouping="1"))
    for seq, action in ((1, "snapshot"), (2, "insert"), (3, "insert"), (4, "delete")):
        e = decode(orjson.dumps({"type": "book", "ex": "binance", "sym": "ETH-USDT", "ts": T0,
                                 "rts": T0, "action": action, "seq": seq,
                                 "bids": [["1", "9" * 100]], "asks": []}))
        assert not isinstance(e, DeadLetter)
        out = s.on_event(e)
    assert out[-1]["bids"] == [("1", "1" + "9" * 99 + "8")]
