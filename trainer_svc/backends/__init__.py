"""Training backends: the same ``mlp-ln-tanh`` networks and update steps on MLX and on PyTorch.

Both implement :class:`Backend`; algorithms (``trainer_svc.algos``) only talk to this interface and
exchange numpy arrays, so a model trained on either exports the same safetensors artefact.
``auto`` picks MLX on Apple silicon (darwin/arm64) and torch elsewhere (MLX-CPU on Linux is ~50x
slower than numpy for these sizes).
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


class Backend(Protocol):
    name: str

    def get_weights(self) -> dict[str, F32]: ...

    def set_weights(self, weights: Mapping[str, Any]) -> None: ...

    def forward(self, x: F32) -> F32:
        """Actor logits (N, 3)."""
        ...

    def value(self, x: F32) -> F32:
        """Critic values (N,) (requires a critic)."""
        ...

    def bc_step(self, x: F32, q: F32, w: F32) -> float:
        """One Adam step of weighted soft-target cross-entropy ``sum(w * -sum_a q_a log pi_a) / sum(w)`` on
        the actor (``q`` (N, 3) target distributions, ``w`` (N,) sample weights); returns the loss."""
        ...

    def ppo_step(self, batch: Mapping[str, npt.NDArray[Any]], hp: Mapping[str, float]) -> dict[str, float]:
        """One PPO minibatch step (clipped surrogate + entropy on the actor, clipped value loss on the
        critic, separate Adam optimizers, global grad-norm clipping each)."""
        ...


def resolve(name: str) -> str:
    """``auto`` -> ``mlx`` on Apple silicon, ``torch`` elsewhere; other names pass through."""
    if name == "auto":
        return "mlx" if platform.system() == "Darwin" and platform.machine() == "arm64" else "torch"
    if name not in ("mlx", "torch"):
        raise ValueError(f"unknown backend {name!r} (mlx | torch | auto)")
    return name


def make_backend(
    name: str,
    seed: int = 0,
    critic: bool = False,
    lr: float = 1e-3,
    lr_critic: float = 3e-4,
    weights: Mapping[str, Any] | None = None,
) -> Backend:
    """A backend initialised from ``weights`` or from ``common.policy.init_weights(seed, critic)``."""
    from common.policy import init_weights

    init = dict(weights) if weights is not None else init_weights(seed, critic=critic)
    kind = resolve(name)
    if kind == "mlx":
        from trainer_svc.backends.mlx_backend import MlxBackend

        return MlxBackend(init, lr=lr, lr_critic=lr_critic)
    from trainer_svc.backends.torch_backend import TorchBackend

    return TorchBackend(init, lr=lr, lr_critic=lr_critic, seed=seed)
