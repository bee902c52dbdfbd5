"""``marketdata recovery init|inspect|reset FLOW`` and ``marketdata run FLOW``.

A flow's store lives in ``$MD_RECOVERY_DIR/<flow>`` unless ``--dir`` names it. ``run`` validates
the store (:func:`recovery.stores.check`) and then replaces itself with
``python -m bytewax.run dataflows.<flow>:flow -r STORE -s S -b B ...``, so a wrong store fails in
one paragraph before any worker starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from recovery import stores

__all__ = ["FLOW_TOPICS", "main", "register", "register_run", "run_argv"]

FLOW_TOPICS = {"orderbook": "book", "candles": "trades", "ticker": "trades"}
"""The input topic (without ``MD_TOPIC_PREFIX``) of each flow that has a recovery store."""


def _root() -> str:
    return os.environ.get("MD_RECOVERY_DIR", "")


def _store(args: argparse.Namespace) -> Path:
    return Path(args.dir) if args.dir else stores.flow_dir(_root(), args.flow)


def _topics(flow: str) -> list[str]:
    prefix = os.environ.get("MD_TOPIC_PREFIX", "md.")
    return [f"{prefix}{FLOW_TOPICS[flow]}"]


def _fail(msg: str) -> int:
    print(f"marketdata: {msg}", file=sys.stderr)
    return 2


def cmd_init(args: argparse.Namespace) -> int:
    try:
        path = stores.init(_store(args), args.partitions)
    except stores.StoreError as e:
        return _fail(str(e))
    print(f"created {args.partitions} recovery partitions for {args.flow} in {path}")
    return 0


def _info_json(info: stores.StoreInfo) -> dict[str, Any]:
    return {
        "dir": str(info.dir),
        "usable": info.usable,
        "problems": info.problems,
        "partitions": info.part_count,
        "files": [{"name": p.path.name, "index": p.index, "count": p.count, "bytes": p.size,
                   "error": p.error} for p in info.parts],
        "executions": [{"ex": e, "workers": w, "resume_epoch": r} for e, w, r in info.executions],
        "resume_epoch": info.resume_epoch,
        "epochs": {str(e): {"rows": r, "bytes": b} for e, (r, b) in sorted(info.epochs.items())},
        "steps": {s: vars(st) for s, st in info.steps.items()},
        "offsets": info.offsets,
        "newest_snapshot_at": info.newest_snapshot_at.isoformat()
        if info.newest_snapshot_at else None,
        "age_s": stores.age_s(info),
        "bytes": info.total_bytes,
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    try:
        info = stores.inspect(args.flow, _store(args), _topics(args.flow))
    except stores.StoreError as e:
        return _fail(str(e))
    if args.json:
        print(json.dumps(_info_json(info), indent=2))
    else:
        print("\n".join(stores.describe(args.flow, info)))
    return 0 if info.usable else 1


def cmd_reset(args: argparse.Namespace) -> int:
    try:
        path = _store(args)
    except stores.StoreError as e:
        return _fail(str(e))
    if not stores.holds_store(path):  # a mistyped --dir or MD_RECOVERY_DIR: make nothing there
        return _fail(f"no recovery store in {path}: nothing to reset "
                     f"(`marketdata recovery init {args.flow}` creates one)")
    if not args.yes:
        return _fail(f"this deletes every snapshot in {path}: the {args.flow} flow would restart "
                     "from MD_START and re-emit everything. Stop its processes, then add --yes")
    count = stores.reset(path, args.partitions)
    print(f"reset {path}: {count} empty partitions")
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("flow", choices=sorted(FLOW_TOPICS))
    p.add_argument("--dir", help="the store directory itself (default: $MD_RECOVERY_DIR/FLOW)")


def register(sub: Any) -> None:
    """Add ``recovery init|inspect|reset`` and ``run`` to the ``marketdata`` sub-commands."""
    p = sub.add_parser("recovery", help="create, inspect or reset a flow's recovery store",
                       description="SQLite recovery stores, one set per flow in "
                       "$MD_RECOVERY_DIR/FLOW. The partition count is fixed for the life of a "
                       "store; the worker count may change between runs.")
    rsub = p.add_subparsers(dest="recovery_cmd", required=True)
    pi = rsub.add_parser("init", help="create an empty store")
    _add_common(pi)
    pi.add_argument("--partitions", type=int, default=stores.DEFAULT_PARTITIONS,
                    help="fixed for the store's life: keep it well above the total worker count "
                    "(default %(default)s)")
    pi.set_defaults(func=cmd_init)
    pn = rsub.add_parser("inspect", help="epochs, snapshot age and size, keys per step, the "
                         "Kafka offsets the next resume starts from, and why it is unusable")
    _add_common(pn)
    pn.add_argument("--json", action="store_true", help="machine-readable output")
    pn.set_defaults(func=cmd_inspect)
    pr = rsub.add_parser("reset", help="delete every snapshot and start the store over")
    _add_common(pr)
    pr.add_argument("--yes", action="store_true", help="really delete")
    pr.add_argument("--partitions", type=int, default=None,
                    help="new partition count (default: keep the current one)")
    pr.set_defaults(func=cmd_reset)
    register_run(sub)


def run_argv(args: argparse.Namespace, store: Path | None) -> list[str]:
    """The ``python -m bytewax.run`` command line that ``marketdata run`` executes."""
    argv = [sys.executable, "-m", "bytewax.run", f"dataflows.{args.flow}:flow"]
    if store is not None:
        argv += ["-r", str(store), "-s", str(args.snapshot_interval),
                 "-b", str(args.backup_interval)]
    elif args.snapshot_interval:
        argv += ["-s", str(args.snapshot_interval)]
    if args.workers:
        argv += ["-w", str(args.workers)]
    if args.process_id is not None:
        argv += ["-i", str(args.process_id), "-a", args.addresses]
    return argv


def cmd_run(args: argparse.Namespace) -> int:
    if args.process_id is not None and not args.addresses:
        return _fail("-i needs -a with every process's host:port")
    store: Path | None = None
    if not args.no_recovery and (args.dir or _root()):
        store = _store(args)
        if args.init and not any(store.glob("*.sqlite3")):
            stores.init(store, args.partitions)
        try:
            stores.check(args.flow, store, _topics(args.flow))
        except stores.StoreError as e:
            return _fail(str(e))
    argv = run_argv(args, store)
    print("exec " + " ".join(argv), file=sys.stderr)
    sys.stdout.flush()
    os.execv(argv[0], argv)
    return 0  # not reached


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise SystemExit(f"invalid {name}: {os.environ[name]!r}") from None


def register_run(sub: Any) -> None:
    """Add ``run FLOW``: validate the recovery store, then exec ``bytewax.run``."""
    p = sub.add_parser("run", help="run a flow (checks its recovery store first)",
                       description="Run dataflows.FLOW:flow with bytewax.run. With "
                       "MD_RECOVERY_DIR (or --dir) set, the store is validated first and passed "
                       "with -r/-s/-b.")
    _add_common(p)
    p.add_argument("-s", "--snapshot-interval", type=int,
                   default=_env_int("MD_SNAPSHOT_INTERVAL", 10),
                   help="seconds between snapshots = the most a crash re-reads "
                   "(env MD_SNAPSHOT_INTERVAL, default %(default)s)")
    p.add_argument("-b", "--backup-interval", type=int,
                   default=_env_int("MD_BACKUP_INTERVAL", 0),
                   help="seconds old snapshots are kept for off-host backups "
                   "(env MD_BACKUP_INTERVAL, default %(default)s)")
    p.add_argument("-w", "--workers", type=int, help="workers per process")
    p.add_argument("-i", "--process-id", type=int)
    p.add_argument("-a", "--addresses", help="host:port of every process, ';'-separated")
    p.add_argument("--init", action="store_true", help="create the store if it has no files")
    p.add_argument("--partitions", type=int, default=stores.DEFAULT_PARTITIONS,
                   help="partition count for --init (default %(default)s)")
    p.add_argument("--no-recovery", action="store_true", help="run without a store")
    p.set_defaults(func=cmd_run)


def main(argv: list[str] | None = None) -> int:
    """``python -m recovery.cli``: these commands without the rest of ``marketdata``."""
    parser = argparse.ArgumentParser(prog="python -m recovery.cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
