"""The dashboard in headless Chromium against a live API over Redis filled by the real flows.

Needs Debian's ``chromium`` and ``chromium-driver`` (``scripts/install-browser.sh``); fails loudly
without them. Saves ``artifacts/dashboard.png``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from api.app import create_app
from api.server import serving
from api.testing import fill, filled_test_db
from tests.util import wait_until

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def filled(redis_url: str) -> tuple[str, list[dict[str, Any]]]:
    return filled_test_db(redis_url)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.fail(f"{path} missing: run scripts/install-browser.sh")
    profile = tempfile.mkdtemp(prefix="md-chromium-")
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _state(driver: webdriver.Chrome) -> dict[str, Any]:
    return driver.execute_script(
        "const s = window.mdState || {}; return {ready: !!s.ready, connected: !!s.connected, "
        "bookUpdates: s.bookUpdates || 0, seq: s.book ? s.book.seq : null, "
        "interval: s.interval, candleBars: s.candleBars || 0, "
        "lastT: s.lastCandle ? s.lastCandle.t : null, lastClose: s.lastCandle ? s.lastCandle.c "
        ": null, errors: s.errors || []}")


def _text(driver: webdriver.Chrome, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def test_dashboard_shows_and_follows_live_data(
        filled: tuple[str, list[dict[str, Any]]], browser: webdriver.Chrome) -> None:
    url, records = filled
    last_book = [r for r in records if r["type"] == "book"][-1]
    last_ticker = [r for r in records if r["type"] == "ticker"][-1]
    candles_1m = {r["t"]: r for r in records if r["type"] == "candle" and r["iv"] == "1m"}
    candles_1h = {r["t"] for r in records if r["type"] == "candle" and r["iv"] == "1h"}
    with serving(create_app(url)) as base:
        browser.get(f"{base}/?ex=binance&sym=ETH-USDT")
        wait_until(lambda: (s := _state(browser))["connected"] and s["bookUpdates"] >= 1,
                   timeout=20, message="dashboard connected and showed the stored book")
        # The stored state, exactly as printed by the flows.
        assert _text(browser, "#bids tr:first-child td.px") == last_book["bids"][0][0]
        assert _text(browser, "#asks tr:last-child td.px") == last_book["asks"][0][0]
        assert _text(browser, "#book-seq") == str(last_book["seq"])
        assert _text(browser, "#book-status") == "ok"
        assert _text(browser, "#t-last") == last_ticker["lastPrice"]
        assert _state(browser)["candleBars"] == len(candles_1m)

        # Live: a newer book (stale, new best bid) reaches the ladder and the status badge.
        new_book = {**last_book, "seq": last_book["seq"] + 1, "ts": last_book["ts"] + 100,
                    "status": "stale",
                    "bids": [["2682.49000000", "7.00000000"], *last_book["bids"][1:]]}
        fill(url, [new_book])
        wait_until(lambda: _text(browser, "#bids tr:first-child td.px") == "2682.49000000",
                   timeout=10, message="ladder shows the pushed best bid")
        assert _text(browser, "#book-status") == "stale"
        assert _text(browser, "#book-seq") == str(new_book["seq"])

        # Interval switching reloads the chart from REST.
        browser.find_element(By.CSS_SELECTOR, '#intervals button[data-iv="1h"]').click()
        wait_until(lambda: (s := _state(browser))["interval"] == "1h"
                   and s["candleBars"] == len(candles_1h), timeout=10, message="1h candles shown")
        browser.find_element(By.CSS_SELECTOR, '#intervals button[data-iv="1m"]').click()
        wait_until(lambda: _state(browser)["candleBars"] == len(candles_1m), timeout=10,
                   message="back on 1m")

        # Live: a new 1m candle and a newer ticker reach the chart and the ticker panel.
        t = max(candles_1m) + 60_000
        new_candle = {"type": "candle", "ex": "binance", "sym": "ETH-USDT", "iv": "1m", "t": t,
                      "T": t + 59_999, "o": "2682.50000000", "h": "2690.00000000",
                      "l": "2681.00000000", "c": "2689.99000000", "v": "12.50000000",
                      "q": "33600.0000000000000000", "n": 40, "closed": False}
        new_ticker = {**last_ticker, "closeTime": last_ticker["closeTime"] + 60_000,
                      "count": last_ticker["count"] + 40, "lastPrice": "2689.99000000"}
        fill(url, [new_candle, new_ticker])
        wait_until(lambda: _state(browser)["lastT"] == t, timeout=10,
                   message="the new candle reached the chart")
        state = _state(browser)
        assert state["candleBars"] == len(candles_1m) + 1
        assert state["lastClose"] == "2689.99000000"
        wait_until(lambda: _text(browser, "#t-last") == "2689.99000000", timeout=10,
                   message="ticker panel updated")
        assert "2689.99000000" in _text(browser, "#candle-info")
        assert _text(browser, "#conn") == "live"
        assert _text(browser, "#data-age").endswith(" d")  # recorded in 2024: days old
        assert _text(browser, "#push-age").endswith(" s")
        assert state["errors"] == []
        # Both charts drew something (lightweight-charts renders into canvases).
        assert len(browser.find_elements(By.CSS_SELECTOR, "#candle-chart canvas")) > 0
        assert len(browser.find_elements(By.CSS_SELECTOR, "#depth-chart canvas")) > 0
        ARTIFACTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
