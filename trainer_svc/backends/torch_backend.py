"""PyTorch backend (CPU): update steps on the ``mlp-ln-tanh`` actor (and critic) of :mod:`common.nets.torch_policy`.

Threads: ``torch.set_num_threads(FUSION_TORCH_THREADS or 1)`` at construction, i.e. in the process
that trains (an RQ work-horse sets it after the fork; the worker parent never imports torch). One
thread is the measured optimum for this 64-wide MLP on the 2-core box: 650 k samples/s per BC step at
batch 4096 vs 130 k with 2 threads (intra-op sync overhead and contention with numpy).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from common.nets.torch_policy import Net

F32 = npt.NDArray[np.float32]


def set_threads(n: int | None = None) -> int:
    n = n or int(os.environ.get("FUSION_TORCH_THREADS", "0")) or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


class TorchBackend:
    name = "torch"

    def __init__(self, weights: Mapping[str, Any], lr: float = 1e-3, lr_critic: float = 3e-4, seed: int = 0) -> None:
        set_threads()
        torch.manual_seed(seed)
        critic = any(k.startswith("critic.") for k in weights)
        hidden = int(np.asarray(weights["actor.fc1.weight"]).shape[0])
        self.net = Net(critic, hidden)
        self.set_weights(weights)
        self.opt = torch.optim.Adam(self.net.actor.parameters(), lr=lr)
        self.opt_c = torch.optim.Adam(self.net.critic.parameters(), lr=lr_critic) if self.net.critic else None

    # ------------------------------------------------------------------ weights
    def get_weights(self) -> dict[str, F32]:
        return {k: v.detach().cpu().numpy().astype(np.float32).copy() for k, v in self.net.state_dict().items()}

    def set_weights(self, weights: Mapping[str, Any]) -> None:
        sd = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in weights.items()}
        self.net.load_state_dict(sd, strict=True)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def forward(self, x: F32) -> F32:
        out: F32 = self.net.actor(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()
        return out

    @torch.no_grad()
    def value(self, x: F32) -> F32:
        assert self.net.critic is not None, "no critic"
        out: F32 = self.net.critic(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()[:, 0]
        return out

    # ------------------------------------------------------------------ updates
    def bc_step(self, x: F32, q: F32, w: F32) -> float:
        xt, qt, wt = torch.from_numpy(x), torch.from_numpy(q), torch.from_numpy(w)
        ce = -(qt * torch.log_softmax(self.net.actor(xt), dim=-1)).sum(-1)
        loss = (ce * wt).sum() / wt.sum().clamp_min(1e-12)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def ppo_step(self, batch: Mapping[str, npt.NDArray[Any]], hp: Mapping[str, float]) -> dict[str, float]:
        assert self.net.critic is not None and self.opt_c is not None, "PPO needs a critic"
        obs = torch.from_numpy(np.ascontiguousarray(batch["obs"], np.float32))
        act = torch.from_numpy(batch["act"].astype(np.int64))
        old_logp = torch.from_numpy(batch["logp"].astype(np.float32))
        adv = torch.from_numpy(batch["adv"].astype(np.float32))
        ret = torch.from_numpy(batch["ret"].astype(np.float32))
        old_v = torch.from_numpy(batch["val"].astype(np.float32))
        clip, vclip = float(hp["clip"]), float(hp["value_clip"])

        logp_all = torch.log_softmax(self.net.actor(obs), dim=-1)
        logp = logp_all.gather(1, act[:, None])[:, 0]
        ratio = torch.exp(logp - old_logp)
        surr = torch.min(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)
        entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
        pi_loss = -surr.mean() - float(hp["entropy"]) * entropy
        self.opt.zero_grad(set_to_none=True)
        pi_loss.backward()
        nn.utils.clip_grad_norm_(self.net.actor.parameters(), float(hp["max_grad_norm"]))
        self.opt.step()

        v = self.net.critic(obs)[:, 0]
        v_clipped = old_v + torch.clamp(v - old_v, -vclip, vclip)
        v_loss = 0.5 * torch.max((ret - v) ** 2, (ret - v_clipped) ** 2).mean()
        self.opt_c.zero_grad(set_to_none=True)
        v_loss.backward()
        nn.utils.clip_grad_norm_(self.net.critic.parameters(), float(hp["max_grad_norm"]))
        self.opt_c.step()
        with torch.no_grad():
            kl = float((old_logp - logp).mean())
            clip_frac = float(((ratio - 1).abs() > clip).float().mean())
        return {
            "policy_loss": float(pi_loss.detach()),
            "value_loss": float(v_loss.detach()),
            "entropy": float(entropy.detach()),
            "approx_kl": kl,
            "clip_frac": clip_frac,
        }
