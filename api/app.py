"""The read side over Redis: REST, WebSocket push (``api.stream``) and the dashboard page.

Records are served exactly as the flows stored them (the stored JSON bytes, never re-encoded,
unless ``depth`` trims a book), so the API cannot round or reformat a decimal. Bad input is a 4xx
with a reason; a Redis outage is a 503; nothing else should ever be a 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException, Query, Request, WebSocket
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from starlette.websockets import WebSocketDisconnect

from api.fastpath import BookFastPath, FreshReads, etag, trim_book
from api.stream import Hub, StreamSettings, serve_client

__all__ = ["ApiSettings", "create_app"]

STATIC = Path(__file__).parent / "static"
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31, a bound for time parameters
_KEY = re.compile(rb"^md:(book|ticker|candles):([^:]+):([^:]+)(?::([^:]+))?$")

Decimal = Annotated[str, Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", examples=["2683.80000000"])]
Level = Annotated[list[Decimal], Field(min_length=2, max_length=2,
                                       description="[price, quantity]")]
ExParam = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_.\-]{1,32}$",
                                   description="exchange, e.g. binance", examples=["binance"])]
SymParam = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
                                    description="symbol BASE-QUOTE, e.g. ETH-USDT (any case)",
                                    examples=["ETH-USDT"])]


# -- documented shapes (DESIGN.md "Outputs"); responses are the stored bytes ----------------------
class BookRecord(BaseModel):
    type: Literal["book"]
    ex: str
    sym: str
    ts: int = Field(description="event time of the last event applied, ms since the epoch")
    seq: int | None = Field(description="exchange sequence after that event")
    status: Literal["ok", "stale", "crossed"]
    bids: list[Level] = Field(description="[price, quantity], best first")
    asks: list[Level] = Field(description="[price, quantity], best first")


class TickerRecord(BaseModel):
    type: Literal["ticker"]
    ex: str
    sym: str
    openTime: int
    closeTime: int
    openPrice: Decimal
    highPrice: Decimal
    lowPrice: Decimal
    lastPrice: Decimal
    volume: Decimal
    quoteVolume: Decimal
    priceChange: Decimal
    priceChangePercent: Decimal
    weightedAvgPrice: Decimal
    count: int
    firstId: str
    lastId: str


class CandleRecord(BaseModel):
    type: Literal["candle"]
    ex: str
    sym: str
    iv: str
    t: int = Field(description="open time, ms")
    T: int = Field(description="close time: t + interval - 1 ms")
    o: Decimal
    h: Decimal
    l: Decimal  # noqa: E741 - the record's field name
    c: Decimal
    v: Decimal = Field(description="base volume")
    q: Decimal = Field(description="quote volume")
    n: int = Field(description="trade count")
    closed: bool


class BookSummary(BaseModel):
    status: Literal["ok", "stale", "crossed"]
    seq: int | None
    ts: int
    age_ms: int = Field(description="now minus the book's event time")


class SymbolInfo(BaseModel):
    sym: str
    book: BookSummary | None
    ticker: bool
    intervals: list[str]


class SymbolsResponse(BaseModel):
    exchanges: dict[str, list[SymbolInfo]]
    generated: int = Field(description="when this view was built, ms since the epoch")


class Health(BaseModel):
    status: Literal["ok", "stale", "empty"]
    redis: Literal["ok"]
    books: int
    newest_age_ms: int | None
    stale_after_ms: int


class Problem(BaseModel):
    detail: str


class ValidationProblem(BaseModel):
    detail: list[dict[str, Any]]


_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ValidationProblem, "description": "a parameter is malformed or out of range"},
    503: {"model": Problem, "description": "Redis is unreachable"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "unknown exchange, symbol or interval"}}


@dataclass(frozen=True)
class ApiSettings:
    """Knobs of one API process."""

    symbols_ttl_s: float = 2.0  # how long a /v1/symbols discovery (SCAN) is reused
    # A book response may share a Redis read issued at most this long before the request
    # arrived (api.fastpath.FreshReads): the freshness bound of GET /v1/book; 0 = never share.
    book_max_age_ms: float = 2.0
    stale_after_ms: int = 10_000  # /healthz: newest book older than this is 'stale'
    stream: StreamSettings = field(default_factory=StreamSettings)


# -- metrics ------------------------------------------------------------------------------------
def _http_metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    requests = Counter("md_api_http_requests", "HTTP requests", ["method", "route", "status"],
                       registry=registry)
    latency = Histogram(
        "md_api_http_request_seconds", "HTTP request latency", ["route"], registry=registry,
        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
    return requests, latency


class _HttpMetrics:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware) labelled by route template."""

    def __init__(self, app: Any, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.requests.labels(scope["method"], name, str(status[0])).inc()
            self.latency.labels(name).observe(time.perf_counter() - started)


# -- Redis access --------------------------------------------------------------------------------
@dataclass
class _Catalog:
    """What Redis holds, by SCAN, reused for ``ttl`` seconds."""

    books: dict[tuple[str, str], dict[str, Any]]
    tickers: set[tuple[str, str]]
    intervals: dict[tuple[str, str], set[str]]
    built: float

    @property
    def exchanges(self) -> set[str]:
        return {ex for ex, _ in (*self.books, *self.tickers, *self.intervals)}


async def _scan_catalog(client: aioredis.Redis) -> _Catalog:
    books: dict[tuple[str, str], dict[str, Any]] = {}
    tickers: set[tuple[str, str]] = set()
    intervals: dict[tuple[str, str], set[str]] = {}
    book_keys: list[bytes] = []
    for pattern in ("md:book:*", "md:ticker:*", "md:candles:*"):
        async for key in client.scan_iter(match=pattern, count=1000):
            m = _KEY.match(key)
            if m is None:
                continue
            kind, ex, sym, iv = (g.decode() if g else None for g in m.groups())
            assert ex is not None and sym is not None
            if kind == "book" and iv is None:
                book_keys.append(key)
            elif kind == "ticker" and iv is None:
                tickers.add((ex, sym))
            elif kind == "candles" and iv is not None:
                intervals.setdefault((ex, sym), set()).add(iv)
    if book_keys:
        pipe = client.pipeline(transaction=False)
        for key in book_keys:
            pipe.hget(key, "data")
        for key, raw in zip(book_keys, await pipe.execute(), strict=True):
            if raw is None:
                continue
            with contextlib.suppress(orjson.JSONDecodeError, TypeError):
                rec = orjson.loads(raw)
                m = _KEY.match(key)
                assert m is not None
                books[(m.group(2).decode(), m.group(3).decode())] = {
                    "status": rec.get("status", "ok"), "seq": rec.get("seq"),
                    "ts": int(rec.get("ts", 0))}
    return _Catalog(books, tickers, intervals, time.monotonic())


class _State:
    def __init__(self, client: aioredis.Redis, settings: ApiSettings,
                 registry: CollectorRegistry, pubsub_client: aioredis.Redis) -> None:
        self.redis = client
        self.settings = settings
        self.hub = Hub(client, registry, settings.stream, pubsub_client)
        self._catalog: _Catalog | None = None
        self._lock = asyncio.Lock()

    async def catalog(self) -> _Catalog:
        cat = self._catalog
        if cat is not None and time.monotonic() - cat.built < self.settings.symbols_ttl_s:
            return cat
        async with self._lock:
            cat = self._catalog
            if cat is None or time.monotonic() - cat.built >= self.settings.symbols_ttl_s:
                cat = self._catalog = await _scan_catalog(self.redis)
            return cat

    async def not_found(self, ex: str, sym: str, what: str) -> HTTPException:
        """A 404 whose reason says which part is unknown."""
        cat = await self.catalog()
        if ex not in cat.exchanges:
            known = ", ".join(sorted(cat.exchanges)) or "none yet"
            return HTTPException(404, f"unknown exchange {ex!r} (known: {known})")
        return HTTPException(404, f"no {what} for {ex}:{sym}")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _json(request: Request, body: bytes, cache: str = "no-cache") -> Response:
    """``body`` as JSON with an ETag; ``304`` when the client already has it."""
    tag = etag(body)
    headers = {"ETag": tag, "Cache-Control": cache}
    inm = request.headers.get("if-none-match")
    if inm is not None and tag in (t.strip() for t in inm.split(",")):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _norm(ex: str, sym: str) -> tuple[str, str]:
    return ex.lower(), sym.upper()


# -- the app -------------------------------------------------------------------------------------
class _App(FastAPI):
    """FastAPI with :class:`api.fastpath.BookFastPath` in front of its whole middleware stack."""

    book_fast_path: BookFastPath | None = None

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        fast = self.book_fast_path
        if fast is not None and scope["type"] == "http":
            hit = fast.match(scope)
            if hit is not None and await fast.serve(scope, send, *hit):
                return
        await super().__call__(scope, receive, send)


async def _hget_data(client: aioredis.Redis, key: str) -> bytes | None:
    raw: bytes | None = await client.hget(key, "data")
    return raw


def create_app(redis_url: str, settings: ApiSettings | None = None) -> FastAPI:
    """The API over the Redis at ``redis_url``: one connection pool and one pub/sub reader."""
    settings = settings or ApiSettings()
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5,
                                     health_check_interval=30)
    pubsub_client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2,
                                            health_check_interval=30)
    state = _State(client, settings, registry, pubsub_client)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await state.hub.close()
        await client.aclose()
        await pubsub_client.aclose()

    app = _App(
        title="marketdata API",
        version="1.0",
        description=(
            "Latest order books, 24h tickers and candles from Redis, as the flows wrote them "
            "(decimals are strings). Live updates: WebSocket `/v1/stream`, send "
            '`{"op":"subscribe","channels":["book:binance:ETH-USDT","ticker:binance:ETH-USDT",'
            '"candles:binance:ETH-USDT:1m"]}` (or `unsubscribe`); messages are '
            '`{"type":"snapshot"|"update","channel":...,"data":record}`, '
            '`{"type":"subscribed"|"unsubscribed","channels":[...]}` and '
            '`{"type":"error","reason":...}`. Book channels are conflated (latest wins); a client '
            "that falls more than the queue limit behind is closed with code 4008. "
            "Dashboard: `/?ex=binance&sym=ETH-USDT`."),
        docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.md = state
    app.state.registry = registry
    requests, latency = _http_metrics(registry)
    app.add_middleware(_HttpMetrics, requests=requests, latency=latency)
    reads = FreshReads(lambda key: _hget_data(client, key), settings.book_max_age_ms / 1000)
    app.book_fast_path = BookFastPath(reads, requests, latency)

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> JSONResponse:
        return JSONResponse({"detail": f"redis unavailable: {type(exc).__name__}"}, 503)

    @app.exception_handler(TimeoutError)
    async def redis_timeout(request: Request, exc: TimeoutError) -> JSONResponse:
        return JSONResponse({"detail": "redis unavailable: timeout"}, 503)

    @app.get("/v1/symbols", response_model=SymbolsResponse, responses={503: _ERRORS[503]},
             summary="What is live, per exchange, with each book's status and age")
    async def symbols(request: Request) -> Response:
        cat = await state.catalog()
        now = _now_ms()
        out: dict[str, list[dict[str, Any]]] = {}
        for ex, sym in sorted({*cat.books, *cat.tickers, *cat.intervals}):
            book = cat.books.get((ex, sym))
            out.setdefault(ex, []).append({
                "sym": sym,
                "book": None if book is None else {**book, "age_ms": now - book["ts"]},
                "ticker": (ex, sym) in cat.tickers,
                "intervals": sorted(cat.intervals.get((ex, sym), ()), key=_iv_ms)})
        return Response(orjson.dumps({"exchanges": out, "generated": now}),
                        media_type="application/json", headers={"Cache-Control": "max-age=1"})

    @app.get("/v1/book/{ex}/{sym}", response_model=BookRecord,
             responses={**_NOT_FOUND, **_ERRORS}, summary="The latest order book")
    async def book(request: Request, ex: ExParam, sym: SymParam,
                   depth: Annotated[int | None, Query(ge=1, le=1000,
                                                      description="levels per side")] = None
                   ) -> Response:
        ex, sym = _norm(ex, sym)
        raw = await state.redis.hget(f"md:book:{ex}:{sym}", "data")
        if raw is None:
            raise await state.not_found(ex, sym, "order book")
        return _json(request, raw if depth is None else trim_book(raw, depth))

    @app.get("/v1/ticker/{ex}/{sym}", response_model=TickerRecord,
             responses={**_NOT_FOUND, **_ERRORS}, summary="The latest 24h rolling statistics")
    async def ticker(request: Request, ex: ExParam, sym: SymParam) -> Response:
        ex, sym = _norm(ex, sym)
        raw = await state.redis.hget(f"md:ticker:{ex}:{sym}", "data")
        if raw is None:
            raise await state.not_found(ex, sym, "ticker")
        return _json(request, raw)

    @app.get("/v1/candles/{ex}/{sym}", response_model=list[CandleRecord],
             responses={400: {"model": Problem, "description": "start after end"},
                        **_NOT_FOUND, **_ERRORS},
             summary="Candles with open time in [start, end], newest last (the newest `limit`)")
    async def candles(
        request: Request, ex: ExParam, sym: SymParam,
        interval: Annotated[str, Query(pattern=r"^[1-9][0-9]{0,3}[smhdwM]$",
                                       description="e.g. 1m 5m 15m 1h 4h 1d")] = "1m",
        start: Annotated[int | None, Query(ge=0, le=MAX_TIME_MS, description="ms")] = None,
        end: Annotated[int | None, Query(ge=0, le=MAX_TIME_MS, description="ms")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    ) -> Response:
        ex, sym = _norm(ex, sym)
        if start is not None and end is not None and start > end:
            raise HTTPException(400, f"start ({start}) is after end ({end})")
        key = f"md:candles:{ex}:{sym}:{interval}"
        members = await state.redis.zrevrangebyscore(
            key, "+inf" if end is None else end, "-inf" if start is None else start,
            start=0, num=limit)
        if not members and not await state.redis.exists(key):
            cat = await state.catalog()
            ivs = cat.intervals.get((ex, sym))
            if ivs:
                raise HTTPException(404, f"no {interval} candles for {ex}:{sym} "
                                         f"(available: {', '.join(sorted(ivs, key=_iv_ms))})")
            raise await state.not_found(ex, sym, "candles")
        return _json(request, b"[" + b",".join(m[13:] for m in reversed(members)) + b"]")

    @app.get("/healthz", response_model=Health, responses={503: _ERRORS[503]},
             summary="Redis reachable; status 'stale' when no book changed recently")
    async def healthz() -> Response:
        await state.redis.ping()
        cat = await state.catalog()
        newest = max((b["ts"] for b in cat.books.values()), default=None)
        age = None if newest is None else _now_ms() - newest
        status = ("empty" if age is None else
                  "ok" if age <= settings.stale_after_ms else "stale")
        return Response(orjson.dumps({"status": status, "redis": "ok", "books": len(cat.books),
                                      "newest_age_ms": age,
                                      "stale_after_ms": settings.stale_after_ms}),
                        media_type="application/json", headers={"Cache-Control": "no-store"})

    @app.get("/metrics", summary="Prometheus metrics",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format"}})
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/v1/stream")
    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()

        async def close(code: int, reason: str) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(code, reason), timeout=2)

        async def receive_text() -> str:
            """Text of the next frame; binary frames are read as UTF-8 (errors replaced) so a
            client sending bytes gets an error message rather than a dropped socket."""
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            if message.get("text") is not None:
                return str(message["text"])
            return bytes(message.get("bytes") or b"").decode("utf-8", "replace")

        with contextlib.suppress(WebSocketDisconnect):
            await serve_client(state.hub, receive_text, websocket.send_text, close)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
            "M": 2_592_000_000}


def _iv_ms(iv: str) -> int:
    """Sort key for interval names (``1m`` < ``1h`` < ``1d``); unknown units last."""
    try:
        return int(iv[:-1]) * _UNIT_MS[iv[-1]]
    except (KeyError, ValueError):
        return 1 << 62

