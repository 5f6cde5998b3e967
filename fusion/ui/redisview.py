"""The training, trader and dead-letter figures the UI reads from Redis, each in a bounded number of round trips.

Guarantees: RQ jobs are read with :class:`trainer_svc.jobspec.JobSerializer` (never pickle) — at most ``cap`` per
registry, two round trips; the trader page reads at most ``cap`` statuses and the newest ``trades_cap`` records of
``fusion:trades``; the dead letters are the newest ``cap`` entries. Undecodable records are skipped.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import msgpack

from common import keys
from common.names import is_valid_name
from fusion.ui.storeview import day_of


def _s(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def dead_letters(r: Any, cap: int = 1000) -> list[dict[str, Any]]:
    """The newest ``cap`` parked entries: market, day (of the entry id), service, reason (no payload)."""
    out = []
    for eid, f in r.xrevrange(keys.DEAD_LETTER_STREAM, count=cap):
        stream = _s(f.get(b"stream", b""))
        src = _s(f.get(b"id", b""))
        mk = keys.market_of_stream(stream)
        ms = src.split("-")[0]
        out.append({
            "parked": _s(eid), "stream": stream, "id": src, "service": _s(f.get(b"service", b"")),
            "reason": _s(f.get(b"reason", b""))[:200], "market": mk[0] if mk else None,
            "day": day_of(int(ms)) if ms.isdigit() else None,
        })  # fmt: skip
    return out


def training_jobs(r: Any, cap: int = 20) -> dict[str, list[dict[str, Any]]]:
    """Queued, running, finished and failed training jobs with their progress (RQ meta)."""
    from rq.job import Job
    from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

    from trainer_svc.jobspec import JobSerializer, queue

    q = queue(r)
    regs = {"running": StartedJobRegistry(queue=q), "finished": FinishedJobRegistry(queue=q),
            "failed": FailedJobRegistry(queue=q)}  # fmt: skip
    pipe = r.pipeline(transaction=False)
    pipe.lrange(q.key, 0, cap - 1)
    for reg in regs.values():
        pipe.zrevrange(reg.key, 0, cap - 1)
    res = pipe.execute()
    ids = {"queued": [_s(x) for x in res[0]]}
    for (name, _), got in zip(regs.items(), res[1:], strict=True):
        ids[name] = [_s(x).split(":")[0] for x in got]
    flat = [i for v in ids.values() for i in v]
    jobs = Job.fetch_many(flat, connection=r, serializer=JobSerializer) if flat else []
    by_id = {j.id: j for j in jobs if j is not None}
    out: dict[str, list[dict[str, Any]]] = {}
    for name, lst in ids.items():
        out[name] = []
        for i in lst:
            j = by_id.get(i)
            if j is None:
                continue
            meta = j.meta or {}
            out[name].append({
                "id": j.id, "description": j.description, "status": _s(j.get_status(refresh=False) or name),
                "progress": float(meta.get("progress", 0.0) or 0.0), "stage": meta.get("stage", ""),
                "policy": meta.get("policy"), "last": meta.get("last") or {},
                "enqueued_at": j.enqueued_at.isoformat() if j.enqueued_at else None,
                "ended_at": j.ended_at.isoformat() if j.ended_at else None,
            })  # fmt: skip
    return out


def trader_view(r: Any, cap: int = 20, trades_cap: int = 5000) -> dict[str, Any]:
    """Statuses of every trader (positions, PnL, kill switch), fills, refusals and equity per model version."""
    status_keys = sorted(r.scan_iter(match=f"{keys.TRADER_STATUS_PREFIX}:*:status", count=1000))[:cap]
    pipe = r.pipeline(transaction=False)
    for k in status_keys:
        pipe.get(k)
    pipe.xrevrange(keys.TRADES_STREAM, count=trades_cap)
    res = pipe.execute()
    traders = []
    for raw in res[:-1]:
        try:
            st = json.loads(raw) if raw else None
        except ValueError:
            st = None
        if isinstance(st, dict) and is_valid_name(str(st.get("trader", ""))):
            traders.append(st)
    recs = []
    for eid, f in reversed(res[-1]):
        try:
            rec = msgpack.unpackb(f.get(keys.PAYLOAD_FIELD, b""), raw=False)
        except Exception:  # noqa: S112 - a foreign record is not the UI's to judge; the trader parks its own
            continue
        if isinstance(rec, dict):
            rec["_id"] = _s(eid)
            recs.append(rec)
    return {"traders": traders, **fold_trades(recs)}


def fold_trades(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """Fills, refusals and the realised equity curve of each (trader, model version), oldest record first."""
    equity: dict[str, list[list[float]]] = defaultdict(list)
    cum: dict[str, float] = defaultdict(float)
    opened_by: dict[tuple[str, str], str] = {}
    fills, refusals = [], []
    for rec in recs:
        trader = str(rec.get("trader", "?"))
        t = rec.get("fill_tick") or rec.get("tick") or 0
        if rec.get("type") == "refused":
            refusals.append({k: rec.get(k) for k in ("trader", "market", "tick", "action", "reason", "model")})
        if rec.get("type") != "fill":
            continue
        mk = (trader, str(rec.get("market")))
        model = str(rec.get("model") or "")
        if rec.get("kind") == "open":
            opened_by[mk] = model
        model = model or opened_by.get(mk, "?")
        fills.append({k: rec.get(k) for k in ("trader", "market", "kind", "side", "fill_tick", "shares", "avg_px",
                                             "fee", "realised", "partial")} | {"model": model})  # fmt: skip
        cum[trader] += float(rec.get("realised", 0.0) or 0.0)
        equity[f"{trader} {model}"].append([int(t), round(cum[trader], 6)])
    return {"fills": fills[-200:][::-1], "refusals": refusals[-100:][::-1], "equity": dict(equity),
            "records": len(recs)}  # fmt: skip
