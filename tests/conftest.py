"""Shared fixtures: the real broker and Redis (started with ``stack.up()`` if they do not answer).

Integration tests never skip when a service is missing: they fail loudly.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from connectors.kafka import ensure_topics
from dataflows.config import CommonConfig, from_env
from marketdata import stack as stack_mod
from tests.util import wait_until

__all__ = ["wait_until"]


@pytest.fixture(scope="session")
def stack() -> Iterator[tuple[str, str]]:
    """``(bootstrap, redis_url)`` of a broker and a Redis that answer. The ``md:*`` keys the
    tests wrote are deleted at the end (the doctor, the API and the dashboard would show their
    made-up exchanges for ever; tests that need a clean Redis delete them at start too);
    earlier runs' topics are deleted at the start (:func:`_delete_earlier_test_topics`)."""
    cfg: CommonConfig = from_env(CommonConfig)
    bootstrap, url = cfg.kafka_bootstrap, cfg.redis_url
    if not (stack_mod.kafka_alive(bootstrap) and stack_mod.redis_alive(url)):
        stack_mod.up()
    if not stack_mod.kafka_alive(bootstrap):
        pytest.fail(f"no Kafka broker answers at {bootstrap} (marketdata stack up)")
    if not stack_mod.redis_alive(url):
        pytest.fail(f"no Redis answers at {url} (marketdata stack up)")
    _delete_earlier_test_topics(bootstrap)
    yield bootstrap, url
    client = redis.Redis.from_url(url)
    with contextlib.suppress(redis.RedisError):
        delete_md_keys(client)
    client.close()


# The topic prefixes the tests make up (tests/flowrun.py, test_crash, test_doctor)
_TEST_TOPIC = re.compile(r"(t|crash|t\.doctor\.)[0-9a-f]{8}\.")


def _delete_earlier_test_topics(bootstrap: str) -> None:
    """Delete what earlier test runs left on the broker (several hundred topics a run, which
    in-memory Tansu keeps). At the start, not the end: deleting topics that clients of this
    process still hold made librdkafka crash the interpreter on its way out. A plain admin
    client, not ``connectors.kafka.delete_topics``: its client (with a Python logger) made a
    pytest process segfault at exit when used here or in ``new_topic`` (not understood)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    old = [t for t in admin.list_topics(timeout=30).topics if _TEST_TOPIC.match(t)]
    for fut in (admin.delete_topics(old, operation_timeout=30) if old else {}).values():
        with contextlib.suppress(KafkaException):
            fut.result(timeout=30)


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: tuple[str, str]) -> str:
    return stack[0]


@pytest.fixture(scope="session")
def redis_url(stack: tuple[str, str]) -> str:
    return stack[1]


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the test Redis; flushes nothing (use ``clean_redis`` for ``md:*``)."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def delete_md_keys(client: redis.Redis) -> int:
    """Delete every ``md:*`` key; returns how many."""
    n = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match="md:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            n += int(client.delete(*batch))
            batch.clear()
    if batch:
        n += int(client.delete(*batch))
    return n


@pytest.fixture
def clean_redis(redis_client: redis.Redis) -> redis.Redis:
    """``redis_client`` after deleting every ``md:*`` key (the flows' fixed key names)."""
    delete_md_keys(redis_client)
    return redis_client


@pytest.fixture
def new_topic(
    kafka_bootstrap: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., str]]:
    """Factory: ``new_topic(partitions=4) -> name`` of a fresh, uniquely named topic.

    The topics are deleted after the test (best effort: Tansu keeps them in memory).
    """
    created: list[str] = []
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:80]

    def make(partitions: int = 4) -> str:
        name = f"test.{stem}.{uuid.uuid4().hex[:10]}"
        assert ensure_topics(kafka_bootstrap, [name], partitions=partitions) == [name]
        assert ensure_topics(kafka_bootstrap, [name], partitions=partitions) == []  # idempotent
        created.append(name)
        return name

    yield make
    if created:
        futures = AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics(created)
        for fut in futures.values():
            with contextlib.suppress(Exception):  # cleanup only
                fut.result(timeout=2)
