"""The ticker flow: Kafka ``md.trades`` → 24h rolling ticker per ``ex:SYM`` → Redis.

Run: ``python -m bytewax.run dataflows.ticker:flow`` (config from ``MD_*``; see README).
Records also go to Kafka ``md.tickers`` when ``MD_KAFKA_OUTPUT=1``.
"""

from __future__ import annotations

from collections.abc import Callable

from bytewax.dataflow import Dataflow

from dataflows.common import live_flow, replay_flow
from dataflows.config import TickerConfig, from_env
from operators.events import Trade
from operators.ticker import TickerParams, TickerState

__all__ = ["build", "replay", "state_factory"]


def state_factory(cfg: TickerConfig) -> Callable[[str], TickerState]:
    params = TickerParams(cfg.emit_interval_ms)
    return lambda key: TickerState(params)


def build(cfg: TickerConfig) -> Dataflow:
    return live_flow("ticker", cfg, "trades", Trade, state_factory(cfg), "tickers")


def replay(cfg: TickerConfig, input_path: str, output_path: str,
           deadletter_path: str | None = None) -> Dataflow:
    return replay_flow("ticker", Trade, state_factory(cfg), input_path, output_path,
                       deadletter_path)


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run dataflows.ticker:flow` looks up `flow`: built from the environment.
    if name == "flow":
        return build(from_env(TickerConfig))
    raise AttributeError(name)
