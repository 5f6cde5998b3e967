"""Trainer benchmark: end to end (generate + label + split + train awbc on torch + hold-out backtest with
baselines) on one week of one market at 0.5 s ticks (1.2 M synthetic states), MLX-CPU vs torch time
per epoch on the same small data, replay-environment steps per second (vectorised), and PPO (torch) on the
lead-lag data of the default claim test (72 k states, 5-min windows): training time and hold-out PnL
against the baselines, warm-started from AWBC (and from scratch unless ``quick``)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from common.features import N_OBS

WEEK_STATES = 7 * 24 * 3600 * 2  # 1,209,600


def _env_steps_per_s(states: Any) -> dict[str, float]:
    from trainer_svc.env import ReplayEnv, build_batch

    batch = build_batch(states)
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 3, (batch.horizon, batch.n_episodes))
    env = ReplayEnv(batch)
    t = time.perf_counter()
    env.reset()
    for k in range(batch.horizon):
        env.step(acts[k])
        env.observe()
    dt = time.perf_counter() - t
    return {"env_steps": batch.n_steps, "env_episodes": batch.n_episodes, "env_steps_per_s": batch.n_steps / dt}


def _epoch_time(backend: str, x: np.ndarray, q: np.ndarray, w: np.ndarray, bs: int = 512) -> float:
    from trainer_svc.backends import make_backend

    b = make_backend(backend, seed=0)
    b.bc_step(x[:bs], q[:bs], w[:bs])  # warm-up (MLX compiles lazily)
    t = time.perf_counter()
    for i in range(0, x.shape[0], bs):
        b.bc_step(x[i : i + bs], q[i : i + bs], w[i : i + bs])
    return time.perf_counter() - t


def _ppo_figures(quick: bool) -> dict[str, Any]:
    from trainer_svc.algos import TrainConfig, train
    from trainer_svc.dataset import horizon_index, make_dataset
    from trainer_svc.env import build_batch
    from trainer_svc.evaluate import baselines, promote_decision, run_policy, weights_policy
    from trainer_svc.hindsight import label_columns
    from trainer_svc.synthetic import generate

    states = generate(n_states=72_000, lag_s=30.0, seed=2, window_s=300)
    labels, _ = label_columns(states, (30, 60), tolerance_ms=2000, fee_rate=0.07, fee_exponent=1.0)
    ds = make_dataset(states, labels)
    hold = build_batch(states, ds.windows, ds.splits["holdout"].windows)
    base = baselines(hold, labels, horizon_index(labels, 30))
    out: dict[str, Any] = {"ppo_baseline_pnl": {k: round(v.metrics["pnl"], 3) for k, v in base.items()}}
    runs = {"awbc": {"epochs": 4, "ppo_iters": 8}}
    if not quick:
        runs["scratch"] = {
            "ppo_init": "scratch",
            "ppo_iters": 20,
            "ppo_episodes": 256,
            "ppo_epochs": 4,
            "minibatch": 4096,
        }
    for name, kw in runs.items():
        t = time.perf_counter()
        res = train(ds, TrainConfig(algo="ppo", backend="torch", **kw))
        cand = run_policy(hold, weights_policy(res.weights), "candidate")
        out[f"ppo_{name}_train_s"] = time.perf_counter() - t
        out[f"ppo_{name}_val_pnl_init"] = res.extra["init_val_pnl"]
        out[f"ppo_{name}_val_pnl_best"] = res.extra["val_pnl"]
        out[f"ppo_{name}_holdout_pnl"] = cand.metrics["pnl"]
        out[f"ppo_{name}_holdout_ci95_per_window"] = cand.metrics["pnl_per_window_ci95"]
        out[f"ppo_{name}_trades"] = cand.metrics["trades"]
        out[f"ppo_{name}_promoted"] = promote_decision(cand, None, base).promote
    return out


def run(quick: bool = False) -> dict[str, Any]:
    from trainer_svc.algos import TrainConfig, train
    from trainer_svc.dataset import horizon_index, make_dataset
    from trainer_svc.env import build_batch
    from trainer_svc.evaluate import baselines, promote_decision, run_policy, weights_policy
    from trainer_svc.hindsight import label_columns
    from trainer_svc.synthetic import generate

    n = 120_000 if quick else WEEK_STATES
    out: dict[str, Any] = {"states": n}
    t0 = time.perf_counter()
    states = generate(n_states=n, seed=11)
    out["generate_s"] = time.perf_counter() - t0
    t = time.perf_counter()
    labels, src = label_columns(states, (30, 60, 300), tolerance_ms=2000, fee_rate=0.07, fee_exponent=1.0)
    out["label_s"], out["labels_source"] = time.perf_counter() - t, src
    t = time.perf_counter()
    ds = make_dataset(states, labels)
    out["split_s"] = time.perf_counter() - t
    t = time.perf_counter()
    cfg = TrainConfig(algo="awbc", backend="torch", epochs=3)
    res = train(ds, cfg)
    out["train_awbc_torch_s"] = time.perf_counter() - t
    out["train_epochs"] = cfg.epochs
    out["train_samples"] = res.extra["train_samples"]
    t = time.perf_counter()
    hold = build_batch(states, ds.windows, ds.splits["holdout"].windows)
    cand = run_policy(hold, weights_policy(res.weights), "candidate")
    base = baselines(hold, labels, horizon_index(labels, cfg.horizon_s))
    decision = promote_decision(cand, None, base)
    out["evaluate_s"] = time.perf_counter() - t
    out["end_to_end_s"] = time.perf_counter() - t0
    out["holdout_pnl"] = cand.metrics["pnl"]
    out["holdout_ci95"] = cand.metrics["pnl_per_window_ci95"]
    out["holdout_windows"] = cand.metrics["windows"]
    out["baseline_pnl"] = {k: v.metrics["pnl"] for k, v in base.items()}
    out["promoted"] = decision.promote
    out.update(_env_steps_per_s(states))

    # MLX-CPU vs torch: one epoch of awbc steps (batch 512) on the same small sample
    m = 8_192 if quick else 32_768
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (m, N_OBS)).astype(np.float32)
    q = rng.dirichlet(np.ones(3), m).astype(np.float32)
    w = rng.uniform(0.5, 2.0, m).astype(np.float32)
    out["epoch_samples"] = m
    out["torch_epoch_s"] = _epoch_time("torch", x, q, w)
    try:
        out["mlx_epoch_s"] = _epoch_time("mlx", x, q, w)
        out["mlx_over_torch"] = out["mlx_epoch_s"] / out["torch_epoch_s"]
    except ImportError as e:
        out["mlx_epoch_s"] = f"unavailable: {e}"
    out.update(_ppo_figures(quick))
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}
