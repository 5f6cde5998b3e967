"""The ``mlp-ln-tanh`` network as ``torch.nn`` modules (imports torch: import this module only where torch
is installed; nothing else in ``common`` imports it).

Guarantees: :class:`Head` computes :func:`common.policy.numpy_forward` (parity tested to ~1e-5);
``Net(critic).state_dict()`` names are exactly :func:`common.policy.param_shapes` (``actor.fc1.weight`` ...).
"""

from __future__ import annotations

import torch
from torch import nn

from common.policy import HIDDEN, INPUT_DIM, LN_EPS, N_ACTIONS


class Head(nn.Module):
    """One head: ``x (N, INPUT_DIM) -> Linear -> LayerNorm -> tanh -> Linear -> LayerNorm -> tanh -> Linear(out)``."""

    def __init__(self, out: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.fc1 = nn.Linear(INPUT_DIM, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=LN_EPS)
        self.fc2 = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=LN_EPS)
        self.out = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.ln1(self.fc1(x)))
        h = torch.tanh(self.ln2(self.fc2(h)))
        out: torch.Tensor = self.out(h)
        return out


class Net(nn.Module):
    """The actor (``N_ACTIONS`` logits) and, for PPO, a critic of the same shape with one output."""

    def __init__(self, critic: bool, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.actor = Head(N_ACTIONS, hidden)
        self.critic = Head(1, hidden) if critic else None
