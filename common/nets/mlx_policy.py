"""The ``mlp-ln-tanh`` network as MLX modules (imports MLX: import this module only where MLX is installed;
nothing else in ``common`` imports it).

Guarantees: the same layers and parameter names as :mod:`common.nets.torch_policy` (``actor.fc1.weight`` ...
as ``mlx.utils.tree_flatten`` produces them), Linear weights ``[out, in]``; :class:`Head` computes
:func:`common.policy.numpy_forward` (parity tested to ~1e-5).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from common.policy import HIDDEN, INPUT_DIM, LN_EPS, N_ACTIONS


class Head(nn.Module):  # type: ignore[misc]  # mlx ships no type information
    """One head: ``x (N, INPUT_DIM) -> Linear -> LayerNorm -> tanh -> Linear -> LayerNorm -> tanh -> Linear(out)``."""

    def __init__(self, out: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.fc1 = nn.Linear(INPUT_DIM, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=LN_EPS)
        self.fc2 = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=LN_EPS)
        self.out = nn.Linear(hidden, out)

    def __call__(self, x: mx.array) -> mx.array:
        h = mx.tanh(self.ln1(self.fc1(x)))
        h = mx.tanh(self.ln2(self.fc2(h)))
        out: mx.array = self.out(h)
        return out


class Net(nn.Module):  # type: ignore[misc]
    """The actor (``N_ACTIONS`` logits) and, for PPO, a critic of the same shape with one output."""

    def __init__(self, critic: bool, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.actor = Head(N_ACTIONS, hidden)
        if critic:
            self.critic = Head(1, hidden)
