"""The serving policy: the ``mlp-ln-tanh`` actor of :mod:`common.nets.torch_policy`, CPU, eval mode, no autograd.

Guarantees: a :class:`TorchPolicy` is only ever built from a weight dict that passed
:func:`common.policy.check_weights` (names, shapes, float32, finite), so a NaN/inf or misshapen file
never reaches a forward pass; its logits agree with :func:`common.policy.numpy_forward` to ~1e-5 and
its actions are the greedy argmax. Inference runs under ``torch.inference_mode()`` on one intra-op
thread (the measured optimum for a 64-wide MLP with a handful of rows; more threads only add sync).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from common.nets.torch_policy import Head
from common.policy import HIDDEN, INPUT_DIM, N_ACTIONS, check_weights

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def configure_threads(n: int = 1) -> None:
    """One intra-op thread (idempotent; called before the first forward of the process)."""
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


class TorchPolicy:
    """The actor head of a validated weight set; ``act`` is a batch forward + argmax for all markets."""

    def __init__(self, weights: Mapping[str, Any], hidden: int | None = None) -> None:
        hidden = hidden or int(np.asarray(weights.get("actor.fc1.weight", np.zeros((HIDDEN, 0)))).shape[0])
        check_weights(weights, hidden=hidden)  # raises WeightsError (names, shapes, dtype, non-finite)
        configure_threads(1)
        self.hidden = hidden
        self.net = Head(N_ACTIONS, hidden)  # the trainer's actor (common.nets.torch_policy)
        state = {k[len("actor.") :]: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in weights.items()
                 if k.startswith("actor.")}  # fmt: skip
        self.net.load_state_dict(state, strict=True)
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        # warm-up: the first call of a fresh module allocates; do it here, off the tick path
        self.logits(np.zeros((1, INPUT_DIM), np.float32))

    def logits(self, obs: npt.ArrayLike) -> F32:
        """(N, N_OBS) float32 observations -> (N, 3) float32 logits."""
        x = torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != INPUT_DIM:
            raise ValueError(f"obs must have shape (N, {INPUT_DIM}), got {tuple(x.shape)}")
        with torch.inference_mode():
            out: F32 = self.net(x).numpy().copy()
        return out

    def act(self, obs: npt.ArrayLike) -> I64:
        """Greedy actions (N,) in {HOLD, BUY_UP, BUY_DOWN}."""
        return np.asarray(self.logits(obs).argmax(axis=1), dtype=np.int64)
