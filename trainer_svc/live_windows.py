"""A trader's realised PnL per (market, Polymarket window) and which model decided when, folded from its records
(``fusion:{T}:trades``, in stream order; pure: no IO).

* **PnL of a window** = the realised PnL (fees included) of every position opened in it (an ``open`` fill names the
  window's end, ``window_end_s``; the closes and the settlement that follow on that market belong to the same
  position), in USD, with the USD budget of an open (``want``) to turn it into stake units.
* **who decided**: per market, runs of consecutive decisions of one model (``[first_tick, last_tick, model, n]``);
  a model change or a gap longer than ``gap_ms`` in tick time (the trader was down) starts a new run. A window's
  coverage is the share of its span inside runs.
* **closed**: the trader decided past the window's end and holds no position opened in it (settled or closed).

The fold is a plain dict (:meth:`LiveFold.to_dict`) so its owner can store it with its stream cursor in one write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class LiveWindow:
    models: tuple[str, ...]  # models that decided in the window (runs overlapping it)
    coverage: float  # share of the window inside decision runs
    closed: bool
    pnl_usd: float
    fees_usd: float
    opens: int
    closes: int
    want_usd: float  # an open's budget (position_usd); 0 without opens


@dataclass(slots=True)
class LiveFold:
    gap_ms: int = 60_000
    runs: dict[str, list[list[Any]]] = field(default_factory=dict)
    open: dict[str, list[Any]] = field(default_factory=dict)  # market -> [window end ms, model]
    acc: dict[str, list[float]] = field(default_factory=dict)  # "market|end_ms" -> [pnl, fees, opens, closes, want]
    newest: dict[str, int] = field(default_factory=dict)  # market -> newest decision tick
    orphans: int = 0  # closes / settlements of positions opened before the fold started

    def feed(self, rec: dict[str, Any]) -> None:
        kind, market = rec.get("type"), rec.get("market")
        if not isinstance(market, str):
            return
        if kind == "decision":
            self._decision(market, rec)
        elif kind == "fill":
            self._fill(market, rec)

    def _decision(self, market: str, rec: dict[str, Any]) -> None:
        tick, model = rec.get("tick"), str(rec.get("model") or "")
        if not isinstance(tick, int):
            return
        runs = self.runs.setdefault(market, [])
        last = runs[-1] if runs else None
        if last is not None and last[2] == model and 0 <= tick - last[1] <= self.gap_ms:
            last[1], last[3] = tick, last[3] + 1
        elif last is None or tick > last[1]:
            runs.append([tick, tick, model, 1])
        self.newest[market] = max(tick, self.newest.get(market, tick))

    def _fill(self, market: str, rec: dict[str, Any]) -> None:
        fk = rec.get("kind")
        fee, realised = float(rec.get("fee") or 0.0), float(rec.get("realised") or 0.0)
        if fk == "open":
            try:
                end_ms = round(float(rec["window_end_s"]) * 1000)
            except (KeyError, TypeError, ValueError):
                return
            self.open[market] = [end_ms, str(rec.get("model") or "")]
            a = self._acc(market, end_ms)
            a[1] += fee
            a[2] += 1
            a[4] = float(rec.get("want") or 0.0)
            return
        held = self.open.get(market)
        if held is None:
            self.orphans += 1
            return
        a = self._acc(market, int(held[0]))
        a[0] += realised
        a[1] += fee
        if fk == "settle" or not rec.get("partial"):
            a[3] += 1
            del self.open[market]

    def _acc(self, market: str, end_ms: int) -> list[float]:
        return self.acc.setdefault(f"{market}|{end_ms}", [0.0, 0.0, 0, 0, 0.0])

    def first_tick(self, market: str, model: str) -> int | None:
        """The first tick ``model`` decided on ``market`` in its latest stretch of runs (None: never)."""
        first = None
        for r in reversed(self.runs.get(market, [])):
            if r[2] != model:
                break
            first = int(r[0])
        return first

    def window(self, market: str, start_ms: int, end_ms: int) -> LiveWindow:
        """What the trader did in ``market``'s window ``[start_ms, end_ms)``."""
        models, covered = set(), 0
        for first, last, model, _n in self.runs.get(market, []):
            if first < end_ms and last >= start_ms:
                models.add(str(model))
                covered += max(0, min(last, end_ms) - max(first, start_ms))
        held = self.open.get(market)
        closed = self.newest.get(market, -1) >= end_ms and not (held is not None and int(held[0]) == end_ms)
        pnl, fees, opens, closes, want = self.acc.get(f"{market}|{end_ms}", [0.0, 0.0, 0, 0, 0.0])
        span = max(1, end_ms - start_ms)
        return LiveWindow(tuple(sorted(models)), min(1.0, covered / span), closed, float(pnl), float(fees),
                          int(opens), int(closes), float(want))  # fmt: skip

    def forget(self, market: str, before_ms: int) -> None:
        """Drop runs that ended and windows that ended before ``before_ms`` (they were checked)."""
        runs = self.runs.get(market, [])
        self.runs[market] = [r for r in runs if r[1] >= before_ms] or runs[-1:]
        for key in [k for k in self.acc if k.startswith(f"{market}|") and int(k.partition("|")[2]) <= before_ms]:
            del self.acc[key]

    def to_dict(self) -> dict[str, Any]:
        return {"gap_ms": self.gap_ms, "runs": self.runs, "open": self.open, "acc": self.acc, "newest": self.newest,
                "orphans": self.orphans}  # fmt: skip

    @staticmethod
    def from_dict(d: dict[str, Any]) -> LiveFold:
        return LiveFold(int(d.get("gap_ms", 60_000)), dict(d.get("runs") or {}), dict(d.get("open") or {}),
                        dict(d.get("acc") or {}), dict(d.get("newest") or {}), int(d.get("orphans", 0)))  # fmt: skip
