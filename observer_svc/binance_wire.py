"""Binance wire format: frames (bytes/str) -> typed events, plus stream names and REST paths. Pure.

Public API::

    parse_frame(raw, max_bytes=MAX_FRAME_BYTES) -> Event     # combined {"stream","data"} or raw payload
    parse_payload(d: dict) -> Event                          # an already-decoded payload
    parse_depth_snapshot(raw) -> DepthSnapshot               # REST /fapi/v1/depth, /api/v3/depth
    parse_klines_rest(raw_or_rows) -> list[KlineRow]         # REST /fapi/v1/klines, /api/v3/klines
    stream_names(symbols, suffixes) -> list[str]             # ["btcusdt@aggTrade", ...]
    combined_url(ws_base, names) -> str                      # "{ws_base}/stream?streams=a/b/c"
    depth_url(rest_base, kind, symbol, limit) / klines_url(rest_base, kind, symbol, limit)
    Event = AggTrade | Kline | BookTicker | DepthUpdate | DepthSnapshot | ServerShutdown

Guarantees: every event carries exchange times only (``E``/``T``; never a local clock). Anything
malformed -- oversize, truncated/invalid JSON, not an object, unknown event type, missing field,
wrong type or impossible value -- raises :class:`WireError` whose ``reason`` is one short code
from :data:`REASONS` (suitable as a metric label). The spot ``trade`` event is returned as an
:class:`AggTrade`. Price/qty accept Binance's decimal strings (or JSON numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from observer_svc.wire_error import WireError

MAX_FRAME_BYTES = 1 << 20
REASONS = ("oversize", "bad_json", "not_object", "unknown_event", "missing_field", "bad_type", "bad_value")
Kind = Literal["futures", "spot"]
Level = tuple[float, float]
_INF = math.inf
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


@dataclass(slots=True)
class AggTrade:
    """A taker trade (futures/spot ``aggTrade`` or spot ``trade``)."""

    symbol: str
    price: float
    qty: float
    buyer_is_maker: bool  # True => the aggressor sold
    trade_time_ms: int  # T
    event_time_ms: int  # E


@dataclass(slots=True)
class Kline:
    """A 1-minute (or other interval) candle update from ``<sym>@kline_<i>``."""

    symbol: str
    open_ms: int
    close_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float  # base volume
    closed: bool
    event_time_ms: int


@dataclass(slots=True)
class BookTicker:
    """Best bid/ask; ``update_id`` is the order-book update id (comparable with depth ``u``)."""

    symbol: str
    update_id: int
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float
    event_time_ms: int | None  # futures only (spot has no E)
    trans_time_ms: int | None  # futures only


@dataclass(slots=True)
class DepthUpdate:
    """A diff-depth event: absolute quantities per price, qty 0 removes the level."""

    symbol: str
    first_id: int  # U
    final_id: int  # u
    prev_final_id: int | None  # pu (futures only)
    bids: list[Level]
    asks: list[Level]
    event_time_ms: int


@dataclass(slots=True)
class DepthSnapshot:
    """REST depth snapshot; ``symbol`` is None unless the caller knows it."""

    last_update_id: int
    bids: list[Level]
    asks: list[Level]
    symbol: str | None = None


@dataclass(slots=True)
class ServerShutdown:
    """The server is about to close the connection: reconnect now."""

    event_time_ms: int | None
    symbol: None = None


@dataclass(slots=True)
class KlineRow:
    """One REST kline row."""

    open_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    close_ms: int


Event = AggTrade | Kline | BookTicker | DepthUpdate | DepthSnapshot | ServerShutdown


# ---------------------------------------------------------------------------------------- parsing
def parse_frame(raw: bytes | bytearray | memoryview | str, max_bytes: int = MAX_FRAME_BYTES) -> Event:
    """Parse one websocket frame (combined-stream envelope or raw payload)."""
    if len(raw) > max_bytes:
        raise WireError("oversize", f"{len(raw)} > {max_bytes} bytes")
    try:
        obj = _loads(raw)
    except _JSONDecodeError as e:
        raise WireError("bad_json", str(e)[:80]) from None
    if type(obj) is not dict:
        raise WireError("not_object", type(obj).__name__)
    data = obj.get("data")
    if data is not None and "stream" in obj:
        obj = data
    return parse_payload(obj)


def parse_payload(d: Any) -> Event:
    """Parse a decoded payload (the ``data`` of a combined frame, or a raw-stream message)."""
    if type(d) is not dict:
        raise WireError("not_object", type(d).__name__)
    e = d.get("e")
    try:
        if e == "aggTrade" or e == "trade":
            return _trade(d)
        if e is None:
            if "u" in d and "b" in d:
                return _book_ticker(d)
            if "lastUpdateId" in d:
                return _snapshot(d)
            raise WireError("unknown_event", "no event type")
        if e == "depthUpdate":
            return _depth(d)
        if e == "bookTicker":
            return _book_ticker(d)
        if e == "kline":
            return _kline(d)
        if e == "serverShutdown":
            t = d.get("E")
            return ServerShutdown(t if type(t) is int else None)
        raise WireError("unknown_event", str(e)[:40])
    except KeyError as ex:
        raise WireError("missing_field", str(ex)) from None
    except TypeError as ex:
        raise WireError("bad_type", str(ex)[:80]) from None
    except ValueError as ex:
        if isinstance(ex, WireError):
            raise
        raise WireError("bad_value", str(ex)[:80]) from None


def _bad_type(name: str, v: Any) -> WireError:
    return WireError("bad_type", f"{name}={type(v).__name__}")


def _trade(d: dict[str, Any]) -> AggTrade:
    s, E, T, m = d["s"], d["E"], d["T"], d["m"]
    p, q = float(d["p"]), float(d["q"])
    if type(s) is not str:
        raise _bad_type("s", s)
    if type(E) is not int or type(T) is not int:
        raise _bad_type("E/T", E if type(E) is not int else T)
    if m is not True and m is not False:
        raise _bad_type("m", m)
    if not (0.0 < p < _INF and 0.0 <= q < _INF):
        raise WireError("bad_value", f"p={p} q={q}")
    return AggTrade(s, p, q, m, T, E)


def _book_ticker(d: dict[str, Any]) -> BookTicker:
    s, u = d["s"], d["u"]
    b, bq, a, aq = float(d["b"]), float(d["B"]), float(d["a"]), float(d["A"])
    if type(s) is not str:
        raise _bad_type("s", s)
    if type(u) is not int:
        raise _bad_type("u", u)
    E, T = d.get("E"), d.get("T")
    if (E is not None and type(E) is not int) or (T is not None and type(T) is not int):
        raise _bad_type("E/T", E if type(E) is not int else T)
    if not (0.0 <= b < _INF and 0.0 <= a < _INF and 0.0 <= bq < _INF and 0.0 <= aq < _INF):
        raise WireError("bad_value", f"b={b} a={a}")
    return BookTicker(s, u, b, bq, a, aq, E, T)


def _levels(lv: Any, name: str) -> list[Level]:
    if type(lv) is not list:
        raise _bad_type(name, lv)
    out = [(float(p), float(q)) for p, q in lv]
    for p, q in out:
        if not (0.0 < p < _INF and 0.0 <= q < _INF):
            raise WireError("bad_value", f"{name} level p={p} q={q}")
    return out


def _depth(d: dict[str, Any]) -> DepthUpdate:
    s, E, U, u = d["s"], d["E"], d["U"], d["u"]
    pu = d.get("pu")
    if type(s) is not str:
        raise _bad_type("s", s)
    if type(E) is not int or type(U) is not int or type(u) is not int or (pu is not None and type(pu) is not int):
        raise WireError("bad_type", "E/U/u/pu")
    if u < U:
        raise WireError("bad_value", f"u={u} < U={U}")
    return DepthUpdate(s, U, u, pu, _levels(d["b"], "b"), _levels(d["a"], "a"), E)


def _snapshot(d: dict[str, Any]) -> DepthSnapshot:
    lid = d["lastUpdateId"]
    if type(lid) is not int:
        raise _bad_type("lastUpdateId", lid)
    return DepthSnapshot(lid, _levels(d["bids"], "bids"), _levels(d["asks"], "asks"))


def _kline(d: dict[str, Any]) -> Kline:
    s, E, k = d["s"], d["E"], d["k"]
    if type(k) is not dict:
        raise _bad_type("k", k)
    t, T, x = k["t"], k["T"], k["x"]
    o, h, lo, c, v = float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]), float(k["v"])
    if type(s) is not str:
        raise _bad_type("s", s)
    if type(E) is not int or type(t) is not int or type(T) is not int:
        raise WireError("bad_type", "E/t/T")
    if x is not True and x is not False:
        raise _bad_type("x", x)
    if not (0.0 < lo <= h < _INF and 0.0 < o < _INF and 0.0 < c < _INF and 0.0 <= v < _INF):
        raise WireError("bad_value", f"ohlcv={o},{h},{lo},{c},{v}")
    return Kline(s, t, T, o, h, lo, c, v, x, E)


def parse_depth_snapshot(raw: bytes | str | dict[str, Any], symbol: str | None = None) -> DepthSnapshot:
    """Parse a REST depth snapshot body (``lastUpdateId``, ``bids``, ``asks``)."""
    d = raw if isinstance(raw, dict) else _loads_checked(raw)
    if type(d) is not dict or "lastUpdateId" not in d:
        raise WireError("missing_field", "lastUpdateId")
    ev = parse_payload(d)
    if not isinstance(ev, DepthSnapshot):
        raise WireError("unknown_event", "not a depth snapshot")
    ev.symbol = symbol
    return ev


def parse_klines_rest(raw: bytes | str | list[Any]) -> list[KlineRow]:
    """Parse REST kline rows ``[open_ms, o, h, l, c, v, close_ms, ...]`` (oldest first)."""
    rows = raw if isinstance(raw, list) else _loads_checked(raw)
    if type(rows) is not list:
        raise WireError("not_object", "klines body is not a list")
    out: list[KlineRow] = []
    try:
        for r in rows:
            t, T = r[0], r[6]
            if type(t) is not int or type(T) is not int:
                raise WireError("bad_type", "kline open/close time")
            row = KlineRow(t, float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]), T)
            if not (0.0 < row.low <= row.high < _INF and 0.0 < row.close < _INF and 0.0 <= row.volume < _INF):
                raise WireError("bad_value", f"kline row {t}")
            out.append(row)
    except (IndexError, KeyError) as ex:
        raise WireError("missing_field", str(ex)) from None
    except TypeError as ex:
        raise WireError("bad_type", str(ex)[:80]) from None
    except ValueError as ex:
        if isinstance(ex, WireError):
            raise
        raise WireError("bad_value", str(ex)[:80]) from None
    return out


def _loads_checked(raw: bytes | str) -> Any:
    try:
        return _loads(raw)
    except _JSONDecodeError as e:
        raise WireError("bad_json", str(e)[:80]) from None


# ----------------------------------------------------------------------------------- names, URLs
_REST = {
    "futures": {"depth": "/fapi/v1/depth", "klines": "/fapi/v1/klines"},
    "spot": {"depth": "/api/v3/depth", "klines": "/api/v3/klines"},
}


def stream_names(symbols: list[str] | tuple[str, ...], suffixes: list[str] | tuple[str, ...]) -> list[str]:
    """Combined-stream names, e.g. ``["btcusdt@aggTrade", "btcusdt@depth@100ms"]`` (symbols lower-cased)."""
    return [f"{s.lower()}@{x}" for s in symbols for x in suffixes]


def combined_url(ws_base: str, names: list[str]) -> str:
    """``{ws_base}/stream?streams=a/b/c``."""
    return f"{ws_base.rstrip('/')}/stream?streams=" + "/".join(names)


def depth_url(rest_base: str, kind: Kind, symbol: str, limit: int = 1000) -> str:
    return f"{rest_base.rstrip('/')}{_REST[kind]['depth']}?symbol={symbol.upper()}&limit={limit}"


def klines_url(rest_base: str, kind: Kind, symbol: str, limit: int = 1500, interval: str = "1m") -> str:
    limit = min(limit, 1500 if kind == "futures" else 1000)
    return f"{rest_base.rstrip('/')}{_REST[kind]['klines']}?symbol={symbol.upper()}&interval={interval}&limit={limit}"


def is_depth_stream(suffix: str) -> bool:
    """True for diff-depth suffixes (``depth``, ``depth@100ms``, ``depth@0ms``), not partial ``depth5``."""
    return suffix == "depth" or suffix.startswith("depth@")
