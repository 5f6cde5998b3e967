"""Polymarket CLOB market-channel wire format: frame parsing and subscription messages (pure).

Public API
----------
``parse_frame(data, max_bytes) -> list[Event]``
    Strict: raises :class:`WireError` if the frame or any event in it is malformed.
``parse_frame_partial(data, max_bytes) -> tuple[list[Event], list[WireError]]``
    Raises :class:`WireError` only for frame-level faults (oversize, not JSON, not an object or
    array); a bad element of an array is returned as an error and its good siblings are kept.
``subscribe_message(asset_ids) -> bytes``            initial ``{"assets_ids", "type": "market", ...}``
``operation_message("subscribe"|"unsubscribe", asset_ids) -> bytes``   change on an open socket
Events (slots dataclasses): :class:`Book`, :class:`PriceChange` (of :class:`LevelChange`),
:class:`LastTradePrice`, :class:`TickSizeChange`, :class:`BestBidAsk`, :class:`NewMarket`,
:class:`MarketResolved`, :data:`PONG` (the text keep-alive answer).

Guarantees: a frame is a single JSON object, a JSON array of objects, or the text ``PONG``.
Prices, sizes and timestamps arrive as strings (numbers are accepted too); every price/size is
a finite float, every timestamp an int in unix ms. Level order inside ``bids``/``asks`` is kept
as received (it is not guaranteed by the venue: best bid = max, best ask = min). Both the
current ``price_changes`` array form of ``price_change`` and the pre-2025-09 per-asset
``changes`` form parse into the same :class:`PriceChange`. :attr:`WireError.reason` is a short
code (``oversize``, ``json``, ``not_object``, ``unknown_event_type``, ``missing_field``,
``bad_type``, ``bad_number``), suitable as a metrics label; :attr:`WireError.detail` says more.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from observer_svc.wire_error import WireError

VENUE = "polymarket"
Level = tuple[float, float]


@dataclass(slots=True)
class Book:
    asset_id: str
    market: str
    bids: list[Level]
    asks: list[Level]
    timestamp: int
    hash: str
    tick_size: float | None = None
    last_trade_price: float | None = None


@dataclass(slots=True)
class LevelChange:
    asset_id: str
    price: float
    size: float  # new aggregate size at the level; 0 removes it
    side: str  # "BUY" (bids) | "SELL" (asks)
    hash: str
    best_bid: float | None  # the venue's top of book after the change (absent in the old shape)
    best_ask: float | None


@dataclass(slots=True)
class PriceChange:
    market: str
    timestamp: int
    changes: list[LevelChange]


@dataclass(slots=True)
class LastTradePrice:
    asset_id: str
    market: str
    price: float
    size: float
    side: str
    timestamp: int


@dataclass(slots=True)
class TickSizeChange:
    asset_id: str
    market: str
    old_tick_size: float
    new_tick_size: float
    timestamp: int


@dataclass(slots=True)
class BestBidAsk:
    asset_id: str
    market: str
    best_bid: float | None
    best_ask: float | None
    timestamp: int


@dataclass(slots=True)
class NewMarket:
    market: str  # condition id
    slug: str
    assets_ids: list[str]
    outcomes: list[str]
    timestamp: int


@dataclass(slots=True)
class MarketResolved:
    market: str  # condition id
    assets_ids: list[str]
    winning_asset_id: str
    winning_outcome: str
    timestamp: int


@dataclass(slots=True, frozen=True)
class Pong:
    """The text ``PONG`` answering our application ``PING``."""


PONG = Pong()

Event = Book | PriceChange | LastTradePrice | TickSizeChange | BestBidAsk | NewMarket | MarketResolved | Pong


# ------------------------------------------------------------------ field helpers
def _get(d: dict[str, Any], key: str) -> Any:
    try:
        return d[key]
    except KeyError:
        raise WireError("missing_field", key) from None


def _str(d: dict[str, Any], key: str) -> str:
    v = _get(d, key)
    if not isinstance(v, str):
        raise WireError("bad_type", f"{key} is {type(v).__name__}, not str")
    return v


def _opt_str(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    return v if isinstance(v, str) else ""


def _num(v: Any, key: str) -> float:
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            raise WireError("bad_number", f"{key}={v[:32]!r}") from None
    elif isinstance(v, int | float) and not isinstance(v, bool):
        f = float(v)
    else:
        raise WireError("bad_type", f"{key} is {type(v).__name__}")
    if not math.isfinite(f):
        raise WireError("bad_number", f"{key}={v!r}")
    return f


def _float(d: dict[str, Any], key: str) -> float:
    return _num(_get(d, key), key)


def _opt_float(d: dict[str, Any], key: str) -> float | None:
    v = d.get(key)
    if v is None or v == "":
        return None
    return _num(v, key)


def _ts(d: dict[str, Any], key: str = "timestamp") -> int:
    v = _get(d, key)
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            raise WireError("bad_number", f"{key}={v[:32]!r}") from None
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise WireError("bad_type", f"{key} is {type(v).__name__}")


def _side(d: dict[str, Any], key: str = "side") -> str:
    s = _str(d, key).upper()
    if s not in ("BUY", "SELL"):
        raise WireError("bad_type", f"{key}={s[:16]!r}")
    return s


def _list(d: dict[str, Any], key: str) -> list[Any]:
    v = _get(d, key)
    if not isinstance(v, list):
        raise WireError("bad_type", f"{key} is {type(v).__name__}, not list")
    return v


def _str_list(d: dict[str, Any], key: str) -> list[str]:
    v = d.get(key)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise WireError("bad_type", f"{key} is not a list of str")
    return v


def _levels(d: dict[str, Any], key: str, alt: str) -> list[Level]:
    raw = d.get(key)
    if raw is None:
        raw = d.get(alt, [])  # older docs: buys / sells
    if not isinstance(raw, list):
        raise WireError("bad_type", f"{key} is {type(raw).__name__}, not list")
    out: list[Level] = []
    for lv in raw:
        try:  # fast path: the venue's own format (decimal strings)
            pv, sv = lv["price"], lv["size"]
            if pv.__class__ is str and sv.__class__ is str:
                p, sz = float(pv), float(sv)
                if p - p == 0.0 and sz - sz == 0.0:  # finite
                    out.append((p, sz))
                    continue
        except (KeyError, TypeError, ValueError):
            pass
        if not isinstance(lv, dict):  # slow path: precise errors, JSON numbers accepted
            raise WireError("bad_type", f"{key} level is {type(lv).__name__}")
        out.append((_float(lv, "price"), _float(lv, "size")))
    return out


def _level_change(c: Any) -> LevelChange:
    try:  # fast path: the venue's own format
        a, pv, sv, side = c["asset_id"], c["price"], c["size"], c["side"]
        bb, ba = c.get("best_bid"), c.get("best_ask")
        if (
            a.__class__ is str
            and pv.__class__ is str
            and sv.__class__ is str
            and (side == "BUY" or side == "SELL")
            and bb.__class__ is str
            and ba.__class__ is str
            and bb
            and ba
        ):
            p, sz, fb, fa = float(pv), float(sv), float(bb), float(ba)
            if p - p == 0.0 and sz - sz == 0.0 and fb - fb == 0.0 and fa - fa == 0.0:
                h = c.get("hash")
                return LevelChange(a, p, sz, side, h if h.__class__ is str else "", fb, fa)
    except (KeyError, TypeError, ValueError):
        pass
    if not isinstance(c, dict):
        raise WireError("bad_type", "price_changes element is not an object")
    return LevelChange(
        asset_id=_str(c, "asset_id"),
        price=_float(c, "price"),
        size=_float(c, "size"),
        side=_side(c),
        hash=_opt_str(c, "hash"),
        best_bid=_opt_float(c, "best_bid"),
        best_ask=_opt_float(c, "best_ask"),
    )


# ------------------------------------------------------------------ per event type
def _book(d: dict[str, Any]) -> Book:
    return Book(
        asset_id=_str(d, "asset_id"),
        market=_opt_str(d, "market"),
        bids=_levels(d, "bids", "buys"),
        asks=_levels(d, "asks", "sells"),
        timestamp=_ts(d),
        hash=_opt_str(d, "hash"),
        tick_size=_opt_float(d, "tick_size"),
        last_trade_price=_opt_float(d, "last_trade_price"),
    )


def _price_change(d: dict[str, Any]) -> PriceChange:
    ts = _ts(d)
    market = _opt_str(d, "market")
    changes: list[LevelChange] = []
    if "price_changes" in d:
        changes = [_level_change(c) for c in _list(d, "price_changes")]
    elif "changes" in d:  # shape before 2025-09-15: one asset per event
        asset = _str(d, "asset_id")
        h = _opt_str(d, "hash")
        for c in _list(d, "changes"):
            if not isinstance(c, dict):
                raise WireError("bad_type", "changes element is not an object")
            changes.append(LevelChange(asset, _float(c, "price"), _float(c, "size"), _side(c), h, None, None))
    else:
        raise WireError("missing_field", "price_changes")
    return PriceChange(market=market, timestamp=ts, changes=changes)


def _last_trade(d: dict[str, Any]) -> LastTradePrice:
    side = d.get("side")
    return LastTradePrice(
        asset_id=_str(d, "asset_id"),
        market=_opt_str(d, "market"),
        price=_float(d, "price"),
        size=_opt_float(d, "size") or 0.0,
        side=_side(d) if side is not None else "",
        timestamp=_ts(d),
    )


def _tick_size(d: dict[str, Any]) -> TickSizeChange:
    return TickSizeChange(
        asset_id=_str(d, "asset_id"),
        market=_opt_str(d, "market"),
        old_tick_size=_opt_float(d, "old_tick_size") or math.nan,
        new_tick_size=_float(d, "new_tick_size"),
        timestamp=_ts(d),
    )


def _best_bid_ask(d: dict[str, Any]) -> BestBidAsk:
    return BestBidAsk(
        asset_id=_str(d, "asset_id"),
        market=_opt_str(d, "market"),
        best_bid=_opt_float(d, "best_bid"),
        best_ask=_opt_float(d, "best_ask"),
        timestamp=_ts(d),
    )


def _new_market(d: dict[str, Any]) -> NewMarket:
    cid = d.get("condition_id") or d.get("market")
    if not isinstance(cid, str):
        raise WireError("missing_field", "market")
    assets = _str_list(d, "assets_ids") or _str_list(d, "clob_token_ids")
    return NewMarket(
        market=cid, slug=_opt_str(d, "slug"), assets_ids=assets, outcomes=_str_list(d, "outcomes"), timestamp=_ts(d)
    )


def _resolved(d: dict[str, Any]) -> MarketResolved:
    return MarketResolved(
        market=_str(d, "market"),
        assets_ids=_str_list(d, "assets_ids"),
        winning_asset_id=_str(d, "winning_asset_id"),
        winning_outcome=_opt_str(d, "winning_outcome"),
        timestamp=_ts(d),
    )


_PARSERS: dict[str, Callable[[dict[str, Any]], Event]] = {
    "book": _book,
    "price_change": _price_change,
    "last_trade_price": _last_trade,
    "tick_size_change": _tick_size,
    "best_bid_ask": _best_bid_ask,
    "new_market": _new_market,
    "market_resolved": _resolved,
}


def parse_event(d: Any) -> Event:
    """One decoded JSON object -> its typed event; :class:`WireError` otherwise."""
    if not isinstance(d, dict):
        raise WireError("not_object", type(d).__name__)
    et = d.get("event_type")
    parser = _PARSERS.get(et) if isinstance(et, str) else None
    if parser is None:
        raise WireError("unknown_event_type", repr(et)[:40])
    return parser(d)


def _decode(data: bytes | str, max_bytes: int) -> list[Any] | None:
    n = len(data)
    if n > max_bytes:
        raise WireError("oversize", f"{n} > {max_bytes} bytes")
    if n <= 6 and (data == "PONG" or data == b"PONG"):
        return None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise WireError("json", str(e)[:80]) from None
    if isinstance(doc, dict):
        return [doc]
    if isinstance(doc, list):
        return doc
    raise WireError("not_object", type(doc).__name__)


def parse_frame(data: bytes | str, max_bytes: int = 1 << 20) -> list[Event]:
    """All events of a frame, in order; raises :class:`WireError` on any malformed part."""
    docs = _decode(data, max_bytes)
    if docs is None:
        return [PONG]
    return [parse_event(d) for d in docs]


def parse_frame_partial(data: bytes | str, max_bytes: int = 1 << 20) -> tuple[list[Event], list[WireError]]:
    """Like :func:`parse_frame`, but keeps the good events of an array that has bad elements."""
    docs = _decode(data, max_bytes)
    if docs is None:
        return [PONG], []
    events: list[Event] = []
    errors: list[WireError] = []
    for d in docs:
        try:
            events.append(parse_event(d))
        except WireError as e:
            errors.append(e)
    return events, errors


def event_time(ev: Event) -> int | None:
    """Venue event time of an event in ms (None for PONG)."""
    return None if isinstance(ev, Pong) else ev.timestamp


# ------------------------------------------------------------------ outgoing messages
def subscribe_message(asset_ids: Iterable[str], custom_features: bool = True) -> bytes:
    """First message on a market-channel socket."""
    msg: dict[str, Any] = {"assets_ids": list(asset_ids), "type": "market"}
    if custom_features:
        msg["custom_feature_enabled"] = True
    return orjson.dumps(msg)


def operation_message(operation: str, asset_ids: Iterable[str]) -> bytes:
    """Subscription change on an open socket: ``operation`` is ``subscribe`` or ``unsubscribe``."""
    if operation not in ("subscribe", "unsubscribe"):
        raise ValueError(f"bad operation {operation!r}")
    return orjson.dumps({"operation": operation, "assets_ids": list(asset_ids)})


PING = "PING"
