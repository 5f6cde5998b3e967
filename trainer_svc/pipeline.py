"""One training run end to end: load (store or synthetic) -> label -> split -> train -> hold-out
backtest against the baselines and the champion -> save the artefact -> promote (only if it wins)
-> ``model-updated`` event. Used by the RQ job, ``fusion train --inline``, the demo and benchmarks.

``awbc`` runs on the bounded data path (:mod:`trainer_svc.bounded`: one market in memory at a time, a bounded
training sample, the hold-out in chunks); ``ppo`` and ``supervised`` hold every state (:func:`load_data`).

Checkpoints (weights + history after every epoch) live in the store under
``checkpoints/{policy}/{run_key}/``; a retried job with the same key resumes from the last epoch
(optimizer moments restart from zero) and clears them when it finishes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from archiver_svc.budget import Estimate, check, estimate_rows, label_bytes
from archiver_svc.rawcols import TRAIN_FIELDS, SlugList, narrow_raw
from common import artefact
from common.alerts import notify
from common.log import kv
from common.markets import joined_name, split_markets
from common.names import check_name
from common.policy import architecture, meta_features
from common.schema import LabelColumns, StateColumns
from common.settings import get_settings
from common.store import ObjectStore, open_store
from trainer_svc import bounded
from trainer_svc.algos import TrainConfig, train
from trainer_svc.algos.cloning import fit_bc
from trainer_svc.checkpoint import Checkpointer
from trainer_svc.dataset import make_dataset, pool
from trainer_svc.env import build_batch
from trainer_svc.evaluate import Backtest, holdout_runs, promote_decision
from trainer_svc.hindsight import label_columns
from trainer_svc.preflight import NotTrainable, check_figures, check_trainable, not_trainable
from trainer_svc.report import render

log = logging.getLogger("trainer.pipeline")
Progress = Callable[[float, dict[str, Any]], None]
# peak bytes of a training job: a base (interpreter, torch, model) plus, per state beyond its labels, the states
# in training dtypes, the pooling copy, the training split's observations and the hold-out episodes. Measured by
# benchmarks/scale.py (peak RSS 0.89 / 1.96 / 6.05 GiB at 1 / 4 / 16 M states), rounded up
TRAIN_BASE_BYTES = 500_000_000
TRAIN_BYTES_PER_STATE = 450


@dataclass(slots=True)
class JobParams:
    market: str
    algo: str = "awbc"
    backend: str = "auto"
    policy: str | None = None  # default: the market's name
    from_ms: int | None = None
    to_ms: int | None = None
    synthetic: int = 0  # > 0: generate this many synthetic states instead of loading
    synthetic_lag_s: float = 30.0
    store_url: str | None = None
    redis_url: str | None = None
    seed: int = 0
    margin: float = 0.0
    promote: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    origin: str = "both"  # archived states read: recorded, imported (fusion import/backfill) or both
    exclude_flags: int = 0  # states with any of these flag bits are left out (e.g. DERIVED_MASK)

    @property
    def policy_name(self) -> str:
        """The registry name: ``policy``, else the market (several markets joined with ``_``)."""
        return self.policy or joined_name(self.market)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> JobParams:
        return JobParams(**d)


def markets_of(p: JobParams) -> list[str]:
    """The job's markets: ``market`` is one name or a comma-separated list (pooled into one dataset)."""
    out = split_markets(p.market)
    if not out:
        raise ValueError("no market given")
    return out


def _load_one(p: JobParams, market: str, horizons: tuple[int, ...], index: int = 0) -> tuple[Any, Any, dict[str, Any]]:
    """(states, labels, info) of one market (the ``index``-th of the job: synthetic data of each
    market has its own seed). Labels from the archive when they cover the horizons, else computed."""
    s = get_settings()
    info: dict[str, Any] = {"market": market}
    labels = None
    if p.synthetic > 0:
        from trainer_svc.synthetic import generate

        full = generate(n_states=p.synthetic, lag_s=p.synthetic_lag_s, seed=p.seed + 1000 * index)
        # RawColumns stands in for the (N, N_RAW) matrix StateColumns declares (it indexes the same way: see
        # archiver_svc.rawcols), as on the archive path, where load_market(raw_fields=...) builds it
        states = StateColumns(full.tick_ms, narrow_raw(full.raw), full.features, full.flags, full.slugs)  # type: ignore[arg-type]
        del full  # only the fields the trainer reads stay (see archiver_svc.rawcols)
        info.update(source="synthetic", synthetic_lag_s=p.synthetic_lag_s)
    else:
        from archiver_svc.reader import load_market

        md = load_market(
            p.store_url or s.store_url,
            market,
            p.from_ms,
            p.to_ms,
            origin=p.origin,
            raw_fields=TRAIN_FIELDS,
            max_memory_gb=float("inf"),
        )  # the job as a whole was checked (check_budget)
        states, labels = md.states, md.labels
        info.update(source=p.store_url or s.store_url, problems=len(md.problems), skipped=md.skipped, origin=p.origin)
        if p.exclude_flags and len(states):
            keep = (states.flags & p.exclude_flags) == 0
            info["excluded_by_flags"] = int((~keep).sum())
            if not keep.all():
                sl = states.slugs
                slugs = (SlugList(sl.table, sl.idx[keep]) if isinstance(sl, SlugList)
                         else [x for x, k in zip(sl, keep.tolist(), strict=True) if k])  # fmt: skip
                states = StateColumns(states.tick_ms[keep], states.raw[keep], states.features[keep],
                                      states.flags[keep], slugs)  # fmt: skip
    if len(states) == 0:  # not retried: the data is not there (the inline path and --follow exit 2 with this)
        raise NotTrainable(
            f"no states for market {market} in the selected range and origin (origin={p.origin}): record, import"
            " or backfill data first, or change --market/--from/--to/--data-source"
        )
    # archived labels only when they label exactly these states (rows of either may have been quarantined)
    if (labels is not None and set(horizons) <= set(labels.horizons_s) and len(labels) == len(states)
            and np.array_equal(labels.tick_ms, states.tick_ms)):  # fmt: skip
        info["labels_source"] = "archive"
    else:
        labels, src = label_columns(
            states,
            horizons,
            tolerance_ms=s.label_tolerance_ms,
            fee_rate=s.taker_fee_rate,
            fee_exponent=s.taker_fee_exponent,
        )
        info["labels_source"] = src
    if len(labels.horizons_s) != len(horizons):  # archived labels may carry more horizons: keep the job's
        ix = [list(labels.horizons_s).index(h) for h in horizons]
        labels = LabelColumns(labels.tick_ms, horizons, labels.rewards[:, ix], labels.best[:, ix],
                              labels.valid[:, ix], labels.exit_kind[:, ix])  # fmt: skip
    info.update(n_states=len(states), start_ms=int(states.tick_ms[0]), end_ms=int(states.tick_ms[-1]))
    return states, labels, info


def job_rows(p: JobParams, markets: list[str]) -> list[int]:
    """Rows the job will load per market (exact for compacted days and synthetic data, an upper bound for
    windows)."""
    if p.synthetic > 0:
        return [p.synthetic] * len(markets)
    from archiver_svc.objects import _window_ms, as_store, list_objects
    from archiver_svc.origins import origin_stores

    s = get_settings()
    stores = [st for st, _ in origin_stores(as_store(p.store_url or s.store_url), p.origin)]
    return [sum(estimate_rows(st, "states", m, p.from_ms, p.to_ms, _window_ms(None), s.tick_ms,
                              list_objects(st, "states", m, p.from_ms, p.to_ms)) for st in stores)
            for m in markets]  # fmt: skip


def estimate_job(
    p: JobParams, markets: list[str], horizons: tuple[int, ...], cfg: TrainConfig | None = None
) -> Estimate:
    """Rows the job will load and its peak bytes: on the bounded path (``cfg`` given and ``awbc``)
    :func:`trainer_svc.bounded.peak_bytes`; else every state in memory (``TRAIN_BYTES_PER_STATE`` per row,
    measured by benchmarks/scale.py)."""
    rows = job_rows(p, markets)
    if cfg is not None and bounded.uses(cfg):
        return Estimate(sum(rows), bounded.peak_bytes(rows, cfg))
    per = TRAIN_BYTES_PER_STATE + label_bytes(len(horizons))
    return Estimate(sum(rows), TRAIN_BASE_BYTES + sum(rows) * per)


def check_budget(
    p: JobParams, markets: list[str], horizons: tuple[int, ...], cfg: TrainConfig | None = None
) -> Estimate:
    """Refuse (:class:`~archiver_svc.budget.TooLarge`) a job that would not fit ``train_max_memory_gb``; else
    return its estimate."""
    est = estimate_job(p, markets, horizons, cfg)
    kv(log, logging.INFO, "training job estimate", rows=est.rows, gb=round(est.gb, 2))
    check(f"training {','.join(markets)}", est, get_settings().train_max_memory_gb,
          "train on fewer markets or a shorter range (from_ms/to_ms)")  # fmt: skip
    return est


def load_data(p: JobParams, horizons: tuple[int, ...]) -> tuple[Any, Any, dict[str, Any]]:
    """(states, labels, info) of the job's market; several markets are loaded one by one and pooled
    (see :func:`trainer_svc.dataset.pool`), with ``info["parts"]`` saying which rows are whose."""
    ms = markets_of(p)
    check_budget(p, ms, horizons)
    if len(ms) == 1:
        return _load_one(p, ms[0], horizons)
    loaded = [_load_one(p, m, horizons, k) for k, m in enumerate(ms)]
    states, labels, windows, parts = pool([(m, st, lb) for m, (st, lb, _) in zip(ms, loaded, strict=True)])
    info: dict[str, Any] = {
        "market": ",".join(ms),
        "markets": {m: inf for m, (_, _, inf) in zip(ms, loaded, strict=True)},
        "labels_source": ",".join(sorted({inf["labels_source"] for _, _, inf in loaded})),
        "n_states": len(states),
        "start_ms": min(inf["start_ms"] for _, _, inf in loaded),
        "end_ms": max(inf["end_ms"] for _, _, inf in loaded),
        "pooled": {"windows": windows, "parts": parts},
    }
    return states, labels, info


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
