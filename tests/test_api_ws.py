"""WebSocket push ``/v1/stream`` against a live uvicorn and real Redis pub/sub (records written by
the flows' own Redis writer). Each test uses symbols of its own: pub/sub spans databases."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import redis
from fastapi import FastAPI
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from api.app import ApiSettings, create_app
from api.server import serving
from api.stream import CLOSE_TOO_SLOW, StreamSettings
from api.testing import book_record, db_url, fill
from tests.util import wait_until

pytestmark = pytest.mark.integration


def ticker_record(ex: str, sym: str, i: int) -> dict[str, Any]:
    return {"type": "ticker", "ex": ex, "sym": sym, "openTime": 0, "closeTime": 1_000_000 + i,
            "openPrice": "100.00", "highPrice": "110.00", "lowPrice": "90.00",
            "lastPrice": f"{100 + i % 10}.{i % 100:02d}", "volume": f"{i}.5",
            "quoteVolume": f"{i * 100}.25", "priceChange": "1.00",
            "priceChangePercent": "1.00000000",
            "weightedAvgPrice": "100.00000000", "count": i, "firstId": "1", "lastId": str(i)}


@pytest.fixture(scope="module")
def url(redis_url: str) -> str:
    return db_url(redis_url)


@pytest.fixture
def sym() -> str:
    return f"T{uuid.uuid4().hex[:8].upper()}-USDT"


@pytest.fixture(scope="module")
def server(url: str) -> Iterator[tuple[str, FastAPI]]:
    app = create_app(url, ApiSettings(stream=StreamSettings(queue_limit=1000)))
    with serving(app) as base:
        yield base.replace("http://", "ws://") + "/v1/stream", app


def recv(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    return orjson.loads(ws.recv(timeout=timeout))


def subscribe(ws: ClientConnection, *channels: str) -> list[dict[str, Any]]:
    """Subscribe and return what came before the acknowledgement (nothing, normally)."""
    ws.send(orjson.dumps({"op": "subscribe", "channels": list(channels)}).decode())
    early = []
    while (msg := recv(ws))["type"] != "subscribed":
        early.append(msg)
    assert set(channels) <= set(msg["channels"])
    return early


class Reader(threading.Thread):
    """Reads one client as fast as it can until ``done(messages)`` holds (a fast consumer)."""

    def __init__(self, ws: ClientConnection, done: Callable[[list[dict[str, Any]]], bool]) -> None:
        super().__init__(daemon=True)
        self.ws, self.done = ws, done
        self.messages: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.last_count = 0  # the newest ticker ``count`` received

    def run(self) -> None:
        try:
            while not self.done(self.messages):
                msg = recv(self.ws, timeout=20)
                self.messages.append(msg)
                if msg["channel"].startswith("ticker"):
                    self.last_count = msg["data"]["count"]
        except BaseException as e:  # surfaced by result()
            self.error = e

    def result(self, timeout: float = 30) -> list[dict[str, Any]]:
        self.join(timeout)
        assert not self.is_alive(), "fast reader did not finish"
        if self.error is not None:
            raise self.error
        return self.messages


def test_a_candle_channel_starts_with_the_newest_candle(
        server: tuple[str, FastAPI], url: str, sym: str) -> None:
    """As book and ticker channels start with their stored record, a candle channel starts with
    its newest candle (it gave nothing until the next trade of that symbol)."""
    ws_url, _ = server

    def candle(t: int, closed: bool) -> dict[str, Any]:
        return {"type": "candle", "ex": "wst", "sym": sym, "iv": "1m", "t": t, "T": t + 59_999,
                "o": "1.0", "h": "2.0", "l": "0.5", "c": "1.5", "v": "3", "q": "4.5", "n": 2,
                "closed": closed}

    fill(url, [candle(60_000, True), candle(120_000, False)])
    with connect(ws_url) as ws:
        assert subscribe(ws, f"candles:wst:{sym}:1m", f"candles:wst:{sym}:5m") == []
        snap = recv(ws)  # 1m only: no 5m candle is stored
        assert snap == {"type": "snapshot", "channel": f"candles:wst:{sym}:1m",
                        "data": candle(120_000, False)}
        fill(url, [candle(120_000, True)])
        assert recv(ws) == {"type": "update", "channel": f"candles:wst:{sym}:1m",
                            "data": candle(120_000, True)}


def slow_socket(host: str, port: int) -> socket.socket:
    """A connected socket with a tiny receive buffer: the server's sends back up quickly."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, port))
    return s


def test_subscribe_snapshot_ordered_updates_unsubscribe(
        server: tuple[str, FastAPI], url: str, sym: str) -> None:
    ws_url, _ = server
    fill(url, [book_record("wst", sym, 1, 1000)])
    with connect(ws_url) as ws:
        assert subscribe(ws, f"book:wst:{sym}", f"ticker:wst:{sym}") == []
        snap = recv(ws)
        assert snap["type"] == "snapshot" and snap["channel"] == f"book:wst:{sym}"
        assert snap["data"] == book_record("wst", sym, 1, 1000)  # as stored, decimals intact
        n = 300
        for i in range(1, n + 1):  # one write per call: one publish each, in order
            fill(url, [ticker_record("wst", sym, i)])
        got = [recv(ws) for _ in range(n)]
        assert [m["type"] for m in got] == ["update"] * n
        assert [m["data"]["count"] for m in got] == list(range(1, n + 1))
        assert got[-1]["data"] == ticker_record("wst", sym, n)

        ws.send(orjson.dumps({"op": "unsubscribe", "channels": [f"book:wst:{sym}"]}).decode())
        assert recv(ws) == {"type": "unsubscribed", "channels": [f"ticker:wst:{sym}"]}
        fill(url, [book_record("wst", sym, 2, 2000)])  # published, but nobody here wants it
        fill(url, [ticker_record("wst", sym, n + 1)])
        after = recv(ws)  # pub/sub keeps publish order: the book would have come first
        assert after["channel"] == f"ticker:wst:{sym}" and after["data"]["count"] == n + 1


def test_one_redis_subscription_shared_by_all_clients(
        server: tuple[str, FastAPI], url: str, sym: str) -> None:
    ws_url, app = server
    channel = f"md:book:wst:{sym}"
    client = redis.Redis.from_url(url)
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(ws_url)) for _ in range(5)]
        for ws in clients:
            subscribe(ws, f"book:wst:{sym}")
        assert dict(client.pubsub_numsub(channel)) == {channel.encode(): 1}
        fill(url, [book_record("wst", sym, 7, 7000)])
        for ws in clients:
            msg = recv(ws)
            assert msg["type"] == "update" and msg["data"]["seq"] == 7
    wait_until(lambda: dict(client.pubsub_numsub(channel)) == {channel.encode(): 0},
               timeout=10, message="the hub unsubscribes when the last client leaves")
    assert app.state.md.hub.subscribers(channel) == 0
    client.close()


def test_slow_client_is_conflated_and_bounded_fast_client_gets_everything(
        server: tuple[str, FastAPI], url: str, sym: str) -> None:
    ws_url, app = server
    hub = app.state.md.hub
    host, port = ws_url.split("//")[1].split("/")[0].split(":")
    n = 3000
    with connect(ws_url) as fast, contextlib.ExitStack() as stack:
        subscribe(fast, f"book:wst:{sym}", f"ticker:wst:{sym}")
        before = set(hub.queues)
        slow = stack.enter_context(connect(ws_url, sock=slow_socket(host, int(port)),
                                           max_queue=4))
        subscribe(slow, f"book:wst:{sym}")
        (slow_q,) = set(hub.queues) - before

        finals: set[str] = set()

        def fast_done(msgs: list[dict[str, Any]]) -> bool:
            if msgs and n in (msgs[-1]["data"].get("seq"), msgs[-1]["data"].get("count")):
                finals.add(msgs[-1]["channel"])
            return len(finals) == 2

        reader = Reader(fast, fast_done)
        reader.start()
        batch: list[dict[str, Any]] = []
        for i in range(1, n + 1):  # books of 50 levels (~3.5 KB): far more than socket buffers
            batch += [book_record("wst", sym, i, i * 10, levels=50), ticker_record("wst", sym, i)]
            if len(batch) >= 200:
                fill(url, batch)
                batch.clear()
                # Paced by the fast client (it provably keeps up); the slow one never reads.
                wait_until(lambda i=i: reader.last_count >= i or reader.error, timeout=20)
        fill(url, batch)
        # The fast client gets every ticker in order, and books only ever moving forward.
        msgs = reader.result()
        tickers = [m["data"]["count"] for m in msgs if m["channel"].startswith("ticker")]
        seqs = [m["data"]["seq"] for m in msgs if m["channel"].startswith("book")]
        assert tickers == list(range(1, n + 1))
        assert seqs == sorted(set(seqs)) and seqs[-1] == n
        # The slow client, which read nothing meanwhile, never had more than its one book pending.
        assert len(slow_q) <= 1 and slow_q.max_pending <= 2
        assert slow_q.conflated > 0
        got: list[int] = []
        while not got or got[-1] < n:
            got.append(recv(slow)["data"]["seq"])
        assert got == sorted(set(got)) and got[-1] == n
        assert len(got) < n  # conflated: it got the latest, not the backlog


def test_client_that_cannot_keep_up_is_closed_with_a_reason(
        server: tuple[str, FastAPI], url: str, sym: str) -> None:
    ws_url, app = server
    host, port = ws_url.split("//")[1].split("/")[0].split(":")
    n = 20_000  # ~12 MB of tickers against a queue limit of 1000
    with connect(ws_url) as fast, connect(ws_url, sock=slow_socket(host, int(port)),
                                          max_queue=4) as slow:
        subscribe(fast, f"ticker:wst:{sym}")
        subscribe(slow, f"ticker:wst:{sym}")
        reader = Reader(fast, lambda msgs: len(msgs) == n)
        reader.start()
        for start in range(1, n + 1, 200):
            stop = min(start + 200, n + 1)
            fill(url, [ticker_record("wst", sym, i) for i in range(start, stop)])
            wait_until(lambda stop=stop: reader.last_count >= stop - 1 or reader.error, timeout=20)
        assert [m["data"]["count"] for m in reader.result()] == list(range(1, n + 1))
        received = 0
        deadline = time.monotonic() + 20
        with pytest.raises(ConnectionClosed) as closed:
            while time.monotonic() < deadline:
                slow.recv(timeout=10)
                received += 1
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CLOSE_TOO_SLOW
        assert "too slow" in closed.value.rcvd.reason
        assert received < n
    metrics = app.state.registry.get_sample_value("md_api_ws_slow_closes_total")
    assert metrics is not None and metrics >= 1


@pytest.mark.parametrize("bad", [
    "not json", "[]", "42", '{"op": "subscribe"}', '{"op": "dance", "channels": ["book:a:B"]}',
    '{"op": "subscribe", "channels": "book:binance:ETH-USDT"}',
    '{"op": "subscribe", "channels": []}', '{"op": "subscribe", "channels": [1]}',
    '{"op": "subscribe", "channels": ["trades:binance:ETH-USDT"]}',
    '{"op": "subscribe", "channels": ["candles:binance:ETH-USDT:0m"]}',
    '{"op": "subscribe", "channels": ["book:bin ance:ETH-USDT"]}',
    b"\xff\xfe binary",
])
def test_malformed_messages_get_an_error_not_a_dropped_socket(
        server: tuple[str, FastAPI], url: str, sym: str, bad: str | bytes) -> None:
    ws_url, _ = server
    with connect(ws_url) as ws:
        ws.send(bad)
        err = recv(ws)
        assert err["type"] == "error" and isinstance(err["reason"], str) and err["reason"]
        fill(url, [book_record("wst", sym, 3, 3000)])
        subscribe(ws, f"book:wst:{sym}")  # the socket still works
        assert recv(ws)["data"]["seq"] == 3


def test_too_many_channels_and_huge_messages_are_refused(
        server: tuple[str, FastAPI], sym: str) -> None:
    ws_url, _ = server
    with connect(ws_url) as ws:
        ws.send(orjson.dumps({"op": "subscribe",
                              "channels": [f"book:wst:S{i}-X" for i in range(201)]}).decode())
        assert "at most 200" in recv(ws)["reason"]
        ws.send("x" * 70_000)
        assert "larger than" in recv(ws)["reason"]
        subscribe(ws, f"ticker:wst:{sym}")
