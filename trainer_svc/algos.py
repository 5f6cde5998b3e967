"""Training algorithms on any backend: ``awbc``, ``supervised`` (behavioural cloning variants on
hindsight targets) and ``ppo`` (on replayed trajectories, see ``trainer_svc.ppo``).

Model selection never looks at the hold-out split: after every epoch the greedy policy is
backtested on the validation windows in the replay env and the best epoch is kept; then a logit
bias on HOLD (a grid, validation PnL) makes the policy trade only when confident. The bias is baked
into ``actor.out.bias``, so the artefact keeps the plain architecture.

* ``awbc``: advantage-weighted behavioural cloning on the hindsight labels of one horizon (default
  30 s): every labelled action a of a state is a target with weight ``w_a = clip(exp(A_a / beta), 0,
  max_weight)``, ``A_a = r_a - mean_a' r_a'`` (soft target ``w / sum(w)``, sample weight ``sum(w)``),
  so ``pi(a|x)`` is proportional to ``E[w_a | x]``; with beta above the advantages' spread its argmax is
  the action of highest expected hindsight reward (cloning only the best action would learn
  ``P(best | x)`` instead, which over-trades on noise).
* ``supervised``: the seed's rule: buy Up when the Up mid moves up by more than ``rule_k`` x the
  spread within the horizon (settlement value when the window ends first), buy Down when it moves
  down by as much, else hold; plain cross-entropy.

Agent features in the BC inputs are randomised (``augment_agent`` of the samples hold a random
position): the label's action keeps its meaning when holding (same side = keep, opposite = close).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from common.features import N_MARKET_FEATURES, agent_features, observation
from common.policy import HOLD
from common.schema import RAW_INDEX
from trainer_svc.backends import Backend, make_backend, resolve
from trainer_svc.dataset import Dataset, Part, horizon_index
from trainer_svc.env import EpisodeBatch, build_batch
from trainer_svc.evaluate import run_policy, weights_policy
from trainer_svc.hindsight import future_rows

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
    seed: int = 0
    # environment (also used by evaluation)
    stake: float = 1.0
    fee_rate: float = 0.07
    fee_exponent: float = 1.0
    latency_ticks: int = 0
    # ppo (see trainer_svc.ppo for the reasoning behind the defaults)
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


def _noop(frac: float, info: dict[str, Any]) -> None:
    return None


def val_pnl(batch: EpisodeBatch, weights: dict[str, F32], cfg: TrainConfig) -> float:
    return float(run_policy(batch, weights_policy(weights), "val", cfg.env_kwargs()).window_pnl.sum())


def with_hold_bias(weights: dict[str, F32], bias: float) -> dict[str, F32]:
    w = dict(weights)
    b = w["actor.out.bias"].copy()
    b[HOLD] += np.float32(bias)
    w["actor.out.bias"] = b
    return w


def tune_hold_bias(
    batch: EpisodeBatch, weights: dict[str, F32], cfg: TrainConfig
) -> tuple[float, float, dict[str, F32]]:
    """Best HOLD-logit bias on validation; returns (bias, val_pnl, weights with the bias)."""
    best = (-np.inf, 0.0)
    for b in cfg.hold_bias_grid:
        p = val_pnl(batch, with_hold_bias(weights, b), cfg)
        if p > best[0] + 1e-9:
            best = (p, b)
    return best[1], best[0], with_hold_bias(weights, best[1])


def _augmented_obs(market: F32, frac: float, rng: np.random.Generator) -> F32:
    n = market.shape[0]
    has = (rng.random(n) < frac).astype(np.float64)
    side = np.where(rng.random(n) < 0.5, 1.0, -1.0) * has
    pnl = rng.uniform(-0.3, 0.3, n) * has
    return observation(market, agent_features(has, side, pnl))


def bc_targets(ds: Dataset, rows: npt.NDArray[np.int64], cfg: TrainConfig) -> tuple[F32, F32, npt.NDArray[np.bool_]]:
    """(target distribution (n, 3), sample weight (n,), keep (n,)) for ``rows`` under ``cfg.algo``."""
    if cfg.algo in ("awbc", "ppo"):
        assert ds.labels is not None, "awbc needs labels"
        hi = horizon_index(ds.labels, cfg.horizon_s)
        r = ds.labels.rewards[rows, hi, :].astype(np.float64)
        keep = ds.labels.valid[rows, hi].astype(bool) & np.all(np.isfinite(r), axis=1)
        r = np.nan_to_num(r)
        adv = r - r.mean(axis=1, keepdims=True)
        wa = np.clip(np.exp(np.minimum(adv / cfg.beta, 50.0)), 0.0, cfg.max_weight)
        tot = wa.sum(axis=1)
        return (wa / tot[:, None]).astype(np.float32), tot.astype(np.float32), keep
    if cfg.algo == "supervised":
        s = ds.states
        j, ok, by_settle, settle = _future_rows_per_market(ds, cfg.horizon_s)
        bid, ask = s.raw[:, RAW_INDEX["up_bid_px_0"]], s.raw[:, RAW_INDEX["up_ask_px_0"]]
        mid = (bid + ask) / 2
        fut = np.where(by_settle, settle, mid[j])
        move, spread = (fut - mid)[rows], (ask - bid)[rows]
        keep = np.isfinite(move) & np.isfinite(spread) & (by_settle[rows] | ok[rows])
        thr = cfg.rule_k * np.nan_to_num(spread)
        y = np.where(move > thr, 1, np.where(move < -thr, 2, 0))
        return np.eye(3, dtype=np.float32)[y], np.ones(rows.size, np.float32), keep
    raise ValueError(f"unknown algorithm {cfg.algo!r}")


def _future_rows_per_market(ds: Dataset, horizon_s: int) -> tuple[np.ndarray, ...]:
    """:func:`future_rows` of each market's rows (a pooled dataset is in time order per market only)."""
    parts = ds.parts or [Part("", 0, len(ds.states))]
    outs = []
    for p in parts:
        j, ok, by_settle, settle = future_rows(ds.states.rows(p.begin, p.end), horizon_s)
        outs.append((j + p.begin, ok, by_settle, settle))
    return tuple(np.concatenate([o[k] for o in outs]) for k in range(4))


def train_bc(
    ds: Dataset,
    cfg: TrainConfig,
    progress: Progress = _noop,
    on_epoch: EpochHook | None = None,
    resume: dict[str, Any] | None = None,
) -> TrainResult:
    """awbc / supervised. ``resume`` = {"epoch", "weights", "history", "best"} from a checkpoint."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    rows = ds.splits["train"].rows(ds.windows)
    q, w, keep = bc_targets(ds, rows, cfg)
    rows, q, w = rows[keep], q[keep], w[keep]
    if rows.size > cfg.max_train_samples:
        pick = np.sort(rng.choice(rows.size, cfg.max_train_samples, replace=False))
        rows, q, w = rows[pick], q[pick], w[pick]
    if rows.size == 0:
        raise ValueError("no valid training samples")
    market = ds.states.features[rows, :N_MARKET_FEATURES]
    val_batch = build_batch(ds.states, ds.windows, ds.splits["val"].windows)
    backend: Backend = make_backend(cfg.backend, seed=cfg.seed, lr=cfg.lr, weights=(resume or {}).get("weights"))
    history: list[dict[str, Any]] = list((resume or {}).get("history", []))
    best = dict((resume or {}).get("best", {"pnl": -np.inf, "epoch": -1, "weights": backend.get_weights()}))
    start = int((resume or {}).get("epoch", 0))
    n, bs = rows.size, cfg.batch_size
    for epoch in range(start, cfg.epochs):
        erng = np.random.default_rng(cfg.seed * 1000 + epoch)
        x_all = _augmented_obs(market, cfg.augment_agent, erng)
        perm = erng.permutation(n)
        losses = []
        for k in range(0, n, bs):
            idx = perm[k : k + bs]
            losses.append(backend.bc_step(x_all[idx], q[idx], w[idx]))
        wts = backend.get_weights()
        vp = val_pnl(val_batch, wts, cfg)
        rec = {"epoch": epoch, "loss": float(np.mean(losses)), "val_pnl": vp, "t_s": round(time.perf_counter() - t0, 3)}
        history.append(rec)
        if vp > best["pnl"]:
            best = {"pnl": vp, "epoch": epoch, "weights": wts}
        progress((epoch + 1) / cfg.epochs, rec)
        if on_epoch is not None:
            on_epoch(epoch + 1, wts, history)
    bias, vbias, final = tune_hold_bias(val_batch, best["weights"], cfg)
    return TrainResult(
        weights=final,
        history=history,
        best_epoch=int(best["epoch"]),
        hold_bias=bias,
        backend=resolve(cfg.backend),
        seconds=time.perf_counter() - t0,
        extra={"train_samples": int(n), "val_pnl": vbias},
    )


def train(
    ds: Dataset,
    cfg: TrainConfig,
    progress: Progress = _noop,
    on_epoch: EpochHook | None = None,
    resume: dict[str, Any] | None = None,
) -> TrainResult:
    if cfg.algo == "ppo":
        from trainer_svc.ppo import train_ppo

        return train_ppo(ds, cfg, progress, on_epoch, resume)
    return train_bc(ds, cfg, progress, on_epoch, resume)
