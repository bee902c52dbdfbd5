"""The simulator's server: WebSocket + REST + a control API on one port, asyncio (``websockets``).

Routes (``{ex}`` is a venue name such as ``binance``):

- ``ws://HOST:PORT/{ex}[/anything]``: that exchange's WebSocket feed.
- ``http://HOST:PORT/{ex}/<exchange REST path>``: its REST answers (Binance depth snapshots).
- ``http://HOST:PORT/_sim/...``: control, JSON answers (GET or POST, parameters in the query):
  ``status``; ``book?ex=&sym=`` (the true book); ``fault?ex=&kind=&n=1&seconds=2``;
  ``pause[?ex=]``; ``resume[?ex=]``; ``probs?ex=&drop=0.01&...`` (fault probabilities).

Faults act on one connection's book frames, as it sends them: ``drop`` (a sequence gap),
``duplicate``, ``reorder`` (swapped with the next frame of the same symbol), ``corrupt``
(truncated JSON), ``bad_checksum`` (Kraken, OKX), ``disconnect`` (TCP abort), ``stall`` (nothing
sent for ``seconds``, the connection kept open, frames of that time lost). A queued fault is taken
by the next book frame of any connection of the venue; probabilities are rolled per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from connectors.simulator.sources import Item
from connectors.simulator.venues import Out, Venue
from operators.fixed import to_units

__all__ = ["FAULTS", "SimServer", "VenueRunner"]

log = logging.getLogger(__name__)

FAULTS = ("drop", "duplicate", "reorder", "corrupt", "bad_checksum", "disconnect", "stall")
QUEUE_HIGH = 2000  # frames queued for a connection before the generator waits (full speed)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Conn:
    """One client connection: its subscriptions, outgoing queue and fault state."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.q: asyncio.Queue[Out | None] = asyncio.Queue()
        self.subs: set[str] = set()
        self.n = 0  # per-connection message number (Coinbase sequence_num)
        self.held: Out | None = None  # a frame held back by ``reorder``
        self.stall_until = 0.0


class VenueRunner:
    """Plays a source into one venue and fans its frames out to the venue's connections."""

    def __init__(self, venue: Venue, source: Iterable[Item], seed: int = 7,
                 paused: bool = False) -> None:
        self.venue = venue
        self.source = source
        self.conns: set[_Conn] = set()
        self.pending: deque[tuple[str, float]] = deque()
        self.probs: dict[str, float] = {}
        self.stall_s = 2.0
        self.rng = random.Random(seed)
        self.stats: Counter[str] = Counter()
        self.trades: dict[str, list[Any]] = {}  # sym -> [count, volume units, last px, last id]
        self.running = asyncio.Event()
        if not paused:
            self.running.set()
        self.done = False

    # -- generation ----------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        it: Iterator[Item] = iter(self.source)
        next_at = loop.time()
        n = 0
        for item in it:
            if not self.running.is_set():
                await self.running.wait()
                next_at = loop.time()
            if item.delay > 0:
                next_at += item.delay
                wait = next_at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                elif wait < -1.0:  # far behind (paused, slow host): do not burst to catch up
                    next_at = loop.time()
                if not self.running.is_set():
                    await self.running.wait()
                    next_at = loop.time()
            elif not self.conns:  # full speed with nobody listening: idle, do not spin
                await asyncio.sleep(0.01)
            else:
                n += 1
                if n % 64 == 0:
                    await asyncio.sleep(0)
            self.emit(item)
            while any(c.q.qsize() > QUEUE_HIGH for c in self.conns):
                await asyncio.sleep(0.001)
        self.done = True

    def emit(self, item: Item) -> None:
        """Apply ``item`` to the truth, queue its frames; no await, so atomic for subscribers."""
        v, ts = self.venue, now_ms()
        targets = [c for c in self.conns if item.sym in c.subs]
        if item.kind == "book":
            prev, seq = v.apply(item.sym, ts, item.bids, item.asks)
            outs = v.update(item.sym, ts, prev, seq, item.bids, item.asks)
            self.stats["book_changes"] += 1
        else:
            tid = v.next_trade_id()
            outs = v.trade(item.sym, ts, tid, item.px, item.qty, item.side)
            t = self.trades.setdefault(item.sym, [0, 0, "", 0])
            t[0] += 1
            t[1] += to_units(item.qty)
            t[2], t[3] = item.px, tid
            self.stats["trades"] += 1
        for c in targets:
            for o in outs:
                c.q.put_nowait(o)

    # -- faults ----------------------------------------------------------------------------------
    def take_fault(self) -> tuple[str, float] | None:
        if self.pending:
            return self.pending.popleft()
        for kind, p in self.probs.items():
            if p > 0 and self.rng.random() < p:
                return kind, self.stall_s
        return None

    # -- connections -------------------------------------------------------------------------------
    async def serve(self, ws: ServerConnection) -> None:
        conn = _Conn(ws)
        self.conns.add(conn)
        self.stats["connections"] += 1
        writer = asyncio.create_task(self._writer(conn))
        try:
            for text in self.venue.welcome():
                conn.q.put_nowait(Out("ctl", "", text))
            async for message in ws:
                self._on_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            self.conns.discard(conn)
            conn.q.put_nowait(None)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await writer

    def _on_message(self, conn: _Conn, message: str | bytes) -> None:
        try:
            msg = orjson.loads(message)
        except orjson.JSONDecodeError:
            if message in ("ping", b"ping"):  # OKX's text keep-alive
                conn.q.put_nowait(Out("ctl", "", "pong"))
            return
        if not isinstance(msg, dict):
            return
        try:
            syms, answers = self.venue.on_message(msg)
        except (KeyError, TypeError, ValueError) as e:
            conn.q.put_nowait(Out("ctl", "", orjson.dumps({"error": str(e)}).decode()))
            return
        for a in answers:
            conn.q.put_nowait(Out("ctl", "", a))
        for s in syms:
            if s not in self.venue.books:
                continue
            conn.subs.add(s)
            self.stats["subscriptions"] += 1
            snaps = self.venue.snapshot(s, now_ms())
            if snaps:
                self.stats["snapshots"] += 1
            for o in snaps:
                conn.q.put_nowait(o)

    def _number(self, conn: _Conn, text: str) -> str:
        """Stamp as the frame leaves the venue: a frame lost afterwards leaves a hole."""
        conn.n += 1
        return self.venue.stamp(text, conn.n)

    async def _send(self, conn: _Conn, text: str) -> None:
        await conn.ws.send(text)
        self.stats["frames"] += 1

    async def _writer(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                out = await asyncio.wait_for(conn.q.get(), timeout=1.0)
            except TimeoutError:
                beat = self.venue.heartbeat()
                if beat is not None and loop.time() >= conn.stall_until:
                    await self._send(conn, self._number(conn, beat))
                continue
            if out is None:
                return
            text = self._number(conn, out.text)
            if loop.time() < conn.stall_until:
                self.stats["stalled_frames"] += 1
                continue
            if out.kind != "book":
                await self._send(conn, text)
                continue
            if conn.held is not None and conn.held.sym == out.sym:
                held, conn.held = conn.held, None
                await self._send(conn, text)
                await self._send(conn, held.text)
                continue
            fault = self.take_fault()
            if fault is None:
                await self._send(conn, text)
                continue
            kind, seconds = fault
            self.stats[f"fault_{kind}"] += 1
            if kind == "drop":
                continue
            if kind == "duplicate":
                await self._send(conn, text)
                await self._send(conn, text)
            elif kind == "reorder":
                conn.held = Out(out.kind, out.sym, text)
            elif kind == "corrupt":
                await self._send(conn, text[: len(text) // 2])
            elif kind == "bad_checksum":
                await self._send(conn, self.venue.bad_checksum(text) or text)
            elif kind == "stall":
                conn.stall_until = loop.time() + seconds
            elif kind == "disconnect":
                conn.ws.transport.abort()
                return

    def status(self) -> dict[str, Any]:
        v = self.venue
        return {"exchange": v.exchange, "symbols": v.symbols, "paused": not self.running.is_set(),
                "connections": len(self.conns), "seq": dict(v.seq), "stats": dict(self.stats),
                "trades": {s: {"count": t[0], "volume_units": str(t[1]), "last_px": t[2],
                               "last_id": t[3]} for s, t in self.trades.items()},
                "pending_faults": len(self.pending), "probs": self.probs}


class SimServer:
    """The venues behind one port (see the module docstring)."""

    def __init__(self, runners: dict[str, VenueRunner], host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.runners = runners
        self.host, self.port = host, port
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> int:
        self._server = await serve(self._handle, self.host, self.port,
                                   process_request=self._process_request,
                                   ping_interval=None, max_size=None, compression=None)
        self.port = self._server.sockets[0].getsockname()[1]
        self._tasks = [asyncio.create_task(r.run()) for r in self.runners.values()]
        return self.port

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _runner(self, path: str) -> VenueRunner | None:
        return self.runners.get(path.strip("/").split("/", 1)[0])

    async def _handle(self, ws: ServerConnection) -> None:
        runner = self._runner(urlsplit(ws.request.path).path)  # type: ignore[union-attr]
        if runner is None:
            await ws.close(1008, "unknown venue")
            return
        await runner.serve(ws)

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        url = urlsplit(request.path)
        query = dict(parse_qsl(url.query))
        if url.path.startswith("/_sim/"):
            status, body = self.control(url.path[len("/_sim/"):], query)
        else:
            runner = self._runner(url.path)
            rest = None
            if runner is not None:
                sub = "/" + url.path.strip("/").split("/", 1)[-1]
                rest = runner.venue.rest(sub, query, now_ms())
                if rest is not None and "lastUpdateId" in rest:
                    runner.stats["snapshots"] += 1
                    runner.stats["rest_snapshots"] += 1
            status, body = (200, rest) if rest is not None else (404, {"error": "not found"})
        resp = conn.respond(status, orjson.dumps(body).decode())
        del resp.headers["Content-Type"]
        resp.headers["Content-Type"] = "application/json"
        return resp

    def control(self, cmd: str, q: dict[str, str]) -> tuple[int, Any]:
        """One control command (also called in-process by ``connectors.simulator.Simulator``)."""
        ex = q.get("ex")
        if ex is not None and ex not in self.runners:
            return 404, {"error": f"no venue {ex!r}"}
        chosen = [self.runners[ex]] if ex else list(self.runners.values())
        if cmd == "status":
            return 200, {r.venue.exchange: r.status() for r in chosen}
        if cmd == "pause":
            for r in chosen:
                r.running.clear()
            return 200, {"paused": [r.venue.exchange for r in chosen]}
        if cmd == "resume":
            for r in chosen:
                r.running.set()
            return 200, {"resumed": [r.venue.exchange for r in chosen]}
        if cmd == "book":
            sym = q.get("sym", "")
            if ex is None or sym not in self.runners[ex].venue.books:
                return 404, {"error": "need ex and a known sym"}
            return 200, self.runners[ex].venue.truth(sym)
        if cmd == "fault":
            kind = q.get("kind", "")
            if kind not in FAULTS or ex is None:
                return 400, {"error": f"need ex and kind, one of {', '.join(FAULTS)}"}
            if kind == "bad_checksum" and not self.runners[ex].venue.has_checksum:
                return 400, {"error": f"{ex} sends no checksums"}
            for _ in range(int(q.get("n", "1"))):
                self.runners[ex].pending.append((kind, float(q.get("seconds", "2"))))
            return 200, {"queued": kind, "ex": ex}
        if cmd == "probs":
            for r in chosen:
                for kind in FAULTS:
                    if kind in q and (kind != "bad_checksum" or r.venue.has_checksum):
                        r.probs[kind] = float(q[kind])
                if "seconds" in q:
                    r.stall_s = float(q["seconds"])
            return 200, {r.venue.exchange: r.probs for r in chosen}
        return 404, {"error": f"unknown command {cmd!r}"}
