"""What the three flows share: the keyed per-symbol logic, and the wiring around it.

Every flow is the same shape (DESIGN.md): messages keyed ``ex:SYM`` → decode at the worker that
owns the key → a pure per-symbol state from ``operators/`` → records to Redis (live) or a file
(replay), dead letters to ``md.deadletter`` (live) or a file. Only the state class differs.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, Protocol

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.kafka import Message, source_behind
from dataflows import metrics
from operators.events import NATIVE, BookEvent, DeadLetter, Trade, decode, decode_trades

try:
    from operators import _native
except ImportError:  # pragma: no cover - the pure-Python build
    _native = None  # type: ignore[assignment]

__all__ = ["KeyedState", "build_flow", "live_flow", "replay_flow"]

log = logging.getLogger(__name__)



class KeyedState(Protocol):
    """The interface every per-symbol operator state offers (see operators/); trade flows'
    states take trades with ``on_trade`` and whole groups of canonical trades with ``on_trades``
    (a ``TradeBatch``: the same records as ``on_trade`` one by one), the book's takes book events
    with ``on_event``."""

    def advance(self, now_ms: int) -> list[dict[str, Any]]: ...
    def flush(self) -> list[dict[str, Any]]: ...  # the end of the input (replay): of time
    def settle(self) -> list[dict[str, Any]]: ...  # the end of a live run's input: for now
    def next_deadline(self) -> int | None: ...


_RECHECK = timedelta(seconds=1)  # a due timer's next look while the source is behind


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


Batch = tuple[list[dict[str, Any]], list[dict[str, Any]]]  # (records, dead letters)
Group = tuple[bytes | None, list[bytes]]  # one key's message values of a source batch
EventType = type[Trade] | type[BookEvent]  # what a flow's state takes
_VALUE = itemgetter(1)  # of a Message


def _batched(out: list[dict[str, Any]]) -> list[Batch]:
    """One downstream item per call, not one per record: every item costs Bytewax ~10 µs per
    step it crosses, more than building a book record does."""
    if not out:
        return []
    dead = [r for r in out if r["type"] == "deadletter"]
    if not dead:
        return [(out, dead)]
    return [([r for r in out if r["type"] != "deadletter"], dead)]


class _Flat(DynamicSink[list[dict[str, Any]]]):
    """Adapts a sink of records to the lists of records the flow passes along."""

    def __init__(self, inner: DynamicSink[dict[str, Any]]) -> None:
        self.inner = inner

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _FlatPart:
        return _FlatPart(self.inner.build(step_id, worker_index, worker_count))


class _FlatPart(StatelessSinkPartition[list[dict[str, Any]]]):
    def __init__(self, inner: StatelessSinkPartition[dict[str, Any]]) -> None:
        self.inner = inner

    def write_batch(self, items: list[list[dict[str, Any]]]) -> None:
        self.inner.write_batch([r for lst in items for r in lst])

    def close(self) -> None:
        self.inner.close()


class _Logic(StatefulBatchLogic[Group, Batch, bytes]):
    """Decodes messages for one key and drives its state; in live mode also from the clock.

    Event time maps to the clock by the newest event: ``event_now = max_ts + (wall - wall_then)``,
    so a quiet symbol's timers (book throttle, candle close) still fire on time; but only while
    the Kafka source is caught up (``source_behind``): with a backlog the clock runs ahead of the
    data, and a candle flow closed minutes whose trades still waited in Kafka. Replay never
    looks at the clock: its output is a function of the input alone.
    """

    def __init__(self, flow: str, kind: EventType, make_state: Callable[[str], KeyedState],
                 live: bool, resume: bytes | None, snapshots: bool = True) -> None:
        self.flow, self.kind, self.make_state, self.live = flow, kind, make_state, live
        self.snapshots = snapshots
        self.key = ""
        self.state: Any = None  # built on the first message: Bytewax does not tell the key
        self.max_ts = 0
        self.wall = 0
        if resume is not None:
            if not resume:
                raise RuntimeError(
                    f"the {flow} flow's recovery store holds an empty state (written by a run "
                    "that was not given the store, so it skipped snapshots): reset the store "
                    "(`marketdata recovery reset`)")
            self.key, self.state, self.max_ts = pickle.loads(resume)
            self.wall = _now_ms()

    def _decode(self, e: Any, raw: bytes) -> Any:
        """Check a decoded message against this flow and key; a DeadLetter if it does not fit."""
        if isinstance(e, DeadLetter):
            e.key = e.key or self.key
            e.stage = self.flow
            return e
        if not isinstance(e, self.kind):
            return DeadLetter(f"unexpected {type(e).__name__} event in the {self.flow} flow",
                              raw.decode("utf-8", "replace"), e.key, self.flow)
        if e.key != self.key:
            return DeadLetter(f"message key {self.key!r} does not match the event's {e.key!r}",
                              raw.decode("utf-8", "replace"), e.key, self.flow)
        if e.ts > self.max_ts:
            self.max_ts = e.ts
            if self.live:
                self.wall = _now_ms()
        return e

    def on_batch(self, values: list[Group] | list[Message]) -> tuple[list[Batch], bool]:
        """Groups ``(key, [value, ...])`` from ``_by_key`` (a plain list of messages also works,
        as one group: direct callers such as bench/bench_recovery.py)."""
        groups: Any = (values if type(values[0][1]) is list
                       else [(values[0][0], list(map(_VALUE, values)))])
        out: list[dict[str, Any]] = []
        if self.state is None:
            self.key = _key_text(groups[0][0])
            self.state = self.make_state(self.key)
        n = 0
        for _, group in groups:
            n += len(group)
            if self.kind is Trade:
                # A group of canonical trades of this key: decoded in one pass, handed over whole.
                ex, _, sym = self.key.partition(":")
                b = decode_trades(group, ex, sym)
                if b is not None:
                    top = max(b.ts)
                    if top > self.max_ts:
                        self.max_ts = top
                        if self.live:
                            self.wall = _now_ms()
                    out.extend(self.state.on_trades(b))
                    continue
            self._each(group, out)
        metrics.count_batch(self.flow, n, out)
        return _batched(out), StatefulBatchLogic.RETAIN

    def _each(self, group: list[bytes], out: list[dict[str, Any]]) -> None:
        """Message by message: book events, and trade groups that are not all canonical."""
        handle = self.state.on_trade if self.kind is Trade else self.state.on_event
        kind, live = self.kind, self.live
        ok_ex = ok_sym = None  # the (ex, sym) last seen to spell this key: skips building e.key
        for raw in group:
            e = decode(raw)
            # The common case inline (per message, every call counts); anything else, or the
            # first event of a group, goes through _decode, which words the dead letters.
            if type(e) is not kind or e.ex != ok_ex or e.sym != ok_sym:
                e = self._decode(e, raw)
                if type(e) is DeadLetter:
                    out.append(e.record())
                    continue
                ok_ex, ok_sym = e.ex, e.sym
            elif e.ts > self.max_ts:
                self.max_ts = e.ts
                if live:
                    self.wall = _now_ms()
            out.extend(handle(e))

    def notify_at(self) -> datetime | None:
        if not self.live or self.state is None:
            return None
        d = self.state.next_deadline()
        if d is None:
            return None
        if source_behind():  # the clock may not move event time now: look again later
            return datetime.now(UTC) + _RECHECK
        at = self.wall + max(0, d - self.max_ts)
        return datetime.fromtimestamp(at / 1000, tz=UTC)

    def on_notify(self) -> tuple[list[Batch], bool]:
        if self.state is None:
            return [], StatefulBatchLogic.RETAIN
        now = self.max_ts if source_behind() else self.max_ts + max(0, _now_ms() - self.wall)
        out = self.state.advance(now)
        metrics.count_batch(self.flow, 0, out)
        return _batched(out), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Batch], bool]:
        """Replay: the end of time (every window closes). Live (``MD_STOP_AT_END``, a
        backfill): only of what Kafka holds now; closing today's candles would publish them
        closed to Redis and carry them closed into the next run's state."""
        if self.state is None:
            return [], StatefulBatchLogic.RETAIN
        out = self.state.settle() if self.live else self.state.flush()
        metrics.count_batch(self.flow, 0, out)
        return _batched(out), StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        """Bytewax asks every key touched in an epoch, with or without recovery: without it,
        nothing keeps the bytes (``snapshots=False``), and a ticker with a day of minute buckets
        took ~1.8 ms a symbol to pickle: 18% of a core for 1,000 active symbols."""
        if not self.snapshots:
            return b""
        # Pickled here, not later: the state keeps changing after this call returns.
        return pickle.dumps((self.key, self.state, self.max_ts), protocol=pickle.HIGHEST_PROTOCOL)


def _key_text(key: bytes | None) -> str:
    return key.decode("utf-8", "replace") if key else "?"


def _group_by_key_py(batch: list[Message]) -> list[Group]:
    """Messages grouped by key, keys in order of first appearance, each key's values in order
    (the reference of ``group_by_key`` in operators/_native.c)."""
    groups: dict[bytes | None, list[bytes]] = {}
    for key, value in batch:
        g = groups.get(key)
        if g is None:
            groups[key] = [value]
        else:
            g.append(value)
    return list(groups.items())


_group_by_key = _group_by_key_py if _native is None else _native.group_by_key


def _by_key(batch: list[Message]) -> list[tuple[str, Group]]:
    """One keyed item per key and source batch, its values in order: Bytewax's cost per item
    and per routing step is then paid per group (hundreds of messages under load), not per
    message."""
    return [(_key_text(key), (key, values)) for key, values in _group_by_key(batch)]


def build_flow(name: str, source: Source[Message], kind: EventType,
               make_state: Callable[[str], KeyedState], records: DynamicSink[dict[str, Any]],
               deadletters: DynamicSink[dict[str, Any]], live: bool,
               extra: list[DynamicSink[dict[str, Any]]] | None = None,
               snapshots: bool = True) -> Dataflow:
    """messages → key ``ex:SYM`` → per-symbol state → records | dead letters.

    ``snapshots=False``: the states are never pickled (only for a run without recovery).

    The step ids (``{name}.in`` for the source, ``{name}.{name}`` for the state) and the state
    classes' module paths key every stored recovery snapshot: renaming either orphans them.
    """

    # Flows allocate many small, acyclic objects (levels, records): the default cyclic-GC cadence
    # (every 700 allocations) re-walks the growing state over and over. Measured on the order
    # book flow: +34% throughput with this setting; our state holds no reference cycles.
    gc.set_threshold(50_000, 20, 100)

    def builder(resume: bytes | None) -> _Logic:
        return _Logic(name, kind, make_state, live, resume, snapshots)

    flow = Dataflow(name)
    msgs = op.input("in", flow, source)
    keyed = op.flat_map_batch("key", msgs, _by_key)
    out = op.stateful_batch(name, keyed, builder)
    values = op.map("value", out, lambda kv: kv[1])
    recs = op.filter_map("records", values, lambda b: b[0] or None)
    dead = op.filter_map("deadletters", values, lambda b: b[1] or None)
    op.output("out", recs, _Flat(records))
    for i, sink in enumerate(extra or []):
        op.output(f"out{i + 1}", recs, _Flat(sink))
    op.output("deadletter", dead, _Flat(deadletters))
    return flow


def replay_flow(name: str, kind: EventType, make_state: Callable[[str], KeyedState],
                input_path: str, output_path: str, deadletter_path: str | None) -> Dataflow:
    """The flow over a file: event-time only, deterministic, flushed at end of input."""
    from connectors.files import DiscardSink, JsonLinesSink, ReplaySource

    want = "book" if kind is BookEvent else "trade"
    dl: DynamicSink[dict[str, Any]] = (JsonLinesSink(deadletter_path) if deadletter_path
                                       else DiscardSink())
    return build_flow(name, ReplaySource(input_path, want), kind, make_state,
                      JsonLinesSink(output_path), dl, live=False)


def live_flow(name: str, cfg: Any, topic: str, kind: EventType,
              make_state: Callable[[str], KeyedState], output_topic: str) -> Dataflow:
    """The flow over Kafka into Redis (and optionally Kafka ``output_topic``)."""
    from connectors.kafka import KafkaSource
    from connectors.records import RecordKafkaSink
    from connectors.redis import RedisRecordSink
    from marketdata import heartbeat
    from recovery.stores import active_store, check_or_exit, runs_without_recovery

    logging.basicConfig(level=getattr(logging, str(cfg.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not NATIVE:
        log.warning("the compiled scanners (operators/_native.c) are not built: decoding runs in "
                    "pure Python, slower; `pip install -e .` with a C compiler builds them")
    metrics.serve(cfg.metrics_port, cfg.metrics_addr)
    group = cfg.group_id or f"marketdata-{name}"
    heartbeat.start(cfg.redis_url, name, position=lambda: {
        "events_in": int(metrics.EVENTS_IN.labels(name)._value.get())},
        kafka={"group": group, "topics": [cfg.topic(topic)]})
    source = KafkaSource(cfg.kafka_bootstrap, [cfg.topic(topic)], start=cfg.start,
                         stop_at_end=cfg.stop_at_end, batch_size=cfg.batch_size,
                         group_id=group)
    store = active_store(sys.argv, os.environ)
    if store is not None:  # fail at start, in one paragraph, on a store this flow cannot resume
        check_or_exit(name, store, [cfg.topic(topic)])
    try:  # and in one line on a topic that does not exist (a mistyped prefix) or no broker
        source.list_parts()
    except RuntimeError as e:
        raise SystemExit(f"error: the {name} flow cannot start: {e}") from None
    except KeyboardInterrupt:  # Ctrl-C while waiting for the broker
        raise SystemExit(130) from None
    # From here on Ctrl-C stops the process at once, as SIGTERM does: a KeyboardInterrupt inside
    # Bytewax's loop printed a Rust panic and ~80 lines of tracebacks. Nothing is lost: the flow
    # resumes from its last snapshot, re-reads from there, and its writes are idempotent.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    extra: list[DynamicSink[dict[str, Any]]] = []
    if cfg.kafka_output:
        extra.append(RecordKafkaSink(cfg.kafka_bootstrap, cfg.topic(output_topic)))
    return build_flow(name, source, kind, make_state,
                      RedisRecordSink(cfg.redis_url, getattr(cfg, "retention", 1440)),
                      RecordKafkaSink(cfg.kafka_bootstrap, cfg.topic("deadletter")), live=True,
                      extra=extra, snapshots=not runs_without_recovery(sys.argv, os.environ))

