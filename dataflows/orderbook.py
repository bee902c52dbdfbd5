"""The order book flow: Kafka ``md.book`` → a book per ``ex:SYM`` → book records → Redis.

Run: ``python -m bytewax.run dataflows.orderbook:flow`` (config from ``MD_*``; see README).
Records also go to Kafka ``md.book.snapshots`` when ``MD_KAFKA_OUTPUT=1``.
"""

from __future__ import annotations

from collections.abc import Callable

from bytewax.dataflow import Dataflow

from dataflows.common import live_flow, replay_flow
from dataflows.config import BookConfig, from_env
from operators.events import BookEvent
from operators.orderbook import BookParams, BookState, parse_groupings

__all__ = ["build", "replay", "state_factory"]


def state_factory(cfg: BookConfig) -> Callable[[str], BookState]:
    default, per = parse_groupings(cfg.grouping)

    def make(key: str) -> BookState:
        group = per.get(key) or per.get(key.partition(":")[2]) or default
        return BookState(key, BookParams(cfg.depth, cfg.emit_interval_ms, cfg.max_levels, group))

    return make


def build(cfg: BookConfig) -> Dataflow:
    return live_flow("orderbook", cfg, "book", BookEvent, state_factory(cfg), "book.snapshots")


def replay(cfg: BookConfig, input_path: str, output_path: str,
           deadletter_path: str | None = None) -> Dataflow:
    return replay_flow("orderbook", BookEvent, state_factory(cfg), input_path, output_path,
                       deadletter_path)


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run dataflows.orderbook:flow` looks up `flow`: build it from the
    # environment only then, so importing this module stays free of side effects.
    if name == "flow":
        return build(from_env(BookConfig))
    raise AttributeError(name)
