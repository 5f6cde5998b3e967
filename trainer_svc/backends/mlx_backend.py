"""MLX backend (Metal on Apple silicon; ``mlx[cpu]`` on Linux): the networks of :mod:`common.nets.mlx_policy`
and the same update steps as the torch backend, parameter names identical (``actor.fc1.weight`` ... as
``mlx.utils.tree_flatten`` produces them), Linear weights ``[out, in]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import numpy.typing as npt
from mlx.utils import tree_flatten

from common.nets.mlx_policy import Head, Net

F32 = npt.NDArray[np.float32]


def _log_softmax(z: mx.array) -> mx.array:
    return z - mx.logsumexp(z, axis=-1, keepdims=True)


class MlxBackend:
    name = "mlx"

    def __init__(self, weights: Mapping[str, Any], lr: float = 1e-3, lr_critic: float = 3e-4) -> None:
        self.has_critic = any(k.startswith("critic.") for k in weights)
        hidden = int(np.asarray(weights["actor.fc1.weight"]).shape[0])
        self.net = Net(self.has_critic, hidden)
        self.set_weights(weights)
        self.opt = optim.Adam(learning_rate=lr, bias_correction=True)
        self.opt_c = optim.Adam(learning_rate=lr_critic, bias_correction=True) if self.has_critic else None

        def bc_loss(actor: Head, x: mx.array, q: mx.array, w: mx.array) -> mx.array:
            ce = -(q * _log_softmax(actor(x))).sum(-1)
            return (ce * w).sum() / mx.maximum(w.sum(), 1e-12)

        self._bc = nn.value_and_grad(self.net.actor, bc_loss)

        def pi_loss(
            actor: Head, obs: mx.array, act: mx.array, old_logp: mx.array, adv: mx.array, clip: float, ent: float
        ) -> tuple[mx.array, mx.array, mx.array, mx.array]:
            lp_all = _log_softmax(actor(obs))
            lp = mx.take_along_axis(lp_all, act[:, None], axis=1)[:, 0]
            ratio = mx.exp(lp - old_logp)
            surr = mx.minimum(ratio * adv, mx.clip(ratio, 1 - clip, 1 + clip) * adv)
            entropy = -(mx.exp(lp_all) * lp_all).sum(-1).mean()
            return -surr.mean() - ent * entropy, entropy, (old_logp - lp).mean(), (mx.abs(ratio - 1) > clip).mean()

        def v_loss(critic: Head, obs: mx.array, ret: mx.array, old_v: mx.array, vclip: float) -> mx.array:
            v = critic(obs)[:, 0]
            v_c = old_v + mx.clip(v - old_v, -vclip, vclip)
            return 0.5 * mx.maximum((ret - v) ** 2, (ret - v_c) ** 2).mean()

        self._pi = nn.value_and_grad(self.net.actor, lambda *a: pi_loss(*a))
        if self.has_critic:
            self._v = nn.value_and_grad(self.net.critic, v_loss)

    # ------------------------------------------------------------------ weights
    def get_weights(self) -> dict[str, F32]:
        return {k: np.array(v, dtype=np.float32) for k, v in tree_flatten(self.net.parameters())}

    def set_weights(self, weights: Mapping[str, Any]) -> None:
        have = {k for k, _ in tree_flatten(self.net.parameters())}
        if set(weights) != have:
            raise ValueError(f"weight names differ: {sorted(set(weights) ^ have)}")
        self.net.load_weights([(k, mx.array(np.asarray(v, dtype=np.float32))) for k, v in weights.items()])
        mx.eval(self.net.parameters())

    # ------------------------------------------------------------------ inference
    def forward(self, x: F32) -> F32:
        out = self.net.actor(mx.array(np.ascontiguousarray(x, np.float32)))
        return np.array(out, dtype=np.float32)

    def value(self, x: F32) -> F32:
        assert self.has_critic, "no critic"
        out = self.net.critic(mx.array(np.ascontiguousarray(x, np.float32)))
        return np.array(out, dtype=np.float32)[:, 0]

    # ------------------------------------------------------------------ updates
    def bc_step(self, x: F32, q: F32, w: F32) -> float:
        loss, grads = self._bc(self.net.actor, mx.array(x), mx.array(q), mx.array(w))
        self.opt.update(self.net.actor, grads)
        mx.eval(self.net.actor.parameters(), self.opt.state, loss)
        return float(loss.item())

    def ppo_step(self, batch: Mapping[str, npt.NDArray[Any]], hp: Mapping[str, float]) -> dict[str, float]:
        assert self.has_critic and self.opt_c is not None, "PPO needs a critic"
        obs = mx.array(np.ascontiguousarray(batch["obs"], np.float32))
        act = mx.array(batch["act"].astype(np.int32))
        (loss, entropy, kl, cf), g = self._pi(
            self.net.actor,
            obs,
            act,
            mx.array(batch["logp"].astype(np.float32)),
            mx.array(batch["adv"].astype(np.float32)),
            float(hp["clip"]),
            float(hp["entropy"]),
        )
        g, _ = optim.clip_grad_norm(g, float(hp["max_grad_norm"]))
        self.opt.update(self.net.actor, g)
        vl, gv = self._v(
            self.net.critic,
            obs,
            mx.array(batch["ret"].astype(np.float32)),
            mx.array(batch["val"].astype(np.float32)),
            float(hp["value_clip"]),
        )
        gv, _ = optim.clip_grad_norm(gv, float(hp["max_grad_norm"]))
        self.opt_c.update(self.net.critic, gv)
        mx.eval(self.net.parameters(), self.opt.state, self.opt_c.state)
        return {
            "policy_loss": float(loss.item()),
            "value_loss": float(vl.item()),
            "entropy": float(entropy.item()),
            "approx_kl": float(kl.item()),
            "clip_frac": float(cf.item()),
        }
