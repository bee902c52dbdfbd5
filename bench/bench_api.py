"""Benchmark of the API on loopback: REST book latency under 50 concurrent clients, and WebSocket
fan-out of one busy symbol to 500 subscribers.

    apt-get install -y wrk        # optional: the REST load generator (else an asyncio client)
    .venv/bin/python bench/bench_api.py [--seconds 8] [--clients 50] [--rest-rate 2000]
        [--subscribers 500] [--book-max-age-ms 2] [--client auto|wrk|python] [--no-pin]
        [--skip-ws]

The server is a separate process (``api.server.run``, one uvicorn worker, uvloop + httptools);
its CPU is read from /proc. On a machine with 2+ cores the server is pinned to CPU 0 and this
process with its load generators to CPU 1 (``sched_setaffinity``, as ``taskset`` does), so that
client and server do not steal each other's core; other load on the machine still counts.

REST load: ``wrk -t1 -c{clients}`` (C, a process of its own), saturated, then paced at
``--rest-rate`` requests/s by a Lua ``delay()`` that releases request k at start + k/rate
(a global schedule, ms resolution; wrk2's ``-R`` is not in Debian). wrk times each request from
its actual send, so the run also reports "late sends" (released more than 1 ms after their
slot): when that count is ~0 there was no coordinated omission. Without wrk the fallback is an
asyncio HTTP/1.1 keep-alive client (one request in flight per connection), paced latencies
counted from the scheduled send time; being Python on the same machine, it inflates tails.
"Redis reads/request" comes from Redis's own ``INFO commandstats`` (HGET calls).

WebSocket fan-out: ``websockets`` clients in this process. Redis database 12 is used and its
``md:*`` keys deleted (the API tests own database 9). Goals (issue 6): book p99 <= 5 ms at
2,000 requests/s; fan-out p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.testing import book_record, db_url, fill, wipe  # noqa: E402
from tests.util import free_port, wait_until  # noqa: E402

SYM = "BENCH-USDT"
BENCH_DB = 12
PATH = f"/v1/book/bench/{SYM}"
_SEQ = re.compile(rb'"seq":(\d+)')

# wrk's Lua runs per thread; ``delay()`` is called before each request. LuaJIT's FFI gives a
# monotonic clock (wrk has none of its own), so requests follow a fixed global schedule.
PACE_LUA = """
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } md_ts;
           int clock_gettime(int, md_ts*); ]]
local ts = ffi.new("md_ts")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
local period = 1000 / RATE
local start = nil
k, late = 0, 0
function delay()
  local t = now_ms()
  if start == nil then start = t end
  local slot = start + k * period
  k = k + 1
  if t - slot > 1 then late = late + 1 end
  if slot - t < 1 then return 0 end
  return math.floor(slot - t)
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    io.write(string.format("late_sends %d of %d\\n", t:get("late"), t:get("k")))
  end
end
"""
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hget_calls(url: str) -> int:
    """HGET commands Redis has served so far (all databases): reads caused by the API."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get("cmdstat_hget", {}).get("calls", 0))


def parse_wrk(out: str) -> dict[str, float]:
    """Throughput, latency percentiles (ms) and error counts from ``wrk --latency`` output."""
    def ms(value: str, unit: str) -> float:
        return float(value) * _UNIT_MS[unit]

    res: dict[str, float] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    if m is None or n is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    res["rps"], res["requests"] = float(m.group(1)), float(n.group(1))
    for q in (50, 75, 90, 99):
        p = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        if p:
            res[f"p{q}_ms"] = ms(p.group(1), p.group(2))
    mx = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m)", out)
    res["max_ms"] = ms(mx.group(1), mx.group(2)) if mx else float("nan")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = float(bad.group(1)) if bad else 0.0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = float(sum(int(x) for x in sock.groups())) if sock else 0.0
    late = re.search(r"late_sends (\d+) of (\d+)", out)
    if late:
        res["late_sends"], res["scheduled"] = float(late.group(1)), float(late.group(2))
    return res


def wrk_rest(port: int, clients: int, seconds: float, pid: int, rate: float = 0.0
             ) -> dict[str, float]:
    """``wrk`` saturating ``clients`` connections (``rate`` 0) or paced at ``rate`` req/s."""
    url = f"http://127.0.0.1:{port}{PATH}"
    base = ["wrk", "-t1", f"-c{clients}", "--latency", "--timeout", "5s"]
    subprocess.run([*base, "-d1s", url], check=True, capture_output=True)  # warm-up
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        cmd = [*base, f"-d{math.ceil(seconds)}s", url]
        if rate:
            script.write(PACE_LUA.replace("RATE", repr(float(rate))))
            script.flush()
            cmd[1:1] = ["-s", script.name]
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        took = time.perf_counter() - t0
    res = parse_wrk(out)
    res["server_cpu_pct"] = 100 * (cpu_seconds(pid) - cpu0) / took
    return res


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def rest_client(port: int, path: str, stop: float, lat: list[float],
                      rate: float = 0.0) -> None:
    """Closed loop when ``rate`` is 0; else paced at ``rate`` requests/s, latency counted from
    the scheduled send time (no coordinated omission)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    start, n = time.perf_counter(), 0
    try:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            if rate:
                t0 = start + n / rate
                n += 1
                await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:100])
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
    finally:
        writer.close()


async def bench_rest(port: int, clients: int, seconds: float, pid: int,
                     rate: float = 0.0) -> dict[str, float]:
    """``clients`` connections, closed loop (``rate`` 0: saturation) or ``rate`` requests/s."""
    path = PATH
    warm: list[float] = []
    await asyncio.gather(*(rest_client(port, path, time.perf_counter() + 0.5, warm)
                           for _ in range(clients)))
    lat: list[float] = []
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(rest_client(port, path, t0 + seconds, lat, rate / clients)
                           for _ in range(clients)))
    took = time.perf_counter() - t0
    return {"requests": len(lat), "rps": len(lat) / took, "p50_ms": 1000 * pct(lat, 0.5),
            "p99_ms": 1000 * pct(lat, 0.99), "max_ms": 1000 * max(lat),
            "server_cpu_pct": 100 * (cpu_seconds(pid) - cpu0) / took,
            "non2xx": 0.0, "socket_errors": 0.0}


def run_rest(client: str, port: int, clients: int, seconds: float, pid: int, url: str,
             rate: float = 0.0) -> dict[str, float]:
    """One REST phase with the chosen load generator, plus Redis HGETs per request."""
    reads0 = hget_calls(url)
    if client == "wrk":
        res = wrk_rest(port, clients, seconds, pid, rate)
    else:
        res = asyncio.run(bench_rest(port, clients, seconds, pid, rate))
    # warm-up requests are counted too, so this slightly overstates reads per measured request
    res["redis_reads_per_req"] = (hget_calls(url) - reads0) / max(1.0, res["requests"])
    return res


async def bench_fanout(port: int, url: str, subscribers: int, rate: float, seconds: float,
                       pid: int) -> dict[str, float]:
    from websockets.asyncio.client import connect

    lat: list[float] = []
    conns = []
    for _ in range(subscribers):
        ws = await connect(f"ws://127.0.0.1:{port}/v1/stream", compression=None, max_queue=None)
        await ws.send(f'{{"op":"subscribe","channels":["book:bench:{SYM}"]}}')
        conns.append(ws)

    async def consume(ws: object) -> int:
        n = 0
        async for frame in ws:  # type: ignore[attr-defined]
            now = time.time_ns() // 1000
            m = _SEQ.search(frame.encode() if isinstance(frame, str) else frame)
            if m and b'"type":"update"' in (frame.encode() if isinstance(frame, str) else frame):
                lat.append((now - int(m.group(1))) / 1000)
                n += 1
        return n

    tasks = [asyncio.create_task(consume(ws)) for ws in conns]
    loop = asyncio.get_running_loop()
    interval, sent = 1.0 / rate, 0
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        seq = time.time_ns() // 1000  # publish time in µs: increasing, so a valid version
        await loop.run_in_executor(None, fill, url, [book_record("bench", SYM, seq, seq // 1000)])
        sent += 1
        await asyncio.sleep(max(0.0, t0 + sent * interval - time.perf_counter()))
    took = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - cpu0
    expected = sent * subscribers
    deadline = time.monotonic() + 10
    while len(lat) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # benchmark drain, not test synchronization
    for ws in conns:
        await ws.close()
    for t in tasks:
        t.cancel()
    return {"subscribers": subscribers, "updates_sent": sent, "delivered": len(lat),
            "expected": expected, "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
            "max_ms": max(lat) if lat else float("nan"),
            "mean_ms": statistics.fmean(lat) if lat else float("nan"),
            "server_cpu_pct": 100 * cpu / took}


def pin(server_pid: int) -> str:
    """Server on CPU 0, this process (and the wrk it starts) on CPU 1, when there are 2+ CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "not pinned (1 CPU)"
    os.sched_setaffinity(server_pid, {cpus[0]})
    os.sched_setaffinity(0, {cpus[1]})
    return f"server on CPU {cpus[0]}, load generator on CPU {cpus[1]}"


def rest_rows(name: str, res: dict[str, float], goal: str) -> list[tuple[str, str, str]]:
    rows = [(f"REST book, {name}: req/s", f"{res['rps']:,.0f}", goal),
            ("  p50 / p99 latency (ms)", f"{res['p50_ms']:.2f} / {res['p99_ms']:.2f}",
             "p99 <= 5" if "paced" in name else ""),
            ("  max latency (ms)", f"{res['max_ms']:.1f}", ""),
            ("  server CPU (%)", f"{res['server_cpu_pct']:.0f}", ""),
            ("  Redis HGETs / request (all clients)", f"{res['redis_reads_per_req']:.3f}", ""),
            ("  non-2xx / socket errors", f"{res['non2xx']:.0f} / {res['socket_errors']:.0f}",
             "0 / 0")]
    if "late_sends" in res:
        rows.append(("  late sends (> 1 ms behind schedule)",
                     f"{res['late_sends']:.0f}/{res['scheduled']:.0f}", "~0"))
    return rows


def main() -> int:
    from api.app import ApiSettings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-url", default=os.environ.get("MD_REDIS_URL",
                                                          "redis://127.0.0.1:6379/0"))
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--subscribers", type=int, default=500)
    ap.add_argument("--rate", type=float, default=20.0, help="book updates/s during fan-out")
    ap.add_argument("--rest-rate", type=float, default=2000.0, help="paced REST requests/s")
    ap.add_argument("--book-max-age-ms", type=float, default=ApiSettings.book_max_age_ms,
                    help="the API's book freshness bound (0: one Redis read per request)")
    ap.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                    help="REST load generator (auto: wrk when installed)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and client")
    ap.add_argument("--skip-ws", action="store_true", help="REST only")
    args = ap.parse_args()
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    url = db_url(args.redis_url, BENCH_DB)
    wipe(url)
    fill(url, [book_record("bench", SYM, 1, 1)])
    port = free_port()
    code = ("from api.app import ApiSettings, create_app; from api.server import run; "
            f"run(create_app({url!r}, ApiSettings(book_max_age_ms={args.book_max_age_ms!r})), "
            f"'127.0.0.1', {port}, 'warning')")
    server = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    fan: dict[str, Any] | None = None
    try:
        import httpx

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=20, message="API server started")
        pinning = "not pinned" if args.no_pin else pin(server.pid)
        rest = run_rest(client, port, args.clients, args.seconds, server.pid, url)
        paced = run_rest(client, port, args.clients, args.seconds, server.pid, url,
                         args.rest_rate)
        if not args.skip_ws:
            fan = asyncio.run(bench_fanout(port, url, args.subscribers, args.rate,
                                           args.seconds, server.pid))
    finally:
        server.terminate()
        server.wait(timeout=10)
        wipe(url)
    print(f"\nAPI benchmark (loopback, {os.cpu_count()} cores, server: 1 uvicorn process; "
          f"{pinning}; REST client: {client}; book max age {args.book_max_age_ms:g} ms)")
    print(f"{'test':<44}{'result':>16}   goal")
    rows = [*rest_rows(f"{args.clients} conns, saturated", rest, ">= 2,000"),
            *rest_rows(f"{args.clients} conns, paced", paced, f"{args.rest_rate:,.0f}")]
    if fan is not None:
        rows += [
            ("WS fan-out: subscribers x updates/s", f"{fan['subscribers']} x {args.rate:g}", ""),
            ("WS delivered / expected", f"{fan['delivered']}/{fan['expected']}", ""),
            ("WS delivery p50 latency (ms)", f"{fan['p50_ms']:.1f}", ""),
            ("WS delivery p99 latency (ms)", f"{fan['p99_ms']:.1f}", "<= 50"),
            ("WS server CPU (%)", f"{fan['server_cpu_pct']:.0f}", ""),
        ]
    for name, value, goal in rows:
        print(f"{name:<44}{value:>16}   {goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
