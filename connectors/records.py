"""Flow records (and dead letters) to Kafka, keyed and versioned so consumers can deduplicate.

Outputs are at-least-once (a resumed flow re-emits what followed its last snapshot): each message
is keyed by the thing it describes, and its record carries a version that only grows for that key
(book ``seq`` then ``ts``; candle ``n`` then ``closed``; ticker ``closeTime`` then ``count``), so a
consumer keeps the highest, exactly as the Redis sink does.
"""

from __future__ import annotations

from typing import Any

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.kafka import KafkaSink

__all__ = ["RecordKafkaSink", "kafka_key"]


def kafka_key(rec: dict[str, Any]) -> str:
    """``ex:SYM`` (``ex:SYM:iv:t`` for a candle, so each candle is its own compacted key)."""
    kind = rec.get("type")
    if kind == "candle":
        return f"{rec['ex']}:{rec['sym']}:{rec['iv']}:{rec['t']}"
    if kind == "deadletter":
        return rec.get("key") or "?"
    return f"{rec['ex']}:{rec['sym']}"


class _Part(StatelessSinkPartition[dict[str, Any]]):
    def __init__(self, inner: StatelessSinkPartition[tuple[bytes | str, bytes]]) -> None:
        self.inner = inner

    def write_batch(self, items: list[dict[str, Any]]) -> None:
        self.inner.write_batch([(kafka_key(r), orjson.dumps(r)) for r in items])

    def close(self) -> None:
        self.inner.close()


class RecordKafkaSink(DynamicSink[dict[str, Any]]):
    """JSON records to ``topic`` through the project's idempotent Kafka sink, each batch confirmed
    before ``write_batch`` returns: a flow's epoch never closes over records (dead letters among
    them) still queued in the producer, so a crash after a snapshot cannot drop them."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.sink = KafkaSink(bootstrap, topic, confirm=True)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Part:
        return _Part(self.sink.build(step_id, worker_index, worker_count))
