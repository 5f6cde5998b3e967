"""Backtests in the replay environment, baselines, bootstrap intervals and the promotion rule.

A policy is a function ``(env, obs) -> actions`` called once per step for all episodes. Backtests
are greedy (no sampling) and use the same environment as training (fees, spread crossing,
settlement). Baselines: ``hold`` (never trades), ``random`` (uniform actions, seeded), ``momentum``
(sign of the Binance 1-minute return feature), ``oracle`` (hindsight: the exact optimum of the same
environment, a true ceiling of every policy, not a competitor; ``labels``/``h_index`` are kept for callers).

:func:`promote_decision` promotes a candidate only if, on the same hold-out windows, its per-window
PnL beats the champion's and every non-oracle baseline's by more than ``margin`` with the paired
bootstrap interval of the mean difference entirely above ``margin``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from common.features import MARKET_FEATURES
from common.policy import BUY_DOWN, BUY_UP, HOLD, fast_forward
from common.schema import LabelColumns
from trainer_svc.env import EpisodeBatch, ReplayEnv
from trainer_svc.oracle import optimal_plan

F64 = npt.NDArray[np.float64]
Policy = Callable[[ReplayEnv, npt.NDArray[np.float32]], npt.ArrayLike]
I_RET1M = MARKET_FEATURES.index("returns_1m")


@dataclass(slots=True)
class Backtest:
    name: str
    window_pnl: F64  # (E,) realised PnL per window (stake units)
    window_start_s: F64
    trades: int
    wins: int
    closed: int
    deployed: float
    steps: int
    metrics: dict[str, Any] = field(default_factory=dict)

    def equity_curve(self) -> F64:
        order = np.argsort(self.window_start_s, kind="stable")
        return np.cumsum(self.window_pnl[order])


def bootstrap_ci(x: npt.ArrayLike, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``x`` (seeded, vectorised)."""
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    means = a[idx].mean(axis=1)
    return (float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2)))


def max_drawdown(curve: F64) -> float:
    if curve.size == 0:
        return 0.0
    c = np.concatenate([[0.0], curve])
    return float((np.maximum.accumulate(c) - c).max())


def one_blas_thread() -> AbstractContextManager[Any]:
    """numpy's BLAS on one thread: a backtest multiplies small matrices once per step, where a second BLAS
    thread only spins (measured: 2.5x the wall time and 3.4x the CPU of one thread on a busy 2-core machine).
    A no-op without ``threadpoolctl``."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    limits: AbstractContextManager[Any] = threadpool_limits(1, user_api="blas")
    return limits


def run_policy(batch: EpisodeBatch, policy: Policy, name: str, env_kwargs: Mapping[str, Any] | None = None) -> Backtest:
    env = ReplayEnv(batch, **dict(env_kwargs or {}))
    obs = env.reset()
    with one_blas_thread():
        while not env.done_all:
            env.step(policy(env, obs))
            obs = env.observe()
    bt = Backtest(
        name=name,
        window_pnl=env.pnl.copy(),
        window_start_s=batch.start_s.copy(),
        trades=int(env.trades.sum()),
        wins=int(env.wins.sum()),
        closed=int(env.closed.sum()),
        deployed=float(env.deployed.sum()),
        steps=batch.n_steps,
    )
    bt.metrics = summarize(bt)
    return bt


def merge_backtests(parts: list[Backtest], name: str) -> Backtest:
    """One backtest of several runs over disjoint windows (chunks of a hold-out), windows in the parts' order:
    the same figures as one run over all of them for any policy that decides per episode."""
    bt = Backtest(
        name=name,
        window_pnl=np.concatenate([p.window_pnl for p in parts]),
        window_start_s=np.concatenate([p.window_start_s for p in parts]),
        trades=sum(p.trades for p in parts),
        wins=sum(p.wins for p in parts),
        closed=sum(p.closed for p in parts),
        deployed=float(sum(p.deployed for p in parts)),
        steps=sum(p.steps for p in parts),
    )
    bt.metrics = summarize(bt)
    return bt


def summarize(bt: Backtest, seed: int = 0) -> dict[str, Any]:
    pnl = float(bt.window_pnl.sum())
    lo, hi = bootstrap_ci(bt.window_pnl, seed=seed)
    return {
        "pnl": round(pnl, 6),
        "roi": round(pnl / bt.deployed, 6) if bt.deployed > 0 else 0.0,
        "trades": bt.trades,
        "win_rate": round(bt.wins / bt.closed, 4) if bt.closed else 0.0,
        "max_drawdown": round(max_drawdown(bt.equity_curve()), 6),
        "windows": int(bt.window_pnl.size),
        "pnl_per_window": round(float(bt.window_pnl.mean()), 6) if bt.window_pnl.size else 0.0,
        "pnl_per_window_ci95": [round(lo, 6), round(hi, 6)],
    }


# ------------------------------------------------------------------ policies


def hold_policy(env: ReplayEnv, obs: npt.NDArray[np.float32]) -> npt.ArrayLike:
    return np.zeros(obs.shape[0], np.int64)


def random_policy(seed: int = 0) -> Policy:
    rng = np.random.default_rng(seed)

    def act(env: ReplayEnv, obs: npt.NDArray[np.float32]) -> npt.ArrayLike:
        return rng.integers(0, 3, obs.shape[0])

    return act


def momentum_policy(env: ReplayEnv, obs: npt.NDArray[np.float32]) -> npt.ArrayLike:
    r = obs[:, I_RET1M]
    return np.where(r > 0, BUY_UP, np.where(r < 0, BUY_DOWN, HOLD))


def oracle_policy(batch: EpisodeBatch, env_kwargs: Mapping[str, Any] | None = None) -> Policy:
    """Hindsight oracle: replays the exact optimum of the same environment (``trainer_svc.oracle``), so its
    PnL is an upper bound of every policy's on every window (same fills, fees, latency and settlement)."""
    plan, _ = optimal_plan(batch, **dict(env_kwargs or {}))

    def act(env: ReplayEnv, obs: npt.NDArray[np.float32]) -> npt.ArrayLike:
        return plan[:, min(env.t, batch.horizon - 1)]

    return act


def weights_policy(weights: Mapping[str, Any]) -> Policy:
    w = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}

    def act(env: ReplayEnv, obs: npt.NDArray[np.float32]) -> npt.ArrayLike:
        greedy: npt.NDArray[np.intp] = fast_forward(w, obs).argmax(axis=1)
        return greedy

    return act


def baselines(
    batch: EpisodeBatch,
    labels: LabelColumns | None,
    h_index: int,
    env_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Backtest]:
    out = {
        "hold": run_policy(batch, hold_policy, "hold", env_kwargs),
        "random": run_policy(batch, random_policy(seed), "random", env_kwargs),
        "momentum": run_policy(batch, momentum_policy, "momentum", env_kwargs),
    }
    out["oracle"] = run_policy(batch, oracle_policy(batch, env_kwargs), "oracle", env_kwargs)
    return out


def holdout_runs(
    weights: dict[str, Any], champ_w: dict[str, Any] | None, env_kwargs: dict[str, Any], seed: int
) -> Callable[[EpisodeBatch, int], dict[str, Backtest]]:
    """The hold-out backtests of one batch of episodes (chunk ``c`` draws the random baseline with seed + c)."""

    def runs(batch: EpisodeBatch, c: int) -> dict[str, Backtest]:
        out = {"candidate": run_policy(batch, weights_policy(weights), "candidate", env_kwargs)}
        out.update(baselines(batch, None, 0, env_kwargs, seed=seed + c))
        if champ_w is not None:
            out["champion"] = run_policy(batch, weights_policy(champ_w), "champion", env_kwargs)
        return out

    return runs


# ------------------------------------------------------------------ promotion


@dataclass(slots=True)
class Decision:
    promote: bool
    reason: str
    comparisons: dict[str, dict[str, float]]


def compare(candidate: F64, other: F64, margin: float = 0.0, seed: int = 0) -> dict[str, float]:
    d = np.asarray(candidate, np.float64) - np.asarray(other, np.float64)
    lo, hi = bootstrap_ci(d, seed=seed)
    return {"mean_diff": float(d.mean()) if d.size else 0.0, "ci_lo": lo, "ci_hi": hi, "beats": float(lo > margin)}


def promote_decision(
    candidate: Backtest,
    champion: Backtest | None,
    baselines_: Mapping[str, Backtest],
    margin: float = 0.0,
    seed: int = 0,
) -> Decision:
    """Promote iff the paired bootstrap CI (95 %) of the per-window PnL difference against the champion
    (if any) and against every non-oracle baseline lies entirely above ``margin``."""
    others = {k: v for k, v in baselines_.items() if k != "oracle"}
    if champion is not None:
        others = {"champion": champion, **others}
    comps: dict[str, dict[str, float]] = {}
    for name, bt in others.items():
        if bt.window_pnl.shape != candidate.window_pnl.shape:
            raise ValueError(f"{name} was evaluated on different windows")
        comps[name] = compare(candidate.window_pnl, bt.window_pnl, margin, seed)
    losers = [k for k, c in comps.items() if not c["beats"]]
    if not others:
        return Decision(False, "nothing to compare against", comps)
    if losers:
        worst = losers[0]
        c = comps[worst]
        return Decision(
            False,
            f"does not beat {', '.join(losers)} (vs {worst}: mean {c['mean_diff']:.4f}, "
            f"CI [{c['ci_lo']:.4f}, {c['ci_hi']:.4f}], margin {margin})",
            comps,
        )
    best = max((k for k in others if k != "champion"), key=lambda k: others[k].window_pnl.mean(), default="")
    return Decision(True, f"beats {', '.join(others)} (best baseline: {best}) with CI above {margin}", comps)
