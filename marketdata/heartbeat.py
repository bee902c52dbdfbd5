"""Heartbeats: each flow process says "I am alive, here is where I am" in Redis, for the doctor.

One hash per process, ``md:hb:{flow}:{host}:{pid}``, rewritten every ``interval_s`` by a daemon
thread and expiring after ``ttl_s``, so a process that dies leaves a heartbeat that first goes
stale (the doctor names the flow) and then disappears. Fields:

- ``flow``, ``host``, ``pid``, ``started`` and ``time`` (ms since the epoch), ``interval_ms``;
- ``position``: JSON object, e.g. ``{"md.book#0": 1234}`` (next offset per Kafka partition) or
  ``{"events_in": 5000}``: whatever the process reports with :func:`set_position` or a callable;
- ``feeds`` (ingestion only): JSON object ``{feed: {"connected", "last_frame_ms", "resyncs"}}``
  reported with :func:`set_feed`;
- ``kafka`` (the consuming flows): JSON object ``{"group", "topics"}``, the consumer group and
  input topics this process reads, so that the doctor checks the lag of what really runs (the
  demo's flows, say, use their own topics and groups).

Writing never raises into the flow: a Redis outage is logged (once per outage) and retried at the
next beat, because a heartbeat must not be the reason a healthy flow stops.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import redis

from marketdata.stack import pid_alive

__all__ = [
    "HB_PREFIX",
    "Heartbeat",
    "hb_key",
    "parse",
    "read_all",
    "set_feed",
    "set_position",
    "start",
]

log = logging.getLogger(__name__)

HB_PREFIX = "md:hb:"
DEFAULT_INTERVAL_S = 5.0
DEFAULT_TTL_S = 120

# Process-wide reports: any part of a flow (a source partition, a feed handler) updates these and
# every beat of every Heartbeat in the process carries their latest values.
_lock = threading.Lock()
_positions: dict[str, Any] = {}
_feeds: dict[str, dict[str, Any]] = {}
_running: dict[str, Heartbeat] = {}


def hb_key(flow: str, host: str, pid: int) -> str:
    return f"{HB_PREFIX}{flow}:{host}:{pid}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def set_position(part: str, value: Any) -> None:
    """Report this process's position in ``part`` (e.g. next Kafka offset of ``md.book#0``)."""
    with _lock:
        _positions[part] = value


def set_feed(feed: str, *, connected: bool | None = None, last_frame_ms: int | None = None,
             resyncs: int | None = None) -> None:
    """Report an exchange feed's state (ingestion): only the fields given are updated."""
    with _lock:
        cur = _feeds.setdefault(feed, {"connected": False, "last_frame_ms": None, "resyncs": 0})
        if connected is not None:
            cur["connected"] = connected
        if last_frame_ms is not None:
            cur["last_frame_ms"] = last_frame_ms
        if resyncs is not None:
            cur["resyncs"] = resyncs


def _reports() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    with _lock:
        return dict(_positions), {k: dict(v) for k, v in _feeds.items()}


class Heartbeat:
    """Writes one process's heartbeat; :meth:`beat` once, or :meth:`start` a daemon thread."""

    def __init__(self, redis_url: str, flow: str, *, interval_s: float = DEFAULT_INTERVAL_S,
                 ttl_s: int = DEFAULT_TTL_S,
                 position: Callable[[], Mapping[str, Any]] | None = None,
                 host: str | None = None, pid: int | None = None,
                 kafka: Mapping[str, Any] | None = None) -> None:
        if interval_s <= 0 or ttl_s < 1:
            raise ValueError("interval_s must be positive and ttl_s at least 1")
        self.flow = flow
        self.host = host or socket.gethostname()
        self.pid = pid or os.getpid()
        self.key = hb_key(flow, self.host, self.pid)
        self.interval_s = interval_s
        self.ttl_s = max(ttl_s, int(interval_s * 3) + 1)  # never expire between two beats
        self.position = position
        self.kafka = dict(kafka or {})
        self.started = _now_ms()
        self._client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def fields(self) -> dict[str, str]:
        """The hash written at this beat."""
        positions, feeds = _reports()
        if self.position is not None:
            try:
                positions.update(self.position())
            except Exception:  # a broken reporter must not stop the heartbeat
                log.exception("heartbeat %s: position callable failed", self.flow)
        return {
            "flow": self.flow,
            "host": self.host,
            "pid": str(self.pid),
            "started": str(self.started),
            "time": str(_now_ms()),
            "interval_ms": str(int(self.interval_s * 1000)),
            "position": orjson.dumps(positions, option=orjson.OPT_NON_STR_KEYS).decode(),
            "feeds": orjson.dumps(feeds).decode(),
            "kafka": orjson.dumps(self.kafka).decode(),
        }

    def beat(self) -> bool:
        """Write the heartbeat now; False (logged once per outage) if Redis did not take it."""
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.hset(self.key, mapping=self.fields())
            pipe.expire(self.key, self.ttl_s)
            pipe.execute()
        except (redis.RedisError, OSError) as e:
            if not self._failing:
                log.warning("heartbeat %s: cannot write to Redis (%s); retrying", self.flow, e)
            self._failing = True
            return False
        if self._failing:
            log.info("heartbeat %s: Redis reachable again", self.flow)
        self._failing = False
        return True

    def forget_dead_peers(self) -> int:
        """Delete heartbeats of this flow on this host whose process is gone (a restart's old pid):
        they would otherwise read as a dead process until they expire."""
        removed = 0
        try:
            for raw in self._client.scan_iter(match=f"{HB_PREFIX}{self.flow}:{self.host}:*"):
                key = raw.decode()
                pid = key.rsplit(":", 1)[1]
                if pid.isdigit() and int(pid) != self.pid and not pid_alive(int(pid)):
                    removed += int(self._client.delete(key))
        except (redis.RedisError, OSError) as e:
            log.warning("heartbeat %s: cannot clean old heartbeats (%s)", self.flow, e)
        return removed

    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat()
            self._stop.wait(self.interval_s)

    def start(self) -> Heartbeat:
        """Beat now and then every ``interval_s`` from a daemon thread; returns ``self``."""
        if self._thread is None:
            self.forget_dead_peers()
            self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.flow}",
                                            daemon=True)
            self._thread.start()
            # A process that ends normally (a backfill at the end of its input) is not a dead
            # one: without this, the doctor called it "gone" until the key expired.
            atexit.register(self.stop)
        return self

    def stop(self, remove: bool = True) -> None:
        """Stop beating; ``remove`` deletes the key (a clean exit is not a dead process)."""
        atexit.unregister(self.stop)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 3)
        if remove:
            with contextlib.suppress(redis.RedisError, OSError):
                self._client.delete(self.key)
        self._client.close()


def start(redis_url: str, flow: str, *, interval_s: float = DEFAULT_INTERVAL_S,
          ttl_s: int = DEFAULT_TTL_S,
          position: Callable[[], Mapping[str, Any]] | None = None,
          kafka: Mapping[str, Any] | None = None) -> Heartbeat:
    """Start ``flow``'s heartbeat in this process, once: later calls return the running one."""
    with _lock:
        hb = _running.get(flow)
        if hb is None:
            hb = _running[flow] = Heartbeat(redis_url, flow, interval_s=interval_s, ttl_s=ttl_s,
                                            position=position, kafka=kafka)
    return hb.start()


def parse(fields: Mapping[bytes | str, bytes | str]) -> dict[str, Any]:
    """A heartbeat hash as read from Redis → typed dict (ints, decoded JSON)."""

    def s(v: bytes | str) -> str:
        return v.decode() if isinstance(v, bytes) else v

    raw = {s(k): s(v) for k, v in fields.items()}
    out: dict[str, Any] = {"flow": raw.get("flow", "?"), "host": raw.get("host", "?")}
    for name in ("pid", "started", "time", "interval_ms"):
        try:
            out[name] = int(raw[name])
        except (KeyError, ValueError):
            out[name] = None
    for name in ("position", "feeds", "kafka"):
        try:
            out[name] = orjson.loads(raw.get(name) or "{}")
        except orjson.JSONDecodeError:
            out[name] = {}
    return out


def read_all(client: redis.Redis, limit: int = 10_000) -> list[dict[str, Any]]:
    """Every heartbeat in Redis (parsed, with its ``key``), at most ``limit``."""
    keys = []
    for raw in client.scan_iter(match=f"{HB_PREFIX}*", count=1000):
        keys.append(raw)
        if len(keys) >= limit:
            break
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.hgetall(k)
    out = []
    for k, fields in zip(keys, pipe.execute(), strict=True):
        if fields:
            hb = parse(fields)
            hb["key"] = k.decode() if isinstance(k, bytes) else k
            out.append(hb)
    return out
