"""Loop recorded canonical events into Kafka at (accelerated) real time, for demos and soak runs.

Each pass is shifted so the feed looks live and keeps every contract: times move to "now" (the
first event of the first pass maps to the start), sequences, ``prev_seq`` and numeric trade ids move
past the previous pass, so books stay in sync (each pass opens with its snapshot) and candles and
tickers never see a duplicate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import orjson
from confluent_kafka import Producer

__all__ = ["Feeder"]

log = logging.getLogger(__name__)


def _span(events: Sequence[dict[str, Any]], field: str) -> int:
    vals = [int(e[field]) for e in events if field in e and str(e[field]).isdigit()]
    return (max(vals) - min(vals) + 1) if vals else 0


class Feeder(threading.Thread):
    """Produce ``events`` (one session, any symbols) to ``{prefix}book``/``{prefix}trades``."""

    def __init__(self, bootstrap: str, prefix: str, events: list[dict[str, Any]],
                 speed: float = 1.0, loop: bool = True) -> None:
        super().__init__(name="feeder", daemon=True)
        self.events = sorted(events, key=lambda e: e["ts"])  # stable: keeps per-key order
        self.prefix, self.speed, self.loop = prefix, speed, loop
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                                  "linger.ms": 5})
        self.stop_event = threading.Event()
        self.sent = 0
        self.failed = 0
        t0, t1 = self.events[0]["ts"], self.events[-1]["ts"]
        self.period = t1 - t0 + 1000
        self.seq_span = _span(self.events, "seq") + 1
        self.id_span = _span([e for e in self.events if e["type"] == "trade"], "id") + 1

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed += 1
            log.error("feeder: delivery failed: %s", err)

    def _shifted(self, e: dict[str, Any], n: int, shift: int) -> dict[str, Any]:
        d = dict(e)
        d["ts"] = e["ts"] + shift
        d["rts"] = e["rts"] + shift
        if e["type"] == "book":
            d["seq"] = e["seq"] + n * self.seq_span
            if e.get("prev_seq") is not None:
                d["prev_seq"] = e["prev_seq"] + n * self.seq_span
        elif str(e["id"]).isdigit():
            d["id"] = str(int(e["id"]) + n * self.id_span)
        return d

    def run(self) -> None:
        start_wall = time.time() * 1000
        first = self.events[0]["ts"]
        n = 0
        while not self.stop_event.is_set():
            shift = int(start_wall - first) + n * self.period
            for e in self.events:
                if self.stop_event.is_set():
                    break
                d = self._shifted(e, n, shift)
                due = start_wall + (d["ts"] - shift - first + n * self.period) / self.speed
                wait = (due - time.time() * 1000) / 1000
                if wait > 0.005:
                    self.producer.poll(0)
                    if self.stop_event.wait(wait):
                        break
                topic = self.prefix + ("book" if d["type"] == "book" else "trades")
                try:
                    self.producer.produce(topic, orjson.dumps(d), f"{d['ex']}:{d['sym']}",
                                          on_delivery=self._on_delivery)
                except BufferError:
                    self.producer.poll(0.1)
                    self.producer.produce(topic, orjson.dumps(d), f"{d['ex']}:{d['sym']}",
                                          on_delivery=self._on_delivery)
                self.sent += 1
                self.producer.poll(0)
            n += 1
            if not self.loop:
                break
        self.producer.flush(10)

    def stop(self) -> None:
        self.stop_event.set()
