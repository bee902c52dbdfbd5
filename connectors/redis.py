"""Redis: the latest market state, written idempotently and never backwards.

Layout (one hash or sorted set per symbol, so a Redis Cluster spreads symbols across slots):

- ``md:book:{ex}:{SYM}``: hash ``v`` (version), ``data`` (the book record as JSON).
- ``md:ticker:{ex}:{SYM}``: the same for the ticker record.
- ``md:candles:{ex}:{SYM}:{iv}``: sorted set scored by open time ``t``, one member per candle
  (its JSON, prefixed by a fixed-width version so equal scores sort by version), keeping the
  newest ``retention`` candles.

Every write is a Lua script that compares versions and does nothing when the stored state is
newer, then publishes the record on the channel named like the key. Replays after a crash
re-send records already written: they change nothing and publish nothing, and a reader never sees
state move backwards. Versions: book ``seq`` then ``ts``; ticker ``closeTime`` then ``count``;
candle ``2·n + closed`` (``n`` only grows, ``closed`` flips once, so later versions are larger).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from operator import itemgetter
from typing import Any

import orjson
import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from prometheus_client import Counter, Histogram

__all__ = [
    "RedisRecordSink",
    "book_key",
    "candle_key",
    "candle_version",
    "conflate",
    "read_book",
    "read_candles",
    "read_ticker",
    "ticker_key",
]

log = logging.getLogger(__name__)

WRITE_SECONDS = Histogram("md_redis_write_seconds", "One pipelined batch of record writes",
                          buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .25, 1))
WRITE_ERRORS = Counter("md_redis_write_errors_total", "Failed Redis write attempts (retried)")
WRITES = Counter("md_redis_writes_total", "Record writes by outcome (stale: Redis held newer)",
                 ["outcome"])

# KEYS[1]=key; ARGV: version parts (2 numbers), payload. Write when (v1,v2) >= stored.
_LATEST = """
local cur1 = tonumber(redis.call('HGET', KEYS[1], 'v1') or '-1')
local cur2 = tonumber(redis.call('HGET', KEYS[1], 'v2') or '-1')
local v1, v2 = tonumber(ARGV[1]), tonumber(ARGV[2])
if v1 < cur1 or (v1 == cur1 and v2 < cur2) then return 0 end
if v1 == cur1 and v2 == cur2 and redis.call('HGET', KEYS[1], 'data') == ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'v1', ARGV[1], 'v2', ARGV[2], 'data', ARGV[3])
redis.call('PUBLISH', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1]=zset; ARGV: t, version, payload, retention. Members are "<version:12d>|<json>".
_CANDLE = """
local t, v = tonumber(ARGV[1]), tonumber(ARGV[2])
local old = redis.call('ZRANGEBYSCORE', KEYS[1], t, t)
for _, m in ipairs(old) do
  local ov = tonumber(string.sub(m, 1, 12))
  if ov > v then return 0 end
  if ov == v and string.sub(m, 14) == ARGV[3] then return 0 end
end
if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], t, t) end
redis.call('ZADD', KEYS[1], t, string.format('%012d', v) .. '|' .. ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
local keep = tonumber(ARGV[4])
if keep > 0 and n > keep then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - keep - 1) end
redis.call('PUBLISH', KEYS[1], ARGV[3])
return 1
"""


def book_key(ex: str, sym: str) -> str:
    return f"md:book:{ex}:{sym}"


def ticker_key(ex: str, sym: str) -> str:
    return f"md:ticker:{ex}:{sym}"


def candle_key(ex: str, sym: str, iv: str) -> str:
    return f"md:candles:{ex}:{sym}:{iv}"


def candle_version(rec: dict[str, Any]) -> int:
    return 2 * int(rec["n"]) + (1 if rec["closed"] else 0)


def conflate(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep only the last record of each book, ticker and candle in a batch, in order.

    Records of one key come from one worker in order, so the last is the newest: the ones before
    it would be overwritten within the same pipeline anyway. A flow that keeps up writes one
    record per key and batch and loses nothing; one catching up on a backlog writes (and
    publishes) the latest state instead of every intermediate one, as consumers of market state
    want (the API conflates books per client too).

    >>> recs = [{"type": "ticker", "ex": "x", "sym": s, "count": n} for s, n in
    ...         [("A-B", 1), ("C-D", 1), ("A-B", 2)]]
    >>> [(r["sym"], r["count"]) for r in conflate(recs)]
    [('C-D', 1), ('A-B', 2)]
    """
    records = list(records)
    try:  # the keys in one C-level pass when the batch is all candles, or has none
        keys = list(map(_CANDLE_KEY, records))
    except KeyError:
        keys = ([_key(r) for r in records] if any(r.get("type") == "candle" for r in records)
                else list(map(_SYMBOL_KEY, records)))
    last = dict(zip(keys, range(len(records)), strict=True))  # key -> index of its last record
    if len(last) == len(records):
        return records
    return [records[i] for i in sorted(last.values())]


_CANDLE_KEY = itemgetter("type", "ex", "sym", "iv", "t")
_SYMBOL_KEY = itemgetter("type", "ex", "sym")


def _key(rec: dict[str, Any]) -> tuple[Any, ...]:
    return (rec.get("type"), rec.get("ex"), rec.get("sym"), rec.get("iv"), rec.get("t"))


class _Writer:
    """Pipelined, scripted writes for one worker; retries transient connection errors."""

    def __init__(self, url: str, retention: int, conflated: bool = True) -> None:
        self.client = redis.Redis.from_url(url)
        self.conflated = conflated
        self.latest = self.client.register_script(_LATEST)
        self.candle = self.client.register_script(_CANDLE)
        self.retention = retention
        self.written = 0
        self.skipped = 0

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        batch = conflate(records) if self.conflated else list(records)
        if not batch:
            return
        for attempt in range(8):
            try:
                with WRITE_SECONDS.time():
                    self._write(batch)
                return
            except (redis.ConnectionError, redis.TimeoutError) as e:
                WRITE_ERRORS.inc()
                if attempt == 7:
                    raise
                log.warning("redis write failed (%s); retrying", e)
                time.sleep(min(0.05 * 2**attempt, 2.0))

    def _write(self, batch: list[dict[str, Any]]) -> None:
        try:
            results = self._send(batch)
        except redis.exceptions.NoScriptError:  # a restarted or flushed Redis: load, redo all
            self.client.script_load(_LATEST)  # (the scripts are idempotent: redoing is safe)
            self.client.script_load(_CANDLE)
            results = self._send(batch)
        n = sum(1 for r in results if r == 1)
        self.written += n
        self.skipped += len(results) - n
        WRITES.labels("written").inc(n)
        WRITES.labels("stale").inc(len(results) - n)

    def _send(self, batch: list[dict[str, Any]]) -> list[Any]:
        """One pipelined EVALSHA per record. Not ``Script.__call__``: with a pipeline it asks
        ``SCRIPT EXISTS`` on every execute (a round trip per batch) and costs more per call."""
        pipe = self.client.pipeline(transaction=False)
        cmd = pipe.pipeline_execute_command
        latest, candle, keep = self.latest.sha, self.candle.sha, self.retention
        dumps = orjson.dumps
        for rec in batch:
            kind = rec.get("type")
            if kind == "candle":
                cmd("EVALSHA", candle, 1, f"md:candles:{rec['ex']}:{rec['sym']}:{rec['iv']}",
                    rec["t"], 2 * rec["n"] + (1 if rec["closed"] else 0), dumps(rec), keep)
            elif kind == "book":
                cmd("EVALSHA", latest, 1, book_key(rec["ex"], rec["sym"]),
                    rec["seq"] if rec["seq"] is not None else -1, rec["ts"], dumps(rec))
            elif kind == "ticker":
                cmd("EVALSHA", latest, 1, ticker_key(rec["ex"], rec["sym"]), rec["closeTime"],
                    rec["count"], dumps(rec))
            else:
                raise ValueError(f"not a Redis record: {kind!r}")
        return pipe.execute()


class _Partition(StatelessSinkPartition[dict[str, Any]]):
    def __init__(self, url: str, retention: int) -> None:
        self.writer = _Writer(url, retention)

    def write_batch(self, items: list[dict[str, Any]]) -> None:
        self.writer.write(items)

    def close(self) -> None:
        self.writer.client.close()


class RedisRecordSink(DynamicSink[dict[str, Any]]):
    """Writes book, ticker and candle records (dicts) to Redis; see the module docstring."""

    def __init__(self, url: str, retention: int = 1440) -> None:
        self.url = url
        self.retention = retention

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(self.url, self.retention)


# -- readers (API, tests, status views) -----------------------------------------------------------
def _read_latest(client: redis.Redis, key: str) -> dict[str, Any] | None:
    data = client.hget(key, "data")
    return orjson.loads(data) if data is not None else None


def read_book(client: redis.Redis, ex: str, sym: str) -> dict[str, Any] | None:
    return _read_latest(client, book_key(ex, sym))


def read_ticker(client: redis.Redis, ex: str, sym: str) -> dict[str, Any] | None:
    return _read_latest(client, ticker_key(ex, sym))


def read_candles(client: redis.Redis, ex: str, sym: str, iv: str, start: int | str = "-inf",
                 end: int | str = "+inf", limit: int | None = None) -> list[dict[str, Any]]:
    """Candles with open time in ``[start, end]``, oldest first (the newest ``limit`` of them)."""
    key = candle_key(ex, sym, iv)
    if limit is None:
        members = client.zrangebyscore(key, start, end)
    else:
        members = client.zrevrangebyscore(key, end, start, start=0, num=limit)[::-1]
    return [orjson.loads(m[13:]) for m in members]
