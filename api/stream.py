"""WebSocket push: one Redis pub/sub connection per process, fanned out to bounded client queues.

Clients name channels ``book:{ex}:{SYM}``, ``ticker:{ex}:{SYM}`` and ``candles:{ex}:{SYM}:{iv}``;
each maps to the Redis channel named like its key (``md:`` + the name), on which every Redis write
publishes its record. The :class:`Hub` subscribes a Redis channel while at least one client wants
it, frames each message once and hands it to every interested :class:`ClientQueue` without
awaiting, so a slow client can never slow the others or the reader:

- book channels are conflated: a client holds at most the latest book per channel;
- ticker and candle messages queue in order, up to ``queue_limit`` per client; a client past that
  is closed with code ``4008`` and a reason, instead of growing memory without bound.

On subscribe, a channel first delivers the stored record (``"type": "snapshot"``; candles: the
newest candle),
read after Redis confirmed the subscription so nothing falls between the two; versions (book
``seq`` then ``ts``, ticker ``closeTime`` then ``count``) drop anything older than what a client
was already given, so each client sees every channel move forward only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = [
    "CLOSE_TOO_SLOW",
    "ClientQueue",
    "Hub",
    "StreamSettings",
    "parse_channel",
    "serve_client",
]

log = logging.getLogger(__name__)

CLOSE_TOO_SLOW = 4008
_NAME = r"[A-Za-z0-9_.\-]{1,64}"
_CHANNEL = re.compile(
    rf"^(?:(?P<kind>book|ticker):(?P<ex>{_NAME}):(?P<sym>{_NAME})"
    rf"|candles:(?P<cex>{_NAME}):(?P<csym>{_NAME}):(?P<iv>[1-9][0-9]{{0,3}}[smhdwM]))$"
)

Version = tuple[int, int]


@dataclass(frozen=True)
class StreamSettings:
    """Limits per client; the defaults suit browsers and services on a LAN."""

    queue_limit: int = 1000  # pending ticker/candle messages before the client is closed
    max_channels: int = 200  # channels one client may hold
    max_message_bytes: int = 65536  # a control message larger than this is refused


def parse_channel(name: str) -> tuple[str, str] | None:
    """``(kind, redis channel)`` for a valid client channel name, else ``None``."""
    m = _CHANNEL.match(name)
    if m is None:
        return None
    kind = m.group("kind") or "candles"
    return kind, f"md:{name}"


def record_version(kind: str, rec: dict[str, Any]) -> Version | None:
    """The writer's version of a book or ticker record (see connectors/redis.py); candles: None."""
    try:
        if kind == "book":
            seq = rec.get("seq")
            return (int(seq) if seq is not None else -1, int(rec["ts"]))
        if kind == "ticker":
            return (int(rec["closeTime"]), int(rec["count"]))
    except (KeyError, TypeError, ValueError):
        return None
    return None


def frame(msg_type: str, channel: str, raw: bytes) -> str:
    """The text frame sent to clients, built around the stored JSON without re-encoding it."""
    return f'{{"type":"{msg_type}","channel":"{channel}","data":{raw.decode()}}}'


class ClientQueue:
    """What one client still has to receive: latest-wins slots for books, a bounded FIFO for the
    rest. ``offer`` never blocks (the hub calls it for every client); ``overflowed`` tells the
    sender to close the client."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[Any, str] = OrderedDict()
        self._fifo = 0  # non-conflated items pending
        self._seq = 0
        self.versions: dict[str, Version] = {}
        self.event = asyncio.Event()
        self.overflowed = False
        self.conflated = 0
        self.max_pending = 0
        self.held = 0  # > 0 while a subscribe is in progress: nothing is sent


    def __len__(self) -> int:
        return len(self._items)

    def offer(self, channel: str, conflate: bool, version: Version | None, text: str) -> None:
        if self.overflowed:
            return
        if version is not None:
            last = self.versions.get(channel)
            if last is not None and version < last:
                return
            self.versions[channel] = version
        if conflate:
            if channel in self._items:
                self.conflated += 1
            self._items[channel] = text  # keeps its place in line, carries the latest
        else:
            if self._fifo >= self.limit:
                self.overflowed = True
                self.event.set()
                return
            self._seq += 1
            self._items[self._seq] = text
            self._fifo += 1
        self.max_pending = max(self.max_pending, len(self._items))
        self.event.set()

    def control(self, text: str, first: bool = False) -> None:
        """Queue a reply to the client's own message (exempt from the limit); ``first`` puts it
        ahead of everything pending."""
        self._seq += 1
        key = ("c", self._seq)
        self._items[key] = text
        if first:
            self._items.move_to_end(key, last=False)
        self.event.set()

    def drop_channel(self, channel: str) -> None:
        """Forget a channel's pending book and version (after unsubscribe)."""
        self._items.pop(channel, None)
        self.versions.pop(channel, None)

    def pop(self) -> str | None:
        if not self._items or self.held:
            self.event.clear()
            return None
        key, text = self._items.popitem(last=False)
        if isinstance(key, int):
            self._fifo -= 1
        return text


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.clients = Gauge("md_api_ws_clients", "Connected WebSocket clients", registry=registry)
        self.channels = Gauge("md_api_ws_redis_channels", "Redis channels subscribed by the hub",
                              registry=registry)
        self.received = Counter("md_api_ws_pubsub_messages", "Messages read from Redis pub/sub",
                                registry=registry)
        self.sent = Counter("md_api_ws_sent_messages", "Messages sent to WebSocket clients",
                            registry=registry)
        self.conflated = Counter("md_api_ws_conflated_messages",
                                 "Book updates replaced by a newer one before being sent",
                                 registry=registry)
        self.closed_slow = Counter("md_api_ws_slow_closes",
                                   "Clients closed for not keeping up", registry=registry)


class Hub:
    """The process's single pub/sub reader and its fan-out to client queues."""

    def __init__(self, client: aioredis.Redis, registry: CollectorRegistry,
                 settings: StreamSettings | None = None,
                 pubsub_client: aioredis.Redis | None = None) -> None:
        """``client`` reads snapshots; ``pubsub_client`` (default ``client``) must have no
        socket read timeout shorter than the reader's one-second wait."""
        self.redis = client
        self.pubsub_client = pubsub_client or client
        self.settings = settings or StreamSettings()
        self.metrics = _Metrics(registry)
        self._subs: dict[str, set[ClientQueue]] = {}  # redis channel -> clients
        self._kinds: dict[str, str] = {}
        self.queues: set[ClientQueue] = set()  # connected clients (for status and tests)
        self._refs: dict[str, int] = {}  # sessions holding each channel (attached or about to)
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._control = f"md:api:hub:{uuid.uuid4().hex}"

    async def _ensure_started(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._pubsub = self.pubsub_client.pubsub()
        await self._pubsub.subscribe(self._control)  # gives the reader a connection to read
        self._task = asyncio.create_task(self._run(), name="md-api-pubsub")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()

    async def _run(self) -> None:
        backoff = 0.1
        n = 0
        while True:
            try:
                # A bounded wait, so redis-py's health check (PING) runs on a quiet connection.
                msg = await self._pubsub.get_message(timeout=1.0)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis went away: redis-py reconnects and resubscribes
                log.warning("pub/sub read failed (%s); retrying in %.1fs", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if msg is not None:
                self._dispatch(msg)
                n += 1
                if n % 64 == 0:  # buffered bursts return without yielding: let senders drain
                    await asyncio.sleep(0)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        channel = msg["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        if msg["type"] == "subscribe":
            fut = self._confirmed.get(channel)
            if fut is not None and not fut.done():
                fut.set_result(None)
            return
        if msg["type"] != "message":
            return
        self.metrics.received.inc()
        clients = self._subs.get(channel)
        if not clients:
            return
        kind = self._kinds[channel]
        raw = msg["data"]
        version = record_version(kind, orjson.loads(raw)) if kind != "candles" else None
        text = frame("update", channel[3:], raw)
        conflate = kind == "book"
        for q in clients:
            q.offer(channel, conflate, version, text)

    async def ensure(self, kind: str, channel: str) -> None:
        """Subscribe the Redis channel if no client has it yet; returns once Redis confirmed it,
        so a record read afterwards cannot miss an update published in between."""
        async with self._lock:
            await self._ensure_started()
            if channel not in self._subs:
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._confirmed[channel] = fut
                self._subs[channel] = set()
                self._kinds[channel] = kind
                await self._pubsub.subscribe(channel)
                self.metrics.channels.set(len(self._subs))
            self._refs[channel] = self._refs.get(channel, 0) + 1
            fut = self._confirmed[channel]
        await asyncio.wait_for(asyncio.shield(fut), timeout=10)

    async def attach(self, q: ClientQueue, kind: str, channel: str) -> None:
        """Start delivering ``channel`` (already ``ensure``d) to ``q``: the stored record first
        (candles: the newest), as a snapshot, then the updates."""
        clients = self._subs.get(channel)
        if clients is None:  # every holder left meanwhile (cannot happen while we hold a ref)
            return
        clients.add(q)
        if kind in ("book", "ticker"):
            raw = await self.redis.hget(channel, "data")
            if raw is not None:
                q.offer(channel, kind == "book", record_version(kind, orjson.loads(raw)),
                        frame("snapshot", channel[3:], raw))
        else:  # candles: the newest stored candle (a sorted set by open time, see connectors)
            newest = await self.redis.zrevrange(channel, 0, 0)
            if newest:
                q.offer(channel, False, None, frame("snapshot", channel[3:], newest[0][13:]))

    async def unsubscribe(self, q: ClientQueue, channel: str) -> None:
        """Stop delivering ``channel`` to ``q``; the last session out unsubscribes Redis."""
        async with self._lock:
            q.drop_channel(channel)
            clients = self._subs.get(channel)
            if clients is None:
                return
            clients.discard(q)
            self._refs[channel] = self._refs.get(channel, 1) - 1
            if self._refs[channel] <= 0:
                del self._subs[channel]
                self._refs.pop(channel, None)
                self._kinds.pop(channel, None)
                self._confirmed.pop(channel, None)
                if self._pubsub is not None:
                    await self._pubsub.unsubscribe(channel)
                self.metrics.channels.set(len(self._subs))

    def subscribers(self, channel: str) -> int:
        return len(self._subs.get(channel, ()))


def _error(reason: str, op: Any = None) -> str:
    return orjson.dumps({"type": "error", "op": op, "reason": reason}).decode()


class _Session:
    """One client's control messages (subscribe/unsubscribe) and channel set."""

    def __init__(self, hub: Hub, q: ClientQueue) -> None:
        self.hub, self.q = hub, q
        self.channels: dict[str, str] = {}  # client name -> redis channel

    async def handle(self, text: str) -> str | None:
        """Act on one control message; returns the reply, if not already queued."""
        if len(text) > self.hub.settings.max_message_bytes:
            return _error(f"message larger than {self.hub.settings.max_message_bytes} bytes")
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return _error("not JSON; send {\"op\": \"subscribe\", \"channels\": [...]}")
        if not isinstance(msg, dict):
            return _error("expected a JSON object with 'op' and 'channels'")
        op = msg.get("op")
        if op not in ("subscribe", "unsubscribe"):
            return _error("'op' must be 'subscribe' or 'unsubscribe'", op if isinstance(op, str)
                          else None)
        names = msg.get("channels")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            return _error("'channels' must be a non-empty list of strings", op)
        bad = [n for n in names if parse_channel(n) is None]
        if bad:
            return _error(f"invalid channel name(s) {bad[:5]}: expected book:EX:SYM, "
                          "ticker:EX:SYM or candles:EX:SYM:IV", op)
        if op == "subscribe":
            new = [n for n in dict.fromkeys(names) if n not in self.channels]
            if len(self.channels) + len(new) > self.hub.settings.max_channels:
                return _error(f"at most {self.hub.settings.max_channels} channels per client", op)
            parsed = [(n, *parse_channel(n)) for n in new]  # type: ignore[misc]
            self.q.held += 1  # the acknowledgement goes first, then snapshots and updates
            try:
                for n, kind, channel in parsed:
                    self.channels[n] = channel
                    await self.hub.ensure(kind, channel)
                for _, kind, channel in parsed:
                    await self.hub.attach(self.q, kind, channel)
                self.q.control(orjson.dumps({"type": "subscribed",
                                             "channels": sorted(self.channels)}).decode(),
                               first=True)
            finally:
                self.q.held -= 1
                self.q.event.set()
            return None
        for n in names:
            channel = self.channels.pop(n, None)
            if channel is not None:
                await self.hub.unsubscribe(self.q, channel)
        return orjson.dumps({"type": "unsubscribed", "channels": sorted(self.channels)}).decode()

    async def close(self) -> None:
        for channel in list(self.channels.values()):
            await self.hub.unsubscribe(self.q, channel)
        self.channels.clear()


async def serve_client(hub: Hub, receive_text: Callable[[], Any], send_text: Callable[[str], Any],
                       close: Callable[[int, str], Any]) -> None:
    """Run one client until it disconnects or falls behind. The reader handles control messages
    (answers go through the same queue, so they stay in order with the data); the writer drains
    the queue; the connection ends when either does."""
    q = ClientQueue(hub.settings.queue_limit)
    session = _Session(hub, q)

    async def reader() -> None:
        while True:
            reply = await session.handle(await receive_text())
            if reply is not None:
                q.control(reply)

    async def writer() -> None:
        while True:
            await q.event.wait()
            if q.overflowed:
                hub.metrics.closed_slow.inc()
                await close(CLOSE_TOO_SLOW, f"too slow: more than {q.limit} messages pending")
                return
            text = q.pop()
            if text is not None:
                await send_text(text)
                hub.metrics.sent.inc()

    hub.metrics.clients.inc()
    hub.queues.add(q)
    tasks = [asyncio.create_task(reader()), asyncio.create_task(writer())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            exc = t.exception()
            if exc is not None and not _is_disconnect(exc):
                log.warning("websocket client failed: %r", exc)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        hub.metrics.conflated.inc(q.conflated)
        hub.metrics.clients.dec()
        hub.queues.discard(q)
        await session.close()


def _is_disconnect(exc: BaseException) -> bool:
    return type(exc).__name__ in ("WebSocketDisconnect", "ClientDisconnected", "ConnectionClosed")
