"""Helpers for the API's tests and benchmark: Redis filled by the real flows and writers.

Tests use their own Redis database (``TEST_DB``) so that other suites deleting ``md:*`` in the
default database cannot pull data from under them; pub/sub is global across databases, so tests
that listen use symbols of their own.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import orjson
import redis

from connectors.exchanges.recordings import data_dir
from connectors.redis import _Writer

__all__ = ["CANONICAL", "TEST_DB", "book_record", "db_url", "fill", "flow_records", "wipe"]

TEST_DB = 9
DATA = data_dir()
CANONICAL = DATA / "canonical" / "binance_ethusdt_20240808.events.jsonl.gz"


def db_url(url: str, db: int = TEST_DB) -> str:
    """``url`` pointing at database ``db``."""
    p = urlparse(url)
    return urlunparse(p._replace(path=f"/{db}"))


def wipe(url: str) -> None:
    """Delete every ``md:*`` key of the database at ``url``."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match="md:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
    finally:
        client.close()


@lru_cache(maxsize=1)
def flow_records(events: str = str(CANONICAL)) -> tuple[dict[str, Any], ...]:
    """Every record the orderbook, candles and ticker flows emit over ``events``, in order
    (replayed in-process, deterministic)."""
    from bytewax.testing import run_main

    from dataflows import candles, orderbook, ticker
    from dataflows.config import BookConfig, CandleConfig, TickerConfig, from_env

    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, mod, cls in (("orderbook", orderbook, BookConfig),
                               ("candles", candles, CandleConfig),
                               ("ticker", ticker, TickerConfig)):
            path = Path(tmp) / f"{name}.jsonl"
            run_main(mod.replay(from_env(cls, env={}), events, str(path),
                                str(Path(tmp) / f"{name}.dl.jsonl")), epoch_interval=None)
            out.extend(orjson.loads(line) for line in path.read_bytes().splitlines() if line)
    return tuple(out)


def fill(url: str, records: Iterable[dict[str, Any]], retention: int = 1440) -> int:
    """Write ``records`` with the flows' own Redis writer; returns how many changed state.

    Every record is published, as by a flow that keeps up (one record per key per write batch):
    the WebSocket tests need each one on the channel.
    """
    writer = _Writer(url, retention, conflated=False)
    try:
        batch: list[dict[str, Any]] = []
        for rec in records:
            batch.append(rec)
            if len(batch) >= 500:
                writer.write(batch)
                batch.clear()
        writer.write(batch)
        return writer.written
    finally:
        writer.client.close()


def filled_test_db(redis_url: str) -> tuple[str, list[dict[str, Any]]]:
    """The test database, emptied and filled with the replayed session's records."""
    url = db_url(redis_url)
    wipe(url)
    records = list(flow_records())
    fill(url, records)
    return url, records


def book_record(ex: str, sym: str, seq: int, ts: int, *, status: str = "ok", mid: int = 100_000,
                levels: int = 20) -> dict[str, Any]:
    """A book record as the book flow prints one: prices around ``mid``/100 with 2 decimals,
    quantities varying with ``seq`` so that consecutive records differ."""
    def px(units: int) -> str:
        return f"{units // 100}.{units % 100:02d}"

    return {"type": "book", "ex": ex, "sym": sym, "ts": ts, "seq": seq, "status": status,
            "bids": [[px(mid - 1 - i), f"{1 + (seq + i) % 7}.{(seq * 7 + i) % 1000:03d}"]
                     for i in range(levels)],
            "asks": [[px(mid + 1 + i), f"{1 + (seq + 2 * i) % 5}.{(seq * 3 + i) % 1000:03d}"]
                     for i in range(levels)]}
