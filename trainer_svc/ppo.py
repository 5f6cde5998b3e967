"""PPO on replayed trajectories (the upstream's algorithm, without its bookkeeping defects).

Each iteration replays ``ppo_episodes`` training windows in the vectorised env with the current
stochastic policy (numpy forward of the backend's weights), then updates on the backend.

* Alignment: ``(o_t, a_t, logp_t, V(o_t), r_t, done_t)`` all belong to step t (defect 15); the last
  step of a window is the agent's own action and is terminal, bootstrapped with 0 (defect 18).
* GAE per episode along its own time axis on the (episode, time) grid: no value from another
  market or window ever enters an advantage (defect 16); no history window (defect 17).
* Rewards: the env's ``mark`` mode (change of equity; sums to the realised PnL over a window) times a
  fixed ``reward_scale``: no running normalisation (18).
* gamma 0.99 instead of the upstream's 0.95: at 0.5 s ticks 0.95 is a 10 s horizon, shorter than the
  30-60 s lead-lag and holding times, so the credit for an entry would be lost; 0.99 is ~50 s.
  lambda 0.95, clip 0.2, entropy 0.03, grad-norm 0.5, target KL 0.02 as upstream P5; lr 3e-4 both.
* ``ppo_init="awbc"`` warm-starts the actor with AWBC (the critic starts fresh); ``"scratch"`` does not.
Model selection on the validation windows (greedy), as for the BC algorithms.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from common.policy import fast_forward, init_weights
from trainer_svc.backends import make_backend, resolve
from trainer_svc.dataset import Dataset
from trainer_svc.env import EpisodeBatch, ReplayEnv, build_batch

F32 = npt.NDArray[np.float32]


def rollout(batch: EpisodeBatch, weights: dict[str, F32], rng: np.random.Generator, cfg: Any) -> dict[str, np.ndarray]:
    """Trajectories on the (E, T) grid with ``mask`` marking real steps."""
    env = ReplayEnv(batch, reward="mark", **cfg.env_kwargs())
    e, t_max = batch.n_episodes, batch.horizon
    obs = np.zeros((e, t_max, 18), np.float32)
    act = np.zeros((e, t_max), np.int64)
    logp = np.zeros((e, t_max), np.float32)
    val = np.zeros((e, t_max), np.float32)
    rew = np.zeros((e, t_max), np.float32)
    done = np.zeros((e, t_max), bool)
    o = env.reset()
    for t in range(t_max):
        logits = fast_forward(weights, o).astype(np.float64)
        lp_all = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
        a = np.argmax(lp_all + rng.gumbel(size=lp_all.shape), axis=1)
        obs[:, t], act[:, t] = o, a
        logp[:, t] = lp_all[np.arange(e), a]
        val[:, t] = fast_forward(weights, o, "critic")[:, 0]
        r, d = env.step(a)
        rew[:, t], done[:, t] = r * cfg.reward_scale, d
        o = env.observe()
    mask = np.arange(t_max)[None, :] < batch.length[:, None]
    return {
        "obs": obs,
        "act": act,
        "logp": logp,
        "val": val,
        "rew": rew,
        "done": done,
        "mask": mask,
        "pnl": env.pnl.copy(),
    }


def gae(
    rew: np.ndarray, val: np.ndarray, done: np.ndarray, mask: np.ndarray, gamma: float, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimates per episode (rows), time along columns; returns (adv, returns)."""
    e, t_max = rew.shape
    adv = np.zeros((e, t_max), np.float64)
    last = np.zeros(e)
    for t in range(t_max - 1, -1, -1):
        nxt = val[:, t + 1] if t + 1 < t_max else np.zeros(e)
        nonterm = (~done[:, t]) & (mask[:, t + 1] if t + 1 < t_max else False)
        delta = rew[:, t] + gamma * nxt * nonterm - val[:, t]
        last = np.where(mask[:, t], delta + gamma * lam * nonterm * last, 0.0)
        adv[:, t] = last
    return adv, adv + val


def train_ppo(ds: Dataset, cfg: Any, progress: Any, on_epoch: Any, resume: dict[str, Any] | None) -> Any:
    from trainer_svc.algos import TrainResult, train_bc, tune_hold_bias, val_pnl

    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    if resume:
        init = resume["weights"]
    else:
        init = init_weights(cfg.seed, critic=True)
        if cfg.ppo_init == "awbc":
            bc = train_bc(ds, cfg, lambda f, i: progress(0.3 * f, {"stage": "awbc-init", **i}))
            init.update({k: v for k, v in bc.weights.items() if k.startswith("actor.")})
    backend = make_backend(cfg.backend, seed=cfg.seed, lr=cfg.lr_actor, lr_critic=cfg.lr_critic, weights=init)
    train_w = ds.splits["train"].windows
    val_batch = build_batch(ds.states, ds.windows, ds.splits["val"].windows)
    history: list[dict[str, Any]] = list((resume or {}).get("history", []))
    w0 = backend.get_weights()
    best = {"pnl": val_pnl(val_batch, w0, cfg), "it": -1, "weights": w0}
    hp = {"clip": cfg.clip, "value_clip": cfg.value_clip, "entropy": cfg.entropy, "max_grad_norm": cfg.max_grad_norm}
    for it in range(int((resume or {}).get("epoch", 0)), cfg.ppo_iters):
        pick = rng.choice(train_w, size=min(cfg.ppo_episodes, train_w.size), replace=False)
        roll = rollout(build_batch(ds.states, ds.windows, np.sort(pick)), backend.get_weights(), rng, cfg)
        adv, ret = gae(roll["rew"], roll["val"], roll["done"], roll["mask"], cfg.gamma, cfg.gae_lambda)
        m = roll["mask"]
        data = {
            "obs": roll["obs"][m],
            "act": roll["act"][m],
            "logp": roll["logp"][m],
            "val": roll["val"][m],
            "adv": adv[m].astype(np.float32),
            "ret": ret[m].astype(np.float32),
        }
        data["adv"] = ((data["adv"] - data["adv"].mean()) / (data["adv"].std() + 1e-8)).astype(np.float32)
        n, stats = data["act"].size, []
        for _ in range(cfg.ppo_epochs):
            perm = rng.permutation(n)
            ep_stats = [
                backend.ppo_step({k: v[perm[i : i + cfg.minibatch]] for k, v in data.items()}, hp)
                for i in range(0, n, cfg.minibatch)
            ]
            stats += ep_stats
            if np.mean([s["approx_kl"] for s in ep_stats]) > cfg.target_kl:
                break
        rec: dict[str, Any] = {
            "iter": it,
            "mean_reward": float(roll["pnl"].mean()),
            "steps": int(n),
            **{k: float(np.mean([s[k] for s in stats])) for k in stats[0]},
        }
        wts = backend.get_weights()
        if (it + 1) % cfg.eval_every == 0 or it + 1 == cfg.ppo_iters:
            rec["val_pnl"] = val_pnl(val_batch, wts, cfg)
            if rec["val_pnl"] > best["pnl"]:
                best = {"pnl": rec["val_pnl"], "it": it, "weights": wts}
        rec["t_s"] = round(time.perf_counter() - t0, 3)
        history.append(rec)
        progress(0.3 + 0.7 * (it + 1) / cfg.ppo_iters, rec)
        if on_epoch is not None:
            on_epoch(it + 1, wts, history)
    bias, vbias, final = tune_hold_bias(val_batch, best["weights"], cfg)
    return TrainResult(
        weights=final,
        history=history,
        best_epoch=int(best["it"]),
        hold_bias=bias,
        backend=resolve(cfg.backend),
        seconds=time.perf_counter() - t0,
        extra={"val_pnl": vbias},
    )
