"""Kafka source and sink for Bytewax, plus the small admin helpers around them.

Why our own: Bytewax's built-in sink flushes every batch and drops failed deliveries silently, and
its source never commits offsets and idles silently when the broker is gone. Here:

- :class:`KafkaSource` has one Bytewax partition per Kafka partition (``"md.book#0"``), keeps the
  next offset to read in Bytewax snapshots (resume exactly there), consumes in batches with
  ``assign()`` (never a group join: Tansu's takes ~20 s), starts at ``earliest``, ``latest`` or a
  timestamp, can stop at the end of every partition, raises when the broker stays unreachable, and
  commits snapshotted offsets to ``group_id`` (if given) so standard tools show the lag.
- :class:`KafkaSink` writes ``(key, value)`` with an idempotent producer, never flushes per batch,
  and raises on the next write or on close if any delivery failed.

Tansu quirks handled here (see DESIGN.md): its ``ListOffsets`` answers "latest" with a high
watermark that can be one produce batch low and answers every timestamp query with 0. So "latest"
skips what lies below the high watermark of the first fetch response (which is exact), and a
timestamp start skips messages older than the timestamp until the first one that is not (a no-op on
Apache Kafka, whose lookup is exact). The end of a partition is detected with partition-EOF.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka import Message as ConfluentMessage
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import Gauge

__all__ = [
    "KafkaSink",
    "KafkaSource",
    "Message",
    "delete_topics",
    "ensure_topics",
    "event_key",
    "parse_part",
    "parse_start",
    "partition_lag",
    "produce_lines",
    "source_behind",
]

# High watermark minus the next offset to read, per partition, from the last fetch (no extra
# request). On Tansu it can read low by up to one produce batch (see DESIGN.md).
LAG = Gauge("md_kafka_source_lag", "Kafka messages not yet read by this process",
            ["topic", "partition"])
log = logging.getLogger(__name__)
_TRY_S = 2.0  # metadata requests at start: how long one try may take (a warning after it)

# (key, value). No Kafka timestamp: nothing downstream reads it, and building a (type, ms) tuple
# and a 3-tuple per message cost the trade flows 7-9% of their throughput.
Message = tuple[bytes | None, bytes]

IDLE_WAIT = timedelta(milliseconds=5)  # how long an idle partition sleeps between polls
# Tansu does not wake a waiting fetch when data arrives: with librdkafka's 500 ms fetch wait, a
# message took ~230 ms to reach an idle consumer; with these, p50 2 ms, and a drain ran 2.6x faster
# (90k -> 240k msgs/s per partition). Costs ~100 idle fetches/s per broker; override in ``config``.
# The local queue (per partition) holds 4 default source batches; once it is full, librdkafka
# retries the next fetch after fetch.queue.backoff.ms. At 0 its broker threads spun on the other
# core for as long as the flow had a backlog (catching up after a restart, a burst): 915k queued
# trades went through the candle flow at 140k/s instead of 260k/s; its process peaked at 335 MB
# with the former 100,000 a partition (180 MB now).
FETCH_DEFAULTS: dict[str, Any] = {
    "fetch.wait.max.ms": 10,
    "fetch.error.backoff.ms": 5,
    "fetch.queue.backoff.ms": 10,
    "queued.min.messages": 20_000,
}
# The partitions of this process that have more than a batch waiting (in the broker or the
# local queue) after their last read: while any has, the flows' event time follows the data alone
# (see source_behind).
_BEHIND: set[str] = set()


def source_behind() -> bool:
    """Whether a Kafka source partition of this process is behind: more than a batch waiting
    after its last read. The live flows map event time to the clock for quiet symbols only while
    no partition is: during a backlog (every restart, any stall) the clock runs ahead of the
    data, and a candle flow then closed minutes whose trades were still waiting in Kafka and
    dead-lettered them as late."""
    return bool(_BEHIND)


_UNUSED_GROUP = "md-unused"  # librdkafka wants a group.id even when nothing joins or commits
_BROKER_DOWN = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT})
_KEY, _VALUE = ConfluentMessage.key, ConfluentMessage.value
_ERROR = ConfluentMessage.error  # None, or a KafkaError (always true)


def _client_config(bootstrap: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Common settings: route librdkafka logs through :mod:`logging` instead of raw stderr."""
    cfg: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": log}
    cfg.update(extra or {})
    return cfg


def _metadata(admin: AdminClient, bootstrap: str, timeout_s: float,
              topic: str | None = None) -> Any:
    """``admin.list_topics``, warning after a few seconds that the broker is not answering (it
    was a silent wait of up to a minute), ``RuntimeError`` after ``timeout_s``. Asked in slices
    of a few seconds: a blocked librdkafka call would hold a Ctrl-C back until it returns."""
    deadline = time.monotonic() + timeout_s
    for attempt in itertools.count():
        try:
            return admin.list_topics(
                topic, timeout=max(0.1, min(_TRY_S, deadline - time.monotonic())))
        except KafkaException as e:
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"Kafka at {bootstrap} unreachable for {timeout_s:g} s: {e}") from e
            if attempt == 0:
                log.warning("Kafka at %s is not answering; waiting up to %g s for it",
                            bootstrap, timeout_s)
    raise AssertionError("unreachable")  # pragma: no cover


def parse_part(part: str) -> tuple[str, int]:
    """``"md.book#3"`` -> ``("md.book", 3)`` (topic names may not contain ``#``)."""
    topic, _, idx = part.rpartition("#")
    return topic, int(idx)


def parse_start(start: str) -> int | None:
    """``None`` for earliest, ``-1`` for latest, else a timestamp in ms; rejects anything else."""
    if start == "earliest":
        return None
    if start == "latest":
        return -1
    try:
        ts = int(start)
    except ValueError:
        msg = f"start must be earliest, latest or ms since the epoch: {start!r}"
        raise ValueError(msg) from None
    if ts < 0:
        raise ValueError(f"start timestamp must not be negative: {start!r}")
    return ts


class _KafkaPartition(StatefulSourcePartition[Message, int | None]):
    """One Kafka partition read with ``assign()``; the snapshot is the next offset to read.

    The snapshot is ``None`` until the starting point is resolved to a concrete offset (first
    message delivered or end of partition seen): resuming from ``None`` starts afresh, which is
    right because nothing was emitted yet.
    """

    def __init__(
        self,
        src: KafkaSource,
        topic: str,
        idx: int,
        resume_state: int | None,
    ) -> None:
        self._topic, self._idx = topic, idx
        self._batch_size = src._batch_size
        self._stop_at_end = src._stop_at_end
        self._fail_after_s = src._fail_after_s
        self._group_id = src._group_id
        self._down_since: float | None = None
        self._last_error: KafkaError | None = None
        self._last_logged = 0.0
        self._eof = False
        self._awake: datetime | None = None
        self._committed: int | None = None
        self._skip_below: int | None = None  # latest: offsets below this existed at the start
        self._min_ts: int | None = None  # timestamp start: skip older messages until one is not
        self._latest = False
        self._offset: int | None = resume_state
        self._read = 0  # messages handed to the flow
        cfg = _client_config(
            src._bootstrap,
            {
                "group.id": src._group_id or _UNUSED_GROUP,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "error",
                **FETCH_DEFAULTS,
                "error_cb": self._on_error,
                "on_commit": self._on_commit,
            },
        )
        cfg.update(src._config)
        self._consumer = Consumer(cfg)
        if resume_state is not None:
            start = resume_state
        else:
            start = self._resolve_start(parse_start(src._start))
        self._consumer.assign([TopicPartition(topic, idx, start)])

    def _resolve_start(self, start: int | None) -> int:
        if start is None:
            return OFFSET_BEGINNING
        if start == -1:
            self._latest = True
            return OFFSET_END
        self._min_ts = start
        tp = TopicPartition(self._topic, self._idx, start)
        try:
            found = self._consumer.offsets_for_times([tp], timeout=self._fail_after_s)[0]
        except KafkaException as e:
            raise RuntimeError(f"{self._part}: timestamp lookup failed: {e}") from e
        if found.error is not None:
            raise RuntimeError(f"{self._part}: timestamp lookup failed: {found.error}")
        return found.offset if found.offset >= 0 else OFFSET_END

    @property
    def _part(self) -> str:
        return f"{self._topic}#{self._idx}"

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's client-level errors: log them, and time how long the broker is gone.

        Repeats of the same error are logged at most every 10 s (reconnects retry every ~50 ms).
        """
        now = time.monotonic()
        if self._last_error is None or err.code() != self._last_error.code() or (
            now - self._last_logged >= 10.0
        ):
            log.warning("kafka source %s: %s", self._part, err)
            self._last_logged = now
        self._last_error = err
        if err.fatal():
            self._down_since = float("-inf")
        elif err.code() in _BROKER_DOWN and self._down_since is None:
            self._down_since = time.monotonic()

    def _on_commit(self, err: KafkaError | None, parts: list[TopicPartition]) -> None:
        if err is not None:
            log.warning("kafka source %s: offset commit failed: %s", self._part, err)

    def _check_broker(self) -> None:
        """Raise if the broker has been unreachable for longer than ``fail_after_s``.

        Only a metadata request answered after the error stops the clock: messages and
        end-of-partition events still in the prefetch queue were fetched before the broker went
        away, so they prove nothing (one such EOF used to reset the clock and hide the outage).
        """
        if self._down_since is None:
            return
        if self._down_since != float("-inf"):
            if time.monotonic() - self._down_since < self._fail_after_s:
                return
            try:  # it may be back (a blip, or nothing to say on an idle partition): ask it
                self._consumer.list_topics(self._topic, timeout=2.0)
                self._down_since = None
                return
            except KafkaException:
                pass
        raise RuntimeError(
            f"Kafka source {self._part}: broker unreachable for more than "
            f"{self._fail_after_s:g} s (last error: {self._last_error})"
        )

    def next_batch(self) -> list[Message]:
        if self._eof:
            raise StopIteration()
        self._check_broker()
        msgs = self._consumer.consume(self._batch_size, 0)
        if not msgs:
            self._awake = datetime.now(UTC) + IDLE_WAIT
            _BEHIND.discard(self._part)
            return []
        self._awake = None
        if self._latest and self._skip_below is None:
            # The first fetch response's high watermark is exact, unlike Tansu's ListOffsets.
            self._skip_below = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, self._idx), cached=True
            )[1]
        if not self._latest and self._min_ts is None and not any(map(_ERROR, msgs)):
            # The common case, data only: one C-level pass per field instead of a Python loop.
            self._offset = cast(int, msgs[-1].offset()) + 1  # data messages have offsets
            out = cast(list[Message], list(zip(map(_KEY, msgs), map(_VALUE, msgs),
                                               strict=True)))
        else:
            out = self._each(msgs)
        self._read += len(out)
        if self._offset is not None:
            high = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, self._idx), cached=True)[1]
            if high >= 0:
                lag = high - self._offset
                LAG.labels(self._topic, str(self._idx)).set(max(0, lag))
                if lag > self._batch_size:
                    _BEHIND.add(self._part)
                else:
                    _BEHIND.discard(self._part)
        if self._latest or self._min_ts is not None:
            # Still skipping: a resume must redo the start, not trust the skipped position.
            self._offset = None
        return out

    def _each(self, msgs: list[Any]) -> list[Message]:
        """Message by message: errors (partition EOF among them) and the skipping at a start."""
        out: list[Message] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if self._offset is None or m.offset() > self._offset:
                        self._offset = m.offset()
                    self._min_ts = None
                    self._latest = False
                    if self._stop_at_end:
                        self._eof = True  # emit this batch, stop on the next call
                        break
                    continue
                if err.retriable() and not err.fatal():
                    self._on_error(err)
                    continue
                raise RuntimeError(f"Kafka source {self._part}: {err}")
            off = m.offset()
            self._offset = off + 1
            if self._latest:
                if self._skip_below is not None and off < self._skip_below:
                    continue
                self._latest = False
            if self._min_ts is not None:
                if m.timestamp()[1] < self._min_ts:
                    continue
                self._min_ts = None
            out.append((m.key(), m.value()))
        return out

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int | None:
        off = self._offset
        if self._group_id and off is not None and off != self._committed:
            tp = TopicPartition(self._topic, self._idx, off)
            try:
                self._consumer.commit(offsets=[tp], asynchronous=True)
                self._committed = off
            except KafkaException as e:
                log.warning("kafka source %s: offset commit failed: %s", self._part, e)
        return off

    def close(self) -> None:
        off = self._offset
        if self._group_id and off is not None and off != self._committed:
            try:
                tp = TopicPartition(self._topic, self._idx, off)
                self._consumer.commit(offsets=[tp], asynchronous=False)
            except KafkaException as e:
                log.warning("kafka source %s: final offset commit failed: %s", self._part, e)
        log.info("kafka source %s: %d messages read, next offset %s%s", self._part, self._read,
                 "?" if off is None else off, " (end of partition)" if self._eof else "")
        _BEHIND.discard(self._part)
        self._consumer.close()


class KafkaSource(FixedPartitionedSource[Message, int | None]):
    """Read topics as ``(key, value)``; one Bytewax partition per Kafka partition.

    ``start`` is ``"earliest"``, ``"latest"`` or ms since the epoch; it only applies to partitions
    without resume state. ``stop_at_end`` ends each partition at its end (backfills, benchmarks).
    ``group_id``: snapshotted offsets are also committed there (offsets are never auto-committed).
    ``config`` is merged into the librdkafka consumer settings.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: list[str],
        *,
        start: str = "earliest",
        stop_at_end: bool = False,
        batch_size: int = 1000,
        group_id: str | None = None,
        config: dict[str, str] | None = None,
        fail_after_s: float = 60.0,
    ) -> None:
        if isinstance(topics, str):
            raise TypeError("topics must be a list of topic names, not a string")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        parse_start(start)
        self._bootstrap = bootstrap
        self._topics = list(topics)
        self._start = start
        self._stop_at_end = stop_at_end
        self._batch_size = batch_size
        self._group_id = group_id or None
        self._config: dict[str, Any] = dict(config or {})
        self._fail_after_s = fail_after_s

    def list_parts(self) -> list[str]:
        """Every partition of every topic, e.g. ``md.book#0``; fails if a topic is missing.

        Never creates one: an admin client's metadata request asks the broker to auto-create
        the topic by default, and a mistyped ``MD_TOPIC_PREFIX`` then ran a flow on a new empty
        topic in silence (exit 0 with ``MD_STOP_AT_END``, waiting forever without).
        """
        admin = AdminClient(_client_config(self._bootstrap, {**self._config,
                                                              "allow.auto.create.topics": False}))
        parts: list[str] = []
        for topic in self._topics:
            md = _metadata(admin, self._bootstrap, self._fail_after_s, topic)
            tmd = md.topics.get(topic)
            if tmd is None or tmd.error is not None or not tmd.partitions:
                err = tmd.error if tmd is not None else None
                if err is None or err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise RuntimeError(
                        f"Kafka topic {topic!r} does not exist at {self._bootstrap}: check "
                        "MD_TOPIC_PREFIX, or create the topics (`marketdata stack up` does)")
                raise RuntimeError(f"Kafka topic {topic!r} unavailable: {err}")
            parts.extend(f"{topic}#{i}" for i in sorted(tmd.partitions))
        return parts

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> StatefulSourcePartition[Message, int | None]:
        topic, idx = parse_part(for_part)
        if topic not in self._topics:
            raise ValueError(f"partition {for_part!r} is not from the topics {self._topics}")
        return _KafkaPartition(self, topic, idx, resume_state)


class _SinkPartition(StatelessSinkPartition[tuple[bytes | str, bytes]]):
    """One idempotent producer per worker; failures surface on the next write or on close."""

    def __init__(self, bootstrap: str, topic: str, config: dict[str, Any],
                 confirm: bool = False, confirm_s: float = 60.0) -> None:
        self._topic = topic
        self._confirm = confirm
        self._confirm_s = confirm_s
        self._failures: list[str] = []
        cfg = _client_config(
            bootstrap,
            {
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "on_delivery": self._on_delivery,
                "delivery.report.only.error": True,
                "error_cb": self._on_error,
            },
        )
        cfg.update(config)
        self._producer = Producer(cfg)

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()} key={msg.key()!r}: {err}")

    def _on_error(self, err: KafkaError) -> None:
        log.warning("kafka sink %s: %s", self._topic, err)
        if err.fatal():
            self._failures.append(f"fatal producer error: {err}")

    def _raise_failures(self) -> None:
        if self._failures:
            n, first = len(self._failures), self._failures[0]
            self._failures = []
            raise RuntimeError(f"Kafka sink {self._topic}: {n} deliveries failed, first: {first}")

    def write_batch(self, items: list[tuple[bytes | str, bytes]]) -> None:
        self._raise_failures()
        produce, poll, topic = self._producer.produce, self._producer.poll, self._topic
        for key, value in items:
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:
                    poll(0.05)  # local queue full: serve deliveries, then retry
                except KafkaException as e:  # e.g. a topic the client already knows is invalid
                    raise RuntimeError(f"Kafka sink {topic}: cannot produce: {e}") from e
        if self._confirm:
            remaining = self._producer.flush(self._confirm_s)
            self._raise_failures()
            if remaining:
                raise RuntimeError(f"Kafka sink {topic}: {remaining} messages not confirmed "
                                   f"within {self._confirm_s:g} s")
            return
        poll(0)
        self._raise_failures()

    def close(self) -> None:
        remaining = self._producer.flush(60)
        self._raise_failures()
        if remaining:
            raise RuntimeError(f"Kafka sink {self._topic}: {remaining} messages not delivered")


class KafkaSink(DynamicSink[tuple[bytes | str, bytes]]):
    """Write ``(key, value)`` items to ``topic`` (idempotent producer, ``acks=all``).

    By default messages are flushed on close, not per batch; a failed delivery raises on the next
    ``write_batch`` or on close. That suits a source that cannot rewind anyway (ingestion's
    WebSockets). ``confirm=True``: ``write_batch`` returns once every message of the batch is
    acknowledged (``acks=all``), or raises after ``confirm_s``. Bytewax closes an epoch (and may
    commit its snapshot) only after its items went through ``write_batch``, so a flow that resumes
    from snapshots then never loses output to a crash: what it wrote before the snapshot is in
    Kafka, what came after is written again. ``config`` is merged into the producer settings.
    """

    def __init__(self, bootstrap: str, topic: str, *, config: dict[str, str] | None = None,
                 confirm: bool = False, confirm_s: float = 60.0) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._config: dict[str, Any] = dict(config or {})
        self._confirm = confirm
        self._confirm_s = confirm_s

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[tuple[bytes | str, bytes]]:
        return _SinkPartition(self._bootstrap, self._topic, self._config, self._confirm,
                              self._confirm_s)


def ensure_topics(
    bootstrap: str, topics: list[str], partitions: int = 4, timeout_s: float = 30
) -> list[str]:
    """Create the topics that do not exist yet; existing ones are left alone (idempotent).
    Returns the ones created."""
    admin = AdminClient(_client_config(bootstrap))
    existing = set(_metadata(admin, bootstrap, timeout_s).topics)
    new = [NewTopic(t, partitions, 1) for t in dict.fromkeys(topics) if t not in existing]
    if not new:
        return []
    _settle(admin.create_topics(new, operation_timeout=timeout_s), timeout_s, "create",
            KafkaError.TOPIC_ALREADY_EXISTS)
    return [t.topic for t in new]


def delete_topics(bootstrap: str, topics: list[str], timeout_s: float = 30) -> None:
    """Delete ``topics``; those that do not exist are no error."""
    if not topics:
        return
    admin = AdminClient(_client_config(bootstrap))
    _settle(admin.delete_topics(topics, operation_timeout=timeout_s), timeout_s, "delete",
            KafkaError.UNKNOWN_TOPIC_OR_PART)


def _settle(futures: dict[str, Any], timeout_s: float, verb: str, benign: int) -> None:
    """Wait for an admin operation on each topic; an error other than ``benign`` raises."""
    for topic, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
        except KafkaException as e:
            if e.args[0].code() != benign:
                raise RuntimeError(f"cannot {verb} topic {topic!r}: {e}") from e


def event_key(line: bytes) -> bytes:
    """The Kafka key of a canonical event: ``ex:SYM``."""
    obj = orjson.loads(line)
    return f"{obj['ex']}:{obj['sym']}".encode()


def produce_lines(
    bootstrap: str,
    topic: str,
    lines: Iterable[bytes],
    *,
    key_of: Callable[[bytes], bytes] | None = None,
    config: dict[str, str] | None = None,
) -> int:
    """Produce raw JSON lines keyed ``ex:SYM``; returns the count, raises if any delivery failed.

    Blank lines are skipped. Uses an idempotent producer and flushes once at the end; a message
    not delivered within ``message.timeout.ms`` (default 60 s, override in ``config``) fails.
    """
    key_of = key_of or event_key
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    producer = Producer(
        _client_config(
            bootstrap,
            {
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 10,
                "message.timeout.ms": 60000,
                "on_delivery": on_delivery,
                "delivery.report.only.error": True,
                **(config or {}),
            },
        )
    )
    n = 0
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        key = key_of(line)
        while True:
            try:
                producer.produce(topic, line, key)
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
        if n % 10000 == 0:
            producer.poll(0)
    remaining = producer.flush()  # returns once each message is delivered or timed out
    if failures:
        raise RuntimeError(f"{len(failures)} of {n} messages to {topic} failed: {failures[0]}")
    if remaining:
        raise RuntimeError(f"{remaining} of {n} messages to {topic} not delivered in time")
    return n


def partition_lag(bootstrap: str, group_id: str, topics: list[str]) -> dict[str, int]:
    """``"topic#p"`` -> high watermark - committed offset (whole partition if nothing committed).

    On Tansu the high watermark can read low by up to one produce batch, so the lag is clamped at
    zero and may under-report by that much; on Apache Kafka it is exact.
    """
    consumer = Consumer(
        _client_config(bootstrap, {"group.id": group_id, "enable.auto.commit": False})
    )
    try:
        tps: list[TopicPartition] = []
        for topic in topics:
            tmd = consumer.list_topics(topic, timeout=10).topics[topic]
            if tmd.error is not None:
                raise RuntimeError(f"Kafka topic {topic!r} unavailable: {tmd.error}")
            tps.extend(TopicPartition(topic, i) for i in sorted(tmd.partitions))
        committed = consumer.committed(tps, timeout=10)
        lag: dict[str, int] = {}
        for tp in committed:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            pos = tp.offset if tp.offset >= 0 else low
            lag[f"{tp.topic}#{tp.partition}"] = max(0, high - pos)
        return lag
    finally:
        consumer.close()
