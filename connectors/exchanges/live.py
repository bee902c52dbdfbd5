"""The live transport: one WebSocket connection driving one feed handler (``websocket-client``).

:class:`LiveFeed` connects, sends the handler's subscriptions, hands every frame to the handler
with its receive time, and keeps the books in sync the way each exchange asks:

- REST protocols (Binance): every symbol the handler lists in ``resync_needed()`` gets its depth
  snapshot fetched (stdlib ``urllib``) while later frames wait in the socket; a refused (too old)
  or failed snapshot is fetched again after ``snapshot_retry_s``.
- In-band protocols (Bybit, Coinbase, Kraken, OKX): the book comes with a (re)subscription, so a
  resync is a reconnection; symbols still waiting get ``resync_timeout_s`` before the next one.
- Every (re)connection starts from new snapshots (``Handler.on_connect``): frames lost while
  disconnected cannot be rewound.
- Reconnection with capped exponential backoff and jitter (``min(max, initial·2^n)·U(0.5, 1)``,
  ``n`` reset once a connection delivered frames); WebSocket pings every ``ping_interval_s``
  (server pings are answered by the library); a staleness watchdog reconnects when no frame came
  for ``stale_after_s``.
- Optional recording of the raw frames in the cryptofeed format of ``shared/data``
  (``<name>.ws.N.0`` plus ``<name>.http.0.0`` for REST answers), replayable with
  ``marketdata normalize``; receive times are strictly increasing and the handler sees the same
  ``rts`` as the recording, so a replay reproduces the live events exactly.

Events (canonical dicts and dead letters) queue in :attr:`LiveFeed.events` for a consumer
(the ingestion dataflow) to :meth:`LiveFeed.drain`; the queue is bounded (the reader waits).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import websocket

from connectors.exchanges import HANDLERS
from connectors.exchanges.base import Handler
from connectors.exchanges.coinbase import CoinbaseHandler

__all__ = [
    "DEFAULT_ENDPOINTS",
    "Endpoint",
    "FeedOptions",
    "LiveFeed",
    "Recorder",
    "backoff_delay",
    "endpoint_for",
    "make_handler",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    """Where an exchange's WebSocket feed and REST API (if it needs one) are."""

    ws: str
    rest: str = ""


DEFAULT_ENDPOINTS: dict[str, Endpoint] = {
    "binance": Endpoint("wss://stream.binance.com:9443/stream", "https://api.binance.com"),
    "binance_futures": Endpoint("wss://fstream.binance.com/stream", "https://fapi.binance.com"),
    "bybit": Endpoint("wss://stream.bybit.com/v5/public/spot"),
    "coinbase": Endpoint("wss://advanced-trade-ws.coinbase.com"),
    "kraken": Endpoint("wss://ws.kraken.com"),
    "kraken_v2": Endpoint("wss://ws.kraken.com/v2"),
    "okx": Endpoint("wss://ws.okx.com:8443/ws/v5/public"),
}


def endpoint_for(exchange: str, simulator: str = "",
                 overrides: Mapping[str, str] | None = None) -> Endpoint:
    """The endpoint of ``exchange``: an explicit override (``ws_url`` or ``ws_url|rest_url``),
    else the simulator at ``host:port`` if given, else the exchange itself."""
    spec = (overrides or {}).get(exchange)
    if spec:
        ws, _, rest = spec.partition("|")
        return Endpoint(ws, rest)
    if simulator:
        return Endpoint(f"ws://{simulator}/{exchange}/ws", f"http://{simulator}/{exchange}")
    if exchange not in DEFAULT_ENDPOINTS:
        raise ValueError(f"no endpoint known for {exchange!r}")
    return DEFAULT_ENDPOINTS[exchange]


def make_handler(exchange: str) -> Handler:
    """A fresh handler for a live connection (Coinbase: Advanced Trade, which numbers frames),
    numbering the books of feeds without a sequence above any earlier run's (``seq_base``)."""
    if exchange == "coinbase":
        h: Handler = CoinbaseHandler(api="advanced")
    else:
        cls = HANDLERS.get(exchange)
        if cls is None:
            raise ValueError(
                f"unknown exchange {exchange!r}; one of {', '.join(sorted(HANDLERS))}")
        h = cls()
    h.seq_base = time.time_ns() // 1000  # < 2**53 (exact in any JSON reader) until 2255
    return h


@dataclass(frozen=True)
class FeedOptions:
    """Timing and recording of a live connection (seconds)."""

    ping_interval_s: float = 10.0
    stale_after_s: float = 30.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    connect_timeout_s: float = 10.0
    resync_timeout_s: float = 10.0
    snapshot_retry_s: float = 1.0
    record_path: str = ""  # e.g. rec/binance.ws.1.0 ("" = no recording)
    max_queue: int = 100_000


def backoff_delay(attempt: int, initial: float, cap: float, rng: random.Random) -> float:
    """Capped exponential backoff with jitter: ``min(cap, initial·2^attempt)·U(0.5, 1)``."""
    return min(cap, initial * (2 ** min(attempt, 30))) * rng.uniform(0.5, 1.0)


def _sec(ns: int) -> str:
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


class Recorder:
    """Raw frames in the cryptofeed format of ``shared/data`` (``*.ws.N.0`` + ``*.http.0.0``)."""

    def __init__(self, ws_path: str | Path) -> None:
        p = Path(ws_path)
        if ".ws." not in p.name:
            raise ValueError(f"recording name must look like NAME.ws.1.0, not {p.name!r}")
        p.parent.mkdir(parents=True, exist_ok=True)
        self.ws_path = p
        self.http_path = p.with_name(p.name.split(".ws.", 1)[0] + ".http.0.0")
        self._ws: IO[str] = open(p, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._http: IO[str] | None = None

    def connect(self, url: str, ns: int) -> None:
        self._ws.write(f"{url} <-> {_sec(ns)}\n")

    def sent(self, url: str, ns: int, text: str) -> None:
        self._ws.write(f"{url} <- {_sec(ns)}: {text}\n")

    def frame(self, ns: int, raw: str) -> None:
        self._ws.write(f"{_sec(ns)}: {raw}\n")

    def rest(self, url: str, ns: int, body: str) -> None:
        if self._http is None:
            self._http = open(self.http_path, "a", encoding="utf-8")  # noqa: SIM115
        self._http.write(f"{url} -> {_sec(ns)}: {body}\n")

    def flush(self) -> None:
        self._ws.flush()
        if self._http is not None:
            self._http.flush()

    def close(self) -> None:
        self._ws.close()
        if self._http is not None:
            self._http.close()


class _Reconnect(Exception):
    """End this connection and open a new one (stale, resync, server closed)."""


class LiveFeed:
    """One exchange connection for ``symbols`` (canonical ``BASE-QUOTE``), run in a thread."""

    def __init__(self, exchange: str, symbols: list[str], endpoint: Endpoint,
                 options: FeedOptions | None = None, handler: Handler | None = None,
                 seed: int | None = None) -> None:
        self.exchange = exchange
        self.symbols = list(symbols)
        self.endpoint = endpoint
        self.options = options or FeedOptions()
        self.handler = handler or make_handler(exchange)
        self.events: deque[dict[str, Any]] = deque()
        self.stats: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_ns = 0
        self._pending: dict[str, float] = {}  # symbol -> monotonic time of the next attempt
        self._recorder = Recorder(self.options.record_path) if self.options.record_path else None
        self._rest = self.handler.snapshot_request(self.symbols[0]) is not None \
            if self.symbols else False
        self.error: BaseException | None = None
        self.connected = False  # for metrics and the doctor (read from other threads)
        self.last_frame_ms = 0  # wall time of the last frame received

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> LiveFeed:
        if self._recorder is not None:  # what `normalize_files(..., seq_base=)` needs to match
            log.info("%s: recording frames to %s; books numbered from seq_base %d",
                     self.exchange, self.options.record_path, self.handler.seq_base)
        self._thread = threading.Thread(target=self.run, name=f"feed-{self.exchange}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None

    def drain(self, max_items: int = 1000) -> list[dict[str, Any]]:
        """Up to ``max_items`` queued events, oldest first (safe from another thread)."""
        out: list[dict[str, Any]] = []
        pop = self.events.popleft
        try:
            for _ in range(max_items):
                out.append(pop())
        except IndexError:
            pass
        return out

    def run(self) -> None:
        """Connect, read, reconnect until :meth:`stop` (the thread's body)."""
        attempt = 0
        o = self.options
        while not self._stop.is_set():
            delivered = False
            try:
                delivered = self._session()
            except _Reconnect as e:
                delivered = bool(e.args and e.args[-1])
                log.info("%s: reconnecting: %s", self.exchange, e.args[0] if e.args else "")
            except (OSError, websocket.WebSocketException) as e:
                self.stats["errors"] += 1
                log.warning("%s: connection failed: %s: %s", self.exchange, type(e).__name__, e)
            except Exception as e:  # a bug must not end ingestion silently: log, back off, retry
                self.stats["errors"] += 1
                self.error = e
                log.exception("%s: unexpected error", self.exchange)
            if self._stop.is_set():
                break
            attempt = 0 if delivered else attempt + 1
            self.stats["reconnects"] += 1
            self._stop.wait(backoff_delay(attempt, o.backoff_initial_s, o.backoff_max_s,
                                          self._rng))
        if self._recorder is not None:
            self._recorder.flush()

    # -- one connection --------------------------------------------------------------------------
    def _ns(self) -> int:
        ns = time.time_ns()
        if ns <= self._last_ns:
            ns = self._last_ns + 1
        self._last_ns = ns
        return ns

    def _emit(self, events: list[dict[str, Any]]) -> None:
        while len(self.events) > self.options.max_queue and not self._stop.is_set():
            self.stats["queue_full_waits"] += 1
            time.sleep(0.01)  # backpressure: the consumer is behind; the socket buffers meanwhile
        self.events.extend(events)

    def _session(self) -> bool:
        o, h, rec, url = self.options, self.handler, self._recorder, self.endpoint.ws
        ws = websocket.create_connection(url, timeout=o.connect_timeout_s,
                                         skip_utf8_validation=True, enable_multithread=False)
        delivered = False
        try:
            self.connected = True
            self.stats["connects"] += 1
            h.on_connect()
            if rec is not None:
                rec.connect(url, self._ns())
            for m in h.subscribe_messages(self.symbols):
                ws.send(m)
                if rec is not None:
                    rec.sent(url, self._ns(), m)
            ws.settimeout(0.05)
            now = time.monotonic()
            last_frame = last_ping = last_flush = now
            self._pending = {} if self._rest else \
                {s: now + o.resync_timeout_s for s in self.symbols}
            while not self._stop.is_set():
                try:
                    data = ws.recv()
                except websocket.WebSocketTimeoutException:
                    data = None
                except websocket.WebSocketConnectionClosedException as e:
                    self.stats["disconnects"] += 1
                    raise _Reconnect(f"closed by the server: {e}", delivered) from e
                now = time.monotonic()
                if data:
                    last_frame = now
                    self.last_frame_ms = time.time_ns() // 1_000_000
                    delivered = True
                    if data != "pong" and data != b"pong":
                        self.stats["frames"] += 1
                        ns = self._ns()
                        if rec is not None:
                            rec.frame(ns, data if isinstance(data, str) else data.decode())
                        out = h.on_frame(data, ns // 1_000_000)
                        if out:
                            self._emit(out)
                if now - last_frame > o.stale_after_s:
                    self.stats["stale"] += 1
                    raise _Reconnect(f"no frame for {o.stale_after_s:g} s", delivered)
                if o.ping_interval_s and now - last_ping >= o.ping_interval_s:
                    ws.ping()
                    last_ping = now
                if rec is not None and now - last_flush >= 1.0:
                    rec.flush()
                    last_flush = now
                self._resync(now, delivered)
            return delivered
        finally:
            self.connected = False
            ws.close(timeout=0.2)

    def _resync(self, now: float, delivered: bool) -> None:
        need = self.handler.resync_needed()
        if self._rest and len(self.handler.books) < len(self.symbols):
            # a symbol without any diff yet (a quiet market) still gets its snapshot
            need = sorted({*need, *(s for s in self.symbols if s not in self.handler.books)})
        if self._pending:  # a symbol back in sync is free to resync at once next time
            for s in [s for s in self._pending if s not in need]:
                del self._pending[s]
        if not need:
            return
        due = [s for s in need if self._pending.get(s, 0.0) <= now]
        if not due:
            return
        if not self._rest:
            self.stats["resync_reconnects"] += 1
            raise _Reconnect(f"resync {', '.join(due)}", delivered)
        for sym in due:
            self._pending[sym] = now + self.options.snapshot_retry_s
            self._fetch_snapshot(sym)

    def _fetch_snapshot(self, sym: str) -> None:
        path = self.handler.snapshot_request(sym)
        if path is None:
            return
        url = self.endpoint.rest.rstrip("/") + path
        try:
            with urllib.request.urlopen(url, timeout=self.options.connect_timeout_s) as r:
                body = r.read().decode("utf-8")
        except (OSError, urllib.error.URLError) as e:
            self.stats["rest_errors"] += 1
            log.warning("%s: snapshot %s failed: %s", self.exchange, url, e)
            return
        self.stats["rest_snapshots"] += 1
        ns = self._ns()
        if self._recorder is not None:
            self._recorder.rest(url, ns, body)
        out = self.handler.on_snapshot(sym, body, ns // 1_000_000)
        if out:
            self._emit(out)
