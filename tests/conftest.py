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

from connectors.kafka import delete_topics, ensure_topics
from dataflows.config import CommonConfig, from_env
from marketdata import stack as stack_mod
from tests.util import wait_until

__all__ = ["wait_until"]


@pytest.fixture(scope="session")
def stack() -> Iterator[tuple[str, str]]:
    """``(bootstrap, redis_url)`` of a broker and a Redis that answer. The ``md:*`` keys the
    tests wrote are deleted at the end (the doctor, the API and the dashboard would show their
    made-up exchanges for ever; tests that need a clean Redis delete them at start too), and so
    are the topics they made (``t...``: several hundred a run, which in-memory Tansu kept)."""
    cfg: CommonConfig = from_env(CommonConfig)
    bootstrap, url = cfg.kafka_bootstrap, cfg.redis_url
    if not (stack_mod.kafka_alive(bootstrap) and stack_mod.redis_alive(url)):
        stack_mod.up()
    if not stack_mod.kafka_alive(bootstrap):
        pytest.fail(f"no Kafka broker answers at {bootstrap} (marketdata stack up)")
    if not stack_mod.redis_alive(url):
        pytest.fail(f"no Redis answers at {url} (marketdata stack up)")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    before = set(admin.list_topics(timeout=30).topics)
    yield bootstrap, url
    client = redis.Redis.from_url(url)
    with contextlib.suppress(redis.RedisError):
        delete_md_keys(client)
    client.close()
    with contextlib.suppress(KafkaException, RuntimeError):
        made = sorted(set(admin.list_topics(timeout=30).topics) - before)
        delete_topics(bootstrap, [t for t in made if t.startswith("t")])


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
        ensure_topics(kafka_bootstrap, [name], partitions=partitions)
        created.append(name)
        return name

    yield make
    if created:
        futures = AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics(created)
        for fut in futures.values():
            with contextlib.suppress(Exception):  # cleanup only
                fut.result(timeout=2)
