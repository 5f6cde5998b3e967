"""Every observer's presence, whichever mode it runs in: what the dashboard's observers table shows.

An observer beats every :data:`BEAT_S` seconds: its id in ``keys.OBSERVERS_SEEN_ZSET`` (score: the beat, ms) and
a small JSON (markets it publishes, mode, ticks, states added, publish errors) at ``keys.observer_presence_key``,
expiring after :data:`TTL_S`; it removes both when it stops. A SIGKILLed observer's JSON expires and its id is
dropped from the set by the next beat of any observer (or shown as gone by :func:`observers`).
Lease-mode assignment keeps its own set (``keys.OBSERVERS_ZSET``), so a fixed-market observer is never
assigned leased markets.

Guarantees: :func:`beat` and :func:`leave` are one pipeline each; :func:`observers` reads at most ``cap`` ids
and never fails on a value it cannot parse (it shows the id with what it could read).
"""

from __future__ import annotations

import json
from typing import Any

from common import keys

BEAT_S = 2.0
TTL_S = 3 * BEAT_S


def report(markets: list[str], mode: str, ticks: int, last_tick_ms: int | None, added: int, errors: int,
           started_ms: int) -> dict[str, Any]:  # fmt: skip
    """What an observer reports in its beat."""
    return {"markets": sorted(markets), "mode": mode, "ticks": ticks, "last_tick_ms": last_tick_ms,
            "states_added": added, "publish_errors": errors, "started_ms": started_ms}  # fmt: skip


def beat(r: Any, observer_id: str, what: dict[str, Any], now_ms: int) -> None:
    """Record that ``observer_id`` is alive now and reports ``what``; prune ids silent for over TTL."""
    pipe = r.pipeline(transaction=False)
    pipe.zadd(keys.OBSERVERS_SEEN_ZSET, {keys.instance_name(observer_id): now_ms})
    pipe.zremrangebyscore(keys.OBSERVERS_SEEN_ZSET, 0, now_ms - int(TTL_S * 1000))
    pipe.set(keys.observer_presence_key(observer_id), json.dumps(what, separators=(",", ":")),
             px=int(TTL_S * 1000))  # fmt: skip
    pipe.execute()


def leave(r: Any, observer_id: str) -> None:
    """Remove the observer's presence (a clean stop)."""
    pipe = r.pipeline(transaction=False)
    pipe.zrem(keys.OBSERVERS_SEEN_ZSET, keys.instance_name(observer_id))
    pipe.delete(keys.observer_presence_key(observer_id))
    pipe.execute()


def _s(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def observers(r: Any, now_ms: int, cap: int = 200) -> list[dict[str, Any]]:
    """The observers that beat within TTL, newest first (at most ``cap``): id, age of the beat, and their report
    (``markets``, ``mode``, ``ticks``, ``states_added``, ``publish_errors``; missing when unreadable)."""
    since = now_ms - int(TTL_S * 1000)
    ids = r.zrevrangebyscore(keys.OBSERVERS_SEEN_ZSET, "+inf", since, start=0, num=cap, withscores=True)
    if not ids:
        return []
    values = r.mget([keys.observer_presence_key(_s(i)) for i, _ in ids])
    out = []
    for (oid, score), raw in zip(ids, values, strict=True):
        row: dict[str, Any] = {"id": _s(oid)[:128], "age_s": round((now_ms - int(score)) / 1000, 1)}
        try:
            got = json.loads(raw) if raw is not None else {}
        except ValueError:
            got = {}
        if isinstance(got, dict):
            m = got.get("markets")
            if isinstance(m, list):
                row["markets"] = [str(x)[:64] for x in m[:100]]
            for k in ("mode", "ticks", "states_added", "publish_errors", "last_tick_ms"):
                v = got.get(k)
                if isinstance(v, (int, str)) and not isinstance(v, bool):
                    row[k] = v if isinstance(v, int) else v[:32]
        out.append(row)
    return out
