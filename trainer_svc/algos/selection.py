"""Model selection on the validation windows only (never the hold-out): the greedy policy backtested in
the replay env, and the HOLD-logit bias that makes it trade only when confident.

The bias is baked into ``actor.out.bias``, so the artefact keeps the plain architecture.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from common.policy import HOLD
from trainer_svc.algos.config import F32, TrainConfig
from trainer_svc.env import EpisodeBatch
from trainer_svc.evaluate import run_policy, weights_policy


def val_pnl(batch: EpisodeBatch, weights: dict[str, F32], cfg: TrainConfig) -> float:
    """Summed window PnL of the greedy policy of ``weights`` on ``batch`` (the validation windows)."""
    return float(run_policy(batch, weights_policy(weights), "val", cfg.env_kwargs()).window_pnl.sum())


def with_hold_bias(weights: dict[str, F32], bias: float) -> dict[str, F32]:
    """A copy of ``weights`` with ``bias`` added to the HOLD logit's output bias."""
    w = dict(weights)
    b = w["actor.out.bias"].copy()
    b[HOLD] += np.float32(bias)
    w["actor.out.bias"] = b
    return w


def tune_hold_bias(
    batch: EpisodeBatch, weights: dict[str, F32], cfg: TrainConfig
) -> tuple[float, float, dict[str, F32]]:
    """Best HOLD-logit bias of ``cfg.hold_bias_grid`` on validation (the first of equals); returns
    (bias, val_pnl, weights with the bias)."""
    best = (-np.inf, 0.0)
    for b in cfg.hold_bias_grid:
        p = val_pnl(batch, with_hold_bias(weights, b), cfg)
        if p > best[0] + 1e-9:
            best = (p, b)
    return best[1], best[0], with_hold_bias(weights, best[1])


def best_bias(
    batch: EpisodeBatch, weights: dict[str, F32], cfg: TrainConfig, grid: Iterable[float]
) -> tuple[float, float]:
    """Best greedy validation PnL over the HOLD-bias ``grid`` (ties: the smallest ``|bias|``, then the
    largest bias): (pnl, bias)."""
    pnl, _, bias = max((val_pnl(batch, with_hold_bias(weights, b), cfg), -abs(b), b) for b in grid)
    return pnl, bias
