"""A trader's daily performance, per model version, from its archived records (pure: no IO).

:func:`summarize` folds one UTC day of a trader's records (entry IDs + decoded records, in stream order, as
:func:`archiver_svc.trades.load_trades` returns them) into a JSON-able summary; the same records always give
the same summary (sorted keys, rounded to 1e-9), so writing it again is idempotent.

Per model version (the ``model`` field of decisions, refusals and fills; a settlement carries the version that
opened the position) and in total:

* ``pnl_usd``: realised PnL (fees included: a fill's ``realised``), ``fees_usd``: fees paid;
* ``trades``: opens filled; ``closed``: positions ended (full closes + settlements), ``wins`` (realised > 0),
  ``win_rate`` = wins / closed (None without a closed position);
* ``max_drawdown_usd``: largest fall of the realised-PnL curve (from 0 at the day's start) below its peak;
* ``max_exposure_usd``: most USD held in open positions at once (cost of positions opened this day; a position
  carried over from the previous day is not counted: its cost is not in this day's records),
  ``exposure_usd_h``: USD x hours held (entry-ID time);
* ``decisions``, ``refusals``, ``partial_fills``; and for the trader: ``kill_trips``, ``records``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SUMMARY_VERSION = 1
_H_MS = 3_600_000


@dataclass(slots=True)
class _Acc:
    pnl: float = 0.0
    fees: float = 0.0
    trades: int = 0
    closed: int = 0
    wins: int = 0
    decisions: int = 0
    refusals: int = 0
    partial: int = 0
    peak: float = 0.0
    dd: float = 0.0
    exposure: float = 0.0
    max_exposure: float = 0.0
    usd_ms: float = 0.0
    last_ms: int = -1

    def hold(self, ms: int) -> None:
        """Account the exposure held since the last record up to ``ms``."""
        if self.last_ms >= 0 and ms > self.last_ms:
            self.usd_ms += self.exposure * (ms - self.last_ms)
        self.last_ms = max(self.last_ms, ms)

    def realise(self, x: float) -> None:
        self.pnl += x
        self.peak = max(self.peak, self.pnl)
        self.dd = max(self.dd, self.peak - self.pnl)

    def out(self) -> dict[str, Any]:
        return {
            "pnl_usd": _r(self.pnl), "fees_usd": _r(self.fees), "trades": self.trades, "closed": self.closed,
            "wins": self.wins, "win_rate": _r(self.wins / self.closed) if self.closed else None,
            "max_drawdown_usd": _r(self.dd), "max_exposure_usd": _r(self.max_exposure),
            "exposure_usd_h": _r(self.usd_ms / _H_MS), "decisions": self.decisions, "refusals": self.refusals,
            "partial_fills": self.partial,
        }  # fmt: skip


def _r(x: float) -> float:
    return round(float(x), 9)


def summarize(trader: str, day: str, ids: Sequence[str], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The day's summary (see the module docstring); ``ids[i]`` is the entry ID of ``records[i]``."""
    models: dict[str, _Acc] = {}
    total = _Acc()
    open_cost: dict[str, tuple[str, float]] = {}  # market -> (model, USD cost still held)
    kills = 0
    for eid, rec in zip(ids, records, strict=True):
        ms = int(str(eid).partition("-")[0])
        for acc in (total, *models.values()):
            acc.hold(ms)
        kind = rec.get("type")
        if kind == "kill":
            kills += 1
            continue
        if kind not in ("decision", "refused", "fill"):
            continue
        model = str(rec.get("model") or "")
        if model not in models:
            models[model] = _Acc(last_ms=ms)
        acc = models[model]
        if kind == "decision":
            acc.decisions += 1
            total.decisions += 1
            continue
        if kind == "refused":
            acc.refusals += 1
            total.refusals += 1
            continue
        _fill(rec, acc, total, open_cost, models)
    return {
        "v": SUMMARY_VERSION,
        "trader": trader,
        "day": day,
        "records": len(records),
        "first_id": ids[0] if ids else None,
        "last_id": ids[-1] if ids else None,
        "kill_trips": kills,
        "total": total.out(),
        "models": {m: a.out() for m, a in sorted(models.items())},
    }


def _fill(
    rec: dict[str, Any], acc: _Acc, total: _Acc, open_cost: dict[str, tuple[str, float]], models: dict[str, _Acc]
) -> None:
    market, fk = str(rec.get("market")), rec.get("kind")
    realised, fee = float(rec.get("realised", 0.0)), float(rec.get("fee", 0.0))
    partial = bool(rec.get("partial"))
    for a in (acc, total):
        a.fees += fee
        a.partial += int(partial)
    if fk == "open":
        cost = -float(rec.get("cash", 0.0))
        open_cost[market] = (str(rec.get("model") or ""), cost)
        for a in (acc, total):
            a.trades += 1
            a.exposure += cost
            a.max_exposure = max(a.max_exposure, a.exposure)
        return
    for a in (acc, total):
        a.realise(realised)
    held = open_cost.get(market)
    ended = fk == "settle" or not partial
    if held is not None:
        opener, cost = held
        freed = cost if ended else min(cost, float(rec.get("cash", 0.0)) - realised)
        for a in (models.get(opener, acc), total):
            a.exposure = max(0.0, a.exposure - freed)
        if ended:
            del open_cost[market]
        else:
            open_cost[market] = (opener, cost - freed)
    if ended:
        for a in (acc, total):
            a.closed += 1
            a.wins += int(realised > 0)
