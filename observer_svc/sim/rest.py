"""REST routes of the simulator (Binance, Gamma, CLOB, /sim) and the malformed frames it injects.

``route(server, path, params) -> (status, body)``: body is a JSON-able value or raw bytes.
Errors use each venue's shapes: Binance ``{"code": -1121, "msg": ...}`` with 400, CLOB
``{"error": ...}`` with 404, Gamma ``[]`` for an unknown slug.
"""

from __future__ import annotations

from typing import Any

import orjson

from observer_svc.sim import wire_out as wo
from observer_svc.sim.core import SimControl

Body = Any


def _int(params: dict[str, str], key: str, default: int | None) -> int | None:
    v = params.get(key)
    return default if v in (None, "") else int(v)  # type: ignore[arg-type]


def _binance(srv: SimControl, rest: str, p: dict[str, str]) -> tuple[int, Body]:
    d = srv.driver
    if rest.startswith("fapi/v1/"):
        futures, ep = True, rest[len("fapi/v1/") :]
    elif rest.startswith("api/v3/"):
        futures, ep = False, rest[len("api/v3/") :]
    else:
        return 404, wo.binance_error(-1, "Unknown path.")
    if ep == "time":
        return 200, {"serverTime": srv.sim_now}
    if ep == "ping":
        return 200, {}
    if ep not in ("depth", "klines", "ticker/price"):
        return 404, wo.binance_error(-1, "Unknown path.")
    sym = p.get("symbol", "")
    if not sym:
        return 400, wo.binance_error(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
    if ep == "depth":
        limit = min(_int(p, "limit", 500 if futures else 100) or 100, 1000 if futures else 5000)
        snap = d.depth(sym, limit, futures)
        return (200, snap) if snap is not None else (400, wo.binance_error(-1121, "Invalid symbol."))
    if ep == "klines":
        if p.get("interval") != "1m":
            return 400, wo.binance_error(-1120, "Invalid interval.")
        limit = max(1, min(_int(p, "limit", 500) or 500, 1500 if futures else 1000))
        rows = d.klines(sym, limit, _int(p, "startTime", None), _int(p, "endTime", None))
        return (200, rows) if rows is not None else (400, wo.binance_error(-1121, "Invalid symbol."))
    px = d.last_price(sym)
    if px is None:
        return 400, wo.binance_error(-1121, "Invalid symbol.")
    body: dict[str, Any] = {"symbol": sym.upper(), "price": px}
    if futures:
        body["time"] = srv.sim_now
    return 200, body


def _gamma(srv: SimControl, ep: str, p: dict[str, str]) -> tuple[int, Body]:
    d, now = srv.driver, srv.sim_now
    wins = d.windows()
    if "slug" in p:
        wins = [w for w in wins if w.slug == p["slug"]]
    if "condition_ids" in p:
        wins = [w for w in wins if w.cid in p["condition_ids"].split(",")]
    if "clob_token_ids" in p:
        ids = set(p["clob_token_ids"].split(","))
        wins = [w for w in wins if w.up in ids or w.down in ids]
    if p.get("closed") == "false":
        wins = [w for w in wins if now < w.end_ms]
    wins = sorted(wins, key=lambda w: (w.end_ms, w.slug))[: _int(p, "limit", 100)]
    if ep == "events":
        return 200, [wo.gamma_event(w, now, d.up_price(w)) for w in wins]
    if ep == "markets":
        return 200, [wo.gamma_market(w, now, d.up_price(w)) for w in wins]
    return 404, {"error": "not found"}


def _clob(srv: SimControl, ep: str, p: dict[str, str]) -> tuple[int, Body]:
    d, now = srv.driver, srv.sim_now
    if ep.startswith("markets/"):
        w = d.window_by_cid(ep[len("markets/") :])
        return (200, wo.clob_market(w, now, d.up_price(w))) if w else (404, {"error": "market not found"})
    if ep == "book":
        tok = p.get("token_id", "")
        ev = d.book_event(tok)
        if ev is None:
            return 404, {"error": "No orderbook exists for the requested token id"}
        return 200, wo.clob_book(ev["market"], tok, now, ev["bids"], ev["asks"], ev["tick_size"],
                                 ev["last_trade_price"])  # fmt: skip
    if ep == "time":
        return 200, now // 1000
    return 404, {"error": "not found"}


def _control(srv: SimControl, p: dict[str, str]) -> tuple[int, Body]:
    done: dict[str, Any] = {}
    if "poly_silence_s" in p:
        srv.poly_silent_until = srv.sim_now + int(float(p["poly_silence_s"]) * 1000)
        done["poly_silent_until_ms"] = srv.poly_silent_until
    if "inject" in p:
        venue = {"binance_garbage": "binance", "poly_garbage": "polymarket"}.get(p["inject"])
        if venue is None:
            return 400, {"error": f"unknown inject {p['inject']!r}"}
        done["injected"] = srv.inject(venue, int(p.get("oversize_bytes", 3 << 19)))
    if "drop" in p:
        if p["drop"] not in ("binance", "polymarket"):
            return 400, {"error": f"unknown venue {p['drop']!r}"}
        done["dropped"] = srv.drop(p["drop"])
    if not done:
        return 400, {"error": "nothing to do: poly_silence_s=N | inject=binance_garbage|poly_garbage | drop=VENUE"}
    return 200, {"ok": True, **done}


def route(srv: SimControl, path: str, p: dict[str, str]) -> tuple[int, Body]:
    parts = path.strip("/").split("/", 1)
    head, rest = parts[0], parts[1] if len(parts) > 1 else ""
    if head == "binance":
        return _binance(srv, rest, p)
    if head == "gamma":
        return _gamma(srv, rest, p)
    if head == "clob":
        return _clob(srv, rest, p)
    if head == "sim" and rest == "status":
        return 200, srv.status()
    if head == "sim" and rest == "control":
        return _control(srv, p)
    return 404, {"error": f"no route {path}"}


def garbage_frames(c: Any, now: int, oversize: int) -> list[bytes]:
    """Malformed frames for one connection: truncated JSON, wrong types, an unknown event type, a
    non-object, and (if ``oversize`` > 0) a frame of ``oversize`` bytes. Stream/asset names are the
    connection's own so a client routes them like real data."""
    if c.venue == "binance":
        name = next(iter(c.names.values()), "btcusdt@aggTrade")
        sym = name.split("@", 1)[0].upper()

        def env(data: bytes) -> bytes:
            return data if c.raw_mode else wo.combined(name, data)

        frames = [
            env(b'{"e":"aggTrade","E":17'),
            env(
                orjson.dumps(
                    {
                        "e": "aggTrade",
                        "E": "soon",
                        "a": None,
                        "s": 7,
                        "p": [],
                        "q": {},
                        "f": "x",
                        "l": "y",
                        "T": "z",
                        "m": "maybe",
                    }
                )
            ),  # fmt: skip
            env(orjson.dumps({"e": "depthUpdate", "E": now, "s": sym, "U": "1", "u": None, "b": "bids", "a": [[1]]})),
            env(orjson.dumps({"e": "mysteryEvent", "E": now, "s": sym})),
            b"[1,2,3]",
            b'"just a string"',
        ]
        if oversize > 0:
            frames.append(env(b'{"e":"aggTrade","pad":"' + b"x" * oversize + b'"}'))
        return frames
    asset = next(iter(c.assets), "0")
    frames = [
        b'[{"event_type":"book","asset_id":"' + asset.encode(),
        orjson.dumps({"event_type": "price_change", "market": 123, "price_changes": "nope", "timestamp": None}),
        orjson.dumps(
            {
                "event_type": "book",
                "asset_id": asset,
                "market": "0x00",
                "bids": "x",
                "asks": [{"price": "abc", "size": None}],
                "timestamp": "t",
            }
        ),  # fmt: skip
        orjson.dumps({"event_type": "mystery_event", "asset_id": asset, "timestamp": str(now)}),
        b"42",
    ]
    if oversize > 0:
        frames.append(b'{"event_type":"book","pad":"' + b"x" * oversize + b'"}')
    return frames
