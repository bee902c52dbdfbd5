"""End to end: simulator → ingestion flow → Kafka → order book, candle and ticker flows → Redis.

Every flow runs as ``python -m bytewax.run`` in its own process; the simulator runs in this one
and knows the truth: its books, and the count, volume and last price of the trades it sent.
Live flows never end by themselves, so they are stopped once Redis holds the expected state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from connectors import simulator
from connectors.kafka import ensure_topics
from connectors.redis import read_book, read_candles, read_ticker
from operators.fixed import to_units
from tests.flowrun import flow_env, start_flow, stop, unique_prefix
from tests.util import wait_until

pytestmark = pytest.mark.integration

EXCHANGES = ["binance", "bybit", "coinbase", "kraken", "okx"]


@pytest.fixture
def sim() -> Iterator[simulator.Simulator]:
    sym = f"Q{uuid.uuid4().hex[:5].upper()}-USDT"
    s = simulator.start(EXCHANGES, [sym], rate=40, seed=11, paused=True)
    yield s
    s.stop()


def test_simulator_to_redis(sim: simulator.Simulator, kafka_bootstrap: str, redis_url: str,
                            redis_client: redis.Redis, tmp_path: Path) -> None:
    prefix = unique_prefix()
    ensure_topics(kafka_bootstrap, [prefix + t for t in ("book", "trades", "deadletter")], 2)
    env = flow_env(prefix, kafka_bootstrap, redis_url, **sim.ingest_env(),
                   MD_STALE_AFTER_MS="3000", MD_BACKOFF_INITIAL_MS="50",
                   MD_STATS_INTERVAL_MS="0", MD_INTERVALS="1m,5m")
    procs = []
    try:
        procs += start_flow("ingest", env, log_dir=tmp_path)
        for flow in ("orderbook", "candles", "ticker"):
            procs += start_flow(flow, env, log_dir=tmp_path)
        # trades count only once every feed listens: start the generators then
        wait_until(lambda: all(v["stats"].get("subscriptions", 0) >= 1
                               for v in sim.status().values()), 60,
                   message="the ingestion flow subscribed on every exchange")
        sim.resume()
        wait_until(lambda: all(sum(t["count"] for t in v["trades"].values()) >= 25
                               for v in sim.status().values()), 60, message="trades played")
        sim.pause()
        status = sim.status()
        for ex in EXCHANGES:
            (sym,) = status[ex]["symbols"]
            truth = sim.book(ex, sym)
            trades = status[ex]["trades"][sym]

            def book_ok(ex: str = ex, sym: str = sym, truth: dict = truth) -> bool:
                rec = read_book(redis_client, ex, sym)
                return rec is not None and rec["status"] == "ok" and \
                    rec["bids"] == truth["bids"][:20] and rec["asks"] == truth["asks"][:20]

            def ticker_ok(ex: str = ex, sym: str = sym, t: dict = trades) -> bool:
                rec = read_ticker(redis_client, ex, sym)
                return rec is not None and rec["count"] == t["count"] and \
                    rec["lastPrice"] == t["last_px"] and \
                    to_units(rec["volume"]) == int(t["volume_units"])

            def candles_ok(ex: str = ex, sym: str = sym, t: dict = trades) -> bool:
                cs = read_candles(redis_client, ex, sym, "1m")
                return sum(c["n"] for c in cs) == t["count"] and \
                    sum(to_units(c["v"]) for c in cs) == int(t["volume_units"])

            wait_until(book_ok, 30, message=f"{ex}:{sym} book in Redis equals the simulator's")
            wait_until(ticker_ok, 30, message=f"{ex}:{sym} ticker counts every trade")
            wait_until(candles_ok, 30, message=f"{ex}:{sym} 1m candles hold every trade")
        for p in procs:
            assert p.poll() is None, f"a flow died: see {tmp_path}"
    finally:
        stop(procs)
