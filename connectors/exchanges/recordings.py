"""Readers for the recorded sessions of ``shared/data`` (formats in its README.md).

Each reader yields :class:`Frame`\\ s in receive order: what a live transport would have handed to
the handler. ``rts`` is the receive time in ms, floored, computed exactly from the recorded text
(nanoseconds for hftbacktest, decimal seconds for cryptofeed). A REST answer is a frame of kind
``rest`` with the symbol it was asked for when the recording names it.

* hftbacktest ``*.gz``: ``<ns> <json>`` lines; the bare ``{"lastUpdateId": ...}`` line is REST.
* cryptofeed ``*.ws.N.0``: ``<sec>: <json>`` lines (connect/sent lines skipped); the REST answers
  of a matching ``*.http.0.0`` next to it (``<url> -> <sec>: <json>``) are merged in by time.
* Bybit ``*.zip``: one JSON object a line; no receive time was recorded, so ``rts`` is the
  message's ``ts``.
"""

from __future__ import annotations

import gzip
import heapq
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

from connectors.exchanges.base import sec_to_ns

__all__ = ["Frame", "RecordingError", "data_dir", "detect_format", "read_frames"]


def data_dir() -> Path:
    """The recorded sessions: ``MD_DATA_DIR``, else ``shared/data`` next to the repository."""
    env = os.environ.get("MD_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


class RecordingError(ValueError):
    """The input is not a recording we can read."""


class Frame(NamedTuple):
    """One recorded frame: receive time (ns), kind (``ws`` or ``rest``), symbol hint, text."""

    rts_ns: int
    kind: str
    symbol: str
    raw: str

    @property
    def rts(self) -> int:
        return self.rts_ns // 1_000_000


def detect_format(path: Path) -> str:
    """``hftbacktest``, ``cryptofeed`` or ``bybit_zip`` from the file name."""
    name = path.name
    if name.endswith(".gz"):
        return "hftbacktest"
    if name.endswith(".zip"):
        return "bybit_zip"
    if ".ws." in name:
        return "cryptofeed"
    if ".http." in name:
        raise RecordingError(f"{path}: the REST answers of a cryptofeed recording: give its "
                             f"*.ws.N.0 file, which reads this one next to it")
    raise RecordingError(f"{path}: unknown recording format (expected *.gz, *.zip or *.ws.N.0)")


def read_hftbacktest(path: Path) -> Iterator[Frame]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            ns, sep, raw = line.partition(" ")
            if not sep or not ns.isdigit():
                raise RecordingError(f"{path}:{n}: expected '<ns> <json>'")
            kind = "rest" if raw.startswith('{"lastUpdateId"') else "ws"
            yield Frame(int(ns), kind, "", raw)


def _cryptofeed_ws(path: Path) -> Iterator[Frame]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or " <-> " in line or " <- " in line:
                continue
            ts, sep, raw = line.partition(": ")
            if not sep:
                raise RecordingError(f"{path}:{n}: expected '<seconds>: <json>'")
            try:
                yield Frame(sec_to_ns(ts), "ws", "", raw)
            except ValueError:
                raise RecordingError(f"{path}:{n}: bad receive time {ts[:40]!r}") from None


def _cryptofeed_http(path: Path) -> Iterator[Frame]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            url, sep, rest = line.partition(" -> ")
            ts, sep2, raw = rest.partition(": ")
            if not sep or not sep2:
                raise RecordingError(f"{path}:{n}: expected '<url> -> <seconds>: <json>'")
            symbol = parse_qs(urlsplit(url).query).get("symbol", [""])[0]
            yield Frame(sec_to_ns(ts), "rest", symbol, raw)


def read_cryptofeed(path: Path) -> Iterator[Frame]:
    """WebSocket frames, with the REST answers of ``<EXCHANGE>.http.*`` merged in by time."""
    exchange = path.name.split(".ws.", 1)[0]
    streams = [_cryptofeed_ws(path)]
    streams += [_cryptofeed_http(p) for p in sorted(path.parent.glob(f"{exchange}.http.*"))]
    # Stable merge on receive time: a REST answer goes before frames received after it.
    yield from heapq.merge(*streams, key=lambda fr: fr.rts_ns)


def read_bybit_zip(path: Path) -> Iterator[Frame]:
    with zipfile.ZipFile(path) as z:
        for name in sorted(z.namelist()):
            with z.open(name) as f:
                for line in f:
                    text = line.decode("utf-8").strip()
                    if not text:
                        continue
                    ts = _json_int(text, '"ts":')
                    yield Frame(ts * 1_000_000, "ws", "", text)


def _json_int(text: str, field: str) -> int:
    """The integer after ``field`` in a JSON text (cheap: no full parse of a large object)."""
    i = text.find(field)
    if i < 0:
        return 0
    i += len(field)
    j = i
    while j < len(text) and text[j].isdigit():
        j += 1
    return int(text[i:j]) if j > i else 0


READERS = {"hftbacktest": read_hftbacktest, "cryptofeed": read_cryptofeed,
           "bybit_zip": read_bybit_zip}


def read_frames(path: Path) -> Iterator[Frame]:
    """Every frame of the recording at ``path``, in receive order."""
    if not path.is_file():
        raise RecordingError(f"{path}: no such file")
    return READERS[detect_format(path)](path)
