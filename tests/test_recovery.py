"""Recovery stores (init/inspect/reset/check) and resume correctness with ``TestingSource.ABORT``.

The property: a flow aborted at random points and resumed from its recovery store emits the same
deduplicated output, and ends in the same state, as one uninterrupted run over the same input.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.recovery import RecoveryConfig
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from connectors.kafka import Message
from dataflows import candles, orderbook, ticker
from dataflows.common import _Logic, build_flow
from dataflows.config import BookConfig, CandleConfig, TickerConfig
from operators.events import BookEvent, Trade
from recovery import cli, stores

ROOT = Path(__file__).resolve().parent.parent

FLOWS: dict[str, tuple[type, Any]] = {
    "orderbook": (BookEvent, orderbook.state_factory(BookConfig(depth=5, emit_interval_ms=50))),
    "candles": (Trade, candles.state_factory(CandleConfig(intervals=["1m", "5m"],
                                                          lateness_ms=500, emit_interval_ms=200))),
    "ticker": (Trade, ticker.state_factory(TickerConfig(emit_interval_ms=300))),
}
T0 = 1_700_000_000_000


# --- event generators --------------------------------------------------------------------------

def _msg(ev: dict[str, Any]) -> Message:
    return f"{ev['ex']}:{ev['sym']}".encode(), orjson.dumps(ev)


@st.composite
def trade_stream(draw: st.DrawFn) -> list[Message]:
    """Trades of 1-3 symbols: mostly increasing time, some late, some duplicate ids."""
    syms = draw(st.lists(st.sampled_from(["AA-USD", "BB-USD", "CC-USD"]), min_size=1,
                         max_size=3, unique=True))
    n = draw(st.integers(5, 120))
    out: list[Message] = []
    ts, ids = T0, dict.fromkeys(syms, 0)
    for _ in range(n):
        sym = draw(st.sampled_from(syms))
        ts += draw(st.sampled_from([0, 7, 250, 1_000, 20_000, 70_000]))
        late = draw(st.sampled_from([0, 0, 0, 300, 3_000]))
        if draw(st.integers(0, 9)) > 0 or ids[sym] == 0:
            ids[sym] += 1
        px = draw(st.integers(9_000, 11_000))
        qty = draw(st.integers(1, 5_000))
        out.append(_msg({"type": "trade", "ex": "hx", "sym": sym, "ts": ts - late, "rts": ts,
                         "id": str(ids[sym]), "px": f"{px // 100}.{px % 100:02d}",
                         "qty": f"0.{qty:04d}", "side": draw(st.sampled_from(["buy", "sell"]))}))
    return out


@st.composite
def book_stream(draw: st.DrawFn) -> list[Message]:
    """Per symbol: a snapshot, chained updates, the odd gap and re-snapshot."""
    syms = draw(st.lists(st.sampled_from(["AA-USD", "BB-USD"]), min_size=1, max_size=2,
                         unique=True))
    seq = dict.fromkeys(syms, 100)
    out: list[Message] = []
    ts = T0

    def levels(lo: int, hi: int) -> list[list[str]]:
        k = draw(st.integers(1, 4))
        return [[f"{p}.5", draw(st.sampled_from(["0", "1.25", "3", "0.5"]))]
                for p in draw(st.lists(st.integers(lo, hi), min_size=k, max_size=k, unique=True))]

    def snapshot(sym: str) -> dict[str, Any]:
        seq[sym] += 5
        return {"type": "book", "ex": "hx", "sym": sym, "ts": ts, "rts": ts, "action": "snapshot",
                "seq": seq[sym], "bids": [[b, q if q != "0" else "1"] for b, q in levels(90, 99)],
                "asks": [[a, q if q != "0" else "1"] for a, q in levels(100, 109)]}

    for sym in syms:
        out.append(_msg(snapshot(sym)))
    for _ in range(draw(st.integers(3, 100))):
        sym = draw(st.sampled_from(syms))
        ts += draw(st.sampled_from([1, 30, 120, 400]))
        kind = draw(st.integers(0, 19))
        if kind == 0:
            out.append(_msg(snapshot(sym)))
            continue
        prev = seq[sym] + (2 if kind == 1 else 0)  # kind 1: a gap
        seq[sym] = prev + 1
        out.append(_msg({"type": "book", "ex": "hx", "sym": sym, "ts": ts, "rts": ts,
                         "action": "update", "seq": seq[sym], "prev_seq": prev,
                         "bids": levels(90, 99), "asks": levels(100, 109)}))
    return out


# --- running flows -----------------------------------------------------------------------------

def _run(flow: str, items: list[Any], store: Path, batch: int,
         epoch: timedelta = timedelta(0)) -> tuple[list[dict[str, Any]], int]:
    """Run ``flow`` over ``items`` until done, resuming after each abort; (outputs, runs)."""
    kind, make = FLOWS[flow]
    out: list[dict[str, Any]] = []
    runs = 0
    aborts = [x for x in items if isinstance(x, TestingSource.ABORT)]
    while True:
        runs += 1
        before = sum(a._triggered for a in aborts)
        df = build_flow(flow, TestingSource(items, batch_size=batch), kind, make,
                        TestingSink(out), TestingSink(out), live=False)
        run_main(df, epoch_interval=epoch, recovery_config=RecoveryConfig(str(store)))
        if sum(a._triggered for a in aborts) == before:  # ran to the end without aborting
            return out, runs
        # TestingSource does not count a triggered ABORT in its resume index, so every later
        # resume would re-read one item: drop it, as a real source has no such item.
        items = [x for x in items if not (isinstance(x, TestingSource.ABORT) and x._triggered)]


def _final_states(store: Path, flow: str) -> dict[str, Any]:
    snaps = stores.snapshots(store)
    out = {}
    for (step, key), blob in snaps.items():
        if step.startswith(f"{flow}.{flow}") and blob is not None:
            inner = pickle.loads(blob)  # Bytewax pickles what snapshot() returns: our pickle
            k, state, max_ts = pickle.loads(inner)
            assert k == key
            out[key] = pickle.dumps((state, max_ts), protocol=5)  # a deterministic encoding
    return out


def _canon(records: list[dict[str, Any]]) -> set[bytes]:
    return {orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records}


@pytest.fixture
def tmp_store() -> Iterator[Any]:
    made: list[Path] = []

    def make(partitions: int = 3) -> Path:
        d = Path(tempfile.mkdtemp(prefix="mdrec-"))
        made.append(d)
        stores.init(d, partitions)
        return d

    yield make
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


def _resume_property(flow: str, msgs: list[Message], cuts: list[int], batch: int,
                     make_store: Any) -> None:
    ref_store, crash_store = make_store(), make_store()
    ref, _ = _run(flow, list(msgs), ref_store, batch)
    items: list[Any] = list(msgs)
    for c in sorted({min(c, len(msgs)) for c in cuts}, reverse=True):
        items.insert(c, TestingSource.ABORT())
    got, runs = _run(flow, items, crash_store, batch)
    assert runs == len(items) - len(msgs) + 1
    assert _canon(got) == _canon(ref)
    assert _final_states(crash_store, flow) == _final_states(ref_store, flow)
    # Nothing lost: every input was reflected (dedup set equal); nothing counted twice: the
    # last record per identity is identical (a double count would change n / v / count).
    assert _last_by_identity(got) == _last_by_identity(ref)


def _identity(r: dict[str, Any]) -> tuple[Any, ...]:
    if r["type"] == "deadletter":  # each rejected input is its own: there is no "newest" one
        return ("deadletter", r["key"], r["raw"], r["reason"])
    return (r["type"], r.get("ex"), r.get("sym"), r.get("iv"), r.get("t"))


def _last_by_identity(records: list[dict[str, Any]]) -> dict[tuple[Any, ...], bytes]:
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in records:
        k = _identity(r)
        cur = best.get(k)
        if cur is None or _version(r) >= _version(cur):
            best[k] = r
    return {k: orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for k, v in best.items()}


def _version(r: dict[str, Any]) -> tuple[Any, ...]:
    if r["type"] == "book":
        return (r["seq"], r["ts"])
    if r["type"] == "candle":
        return (r["n"], r["closed"])
    if r["type"] == "ticker":
        return (r["closeTime"], r["count"])
    return (0,)


SETTINGS = settings(max_examples=30, deadline=None, phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
CUTS = st.lists(st.integers(0, 130), min_size=1, max_size=3)


@SETTINGS
@given(msgs=book_stream(), cuts=CUTS, batch=st.integers(1, 7))
def test_book_resume_equals_uninterrupted(tmp_store: Any, msgs: list[Message], cuts: list[int],
                                          batch: int) -> None:
    _resume_property("orderbook", msgs, cuts, batch, tmp_store)


@SETTINGS
@given(msgs=trade_stream(), cuts=CUTS, batch=st.integers(1, 7))
def test_candles_resume_equals_uninterrupted(tmp_store: Any, msgs: list[Message],
                                             cuts: list[int], batch: int) -> None:
    _resume_property("candles", msgs, cuts, batch, tmp_store)


@SETTINGS
@given(msgs=trade_stream(), cuts=CUTS, batch=st.integers(1, 7))
def test_ticker_resume_equals_uninterrupted(tmp_store: Any, msgs: list[Message], cuts: list[int],
                                            batch: int) -> None:
    _resume_property("ticker", msgs, cuts, batch, tmp_store)


def test_abort_really_replays_and_dedup_matters(tmp_store: Any) -> None:
    """Guards the property tests: an abort does re-emit records (raw lists differ)."""
    msgs = [_msg({"type": "trade", "ex": "hx", "sym": "AA-USD", "ts": T0 + i * 400,
                  "rts": T0 + i * 400, "id": str(i), "px": "10.5", "qty": "1", "side": "buy"})
            for i in range(1, 60)]
    ref, _ = _run("ticker", list(msgs), tmp_store(), 4)
    items: list[Any] = list(msgs)
    items.insert(30, TestingSource.ABORT())
    got, runs = _run("ticker", items, tmp_store(), 4, timedelta(seconds=30))  # no snapshot yet
    assert runs == 2
    assert len(got) > len(ref)  # the records after the last snapshot came out twice
    assert _canon(got) == _canon(ref)


# --- a source with Kafka-like partition names, for the topic checks ---------------------------

class _Part(StatefulSourcePartition[Message, int]):
    def __init__(self, items: list[Message], resume: int | None) -> None:
        self.items, self.i = items, resume or 0

    def next_batch(self) -> list[Message]:
        if self.i >= len(self.items):
            raise StopIteration()
        self.i += 1
        return [self.items[self.i - 1]]

    def snapshot(self) -> int:
        return self.i


class _TopicSource(FixedPartitionedSource[Message, int]):
    """Partitions named like the Kafka source's (``topic#p``); state = next index."""

    def __init__(self, topic: str, parts: list[list[Message]]) -> None:
        self.topic, self.parts = topic, parts

    def list_parts(self) -> list[str]:
        return [f"{self.topic}#{i}" for i in range(len(self.parts))]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Part:
        return _Part(self.parts[int(for_part.rpartition("#")[2])], resume_state)


def _trades(n: int, sym: str) -> list[Message]:
    return [_msg({"type": "trade", "ex": "hx", "sym": sym, "ts": T0 + i, "rts": T0 + i,
                  "id": str(i), "px": "1.5", "qty": "2", "side": "sell"}) for i in range(n)]


def _kafkaish_store(tmp_store: Any, topic: str = "md.trades") -> Path:
    d = tmp_store(4)
    parts = [_trades(5, "AA-USD"), _trades(3, "BB-USD")]
    kind, make = FLOWS["candles"]
    df = build_flow("candles", _TopicSource(topic, parts), kind, make, TestingSink([]),
                    TestingSink([]), live=False)
    run_main(df, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(str(d)))
    return d


# --- stores: init / inspect / reset / check ----------------------------------------------------

def test_init_creates_partitions_and_refuses_to_overwrite(tmp_path: Path) -> None:
    d = stores.init(tmp_path / "s", 5)
    assert sorted(p.name for p in d.iterdir()) == [f"part-{i}.sqlite3" for i in range(5)]
    info = stores.read_store(d)
    assert info.usable and info.part_count == 5 and info.resume_epoch is None
    with pytest.raises(stores.StoreError, match="already holds"):
        stores.init(d, 5)
    with pytest.raises(stores.StoreError, match="at least 1"):
        stores.init(tmp_path / "t", 0)


def test_inspect_decodes_offsets_keys_and_epochs(tmp_store: Any) -> None:
    d = _kafkaish_store(tmp_store)
    info = stores.inspect("candles", d)
    assert info.usable, info.problems
    assert info.offsets == {"md.trades#0": 5, "md.trades#1": 3}
    logic = info.steps["candles.candles"]
    assert logic.keys == 2 and logic.size > 0
    assert info.steps["candles.in"].keys == 2
    assert info.resume_epoch is not None and info.resume_epoch > max(info.epochs)
    assert info.last_execution is not None and info.last_execution[1] == 1
    text = "\n".join(stores.describe("candles", info))
    assert "md.trades#1" in text and "usable" in text and "keys" in text
    stores.check("candles", d, ["md.trades"])  # does not raise


def test_check_rejects_a_changed_topic_set(tmp_store: Any) -> None:
    d = _kafkaish_store(tmp_store)
    with pytest.raises(stores.StoreError,
                       match=r"topics \['md.trades'\].*now reads \['x.trades'\]"):
        stores.check("candles", d, ["x.trades"])
    with pytest.raises(stores.StoreError, match="now reads"):
        stores.check("candles", d, ["md.trades", "md.book"])
    # and `recovery inspect` says the same as the flow would (it read MD_TOPIC_PREFIX)
    assert stores.inspect("candles", d, ["md.trades"]).usable
    info = stores.inspect("candles", d, ["x.trades"])
    assert not info.usable and "now reads ['x.trades']" in info.problems[0]


def test_check_rejects_a_missing_partition_file(tmp_store: Any) -> None:
    d = _kafkaish_store(tmp_store)
    (d / "part-2.sqlite3").unlink()
    with pytest.raises(stores.StoreError, match=r"1 of 4 partition files missing: part-2\.sqlite3"):
        stores.check("candles", d, ["md.trades"])
    info = stores.inspect("candles", d)
    assert not info.usable and any("missing" in p for p in info.problems)


def test_check_rejects_files_from_another_store(tmp_store: Any) -> None:
    d, other = _kafkaish_store(tmp_store), tmp_store(2)
    shutil.copy(other / "part-1.sqlite3", d / "part-1.sqlite3")
    with pytest.raises(stores.StoreError, match="inconsistent partition counts"):
        stores.check("candles", d, ["md.trades"])


def test_check_rejects_garbage_renamed_and_empty(tmp_store: Any, tmp_path: Path) -> None:
    d = _kafkaish_store(tmp_store)
    (d / "part-3.sqlite3").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(stores.StoreError, match=r"part-3\.sqlite3: not a Bytewax"):
        stores.check("candles", d, ["md.trades"])
    e = tmp_store(2)
    (e / "part-0.sqlite3").rename(e / "part-7.sqlite3")
    info = stores.read_store(e)
    assert any("renamed" in p for p in info.problems)
    with pytest.raises(stores.StoreError, match="no recovery partition files"):
        stores.check("candles", tmp_path, ["md.trades"])
    with pytest.raises(stores.StoreError, match="directory missing"):
        stores.check("candles", tmp_path / "nope", ["md.trades"])


def test_check_rejects_another_flows_store(tmp_store: Any) -> None:
    d = _kafkaish_store(tmp_store)
    with pytest.raises(stores.StoreError, match=r"the candles flow's store .*: give the ticker "
                       r"flow a store directory of its own"):
        stores.check("ticker", d, ["md.trades"])


def test_resume_epoch_follows_bytewax_rule(tmp_path: Path) -> None:
    d = stores.init(tmp_path / "s", 1)
    conn = sqlite3.connect(d / "part-0.sqlite3")
    conn.execute("INSERT INTO exs (ex_num, worker_count, resume_epoch) VALUES (0, 2, 1)")
    conn.execute("INSERT INTO exs (ex_num, worker_count, resume_epoch) VALUES (1, 3, 11)")
    conn.execute("INSERT INTO fronts (ex_num, worker_index, worker_frontier) VALUES (1, 0, 13)")
    conn.execute("INSERT INTO fronts (ex_num, worker_index, worker_frontier) VALUES (1, 2, 13)")
    conn.commit()
    assert stores.read_store(d).resume_epoch == 11  # worker 1 never reported: its resume epoch
    conn.execute("INSERT INTO fronts (ex_num, worker_index, worker_frontier) VALUES (1, 1, 12)")
    conn.commit()
    conn.close()
    assert stores.read_store(d).resume_epoch == 12


def test_reset_keeps_partition_count_and_empties(tmp_store: Any) -> None:
    d = _kafkaish_store(tmp_store)
    assert stores.read_store(d).executions
    assert stores.reset(d) == 4
    info = stores.read_store(d)
    assert info.usable and info.part_count == 4 and not info.executions and not info.epochs
    assert stores.reset(d, 6) == 6 and stores.read_store(d).part_count == 6


def test_active_store_parses_bytewax_run_argv() -> None:
    run = "/x/site-packages/bytewax/run.py"
    assert stores.active_store([run, "m:flow", "-r", "/s", "-s", "1"], {}) == Path("/s")
    assert stores.active_store([run, "m:flow", "--recovery-directory=/t"], {}) == Path("/t")
    assert stores.active_store([run, "m:flow", "-r/u"], {}) == Path("/u")
    assert stores.active_store([run, "m:flow"], {"BYTEWAX_RECOVERY_DIRECTORY": "/v"}) == Path("/v")
    assert stores.active_store([run, "m:flow"], {}) is None
    assert stores.active_store(["pytest", "-r", "a"], {}) is None


def test_snapshots_are_skipped_only_where_nothing_keeps_them() -> None:
    run = "/x/site-packages/bytewax/run.py"
    assert stores.runs_without_recovery([run, "m:flow"], {})
    assert not stores.runs_without_recovery([run, "m:flow", "-r", "/s", "-s", "1"], {})
    assert not stores.runs_without_recovery([run, "m:flow"], {"BYTEWAX_RECOVERY_DIRECTORY": "/v"})
    assert not stores.runs_without_recovery(["pytest"], {})  # run_main may recover: unknown
    for empty in ([run, "m:flow", "-r", ""], [run, "m:flow", "--recovery-directory="]):
        assert not stores.runs_without_recovery(empty, {})  # bytewax.run: Path("") is "."
        assert stores.active_store(empty, {"BYTEWAX_RECOVERY_DIRECTORY": "/v"}) == Path(".")
    assert not stores.runs_without_recovery([run, "m:flow"], {"BYTEWAX_RECOVERY_DIRECTORY": ""})
    for abbreviated in (["--recovery-dir", "/s"], ["--recovery", "/s"], ["--recovery-dir=/s"],
                        ["-r/s"], ["-w", "2", "-r", "/s"]):  # argparse takes them all
        assert not stores.runs_without_recovery([run, "m:flow", *abbreviated, "-s", "1"], {})
        assert stores.active_store([run, "m:flow", *abbreviated], {}) == Path("/s")
    kind, make = FLOWS["ticker"]
    msg = (b"binance:ETH-USDT", b'{"type":"trade","ex":"binance","sym":"ETH-USDT","ts":1000,'
           b'"rts":1000,"id":"1","px":"1.5","qty":"2","side":"buy"}')
    for snapshots in (True, False):
        logic = _Logic("ticker", kind, make, False, None, snapshots)
        logic.on_batch([msg])
        snap = logic.snapshot()
        if not snapshots:
            assert snap == b""
            continue
        again = _Logic("ticker", kind, make, False, snap)
        assert again.state.stats == logic.state.stats == {**again.state.stats, "trades": 1}
    with pytest.raises(RuntimeError, match=r"empty state.*reset the store"):
        _Logic("ticker", kind, make, False, b"")  # a store written with snapshots skipped


# --- CLI ---------------------------------------------------------------------------------------

def test_cli_init_inspect_reset(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MD_RECOVERY_DIR", str(tmp_path))
    assert cli.main(["recovery", "init", "ticker", "--partitions", "3"]) == 0
    assert len(list((tmp_path / "ticker").glob("*.sqlite3"))) == 3
    assert cli.main(["recovery", "init", "ticker"]) == 2
    assert "already holds" in capsys.readouterr().err
    assert cli.main(["recovery", "inspect", "ticker"]) == 0
    assert "starts afresh" in capsys.readouterr().out
    for flow in ("candles", "ticker --dir " + str(tmp_path / "tickr")):  # none there: refused
        assert cli.main(["recovery", "reset", *flow.split(), "--yes"]) == 2
        assert "no recovery store in" in capsys.readouterr().err
    assert not (tmp_path / "candles").exists() and not (tmp_path / "tickr").exists()
    assert cli.main(["recovery", "reset", "ticker"]) == 2
    assert "--yes" in capsys.readouterr().err
    assert cli.main(["recovery", "reset", "ticker", "--yes"]) == 0
    assert "3 empty partitions" in capsys.readouterr().out
    (tmp_path / "ticker" / "part-1.sqlite3").unlink()
    assert cli.main(["recovery", "inspect", "ticker", "--json"]) == 1
    out = orjson.loads(capsys.readouterr().out)
    assert out["usable"] is False and "part-1.sqlite3" in out["problems"][0]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "recovery.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=60, env={**os.environ, **(env or {})})


def test_run_fails_at_start_with_a_clear_message(tmp_store: Any) -> None:
    d = _kafkaish_store(tmp_store)
    (d / "part-0.sqlite3").unlink()
    r = _cli("run", "candles", "--dir", str(d))
    assert r.returncode == 2
    assert "partition files missing: part-0.sqlite3" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) <= 4
    d2 = _kafkaish_store(tmp_store)
    r = _cli("run", "candles", "--dir", str(d2), env={"MD_TOPIC_PREFIX": "other."})
    assert r.returncode == 2 and "other.trades" in r.stderr and "Traceback" not in r.stderr


def test_check_or_exit_is_a_one_paragraph_exit(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        stores.check_or_exit("orderbook", tmp_path / "missing", ["md.book"])
    assert str(e.value).startswith("error: recovery store") and "recovery init" in str(e.value)


def test_run_argv_passes_recovery_and_scaling() -> None:
    import argparse

    ns = argparse.Namespace(flow="orderbook", snapshot_interval=2, backup_interval=0, workers=3,
                            process_id=1, addresses="a:1;b:2")
    argv = cli.run_argv(ns, Path("/s"))
    assert argv[1:] == ["-m", "bytewax.run", "dataflows.orderbook:flow", "-r", "/s", "-s", "2",
                        "-b", "0", "-w", "3", "-i", "1", "-a", "a:1;b:2"]
