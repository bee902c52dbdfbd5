"""The trade flows' wiring with a state that does nothing: what any trade flow here reads at most.

    python -m bytewax.run bench.null_flow:flow    (MD_* as for dataflows.candles)

Kafka source, keying, Bytewax's routing and the per-key decoding into a ``TradeBatch`` run as in
``dataflows/candles.py``; the state drops every batch and nothing is written. ``bench_flows``
times it like the real flows: their throughput minus this one's is what the operators and the
Redis writes cost.
"""

from __future__ import annotations

from typing import Any

from bytewax.dataflow import Dataflow

from connectors.files import DiscardSink
from connectors.kafka import KafkaSource
from dataflows.common import build_flow
from dataflows.config import CommonConfig, from_env
from operators.events import Trade, TradeBatch


class NullState:
    """Takes trades, keeps nothing, emits nothing."""

    def on_trade(self, t: Trade) -> list[dict[str, Any]]:
        return []

    def on_trades(self, b: TradeBatch) -> list[dict[str, Any]]:
        return []

    def advance(self, now_ms: int) -> list[dict[str, Any]]:
        return []

    def flush(self) -> list[dict[str, Any]]:
        return []

    settle = flush

    def next_deadline(self) -> int | None:
        return None


def build(cfg: CommonConfig) -> Dataflow:
    source = KafkaSource(cfg.kafka_bootstrap, [cfg.topic("trades")], start=cfg.start,
                         stop_at_end=cfg.stop_at_end, batch_size=cfg.batch_size,
                         group_id=cfg.group_id or "marketdata-null")
    return build_flow("null", source, Trade, lambda key: NullState(), DiscardSink(),
                      DiscardSink(), live=True)


def __getattr__(name: str) -> Dataflow:
    if name == "flow":
        return build(from_env(CommonConfig))
    raise AttributeError(name)
