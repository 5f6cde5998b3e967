"""The paper engine's durable state: what a restart must not forget (pure: no IO).

Guarantees:

* :func:`dump` / :func:`load` round-trip exactly (msgpack; floats are float64, so PnL, cost and marks come
  back bit-identical): positions (side, shares, cost, window end, mark), orders in flight, totals (realised
  PnL, fees, fill counts), the UTC day, its start equity, the trades of the day and the kill switch.
* :func:`rebuild` folds a trader's own records of ``fusion:{T}:trades`` (in stream order) into the same state
  when the Redis key is gone: every ``fill`` (open / close / settle) moves cash and positions as the engine
  did, ``refused`` counts, ``day`` and ``kill`` restore the risk state. What the records do not carry comes
  back approximately: a position's mark is its cost until the next state re-marks it; orders in flight
  (latency > 0) are not rebuilt (their decision is simply not filled).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

import msgpack

from common.policy import SIDE_DOWN, SIDE_UP
from trader_svc.paper import Order, PaperEngine, Position, Totals

STATE_VERSION = 1
_SIDE = {"up": SIDE_UP, "down": SIDE_DOWN}


def to_dict(eng: PaperEngine) -> dict[str, Any]:
    return {
        "v": STATE_VERSION,
        "pos": {m: asdict(p) for m, p in eng.pos.items()},
        "orders": {m: asdict(o) for m, o in eng.orders.items()},
        "totals": asdict(eng.totals),
        "day": eng.day,
        "day_start_equity": eng.day_start_equity,
        "killed": eng.killed,
        "kill_trips": eng.kill_trips,
        "trades_today": eng.trades_today,
    }


def restore(eng: PaperEngine, d: dict[str, Any]) -> None:
    """Set ``eng``'s state from :func:`to_dict`'s output (raises ValueError / KeyError / TypeError if malformed)."""
    if d.get("v") != STATE_VERSION:
        raise ValueError(f"state version {d.get('v')!r} != {STATE_VERSION}")
    pos = {str(m): Position(**p) for m, p in d["pos"].items()}
    orders = {str(m): Order(**o) for m, o in d["orders"].items()}
    names = {f.name for f in fields(Totals)}
    totals = Totals(**{k: v for k, v in d["totals"].items() if k in names})
    day = None if d["day"] is None else int(d["day"])
    risk = float(d["day_start_equity"]), bool(d["killed"]), int(d["kill_trips"]), int(d["trades_today"])
    eng.pos, eng.orders, eng.totals, eng.day = pos, orders, totals, day  # all or nothing
    eng.day_start_equity, eng.killed, eng.kill_trips, eng.trades_today = risk


def dump(eng: PaperEngine) -> bytes:
    out: bytes = msgpack.packb(to_dict(eng), use_bin_type=True)
    return out


def load(eng: PaperEngine, data: bytes) -> None:
    restore(eng, msgpack.unpackb(data, raw=False, strict_map_key=False))


def rebuild(eng: PaperEngine, recs: list[dict[str, Any]]) -> int:
    """Apply a trader's records (oldest first) to a fresh engine; returns how many changed its state."""
    n = 0
    t = eng.totals
    for rec in recs:
        kind = rec.get("type")
        if kind == "day":
            eng.day, eng.day_start_equity = int(rec["day"]), float(rec["start_equity"])
            eng.killed, eng.trades_today = False, 0
        elif kind == "kill":
            eng.killed, eng.kill_trips = True, eng.kill_trips + 1
        elif kind == "kill-reset":
            eng.killed = False
        elif kind == "refused":
            t.refused += 1
        elif kind == "fill":
            _fill(eng, rec)
        else:
            continue
        n += 1
    return n


def _fill(eng: PaperEngine, rec: dict[str, Any]) -> None:
    t, m = eng.totals, str(rec["market"])
    t.fills += 1
    t.partial_fills += int(bool(rec.get("partial")))
    t.fees += float(rec.get("fee", 0.0))
    if rec["kind"] == "open":
        cost = -float(rec["cash"])
        eng.pos[m] = Position(_SIDE[rec["side"]], float(rec["shares"]), cost, float(rec["window_end_s"]),
                              int(rec["fill_tick"]), cost, str(rec.get("model", "")))  # fmt: skip
        eng.trades_today += 1
        return
    realised = float(rec["realised"])
    t.realised += realised
    pos = eng.pos.get(m)
    if rec["kind"] == "settle":
        t.settlements += 1
    if pos is None:
        return
    if rec["kind"] == "close" and rec.get("partial"):
        frac = min(1.0, float(rec["shares"]) / pos.shares) if pos.shares > 0 else 1.0
        pos.cost -= float(rec["cash"]) - realised
        pos.shares -= float(rec["shares"])
        pos.mark *= 1.0 - frac
        return
    t.closed += 1
    t.wins += int(realised > 0)
    del eng.pos[m]
