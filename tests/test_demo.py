"""The one-command demo, headless and bounded: it must fill Redis and the API with fresh, sane
state from the simulator through ingestion and the three flows, then stop everything on Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from connectors.redis import read_book, read_candles, read_ticker
from tests.flowrun import ROOT
from tests.util import free_port, wait_until

pytestmark = pytest.mark.integration


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _try_get(url: str) -> dict | None:
    """``_get``, or ``None`` while nothing listens yet (the API starts after the flows)."""
    try:
        return _get(url)
    except OSError:
        return None


def test_demo_runs_headless_and_stops_cleanly(redis_url: str, kafka_bootstrap: str,
                                              tmp_path: Path) -> None:
    port = free_port()
    started_ms = time.time() * 1000
    env = {"MD_STATE_DIR": str(tmp_path), "MD_REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-m", "marketdata.cli", "demo", "--no-view",
                             "--duration", "300", "--api-port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = redis.Redis.from_url(redis_url)
    try:
        def fresh_book() -> dict | None:
            b = read_book(client, "binance", "ETH-USDT")
            # written by this demo (not left by an earlier run), and recent
            return b if b and b["status"] == "ok" and b["ts"] >= started_ms \
                and time.time() * 1000 - b["ts"] < 15_000 else None
        book = wait_until(fresh_book, timeout=150, interval=0.2,
                          message=f"a fresh binance:ETH-USDT book; logs in {tmp_path}/logs")
        # a sane book: best bid below best ask, each side sorted best first
        bids = [Decimal(p) for p, _ in book["bids"]]
        asks = [Decimal(p) for p, _ in book["asks"]]
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
        # the API serves what Redis holds (or newer), the book keeps moving forward
        api = f"http://127.0.0.1:{port}"
        wait_until(lambda: _try_get(f"{api}/healthz"), timeout=60, message="API healthy")
        served = _get(f"{api}/v1/book/binance/ETH-USDT")
        assert served["seq"] >= book["seq"] and served["sym"] == "ETH-USDT"
        wait_until(lambda: read_book(client, "binance", "ETH-USDT")["seq"] > served["seq"],
                   timeout=30, message="the book keeps updating")
        # candles and tickers from the same trades
        tick = wait_until(lambda: read_ticker(client, "binance", "ETH-USDT"), timeout=60,
                          message="a ticker")
        assert tick["count"] > 0 and Decimal(tick["lowPrice"]) <= Decimal(tick["highPrice"])
        candles = wait_until(lambda: read_candles(client, "binance", "ETH-USDT", "1m"),
                             timeout=60, message="1m candles")
        for c in candles:
            assert c["t"] % 60_000 == 0 and c["T"] == c["t"] + 59_999
            assert Decimal(c["l"]) <= min(Decimal(c["o"]), Decimal(c["c"]))
        symbols = _get(f"{api}/v1/symbols")
        assert "binance" in json.dumps(symbols) and "kraken" in json.dumps(symbols)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()[-3000:]
    assert b"stopped" in out
    # everything the demo started is gone: the API port is free again
    import socket
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    # its own topics too (each run makes three, and the in-memory broker kept them all), and it
    # said how to point the doctor at this session's flows
    import re

    from confluent_kafka.admin import AdminClient

    prefix = re.search(rb"this run's topics: (\S+)book,", out)
    assert prefix is not None, out.decode()[-3000:]
    topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    assert not [t for t in topics if t.startswith(prefix.group(1).decode())]
