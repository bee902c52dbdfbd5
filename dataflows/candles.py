"""The candle flow: Kafka ``md.trades`` → OHLCV candles per ``ex:SYM`` and interval → Redis.

Run: ``python -m bytewax.run dataflows.candles:flow`` (config from ``MD_*``; see README).
Records also go to Kafka ``md.candles`` when ``MD_KAFKA_OUTPUT=1``.
"""

from __future__ import annotations

from collections.abc import Callable

from bytewax.dataflow import Dataflow

from dataflows.common import live_flow, replay_flow
from dataflows.config import CandleConfig, from_env
from operators.candles import CandleParams, CandleState
from operators.events import Trade

__all__ = ["build", "replay", "state_factory"]


def state_factory(cfg: CandleConfig) -> Callable[[str], CandleState]:
    params = CandleParams(tuple(cfg.intervals), cfg.lateness_ms, cfg.emit_interval_ms,
                          cfg.fill_gaps)  # validated here, at start, not at the first trade
    return lambda key: CandleState(params)


def build(cfg: CandleConfig) -> Dataflow:
    return live_flow("candles", cfg, "trades", Trade, state_factory(cfg), "candles")


def replay(cfg: CandleConfig, input_path: str, output_path: str,
           deadletter_path: str | None = None) -> Dataflow:
    return replay_flow("candles", Trade, state_factory(cfg), input_path, output_path,
                       deadletter_path)


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run dataflows.candles:flow` looks up `flow`: built from the environment.
    if name == "flow":
        return build(from_env(CandleConfig))
    raise AttributeError(name)
