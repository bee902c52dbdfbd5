"""The Kafka source and sink against the real broker (Tansu locally, Apache Kafka in docker)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import bytewax.operators as op
import orjson
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from connectors.kafka import (
    KafkaSink,
    KafkaSource,
    Message,
    event_key,
    parse_part,
    partition_lag,
    produce_lines,
)
from tests.util import wait_until

pytestmark = pytest.mark.integration

SYMS = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT", "ADA-USDT", "DOGE-USDT", "BNB-USDT"]


def lines(n: int, start: int = 0) -> list[bytes]:
    """``n`` small canonical-looking trade events spread over several symbols."""
    return [
        b'{"type":"trade","ex":"binance","sym":"%s","ts":%d,"rts":%d,"id":"%d",'
        b'"px":"1.5","qty":"2","side":"buy"}' % (SYMS[i % len(SYMS)].encode(), i, i, i)
        for i in range(start, start + n)
    ]


def run_source(source: KafkaSource) -> list[Message]:
    flow = Dataflow("kafka_test")
    out: list[Message] = []
    op.output("out", op.input("in", flow, source), TestingSink(out))
    run_main(flow)
    return out


def read_part(part: object, until: int | None = None, timeout: float = 20) -> list[Message]:
    """Drain a source partition until StopIteration (or ``until`` messages)."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while until is None or len(got) < until:
        assert time.monotonic() < deadline, f"only {len(got)} messages before the deadline"
        try:
            got.extend(part.next_batch())  # type: ignore[attr-defined]
        except StopIteration:
            break
    return got


def test_event_key_and_parse_part() -> None:
    assert event_key(lines(1)[0]) == b"binance:BTC-USDT"
    assert parse_part("md.book.snapshots#12") == ("md.book.snapshots", 12)
    with pytest.raises(ValueError, match="start must be"):
        KafkaSource("x:1", ["t"], start="yesterday")


def test_reads_every_message_once_across_partitions(kafka_bootstrap: str, new_topic) -> None:
    topic = new_topic(4)
    sent = lines(3000)
    assert produce_lines(kafka_bootstrap, topic, sent) == 3000
    source = KafkaSource(kafka_bootstrap, [topic], stop_at_end=True, batch_size=128)
    assert source.list_parts() == [f"{topic}#{i}" for i in range(4)]
    out = run_source(source)
    assert Counter(v for _, v in out) == Counter(sent)  # each exactly once
    assert {k for k, _ in out} == {f"binance:{s}".encode() for s in SYMS}
    # Keys are spread over several partitions, each read in order.
    per_part = [read_part(source.build_part("s", p, None)) for p in source.list_parts()]
    assert sum(1 for msgs in per_part if msgs) >= 2
    for msgs in per_part:
        ids = [int(v.split(b'"id":"')[1].split(b'"')[0]) for _, v in msgs]
        assert ids == sorted(ids)


def test_resume_from_partition_state_gives_exactly_the_rest(
    kafka_bootstrap: str, new_topic
) -> None:
    topic = new_topic(1)
    sent = lines(500)
    produce_lines(kafka_bootstrap, topic, sent)
    source = KafkaSource(kafka_bootstrap, [topic], stop_at_end=True, batch_size=37)
    part = source.build_part("s", f"{topic}#0", None)
    assert part.snapshot() is None  # nothing resolved yet: a resume would start afresh
    first = read_part(part, until=200)
    state = part.snapshot()
    assert state == len(first)  # the next offset to read
    part.close()
    rest = read_part(source.build_part("s", f"{topic}#0", state))
    assert [v for _, v in first + rest] == sent


def test_resume_from_recovery_store(kafka_bootstrap: str, new_topic, tmp_path: Path) -> None:
    topic = new_topic(3)
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))

    def run() -> list[Message]:
        flow = Dataflow("kafka_recovery_test")
        src = KafkaSource(kafka_bootstrap, [topic], stop_at_end=True, batch_size=50)
        out: list[Message] = []
        op.output("out", op.input("in", flow, src), TestingSink(out))
        run_main(flow, epoch_interval=None, recovery_config=recovery)
        return out

    first, second = lines(400), lines(300, start=400)
    produce_lines(kafka_bootstrap, topic, first)
    assert sorted(v for _, v in run()) == sorted(first)
    produce_lines(kafka_bootstrap, topic, second)
    assert sorted(v for _, v in run()) == sorted(second)
    assert run() == []


def test_start_latest_skips_what_exists(kafka_bootstrap: str, new_topic) -> None:
    topic = new_topic(1)
    old = lines(300)
    for i in range(0, 300, 100):  # several produce batches: Tansu's watermark reads one low
        produce_lines(kafka_bootstrap, topic, old[i : i + 100])
    # With stop_at_end, latest ends at once with nothing.
    assert run_source(KafkaSource(kafka_bootstrap, [topic], start="latest", stop_at_end=True)) == []
    source = KafkaSource(kafka_bootstrap, [topic], start="latest")
    part = source.build_part("s", f"{topic}#0", None)
    seen: list[Message] = []

    def resolved() -> bool:
        seen.extend(part.next_batch())
        return part.snapshot() is not None

    wait_until(resolved, timeout=20, message="latest start never resolved to an offset")
    assert seen == []
    assert part.snapshot() == 300
    new = lines(25, start=300)
    produce_lines(kafka_bootstrap, topic, new)
    got = seen + read_part(part, until=25)
    assert [v for _, v in got] == new
    assert part.snapshot() == 325
    part.close()


def test_start_at_timestamp(kafka_bootstrap: str, new_topic) -> None:
    topic = new_topic(2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    early, late = lines(100), lines(100, start=100)
    for i, v in enumerate(early):
        producer.produce(topic, v, event_key(v), timestamp=1_000_000 + i)
    producer.flush(10)
    for i, v in enumerate(late):
        producer.produce(topic, v, event_key(v), timestamp=2_000_000 + i)
    assert producer.flush(10) == 0

    def read_from(start: str) -> list[bytes]:
        src = KafkaSource(kafka_bootstrap, [topic], start=start, stop_at_end=True)
        return sorted(v for _, v in run_source(src))

    assert read_from("2000000") == sorted(late)
    assert read_from("1500000") == sorted(late)
    assert read_from("1000050") == sorted(early[50:] + late)
    assert read_from("3000000") == []
    assert read_from("2000090") == sorted(late[90:])


def test_group_commit_shows_lag(kafka_bootstrap: str, new_topic) -> None:
    topic = new_topic(4)
    group = f"g-{topic}"
    produce_lines(kafka_bootstrap, topic, lines(1000))
    before = partition_lag(kafka_bootstrap, group, [topic])
    assert set(before) == {f"{topic}#{i}" for i in range(4)}
    assert 0 < sum(before.values()) <= 1000  # Tansu's watermark may read one batch low
    out = run_source(KafkaSource(kafka_bootstrap, [topic], stop_at_end=True, group_id=group))
    assert len(out) == 1000
    assert partition_lag(kafka_bootstrap, group, [topic]) == dict.fromkeys(before, 0)
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        committed = c.committed([TopicPartition(topic, i) for i in range(4)], timeout=10)
    finally:
        c.close()
    assert sum(tp.offset for tp in committed) == 1000  # exactly the offsets read


def test_no_group_no_commit(kafka_bootstrap: str, new_topic) -> None:
    topic = new_topic(1)
    produce_lines(kafka_bootstrap, topic, lines(10))
    assert len(run_source(KafkaSource(kafka_bootstrap, [topic], stop_at_end=True))) == 10
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "md-unused"})
    try:
        (tp,) = c.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        c.close()
    assert tp.offset < 0


def run_sink(items: list[tuple[bytes | str, bytes]], sink: KafkaSink) -> None:
    flow = Dataflow("sink_test")
    op.output("out", op.input("in", flow, TestingSource(items, batch_size=100)), sink)
    run_main(flow)


def test_sink_delivers_everything_keyed(kafka_bootstrap: str, new_topic) -> None:
    topic = new_topic(4)
    items: list[tuple[bytes | str, bytes]] = [
        (f"binance:{SYMS[i % 7]}" if i % 2 else f"binance:{SYMS[i % 7]}".encode(), b"v%d" % i)
        for i in range(600)
    ]
    # A tiny local queue forces the BufferError path (poll, then retry).
    run_sink(items, KafkaSink(kafka_bootstrap, topic, config={"queue.buffering.max.messages": "5"}))
    out = run_source(KafkaSource(kafka_bootstrap, [topic], stop_at_end=True))
    as_bytes = [(k if isinstance(k, bytes) else k.encode(), v) for k, v in items]
    assert Counter((k, v) for k, v in out) == Counter(as_bytes)
    # Same key, same partition: each key's values arrive in order.
    source = KafkaSource(kafka_bootstrap, [topic], stop_at_end=True)
    for p in source.list_parts():
        msgs = read_part(source.build_part("s", p, None))
        for key in {k for k, _ in msgs}:
            vals = [int(v[1:]) for k, v in msgs if k == key]
            assert vals == sorted(vals)


def chain(exc: BaseException | None) -> str:
    """Every message in an exception's cause chain (Bytewax wraps what the sink raises)."""
    parts: list[str] = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(parts)


def test_sink_raises_on_broker_rejection(kafka_bootstrap: str) -> None:
    # The broker rejects an invalid topic name: a real delivery failure, not a local check.
    with pytest.raises(Exception) as info:
        run_sink([(b"k", b"v")], KafkaSink(kafka_bootstrap, "bad topic!!"))
    # A delivery failure, or a synchronous refusal once librdkafka has cached the topic as bad.
    pattern = r"Kafka sink bad topic!!: (1 deliveries failed.*Invalid topic|cannot produce)"
    assert re.search(pattern, chain(info.value)), chain(info.value)


def test_sink_raises_when_broker_unreachable() -> None:
    sink = KafkaSink("127.0.0.1:1", "t", config={"message.timeout.ms": "1500"})
    with pytest.raises(Exception) as info:
        run_sink([(b"k", b"v")] * 3, sink)
    assert re.search(r"3 deliveries failed.*timed out", chain(info.value))


def test_sink_failure_raises_on_next_write(kafka_bootstrap: str) -> None:
    part = KafkaSink(kafka_bootstrap, "bad topic!!").build("s", 0, 1)
    part.write_batch([(b"k", b"v")])

    def raised() -> bool:
        try:
            part.write_batch([])
        except RuntimeError as e:
            return "deliveries failed" in str(e)
        return False

    wait_until(raised, timeout=20, message="delivery failure never surfaced on write_batch")
    part.close()  # the failure was reported once; nothing else pending


def test_record_sink_survives_a_crash_right_after_write_batch(
    kafka_bootstrap: str, new_topic
) -> None:
    # Bytewax may commit an epoch's snapshot as soon as its items went through write_batch; a
    # process killed then must not take records still queued in the producer with it (they
    # would never be written again: the resumed flow starts after that snapshot).
    topic = new_topic(1)
    code = (
        "import os, sys\n"
        "from connectors.records import RecordKafkaSink\n"
        "part = RecordKafkaSink(sys.argv[1], sys.argv[2]).build('out', 0, 1)\n"
        "part.write_batch([{'type': 'deadletter', 'key': 'binance:BTC-USDT', 'reason': 'r%d' % i}"
        " for i in range(50)])\n"
        "os._exit(0)  # no close(), no flush: a crash right after the epoch\n"
    )
    subprocess.run([sys.executable, "-c", code, kafka_bootstrap, topic], check=True,
                   cwd=Path(__file__).resolve().parent.parent, timeout=60)
    out = run_source(KafkaSource(kafka_bootstrap, [topic], stop_at_end=True))
    reasons = sorted(orjson.loads(v)["reason"] for _, v in out)
    assert reasons == sorted(f"r{i}" for i in range(50))


_REST_PROBE = """
import glob, sys, time
from connectors.kafka import KafkaSource

def busy_s():  # on a CPU or waiting for one, every thread: the same whatever else runs
    total = 0
    for f in glob.glob("/proc/self/task/*/schedstat"):
        try:
            run, wait = open(f).read().split()[:2]
        except (OSError, ValueError):
            continue  # a thread that just ended
        total += int(run) + int(wait)
    return total / 1e9

bootstrap, topic = sys.argv[1:3]
part = KafkaSource(bootstrap, [topic], batch_size=10).build_part("s", topic + "#0", None)
deadline = time.monotonic() + 30
while not part.next_batch():
    if time.monotonic() > deadline:
        sys.exit("no message from the backlog")
    time.sleep(0.01)
b0, w0 = busy_s(), time.monotonic()
time.sleep(1.0)  # a window of observation, not a synchronization
print((busy_s() - b0) / (time.monotonic() - w0))
part.close()
"""


def test_source_rests_while_its_flow_is_busy(kafka_bootstrap: str, new_topic) -> None:
    """With a backlog, librdkafka prefetches until its queue is full and must then wait for the
    flow to take messages. With fetch.queue.backoff.ms at 0 its broker thread retried without
    pause: a core spun for as long as the backlog lasted (the trade flows ran at half speed).
    Measured in a fresh process (no other test's clients), as the time its threads spent on a
    CPU or waiting for one, per second: ~0.005 here, 1.0 for the spinning thread, under load too.
    """
    topic = new_topic(1)
    produce_lines(kafka_bootstrap, topic, lines(60_000), key_of=lambda _: b"k")  # > the queue
    out = subprocess.run([sys.executable, "-c", _REST_PROBE, kafka_bootstrap, topic],
                         check=True, capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    busy = float(out.stdout.strip().splitlines()[-1])
    assert busy < 0.3, f"{busy:.2f} s of CPU (or waiting for one) per second, nothing consumed"


def test_produce_lines_raises_when_broker_unreachable() -> None:
    with pytest.raises(RuntimeError, match=r"failed|not delivered"):
        cfg = {"message.timeout.ms": "1500"}
        produce_lines("127.0.0.1:1", "t", lines(3), key_of=lambda _: b"k", config=cfg)


def test_source_fails_when_broker_unreachable() -> None:
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="unreachable"):
        KafkaSource("127.0.0.1:1", ["t"], fail_after_s=1.5).list_parts()
    assert time.monotonic() - start < 15


def test_source_keeps_reading_after_a_blip(kafka_bootstrap: str, new_topic) -> None:
    """A connection error starts the outage clock; only the broker answering a metadata request
    stops it (a prefetched message or end of partition proves nothing), and then reading goes on.
    """
    topic = new_topic(1)
    produce_lines(kafka_bootstrap, topic, lines(2), key_of=lambda _: b"k")
    part = KafkaSource(kafka_bootstrap, [topic], fail_after_s=0.0).build_part(
        "s", f"{topic}#0", None)
    assert len(read_part(part, until=2)) == 2
    part._on_error(KafkaError(KafkaError._TRANSPORT, "a blip"))  # type: ignore[attr-defined]
    produce_lines(kafka_bootstrap, topic, lines(3, start=2), key_of=lambda _: b"k")
    assert len(read_part(part, until=3)) == 3  # the probe found the broker: no error
    part.close()


def test_source_says_when_it_is_behind(kafka_bootstrap: str, new_topic) -> None:
    """More than a batch waiting after a read: the flows stop mapping event time to the clock."""
    from connectors.kafka import source_behind

    topic = new_topic(1)
    produce_lines(kafka_bootstrap, topic, lines(3000), key_of=lambda _: b"k")
    part = KafkaSource(kafka_bootstrap, [topic], batch_size=500).build_part(
        "s", f"{topic}#0", None)
    got = read_part(part, until=1)
    assert source_behind() and len(got) <= 500
    got += read_part(part, until=3000 - len(got))
    part.next_batch()  # an empty read: caught up
    assert not source_behind() and len(got) == 3000
    part.close()


def test_produce_puts_a_file_into_the_book_and_trades_topics(
        kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`marketdata produce`: book events to the book topic, trades to the trades topic, keyed
    ``ex:SYM``, each once and in file order per key; other lines counted, not sent; a topic that
    does not exist is refused (a mistyped prefix would make new ones)."""
    import gzip
    import uuid

    from connectors.exchanges.recordings import data_dir
    from connectors.kafka import ensure_topics
    from marketdata import cli

    prefix = f"p{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, [prefix + "book", prefix + "trades"], 2)
    monkeypatch.setenv("MD_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("MD_TOPIC_PREFIX", prefix)
    with gzip.open(data_dir() / "canonical" / "binance_ethusdt_20240808.events.jsonl.gz") as f:
        events = [line.rstrip(b"\n") for line in f][:400]
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"\n".join([*events, b"not json", b'{"type":"quote","ex":"a","sym":"B-C"}'])
                    + b"\n")
    assert cli.main(["produce", "--input", str(src)]) == 0
    out, err = capsys.readouterr()
    assert "2 lines are not book or trade events" in err
    for kind, topic in (("book", "book"), ("trade", "trades")):
        want = [e for e in events if orjson.loads(e)["type"] == kind]
        assert f"produced {len(want):,} {kind} events to {prefix}{topic}" in out
        got = run_source(KafkaSource(kafka_bootstrap, [prefix + topic], stop_at_end=True))
        assert sorted(v for _, v in got) == sorted(want)
        assert {k for k, _ in got} == {b"binance:ETH-USDT"}
        per_part = [read_part(KafkaSource(kafka_bootstrap, [prefix + topic], stop_at_end=True)
                              .build_part("s", f"{prefix}{topic}#{p}", None)) for p in (0, 1)]
        assert [v for msgs in per_part for _, v in msgs] == want  # one key: one partition, in order
    monkeypatch.setenv("MD_TOPIC_PREFIX", "nope" + prefix)
    assert cli.main(["produce", "--input", str(src)]) == 2
    assert "does not exist" in capsys.readouterr().err
