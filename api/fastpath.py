"""The hot read, ``GET /v1/book/{ex}/{sym}[?depth=N]``, served by a raw ASGI handler in front of
FastAPI.

Profiling showed FastAPI's routing, dependency solving and response classes at about half of the
server's time per book request, and one Redis round trip per request at another fifth. Here a 200
or 304 costs one regex match, at most one shared Redis read and one pre-built header list.
Anything else (a missing book, a malformed path or query, HEAD) falls through to the FastAPI
route, which keeps the documented 404/422 answers and the OpenAPI document.

Freshness bound: concurrent requests for one book share a Redis read (:class:`FreshReads`) only
if that read was *issued* at most ``max_age_s`` before the request reached the handler, so a
response is always the state Redis held at some instant no earlier than ``max_age_s`` before the
request arrived. ``max_age_s = 0`` disables sharing: every request reads Redis itself.
"""

from __future__ import annotations

import asyncio
import re
import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from prometheus_client import Counter, Histogram
from redis.exceptions import RedisError

__all__ = ["BookBody", "BookFastPath", "FreshReads", "etag", "trim_book"]

ROUTE = "/v1/book/{ex}/{sym}"
_PATH = re.compile(r"^/v1/book/([A-Za-z0-9_.\-]{1,32})/([A-Za-z0-9_.\-]{1,64})$")
_DEPTH = re.compile(rb"^depth=([1-9][0-9]{0,3})$")
MAX_DEPTH = 1000
MAX_KEYS = 10_000  # shared reads remembered before expired ones are dropped (bounds memory)

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def etag(body: bytes, tag: str = "") -> str:
    """A strong validator of ``body``: CRC-32 and length (cheap; collisions also need the same
    length)."""
    return f'"{zlib.crc32(body):08x}-{len(body):x}{tag}"'


def trim_book(raw: bytes, depth: int) -> bytes:
    """``raw`` with at most ``depth`` levels per side; ``raw`` itself when nothing is cut, so the
    stored bytes are served unchanged whenever possible."""
    rec = orjson.loads(raw)
    if len(rec.get("bids", ())) <= depth and len(rec.get("asks", ())) <= depth:
        return raw
    rec["bids"] = rec["bids"][:depth]
    rec["asks"] = rec["asks"][:depth]
    return orjson.dumps(rec)


def _headers(body: bytes, tag: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"etag", tag), (b"cache-control", b"no-cache")]


def _not_modified(tag: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"etag", tag), (b"cache-control", b"no-cache")]


class BookBody:
    """One stored book's bytes with their validators and response headers, built once and reused
    by every request that gets this version (and each ``depth`` trim, built on first use)."""

    __slots__ = ("_trims", "etag", "headers", "not_modified", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.etag = etag(raw).encode()
        self.headers = _headers(raw, self.etag)
        self.not_modified = _not_modified(self.etag)
        self._trims: dict[int, BookBody] = {}

    def trimmed(self, depth: int) -> BookBody:
        """This book cut to ``depth`` levels a side (memoized: at most ``MAX_DEPTH`` entries)."""
        body = self._trims.get(depth)
        if body is None:
            cut = trim_book(self.raw, depth)
            body = self._trims[depth] = self if cut is self.raw else BookBody(cut)
        return body


class FreshReads:
    """Coalesces reads of Redis keys under a freshness bound.

    A request joins a read of its key issued at most ``max_age_s`` before it (by ``clock``), else
    issues its own; the read runs as its own task, so a cancelled request never cancels the others
    waiting on it. Failures are not remembered: the next request reads again.
    """

    def __init__(self, fetch: Callable[[str], Awaitable[bytes | None]], max_age_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self.max_age_s = max_age_s
        self._clock = clock
        self._reads: dict[str, tuple[float, asyncio.Future[BookBody | None]]] = {}
        self.issued = 0  # Redis reads started (for tests and the benchmark)

    async def _load(self, key: str) -> BookBody | None:
        raw = await self._fetch(key)
        return None if raw is None else BookBody(raw)

    async def get(self, key: str) -> BookBody | None:
        now = self._clock()
        entry = self._reads.get(key)
        if entry is not None and now - entry[0] <= self.max_age_s:
            fut = entry[1]
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                return fut.result()
            if not fut.done():
                return await asyncio.shield(fut)
        self.issued += 1
        task = asyncio.ensure_future(self._load(key))
        if self.max_age_s > 0:
            if len(self._reads) >= MAX_KEYS:
                self._expire(now)
            self._reads[key] = (now, task)
        try:
            return await asyncio.shield(task)
        except BaseException:
            if self._reads.get(key, (0.0, None))[1] is task:
                del self._reads[key]
            raise

    def _expire(self, now: float) -> None:
        for key in [k for k, (t, _) in self._reads.items() if now - t > self.max_age_s]:
            del self._reads[key]
        if len(self._reads) >= MAX_KEYS:  # all fresh: a flood of distinct keys; start over
            self._reads.clear()


class BookFastPath:
    """Serves ``GET /v1/book/{ex}/{sym}`` 200s and 304s without FastAPI; ``serve`` returns False
    when the request must go to the FastAPI route instead (it has then sent nothing)."""

    def __init__(self, reads: FreshReads, requests: Counter, latency: Histogram) -> None:
        self.reads = reads
        self._count = {s: requests.labels("GET", ROUTE, str(s)) for s in (200, 304, 503)}
        self._latency = latency.labels(ROUTE)

    @staticmethod
    def match(scope: Scope) -> tuple[str, int | None] | None:
        """The Redis key and depth of a book request this path can serve, else None."""
        if scope["method"] != "GET":
            return None
        m = _PATH.match(scope["path"])
        if m is None:
            return None
        qs: bytes = scope["query_string"]
        depth = None
        if qs:
            d = _DEPTH.match(qs)
            if d is None or int(d.group(1)) > MAX_DEPTH:
                return None
            depth = int(d.group(1))
        return f"md:book:{m.group(1).lower()}:{m.group(2).upper()}", depth

    async def serve(self, scope: Scope, send: Send, key: str, depth: int | None) -> bool:
        started = time.perf_counter()
        try:
            body = await self.reads.get(key)
        except (RedisError, TimeoutError, OSError) as exc:
            name = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            payload = orjson.dumps({"detail": f"redis unavailable: {name}"})
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode())]})
            await send({"type": "http.response.body", "body": payload})
            self._done(503, started)
            return True
        if body is None:
            return False
        if depth is not None:
            body = body.trimmed(depth)
        if _matches(scope, body.etag):
            await send({"type": "http.response.start", "status": 304,
                        "headers": body.not_modified})
            await send({"type": "http.response.body", "body": b""})
            self._done(304, started)
            return True
        await send({"type": "http.response.start", "status": 200, "headers": body.headers})
        await send({"type": "http.response.body", "body": body.raw})
        self._done(200, started)
        return True

    def _done(self, status: int, started: float) -> None:
        self._count[status].inc()
        self._latency.observe(time.perf_counter() - started)


def _matches(scope: Scope, tag: bytes) -> bool:
    """Whether the request's If-None-Match lists ``tag``."""
    for name, value in scope["headers"]:
        if name == b"if-none-match":
            return tag in (t.strip() for t in value.split(b","))
    return False
