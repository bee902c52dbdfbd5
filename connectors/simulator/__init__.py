"""A local exchange simulator speaking each exchange's wire protocol (``marketdata simulate``).

Since no exchange is reachable from here, the tests, the demo and anyone without market access
connect the real feed handlers to this instead: WebSocket + REST on 127.0.0.1, one route per
exchange (see :mod:`connectors.simulator.server`), fed by a synthetic random walk or by the
recorded sessions of ``shared/data`` looped, with faults on command or by probability. It keeps
its own true books, so a test can compare what the pipeline rebuilt with the truth.

>>> sim = start(["okx"], ["BTC-USDT"], rate=0, paused=True)
>>> sim.url("okx").startswith("ws://127.0.0.1:"), sim.feeds()
(True, ['okx:BTC-USDT'])
>>> sim.book("okx", "BTC-USDT"), sim.status("okx")["okx"]["paused"]
({'seq': 1000, 'bids': [], 'asks': []}, True)
>>> sim.stop()
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from connectors.exchanges.recordings import data_dir
from connectors.simulator.server import FAULTS, SimServer, VenueRunner
from connectors.simulator.sources import Item, Synthetic, load_recording, recording_items
from connectors.simulator.venues import VENUES, make_venue

__all__ = ["DEMO_RECORDINGS", "FAULTS", "VENUES", "Simulator", "data_dir", "start", "start_demo"]

# The recorded sessions the demo replays, per exchange (paths under shared/data).
DEMO_RECORDINGS: dict[str, list[str]] = {
    "binance": ["hftbacktest/spot/btcusdt_20240808.gz", "hftbacktest/spot/ethusdt_20240808.gz"],
    "binance_futures": ["hftbacktest/usdm/btcusdt_20240808.gz"],
    "bybit": ["nautilus_trader/xrpusdt-ob500.data.zip"],
    "coinbase": ["cryptofeed/COINBASE.ws.28.0"],
    "kraken": ["cryptofeed/KRAKEN.ws.50.0"],
    "okx": ["cryptofeed/OKX.ws.1.0"],
}


class Simulator:
    """A running simulator (its own thread and event loop); every method is thread-safe."""

    def __init__(self, runners: dict[str, VenueRunner], host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.host = host
        self._loop = asyncio.new_event_loop()
        self._server = SimServer(runners, host, port)
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise RuntimeError(f"simulator failed to start: {self._error}") from self._error
        self.port = self._server.port

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._server.start())
        except BaseException as e:  # reported to the starting thread
            self._error = e
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()

    def _call(self, fn: Any, *args: Any) -> Any:
        async def go() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(go(), self._loop).result(30)

    # -- addresses -----------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """``host:port``, the value of ``MD_SIMULATOR`` for the ingestion flow."""
        return f"{self.host}:{self.port}"

    def url(self, exchange: str) -> str:
        return f"ws://{self.address}/{exchange}/ws"

    def rest_url(self, exchange: str) -> str:
        return f"http://{self.address}/{exchange}"

    def feeds(self) -> list[str]:
        """``ex:SYM`` of every simulated book (the value of ``MD_FEEDS``)."""
        return [f"{ex}:{s}" for ex, r in self._server.runners.items() for s in r.venue.symbols]

    def ingest_env(self) -> dict[str, str]:
        """The ``MD_*`` settings that point the ingestion flow at this simulator."""
        return {"MD_SIMULATOR": self.address, "MD_FEEDS": ",".join(self.feeds())}

    # -- control -------------------------------------------------------------------------------
    def control(self, cmd: str, **query: Any) -> Any:
        """A control command as over HTTP (``status``, ``pause``, ``fault``...); raises on error."""
        q = {k: str(v) for k, v in query.items() if v is not None}
        status, body = self._call(self._server.control, cmd, q)
        if status != 200:
            raise ValueError(body.get("error", body))
        return body

    def inject(self, exchange: str, kind: str, n: int = 1, seconds: float = 2.0) -> None:
        self.control("fault", ex=exchange, kind=kind, n=n, seconds=seconds)

    def set_probs(self, exchange: str | None = None, **probs: float) -> None:
        self.control("probs", ex=exchange, **probs)

    def pause(self, exchange: str | None = None) -> None:
        self.control("pause", ex=exchange)

    def resume(self, exchange: str | None = None) -> None:
        self.control("resume", ex=exchange)

    def book(self, exchange: str, sym: str) -> dict[str, Any]:
        """The true book: ``{"seq", "bids": [[px, qty], ...], "asks": [...]}``, best first."""
        return self.control("book", ex=exchange, sym=sym)

    def status(self, exchange: str | None = None) -> dict[str, Any]:
        return self.control("status", ex=exchange)

    def stop(self) -> None:
        if not self._loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(exchanges: Iterable[str] = tuple(VENUES), symbols: Iterable[str] = ("BTC-USDT",),
          *, rate: float = 50.0, seed: int = 1, levels: int = 10, trade_ratio: float = 0.2,
          paused: bool = False, host: str = "127.0.0.1", port: int = 0) -> Simulator:
    """A simulator with synthetic random-walk books for ``symbols`` on every exchange given.

    ``rate``: items (book changes and trades) per second per exchange; 0 = as fast as the
    clients read. ``paused``: start with the generators stopped (``resume()`` them).
    """
    syms = list(symbols)
    runners: dict[str, VenueRunner] = {}
    for i, ex in enumerate(exchanges):
        src: Iterable[Item] = Synthetic(syms, rate, seed + i, levels, trade_ratio)
        runners[ex] = VenueRunner(make_venue(ex, syms), src, seed=seed + i, paused=paused)
    return Simulator(runners, host, port)


def start_demo(exchanges: Iterable[str] = tuple(DEMO_RECORDINGS), *, speed: float = 1.0,
               loop: bool = True, paused: bool = False, host: str = "127.0.0.1",
               port: int = 0, data: Path | None = None) -> Simulator:
    """Replay the recorded sessions of ``shared/data`` (several exchanges and symbols), looped.

    ``speed``: 1 real time, 10 ten times faster, 0 as fast as the clients read. Times, sequence
    numbers and trade ids are the simulator's own, so each loop continues where the last ended.
    """
    base = data or data_dir()
    exchanges = list(exchanges)
    unknown = [ex for ex in exchanges if ex not in DEMO_RECORDINGS]
    if unknown:
        raise ValueError(f"no recorded session for {', '.join(unknown)} (--demo plays "
                         f"{', '.join(DEMO_RECORDINGS)}; the synthetic mode has every venue)")
    runners: dict[str, VenueRunner] = {}
    for i, ex in enumerate(exchanges):
        rec = load_recording(ex, [base / p for p in DEMO_RECORDINGS[ex]])
        runners[ex] = VenueRunner(make_venue(ex, rec.symbols), recording_items(rec, speed, loop),
                                  seed=7 + i, paused=paused)
    return Simulator(runners, host, port)
