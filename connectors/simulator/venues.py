"""Each exchange's wire format, rendered from the simulator's own (true) books.

A :class:`Venue` is one simulated exchange: a true :class:`operators.orderbook.Book` per symbol
with the venue's own sequence numbers, and the code that turns book changes and trades into the
exact frames (and REST answers) that exchange sends, so that the feed handlers of
:mod:`connectors.exchanges` connect to it as to the real thing. Every change is an absolute L2
update (``[[px, qty], ...]``, quantity ``0`` removes a level), applied to the true book first and
then rendered; checksums (Kraken, OKX) are computed from the true book after the change.

Sequences: one counter per symbol, +1 per book change (Binance ``U``/``u``/``pu``, Bybit ``u``,
OKX ``seqId``/``prevSeqId``). Coinbase Advanced Trade numbers every message of a connection
(``sequence_num``): frames are rendered without it and stamped per connection (:meth:`stamp`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from connectors.exchanges.base import to_symbol
from connectors.exchanges.kraken import kraken_checksum, kraken_symbol, kraken_v2_checksum
from connectors.exchanges.okx import okx_checksum
from operators.events import BookEvent, DeadLetter, decode_obj
from operators.fixed import decimals
from operators.orderbook import Book

__all__ = ["VARIANTS", "VENUES", "Out", "Venue", "json_number", "make_venue"]

Levels = list[list[str]]


@dataclass(slots=True)
class Out:
    """One frame for the subscribers of ``sym``: ``kind`` is ``book``, ``trade`` or ``ctl``."""

    kind: str
    sym: str
    text: str


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _iso(ms: int) -> str:
    """``2024-08-08T23:54:13.123000Z`` from ms since the epoch (exact, no float)."""
    import time as _t

    secs, frac = divmod(ms, 1000)
    return _t.strftime("%Y-%m-%dT%H:%M:%S", _t.gmtime(secs)) + f".{frac:03d}000Z"


def _sec(ms: int) -> str:
    """Kraken's decimal seconds, ``1534614057.321000``."""
    return f"{ms // 1000}.{ms % 1000:03d}000"


class Venue:
    """One simulated exchange: true books, sequences, and the wire format (subclasses)."""

    exchange = ""
    has_checksum = False
    in_band = True  # books come on the socket; False: REST snapshot (Binance)

    def __init__(self, symbols: list[str]) -> None:
        self.symbols = list(symbols)
        self.books: dict[str, Book] = {s: Book() for s in symbols}
        self.seq: dict[str, int] = dict.fromkeys(symbols, 1000)
        self.trade_id = 0
        for s in symbols:  # an empty, synced book so that the first change applies
            self.books[s].apply(self._event(s, 0, "snapshot", [], []))

    # -- truth ---------------------------------------------------------------------------------
    def _event(self, sym: str, ts: int, action: str, bids: Levels, asks: Levels) -> BookEvent:
        ev = decode_obj({"type": "book", "ex": self.exchange or "sim", "sym": sym, "ts": ts,
                         "rts": ts, "action": action, "seq": self.seq[sym], "bids": bids,
                         "asks": asks})
        if isinstance(ev, DeadLetter):
            raise ValueError(f"invalid simulated book change: {ev.reason}")
        assert isinstance(ev, BookEvent)
        return ev

    def apply(self, sym: str, ts: int, bids: Levels, asks: Levels) -> tuple[int, int]:
        """Apply a change to the true book; returns ``(prev_seq, seq)``."""
        prev = self.seq[sym]
        self.seq[sym] = prev + 1
        self.books[sym].apply(self._event(sym, ts, "update", bids, asks))
        return prev, prev + 1

    def truth(self, sym: str) -> dict[str, Any]:
        """The true book of ``sym``: every level, best first, and its sequence."""
        b = self.books[sym]
        return {"seq": self.seq[sym], "bids": [list(lv) for lv in b.top(1 << 30, "bids")],
                "asks": [list(lv) for lv in b.top(1 << 30, "asks")]}

    def next_trade_id(self) -> int:
        self.trade_id += 1
        return self.trade_id

    # -- wire (subclasses) ---------------------------------------------------------------------
    def native(self, sym: str) -> str:
        return sym.replace("-", "")

    def canonical(self, native: str) -> str:
        return to_symbol(native)

    def welcome(self) -> list[str]:
        """Frames sent on connect, before any subscription."""
        return []

    def on_message(self, msg: Any) -> tuple[list[str], list[str]]:
        """A client message -> (symbols it subscribes to, answer frames)."""
        raise NotImplementedError

    def snapshot(self, sym: str, ts: int) -> list[Out]:
        """In-band snapshot frames sent right after a subscription."""
        return []

    def update(self, sym: str, ts: int, prev: int, seq: int, bids: Levels,
               asks: Levels) -> list[Out]:
        raise NotImplementedError

    def trade(self, sym: str, ts: int, tid: int, px: str, qty: str, side: str) -> list[Out]:
        raise NotImplementedError

    def rest(self, path: str, query: dict[str, str], ts: int) -> dict[str, Any] | None:
        """A REST answer, or ``None`` for an unknown path."""
        return None

    def heartbeat(self) -> str | None:
        """A frame sent when the connection has been quiet for a second (if the venue has one)."""
        return None

    def stamp(self, text: str, n: int) -> str:
        """Per-connection numbering of a frame (Coinbase Advanced Trade ``sequence_num``)."""
        return text

    def bad_checksum(self, text: str) -> str | None:
        """``text`` with a wrong checksum, or ``None`` when the frame has none."""
        return None


# -- Binance -------------------------------------------------------------------------------------
class BinanceVenue(Venue):
    """Combined-stream envelopes, ``depthUpdate`` diffs and the REST ``/api/v3/depth`` snapshot."""

    exchange = "binance"
    in_band = False
    futures = False
    depth_path = "/api/v3/depth"

    def __init__(self, symbols: list[str]) -> None:
        super().__init__(symbols)
        self.streams: dict[str, str] = {s: f"{self.native(s).lower()}@depth@100ms"
                                        for s in symbols}

    def on_message(self, msg: Any) -> tuple[list[str], list[str]]:
        if msg.get("method") != "SUBSCRIBE":
            return [], [_dumps({"result": None, "id": msg.get("id")})]
        syms = []
        for p in msg["params"]:
            native, _, stream = p.partition("@")
            sym = self.canonical(native)
            if stream.startswith("depth"):
                self.streams[sym] = p
            if sym not in syms:
                syms.append(sym)
        return syms, [_dumps({"result": None, "id": msg.get("id")})]

    def update(self, sym: str, ts: int, prev: int, seq: int, bids: Levels,
               asks: Levels) -> list[Out]:
        data: dict[str, Any] = {"e": "depthUpdate", "E": ts}
        if self.futures:
            data["T"] = ts
        data.update({"s": self.native(sym), "U": prev + 1, "u": seq})
        if self.futures:
            data["pu"] = prev
        data["b"], data["a"] = bids, asks
        return [Out("book", sym, _dumps({"stream": self.streams[sym], "data": data}))]

    def trade(self, sym: str, ts: int, tid: int, px: str, qty: str, side: str) -> list[Out]:
        n = self.native(sym)
        data = {"e": "trade", "E": ts, "T": ts, "s": n, "t": tid, "p": px, "q": qty,
                "m": side == "sell", "M": True}
        return [Out("trade", sym, _dumps({"stream": f"{n.lower()}@trade", "data": data}))]

    def rest(self, path: str, query: dict[str, str], ts: int) -> dict[str, Any] | None:
        if path != self.depth_path or "symbol" not in query:
            return None
        sym = self.canonical(query["symbol"])
        if sym not in self.books:
            return {"code": -1121, "msg": "Invalid symbol."}
        t = self.truth(sym)
        out: dict[str, Any] = {"lastUpdateId": t["seq"]}
        if self.futures:
            out.update({"E": ts, "T": ts})
        out["bids"], out["asks"] = t["bids"], t["asks"]
        return out


class BinanceFuturesVenue(BinanceVenue):
    """USD-M futures: ``pu`` chaining and ``/fapi/v1/depth``."""

    exchange = "binance_futures"
    futures = True
    depth_path = "/fapi/v1/depth"


# -- Bybit ---------------------------------------------------------------------------------------
class BybitVenue(Venue):
    """v5 public ``orderbook.{depth}.{sym}`` snapshot/delta and ``publicTrade``."""

    exchange = "bybit"

    def __init__(self, symbols: list[str]) -> None:
        super().__init__(symbols)
        self.depth = 500

    def on_message(self, msg: Any) -> tuple[list[str], list[str]]:
        op = msg.get("op")
        if op == "ping":
            return [], [_dumps({"success": True, "ret_msg": "pong", "conn_id": "sim",
                                "op": "ping"})]
        syms: list[str] = []
        if op == "subscribe":
            for arg in msg["args"]:
                parts = arg.split(".")
                if parts[0] == "orderbook":
                    self.depth = int(parts[1])
                sym = self.canonical(parts[-1])
                if sym not in syms:
                    syms.append(sym)
        return syms, [_dumps({"success": True, "ret_msg": "", "conn_id": "sim", "op": op})]

    def _book(self, sym: str, ts: int, kind: str, seq: int, bids: Levels,
              asks: Levels) -> Out:
        n = self.native(sym)
        return Out("book", sym, _dumps({
            "topic": f"orderbook.{self.depth}.{n}", "type": kind, "ts": ts,
            "data": {"s": n, "b": bids, "a": asks, "u": seq, "seq": seq}, "cts": ts}))

    def snapshot(self, sym: str, ts: int) -> list[Out]:
        t = self.truth(sym)
        return [self._book(sym, ts, "snapshot", t["seq"], t["bids"], t["asks"])]

    def update(self, sym: str, ts: int, prev: int, seq: int, bids: Levels,
               asks: Levels) -> list[Out]:
        return [self._book(sym, ts, "delta", seq, bids, asks)]

    def trade(self, sym: str, ts: int, tid: int, px: str, qty: str, side: str) -> list[Out]:
        n = self.native(sym)
        t = {"T": ts, "s": n, "S": side.capitalize(), "v": qty, "p": px, "L": "PlusTick",
             "i": str(tid), "BT": False}
        return [Out("trade", sym, _dumps({"topic": f"publicTrade.{n}", "type": "snapshot",
                                          "ts": ts, "data": [t]}))]


# -- Coinbase Advanced Trade ---------------------------------------------------------------------
class CoinbaseVenue(Venue):
    """Advanced Trade ``level2`` (``l2_data``), ``market_trades``, ``heartbeats``.

    Only Advanced Trade is simulated: it numbers its messages (``sequence_num``), so a lost frame
    is detectable; the Exchange ``level2`` feed has no sequence at all.
    """

    exchange = "coinbase"

    def __init__(self, symbols: list[str]) -> None:
        super().__init__(symbols)
        self.beats = 0

    def native(self, sym: str) -> str:
        return sym

    def on_message(self, msg: Any) -> tuple[list[str], list[str]]:
        if msg.get("type") != "subscribe" or "channel" not in msg:
            return [], [_dumps({"type": "error",
                                "message": "simulator speaks Advanced Trade only"})]
        syms = [self.canonical(p) for p in msg.get("product_ids", [])]
        ack = {"channel": "subscriptions", "client_id": "", "timestamp": "",
               "events": [{"subscriptions": {msg["channel"]: msg.get("product_ids", [])}}]}
        return (syms if msg["channel"] == "level2" else []), [_dumps(ack)]

    def _l2(self, sym: str, ts: int, kind: str, bids: Levels, asks: Levels) -> Out:
        iso = _iso(ts)
        ups = [{"side": "bid", "event_time": iso, "price_level": p, "new_quantity": q}
               for p, q in bids]
        ups += [{"side": "offer", "event_time": iso, "price_level": p, "new_quantity": q}
                for p, q in asks]
        return Out("book", sym, _dumps({
            "channel": "l2_data", "client_id": "", "timestamp": iso,
            "events": [{"type": kind, "product_id": sym, "updates": ups}]}))

    def snapshot(self, sym: str, ts: int) -> list[Out]:
        t = self.truth(sym)
        return [self._l2(sym, ts, "snapshot", t["bids"], t["asks"])]

    def update(self, sym: str, ts: int, prev: int, seq: int, bids: Levels,
               asks: Levels) -> list[Out]:
        return [self._l2(sym, ts, "update", bids, asks)]

    def trade(self, sym: str, ts: int, tid: int, px: str, qty: str, side: str) -> list[Out]:
        iso = _iso(ts)
        t = {"trade_id": str(tid), "product_id": sym, "price": px, "size": qty,
             "side": side.upper(), "time": iso}
        return [Out("trade", sym, _dumps({"channel": "market_trades", "client_id": "",
                                          "timestamp": iso,
                                          "events": [{"type": "update", "trades": [t]}]}))]

    def heartbeat(self) -> str:
        self.beats += 1
        return _dumps({"channel": "heartbeats", "client_id": "", "timestamp": "",
                       "events": [{"current_time": "", "heartbeat_counter": self.beats}]})

    def stamp(self, text: str, n: int) -> str:
        return f'{{"sequence_num":{n},{text[1:]}'


# -- Kraken v1 -----------------------------------------------------------------------------------
_KRAKEN_C = re.compile(r'"c":"(\d+)"')
_OKX_C = re.compile(r'"checksum":(-?\d+)')


class KrakenVenue(Venue):
    """WebSocket v1 ``book-{depth}`` (snapshot ``as``/``bs``, updates with CRC32 ``c``), ``trade``.

    The true book must stay within the subscribed depth (Kraken re-publishes levels that come
    into range; the simulator's sources keep books shallower than any depth a client asks for).
    """

    exchange = "kraken"
    has_checksum = True

    def __init__(self, symbols: list[str]) -> None:
        super().__init__(symbols)
        self.depth = 1000
        self.chan = {s: i + 100 for i, s in enumerate(symbols)}

    def native(self, sym: str) -> str:
        return sym.replace("-", "/").replace("BTC", "XBT")

    def canonical(self, native: str) -> str:
        return kraken_symbol(native)

    def welcome(self) -> list[str]:
        return [_dumps({"connectionID": 1, "event": "systemStatus", "status": "online",
                        "version": "1.9.0"})]

    def on_message(self, msg: Any) -> tuple[list[str], list[str]]:
        ev = msg.get("event")
        if ev == "ping":
            return [], [_dumps({"event": "pong", "reqid": msg.get("reqid")})]
        if ev != "subscribe":
            return [], []
        sub = msg["subscription"]
        name = sub["name"]
        if name == "book":
            self.depth = int(sub.get("depth", 10))
        chan_name = f"book-{self.depth}" if name == "book" else name
        syms, acks = [], []
        for pair in msg["pair"]:
            sym = self.canonical(pair)
            acks.append(_dumps({"channelID": self.chan.get(sym, 0), "channelName": chan_name,
                                "event": "subscriptionStatus", "pair": pair,
                                "status": "subscribed", "subscription": sub}))
            if name == "book":
                syms.append(sym)
        return syms, acks

    def snapshot(self, sym: str, ts: int) -> list[Out]:
        t, s = self.truth(sym), _sec(ts)
        body = {"as": [[p, q, s] for p, q in t["asks"]], "bs": [[p, q, s] for p, q in t["bids"]]}
        return [Out("book", sym, _dumps([self.chan[sym], body, f"book-{self.depth}",
                                         self.native(sym)]))]

    def update(self, sym: str, ts: int, prev: int, seq: int, bids: Levels,
               asks: Levels) -> list[Out]:
        b = self.books[sym]
        c = str(kraken_checksum(b.top(10, "asks"), b.top(10, "bids")))
        s = _sec(ts)
        parts: list[dict[str, Any]] = []
        if asks:
            parts.append({"a": [[p, q, s] for p, q in asks]})
        if bids:
            parts.append({"b": [[p, q, s] for p, q in bids]})
        parts[-1]["c"] = c
        return [Out("book", sym, _dumps([self.chan[sym], *parts, f"book-{self.depth}",
                                         self.native(sym)]))]

    def trade(self, sym: str, ts: int, tid: int, px: str, qty: str, side: str) -> list[Out]:
        t = [px, qty, _sec(ts), "b" if side == "buy" else "s", "l", ""]
        return [Out("trade", sym, _dumps([self.chan[sym] + 1000, [t], "trade",
                                          self.native(sym)]))]

    def heartbeat(self) -> str:
        return '{"event":"heartbeat"}'

    def bad_checksum(self, text: str) -> str | None:
        m = _KRAKEN_C.search(text)
        if m is None:
            return None
        wrong = (int(m.group(1)) + 1) % (1 << 32)
        return f'{text[:m.start()]}"c":"{wrong}"{text[m.end():]}'


# -- Kraken v2 -----------------------------------------------------------------------------------
_KRAKEN_V2_C = re.compile(r'"checksum":(\d+)')


def json_number(text: str) -> str:
    """A decimal string as a JSON number the way a float printer shows it (Kraken v2).

    Trailing zeros go (``"0.5660"`` -> ``0.566``); below 1e-4 the exponent form appears, as
    Python's ``repr`` would print it (``"0.00001200"`` -> ``1.2e-05``): the handler must read both
    exactly. Pure string work: never a float.

    >>> json_number("0.5660"), json_number("5.00000000"), json_number("0.00001200")
    ('0.566', '5', '1.2e-05')
    """
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    if whole.strip("0") or not frac or len(frac) - len(frac.lstrip("0")) < 4:
        return f"{whole}.{frac}" if frac else whole
    digits = frac.lstrip("0")
    exp = len(frac) - len(digits) + 1
    return f"{digits[0]}.{digits[1:]}e-{exp:02d}" if len(digits) > 1 else f"{digits}e-{exp:02d}"


def _v2_levels(levels: Levels) -> str:
    return "[" + ",".join(f'{{"price":{json_number(p)},"qty":{json_number(q)}}}'
                          for p, q in levels) + "]"


class KrakenV2Venue(Venue):
    """WebSocket v2 ``book`` (snapshot/update with ``checksum``), ``trade``, ``instrument``.

    Prices and quantities go out as JSON numbers (:func:`json_number`), so a client must know
    each pair's precision: the ``instrument`` channel announces ``price_precision`` (2) and
    ``qty_precision`` (8), what the synthetic source prints. A change printed with more decimals
    widens the precision and is announced by an ``instrument`` update first (Kraken does the same
    when it changes a pair's precision). Like :class:`KrakenVenue`, the true book must stay
    within the subscribed depth.
    """

    exchange = "kraken_v2"
    has_checksum = True
    price_dp = 2
    qty_dp = 8

    def __init__(self, symbols: list[str]) -> None:
        super().__init__(symbols)
        self.depth = 10
        self.prec: dict[str, tuple[int, int]] = {s: (self.price_dp, self.qty_dp)
                                                 for s in symbols}

    def native(self, sym: str) -> str:
        return sym.replace("-", "/")

    def canonical(self, native: str) -> str:
        return kraken_symbol(native)

    def welcome(self) -> list[str]:
        return [_dumps({"channel": "status", "type": "update", "data": [
            {"version": "2.0.0", "system": "online", "api_version": "v2",
             "connection_id": 1}]})]

    def _instrument(self, kind: str, syms: list[str]) -> str:
        pairs = [{"symbol": self.native(s), "base": s.split("-")[0], "quote": s.split("-")[1],
                  "status": "online", "price_precision": self.prec[s][0],
                  "qty_precision": self.prec[s][1]} for s in syms]
        return _dumps({"channel": "instrument", "type": kind,
                       "data": {"assets": [], "pairs": pairs}})

    def on_message(self, msg: Any) -> tuple[list[str], list[str]]:
        method, req = msg.get("method"), msg.get("req_id")
        if method == "ping":
            return [], [_dumps({"method": "pong", "req_id": req})]
        if method != "subscribe":
            return [], [_dumps({"method": method, "success": False, "req_id": req,
                                "error": "simulator: unsupported method"})]
        params = msg["params"]
        channel = params["channel"]
        if channel == "instrument":
            ack = {"method": "subscribe", "result": {"channel": "instrument", "snapshot": True},
                   "success": True, "req_id": req}
            return [], [_dumps(ack), self._instrument("snapshot", self.symbols)]
        if channel == "book":
            self.depth = int(params.get("depth", 10))
        syms, acks = [], []
        for pair in params["symbol"]:
            sym = self.canonical(pair)
            result: dict[str, Any] = {"channel": channel, "symbol": pair}
            if channel == "book":
                result["depth"] = self.depth
                syms.append(sym)
            acks.append(_dumps({"method": "subscribe", "result": result, "success": True,
                                "req_id": req}))
        return syms, acks

    def _checksum(self, sym: str) -> int:
        b, (pdp, qdp) = self.books[sym], self.prec[sym]
        return kraken_v2_checksum(b.top(10, "asks"), b.top(10, "bids"), pdp, qdp)

    def _book(self, sym: str, ts: int, kind: str, bids: Levels, asks: Levels) -> Out:
        text = (f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{self.native(sym)}",'
                f'"bids":{_v2_levels(bids)},"asks":{_v2_levels(asks)},'
                f'"checksum":{self._checksum(sym)},"timestamp":"{_iso(ts)}"}}]}}')
        return Out("book", sym, text)

    def snapshot(self, sym: str, ts: int) -> list[Out]:
        t = self.truth(sym)
        return [self._book(sym, ts, "snapshot", t["bids"][: self.depth],
                           t["asks"][: self.depth])]

    def update(self, sym: str, ts: int, prev: int, seq: int, bids: Levels,
               asks: Levels) -> list[Out]:
        pdp, qdp = self.prec[sym]
        levels = bids + asks
        wider = (max([pdp, *(decimals(p) for p, _ in levels)]),
                 max([qdp, *(decimals(q) for _, q in levels)]))
        outs = []
        if wider != (pdp, qdp):
            self.prec[sym] = wider
            outs.append(Out("ctl", sym, self._instrument("update", [sym])))
        outs.append(self._book(sym, ts, "update", bids, asks))
        return outs

    def trade(self, sym: str, ts: int, tid: int, px: str, qty: str, side: str) -> list[Out]:
        text = (f'{{"channel":"trade","type":"update","data":[{{"symbol":"{self.native(sym)}",'
                f'"side":"{side}","price":{json_number(px)},"qty":{json_number(qty)},'
                f'"ord_type":"limit","trade_id":{tid},"timestamp":"{_iso(ts)}"}}]}}')
        return [Out("trade", sym, text)]

    def heartbeat(self) -> str:
        return '{"channel":"heartbeat"}'

    def bad_checksum(self, text: str) -> str | None:
        m = _KRAKEN_V2_C.search(text)
        if m is None:
            return None
        wrong = (int(m.group(1)) + 1) % (1 << 32)
        return f"{text[:m.start()]}\"checksum\":{wrong}{text[m.end():]}"


# -- OKX -----------------------------------------------------------------------------------------
class OkxVenue(Venue):
    """v5 public ``books`` (snapshot/update with ``seqId``, ``prevSeqId``, checksum), ``trades``."""

    exchange = "okx"
    has_checksum = True

    def native(self, sym: str) -> str:
        return sym

    def on_message(self, msg: Any) -> tuple[list[str], list[str]]:
        if msg.get("op") != "subscribe":
            return [], []
        syms: list[str] = []
        acks = []
        for arg in msg["args"]:
            acks.append(_dumps({"event": "subscribe", "arg": arg, "connId": "sim"}))
            if arg["channel"].startswith("books"):
                syms.append(self.canonical(arg["instId"]))
        return syms, acks

    def _book(self, sym: str, ts: int, action: str, prev: int, seq: int, bids: Levels,
              asks: Levels) -> Out:
        b = self.books[sym]
        c = okx_checksum(b.top(25, "bids"), b.top(25, "asks"))
        data = {"asks": [[p, q, "0", "1"] for p, q in asks],
                "bids": [[p, q, "0", "1"] for p, q in bids], "ts": str(ts), "checksum": c,
                "seqId": seq, "prevSeqId": prev}
        return Out("book", sym, _dumps({"arg": {"channel": "books", "instId": sym},
                                        "action": action, "data": [data]}))

    def snapshot(self, sym: str, ts: int) -> list[Out]:
        t = self.truth(sym)
        return [self._book(sym, ts, "snapshot", -1, t["seq"], t["bids"], t["asks"])]

    def update(self, sym: str, ts: int, prev: int, seq: int, bids: Levels,
               asks: Levels) -> list[Out]:
        return [self._book(sym, ts, "update", prev, seq, bids, asks)]

    def trade(self, sym: str, ts: int, tid: int, px: str, qty: str, side: str) -> list[Out]:
        t = {"instId": sym, "tradeId": str(tid), "px": px, "sz": qty, "side": side,
             "ts": str(ts)}
        return [Out("trade", sym, _dumps({"arg": {"channel": "trades", "instId": sym},
                                          "data": [t]}))]

    def bad_checksum(self, text: str) -> str | None:
        m = _OKX_C.search(text)
        if m is None:
            return None
        return f'{text[:m.start()]}"checksum":{int(m.group(1)) ^ 1}{text[m.end():]}'


VENUES: dict[str, type[Venue]] = {
    "binance": BinanceVenue,
    "binance_futures": BinanceFuturesVenue,
    "bybit": BybitVenue,
    "coinbase": CoinbaseVenue,
    "kraken": KrakenVenue,
    "okx": OkxVenue,
}


# Other protocols of an exchange already in VENUES: served on request only, never by default
# ("all venues"), since their events share the exchange's ``ex:SYM`` keys.
VARIANTS: dict[str, type[Venue]] = {
    "kraken_v2": KrakenV2Venue,
}


def make_venue(exchange: str, symbols: list[str]) -> Venue:
    cls = VENUES.get(exchange) or VARIANTS.get(exchange)
    if cls is None:
        names = ", ".join(sorted({*VENUES, *VARIANTS}))
        raise ValueError(f"no simulated venue {exchange!r}; one of {names}")
    return cls(symbols)
