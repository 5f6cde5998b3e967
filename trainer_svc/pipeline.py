"""One training run end to end: load (store or synthetic) -> label -> split -> train -> hold-out
backtest against the baselines and the champion -> save the artefact -> promote (only if it wins)
-> ``model-updated`` event. Used by the RQ job, ``fusion train --inline``, the demo and benchmarks.

``awbc`` runs on the bounded data path (:mod:`trainer_svc.bounded`: one market in memory at a time, a bounded
training sample, the hold-out in chunks); ``ppo`` and ``supervised`` hold every state (:func:`load_data`). The job's
parameters, its data and its memory budget are :mod:`trainer_svc.job_data` (importable from here too).

Checkpoints (weights + history after every epoch) live in the store under
``checkpoints/{policy}/{run_key}/``; a retried job with the same key resumes from the last epoch
(optimizer moments restart from zero) and clears them when it finishes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from common import artefact
from common.alerts import notify
from common.log import kv
from common.names import check_name
from common.policy import architecture, meta_features
from common.settings import get_settings
from common.store import ObjectStore, open_store
from trainer_svc import bounded
from trainer_svc.algos import TrainConfig, train
from trainer_svc.algos.cloning import fit_bc
from trainer_svc.checkpoint import Checkpointer
from trainer_svc.dataset import make_dataset
from trainer_svc.env import build_batch
from trainer_svc.evaluate import Backtest, holdout_runs, promote_decision
from trainer_svc.job_data import JobParams, _load_one, check_budget, estimate_job, load_data, markets_of
from trainer_svc.preflight import check_figures, check_trainable, not_trainable
from trainer_svc.report import render

log = logging.getLogger("trainer.pipeline")
Progress = Callable[[float, dict[str, Any]], None]

# the job's parameters and data (trainer_svc.job_data), importable from here as before
__all__ = ["JobParams", "Progress", "check_budget", "estimate_job", "load_data", "run_training"]


def _champion(store: ObjectStore, policy: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the champion's weights or None, why its pointer is unreadable or None)."""
    try:
        ptr = artefact.champion(store, policy)
    except artefact.ChampionError as e:
        kv(log, logging.WARNING, "champion pointer unreadable; the new version is saved, not promoted",
           policy=policy, error=str(e))  # fmt: skip
        return None, str(e)
    if ptr is None:
        return None, None
    try:
        w, _ = artefact.load_model(store, policy, ptr["version"], ptr["sha256"])
    except artefact.ModelError as e:
        kv(log, logging.WARNING, "champion unusable; comparing against baselines only", error=str(e))
        return None, None
    return dict(w), None


Runs = Callable[[Any, int], dict[str, Backtest]]
Trained = tuple[Any, dict[str, Backtest], dict[str, Any], dict[str, Any], dict[str, float]]


def _train_in_memory(p: JobParams, cfg: TrainConfig, horizons: tuple[int, ...], runs_of: Callable[[Any], Runs],
                     prog: Progress, on_epoch: Any, resume: Any, t0: float) -> Trained:  # fmt: skip
    """Every state in memory (``ppo``, ``supervised``): load, pool, split, train, evaluate the hold-out."""
    states, labels, info = load_data(p, horizons)
    pooled = info.pop("pooled", None) or {}
    try:
        ds = make_dataset(states, labels, windows=pooled.get("windows"), parts=pooled.get("parts"))
    except ValueError as e:  # fewer than 3 windows: no split at all
        raise not_trainable(e) from e
    info["preflight"] = check_trainable(ds, cfg.horizon_s, get_settings().label_tolerance_ms)
    timings = {"load_label_s": round(time.perf_counter() - t0, 3)}
    t1 = time.perf_counter()
    res = train(ds, cfg, lambda f, i: prog(0.05 + 0.85 * f, {"stage": "train", **i}), on_epoch, resume)
    timings["train_s"] = round(time.perf_counter() - t1, 3)
    prog(0.9, {"stage": "evaluate"})
    t2 = time.perf_counter()
    bts = runs_of(res)(build_batch(states, ds.windows, ds.splits["holdout"].windows), 0)
    timings["evaluate_s"] = round(time.perf_counter() - t2, 3)
    return res, bts, info, ds.describe(), timings


def _train_bounded(p: JobParams, cfg: TrainConfig, horizons: tuple[int, ...], runs_of: Callable[[Any], Runs],
                   prog: Progress, on_epoch: Any, resume: Any, t0: float) -> Trained:  # fmt: skip
    """``awbc`` on the bounded data path (:mod:`trainer_svc.bounded`): one market in memory at a time, a
    bounded training sample, capped validation, the hold-out in chunks."""
    s = get_settings()
    ms = markets_of(p)
    bounded.check_scratch(s.train_scratch_dir, check_budget(p, ms, horizons, cfg).rows)
    try:
        b = bounded.build(ms, lambda m, k: _load_one(p, m, (cfg.horizon_s,), k), cfg.horizon_s,
                          float(max(horizons)), s.train_scratch_dir)  # fmt: skip
    except ValueError as e:
        raise not_trainable(e) from e
    try:
        counts = {k: int(b.splits[k].windows.size) for k in ("train", "val", "holdout")}
        n_valid = int(b.n_valid[b.splits["train"].windows].sum())
        b.info["preflight"] = check_figures(b.tick_s, cfg.horizon_s, s.label_tolerance_ms, counts, len(b.windows),
                                            len(b.dropped), b.purge_s, n_valid, b.splits["train"].n_states)  # fmt: skip
        market, q, w, n_kept = bounded.train_samples(b, cfg)
        vsel = bounded.val_windows(b, cfg.val_max_states)
        val_batch = bounded.episode_batch(b, vsel)
        b.info["bounded"] = {"spill_bytes": b.spill_bytes, "train_valid_rows": n_kept,
                             "train_samples": int(market.shape[0]), "val_windows_used": int(vsel.size),
                             "val_states_used": int(b.windows.lengths[vsel].sum())}  # fmt: skip
        timings = {"load_label_s": round(time.perf_counter() - t0, 3)}
        t1 = time.perf_counter()
        res = fit_bc(market, q, w, val_batch, cfg, lambda f, i: prog(0.05 + 0.85 * f, {"stage": "train", **i}),
                     on_epoch, resume)  # fmt: skip
        del market, q, w, val_batch
        timings["train_s"] = round(time.perf_counter() - t1, 3)
        prog(0.9, {"stage": "evaluate"})
        t2 = time.perf_counter()
        bts = bounded.evaluate_chunked(b, b.splits["holdout"].windows, cfg.eval_chunk_states, runs_of(res))
        timings["evaluate_s"] = round(time.perf_counter() - t2, 3)
        return res, bts, b.info, b.describe(), timings
    finally:
        b.close()


def run_training(
    p: JobParams,
    progress: Progress | None = None,
    run_key: str | None = None,
    redis: Any = None,
) -> dict[str, Any]:
    """Train, evaluate, save, maybe promote; returns a JSON-able summary. Names are checked before any work."""
    for m in markets_of(p):
        check_name(m, "market")
    artefact.checked_name("policy", p.policy_name)
    t0 = time.perf_counter()
    prog = progress or (lambda f, i: None)
    s = get_settings()
    store = open_store(p.store_url or s.store_url, s.s3_endpoint_url, s.s3_region)
    cfg = TrainConfig(
        algo=p.algo,
        backend=p.backend,
        seed=p.seed,
        fee_rate=s.taker_fee_rate,
        fee_exponent=s.taker_fee_exponent,
        **p.overrides,
    )
    horizons = tuple(sorted({*s.label_horizons_s, cfg.horizon_s}))
    prog(0.0, {"stage": "load"})
    ckpt = Checkpointer(store, p.policy_name, run_key) if run_key else None
    resume = ckpt.load() if ckpt else None
    if resume:
        kv(log, logging.INFO, "resuming from checkpoint", epoch=resume["epoch"], run=run_key)

    def on_epoch(epoch: int, w: dict[str, np.ndarray], hist: list[dict[str, Any]]) -> None:
        if ckpt:
            ckpt.save(epoch, w, hist)

    champ_w, champ_error = _champion(store, p.policy_name)
    env_kwargs = cfg.env_kwargs()

    def runs_of(res: Any) -> Runs:
        return holdout_runs(res.weights, champ_w, env_kwargs, p.seed)

    run = _train_bounded if bounded.uses(cfg) else _train_in_memory
    res, base, info, splits, timings = run(p, cfg, horizons, runs_of, prog, on_epoch, resume, t0)
    cand, champ = base.pop("candidate"), base.pop("champion", None)
    decision = promote_decision(cand, champ, base, margin=p.margin, seed=p.seed)
    holdout = {"candidate": cand.metrics, **({"champion": champ.metrics} if champ else {})}
    meta = {
        **meta_features(),
        "architecture": architecture(),
        "algorithm": p.algo,
        "backend": res.backend,
        "hyper_parameters": cfg.to_dict(),
        "data": info,
        "splits": splits,
        "holdout_metrics": cand.metrics,
        "holdout_window_pnl": [round(float(x), 9) for x in cand.window_pnl],  # per window, in hold-out order
        "champion_metrics": champ.metrics if champ else None,
        "baselines_metrics": {k: v.metrics for k, v in base.items()},
        "decision": {
            "promote": decision.promote,
            "reason": decision.reason,
            "comparisons": decision.comparisons,
            "champion_error": champ_error,
        },  # fmt: skip
        "training": {
            "history": res.history,
            "best_epoch": res.best_epoch,
            "hold_bias": res.hold_bias,
            "seconds": round(res.seconds, 3),
            **res.extra,
        },
    }
    equity = {"candidate": cand.equity_curve().tolist(), **{k: v.equity_curve().tolist() for k, v in base.items()}}
    if champ:
        equity["champion"] = champ.equity_curve().tolist()
    version = artefact.new_version(salt=artefact.weights_bytes(res.weights))
    summary = {
        "policy": p.policy_name,
        "version": version,
        "algorithm": p.algo,
        "backend": res.backend,
        "market": p.market,
        "holdout": {**holdout, **{k: v.metrics for k, v in base.items()}},
        "decision": {"promote": decision.promote, "reason": decision.reason},
        "champion_error": champ_error,
    }
    html = render(summary, res.history, equity)
    ref = artefact.save_model(store, p.policy_name, res.weights, meta, version=version, report_html=html)
    promoted = None
    if not decision.promote:
        notify("model-rejected", f"{p.policy_name} {version} not promoted: {decision.reason}",
               key=f"{p.policy_name}/{version}", policy=p.policy_name, version=version)  # fmt: skip
    if decision.promote and p.promote and champ_error is None:  # never over a pointer nobody can read
        if redis is None and p.redis_url:
            import redis as redis_mod

            redis = redis_mod.Redis.from_url(p.redis_url)
        promoted = artefact.promote(store, p.policy_name, ref.version, redis)
    if ckpt:
        ckpt.clear()
    timings["total_s"] = round(time.perf_counter() - t0, 3)
    summary.update(
        uri=ref.uri, sha256=ref.sha256, promoted=promoted is not None, timings=timings, splits=splits, data=info
    )
    prog(1.0, {"stage": "done", "promoted": promoted is not None})
    kv(
        log,
        logging.INFO,
        "training finished",
        policy=p.policy_name,
        version=ref.version,
        promoted=promoted is not None,
        reason=decision.reason,
    )
    return summary
