"""``marketdata stack``: start what is missing, idempotently; stop only what it started."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.kafka import KafkaSource, produce_lines
from marketdata import stack as md_stack
from tests.util import free_port, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private broker and Redis on free ports, state in ``tmp_path``; always stopped after."""
    monkeypatch.setenv("MD_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("MD_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("MD_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("MD_TOPIC_PREFIX", "t.")
    try:
        yield tmp_path
    finally:
        md_stack.down(tmp_path)


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="marketdata")
    md_stack.register(parser.add_subparsers(required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_up_is_idempotent_and_down_stops_only_its_own(private: Path) -> None:
    first = md_stack.up(partitions=2)
    for name in ("kafka", "redis"):
        assert first[name]["running"] and first[name]["started_by"] == "stack"
        assert Path(first[name]["log"]).is_file()
    expected = {f"t.{t}": 2 for t in md_stack.TOPICS}
    assert first["topics"] == expected
    again = md_stack.up(partitions=5)  # nothing restarted, existing topics unchanged
    assert again == first
    assert md_stack.status() == first
    assert cli("stack", "status") == 0
    pids = [first["kafka"]["pid"], first["redis"]["pid"]]
    assert sorted(md_stack.down()) == ["kafka", "redis"]
    assert not any(md_stack.pid_alive(pid) for pid in pids)
    after = md_stack.status()
    assert not after["kafka"]["running"] and not after["redis"]["running"]
    assert after["kafka"]["started_by"] is None
    assert cli("stack", "status") == 1
    assert md_stack.down() == []


def test_shared_services_are_external_and_survive_down(
    stack: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap, url = stack
    monkeypatch.setenv("MD_KAFKA_BOOTSTRAP", bootstrap)
    monkeypatch.setenv("MD_REDIS_URL", url)
    monkeypatch.setenv("MD_TOPIC_PREFIX", "md.")
    st = md_stack.up(state_dir=tmp_path)
    assert st["kafka"]["started_by"] == st["redis"]["started_by"] == "external"
    assert {f"md.{t}" for t in md_stack.TOPICS} <= set(st["topics"])
    assert md_stack.down(tmp_path) == []
    assert md_stack.kafka_alive(bootstrap) and md_stack.redis_alive(url)


def test_missing_program_is_named(private: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(md_stack.shutil, "which", lambda _: None)
    with pytest.raises(md_stack.StackError, match="redis-server"):
        md_stack.up()
    assert cli("stack", "up") == 1


def test_source_raises_when_broker_goes_away(private: Path) -> None:
    st = md_stack.up(partitions=1)
    bootstrap = st["kafka"]["address"]
    produce_lines(bootstrap, "t.book", [b"a", b"b"], key_of=lambda _: b"k")
    src = KafkaSource(bootstrap, ["t.book"], fail_after_s=2.0)
    part = src.build_part("s", "t.book#0", None)
    got: list[bytes] = []

    def two() -> bool:
        got.extend(v for _, v in part.next_batch())
        return len(got) == 2

    wait_until(two, timeout=20, message="messages from the private broker")
    md_stack.down()

    def raised() -> str:
        try:
            part.next_batch()
        except RuntimeError as e:
            return str(e)
        return ""

    msg = wait_until(raised, timeout=30, message="source never reported the lost broker")
    assert "unreachable for more than 2 s" in msg


def test_a_port_taken_by_something_else_is_named_not_fought_over(
        private: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker port that accepts connections but does not answer as Kafka (an overloaded
    broker, another program): `stack up` started a second broker there, which panicked with
    'address in use'. Now it waits a while, then says so. Partitions below 1 are refused."""
    import os
    import socket

    monkeypatch.setattr(md_stack, "_BUSY_S", 1.0)
    host, port = os.environ["MD_KAFKA_BOOTSTRAP"].split(":")
    with socket.socket() as squatter:
        squatter.bind((host, int(port)))
        squatter.listen(8)
        with pytest.raises(md_stack.StackError, match="does not answer as a Kafka broker"):
            md_stack.up()
    monkeypatch.setenv("MD_PARTITIONS", "0")
    with pytest.raises(md_stack.StackError, match="at least 1"):
        md_stack.up()
