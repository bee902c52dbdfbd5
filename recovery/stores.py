"""Bytewax 0.21.1 SQLite recovery stores: create, read, explain and validate them, per flow.

A flow's store is a directory of ``part-N.sqlite3`` files (one set per flow, default
``$MD_RECOVERY_DIR/<flow>``). Bytewax routes each state key's snapshots to one partition, so the
partition count is fixed for the life of the store; the worker count may change between runs.

What Bytewax itself does with a bad store is panic deep inside its Rust runtime (a traceback wall
that never names the file), or worse, silently start afresh: a source partition whose name is not
in the store (a changed topic) simply starts at ``MD_START`` while the old offsets are ignored.
:func:`check` catches these before the flow starts and says what to do, and :func:`inspect` reads
what the next resume will load: the resume epoch, the snapshots per step and the Kafka offsets.

The resume rule mirrors Bytewax's (``src/recovery.rs``): take the newest execution; each of its
workers' frontier (default: the execution's own resume epoch when a worker never reported); the
resume epoch is the minimum. Each ``(step, key)`` resumes from its newest snapshot with an epoch
strictly below it; a ``NULL`` snapshot means the key was discarded.
"""

from __future__ import annotations

import argparse
import pickle
import re
import shutil
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_PARTITIONS",
    "PartFile",
    "StoreError",
    "StoreInfo",
    "active_store",
    "check",
    "check_or_exit",
    "flow_dir",
    "init",
    "inspect",
    "read_store",
    "reset",
    "snapshots",
    "source_step",
]

DEFAULT_PARTITIONS = 16
"""Well above any worker count we run: a store's partition count never changes."""
FLOWS = ("orderbook", "candles", "ticker")  # the flows that keep state, so have a store

_PART_NAME = re.compile(r"^part-(\d+)\.sqlite3$")


class StoreError(Exception):
    """A store cannot be used as is; the message says why and what to do."""


@dataclass(frozen=True)
class PartFile:
    """One partition file as found on disk (``index``/``count`` from its ``parts`` table)."""

    path: Path
    index: int | None
    count: int | None
    size: int
    error: str | None = None


@dataclass
class StepSnapshots:
    """The snapshots of one step that the next resume loads."""

    keys: int = 0  # live keys (a discarded key is not counted)
    discarded: int = 0
    size: int = 0  # bytes of pickled state
    newest_epoch: int = 0


@dataclass
class StoreInfo:
    """Everything :func:`inspect` reports about a store; ``problems`` empty means usable."""

    dir: Path
    parts: list[PartFile] = field(default_factory=list)
    part_count: int | None = None
    problems: list[str] = field(default_factory=list)
    executions: list[tuple[int, int, int]] = field(default_factory=list)  # ex, workers, resume
    fronts: dict[tuple[int, int], int] = field(default_factory=dict)  # (ex, worker) -> frontier
    commits: dict[int, int] = field(default_factory=dict)  # partition -> committed epoch
    resume_epoch: int | None = None  # None: nothing to resume, the flow starts afresh
    steps: dict[str, StepSnapshots] = field(default_factory=dict)
    epochs: dict[int, tuple[int, int]] = field(default_factory=dict)  # epoch -> (rows, bytes)
    offsets: dict[str, int | None] = field(default_factory=dict)  # "topic#p" -> next offset
    newest_snapshot_at: datetime | None = None
    total_bytes: int = 0

    @property
    def usable(self) -> bool:
        return not self.problems

    @property
    def last_execution(self) -> tuple[int, int, int] | None:
        return max(self.executions) if self.executions else None


def flow_dir(root: str | Path, flow: str) -> Path:
    """The store of ``flow`` under the recovery root (``MD_RECOVERY_DIR``)."""
    if not str(root):
        raise StoreError("no recovery directory configured (set MD_RECOVERY_DIR or --dir)")
    return Path(root) / flow


def source_step(flow: str) -> str:
    """The step id of a flow's Kafka source (``dataflows.common.build_flow`` names it ``in``)."""
    return f"{flow}.in"


def _part_files(d: Path) -> list[Path]:
    # Bytewax opens every ``*.sqlite3`` in the directory, whatever its name.
    return sorted(p for p in d.iterdir() if p.suffix == ".sqlite3" and p.is_file())


def init(d: str | Path, partitions: int = DEFAULT_PARTITIONS) -> Path:
    """Create an empty store of ``partitions`` files; refuses to touch an existing one."""
    from bytewax.recovery import init_db_dir

    if partitions < 1:
        raise StoreError(f"the partition count must be at least 1, not {partitions}")
    path = Path(d)
    path.mkdir(parents=True, exist_ok=True)
    existing = _part_files(path)
    if existing:
        raise StoreError(
            f"{path} already holds a recovery store ({len(existing)} files); "
            "use `marketdata recovery reset` to start over"
        )
    init_db_dir(path, partitions)
    return path


def holds_store(d: str | Path) -> bool:
    """Whether ``d`` holds a store's partition files (usable or not)."""
    path = Path(d)
    return path.is_dir() and bool(_part_files(path))


def reset(d: str | Path, partitions: int | None = None) -> int:
    """Delete the store's files and re-create it empty (same partition count unless given).

    Returns the partition count. Every flow process using the store must be stopped first.
    """
    path = Path(d)
    count = partitions
    if count is None:
        info = read_store(path) if path.is_dir() else None
        counts = {p.count for p in (info.parts if info else []) if p.count}
        count = max(counts) if counts else DEFAULT_PARTITIONS
    if path.is_dir():
        for p in path.iterdir():
            if p.name.endswith((".sqlite3", ".sqlite3-wal", ".sqlite3-shm")):
                p.unlink()
    init(path, count)
    return count


def _connect(path: Path) -> sqlite3.Connection:
    # Read-only over a live store: WAL readers never block Bytewax's writers.
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    conn.execute("PRAGMA query_only = ON")
    return conn


def _read_part(path: Path) -> tuple[PartFile, sqlite3.Connection | None]:
    size = path.stat().st_size
    try:
        conn = _connect(path)
        rows = conn.execute("SELECT part_index, part_count FROM parts").fetchall()
    except sqlite3.DatabaseError as e:
        return PartFile(path, None, None, size, f"not a Bytewax recovery partition ({e})"), None
    if len(rows) != 1:
        conn.close()
        return PartFile(path, None, None, size, f"{len(rows)} rows in its parts table, not 1"), None
    (index, count), = rows
    return PartFile(path, int(index), int(count), size), conn


def _consistency(info: StoreInfo) -> None:
    """Fill ``part_count`` and ``problems`` from the partition files alone."""
    if not info.parts:
        info.problems.append(f"no recovery partition files (*.sqlite3) in {info.dir}")
        return
    for p in info.parts:
        if p.error:
            info.problems.append(f"{p.path.name}: {p.error}")
    good = [p for p in info.parts if p.error is None]
    counts = sorted({p.count for p in good if p.count is not None})
    if len(counts) > 1:
        by = ", ".join(f"{p.path.name}={p.count}" for p in good)
        info.problems.append(f"inconsistent partition counts ({by}): files from different stores")
        return
    if not counts:
        return
    info.part_count = count = counts[0]
    seen: dict[int, list[str]] = defaultdict(list)
    for p in good:
        seen[p.index or 0].append(p.path.name)
        m = _PART_NAME.match(p.path.name)
        if m and int(m.group(1)) != p.index:
            info.problems.append(f"{p.path.name} holds partition {p.index}: a renamed file")
    for idx, names in sorted(seen.items()):
        if len(names) > 1:
            info.problems.append(f"partition {idx} is in several files: {', '.join(names)}")
    missing = [i for i in range(count) if i not in seen]
    if missing:
        shown = ", ".join(f"part-{i}.sqlite3" for i in missing[:8])
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        info.problems.append(f"{len(missing)} of {count} partition files missing: {shown}{more}")


def _resume_epoch(info: StoreInfo) -> int | None:
    """Bytewax's rule: the minimum frontier over the newest execution's workers."""
    last = info.last_execution
    if last is None:
        return None
    ex, workers, resume = last
    return min(max(info.fronts.get((ex, w), resume), resume) for w in range(workers))


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def read_store(d: str | Path, source: str | None = None) -> StoreInfo:
    """Read a store without changing it; ``source`` is the source step id to decode offsets of."""
    info = StoreInfo(Path(d))
    if not info.dir.is_dir():
        info.problems.append(f"no recovery store at {info.dir} (directory missing)")
        return info
    conns: list[sqlite3.Connection] = []
    for path in _part_files(info.dir):
        part, conn = _read_part(path)
        info.parts.append(part)
        info.total_bytes += part.size
        if conn is not None:
            conns.append(conn)
    _consistency(info)
    try:
        for conn in conns:
            _read_progress(conn, info)
        info.resume_epoch = _resume_epoch(info)
        for conn in conns:
            _read_snaps(conn, info, source)
    except sqlite3.DatabaseError as e:
        info.problems.append(f"unreadable recovery partition: {e}")
    finally:
        for conn in conns:
            conn.close()
    return info


def _read_progress(conn: sqlite3.Connection, info: StoreInfo) -> None:
    info.executions.extend(
        (int(a), int(b), int(c))
        for a, b, c in conn.execute("SELECT ex_num, worker_count, resume_epoch FROM exs")
    )
    for ex, w, f in conn.execute("SELECT ex_num, worker_index, worker_frontier FROM fronts"):
        info.fronts[(int(ex), int(w))] = int(f)
    for part, epoch in conn.execute("SELECT part_index, commit_epoch FROM commits"):
        info.commits[int(part)] = int(epoch)


_RESUME_ROWS = (
    "SELECT s.step_id, s.state_key, s.ser_change, s.snap_epoch FROM snaps s JOIN ("
    " SELECT step_id, state_key, MAX(snap_epoch) AS e FROM snaps WHERE snap_epoch < ?"
    " GROUP BY step_id, state_key) m"
    " ON s.step_id = m.step_id AND s.state_key = m.state_key AND s.snap_epoch = m.e"
)


def _read_snaps(conn: sqlite3.Connection, info: StoreInfo, source: str | None) -> None:
    for epoch, rows, size, newest in conn.execute(
        "SELECT snap_epoch, COUNT(*), COALESCE(SUM(LENGTH(ser_change)), 0), MAX(created_at) "
        "FROM snaps GROUP BY snap_epoch"
    ):
        r0, s0 = info.epochs.get(int(epoch), (0, 0))
        info.epochs[int(epoch)] = (r0 + int(rows), s0 + int(size))
        at = _parse_time(newest)
        if at and (info.newest_snapshot_at is None or at > info.newest_snapshot_at):
            info.newest_snapshot_at = at
    if info.resume_epoch is None:
        return
    # The rows the next resume loads: per (step, key) the newest epoch below the resume epoch.
    for step, key, blob, epoch in conn.execute(_RESUME_ROWS, (info.resume_epoch,)):
        st = info.steps.setdefault(step, StepSnapshots())
        st.newest_epoch = max(st.newest_epoch, int(epoch))
        if blob is None:
            st.discarded += 1
            continue
        st.keys += 1
        st.size += len(blob)
        if step == source:
            info.offsets[key] = _offset(blob)


def snapshots(d: str | Path, step: str | None = None) -> dict[tuple[str, str], bytes | None]:
    """The raw snapshots the next resume loads, ``(step, key) -> pickle`` (``None``: discarded)."""
    info = read_store(d)
    if info.problems:
        raise StoreError("; ".join(info.problems))
    out: dict[tuple[str, str], bytes | None] = {}
    if info.resume_epoch is None:
        return out
    for p in info.parts:
        conn = _connect(p.path)
        try:
            for st, key, blob, _epoch in conn.execute(_RESUME_ROWS, (info.resume_epoch,)):
                if step is None or st == step:
                    out[(st, key)] = blob
        finally:
            conn.close()
    return out


def _offset(blob: bytes) -> int | None:
    """A Kafka source partition's snapshot: the pickled next offset (``None``: not started)."""
    value: Any = pickle.loads(blob)  # our own store, written by our own source
    return value if value is None or isinstance(value, int) else None


def inspect(flow: str, d: str | Path, topics: list[str] | None = None) -> StoreInfo:
    """:func:`read_store` with the flow's source offsets decoded, plus why it is unusable;
    with ``topics`` (what the flow would read now), also when its offsets are for others."""
    info = read_store(d, source_step(flow))
    _check_flow(flow, info)
    stored = _topics(info.offsets)
    if topics is not None and stored and stored != set(topics):
        info.problems.append(
            f"it holds Kafka offsets of topics {sorted(stored)}, but the flow now reads "
            f"{sorted(set(topics))}: resuming would re-read or skip data (run with the original "
            f"MD_TOPIC_PREFIX, or reset the store)")
    return info


def _check_flow(flow: str, info: StoreInfo) -> None:
    foreign = sorted(s for s in info.steps if not s.startswith(f"{flow}."))
    if not foreign:
        return
    owners = sorted({s.partition(".")[0] for s in foreign} & set(FLOWS))
    whose = (f"the {' and '.join(owners)} flow's store ({', '.join(foreign[:3])}): give "
             f"the {flow} flow a store directory of its own" if owners else
             f"state of other steps ({', '.join(foreign[:3])}): it belongs to another flow, or "
             f"step ids changed (state under old step ids is never loaded)")
    info.problems.append(f"the store holds {whose}")


def _topics(parts: dict[str, int | None]) -> set[str]:
    return {k.rpartition("#")[0] for k, v in parts.items() if v is not None}


def check(flow: str, d: str | Path, topics: list[str]) -> StoreInfo:
    """Raise :class:`StoreError` unless ``flow`` reading ``topics`` can resume from store ``d``.

    Fails when the directory or a partition file is missing, files disagree on the partition
    count or come from another store, the state belongs to other step ids, or the stored Kafka
    offsets are for another set of topics (the flow would silently re-read or skip data).
    """
    info = inspect(flow, d)
    fix_missing = (
        f"create it with `marketdata recovery init {flow} --dir {info.dir}`"
        if not info.parts
        else f"restore the missing files from backup, or start over with "
        f"`marketdata recovery reset {flow} --dir {info.dir} --yes`"
    )
    if info.problems:
        lines = "\n  - ".join(info.problems)
        raise StoreError(f"recovery store {info.dir} for flow {flow!r} is unusable:\n"
                         f"  - {lines}\n  Fix: {fix_missing}.")
    stored = _topics(info.offsets)
    if stored and stored != set(topics):
        raise StoreError(
            f"recovery store {info.dir} for flow {flow!r} holds Kafka offsets of topics "
            f"{sorted(stored)}, but the flow now reads {sorted(set(topics))}: resuming would "
            f"re-read or skip data. Run with the original topics (MD_TOPIC_PREFIX), or start over "
            f"with `marketdata recovery reset {flow} --dir {info.dir} --yes`."
        )
    return info


def check_or_exit(flow: str, d: str | Path, topics: list[str]) -> None:
    """:func:`check` for a flow's ``build()``: a one-paragraph message and exit, no traceback."""
    try:
        check(flow, d, topics)
    except StoreError as e:
        raise SystemExit(f"error: {e}") from None


def age_s(info: StoreInfo, now: float | None = None) -> float | None:
    """Seconds since the newest snapshot was written (SQLite stamps whole seconds, UTC)."""
    if info.newest_snapshot_at is None:
        return None
    return max(0.0, (now if now is not None else time.time()) - info.newest_snapshot_at.timestamp())


def describe(flow: str, info: StoreInfo) -> list[str]:
    """Human-readable report lines for ``marketdata recovery inspect``."""
    out = [f"store       {info.dir}"]
    out.append(f"partitions  {info.part_count or '?'} "
               f"({len(info.parts)} files, {info.total_bytes / 1024:.1f} KiB)")
    last = info.last_execution
    if last is None:
        out.append("executions  none: the next run starts afresh (MD_START)")
    else:
        ex, workers, resume = last
        out.append(f"executions  {len(info.executions)}; last #{ex} ran {workers} workers "
                   f"from epoch {resume}")
        fr = [info.fronts.get((ex, w)) for w in range(workers)]
        out.append(f"frontiers   {fr}  -> next resume epoch {info.resume_epoch}")
    if info.epochs:
        rows = sum(r for r, _ in info.epochs.values())
        size = sum(s for _, s in info.epochs.values())
        newest = max(info.epochs)
        out.append(f"snapshots   {rows} rows, {size / 1024:.1f} KiB in epochs "
                   f"{min(info.epochs)}..{newest}; newest epoch {newest}: "
                   f"{info.epochs[newest][0]} rows, {info.epochs[newest][1] / 1024:.1f} KiB")
    a = age_s(info)
    if a is not None:
        out.append(f"age         newest snapshot written {a:.0f} s ago "
                   f"({info.newest_snapshot_at:%Y-%m-%d %H:%M:%S} UTC)")
    for step, st in sorted(info.steps.items()):
        out.append(f"step        {step}: {st.keys} keys ({st.size / 1024:.1f} KiB), "
                   f"{st.discarded} discarded, newest epoch {st.newest_epoch}")
    if info.offsets:
        out.append("resume at   (Kafka offsets the next run starts from)")
        out.extend(f"  {k:<40} {'start per MD_START' if v is None else v}"
                   for k, v in sorted(info.offsets.items(), key=lambda kv: _part_sort(kv[0])))
    if info.problems:
        out.append("UNUSABLE:")
        out.extend(f"  - {p}" for p in info.problems)
    else:
        out.append("status      usable")
    return out


def _part_sort(part: str) -> tuple[str, int]:
    topic, _, idx = part.rpartition("#")
    return topic, int(idx) if idx.isdigit() else -1


def remove(d: str | Path) -> None:
    """Delete a store directory entirely (tests, benchmarks)."""
    shutil.rmtree(d, ignore_errors=True)


def _run_parser() -> argparse.ArgumentParser:
    """The options of ``python -m bytewax.run`` (0.21), parsed as it parses them: argparse, so
    ``--recovery-dir X`` (a prefix), ``-rX`` and ``--recovery-directory=X`` all count."""
    p = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    p.add_argument("import_str", nargs="?")
    p.add_argument("-r", "--recovery-directory")
    for short, long in (("-s", "--snapshot-interval"), ("-b", "--backup-interval"),
                        ("-w", "--workers-per-process"), ("-i", "--process-id"),
                        ("-a", "--addresses")):
        p.add_argument(short, long)
    return p


def _bytewax_run_store(argv: list[str], env: dict[str, str] | Any) -> tuple[bool, str | None]:
    """``(known, store)``: ``known`` when this process is ``bytewax.run`` and its arguments parse;
    ``store`` the recovery directory it was given (or its environment variable), if any."""
    if not argv or not argv[0].replace("\\", "/").endswith(("bytewax/run.py", "bytewax.run")):
        return False, None
    try:
        ns, _ = _run_parser().parse_known_args(argv[1:])
    except (argparse.ArgumentError, SystemExit):
        return False, None
    # As bytewax.run: the option wins over the variable, and an empty one is the current
    # directory (Path("")), not "no store".
    if ns.recovery_directory is not None:
        return True, ns.recovery_directory
    return True, env.get("BYTEWAX_RECOVERY_DIRECTORY")


def runs_without_recovery(argv: list[str], env: dict[str, str] | Any) -> bool:
    """True only when this process is surely ``python -m bytewax.run`` without a recovery store:
    nothing keeps the snapshots then (``run_main`` callers may pass a recovery config: unknown).
    """
    known, store = _bytewax_run_store(argv, env)
    return known and store is None


def active_store(argv: list[str], env: dict[str, str] | Any) -> Path | None:
    """The store ``python -m bytewax.run`` was given (``-r DIR`` or its environment variable).

    ``None`` outside ``bytewax.run`` (tests, replays) or when it runs without recovery: then
    there is nothing to check. ``MD_RECOVERY_DIR`` is not consulted: ``bytewax.run`` ignores it.
    """
    store = _bytewax_run_store(argv, env)[1]
    return None if store is None else Path(store)
