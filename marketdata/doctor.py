"""``marketdata doctor``: find the failing layer in seconds, in the on-call order.

The checks run from the source to the consumer, as an on-call engineer would:

1. ``flows``    are the flow processes alive (heartbeats ``md:hb:*`` fresh, processes present);
2. ``kafka``    is the broker reachable, do the topics exist, are the flows consuming (lag per
   topic and partition of each flow's consumer group, and whether it grows: the group and
   topics its heartbeat reports, else ``marketdata-{flow}`` on ``md.*``);
3. ``logs``     recent errors in the flows' log files;
4. ``feeds``    are the exchange feeds connected and producing (ingestion heartbeats);
5. ``redis``    is Redis reachable, are the books fresh per symbol (``md:book:*``);
6. ``recovery`` are recovery snapshots being taken (newest snapshot per SQLite store set).

Each check is ``ok``, ``warn``, ``fail`` or ``skip``. A symptom that an earlier failing layer
explains (lag of a dead flow, stale books while the broker is down, an old snapshot of a stopped
flow) is a ``warn`` that names the cause, so the doctor names the failing layer and only that one.
Exit status 1 when any check fails, 0 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import sqlite3
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis

from dataflows.config import CommonConfig, from_env
from marketdata import heartbeat
from marketdata.stack import pid_alive

__all__ = [
    "FAIL",
    "FLOW_TOPICS",
    "LAYERS",
    "OK",
    "SKIP",
    "WARN",
    "Check",
    "DoctorConfig",
    "Finding",
    "Report",
    "diagnose",
    "main",
    "register",
]

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
_RANK = {SKIP: 0, OK: 1, WARN: 2, FAIL: 3}

LAYERS: tuple[tuple[int, str, str], ...] = (
    (1, "flows", "flow processes alive"),
    (2, "kafka", "Kafka reachable, flows consuming"),
    (3, "logs", "recent errors in flow logs"),
    (4, "feeds", "exchange feeds producing"),
    (5, "redis", "Redis reachable, books fresh"),
    (6, "recovery", "recovery snapshots taken"),
)
_TITLES = {name: title for _, name, title in LAYERS}
_NUMBERS = {name: n for n, name, _ in LAYERS}

DEFAULT_FLOWS = ("ingest", "orderbook", "candles", "ticker")
FLOW_TOPICS: dict[str, tuple[str, ...]] = {  # consuming flow -> topic names (without prefix)
    "orderbook": ("book",),
    "candles": ("trades",),
    "ticker": ("trades",),
}
REQUIRED_TOPICS = ("book", "trades", "deadletter")
BOOK_FLOWS = ("ingest", "orderbook")  # a dead one explains stale books

# ERROR/CRITICAL log lines, Python tracebacks and Rust panics (Bytewax).
_ERROR_RE = re.compile(
    r"\b(ERROR|CRITICAL|FATAL)\b|^Traceback \(most recent call last\)|panicked at"
)
_TS_RE = re.compile(
    r"^\[?(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:[.,](\d+))?(Z|[+-]\d{2}:?\d{2})?"
)
_LOG_TAIL_BYTES = 256 * 1024


@dataclass
class Finding:
    """One observation inside a check: a process, a partition, a file, a feed, a book, a store."""

    name: str
    status: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Check:
    layer: int
    name: str
    title: str
    status: str
    summary: str
    findings: list[Finding] = field(default_factory=list)


@dataclass
class Report:
    checks: list[Check]
    time_ms: int
    settings: dict[str, Any]

    @property
    def failing(self) -> list[str]:
        return [c.name for c in self.checks if c.status == FAIL]

    @property
    def ok(self) -> bool:
        return not self.failing

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "failing": self.failing, "time": self.time_ms,
                "settings": self.settings, "checks": [asdict(c) for c in self.checks]}


@dataclass(frozen=True)
class DoctorConfig:
    """Where to look and what counts as wrong; connection settings default to ``MD_*``."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    topic_prefix: str = "md."
    recovery_dir: str = ""
    log_dir: str = ".state/logs"
    flows: tuple[str, ...] = DEFAULT_FLOWS
    group_template: str = "marketdata-{flow}"
    hb_stale_s: float = 20.0  # also at least 3 beat intervals
    max_lag: int = 10_000  # messages per flow and topic
    lag_sample_s: float = 1.0  # second lag sample this much later (growing or not); 0: one sample
    log_window_s: float = 600.0
    feed_stale_s: float = 30.0
    book_stale_s: float = 60.0
    recovery_stale_s: float = 120.0
    timeout_s: float = 3.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> DoctorConfig:
        """``MD_*`` connection settings (as the flows read them), then non-``None`` overrides."""
        env = dict(os.environ if env is None else env)
        common: CommonConfig = from_env(CommonConfig, env)
        state = env.get("MD_STATE_DIR") or ".state"
        values: dict[str, Any] = {
            "kafka_bootstrap": common.kafka_bootstrap, "redis_url": common.redis_url,
            "topic_prefix": common.topic_prefix, "recovery_dir": common.recovery_dir,
            "log_dir": env.get("MD_LOG_DIR") or str(Path(state) / "logs"),
        }
        if env.get("MD_DOCTOR_FLOWS"):
            values["flows"] = _names(env["MD_DOCTOR_FLOWS"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _names(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _worst(statuses: Iterable[str], empty: str = OK) -> str:
    return max(statuses, key=_RANK.__getitem__, default=empty)


def _age(ms: float) -> str:
    s = ms / 1000
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{s / 60:.1f}m"
    return f"{s / 3600:.1f}h"


# -- (1) flows -------------------------------------------------------------------------------------
def check_flows(cfg: DoctorConfig, hbs: list[dict[str, Any]] | None, now_ms: int,
                redis_error: str | None = None) -> tuple[Check, set[str]]:
    """Per expected (or seen) flow: at least one process, and every process beating.

    Returns the check and the flows that are down (later checks treat their symptoms as such).
    """
    title = _TITLES["flows"]
    if hbs is None:
        return Check(1, "flows", title, SKIP,
                     f"heartbeats live in Redis, which is unreachable ({redis_error})"), set()
    local = socket.gethostname()
    by_flow: dict[str, list[dict[str, Any]]] = {f: [] for f in cfg.flows}
    for hb in hbs:
        by_flow.setdefault(hb["flow"], []).append(hb)
    findings: list[Finding] = []
    down: set[str] = set()
    for flow, beats in by_flow.items():
        if not beats:
            findings.append(Finding(flow, FAIL, "no heartbeat: the flow is not running"))
            down.add(flow)
            continue
        alive = 0
        for hb in sorted(beats, key=lambda b: (b["host"], b["pid"] or 0)):
            name = f"{flow} {hb['host']}:{hb['pid']}"
            age = now_ms - (hb["time"] or 0)
            stale_ms = max(cfg.hb_stale_s * 1000, 3 * (hb["interval_ms"] or 0))
            data = {"flow": flow, "host": hb["host"], "pid": hb["pid"], "age_ms": age,
                    "position": hb["position"]}
            if hb["host"] == local and hb["pid"] and not pid_alive(hb["pid"]):
                findings.append(Finding(name, FAIL, f"process gone (last beat {_age(age)} ago)",
                                        data))
            elif age > stale_ms:
                findings.append(Finding(name, FAIL, f"heartbeat stale: last {_age(age)} ago "
                                        f"(> {_age(stale_ms)})", data))
            else:
                alive += 1
                findings.append(Finding(name, OK, f"beat {_age(max(age, 0))} ago", data))
        if not alive:
            down.add(flow)
    status = _worst(f.status for f in findings)
    bad = sorted({f.name.split(" ")[0] for f in findings if f.status == FAIL})
    n_alive = sum(1 for f in findings if f.status == OK)
    summary = (f"not running or dead: {', '.join(bad)}" if bad
               else f"{len(by_flow)} flows alive ({n_alive} processes)")
    return Check(1, "flows", title, status, summary, findings), down


# -- (2) kafka -------------------------------------------------------------------------------------
def _tcp_any(bootstrap: str, timeout: float) -> bool:
    for addr in bootstrap.split(","):
        host, _, port = addr.strip().rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port or 9092)), timeout):
                return True
        except (OSError, ValueError):
            continue
    return False


def _kafka_topics(cfg: DoctorConfig) -> dict[str, int]:
    """Topic -> partition count; raises ``RuntimeError`` when no broker answers."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    if not _tcp_any(cfg.kafka_bootstrap, cfg.timeout_s):
        raise RuntimeError(f"no broker answers at {cfg.kafka_bootstrap} (connection refused)")
    admin = AdminClient({"bootstrap.servers": cfg.kafka_bootstrap,
                         "socket.connection.setup.timeout.ms": int(cfg.timeout_s * 1000)})
    try:
        md = admin.list_topics(timeout=cfg.timeout_s)
    except KafkaException as e:
        raise RuntimeError(f"broker at {cfg.kafka_bootstrap} does not answer: {e}") from e
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


Consumer = tuple[str, list[str]]  # a flow's consumer group and input topics


def consumers(cfg: DoctorConfig, hbs: list[dict[str, Any]] | None) -> dict[str, Consumer]:
    """Per consuming flow, the group and topics its live heartbeats report (what really runs:
    the demo's flows read their own topics with their own groups), else the configured ones
    (``group_template``, ``topic_prefix``)."""
    out = {f: (cfg.group_template.format(flow=f), [f"{cfg.topic_prefix}{t}" for t in ts])
           for f, ts in FLOW_TOPICS.items()}
    for hb in hbs or []:
        k = hb.get("kafka") or {}
        if hb["flow"] in out and isinstance(k.get("group"), str) and k.get("topics"):
            out[hb["flow"]] = (k["group"], [str(t) for t in k["topics"]])
    return out


def _lags(cfg: DoctorConfig, flows: dict[str, Consumer]) -> dict[str, dict[str, int]]:
    from connectors.kafka import partition_lag

    return {flow: partition_lag(cfg.kafka_bootstrap, group, topics)
            for flow, (group, topics) in flows.items()}


def check_kafka(cfg: DoctorConfig, down: set[str],
                hbs: list[dict[str, Any]] | None = None) -> Check:
    title = _TITLES["kafka"]
    try:
        topics = _kafka_topics(cfg)
    except RuntimeError as e:
        return Check(2, "kafka", title, FAIL, str(e))
    findings: list[Finding] = []
    for t in REQUIRED_TOPICS:
        name = f"{cfg.topic_prefix}{t}"
        if name not in topics:
            findings.append(Finding(name, FAIL, "topic missing (marketdata stack up creates it)"))
    known = consumers(cfg, hbs)
    flows = {f: known[f] for f in cfg.flows if f in known
             and all(t in topics for t in known[f][1])}
    try:
        first = _lags(cfg, flows)
        if cfg.lag_sample_s > 0 and flows:
            time.sleep(cfg.lag_sample_s)  # a second sample tells growing from shrinking lag
            second = _lags(cfg, flows)
        else:
            second = first
    except Exception as e:  # the broker went away between the two calls, a group error
        return Check(2, "kafka", title, FAIL, f"cannot read consumer lag: {e}", findings)
    for flow in flows:
        parts = second[flow]
        total = sum(parts.values())
        growth = total - sum(first[flow].values())
        trend = "" if second is first else (f", growing (+{growth})" if growth > 0
                                            else ", not growing")
        data = {"group": flows[flow][0], "total": total, "growth": growth,
                "partitions": parts}
        if total > cfg.max_lag:
            if flow in down:
                status, why = WARN, f" (flow {flow} is not running: see flows)"
            else:
                status, why = FAIL, f" > {cfg.max_lag}: not keeping up"
        else:
            status, why = OK, ""
        findings.append(Finding(f"{flow} lag", status, f"{total} messages{why}{trend}", data))
        for part, lag in sorted(parts.items()):
            if lag:
                findings.append(Finding(f"  {part}", status, f"lag {lag}",
                                        {"flow": flow, "part": part, "lag": lag}))
    status = _worst(f.status for f in findings)
    bad = [f for f in findings if f.status == FAIL]
    summary = "; ".join(f"{f.name.strip()}: {f.detail}" for f in bad[:3]) if bad else (
        f"broker answers; {len(topics)} topics; lag "
        + ", ".join(f"{f}={sum(second[f].values())}" for f in flows))
    return Check(2, "kafka", title, status, summary, findings)


# -- (3) logs --------------------------------------------------------------------------------------
def _line_time(line: str) -> float | None:
    """Seconds since the epoch of a line starting with an ISO-like timestamp (naive = local)."""
    m = _TS_RE.match(line)
    if m is None:
        return None
    frac = f".{m.group(3)}" if m.group(3) else ""
    text = f"{m.group(1)}T{m.group(2)}{frac}"
    tz = m.group(4)
    try:
        if tz is None:
            return datetime.fromisoformat(text).timestamp()
        tz = "+00:00" if tz == "Z" else tz
        return datetime.fromisoformat(text + tz).timestamp()
    except ValueError:
        return None


def _tail(path: Path, size: int = _LOG_TAIL_BYTES) -> list[str]:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        f.seek(max(0, end - size))
        data = f.read()
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[1:] if end > size else lines  # the first line may be cut


def recent_errors(path: Path, since: float) -> list[str]:
    """Error lines of ``path`` newer than ``since`` (epoch s). Lines without a timestamp take the
    previous timestamped line's; before any, the file's modification time."""
    mtime = path.stat().st_mtime
    if mtime < since:
        return []
    current: float | None = None
    out = []
    for line in _tail(path):
        t = _line_time(line)
        if t is not None:
            current = t
        if _ERROR_RE.search(line) and (current if current is not None else mtime) >= since:
            out.append(line.strip())
    return out


def check_logs(cfg: DoctorConfig, now_ms: int) -> Check:
    title = _TITLES["logs"]
    root = Path(cfg.log_dir)
    if not root.is_dir():
        return Check(3, "logs", title, SKIP, f"no log directory {root}")
    since = now_ms / 1000 - cfg.log_window_s
    findings: list[Finding] = []
    files = sorted(p for p in root.rglob("*.log") if p.is_file())
    for path in files:
        try:
            errors = recent_errors(path, since)
        except OSError as e:
            findings.append(Finding(str(path), WARN, f"unreadable: {e}"))
            continue
        if errors:
            window = _age(cfg.log_window_s * 1000)
            findings.append(Finding(str(path), FAIL, f"{len(errors)} errors in the last {window}"
                                    f"; last: {errors[-1][:200]}",
                                    {"count": len(errors), "last": errors[-5:]}))
    status = _worst((f.status for f in findings), OK)
    n = sum(f.data.get("count", 0) for f in findings)
    summary = (f"{n} errors in {sum(1 for f in findings if f.status == FAIL)} of {len(files)} "
               f"log files ({root})" if status == FAIL
               else f"no errors in the last {_age(cfg.log_window_s * 1000)} "
               f"({len(files)} log files in {root})")
    return Check(3, "logs", title, status, summary, findings)


# -- (4) feeds -------------------------------------------------------------------------------------
def check_feeds(cfg: DoctorConfig, hbs: list[dict[str, Any]] | None, down: set[str],
                now_ms: int) -> Check:
    title = _TITLES["feeds"]
    if hbs is None:
        return Check(4, "feeds", title, SKIP, "feed states live in Redis, which is unreachable")
    beats = [hb for hb in hbs if hb["flow"] == "ingest"]
    stale_hb = max(cfg.hb_stale_s * 1000, 0)
    live = [hb for hb in beats if now_ms - (hb["time"] or 0) <= max(stale_hb,
                                                                   3 * (hb["interval_ms"] or 0))]
    if "ingest" in down or (beats and not live):
        return Check(4, "feeds", title, SKIP, "no live ingestion process (see flows)")
    if not live:
        return Check(4, "feeds", title, SKIP, "no ingestion heartbeat (ingestion not monitored)")
    findings: list[Finding] = []
    for hb in live:
        for feed, st in sorted(hb["feeds"].items()):
            last = st.get("last_frame_ms")
            age = None if last is None else now_ms - int(last)
            resyncs = int(st.get("resyncs") or 0)
            data = {"feed": feed, "host": hb["host"], "pid": hb["pid"], "age_ms": age,
                    "connected": bool(st.get("connected")), "resyncs": resyncs}
            tail = f"; {resyncs} resyncs"
            if not st.get("connected"):
                findings.append(Finding(feed, FAIL, "not connected" + (
                    f" (last frame {_age(age)} ago)" if age is not None else "") + tail, data))
            elif age is None:
                findings.append(Finding(feed, FAIL, "connected, no frame received yet" + tail,
                                        data))
            elif age > cfg.feed_stale_s * 1000:
                findings.append(Finding(feed, FAIL, f"stalled: last frame {_age(age)} ago "
                                        f"(> {_age(cfg.feed_stale_s * 1000)})" + tail, data))
            else:
                findings.append(Finding(feed, OK, f"last frame {_age(max(age, 0))} ago" + tail,
                                        data))
    if not findings:
        return Check(4, "feeds", title, WARN, "ingestion runs but reports no feed")
    status = _worst(f.status for f in findings)
    bad = [f.name for f in findings if f.status == FAIL]
    summary = (f"{len(bad)} of {len(findings)} feeds down or stalled: {', '.join(bad[:5])}"
               if bad else f"{len(findings)} feeds producing")
    return Check(4, "feeds", title, status, summary, findings)


# -- (5) redis -------------------------------------------------------------------------------------
def _books(client: redis.Redis, limit: int = 10_000) -> list[tuple[str, dict[str, Any] | None]]:
    keys = []
    for k in client.scan_iter(match="md:book:*", count=1000):
        keys.append(k)
        if len(keys) >= limit:
            break
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.hget(k, "data")
    out: list[tuple[str, dict[str, Any] | None]] = []
    for k, data in zip(keys, pipe.execute(), strict=True):
        rec = None
        with contextlib.suppress(orjson.JSONDecodeError, TypeError):
            rec = orjson.loads(data) if data is not None else None
        out.append((k.decode() if isinstance(k, bytes) else k, rec))
    return out


def check_redis(cfg: DoctorConfig, client: redis.Redis | None, redis_error: str | None,
                explained_by: str | None, now_ms: int) -> Check:
    """``explained_by``: an earlier failing layer that would make books stale (then a warn)."""
    title = _TITLES["redis"]
    if client is None:
        return Check(5, "redis", title, FAIL, f"Redis unreachable at {cfg.redis_url}: "
                     f"{redis_error}")
    try:
        books = _books(client)
    except (redis.RedisError, OSError) as e:
        return Check(5, "redis", title, FAIL, f"Redis error while reading books: {e}")
    findings: list[Finding] = []
    for key, rec in sorted(books):
        name = key.removeprefix("md:book:")
        if rec is None or not isinstance(rec.get("ts"), int):
            findings.append(Finding(name, FAIL, "unreadable book record"))
            continue
        age = now_ms - rec["ts"]
        data = {"key": key, "ts": rec["ts"], "age_ms": age, "seq": rec.get("seq"),
                "book_status": rec.get("status")}
        if age > cfg.book_stale_s * 1000:
            detail = f"stale: last update {_age(age)} ago (> {_age(cfg.book_stale_s * 1000)})"
            if explained_by:
                findings.append(Finding(name, WARN, f"{detail}; layer {_NUMBERS[explained_by]} "
                                        f"({explained_by}) is failing", data))
            else:
                findings.append(Finding(name, FAIL, detail, data))
        elif rec.get("status") != "ok":
            findings.append(Finding(name, WARN, f"book status {rec.get('status')} "
                                    f"(updated {_age(max(age, 0))} ago)", data))
        else:
            findings.append(Finding(name, OK, f"updated {_age(max(age, 0))} ago, seq "
                                    f"{rec.get('seq')}", data))
    if not findings:
        return Check(5, "redis", title, WARN, "Redis answers; no book in Redis yet")
    status = _worst(f.status for f in findings)
    bad = [f.name for f in findings if f.status == FAIL]
    summary = (f"{len(bad)} of {len(findings)} books stale: {', '.join(bad[:5])}" if bad else
               f"Redis answers; {len(findings)} books, "
               f"{sum(1 for f in findings if f.status == OK)} fresh and ok")
    return Check(5, "redis", title, status, summary, findings)


# -- (6) recovery ----------------------------------------------------------------------------------
def _store_sets(root: Path) -> dict[str, list[Path]]:
    """``{flow: part files}``: ``root/{flow}/part-*.sqlite3``, or ``root/part-*`` as one set."""
    sets: dict[str, list[Path]] = {}
    direct = sorted(root.glob("part-*.sqlite3"))
    if direct:
        sets[root.name] = direct
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        parts = sorted(sub.glob("part-*.sqlite3"))
        if parts:
            sets[sub.name] = parts
    return sets


def _utc_seconds(text: str) -> float:
    """SQLite ``CURRENT_TIMESTAMP`` (UTC, ``YYYY-MM-DD HH:MM:SS``) → epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def read_store(path: Path, timeout_s: float = 2.0) -> dict[str, Any]:
    """One Bytewax recovery partition (schema of ``bytewax.recovery``): part count, newest
    snapshot time, resume and commit epochs. Opened read-only: never disturbs a running flow."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout_s)
    try:
        part = con.execute("SELECT part_index, part_count FROM parts").fetchone()
        newest, n_snaps = con.execute("SELECT max(created_at), count(*) FROM snaps").fetchone()
        epoch = con.execute("SELECT max(snap_epoch) FROM snaps").fetchone()[0]
        resume = con.execute("SELECT max(resume_epoch) FROM exs").fetchone()[0]
        commit = con.execute("SELECT max(commit_epoch) FROM commits").fetchone()[0]
    finally:
        con.close()
    return {"part_index": part[0] if part else None, "part_count": part[1] if part else None,
            "newest": _utc_seconds(newest) if newest else None, "snaps": n_snaps,
            "snap_epoch": epoch, "resume_epoch": resume, "commit_epoch": commit}


def check_recovery(cfg: DoctorConfig, down: set[str], now_ms: int) -> Check:
    title = _TITLES["recovery"]
    if not cfg.recovery_dir:
        return Check(6, "recovery", title, SKIP, "recovery not configured (MD_RECOVERY_DIR)")
    root = Path(cfg.recovery_dir)
    if not root.is_dir():
        return Check(6, "recovery", title, FAIL, f"recovery directory {root} does not exist")
    sets = _store_sets(root)
    if not sets:
        return Check(6, "recovery", title, FAIL,
                     f"no recovery store in {root} (python -m bytewax.recovery DIR N)")
    findings: list[Finding] = []
    for flow, parts in sets.items():
        try:
            infos = [read_store(p, cfg.timeout_s) for p in parts]
        except (sqlite3.Error, ValueError) as e:
            findings.append(Finding(flow, FAIL, f"store unreadable: {e}",
                                    {"dir": str(parts[0].parent)}))
            continue
        counts = {i["part_count"] for i in infos}
        indexes = {i["part_index"] for i in infos}
        newest = max((i["newest"] for i in infos if i["newest"] is not None), default=None)
        data = {"dir": str(parts[0].parent), "parts": len(parts),
                "snap_epoch": max((i["snap_epoch"] or 0 for i in infos), default=0),
                "resume_epoch": max((i["resume_epoch"] or 0 for i in infos), default=0),
                "newest": newest}
        if len(counts) != 1 or None in counts or indexes != set(range(next(iter(counts)) or 0)):
            findings.append(Finding(flow, FAIL, f"inconsistent store: {len(parts)} files, part "
                                    f"counts {sorted(c or 0 for c in counts)}", data))
            continue
        if newest is None:
            findings.append(Finding(flow, WARN, "no snapshot taken yet", data))
            continue
        age = now_ms - newest * 1000
        data["age_ms"] = age
        if age > cfg.recovery_stale_s * 1000:
            detail = (f"newest snapshot {_age(age)} ago (> {_age(cfg.recovery_stale_s * 1000)}),"
                      f" epoch {data['snap_epoch']}")
            if flow in down:
                findings.append(Finding(flow, WARN, f"{detail}; flow {flow} is not running", data))
            else:
                findings.append(Finding(flow, FAIL, detail, data))
        else:
            findings.append(Finding(flow, OK, f"newest snapshot {_age(max(age, 0))} ago, epoch "
                                    f"{data['snap_epoch']}", data))
    status = _worst(f.status for f in findings)
    bad = [f"{f.name}: {f.detail}" for f in findings if f.status == FAIL]
    summary = "; ".join(bad[:3]) if bad else f"{len(findings)} store sets in {root}"
    return Check(6, "recovery", title, status, summary, findings)


# -- the whole diagnosis ---------------------------------------------------------------------------
def _connect_redis(cfg: DoctorConfig) -> tuple[redis.Redis | None, str | None]:
    client = redis.Redis.from_url(cfg.redis_url, socket_timeout=cfg.timeout_s,
                                  socket_connect_timeout=cfg.timeout_s)
    try:
        client.ping()
    except (redis.RedisError, OSError) as e:
        client.close()
        return None, str(e) or type(e).__name__
    return client, None


def diagnose(cfg: DoctorConfig, now_ms: int | None = None) -> Report:
    """Run the six checks in order; ``now_ms`` fixes the clock (tests). Otherwise each check
    reads the clock when it starts: the Kafka lag sampling takes seconds, and the books' ages
    measured from the doctor's start read negative."""

    def clock() -> int:
        return time.time_ns() // 1_000_000 if now_ms is None else now_ms

    now = clock()
    client, redis_error = _connect_redis(cfg)
    try:
        hbs = heartbeat.read_all(client) if client is not None else None
        flows, down = check_flows(cfg, hbs, now, redis_error)
        kafka = check_kafka(cfg, down, hbs)
        logs = check_logs(cfg, now)
        feeds = check_feeds(cfg, hbs, down, now)
        cause = next((name for name, bad in (
            ("flows", bool(down & set(BOOK_FLOWS))), ("kafka", kafka.status == FAIL),
            ("feeds", feeds.status == FAIL)) if bad), None)
        store = check_redis(cfg, client, redis_error, cause, clock())
        recovery = check_recovery(cfg, down, clock())
    finally:
        if client is not None:
            client.close()
    settings = {k: v for k, v in asdict(cfg).items()}
    settings["flows"] = list(cfg.flows)
    return Report([flows, kafka, logs, feeds, store, recovery], now, settings)


# -- output ----------------------------------------------------------------------------------------
_COLOURS = {OK: "\x1b[32m", WARN: "\x1b[33m", FAIL: "\x1b[1;31m", SKIP: "\x1b[2m"}
_RESET = "\x1b[0m"
MAX_SHOWN = 8  # findings per check in the table, unless verbose


def render(report: Report, colour: bool = False, verbose: bool = False) -> str:
    """The human table: one row per layer, then the findings that are not ok (all if verbose)."""

    def paint(status: str, text: str) -> str:
        return f"{_COLOURS[status]}{text}{_RESET}" if colour else text

    stamp = datetime.fromtimestamp(report.time_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [f"marketdata doctor  {stamp}  kafka {report.settings['kafka_bootstrap']}  "
             f"redis {report.settings['redis_url']}", "",
             f" #  {'LAYER':<9} {'STATUS':<6}  CHECK / FINDING"]
    for c in report.checks:
        lines.append(f" {c.layer}  {c.name:<9} {paint(c.status, c.status.upper().ljust(6))}  "
                     f"{c.title}: {c.summary}")
        shown = [f for f in c.findings if verbose or f.status in (WARN, FAIL)]
        for f in shown if verbose else shown[:MAX_SHOWN]:
            lines.append(f"    {'':<9} {paint(f.status, f.status.upper().ljust(6))}  "
                         f"  {f.name}: {f.detail}")
        if not verbose and len(shown) > MAX_SHOWN:
            lines.append(f"    {'':<9} {'':<6}    ... and {len(shown) - MAX_SHOWN} more (-v)")
    lines.append("")
    if report.ok:
        lines.append(paint(OK, "healthy: no layer is failing"))
    else:
        first = next(c for c in report.checks if c.status == FAIL)
        lines.append(paint(FAIL, f"FAILING: {', '.join(report.failing)} — start at layer "
                                 f"{first.layer} ({first.name}): {first.summary}"))
    return "\n".join(lines)


def _config_from_args(args: argparse.Namespace) -> DoctorConfig:
    overrides = {k: getattr(args, k, None) for k in DoctorConfig.__dataclass_fields__}
    flows = overrides.get("flows")
    if flows is not None:
        overrides["flows"] = _names(flows)
    return DoctorConfig.from_env(**overrides)


def _cmd_doctor(args: argparse.Namespace) -> int:
    report = diagnose(_config_from_args(args))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        print(render(report, colour=colour, verbose=args.verbose))
    return 0 if report.ok else 1


def register(subparsers: Any) -> None:
    """Add ``doctor`` to the ``marketdata`` CLI."""
    d = DoctorConfig()
    p = subparsers.add_parser(
        "doctor", help="find the failing layer: flows, Kafka, logs, feeds, Redis, recovery",
        description=__doc__.split("\n\n", 1)[1].replace("``", "") if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("-v", "--verbose", action="store_true", help="list every finding, not only "
                   "the bad ones")
    g = p.add_argument_group("where to look (default: MD_* variables)")
    g.add_argument("--kafka-bootstrap", dest="kafka_bootstrap")
    g.add_argument("--redis-url", dest="redis_url")
    g.add_argument("--topic-prefix", dest="topic_prefix")
    g.add_argument("--recovery-dir", dest="recovery_dir")
    g.add_argument("--log-dir", dest="log_dir", help="flow logs (MD_LOG_DIR, "
                   "$MD_STATE_DIR/logs, .state/logs)")
    g.add_argument("--flows", help=f"flows expected to run (MD_DOCTOR_FLOWS, "
                   f"{','.join(DEFAULT_FLOWS)})")
    g.add_argument("--group-template", dest="group_template",
                   help=f"consumer group per flow ({d.group_template})")
    t = p.add_argument_group("thresholds")
    t.add_argument("--hb-stale-s", dest="hb_stale_s", type=float,
                   help=f"heartbeat older than this: process dead ({d.hb_stale_s:g})")
    t.add_argument("--max-lag", dest="max_lag", type=int,
                   help=f"messages behind per flow ({d.max_lag})")
    t.add_argument("--lag-sample-s", dest="lag_sample_s", type=float,
                   help=f"seconds between two lag samples, 0 for one ({d.lag_sample_s:g})")
    t.add_argument("--log-window-s", dest="log_window_s", type=float,
                   help=f"how far back log errors count ({d.log_window_s:g})")
    t.add_argument("--feed-stale-s", dest="feed_stale_s", type=float,
                   help=f"feed without a frame for this long: stalled ({d.feed_stale_s:g})")
    t.add_argument("--book-stale-s", dest="book_stale_s", type=float,
                   help=f"book not updated for this long: stale ({d.book_stale_s:g})")
    t.add_argument("--recovery-stale-s", dest="recovery_stale_s", type=float,
                   help=f"newest recovery snapshot older than this ({d.recovery_stale_s:g})")
    t.add_argument("--timeout-s", dest="timeout_s", type=float,
                   help=f"per connection attempt ({d.timeout_s:g})")
    p.set_defaults(func=_cmd_doctor)


def main(argv: list[str] | None = None) -> int:
    """``python -m marketdata.doctor`` (the same as ``marketdata doctor``)."""
    parser = argparse.ArgumentParser(prog="marketdata")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["doctor", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
