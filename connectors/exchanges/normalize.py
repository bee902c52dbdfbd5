"""``marketdata normalize``: run a feed handler over a recording instead of a socket.

The very same handler code as live ingestion turns the recorded frames into canonical events, one
compact JSON object a line (key order of DESIGN.md), dead letters included as ``deadletter``
records. Several ``--input`` files form one continuous session (e.g. a recording split at
midnight). A summary (frames, events, gaps, checksums, dead letters) goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import orjson

from connectors.exchanges import HANDLERS
from connectors.exchanges.base import Handler
from connectors.exchanges.recordings import Frame, RecordingError, read_frames

__all__ = ["main", "normalize_file", "normalize_files", "normalize_frames", "register", "run"]


def normalize_frames(handler: Handler, frames: Iterable[Frame]) -> Iterable[dict[str, Any]]:
    """Feed ``frames`` to ``handler``; yield what it emits, in order."""
    for fr in frames:
        if fr.kind == "rest":
            yield from handler.on_snapshot(fr.symbol, fr.raw, fr.rts)
        else:
            yield from handler.on_frame(fr.raw, fr.rts)


def normalize_files(exchange: str, paths: list[Path], out: IO[bytes],
                    seq_base: int = 0) -> dict[str, int]:
    """Normalize ``paths`` as one session of ``exchange`` into ``out``; return the stats.

    ``seq_base``: where the handler's own book numbers start (feeds without a sequence): 0
    counts from 1; a live session's base (ingestion logs it) reproduces its events exactly.
    """
    cls = HANDLERS.get(exchange)
    if cls is None:
        raise ValueError(f"unknown exchange {exchange!r}; one of {', '.join(sorted(HANDLERS))}")
    handler: Handler = cls()
    handler.seq_base = seq_base
    write = out.write
    dumps = orjson.dumps
    for path in paths:
        for ev in normalize_frames(handler, read_frames(path)):
            write(dumps(ev) + b"\n")
    stats = dict(handler.stats)
    stats["unsynced_at_end"] = len(handler.resync_needed())
    return stats


def normalize_file(exchange: str, path: Path, out: IO[bytes]) -> dict[str, int]:
    """Normalize one recording of ``exchange`` into ``out`` (JSON lines); return the stats."""
    return normalize_files(exchange, [Path(path)], out)


def register(subparsers: Any) -> None:
    """Add the ``normalize`` sub-command to the ``marketdata`` CLI."""
    p = subparsers.add_parser("normalize", help="normalize a recorded exchange session",
                              description=__doc__.splitlines()[0].replace("``", ""))
    p.add_argument("exchange", choices=sorted(HANDLERS), help="exchange of the recording")
    p.add_argument("--input", required=True, action="append", type=Path,
                   help="recording (repeat for a session split over several files)")
    p.add_argument("--output", required=True, help="events JSON lines file, '-' for stdout")
    p.set_defaults(func=run)


def _summary(exchange: str, stats: dict[str, int]) -> str:
    keys = ("frames", "events", "book_events", "trades", "snapshots", "gaps", "resyncs",
            "checksum_ok", "checksum_bad", "crossed", "deadletter", "dropped", "ignored",
            "stale_snapshot", "unsynced_at_end")
    return f"normalize {exchange}: " + " ".join(f"{k}={stats.get(k, 0)}" for k in keys)


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; 0 on success, 1 when no frame gave an event, 2 for unreadable
    input."""
    paths: list[Path] = args.input
    try:
        out = sys.stdout.buffer if args.output == "-" else open(args.output, "wb")  # noqa: SIM115
    except OSError as e:
        print(f"normalize: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return 2
    try:
        with contextlib.nullcontext(out) if args.output == "-" else out:
            stats = normalize_files(args.exchange, paths, out)
            out.flush()
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (RecordingError, OSError, EOFError, UnicodeDecodeError, ValueError) as e:
        print(f"normalize: cannot read input: {e}", file=sys.stderr)
        return 2
    print(_summary(args.exchange, stats), file=sys.stderr)
    if not stats.get("events") and stats.get("frames"):
        print(f"normalize: no event from {stats['frames']} frames: is this a recording of "
              f"{args.exchange}? (ignored={stats.get('ignored', 0)}, "
              f"deadletter={stats.get('deadletter', 0)})", file=sys.stderr)
        return 1  # nothing usable came out: a script must not go on as if it had
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m connectors.exchanges.normalize EXCHANGE ...``."""
    parser = argparse.ArgumentParser(prog="marketdata")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["normalize", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
