"""Prometheus metrics of the flows (``prometheus_client``), one HTTP port per process.

Several flow processes on one host would clash on one port, so ``serve`` takes the first free port
from the configured one upward and logs which it took.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter, Gauge, start_http_server

__all__ = ["count_batch", "serve"]  # and the metric objects below

log = logging.getLogger(__name__)

EVENTS_IN = Counter("md_flow_events_in_total", "Messages consumed by a flow step", ["flow"])
RECORDS_OUT = Counter("md_flow_records_out_total", "Records emitted by a flow", ["flow", "type"])
DEADLETTERS = Counter("md_flow_deadletters_total", "Rejected inputs by reason class",
                      ["flow", "reason"])

BOOK_STATUS = Gauge("md_book_status", "Book status per symbol: 0 ok, 1 stale, 2 crossed", ["key"])
BOOK_EVENT_TIME = Gauge("md_book_event_timestamp_seconds",
                        "Exchange time of the newest book record per symbol (staleness = now - "
                        "this)", ["key"])
FEED_CONNECTED = Gauge("md_feed_connected", "Ingestion connection up (1) or not (0)", ["feed"])
FEED_LAST_FRAME = Gauge("md_feed_last_frame_timestamp_seconds",
                        "Wall time of the last frame per feed (age = now - this)", ["feed"])
FEED_RESYNCS = Gauge("md_feed_resyncs", "Resyncs (new snapshots after a gap, checksum "
                     "mismatch or crossed book) per feed since start", ["feed"])
_STATUS_CODE = {"ok": 0, "stale": 1, "crossed": 2}

_served: list[int] = []


def _reason_class(reason: str) -> str:
    """A bounded label: the reason's first words, before any value it quotes."""
    head = reason.split(":", 1)[0]
    return " ".join(head.split()[:4])[:48]


_EVENTS_IN: dict[str, Any] = {}  # flow -> its EVENTS_IN child: labels() costs ~1 µs a call


def count_batch(flow: str, n_in: int, out: list[dict[str, Any]]) -> None:
    """Count one batch: per type and per book once, not per record (labels() is not free)."""
    if n_in:
        child = _EVENTS_IN.get(flow)
        if child is None:
            child = _EVENTS_IN[flow] = EVENTS_IN.labels(flow)
        child.inc(n_in)
    if not out:
        return
    kinds: dict[str, int] = {}
    books: dict[str, dict[str, Any]] = {}
    for rec in out:
        kind = rec["type"]
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "book":
            books[f"{rec['ex']}:{rec['sym']}"] = rec
        elif kind == "deadletter":
            DEADLETTERS.labels(flow, _reason_class(rec["reason"])).inc()
    for kind, n in kinds.items():
        RECORDS_OUT.labels(flow, kind).inc(n)
    for key, rec in books.items():
        BOOK_STATUS.labels(key).set(_STATUS_CODE.get(rec["status"], 1))
        BOOK_EVENT_TIME.labels(key).set(rec["ts"] / 1000)


def serve(port: int, addr: str = "127.0.0.1", tries: int = 16) -> int | None:
    """Expose ``/metrics`` on ``port`` or the next free one; ``0`` disables. Returns the port."""
    if not port or _served:
        return _served[0] if _served else None
    for p in range(port, port + tries):
        try:
            start_http_server(p, addr=addr)
        except OSError:
            continue
        _served.append(p)
        log.info("metrics on http://%s:%d/metrics", addr, p)
        return p
    log.warning("no free metrics port in %d..%d", port, port + tries - 1)
    return None
