"""The candle and ticker flows over files (`marketdata replay`): equal to the Decimal reference on
the recorded session, deterministic, and bad input dead-lettered while the flow goes on."""

from __future__ import annotations

import gzip
import json
import subprocess
from itertools import pairwise
from pathlib import Path

import orjson
import pytest

from operators.events import Trade, decode
from tests.flowrun import ETH, ROOT
from tests.reference import accept_candles, ref_candles, ref_ticker

MD = str(ROOT / ".venv" / "bin" / "marketdata")


def _replay(flow: str, src: Path, out: Path, *extra: str) -> tuple[list[dict], str]:
    dl = out.with_suffix(".dl.jsonl")
    res = subprocess.run([MD, "replay", flow, "--input", str(src), "--output", str(out),
                          "--deadletters", str(dl), *extra], capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode()
    recs = [json.loads(x) for x in out.read_bytes().splitlines()]
    return recs, dl.read_text() if dl.exists() else ""


def _eth_trades() -> list[Trade]:
    with gzip.open(ETH, "rb") as fh:
        return [t for t in map(decode, fh) if isinstance(t, Trade)]


def test_replayed_candles_equal_the_reference(tmp_path: Path) -> None:
    recs, dl = _replay("candles", ETH, tmp_path / "c.jsonl")
    assert dl == ""
    final = {(r["iv"], r["t"]): r for r in recs}
    accepted, _, _ = accept_candles(_eth_trades(), 2000)
    want = ref_candles(accepted, ["1m", "5m", "15m", "1h", "4h", "1d"])
    assert final == want
    assert all(r["closed"] for r in final.values())


def test_replayed_tickers_equal_the_reference_at_every_record(tmp_path: Path) -> None:
    recs, dl = _replay("ticker", ETH, tmp_path / "t.jsonl")
    assert dl == "" and len(recs) > 100
    trades = _eth_trades()
    position = {t.id: i for i, t in enumerate(trades)}
    for r in recs:
        upto = trades[: position[r["lastId"]] + 1]
        assert r == ref_ticker(upto)
    # at most one record per second of event time (plus the final flush)
    closes = [r["closeTime"] for r in recs[:-1]]
    assert all(b - a >= 1000 for a, b in pairwise(closes))


@pytest.mark.parametrize("flow", ["candles", "ticker"])
def test_replay_is_deterministic(tmp_path: Path, flow: str) -> None:
    a = _replay(flow, ETH, tmp_path / "a.jsonl")
    b = _replay(flow, ETH, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert a[0] == b[0]


@pytest.mark.parametrize("compressed", [True, False])
def test_replay_reads_standard_input(tmp_path: Path, compressed: bool) -> None:
    """``--input -``: the end of a pipe (``normalize --output - | replay --input -``), gzip or
    not, gives what the file gives."""
    _replay("candles", ETH, tmp_path / "file.jsonl")
    data = ETH.read_bytes() if compressed else gzip.decompress(ETH.read_bytes())
    res = subprocess.run([MD, "replay", "candles", "--input", "-", "--output", "-"], input=data,
                         capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == (tmp_path / "file.jsonl").read_bytes()


def test_replay_writes_gzip_where_the_output_name_says_so(tmp_path: Path) -> None:
    _replay("ticker", ETH, tmp_path / "plain.jsonl")
    subprocess.run([MD, "replay", "ticker", "--input", str(ETH), "--output",
                    str(tmp_path / "packed.jsonl.gz")], check=True, capture_output=True,
                   timeout=300)
    packed = (tmp_path / "packed.jsonl.gz").read_bytes()
    assert gzip.decompress(packed) == (tmp_path / "plain.jsonl").read_bytes()


def test_replay_fails_in_one_line_on_what_it_cannot_read_or_write(tmp_path: Path) -> None:
    """A truncated or mislabelled gzip input, an output that is the input, a reader that goes
    away: one line and an exit code, no Rust panic, no traceback, the input left alone."""
    trunc = tmp_path / "trunc.jsonl.gz"
    trunc.write_bytes(ETH.read_bytes()[:200_000])
    plain = tmp_path / "plain.jsonl.gz"
    plain.write_bytes(gzip.decompress(ETH.read_bytes())[:5000])
    same = tmp_path / "same.jsonl"
    same.write_bytes(gzip.decompress(ETH.read_bytes())[:20_000])
    for args, message in [
            (["--input", str(trunc), "--output", str(tmp_path / "o")], "ended before"),
            (["--input", str(plain), "--output", str(tmp_path / "o")], "Not a gzipped file"),
            (["--input", str(same), "--output", str(same)], "is the input")]:
        res = subprocess.run([MD, "replay", "candles", *args], capture_output=True, timeout=120)
        err = res.stderr.decode()
        assert res.returncode == 2 and message in err, err
        assert "panicked" not in err and "Traceback" not in err
    assert len(same.read_bytes()) == 20_000
    # `| head -1`: the reader goes away after a line; the replay stops quietly
    res = subprocess.run(f"'{MD}' replay candles --input '{ETH}' --output - | head -1",
                         shell=True, capture_output=True, timeout=120)
    assert res.stdout.count(b"\n") == 1 and b"panicked" not in res.stderr
    assert b"Traceback" not in res.stderr and b"Broken pipe" not in res.stderr


BAD = [
    (b'{"type":"trade","ex":"x","sym":"A-B","ts":60000,"rts":1,"id":"9","qty":"1","side":"buy"}',
     "missing field px"),
    (b'{"type":"trade","ex":"x","sym":"A-B","ts":60000,"rts":1,"id":"9","px":"1","qty":"-1",'
     b'"side":"buy"}', "quantity must be positive"),
    (b'{"type":"trade","ex":"x","sym":"A-B","ts":"12:00","rts":1,"id":"9","px":"1","qty":"1",'
     b'"side":"buy"}', "ts must be a non-negative integer"),
    (b'{"type":"trade","ex":"x","sym":"ABUSDT","ts":60000,"rts":1,"id":"9","px":"1","qty":"1",'
     b'"side":"buy"}', "BASE-QUOTE"),
    (b'{"type":"trade","ex":"x","sym":"A-B","ts":1000,"rts":1,"id":"8","px":"1","qty":"1",'
     b'"side":"buy"}', "late trade"),
]


@pytest.mark.parametrize("flow", ["candles", "ticker"])
def test_bad_trades_are_deadlettered_and_the_flow_goes_on(tmp_path: Path, flow: str) -> None:
    def trade(ts: int, i: int) -> bytes:
        return orjson.dumps({"type": "trade", "ex": "x", "sym": "A-B", "ts": ts, "rts": ts,
                             "id": str(i), "px": "10.5", "qty": "2", "side": "sell"})
    lines = [trade(60_000, 1), trade(65_000, 2)]
    lines[1:1] = [b for b, _ in BAD]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    recs, dl = _replay(flow, src, tmp_path / "out.jsonl")
    dls = [json.loads(x) for x in dl.splitlines()]
    reasons = [d["reason"] for d in dls]
    expected = [r for _, r in BAD] if flow == "candles" else [r for _, r in BAD[:4]]
    assert len(dls) == len(expected), reasons
    for want in expected:  # (dead letters of different keys come out in no fixed order)
        assert sum(want in got for got in reasons) == 1, (want, reasons)
    assert all(d["stage"] in ("decode", flow, "candles", "ticker") for d in dls)
    # the good trades after the bad ones still counted
    if flow == "ticker":
        # (the trade at ts 1000 is late for candles, but inside the ticker's 24h window)
        assert recs[-1]["count"] == 3 and recs[-1]["lastId"] == "2"
    else:
        assert any(r["iv"] == "1d" and r["n"] == 2 for r in recs)
