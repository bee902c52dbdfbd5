"""Files as a source and a sink, so the very same flows run over recordings (replay, backfill).

The source yields the same ``(key, value, timestamp)`` messages as the Kafka source, one
partition, resumable at a line number; lines for other flows (a trade in the order book's replay)
are skipped here as a topic would never carry them, unknown ones pass on to be dead-lettered.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.kafka import Message

__all__ = ["DiscardSink", "JsonLinesSink", "ReplaySource", "open_lines"]

_KNOWN_TYPES = frozenset({"book", "trade"})
# What went wrong in this process's replays, for the CLI to say in one line once the flow is done:
# an exception inside a Bytewax step prints a Rust panic and two tracebacks instead.
READ_ERRORS: list[str] = []  # an input that could not be read to its end (truncated gzip, ...)
BROKEN_PIPES: list[str] = []  # an output whose reader went away (`| head`)


def open_lines(path: str | Path) -> IO[bytes]:
    """Open a JSON-lines file, gzip-compressed when its name ends in ``.gz``; ``-`` is standard
    input (gzip-compressed when it starts with gzip's magic bytes), for pipelines such as
    ``marketdata normalize ... --output - | marketdata replay ... --input -``."""
    if str(path) == "-":
        stdin = sys.stdin.buffer
        if isinstance(stdin, io.BufferedReader) and stdin.peek(2)[:2] == b"\x1f\x8b":
            return gzip.open(stdin, "rb")  # type: ignore[return-value]
        return stdin
    p = Path(path)
    return gzip.open(p, "rb") if p.suffix == ".gz" else p.open("rb")  # type: ignore[return-value]


def event_key_and_type(line: bytes) -> tuple[bytes | None, Any]:
    """``(b"ex:SYM" or None, the "type" field)`` of one JSON line; ``(None, None)`` if it is not
    a JSON object."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, None
    if type(obj) is not dict:
        return None, None
    ex, sym = obj.get("ex"), obj.get("sym")
    key = f"{ex}:{sym}".encode() if isinstance(ex, str) and isinstance(sym, str) else None
    return key, obj.get("type")


class _Part(StatefulSourcePartition[Message, int]):
    def __init__(self, path: Path, want: str, batch: int, resume: int | None) -> None:
        self.fh = open_lines(path)
        self.want = want
        self.batch = batch
        self.pos = 0
        self.lines: Iterator[bytes] = iter(self.fh)
        for _ in range(resume or 0):
            next(self.lines, None)
            self.pos += 1

    def next_batch(self) -> list[Message]:
        out: list[Message] = []
        try:
            for line in self.lines:
                self.pos += 1
                line = line.rstrip(b"\r\n")
                if not line.strip():
                    continue
                key, kind = event_key_and_type(line)
                if kind in _KNOWN_TYPES and kind != self.want:
                    continue
                out.append((key, line))
                if len(out) >= self.batch:
                    return out
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            READ_ERRORS.append(f"after line {self.pos}: {e}")
            self.lines = iter(())  # what was read goes through the flow; then the end
        if not out:
            raise StopIteration
        return out

    def snapshot(self) -> int:
        return self.pos

    def close(self) -> None:
        self.fh.close()


class ReplaySource(FixedPartitionedSource[Message, int]):
    """Canonical events from a file, in file order, for the flow that consumes ``want`` events."""

    def __init__(self, path: str | Path, want: str, batch_size: int = 1000) -> None:
        self.path = Path(path)
        self.want = want
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return [str(self.path)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Part:
        return _Part(self.path, self.want, self.batch_size, resume_state)


class _SinkPart(StatelessSinkPartition[dict[str, Any]]):
    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh

    def write_batch(self, items: list[dict[str, Any]]) -> None:
        try:
            self.fh.write(b"".join(orjson.dumps(r) + b"\n" for r in items))
        except BrokenPipeError:
            self._broken()

    def _broken(self) -> None:
        """The reader went away (``| head``): what follows goes nowhere, as Unix tools stop,
        the interpreter's own flush at exit included."""
        BROKEN_PIPES.append(str(getattr(self.fh, "name", "?")))
        os.dup2(os.open(os.devnull, os.O_WRONLY), self.fh.fileno())

    def close(self) -> None:
        try:
            self.fh.flush()
        except BrokenPipeError:
            self._broken()
            self.fh.flush()
        if self.fh.fileno() > 2:
            self.fh.close()


class JsonLinesSink(DynamicSink[dict[str, Any]]):
    """Records as compact JSON lines (``-`` is standard output; gzip-compressed when the name
    ends in ``.gz``). Meant for one worker."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SinkPart:
        if self.path == "-":
            return _SinkPart(sys.stdout.buffer)
        if self.path.endswith(".gz"):  # as the input side reads it
            return _SinkPart(gzip.open(self.path, "wb"))  # type: ignore[arg-type]
        return _SinkPart(open(self.path, "wb"))  # closed by the partition


class _Discard(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        pass


class DiscardSink(DynamicSink[Any]):
    """Drops items: replay without a dead-letter file (the flow's metrics still count them)."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Discard:
        return _Discard()
