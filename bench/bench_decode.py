"""Decoding canonical events: the compiled scanners (operators/_native.c) against the pure-Python
paths they replace, in the same run, interleaved, best of ``--repeat``.

- trades: ``decode_trades`` of the canonical recording's ETH trades in groups of 100 (as the
  candle and ticker flows decode a key's messages), compiled vs the regex path;
- book events: ``decode`` of its 31-level book events (as the order book flow decodes them),
  with the compiled ``book_levels`` vs the Python one;
- what it buys the trade flows' per-symbol work: those trades relabelled to 50 symbols (305,300),
  each symbol's in groups of 100, decoded and fed to ``CandleState``/``TickerState.on_trades``,
  in-process (no Kafka, Bytewax or Redis), with either decoder.

Every run decodes the bytes anew, so every price and quantity string is a new object (as from
Kafka): no string hash is cached between runs.

    .venv/bin/python -m bench.bench_decode [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
from typing import Any

from bench.common import best_of_each, eth_events, table
from operators import events
from operators.candles import CandleParams, CandleState
from operators.events import _batch_pattern, _book_levels_py, _decode_trades_py, decode, encode
from operators.ticker import TickerParams, TickerState

SYMBOLS = 50


def per_symbol_work(evs: list[dict[str, Any]], repeat: int) -> list[list[Any]]:
    """Rows: decode + operator per symbol group, compiled vs pure-Python decoding."""
    trades = [e for e in evs if e["type"] == "trade"]
    groups = []  # (ex, sym, values): each symbol's next 100 trades, symbols in turn
    for start in range(0, len(trades), 100):
        for i in range(SYMBOLS):
            sym = f"S{i:03d}-USDT"
            groups.append((trades[0]["ex"], sym,
                           [encode({**t, "sym": sym}) for t in trades[start:start + 100]]))
    n = len(trades) * SYMBOLS

    def python(values: list[bytes], ex: str, sym: str) -> Any:
        found = _batch_pattern(ex, sym)
        assert found is not None
        return _decode_trades_py(values, ex, sym, found[0])

    def run(make: Any, dec: Any) -> Any:
        def go() -> None:
            states: dict[str, Any] = {}
            for ex, sym, values in groups:
                st = states.get(sym)
                if st is None:
                    st = states[sym] = make()
                st.on_trades(dec(values, ex, sym))
        return go

    rows = []
    for name, make in (("candles (6 intervals)", lambda: CandleState(CandleParams())),
                       ("ticker", lambda: TickerState(TickerParams()))):
        fast, slow = best_of_each([run(make, events.decode_trades), run(make, python)], repeat)
        rows.append([f"{name}: decode + on_trades, {SYMBOLS} symbols", f"{n:,}",
                     f"{n / fast:,.0f}/s", f"{n / slow:,.0f}/s", f"{slow / fast:.2f}x"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    gc.set_threshold(50_000, 20, 100)  # as the flows run (dataflows/common.py: build_flow)
    if not events.NATIVE:
        raise SystemExit("operators/_native.c is not built: `make setup` (pip install -e .)")
    evs = eth_events()
    trades = [encode(e) for e in evs if e["type"] == "trade"]
    books = [encode(e) for e in evs if e["type"] == "book"]
    ex, sym = evs[0]["ex"], evs[0]["sym"]
    found = _batch_pattern(ex, sym)
    assert found is not None
    groups = [trades[i:i + 100] for i in range(0, len(trades), 100)]

    def trades_native() -> Any:
        return [events.decode_trades(g, ex, sym) for g in groups]

    def trades_python() -> Any:
        return [_decode_trades_py(g, ex, sym, found[0]) for g in groups]

    compiled_levels = events.book_levels

    def books_with(levels: Any, keep: bool = False) -> Any:
        def run() -> Any:
            events.book_levels = levels  # what decode_obj calls
            try:
                if keep:
                    return [decode(b) for b in books]
                for b in books:  # each event dropped at once, as the flow drops it once applied
                    decode(b)
                return None
            finally:
                events.book_levels = compiled_levels
        return run

    def columns(batches: Any) -> Any:
        return [[getattr(b, c) for c in b.__slots__] for b in batches]

    assert columns(trades_native()) == columns(trades_python()), "trades differ"
    assert (books_with(compiled_levels, keep=True)() == books_with(_book_levels_py, keep=True)()
            ), "book events differ"
    t_n, t_p, b_n, b_p = best_of_each([trades_native, trades_python, books_with(compiled_levels),
                                       books_with(_book_levels_py)], args.repeat)
    rows = [["trades (decode_trades, groups of 100)", f"{len(trades):,}",
             f"{t_n / len(trades) * 1e9:,.0f} ns", f"{t_p / len(trades) * 1e9:,.0f} ns",
             f"{t_p / t_n:.2f}x"],
            ["book events (decode, 31.7 levels each)", f"{len(books):,}",
             f"{b_n / len(books) * 1e6:.1f} us", f"{b_p / len(books) * 1e6:.1f} us",
             f"{b_p / b_n:.2f}x"]]
    rows += per_symbol_work(evs, max(1, args.repeat // 2))
    print(table("Decoding: compiled scanners vs pure Python",
                ["input", "events", "compiled", "pure Python", "ratio"], rows))


if __name__ == "__main__":
    main()
