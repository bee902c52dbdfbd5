"""Benchmark of the API on loopback: REST book latency under 50 concurrent clients, and WebSocket
fan-out of one busy symbol to 500 subscribers.

    .venv/bin/python bench/bench_api.py [--seconds 5] [--clients 50] [--subscribers 500]

The server is a separate process (``api.server.run``, one uvicorn worker); its CPU is read from
/proc. The load generator is this process: a minimal asyncio HTTP/1.1 keep-alive client (one
request in flight per connection, like ``wrk -c 50`` with one thread), and ``websockets`` clients.
Redis database 9 is used and its ``md:*`` keys deleted. Goals (issue 6): book p99 <= 5 ms at
2,000 requests/s; fan-out p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.testing import book_record, db_url, fill, wipe  # noqa: E402
from tests.util import free_port, wait_until  # noqa: E402

SYM = "BENCH-USDT"
_SEQ = re.compile(rb'"seq":(\d+)')


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    path = f"/v1/book/bench/{SYM}"
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
            "server_cpu_pct": 100 * (cpu_seconds(pid) - cpu0) / took}


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-url", default=os.environ.get("MD_REDIS_URL",
                                                          "redis://127.0.0.1:6379/0"))
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--subscribers", type=int, default=500)
    ap.add_argument("--rate", type=float, default=20.0, help="book updates/s during fan-out")
    ap.add_argument("--rest-rate", type=float, default=2000.0, help="paced REST requests/s")
    args = ap.parse_args()
    url = db_url(args.redis_url)
    wipe(url)
    fill(url, [book_record("bench", SYM, 1, 1)])
    port = free_port()
    code = ("from api.app import create_app; from api.server import run; "
            f"run(create_app({url!r}), '127.0.0.1', {port}, 'warning')")
    server = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        import httpx

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=20, message="API server started")
        rest = asyncio.run(bench_rest(port, args.clients, args.seconds, server.pid))
        paced = asyncio.run(bench_rest(port, args.clients, args.seconds, server.pid,
                                       args.rest_rate))
        fan = asyncio.run(bench_fanout(port, url, args.subscribers, args.rate, args.seconds,
                                       server.pid))
    finally:
        server.terminate()
        server.wait(timeout=10)
        wipe(url)
    print(f"\nAPI benchmark (loopback, {os.cpu_count()} cores, server: 1 uvicorn process)")
    print(f"{'test':<44}{'result':>16}   goal")
    rows = [
        (f"REST book, {args.clients} conns, saturated: req/s", f"{rest['rps']:,.0f}",
         ">= 2,000"),
        ("  p50 / p99 latency (ms)", f"{rest['p50_ms']:.2f} / {rest['p99_ms']:.2f}", ""),
        ("  server CPU (%)", f"{rest['server_cpu_pct']:.0f}", ""),
        (f"REST book, {args.clients} conns, paced: req/s", f"{paced['rps']:,.0f}",
         f"{args.rest_rate:,.0f}"),
        ("  p50 / p99 latency (ms)", f"{paced['p50_ms']:.2f} / {paced['p99_ms']:.2f}",
         "p99 <= 5"),
        ("  server CPU (%)", f"{paced['server_cpu_pct']:.0f}", ""),
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
