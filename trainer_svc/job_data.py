"""A training job's parameters and data: what it loads (store or synthetic; one market, or several pooled), how
many rows that is and the peak memory it needs, and the budget check that refuses a job too large
(``train_max_memory_gb``) before anything is loaded. :mod:`trainer_svc.pipeline` trains on it.

Labels come from the archive when they label exactly the loaded states at the job's horizons, else they are
computed (:func:`trainer_svc.hindsight.label_columns`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from archiver_svc.budget import Estimate, check, estimate_rows, label_bytes
from archiver_svc.rawcols import TRAIN_FIELDS, SlugList, narrow_raw
from common.log import kv
from common.markets import joined_name, split_markets
from common.schema import LabelColumns, StateColumns
from common.settings import get_settings
from trainer_svc import bounded
from trainer_svc.algos import TrainConfig
from trainer_svc.dataset import pool
from trainer_svc.hindsight import label_columns
from trainer_svc.preflight import NotTrainable

log = logging.getLogger("trainer.pipeline")  # the logger these lines had before the split
# peak bytes of a training job: a base (interpreter, torch, model) plus, per state beyond its labels, the states
# in training dtypes, the pooling copy, the training split's observations and the hold-out episodes. Measured by
# benchmarks/scale.py (peak RSS 0.89 / 1.96 / 6.05 GiB at 1 / 4 / 16 M states), rounded up
TRAIN_BASE_BYTES = 500_000_000
TRAIN_BYTES_PER_STATE = 450


@dataclass(slots=True)
class JobParams:
    """One training job's parameters (plain values: :meth:`to_dict` / :meth:`from_dict` round-trip them)."""

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
