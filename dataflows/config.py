"""Configuration: flags override ``MD_*`` environment variables, which override defaults.

One typed object per flow. Each field's environment variable is ``MD_`` + its upper-case name, so
``kafka_bootstrap`` is ``MD_KAFKA_BOOTSTRAP``; ``marketdata config`` prints them all.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BookConfig",
    "CandleConfig",
    "CommonConfig",
    "TickerConfig",
    "from_env",
    "known_variables",
    "unknown_variables",
]

log = logging.getLogger(__name__)

# ``MD_*`` variables read outside the config classes below: with every config field's variable,
# what :func:`known_variables` lists (tests/test_candles.py checks the project reads no other).
OTHER_VARIABLES = frozenset({
    "MD_STATE_DIR", "MD_LOG_DIR", "MD_DOCTOR_FLOWS",  # stack, doctor
    "MD_PARTITIONS",  # stack up: partitions of the topics it creates
    "MD_API_HOST", "MD_API_PORT", "MD_DEMO_SPEED",  # api, demo
    "MD_DATA_DIR",  # where the recordings are (connectors/exchanges/recordings.py)
    "MD_SNAPSHOT_INTERVAL", "MD_BACKUP_INTERVAL",  # marketdata run (recovery)
    "MD_KEEP",  # tests/test_crash.py: keep the crash test's files
})


def _list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


@dataclass(frozen=True)
class CommonConfig:
    """Settings shared by every flow."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    topic_prefix: str = "md."
    recovery_dir: str = ""
    group_id: str = ""
    start: str = "earliest"  # earliest | latest | a timestamp in ms since the epoch
    stop_at_end: bool = False  # stop at the end of each partition (backfills, benchmarks)
    batch_size: int = 5000  # Kafka messages per source batch: consume() returns what waits
    metrics_port: int = 0  # 0: no Prometheus endpoint
    metrics_addr: str = "127.0.0.1"  # 0.0.0.0 in containers, so Prometheus can scrape
    log_level: str = "INFO"
    kafka_output: bool = False  # also write the flow's records to Kafka

    def __post_init__(self) -> None:
        from connectors.kafka import parse_start  # the source's own check

        parse_start(self.start)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1: {self.batch_size}")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be 0 (none) to 65535: {self.metrics_port}")
        if not isinstance(logging.getLevelName(self.log_level.upper()), int):  # WARN too
            raise ValueError(f"log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL: "
                             f"{self.log_level!r}")
        if not self.kafka_bootstrap.strip():
            raise ValueError("kafka_bootstrap must name at least one host:port")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis_url must start with redis://, rediss:// or unix://: "
                             f"{self.redis_url!r}")
        if not re.fullmatch(r"[A-Za-z0-9._-]*", self.topic_prefix):
            raise ValueError(f"topic_prefix must be letters, digits, '.', '_' or '-' (Kafka's "
                             f"topic names): {self.topic_prefix!r}")

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


@dataclass(frozen=True)
class BookConfig(CommonConfig):
    """The order book flow (``dataflows.orderbook``)."""

    depth: int = 20
    emit_interval_ms: int = 100
    max_levels: int = 0  # 0: keep every level
    grouping: str = ""  # e.g. "binance:BTC-USDT=10,ETH-USDT=0.5": bucket size per key or symbol

    def __post_init__(self) -> None:
        super().__post_init__()
        from operators.orderbook import BookParams, parse_groupings  # the flow's own checks

        BookParams(self.depth, self.emit_interval_ms, self.max_levels)
        _, per_key = parse_groupings(self.grouping)
        _warn_unknown_exchanges(per_key)


@dataclass(frozen=True)
class CandleConfig(CommonConfig):
    """The candle flow (``dataflows.candles``)."""

    intervals: list[str] = field(default_factory=lambda: ["1m", "5m", "15m", "1h", "4h", "1d"])
    lateness_ms: int = 2000
    emit_interval_ms: int = 1000
    fill_gaps: bool = True
    retention: int = 1440  # candles kept in Redis per symbol and interval

    def __post_init__(self) -> None:
        super().__post_init__()
        from operators.candles import CandleParams  # checks the intervals, lateness, throttle

        CandleParams(tuple(self.intervals), self.lateness_ms, self.emit_interval_ms,
                     self.fill_gaps)
        if self.retention < 1:
            raise ValueError(f"retention must be at least 1 candle: {self.retention}")


@dataclass(frozen=True)
class TickerConfig(CommonConfig):
    """The ticker flow (``dataflows.ticker``)."""

    emit_interval_ms: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        from operators.ticker import TickerParams  # checks the throttle

        TickerParams(self.emit_interval_ms)


def _convert(value: str, kind: Any) -> Any:
    if kind is bool:
        v = value.strip().lower()
        if v in ("1", "true", "yes", "on"):
            return True
        if v in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    if kind is int:
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"not an integer: {value!r}") from None
    if typing.get_origin(kind) is list:
        return _list(value)
    return value


def known_variables() -> frozenset[str]:
    """Every ``MD_*`` variable some part of the project reads."""
    from dataflows.ingest import IngestConfig  # (it imports this module)

    classes = (CommonConfig, BookConfig, CandleConfig, TickerConfig, IngestConfig)
    fields = {f"MD_{f.name.upper()}" for c in classes for f in dataclasses.fields(c)}
    return OTHER_VARIABLES | fields


def unknown_variables(env: typing.Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``(name, closest known name or None)`` of each ``MD_*`` variable nothing reads: a
    misspelled setting would otherwise be ignored without a word."""
    names = sorted(n for n in env if n.startswith("MD_"))
    if not names:
        return []
    known = known_variables()
    return [(n, next(iter(difflib.get_close_matches(n, known, 1, 0.75)), None))
            for n in names if n not in known]


_WARNED: set[str] = set()


def _warn_unknown_exchanges(per_key: dict[str, str]) -> None:
    """A grouping for ``ex:SYM`` whose exchange no feed handler names (``binanse:BTC-USDT``)
    would group nothing, silently. A warning, not an error: events may come from elsewhere."""
    from connectors.exchanges import HANDLERS

    known = sorted({h.exchange for h in HANDLERS.values()})
    for key in per_key:
        ex, sep, _ = key.partition(":")
        if sep and ex not in known and key not in _WARNED:
            _WARNED.add(key)
            log.warning("grouping %r: no feed handler produces exchange %r (they produce %s)",
                        key, ex, ", ".join(known))


def _warn_unknown(env: typing.Mapping[str, str]) -> None:
    for name, near in unknown_variables(env):
        if name not in _WARNED:  # once per process, however many configs it reads
            _WARNED.add(name)
            hint = f" (did you mean {near}?)" if near else ""
            log.warning("%s is not a marketdata setting%s: ignored", name, hint)


def from_env(cls: type[Any], env: typing.Mapping[str, str] | None = None, **overrides: Any) -> Any:
    """Build ``cls`` from defaults, then ``MD_*`` variables, then non-``None`` ``overrides``;
    warn about ``MD_*`` variables that no part of the project reads (misspelled ones)."""
    env = os.environ if env is None else env
    _warn_unknown(env)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = f"MD_{f.name.upper()}"
        if name in env:
            try:
                values[f.name] = _convert(env[name], hints[f.name])
            except ValueError as e:
                raise SystemExit(f"invalid {name}: {e}") from None
    from_vars = set(values)
    values.update({k: v for k, v in overrides.items() if v is not None})
    from_vars -= {k for k, v in overrides.items() if v is not None}
    try:
        return cls(**values)
    except ValueError as e:  # a value of the right type that the flow cannot use
        # The checks word the field ("batch_size must be..."); name the variable that set it.
        named = [f"MD_{k.upper()}" for k in sorted(from_vars) if re.search(rf"\b{k}\b", str(e))]
        hint = f" (set by {', '.join(named)})" if named else ""
        raise SystemExit(f"invalid configuration: {e}{hint}") from None


def describe(cfg: Any) -> list[tuple[str, str, Any]]:
    """``(field, environment variable, value)`` rows, for ``marketdata config``."""
    return [(f.name, f"MD_{f.name.upper()}", getattr(cfg, f.name)) for f in dataclasses.fields(cfg)]
