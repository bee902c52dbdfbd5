"""The ingestion flow: exchange WebSockets → feed handlers → Kafka ``md.book`` / ``md.trades``.

Run: ``python -m bytewax.run dataflows.ingest:flow`` (or ``marketdata ingest``), configured by
:class:`IngestConfig` (``MD_*``). One source partition per exchange connection, spread over the
workers by Bytewax; each runs a :class:`connectors.exchanges.live.LiveFeed` (its own thread:
connect, subscribe, snapshot, resync, reconnect) and the events it normalizes go out keyed
``ex:SYM`` through the idempotent :class:`connectors.kafka.KafkaSink`; dead letters go to
``md.deadletter``.

No resume state: a WebSocket cannot rewind, so after a restart each connection re-subscribes and
takes new snapshots, and the sequence checks downstream see a snapshot replacing the book. Nothing
is lost that a snapshot does not restore; trades sent while the flow was down are lost (the
exchanges' trade streams are not replayable either).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.exchanges import HANDLERS
from connectors.exchanges.base import valid_key
from connectors.exchanges.live import FeedOptions, LiveFeed, endpoint_for
from dataflows import metrics
from dataflows.config import CommonConfig, from_env
from marketdata import heartbeat

__all__ = ["IngestConfig", "IngestSource", "build", "connections", "register"]

log = logging.getLogger(__name__)

Item = tuple[str, str, bytes]  # (kind: book | trade | deadletter, key ex:SYM, JSON value)
IDLE = timedelta(milliseconds=5)


@dataclass(frozen=True)
class IngestConfig(CommonConfig):
    """The ingestion flow (``dataflows.ingest``); each field's variable is ``MD_`` + its name."""

    feeds: list[str] = field(default_factory=lambda: ["binance:BTC-USDT", "binance:ETH-USDT"])
    simulator: str = ""  # host:port of `marketdata simulate`: every exchange connects there
    endpoints: list[str] = field(default_factory=list)  # "ex=ws_url|rest_url" overrides
    connections_per_exchange: int = 1  # symbols of an exchange split over this many sockets
    ping_interval_ms: int = 10_000
    stale_after_ms: int = 30_000
    backoff_initial_ms: int = 500
    backoff_max_ms: int = 30_000
    resync_timeout_ms: int = 10_000
    record_dir: str = ""  # record every connection's raw frames here (cryptofeed format)
    stats_interval_ms: int = 30_000  # log each connection's counters this often (0: never)

    def __post_init__(self) -> None:
        """Refuse at once what the feeds would fail on later, inside the running flow."""
        super().__post_init__()
        known = ", ".join(sorted(HANDLERS))
        if not self.feeds:
            raise ValueError("feeds: none given (MD_FEEDS=exchange:BASE-QUOTE,...)")
        exchanges = set()
        for feed in self.feeds:
            ex, sep, sym = feed.partition(":")
            if ex not in HANDLERS:
                raise ValueError(f"feeds: unknown exchange {ex!r} in {feed!r}; one of {known}")
            if not sep or not valid_key(ex, sym):
                raise ValueError(f"feeds: {feed!r} is not exchange:BASE-QUOTE (e.g. "
                                 "binance:BTC-USDT)")
            exchanges.add(ex)
        for e in self.endpoints:
            ex, sep, url = e.partition("=")
            if ex not in HANDLERS or not sep or not url:
                raise ValueError(f"endpoints: {e!r} is not exchange=ws_url[|rest_url] with one "
                                 f"of {known}")
        if not self.simulator:
            overrides = self.endpoint_overrides()
            for ex in sorted(exchanges):  # raises for an exchange with no known endpoint
                endpoint_for(ex, "", overrides)
        if self.connections_per_exchange < 1:
            raise ValueError("connections_per_exchange must be at least 1: "
                             f"{self.connections_per_exchange}")
        for name in ("ping_interval_ms", "stale_after_ms", "stats_interval_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative: {getattr(self, name)}")
        for name in ("backoff_initial_ms", "resync_timeout_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive: {getattr(self, name)}")
        if self.backoff_max_ms < self.backoff_initial_ms:
            raise ValueError(f"backoff_max_ms ({self.backoff_max_ms}) must not be below "
                             f"backoff_initial_ms ({self.backoff_initial_ms})")

    def endpoint_overrides(self) -> dict[str, str]:
        """``endpoints`` as ``{exchange: "ws_url[|rest_url]"}``."""
        return dict(e.split("=", 1) for e in self.endpoints)

    def options(self, record_path: str = "") -> FeedOptions:
        return FeedOptions(ping_interval_s=self.ping_interval_ms / 1000,
                           stale_after_s=self.stale_after_ms / 1000,
                           backoff_initial_s=self.backoff_initial_ms / 1000,
                           backoff_max_s=self.backoff_max_ms / 1000,
                           resync_timeout_s=self.resync_timeout_ms / 1000,
                           record_path=record_path)


def connections(cfg: IngestConfig) -> dict[str, tuple[str, list[str]]]:
    """Partition name (``binance#0``) -> (exchange, symbols); symbols dealt round-robin."""
    by_ex: dict[str, list[str]] = defaultdict(list)
    for feed in cfg.feeds:  # checked by IngestConfig: exchange:BASE-QUOTE
        ex, _, sym = feed.partition(":")
        if sym not in by_ex[ex]:
            by_ex[ex].append(sym)
    out: dict[str, tuple[str, list[str]]] = {}
    n = cfg.connections_per_exchange
    for ex, syms in sorted(by_ex.items()):
        for i in range(min(n, len(syms))):
            out[f"{ex}#{i}"] = (ex, syms[i::n])
    return out


def _key(ev: dict[str, Any], exchange: str) -> str:
    if ev["type"] == "deadletter":
        return ev.get("key") or f"{exchange}:?"
    return f"{ev['ex']}:{ev['sym']}"


class _FeedPartition(StatefulSourcePartition[Item, None]):
    """One live connection; ``next_batch`` drains what its thread normalized."""

    def __init__(self, name: str, feed: LiveFeed, batch_size: int, stats_every_s: float,
                 stop_when: Any) -> None:
        self.name, self.feed, self.batch_size = name, feed, batch_size
        self.stats_every_s, self.stop_when = stats_every_s, stop_when
        self._awake: datetime | None = None
        self._last_stats = self._last_health = time.monotonic()
        feed.start()

    def _report_health(self) -> None:
        """Connection state, last frame and resyncs: Prometheus and the heartbeat (the doctor)."""
        f = self.feed
        resyncs = int(f.handler.stats.get("resyncs", 0))
        metrics.FEED_CONNECTED.labels(self.name).set(1 if f.connected else 0)
        if f.last_frame_ms:
            metrics.FEED_LAST_FRAME.labels(self.name).set(f.last_frame_ms / 1000)
        metrics.FEED_RESYNCS.labels(self.name).set(resyncs)
        heartbeat.set_feed(self.name, connected=f.connected, last_frame_ms=f.last_frame_ms,
                           resyncs=resyncs)

    def next_batch(self) -> list[Item]:
        if self.stop_when is not None and self.stop_when():
            raise StopIteration()
        events = self.feed.drain(self.batch_size)
        if time.monotonic() - self._last_health >= 1.0:
            self._last_health = time.monotonic()
            self._report_health()
        if self.stats_every_s and time.monotonic() - self._last_stats >= self.stats_every_s:
            self._last_stats = time.monotonic()
            log.info("ingest %s: %s handler=%s", self.name, dict(self.feed.stats),
                     {k: v for k, v in self.feed.handler.stats.items() if v})
        if not events:
            self._awake = datetime.now(UTC) + IDLE
            return []
        self._awake = None
        ex, dumps = self.feed.exchange, orjson.dumps
        return [(ev["type"], _key(ev, ex), dumps(ev)) for ev in events]

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> None:
        return None  # nothing to resume: a restart re-subscribes and re-snapshots

    def close(self) -> None:
        self.feed.stop()


class IngestSource(FixedPartitionedSource[Item, None]):
    """One partition per exchange connection of ``cfg`` (see :func:`connections`).

    ``stop_when`` (tests): a callable; the partitions end once it returns true.
    """

    def __init__(self, cfg: IngestConfig, stop_when: Any = None) -> None:
        self.cfg = cfg
        self.conns = connections(cfg)
        self.stop_when = stop_when
        self.overrides = cfg.endpoint_overrides()
        self.feeds: dict[str, LiveFeed] = {}  # built partitions of this process (inspection)

    def list_parts(self) -> list[str]:
        return list(self.conns)

    def build_part(self, step_id: str, for_part: str,
                   resume_state: None) -> _FeedPartition:
        ex, syms = self.conns[for_part]
        rec = ""
        if self.cfg.record_dir:
            rec = f"{self.cfg.record_dir}/{for_part.replace('#', '-')}.ws.1.0"
        feed = LiveFeed(ex, syms, endpoint_for(ex, self.cfg.simulator, self.overrides),
                        self.cfg.options(rec))
        self.feeds[for_part] = feed
        return _FeedPartition(for_part, feed, self.cfg.batch_size,
                              self.cfg.stats_interval_ms / 1000, self.stop_when)


def build(cfg: IngestConfig, source: IngestSource | None = None) -> Dataflow:
    """source → branch by kind → Kafka ``book`` / ``trades`` / ``deadletter`` (keyed ``ex:SYM``).

    ``source``: a prepared :class:`IngestSource` (tests keep it to inspect the feeds).
    """
    from connectors.kafka import KafkaSink

    flow = Dataflow("ingest")
    items = op.input("in", flow, source or IngestSource(cfg))
    book = op.branch("is_book", items, lambda it: it[0] == "book")
    rest = op.branch("is_trade", book.falses, lambda it: it[0] == "trade")
    for name, stream in (("book", book.trues), ("trades", rest.trues),
                         ("deadletter", rest.falses)):
        kv = op.map(f"kv_{name}", stream, lambda it: (it[1], it[2]))
        op.output(f"out_{name}", kv, KafkaSink(cfg.kafka_bootstrap, cfg.topic(name)))
    return flow


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run dataflows.ingest:flow` looks up `flow`: built from the environment.
    if name == "flow":
        cfg = from_env(IngestConfig)
        logging.basicConfig(level=getattr(logging, cfg.log_level.upper(), logging.INFO),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        _ensure_topics(cfg)
        metrics.serve(cfg.metrics_port, cfg.metrics_addr)
        heartbeat.start(cfg.redis_url, "ingest")
        return build(cfg)
    raise AttributeError(name)


def _ensure_topics(cfg: IngestConfig) -> None:
    """Create the output topics, or stop in one line: no broker, or Ctrl-C while waiting."""
    from connectors.kafka import ensure_topics

    try:
        created = ensure_topics(cfg.kafka_bootstrap,
                                [cfg.topic(t) for t in ("book", "trades", "deadletter")])
        if created:  # the flows refuse a missing topic; the writer creates them: say so
            log.warning("created the Kafka topics %s (they did not exist): the flows must read "
                        "them with MD_TOPIC_PREFIX=%s", ", ".join(created), cfg.topic_prefix)
    except RuntimeError as e:
        raise SystemExit(f"error: ingestion cannot start: {e}") from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


# -- marketdata ingest -------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    """Add ``marketdata ingest`` (runs this flow in the foreground)."""
    p = subparsers.add_parser(
        "ingest", help="run the ingestion flow: exchange feeds -> Kafka md.book / md.trades",
        description="Connect to the exchanges (or the simulator), normalize, publish to Kafka. "
        "Settings: flags, else MD_* variables (MD_FEEDS, MD_SIMULATOR, MD_ENDPOINTS, ...).")
    p.add_argument("--feeds", help="ex:SYM,... e.g. binance:BTC-USDT,okx:ETH-USDT")
    p.add_argument("--simulator", help="host:port of `marketdata simulate`")
    p.add_argument("--record-dir", dest="record_dir", help="record raw frames here")
    p.add_argument("--workers", type=int, default=1, help="worker threads in this process")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bytewax.run import cli_main

    feeds = [f.strip() for f in args.feeds.split(",") if f.strip()] if args.feeds else None
    cfg = from_env(IngestConfig, feeds=feeds, simulator=args.simulator,
                   record_dir=args.record_dir)
    _ensure_topics(cfg)
    print(f"ingesting {len(cfg.feeds)} feeds over {len(connections(cfg))} connections "
          f"-> {cfg.topic('book')}, {cfg.topic('trades')}", file=sys.stderr)
    cli_main(build(cfg), workers_per_process=args.workers)
    return 0
