"""The live-vs-expected monitor's decision logic (pure: no IO, no clock), fed one closed Polymarket window at a time.

Why here (trainer_svc) and not in the trader: the second reference, a backtest of the serving model on the very
windows it traded live, needs the replay environment and the evaluation of training (:mod:`trainer_svc.env`,
:mod:`trainer_svc.backtest`), and the trader must not import trainer_svc (tests/test_architecture.py). The trader
stays a tight tick loop; the monitor is a small separate process (``fusion monitor``, :mod:`trainer_svc.monitor_svc`)
that reads the trader's records and the archive, and acts only through the registry (:func:`common.artefact.rollback`)
and the event the trader already listens to.

The rule, per policy and serving version (a new champion starts from zero):

* **hold-out**: ``live_mean`` = mean live PnL per window over the last ``n = min(seen, windows)`` windows (stake
  units: live USD x stake / position_usd). Its bound is the ``alpha`` quantile of the mean of ``n`` windows drawn from
  the hold-out's per-window PnL (``holdout_window_pnl`` in meta.json; a seeded bootstrap), or, for an older meta that
  records only the mean, its 95 % interval and the window count, the normal approximation of the same quantile
  (per-window sd recovered from the interval's width). ``live_mean < bound`` is a breach.
* **execution gap**: ``gap_mean`` = mean of ``live - backtest`` over the same last ``n`` windows (backtest: the same
  model replayed on the same archived windows); ``|gap_mean| > gap_bound x max(|backtest mean|, 1 stake)`` is a
  breach: live may differ from the backtest by that share of what the backtest made (or lost), and by
  ``gap_bound`` stakes per window when the backtest is near zero.
* ``k`` consecutive breaches of either rule trip the monitor, once per version: the caller alerts and, when
  enabled, rolls back. A window feeds the machine once (the caller keeps what was checked); the state is a plain
  dict (:meth:`Machine.to_dict`), so a restart resumes exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

N_BOOT = 20_000


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    k: int = 3
    windows: int = 12
    alpha: float = 0.001
    gap_bound: float = 1.0


@dataclass(slots=True)
class HoldoutRef:
    """What a version's hold-out promised, per window (stake units)."""

    kind: str  # "windows" (per-window figures), "normal" (mean + interval only) or "none"
    pnl: list[float] = field(default_factory=list)
    mean: float = math.nan
    sd: float = math.nan
    n: int = 0
    _cache: dict[tuple[int, float], float] = field(default_factory=dict)

    @staticmethod
    def from_meta(meta: dict[str, Any]) -> HoldoutRef:
        """From ``holdout_window_pnl`` when recorded, else ``holdout_metrics`` (older metas), else ``none``."""
        per = meta.get("holdout_window_pnl")
        if isinstance(per, list) and per and all(isinstance(x, int | float) and math.isfinite(x) for x in per):
            a = np.asarray(per, np.float64)
            return HoldoutRef("windows", a.tolist(), float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0,
                              int(a.size))  # fmt: skip
        m = meta.get("holdout_metrics") or {}
        try:
            mean, (lo, hi), n = float(m["pnl_per_window"]), map(float, m["pnl_per_window_ci95"]), int(m["windows"])
        except (KeyError, TypeError, ValueError):
            return HoldoutRef("none")
        if n < 2 or not all(map(math.isfinite, (mean, lo, hi))):
            return HoldoutRef("none")
        return HoldoutRef("normal", [], mean, (hi - lo) / (2 * 1.959964) * math.sqrt(n), n)

    def lower(self, n: int, alpha: float) -> float | None:
        """The ``alpha`` quantile of the mean of ``n`` hold-out windows (None: nothing recorded)."""
        if self.kind == "none" or n < 1:
            return None
        key = (n, alpha)
        if key not in self._cache:
            if self.kind == "windows":
                a = np.asarray(self.pnl, np.float64)
                rng = np.random.default_rng(0)
                means = a[rng.integers(0, a.size, size=(N_BOOT, n))].mean(axis=1)
                self._cache[key] = float(np.quantile(means, alpha))
            else:
                self._cache[key] = self.mean - NormalDist().inv_cdf(1 - alpha) * self.sd / math.sqrt(n)
        return self._cache[key]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "windows": self.n, "mean": _r(self.mean), "sd": _r(self.sd)}


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One closed window of one market, served by one version: live and backtest PnL (stake units)."""

    market: str
    start_ms: int
    end_ms: int
    live: float
    backtest: float | None
    trades: int = 0


@dataclass(slots=True)
class Verdict:
    window: WindowResult
    n: int
    live_mean: float
    bound: float | None
    gap_mean: float | None
    holdout_breach: bool
    gap_breach: bool
    consecutive_holdout: int
    consecutive_gap: int
    trip: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("live_mean", "bound", "gap_mean"):
            d[k] = _r(d[k])
        return d


def _r(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 9)


@dataclass(slots=True)
class Machine:
    """The monitor's state for one serving version (see the module docstring)."""

    version: str = ""
    live: list[float] = field(default_factory=list)  # the last ``windows`` live PnLs
    gaps: list[float] = field(default_factory=list)  # the last ``windows`` live - backtest
    backs: list[float] = field(default_factory=list)  # the last ``windows`` backtests
    consecutive_holdout: int = 0
    consecutive_gap: int = 0
    windows_checked: int = 0
    tripped: str = ""  # the reason it tripped (once per version)

    def feed(self, w: WindowResult, ref: HoldoutRef, cfg: MonitorConfig) -> Verdict:
        """Account one closed window; ``trip`` is True on the window that makes ``k`` consecutive breaches."""
        self.windows_checked += 1
        self.live = (self.live + [float(w.live)])[-cfg.windows :]
        n = len(self.live)
        live_mean = float(np.mean(self.live))
        bound = ref.lower(n, cfg.alpha)
        h_breach = bound is not None and live_mean < bound
        self.consecutive_holdout = self.consecutive_holdout + 1 if h_breach else 0
        gap_mean = None
        g_breach = False
        if w.backtest is not None and math.isfinite(w.backtest):
            self.gaps = (self.gaps + [float(w.live) - float(w.backtest)])[-cfg.windows :]
            self.backs = (self.backs + [float(w.backtest)])[-cfg.windows :]
            gap_mean = float(np.mean(self.gaps))
            g_breach = abs(gap_mean) > cfg.gap_bound * max(abs(float(np.mean(self.backs))), 1.0)
            self.consecutive_gap = self.consecutive_gap + 1 if g_breach else 0
        reasons = []
        if self.consecutive_holdout >= cfg.k and bound is not None:
            reasons.append(f"live PnL per window {live_mean:+.4f} (mean of the last {n}) below the hold-out bound "
                           f"{bound:+.4f} ({cfg.alpha:g} quantile) for {self.consecutive_holdout} consecutive "
                           "windows")  # fmt: skip
        if self.consecutive_gap >= cfg.k and gap_mean is not None:
            reasons.append(f"live minus backtest {gap_mean:+.4f} per window (mean of the last {len(self.gaps)}) "
                           f"beyond {cfg.gap_bound:g} x max(|backtest|, 1) for {self.consecutive_gap} consecutive "
                           "windows")  # fmt: skip
        trip = bool(reasons) and not self.tripped
        if trip:
            self.tripped = "; ".join(reasons)
        return Verdict(w, n, live_mean, bound, gap_mean, h_breach, g_breach, self.consecutive_holdout,
                       self.consecutive_gap, trip, "; ".join(reasons))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Machine:
        names = set(Machine.__dataclass_fields__)
        return Machine(**{k: v for k, v in d.items() if k in names})
