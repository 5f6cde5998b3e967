"""What a training run is asked to do and what it returns: :class:`TrainConfig` (every knob of every
algorithm, the env's costs) and :class:`TrainResult`. Pure data; the algorithms read it, never write it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
Progress = Callable[[float, dict[str, Any]], None]
EpochHook = Callable[[int, dict[str, F32], list[dict[str, Any]]], None]


@dataclass(slots=True)
class TrainConfig:
    algo: str = "awbc"
    backend: str = "auto"
    horizon_s: int = 30
    epochs: int = 6
    batch_size: int = 512
    lr: float = 1e-3
    beta: float = 0.1  # awbc temperature, in reward units (return on $1)
    max_weight: float = 20.0
    rule_k: float = 2.0  # supervised: move must beat rule_k x spread
    augment_agent: float = 0.5
    hold_bias_grid: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
    max_train_samples: int = 2_000_000
    # the bounded data path (trainer_svc.bounded, awbc): model selection on at most this many validation states
    # (whole windows, evenly spread), the hold-out evaluated this many states at a time
    val_max_states: int = 4_000_000
    eval_chunk_states: int = 2_000_000
    seed: int = 0
    # environment (also used by evaluation)
    stake: float = 1.0
    fee_rate: float = 0.07
    fee_exponent: float = 1.0
    latency_ticks: int = 0
    # ppo (see trainer_svc.algos.ppo for the reasoning behind the defaults)
    ppo_iters: int = 30
    ppo_episodes: int = 128
    gamma: float = 0.999
    gae_lambda: float = 0.95
    clip: float = 0.2
    value_clip: float = 0.2
    entropy: float = 0.005
    lr_actor: float = 3e-4
    lr_critic: float = 3e-4
    ppo_epochs: int = 2
    minibatch: int = 8192
    target_kl: float = 0.02
    max_grad_norm: float = 0.5
    reward_scale: float = 10.0
    ppo_init: str = "awbc"  # "awbc": warm-start the actor with awbc; "scratch"
    ppo_hold_init: float = 4.0  # scratch: initial HOLD-logit bias (exploration that does not churn fees)
    ppo_bias_grid: tuple[float, ...] = (-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0)  # greedy selection on val
    eval_every: int = 2

    def env_kwargs(self) -> dict[str, Any]:
        return {
            "stake": self.stake,
            "fee_rate": self.fee_rate,
            "fee_exponent": self.fee_exponent,
            "latency_ticks": self.latency_ticks,
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hold_bias_grid"] = list(self.hold_bias_grid)
        d["ppo_bias_grid"] = list(self.ppo_bias_grid)
        return d


@dataclass(slots=True)
class TrainResult:
    weights: dict[str, F32]
    history: list[dict[str, Any]]
    best_epoch: int
    hold_bias: float
    backend: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def noop(frac: float, info: dict[str, Any]) -> None:
    """The default :data:`Progress` callback."""
    return None
