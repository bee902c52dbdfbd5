"""REST API against a live uvicorn over real Redis filled by the real flows (replay of the
recorded ETH-USDT session, written by the flows' Redis writer), plus schemathesis fuzzing of every
endpoint of the OpenAPI document: no 5xx, every response matching its schema."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import ConnectionError as RedisConnectionError
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api import fastpath
from api.app import ApiSettings, create_app
from api.fastpath import FreshReads
from api.server import serving
from api.testing import book_record, fill, filled_test_db
from tests.util import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stored(redis_url: str) -> tuple[str, list[dict[str, Any]]]:
    return filled_test_db(redis_url)


@pytest.fixture(scope="module")
def base(stored: tuple[str, list[dict[str, Any]]]) -> Iterator[str]:
    with serving(create_app(stored[0])) as url:
        yield url


@pytest.fixture(scope="module")
def http(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=10) as client:
        yield client


def latest(records: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return [r for r in records if r["type"] == kind][-1]


def test_book_is_served_exactly_as_stored(
        http: httpx.Client, stored: tuple[str, list[dict[str, Any]]]) -> None:
    url, records = stored
    raw = redis.Redis.from_url(url).hget("md:book:binance:ETH-USDT", "data")
    r = http.get("/v1/book/binance/ETH-USDT")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.content == raw  # byte for byte: no decimal re-formatted
    assert r.json() == latest(records, "book")
    assert r.headers["cache-control"] == "no-cache"
    # ETag revalidation
    again = http.get("/v1/book/binance/ETH-USDT", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    # Depth trims both sides, keeps the rest; case-insensitive path
    d = http.get("/v1/book/BINANCE/eth-usdt", params={"depth": 3}).json()
    full = latest(records, "book")
    assert d == {**full, "bids": full["bids"][:3], "asks": full["asks"][:3]}
    assert d["bids"][0][0] == full["bids"][0][0] and len(d["asks"]) == 3


def test_ticker_and_candles(http: httpx.Client,
                            stored: tuple[str, list[dict[str, Any]]]) -> None:
    _, records = stored
    assert http.get("/v1/ticker/binance/ETH-USDT").json() == latest(records, "ticker")
    final: dict[tuple[str, int], dict[str, Any]] = {}
    for r in records:
        if r["type"] == "candle":
            final[(r["iv"], r["t"])] = r  # the last emission of each candle wins
    for iv in ("1m", "5m", "1h", "1d"):
        want = [final[k] for k in sorted(k for k in final if k[0] == iv)]
        got = http.get("/v1/candles/binance/ETH-USDT", params={"interval": iv}).json()
        assert got == want, iv
    ones = sorted(t for iv, t in final if iv == "1m")
    # time range (inclusive) and limit: the newest `limit` in range, newest last
    got = http.get("/v1/candles/binance/ETH-USDT",
                   params={"interval": "1m", "start": ones[1], "end": ones[5], "limit": 3}).json()
    assert [c["t"] for c in got] == ones[3:6]
    got = http.get("/v1/candles/binance/ETH-USDT",
                   params={"interval": "1m", "start": ones[-1] + 1}).json()
    assert got == []


def test_symbols_and_health(http: httpx.Client) -> None:
    body = http.get("/v1/symbols").json()
    (eth,) = body["exchanges"]["binance"]
    assert eth["sym"] == "ETH-USDT" and eth["ticker"] is True
    assert eth["intervals"] == ["1m", "5m", "15m", "1h", "4h", "1d"]
    assert eth["book"]["status"] == "ok" and eth["book"]["age_ms"] > 0
    health = http.get("/healthz")
    assert health.status_code == 200
    assert health.json()["redis"] == "ok" and health.json()["status"] == "stale"  # 2024 data


@pytest.mark.parametrize(("path", "params", "status", "reason"), [
    ("/v1/book/kraken/ETH-USDT", {}, 404, "unknown exchange 'kraken'"),
    ("/v1/book/binance/DOGE-USDT", {}, 404, "no order book for binance:DOGE-USDT"),
    ("/v1/ticker/binance/DOGE-USDT", {}, 404, "no ticker"),
    ("/v1/candles/binance/ETH-USDT", {"interval": "2h"}, 404, "available: 1m, 5m"),
    ("/v1/candles/binance/ETH-USDT", {"interval": "1x"}, 422, None),
    ("/v1/candles/binance/ETH-USDT", {"start": 10, "end": 5}, 400, "start (10) is after end"),
    ("/v1/candles/binance/ETH-USDT", {"limit": 100000}, 422, None),
    ("/v1/candles/binance/ETH-USDT", {"limit": 0}, 422, None),
    ("/v1/book/binance/ETH-USDT", {"depth": 0}, 422, None),
    ("/v1/book/binance/ETH USDT", {}, 422, None),
    ("/v1/nothing", {}, 404, None),
])
def test_bad_input_is_a_4xx_with_a_reason(http: httpx.Client, path: str, params: dict[str, Any],
                                          status: int, reason: str | None) -> None:
    r = http.get(path, params=params)
    assert r.status_code == status
    detail = r.json()["detail"]
    assert detail
    if reason is not None:
        assert reason in detail


def test_metrics_count_requests_by_route(http: httpx.Client) -> None:
    http.get("/v1/book/binance/ETH-USDT")
    text = http.get("/metrics").text
    assert 'md_api_http_requests_total{method="GET",route="/v1/book/{ex}/{sym}",status="200"}' \
        in text
    assert "md_api_ws_clients" in text and "process_cpu_seconds_total" in text


def test_dashboard_and_vendored_assets_are_served(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200 and "lightweight-charts.standalone.production.js" in page.text
    assert "https://cdn" not in page.text and "unpkg" not in page.text
    lib = http.get("/static/vendor/lightweight-charts.standalone.production.js")
    assert lib.status_code == 200 and b"Lightweight Charts" in lib.content[:300]
    assert http.get("/static/app.js").status_code == 200


def test_openapi_documents_every_endpoint(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    assert set(doc["paths"]) == {"/v1/symbols", "/v1/book/{ex}/{sym}", "/v1/ticker/{ex}/{sym}",
                                 "/v1/candles/{ex}/{sym}", "/healthz", "/metrics"}
    book = doc["paths"]["/v1/book/{ex}/{sym}"]["get"]["responses"]
    assert {"200", "404", "422", "503"} <= set(book)
    assert orjson.dumps(doc["components"]["schemas"]["BookRecord"])  # referenced, well-formed


@pytest.fixture(scope="module")
def api_schema(base: str) -> Any:
    return schemathesis.openapi.from_url(f"{base}/openapi.json")


def test_fuzz_every_endpoint(api_schema: Any) -> None:
    """Property-based requests generated from the OpenAPI document, for every operation: no 5xx;
    status codes, content types, headers and bodies match the document. (Schemathesis's pytest
    plugin does not load under pytest 9, so its strategies are driven by Hypothesis here.)"""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/book/{ex}/{sym}", "/v1/candles/{ex}/{sym}"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        def check(case: Any) -> None:
            # A schema cannot say "start <= end": that 400 is by design (tested above).
            excluded = [positive_data_acceptance] if "start" in (case.query or {}) else []
            case.call_and_validate(excluded_checks=excluded)

        check()


# -- the book fast path (api.fastpath) ----------------------------------------------------------
class FakeRedis:
    """A key's value over a fake clock, read by ``fetch`` at the instant the read is issued."""

    def __init__(self) -> None:
        self.now = 0.0
        self.value = b"v0"
        self.reads = 0
        self.gate: asyncio.Event | None = None  # when set, reads wait for it
        self.fail = 0  # how many of the next reads raise

    async def fetch(self, key: str) -> bytes | None:
        self.reads += 1
        value = self.value
        if self.fail:
            self.fail -= 1
            raise RedisConnectionError("down")
        if self.gate is not None:
            await self.gate.wait()
        return value


def test_fresh_reads_share_only_within_the_bound() -> None:
    fake = FakeRedis()
    reads = FreshReads(fake.fetch, max_age_s=0.002, clock=lambda: fake.now)

    async def scenario() -> list[bytes]:
        got = []
        for now, value in ((0.0, None), (0.002, b"v1"), (0.0021, None), (0.004, None)):
            fake.now = now
            if value is not None:
                fake.value = value
            body = await reads.get("k")
            assert body is not None
            got.append(body.raw)
        return got

    # t=2 ms still shares the t=0 read (bound inclusive), t=2.1 ms does not, t=4 ms shares t=2.1
    assert asyncio.run(scenario()) == [b"v0", b"v0", b"v1", b"v1"]
    assert fake.reads == 2 and reads.issued == 2


def test_fresh_reads_zero_bound_reads_every_time() -> None:
    fake = FakeRedis()
    reads = FreshReads(fake.fetch, max_age_s=0.0, clock=lambda: fake.now)

    async def scenario() -> None:
        for _ in range(3):
            await reads.get("k")

    asyncio.run(scenario())
    assert fake.reads == 3


def test_fresh_reads_survive_a_cancelled_requester_and_forget_failures() -> None:
    fake = FakeRedis()
    reads = FreshReads(fake.fetch, max_age_s=1.0, clock=lambda: fake.now)

    async def scenario() -> list[bytes | None]:
        fake.gate = asyncio.Event()
        first = asyncio.create_task(reads.get("k"))
        others = [asyncio.create_task(reads.get("k")) for _ in range(3)]
        await asyncio.sleep(0)  # let every request reach the shared read (no timing involved)
        first.cancel()
        fake.gate.set()
        bodies = await asyncio.gather(*others)
        assert first.cancelled()
        # a failed read is not shared with later requests: the next one reads again
        fake.gate, fake.fail, fake.value = None, 1, b"v2"
        fake.now = 5.0
        with pytest.raises(RedisConnectionError):
            await reads.get("k")
        after = await reads.get("k")
        return [b.raw if b else None for b in bodies] + [after.raw if after else None]

    assert asyncio.run(scenario()) == [b"v0", b"v0", b"v0", b"v2"]
    assert fake.reads == 3  # one shared read, the failed one, the retry


def test_fresh_reads_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "MAX_KEYS", 50)
    fake = FakeRedis()
    reads = FreshReads(fake.fetch, max_age_s=10.0, clock=lambda: fake.now)

    async def scenario() -> None:
        for i in range(500):
            fake.now = i * 0.001
            await reads.get(f"k{i}")

    asyncio.run(scenario())
    assert len(reads._reads) <= 50


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 3000), st.booleans()), min_size=1, max_size=60),
       max_age_us=st.sampled_from([0, 500, 2000]))
def test_fresh_reads_never_serve_older_than_the_bound(steps: list[tuple[int, bool]],
                                                      max_age_us: int) -> None:
    """Whatever the timing of writes and requests, a response is a value Redis held at some
    instant in [request time - max_age, request time]."""
    fake = FakeRedis()  # the clock counts whole microseconds: exact, no float rounding
    reads = FreshReads(fake.fetch, max_age_s=max_age_us, clock=lambda: fake.now)
    history = [(float("-inf"), 0)]  # (time, version) of every write

    def version_at(t: float) -> int:
        return max(v for when, v in history if when <= t)

    def version_before(t: float) -> int:  # at instant t Redis held this too, until t's writes
        return max(v for when, v in history if when < t)

    async def scenario() -> None:
        for dt_us, write in steps:
            fake.now += dt_us
            if write:
                history.append((fake.now, history[-1][1] + 1))
                fake.value = b"v%d" % history[-1][1]
                continue
            body = await reads.get("k")
            assert body is not None
            served = int(body.raw[1:])
            assert version_before(fake.now - max_age_us) <= served <= version_at(fake.now)
        if max_age_us and len(steps) > 3 and all(dt == 0 for dt, _ in steps):
            assert fake.reads <= 1  # simultaneous requests share one read

    asyncio.run(scenario())


def test_fast_path_agrees_with_the_fastapi_route(http: httpx.Client) -> None:
    """Queries the fast path declines (odd spellings, extra parameters) go to FastAPI; both must
    give the same answer, and out-of-range depths stay 422."""
    fast = http.get("/v1/book/binance/ETH-USDT", params={"depth": 3})
    slow = http.get("/v1/book/binance/ETH-USDT?depth=03&unused=1")
    assert fast.status_code == slow.status_code == 200
    assert fast.content == slow.content and fast.headers["etag"] == slow.headers["etag"]
    assert http.get("/v1/book/binance/ETH-USDT", params={"depth": 1000}).status_code == 200
    assert http.get("/v1/book/binance/ETH-USDT", params={"depth": 1001}).status_code == 422
    head = http.head("/v1/book/binance/ETH-USDT")
    assert head.status_code == 405  # not served by the fast path either


def test_book_reads_after_a_write_see_it_within_the_bound(
        http: httpx.Client, stored: tuple[str, list[dict[str, Any]]]) -> None:
    url, _ = stored
    bound_s = ApiSettings().book_max_age_ms / 1000
    for seq in range(2, 6):
        fill(url, [book_record("fresh", "BOOK-USDT", seq, seq)])
        written = time.monotonic()
        while time.monotonic() <= written + bound_s:  # the documented bound, then it must show
            http.get("/v1/book/fresh/BOOK-USDT")
        assert http.get("/v1/book/fresh/BOOK-USDT").json()["seq"] == seq


def test_book_when_redis_is_down_is_a_503() -> None:
    with serving(create_app(f"redis://127.0.0.1:{free_port()}/0")) as base:
        r = httpx.get(f"{base}/v1/book/binance/ETH-USDT", timeout=10)
    assert r.status_code == 503 and "redis unavailable" in r.json()["detail"]


def test_a_bad_port_setting_is_one_line_of_its_command() -> None:
    """MD_API_PORT was read while the parser was built: `abc` broke every command with a
    traceback (`marketdata --help` too), and 99999 served on 99999 mod 65536 in silence."""
    import subprocess
    from pathlib import Path

    md = str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "marketdata")
    for value in ("abc", "99999", "0"):
        env = {"PATH": "/usr/bin:/bin", "MD_API_PORT": value}
        ok = subprocess.run([md, "--help"], env=env, capture_output=True, timeout=60)
        assert ok.returncode == 0 and b"Traceback" not in ok.stderr
        for cmd in (["api"], ["demo", "--duration", "0"]):
            res = subprocess.run([md, *cmd], env=env, capture_output=True, timeout=60)
            err = res.stderr.decode()
            assert res.returncode == 2 and "is not a port number" in err, err
            assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
                f"marketdata {cmd[0]}: error: argument")  # argparse's usage, then the error
