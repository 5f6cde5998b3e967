"""Behavioural cloning on hindsight targets, on any backend: ``awbc`` and ``supervised``.

After every epoch the greedy policy is backtested on the validation windows and the best epoch is kept,
then the HOLD-logit bias is tuned (both in :mod:`trainer_svc.algos.selection`).

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
from typing import Any

import numpy as np
import numpy.typing as npt

from common.features import N_MARKET_FEATURES, agent_features, observation
from common.schema import RAW_INDEX
from trainer_svc.algos.config import F32, EpochHook, Progress, TrainConfig, TrainResult, noop
from trainer_svc.algos.selection import tune_hold_bias, val_pnl
from trainer_svc.backends import Backend, make_backend, resolve
from trainer_svc.dataset import Dataset, Part, horizon_index
from trainer_svc.env import EpisodeBatch, build_batch
from trainer_svc.hindsight import future_rows


def _augmented_obs(market: F32, frac: float, rng: np.random.Generator) -> F32:
    n = int(market.shape[0])
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
        q, w = awbc_targets(r, cfg)
        return q, w, keep
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


def awbc_targets(rewards: npt.NDArray[np.float64], cfg: TrainConfig) -> tuple[F32, F32]:
    """awbc's (soft target (n, 3), sample weight (n,)) from the hindsight rewards (n, 3) of one horizon."""
    r = np.nan_to_num(rewards)
    adv = r - r.mean(axis=1, keepdims=True)
    wa = np.clip(np.exp(np.minimum(adv / cfg.beta, 50.0)), 0.0, cfg.max_weight)
    tot = wa.sum(axis=1)
    return (wa / tot[:, None]).astype(np.float32), tot.astype(np.float32)


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
    progress: Progress = noop,
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
    return fit_bc(market, q, w, val_batch, cfg, progress, on_epoch, resume, t0)


def fit_bc(
    market: F32,
    q: F32,
    w: F32,
    val_batch: EpisodeBatch,
    cfg: TrainConfig,
    progress: Progress = noop,
    on_epoch: EpochHook | None = None,
    resume: dict[str, Any] | None = None,
    t0: float | None = None,
) -> TrainResult:
    """Cloning epochs over the samples (market features (n, F), soft targets, weights), the best epoch on
    ``val_batch`` kept, then the HOLD bias tuned on it. The samples' order and ``cfg.seed`` fix the result."""
    t0 = time.perf_counter() if t0 is None else t0
    if market.shape[0] == 0:
        raise ValueError("no valid training samples")
    backend: Backend = make_backend(cfg.backend, seed=cfg.seed, lr=cfg.lr, weights=(resume or {}).get("weights"))
    history: list[dict[str, Any]] = list((resume or {}).get("history", []))
    best = dict((resume or {}).get("best", {"pnl": -np.inf, "epoch": -1, "weights": backend.get_weights()}))
    start = int((resume or {}).get("epoch", 0))
    n, bs = market.shape[0], cfg.batch_size
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
