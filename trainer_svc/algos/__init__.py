"""Training algorithms, one-way layers: dispatch (this module) -> ``ppo`` -> ``cloning`` -> ``selection``
-> ``config``; no module imports one above it.

* :mod:`~trainer_svc.algos.config`: :class:`TrainConfig` and :class:`TrainResult` (pure data).
* :mod:`~trainer_svc.algos.selection`: model selection on the validation windows (greedy backtest,
  HOLD-logit bias tuning); never the hold-out.
* :mod:`~trainer_svc.algos.cloning`: behavioural cloning on hindsight targets (``awbc``, ``supervised``).
* :mod:`~trainer_svc.algos.ppo`: PPO on replayed trajectories (warm-started by cloning).

All of them talk to a :class:`trainer_svc.backends.Backend` only and exchange numpy arrays.
"""

from __future__ import annotations

from typing import Any

from trainer_svc.algos.cloning import train_bc
from trainer_svc.algos.config import EpochHook, Progress, TrainConfig, TrainResult, noop
from trainer_svc.algos.ppo import train_ppo
from trainer_svc.dataset import Dataset

__all__ = ["TrainConfig", "TrainResult", "train"]


def train(
    ds: Dataset,
    cfg: TrainConfig,
    progress: Progress = noop,
    on_epoch: EpochHook | None = None,
    resume: dict[str, Any] | None = None,
) -> TrainResult:
    """Run ``cfg.algo`` (``awbc`` | ``supervised`` | ``ppo``) on ``ds``."""
    if cfg.algo == "ppo":
        return train_ppo(ds, cfg, progress, on_epoch, resume)
    return train_bc(ds, cfg, progress, on_epoch, resume)
