"""``marketdata doctor``: break each layer for real and check it names that layer and only that one.

Every test starts from a healthy set-up (heartbeats of live processes, topics with no lag, an empty
log folder, producing feeds, a fresh book in a private Redis, a real Bytewax recovery store with a
fresh snapshot), breaks one thing, and compares ``Report.failing`` with exactly that layer.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import orjson
import pytest
import redis
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from confluent_kafka import Producer

from connectors.kafka import ensure_topics
from connectors.redis import RedisRecordSink
from marketdata import doctor, heartbeat
from marketdata.doctor import FAIL, OK, SKIP, WARN, DoctorConfig, diagnose
from tests.util import free_port, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
FLOWS = ("ingest", "orderbook", "candles", "ticker")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- private services and stores --------------------------------------------------------------
@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of our own: flushing it or reading all its keys never meets another test."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path_factory.mktemp("redis"))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(up, timeout=10, message="private redis-server did not start")
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def make_store(root: Path, flow: str, parts: int = 2) -> Path:
    """A real recovery store set ``root/flow``: init, then one run of a small stateful flow."""
    d = root / flow
    d.mkdir(parents=True)
    init_db_dir(d, parts)
    f = Dataflow("doctor_test")
    s = op.input("in", f, TestingSource([("k", 1), ("j", 2), ("k", 3)]))
    out = op.stateful_map("sum", s, lambda st, v: ((st or 0) + v, (st or 0) + v))
    got: list[Any] = []
    op.output("out", out, TestingSink(got))
    run_main(f, epoch_interval=timedelta(seconds=0), recovery_config=RecoveryConfig(str(d)))
    assert sorted(got) == [("j", 2), ("k", 1), ("k", 4)]
    return d


def age_store(d: Path, seconds: int) -> None:
    """Pretend the newest snapshot of a store set was taken ``seconds`` ago."""
    for part in d.glob("part-*.sqlite3"):
        con = sqlite3.connect(part)
        con.execute("UPDATE snaps SET created_at = datetime('now', ?)", (f"-{seconds} seconds",))
        con.commit()
        con.close()


@pytest.fixture(scope="module")
def fresh_stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("recovery")
    for flow in ("orderbook", "candles", "ticker"):
        make_store(root, flow)
    return root


def write_hb(client: redis.Redis, flow: str, *, pid: int | None = None, host: str | None = None,
             age_ms: int = 0, feeds: dict[str, Any] | None = None,
             kafka: dict[str, Any] | None = None) -> str:
    """A heartbeat as :class:`heartbeat.Heartbeat` writes it (default: this live process)."""
    host = host or socket.gethostname()
    pid = pid or os.getpid()
    key = heartbeat.hb_key(flow, host, pid)
    client.hset(key, mapping={
        "flow": flow, "host": host, "pid": str(pid), "started": str(now_ms() - 60_000),
        "time": str(now_ms() - age_ms), "interval_ms": "1000", "position": "{}",
        "feeds": orjson.dumps(feeds or {}).decode(), "kafka": orjson.dumps(kafka or {}).decode()})
    return key


def live_feeds(n: int = 2) -> dict[str, Any]:
    return {f"binance:SYM{i}-USDT": {"connected": True, "last_frame_ms": now_ms(), "resyncs": i}
            for i in range(n)}


def book_record(ts: int, status: str = "ok") -> dict[str, Any]:
    return {"type": "book", "ex": "binance", "sym": "BTC-USDT", "ts": ts, "seq": 7,
            "status": status, "bids": [["100.5", "1"]], "asks": [["100.6", "2"]]}


def write_book(url: str, rec: dict[str, Any]) -> None:
    part = RedisRecordSink(url).build("out", 0, 1)
    part.write_batch([rec])
    part.close()


@pytest.fixture
def healthy(private_redis: str, kafka_bootstrap: str, fresh_stores: Path,
            tmp_path: Path) -> Iterator[tuple[DoctorConfig, redis.Redis]]:
    """A set-up where every layer is healthy; yields its doctor config and a Redis client."""
    client = redis.Redis.from_url(private_redis)
    client.flushdb()
    prefix = f"t.doctor.{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, [f"{prefix}{t}" for t in ("book", "trades", "deadletter")],
                  partitions=2)
    for flow in FLOWS:
        write_hb(client, flow, feeds=live_feeds() if flow == "ingest" else None)
    write_book(private_redis, book_record(now_ms()))
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "orderbook.log").write_text("2024-01-01 00:00:00,000 INFO flow: started\n")
    cfg = DoctorConfig(kafka_bootstrap=kafka_bootstrap, redis_url=private_redis,
                       topic_prefix=prefix, recovery_dir=str(fresh_stores), log_dir=str(logs),
                       flows=FLOWS, lag_sample_s=0, timeout_s=2)
    try:
        yield cfg, client
    finally:
        client.close()


def statuses(report: doctor.Report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def check(report: doctor.Report, name: str) -> doctor.Check:
    return next(c for c in report.checks if c.name == name)


# -- the healthy baseline ------------------------------------------------------------------------
def test_healthy_setup_fails_no_layer(healthy: tuple[DoctorConfig, redis.Redis]) -> None:
    cfg, _ = healthy
    report = diagnose(cfg)
    assert report.failing == [], doctor.render(report)
    assert statuses(report) == {n: OK for n in
                                ("flows", "kafka", "logs", "feeds", "redis", "recovery")}
    assert [c.layer for c in report.checks] == [1, 2, 3, 4, 5, 6]
    assert check(report, "recovery").summary.startswith("3 store sets")
    feeds = check(report, "feeds").findings
    assert [f.data["resyncs"] for f in feeds] == [0, 1]


# -- (1) flows: kill a flow ------------------------------------------------------------------------
def test_killed_flow_process_is_named(healthy: tuple[DoctorConfig, redis.Redis]) -> None:
    cfg, client = healthy
    client.delete(heartbeat.hb_key("candles", socket.gethostname(), os.getpid()))
    code = ("import sys, time\nfrom marketdata.heartbeat import Heartbeat\n"
            "Heartbeat(sys.argv[1], 'candles', interval_s=0.2).start()\n"
            "print('beating', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([PY, "-c", code, cfg.redis_url], cwd=ROOT, stdout=subprocess.PIPE)
    key = heartbeat.hb_key("candles", socket.gethostname(), proc.pid)
    try:
        wait_until(lambda: client.exists(key), timeout=20, message="child heartbeat")
        alive = diagnose(cfg)
        assert alive.failing == [], doctor.render(alive)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    report = diagnose(cfg)
    assert report.failing == ["flows"], doctor.render(report)
    bad = [f for f in check(report, "flows").findings if f.status == FAIL]
    assert [f.name for f in bad] == [f"candles {socket.gethostname()}:{proc.pid}"]
    assert "process gone" in bad[0].detail
    assert "candles" in check(report, "flows").summary


def test_stale_heartbeat_of_a_remote_process_and_a_missing_flow(
        healthy: tuple[DoctorConfig, redis.Redis]) -> None:
    cfg, client = healthy
    client.delete(heartbeat.hb_key("ticker", socket.gethostname(), os.getpid()))
    write_hb(client, "ticker", host="elsewhere", pid=1, age_ms=90_000)
    client.delete(heartbeat.hb_key("orderbook", socket.gethostname(), os.getpid()))
    report = diagnose(cfg)
    assert report.failing == ["flows"], doctor.render(report)
    bad = {f.name: f.detail for f in check(report, "flows").findings if f.status == FAIL}
    assert set(bad) == {"ticker elsewhere:1", "orderbook"}
    assert bad["ticker elsewhere:1"].startswith("heartbeat stale")
    assert "not running" in bad["orderbook"]
    # a dead book flow explains stale books: they are a warning, not a second failing layer
    write_book(cfg.redis_url, book_record(now_ms() - 3_600_000) | {"sym": "ETH-USDT"})
    again = diagnose(cfg)
    assert again.failing == ["flows"]
    assert check(again, "redis").status == WARN


# -- (2) kafka: broker down, consumer lagging ------------------------------------------------------
def test_broker_down_names_kafka_only(healthy: tuple[DoctorConfig, redis.Redis]) -> None:
    cfg, _ = healthy
    started = time.monotonic()
    report = diagnose(replace(cfg, kafka_bootstrap=f"127.0.0.1:{free_port()}"))
    assert report.failing == ["kafka"], doctor.render(report)
    assert "no broker answers" in check(report, "kafka").summary
    assert time.monotonic() - started < 10


def lag(cfg: DoctorConfig, topic: str, n: int) -> None:
    """``n`` messages in ``n`` produce requests (Tansu's high watermark counts whole batches)."""
    line = (b'{"type":"book","ex":"binance","sym":"BTC-USDT","ts":1,"rts":1,"action":"update",'
            b'"seq":2,"bids":[],"asks":[]}')
    producer = Producer({"bootstrap.servers": cfg.kafka_bootstrap, "linger.ms": 0})
    for _ in range(n):
        producer.produce(f"{cfg.topic_prefix}{topic}", line, b"binance:BTC-USDT")
        assert producer.flush(10) == 0


def test_lagging_consumer_group_names_kafka_only(healthy: tuple[DoctorConfig,
                                                                redis.Redis]) -> None:
    cfg, _ = healthy
    lag(cfg, "book", 12)
    report = diagnose(replace(cfg, max_lag=5))
    assert report.failing == ["kafka"], doctor.render(report)
    found = {f.name: f for f in check(report, "kafka").findings}
    book = found["orderbook lag"]
    assert book.status == FAIL and book.data["group"] == "marketdata-orderbook"
    assert book.data["total"] >= 6  # Tansu may report up to one batch low; 12 sent
    assert found["candles lag"].status == OK and found["candles lag"].data["total"] == 0
    assert sum(book.data["partitions"].values()) == book.data["total"]
    # under the threshold it is healthy again
    assert diagnose(replace(cfg, max_lag=10_000)).failing == []


def test_lag_is_read_where_the_running_flow_says_it_reads(
        healthy: tuple[DoctorConfig, redis.Redis], kafka_bootstrap: str) -> None:
    """A flow reading other topics with another group (the demo's) reports them in its
    heartbeat: the doctor checks that lag, not the default group's on ``md.*`` (which read 0
    while the demo's flows fell behind)."""
    cfg, client = healthy
    other = f"t.doctor.{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, [f"{other}book"], partitions=1)
    write_hb(client, "orderbook", kafka={"group": f"g-{other}", "topics": [f"{other}book"]})
    lag(replace(cfg, topic_prefix=other), "book", 12)
    report = diagnose(replace(cfg, max_lag=5))
    book = {f.name: f for f in check(report, "kafka").findings}["orderbook lag"]
    assert book.status == FAIL and book.data["group"] == f"g-{other}", doctor.render(report)
    assert book.data["total"] >= 6


def test_missing_topic_names_kafka(healthy: tuple[DoctorConfig, redis.Redis],
                                   kafka_bootstrap: str) -> None:
    cfg, _ = healthy
    prefix = f"t.doctor.{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, [f"{prefix}book", f"{prefix}trades"], partitions=1)
    report = diagnose(replace(cfg, topic_prefix=prefix))
    assert report.failing == ["kafka"]
    assert [f.name for f in check(report, "kafka").findings if f.status == FAIL] == [
        f"{prefix}deadletter"]


# -- (3) logs --------------------------------------------------------------------------------------
def test_recent_errors_in_logs_name_logs_only(healthy: tuple[DoctorConfig, redis.Redis]) -> None:
    cfg, _ = healthy
    logs = Path(cfg.log_dir)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    old = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - 7200))
    (logs / "ticker.log").write_text(f"{old},001 ERROR dataflows.ticker: long ago\n"
                                     f"{stamp},002 INFO dataflows.ticker: fine now\n")
    traceback = logs / "candles.log"
    traceback.write_text("Traceback (most recent call last):\n  File x\nRuntimeError: boom\n")
    t = time.time() - 7200
    os.utime(traceback, (t, t))  # an untimestamped traceback in a file untouched for 2 h
    assert diagnose(cfg).failing == []
    with open(logs / "orderbook.log", "a") as f:
        f.write(f"{stamp},123 ERROR connectors.redis: redis write failed\n"
                "Traceback (most recent call last):\n  File \"x\", line 1\n")
    report = diagnose(cfg)
    assert report.failing == ["logs"], doctor.render(report)
    bad = [f for f in check(report, "logs").findings if f.status == FAIL]
    assert [Path(f.name).name for f in bad] == ["orderbook.log"]
    assert bad[0].data["count"] == 2  # the ERROR line and the traceback that follows it
    assert "redis write failed" in bad[0].data["last"][0]


# -- (4) feeds -------------------------------------------------------------------------------------
def test_stalled_and_disconnected_feeds_name_feeds_only(
        healthy: tuple[DoctorConfig, redis.Redis]) -> None:
    cfg, client = healthy
    feeds = live_feeds(3)
    feeds["binance:SYM1-USDT"]["last_frame_ms"] = now_ms() - 120_000
    feeds["binance:SYM2-USDT"]["connected"] = False
    write_hb(client, "ingest", feeds=feeds)
    report = diagnose(cfg)
    assert report.failing == ["feeds"], doctor.render(report)
    bad = {f.name: f.detail for f in check(report, "feeds").findings if f.status == FAIL}
    assert set(bad) == {"binance:SYM1-USDT", "binance:SYM2-USDT"}
    assert bad["binance:SYM1-USDT"].startswith("stalled")
    assert bad["binance:SYM2-USDT"].startswith("not connected")


def test_dead_ingestion_is_a_flow_failure_not_a_feed_failure(
        healthy: tuple[DoctorConfig, redis.Redis]) -> None:
    cfg, client = healthy
    client.delete(heartbeat.hb_key("ingest", socket.gethostname(), os.getpid()))
    stale = live_feeds()
    for st in stale.values():
        st["last_frame_ms"] = now_ms() - 600_000
    write_hb(client, "ingest", host="elsewhere", pid=2, age_ms=600_000, feeds=stale)
    report = diagnose(cfg)
    assert report.failing == ["flows"], doctor.render(report)
    assert check(report, "feeds").status == SKIP


# -- (5) redis -------------------------------------------------------------------------------------
def test_redis_down_names_redis_only(healthy: tuple[DoctorConfig, redis.Redis]) -> None:
    cfg, _ = healthy
    report = diagnose(replace(cfg, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    assert report.failing == ["redis"], doctor.render(report)
    st = statuses(report)
    assert st["flows"] == SKIP and st["feeds"] == SKIP  # their facts live in Redis
    assert "unreachable" in check(report, "redis").summary


def test_stale_book_names_redis_only(healthy: tuple[DoctorConfig, redis.Redis]) -> None:
    cfg, _ = healthy
    write_book(cfg.redis_url, book_record(now_ms() - 3_600_000) | {"sym": "ETH-USDT"})
    write_book(cfg.redis_url, book_record(now_ms()) | {"sym": "SOL-USDT", "status": "stale"})
    report = diagnose(cfg)
    assert report.failing == ["redis"], doctor.render(report)
    found = {f.name: f.status for f in check(report, "redis").findings}
    assert found == {"binance:BTC-USDT": OK, "binance:ETH-USDT": FAIL, "binance:SOL-USDT": WARN}


# -- (6) recovery ----------------------------------------------------------------------------------
def test_old_snapshot_names_recovery_only(healthy: tuple[DoctorConfig, redis.Redis],
                                          fresh_stores: Path, tmp_path: Path) -> None:
    cfg, _ = healthy
    root = tmp_path / "recovery"
    for flow in ("orderbook", "candles", "ticker"):
        shutil.copytree(fresh_stores / flow, root / flow)
    assert diagnose(replace(cfg, recovery_dir=str(root))).failing == []
    age_store(root / "candles", 3600)
    report = diagnose(replace(cfg, recovery_dir=str(root)))
    assert report.failing == ["recovery"], doctor.render(report)
    found = {f.name: f for f in check(report, "recovery").findings}
    assert found["candles"].status == FAIL and found["orderbook"].status == OK
    assert 3500_000 < found["candles"].data["age_ms"] < 3700_000
    assert found["candles"].data["snap_epoch"] >= 1


def test_broken_recovery_stores_fail(healthy: tuple[DoctorConfig, redis.Redis],
                                     fresh_stores: Path, tmp_path: Path) -> None:
    cfg, _ = healthy
    root = tmp_path / "recovery"
    shutil.copytree(fresh_stores / "orderbook", root / "orderbook")
    (root / "orderbook" / "part-1.sqlite3").unlink()  # a lost partition file
    (root / "ticker").mkdir()
    (root / "ticker" / "part-0.sqlite3").write_bytes(b"not a database" * 100)
    report = diagnose(replace(cfg, recovery_dir=str(root)))
    assert report.failing == ["recovery"]
    found = {f.name: f.detail for f in check(report, "recovery").findings}
    assert found["orderbook"].startswith("inconsistent store")
    assert found["ticker"].startswith("store unreadable")
    missing = diagnose(replace(cfg, recovery_dir=str(tmp_path / "nowhere")))
    assert missing.failing == ["recovery"]


def test_symptoms_of_a_dead_flow_are_not_extra_failing_layers(
        healthy: tuple[DoctorConfig, redis.Redis], fresh_stores: Path, tmp_path: Path) -> None:
    cfg, client = healthy
    client.delete(heartbeat.hb_key("orderbook", socket.gethostname(), os.getpid()))
    lag(cfg, "book", 8)
    root = tmp_path / "recovery"
    shutil.copytree(fresh_stores / "orderbook", root / "orderbook")
    age_store(root / "orderbook", 3600)
    report = diagnose(replace(cfg, max_lag=2, recovery_dir=str(root)))
    assert report.failing == ["flows"], doctor.render(report)
    assert check(report, "kafka").status == WARN
    assert check(report, "recovery").status == WARN


# -- the heartbeat writer --------------------------------------------------------------------------
def test_heartbeat_writes_position_feeds_and_ttl(private_redis: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heartbeat, "_positions", {})
    monkeypatch.setattr(heartbeat, "_feeds", {})
    client = redis.Redis.from_url(private_redis)
    client.flushdb()
    dead = write_hb(client, "hbtest", pid=2**22 + 12345)  # an old pid of a restarted process
    heartbeat.set_position("md.book#0", 41)
    heartbeat.set_feed("kraken:BTC-USD", connected=True, last_frame_ms=123)
    heartbeat.set_feed("kraken:BTC-USD", resyncs=3)
    hb = heartbeat.Heartbeat(private_redis, "hbtest", interval_s=0.05, ttl_s=30,
                             position=lambda: {"events_in": 99})
    hb.start()
    try:
        assert not client.exists(dead)
        first = wait_until(lambda: heartbeat.read_all(client), timeout=10)
        t0 = first[0]["time"]
        later = wait_until(lambda: [b for b in heartbeat.read_all(client) if b["time"] > t0],
                           timeout=10, message="heartbeat time advances")
        got = later[0]
        assert got["key"] == heartbeat.hb_key("hbtest", socket.gethostname(), os.getpid())
        assert (got["flow"], got["pid"], got["interval_ms"]) == ("hbtest", os.getpid(), 50)
        assert got["position"] == {"md.book#0": 41, "events_in": 99}
        assert got["feeds"] == {"kraken:BTC-USD": {"connected": True, "last_frame_ms": 123,
                                                   "resyncs": 3}}
        assert 0 < client.ttl(got["key"]) <= 30
    finally:
        hb.stop()
    assert heartbeat.read_all(client) == []  # a clean stop is not a dead process
    client.close()


def test_heartbeat_of_a_process_that_ends_normally_is_removed(private_redis: str) -> None:
    """A flow that stops at the end of its input exits normally: its heartbeat goes with it,
    and the doctor says "not running", not "process gone" (a dead one) for two minutes."""
    client = redis.Redis.from_url(private_redis)
    code = ("import sys\nfrom marketdata import heartbeat\n"
            "heartbeat.start(sys.argv[1], 'endtest', interval_s=0.05)\n"
            "print('beating', flush=True)\nsys.stdin.readline()\n")
    proc = subprocess.Popen([PY, "-c", code, private_redis], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline() == "beating\n"
    assert [b["pid"] for b in heartbeat.read_all(client) if b["flow"] == "endtest"] == [proc.pid]
    proc.stdin.close()  # the process ends normally
    assert proc.wait(timeout=30) == 0
    assert [b for b in heartbeat.read_all(client) if b["flow"] == "endtest"] == []
    client.close()


def test_heartbeat_survives_redis_outage() -> None:
    hb = heartbeat.Heartbeat(f"redis://127.0.0.1:{free_port()}/0", "x", interval_s=1)
    assert hb.beat() is False  # logged, not raised
    hb.stop(remove=True)


# -- the command line ------------------------------------------------------------------------------
def run_cli(cfg: DoctorConfig, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MD_")}
    env.update(MD_KAFKA_BOOTSTRAP=cfg.kafka_bootstrap, MD_REDIS_URL=cfg.redis_url,
               MD_TOPIC_PREFIX=cfg.topic_prefix, MD_RECOVERY_DIR=cfg.recovery_dir,
               MD_LOG_DIR=cfg.log_dir, MD_DOCTOR_FLOWS=",".join(cfg.flows))
    return subprocess.run([PY, "-m", "marketdata.doctor", "--lag-sample-s", "0", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_cli_json_and_table_and_exit_codes(healthy: tuple[DoctorConfig, redis.Redis]) -> None:
    cfg, _ = healthy
    ok = run_cli(cfg, "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["ok"] is True and doc["failing"] == []
    assert [c["name"] for c in doc["checks"]] == ["flows", "kafka", "logs", "feeds", "redis",
                                                  "recovery"]
    assert doc["settings"]["topic_prefix"] == cfg.topic_prefix
    bad = run_cli(replace(cfg, kafka_bootstrap=f"127.0.0.1:{free_port()}"))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "\x1b[" not in bad.stdout  # no colour when not a terminal
    rows = {line.split()[1]: line.split()[2] for line in bad.stdout.splitlines()
            if line[:3].strip().isdigit()}
    assert rows == {"flows": "OK", "kafka": "FAIL", "logs": "OK", "feeds": "OK", "redis": "OK",
                    "recovery": "OK"}
    assert "start at layer 2 (kafka)" in bad.stdout


def test_colour_only_when_asked(healthy: tuple[DoctorConfig, redis.Redis]) -> None:
    cfg, _ = healthy
    report = diagnose(replace(cfg, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    assert "\x1b[1;31mFAIL" in doctor.render(report, colour=True)
    assert "\x1b[" not in doctor.render(report, colour=False)
