"""Outgoing wire shapes of the simulated venues (Binance, Polymarket CLOB/Gamma). Pure functions.

Guarantees: every builder returns exactly the field names, key order and JSON types the venue
uses (summarised in docs/design.md, "Wire formats"): Binance ids/times are ints and
prices/quantities decimal strings; Polymarket prices, sizes and ms timestamps are strings;
Gamma's ``outcomes``/``clobTokenIds``/``outcomePrices`` are JSON-encoded strings. Ids derived
from a slug (token ids, condition id) are deterministic.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

dumps = orjson.dumps

# ------------------------------------------------------------------------------------------ ids


def _h(*parts: str) -> bytes:
    return hashlib.sha256(":".join(parts).encode()).digest()


def token_ids(slug: str) -> tuple[str, str]:
    """(Up, Down) CLOB token ids of a market slug: uint256-like decimal strings, deterministic."""
    up = int.from_bytes(_h(slug, "up")) >> 1
    down = int.from_bytes(_h(slug, "down")) >> 1
    return str(up), str(down)


def condition_id(slug: str) -> str:
    """0x-prefixed 64-hex condition id of a slug."""
    return "0x" + _h(slug, "condition").hex()


def numeric_id(slug: str, kind: str = "market") -> str:
    """Gamma's numeric id (as a string) of a market or event."""
    return str(1_000_000 + int.from_bytes(_h(slug, kind)[:4]) % 9_000_000)


def hex_hash(*parts: Any) -> str:
    """A 40-hex content hash (Polymarket uses such strings for book/order hashes)."""
    return hashlib.sha1(":".join(str(p) for p in parts).encode(), usedforsecurity=False).hexdigest()


# ---------------------------------------------------------------------------------- formatting


def fmt_fixed(x: float, decimals: int) -> str:
    """Binance decimal string with a fixed number of decimals ("61837.60", "0.00100000")."""
    return f"{x:.{decimals}f}"


def fmt_poly(x: float, decimals: int = 4) -> str:
    """Polymarket decimal string: shortest form ("0.52", "0.975", "30", "1520.5")."""
    s = f"{x:.{decimals}f}".rstrip("0").rstrip(".")
    return s if s not in ("", "-0") else "0"


def milli_str(p_milli: int) -> str:
    """A Polymarket price held in thousandths (520 -> "0.52", 975 -> "0.975")."""
    return fmt_poly(p_milli / 1000.0, 3)


def iso_z(ms: int, micros: bool = False) -> str:
    """ISO-8601 UTC with a trailing Z, as Gamma prints it."""
    dt = datetime.fromtimestamp(ms / 1000.0, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if micros else dt.strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------- Binance


def combined(stream: str, payload: bytes) -> bytes:
    """Combined-stream envelope ``{"stream":..,"data":..}`` around an already-serialised payload."""
    return b'{"stream":"' + stream.encode() + b'","data":' + payload + b"}"


def agg_trade(sym: str, E: int, a: int, p: str, q: str, f: int, last: int, T: int, m: bool, spot: bool) -> dict:
    d: dict[str, Any] = {"e": "aggTrade", "E": E, "a": a, "s": sym, "p": p, "q": q, "f": f, "l": last, "T": T, "m": m}
    if spot:
        d["M"] = True
    return d


def trade(sym: str, E: int, t: int, p: str, q: str, T: int, m: bool, spot: bool) -> dict:
    if spot:
        return {"e": "trade", "E": E, "s": sym, "t": t, "p": p, "q": q, "T": T, "m": m, "M": True}
    return {"e": "trade", "E": E, "T": T, "s": sym, "t": t, "p": p, "q": q, "X": "MARKET", "m": m}


def book_ticker(sym: str, u: int, b: str, B: str, a: str, A: str, T: int, E: int, spot: bool) -> dict:
    if spot:
        return {"u": u, "s": sym, "b": b, "B": B, "a": a, "A": A}
    return {"e": "bookTicker", "u": u, "s": sym, "b": b, "B": B, "a": a, "A": A, "T": T, "E": E}


def depth_update(
    sym: str, E: int, T: int, U: int, u: int, pu: int, bids: list[list[str]], asks: list[list[str]], spot: bool
) -> dict:
    if spot:
        return {"e": "depthUpdate", "E": E, "s": sym, "U": U, "u": u, "b": bids, "a": asks}
    return {"e": "depthUpdate", "E": E, "T": T, "s": sym, "U": U, "u": u, "pu": pu, "b": bids, "a": asks}


def kline(sym: str, E: int, k: dict) -> dict:
    """``k`` keys: t,T,f,L,o,c,h,l,v,n,x,q,V,Q (already strings/ints as Binance sends them)."""
    return {
        "e": "kline",
        "E": E,
        "s": sym,
        "k": {
            "t": k["t"],
            "T": k["T"],
            "s": sym,
            "i": "1m",
            "f": k["f"],
            "L": k["L"],
            "o": k["o"],
            "c": k["c"],
            "h": k["h"],
            "l": k["l"],
            "v": k["v"],
            "n": k["n"],
            "x": k["x"],
            "q": k["q"],
            "V": k["V"],
            "Q": k["Q"],
            "B": "0",
        },
    }


def kline_row(k: dict) -> list:
    """REST klines row: [open_time, o, h, l, c, v, close_time, quote_vol, n, taker_base, taker_quote, "0"]."""
    return [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"], k["V"], k["Q"], "0"]


def depth_snapshot(last_id: int, bids: list[list[str]], asks: list[list[str]], E: int | None = None) -> dict:
    """REST depth; the futures form adds ``E``/``T`` (pass E)."""
    if E is None:
        return {"lastUpdateId": last_id, "bids": bids, "asks": asks}
    return {"lastUpdateId": last_id, "E": E, "T": E, "bids": bids, "asks": asks}


def binance_error(code: int, msg: str) -> dict:
    return {"code": code, "msg": msg}


# ---------------------------------------------------------------------------------- Polymarket


def levels(book: dict[int, float], descending: bool) -> list[dict[str, str]]:
    """Levels as Polymarket sends them: worst first (bids ascending, asks descending)."""
    keys = sorted(book, reverse=descending)
    return [{"price": milli_str(p), "size": fmt_poly(book[p], 2)} for p in keys]


def poly_book(cid: str, asset: str, ts_ms: int, bids: list, asks: list, tick: str, last: str) -> dict:
    return {
        "market": cid,
        "asset_id": asset,
        "timestamp": str(ts_ms),
        "hash": "0x" + hex_hash(asset, ts_ms, orjson.dumps(bids), orjson.dumps(asks)),
        "bids": bids,
        "asks": asks,
        "tick_size": tick,
        "event_type": "book",
        "last_trade_price": last,
    }


def price_change_entry(asset: str, price: str, size: str, side: str, hsh: str, bb: str, ba: str) -> dict:
    return {"asset_id": asset, "price": price, "size": size, "side": side, "hash": hsh, "best_bid": bb, "best_ask": ba}


def price_change(cid: str, ts_ms: int, changes: list[dict]) -> dict:
    return {"market": cid, "price_changes": changes, "timestamp": str(ts_ms), "event_type": "price_change"}


def last_trade_price(cid: str, asset: str, ts_ms: int, price: str, size: str, side: str, txh: str) -> dict:
    return {
        "asset_id": asset,
        "event_type": "last_trade_price",
        "fee_rate_bps": "0",
        "market": cid,
        "price": price,
        "side": side,
        "size": size,
        "timestamp": str(ts_ms),
        "transaction_hash": "0x" + txh,
    }


def best_bid_ask(cid: str, asset: str, ts_ms: int, bb: str, ba: str, spread: str) -> dict:
    return {
        "event_type": "best_bid_ask",
        "market": cid,
        "asset_id": asset,
        "best_bid": bb,
        "best_ask": ba,
        "spread": spread,
        "timestamp": str(ts_ms),
    }


def tick_size_change(cid: str, asset: str, ts_ms: int, old: str, new: str) -> dict:
    return {
        "event_type": "tick_size_change",
        "asset_id": asset,
        "market": cid,
        "old_tick_size": old,
        "new_tick_size": new,
        "timestamp": str(ts_ms),
    }


def market_resolved(w: Any, ts_ms: int, winner_up: bool) -> dict:
    """``w`` is a :class:`~observer_svc.sim.core.PolyWindow`."""
    return {
        "event_type": "market_resolved",
        "id": w.market_id,
        "market": w.cid,
        "assets_ids": [w.up, w.down],
        "winning_asset_id": w.up if winner_up else w.down,
        "winning_outcome": "Up" if winner_up else "Down",
        "timestamp": str(ts_ms),
        "tags": ["crypto", "up-or-down"],
    }


def new_market(w: Any, ts_ms: int) -> dict:
    return {
        "event_type": "new_market",
        "id": w.market_id,
        "question": w.question,
        "market": w.cid,
        "slug": w.slug,
        "description": _DESCRIPTION,
        "assets_ids": [w.up, w.down],
        "outcomes": ["Up", "Down"],
        "timestamp": str(ts_ms),
        "tags": ["crypto", "up-or-down"],
        "condition_id": w.cid,
        "active": True,
        "clob_token_ids": [w.up, w.down],
        "order_price_min_tick_size": "0.01",
    }


_DESCRIPTION = (
    'This market will resolve to "Up" if the price at the end of the time range specified in the title is '
    'greater than or equal to the price at the beginning of that range. Otherwise, it will resolve to "Down".'
)


def gamma_market(w: Any, now_ms: int, up_price: float) -> dict:
    """Gamma ``/markets`` object (subset of the real fields, real types)."""
    closed = now_ms >= w.end_ms
    if closed and w.winner_up is not None:
        prices = ["1", "0"] if w.winner_up else ["0", "1"]
    else:
        prices = [fmt_poly(up_price, 3), fmt_poly(1.0 - up_price, 3)]
    return {
        "id": w.market_id,
        "question": w.question,
        "conditionId": w.cid,
        "slug": w.slug,
        "endDate": iso_z(w.end_ms),
        "startDate": iso_z(w.created_ms, micros=True),
        "eventStartTime": iso_z(w.start_ms),
        "description": _DESCRIPTION,
        "outcomes": orjson.dumps(["Up", "Down"]).decode().replace(",", ", "),
        "outcomePrices": orjson.dumps(prices).decode().replace(",", ", "),
        "clobTokenIds": orjson.dumps([w.up, w.down]).decode().replace(",", ", "),
        "active": True,
        "closed": closed,
        "acceptingOrders": not closed,
        "enableOrderBook": True,
        "orderPriceMinTickSize": 0.01,
        "orderMinSize": 5,
        "negRisk": False,
        "feesEnabled": True,
        "feeSchedule": {"rate": 0.07, "exponent": 1, "takerOnly": True, "rebateRate": 0.2},
        "resolutionSource": "https://data.chain.link/streams/btc-usd",
    }


def gamma_event(w: Any, now_ms: int, up_price: float) -> dict:
    """Gamma ``/events`` object with its one market. ``startDate`` is the creation time (as live);
    the window start is ``startTime`` / ``markets[0].eventStartTime`` (and the slug's suffix)."""
    closed = now_ms >= w.end_ms
    return {
        "id": w.event_id,
        "ticker": w.slug,
        "slug": w.slug,
        "title": w.question,
        "description": _DESCRIPTION,
        "startDate": iso_z(w.created_ms, micros=True),
        "creationDate": iso_z(w.created_ms, micros=True),
        "startTime": iso_z(w.start_ms),
        "endDate": iso_z(w.end_ms),
        "active": True,
        "closed": closed,
        "archived": False,
        "markets": [gamma_market(w, now_ms, up_price)],
    }


def clob_market(w: Any, now_ms: int, up_price: float) -> dict:
    """CLOB ``/markets/{condition_id}``: active, closed, question, tokens[{token_id, outcome, price, winner}]."""
    closed = now_ms >= w.end_ms
    if closed and w.winner_up is not None:
        pu, pd = (1.0, 0.0) if w.winner_up else (0.0, 1.0)
    else:
        pu, pd = round(up_price, 4), round(1.0 - up_price, 4)
    return {
        "enable_order_book": True,
        "active": True,
        "closed": closed,
        "archived": False,
        "accepting_orders": not closed,
        "minimum_order_size": 5,
        "minimum_tick_size": 0.01,
        "condition_id": w.cid,
        "question_id": "0x" + _h(w.slug, "question").hex(),
        "question": w.question,
        "description": _DESCRIPTION,
        "market_slug": w.slug,
        "end_date_iso": iso_z(w.end_ms),
        "neg_risk": False,
        "tokens": [
            {"token_id": w.up, "outcome": "Up", "price": pu, "winner": bool(closed and w.winner_up)},
            {"token_id": w.down, "outcome": "Down", "price": pd, "winner": bool(closed and w.winner_up is False)},
        ],
        "tags": ["Crypto", "Up or Down"],
    }


def clob_book(cid: str, asset: str, ts_ms: int, bids: list, asks: list, tick: str, last: str) -> dict:
    """CLOB REST ``/book?token_id=``."""
    return {
        "market": cid,
        "asset_id": asset,
        "timestamp": str(ts_ms),
        "hash": hex_hash("rest", asset, ts_ms),
        "bids": bids,
        "asks": asks,
        "min_order_size": "5",
        "tick_size": tick,
        "neg_risk": False,
        "last_trade_price": last,
    }
