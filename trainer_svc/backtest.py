"""``fusion backtest``: any model version (promoted or not) on any archived range, through the same replay
environment and evaluation as training (:mod:`trainer_svc.env`, :mod:`trainer_svc.evaluate`).

Guarantees:

* The model is loaded verified (sha256 + architecture, :func:`common.artefact.load_model`); the environment
  (stake, fees, latency), the horizon and the seed of the random baseline come from the version's own
  ``meta.json`` (``hyper_parameters``), so a backtest evaluates the model exactly as its training did.
* The data is loaded as training loads it (:func:`trainer_svc.job_data.load_data`: one market or several pooled),
  padded by ``PAD_MS`` on both sides so that windows crossing the range's edges are segmented whole; only
  windows whose every state is inside ``[from, to]`` are replayed. On a version's own hold-out range
  (``holdout=True``: ``meta.json``'s ``splits.holdout``) the replayed windows are the hold-out windows, and the
  model's metrics equal the recorded ``holdout_metrics`` (the oracle baseline's labels may differ at the edges
  when more data has been archived since).
* The report (JSON + HTML, in the training report's style) is written to ``backtests/{policy}/{version}/`` in the
  store and returned; it holds the model's metrics, the baselines side by side, the paired bootstrap
  comparisons, and the hold-out figures recorded at training time.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from typing import Any

import numpy as np

from common import artefact as registry
from common.markets import split_markets
from common.names import check_name
from common.settings import get_settings
from common.store import ObjectStore
from trainer_svc.algos import TrainConfig
from trainer_svc.dataset import horizon_index
from trainer_svc.env import build_batch
from trainer_svc.evaluate import baselines, compare, run_policy, weights_policy
from trainer_svc.job_data import JobParams, load_data
from trainer_svc.report import render
from trainer_svc.windows import segment

PAD_MS = 4 * 3_600_000  # longer than any market window


def train_config(meta: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` recorded in a version's meta (unknown keys ignored, lists back to tuples)."""
    hp = dict(meta.get("hyper_parameters") or {})
    names = {f.name for f in fields(TrainConfig)}
    kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in hp.items() if k in names}
    return TrainConfig(**kw)


def replay_windows(weights: dict[str, Any], meta: dict[str, Any], states: Any, windows: Any, select: Any) -> np.ndarray:
    """Per-window PnL (stake units) of ``weights`` on windows ``select`` of ``states``, in the environment recorded
    in the version's ``meta`` (as :func:`run_backtest` and training evaluate it)."""
    batch = build_batch(states, windows, select)
    return run_policy(batch, weights_policy(weights), "model", train_config(meta).env_kwargs()).window_pnl


def run_backtest(
    store: ObjectStore,
    policy: str,
    version: str | None = None,
    market: str | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    holdout: bool = False,
    write: bool = True,
) -> dict[str, Any]:
    """Backtest ``policy``/``version`` (default: the champion) on ``market`` (default: the version's training
    markets) over ``[from_ms, to_ms]`` (inclusive; default: everything archived, or the hold-out range)."""
    check_name(policy, "policy")
    if version is None:
        ptr = registry.champion(store, policy)
        if ptr is None:
            raise registry.ModelError(f"policy {policy} has no champion; name a --version")
        version = str(ptr["version"])
    check_name(version, "version")
    t0 = time.perf_counter()
    weights, meta = registry.load_model(store, policy, version)
    cfg = train_config(meta)
    if holdout:
        h = (meta.get("splits") or {}).get("holdout") or {}
        if "start_ms" not in h:
            raise ValueError(f"{policy}/{version} records no hold-out range")
        from_ms = int(h["start_ms"]) if from_ms is None else from_ms
        to_ms = int(h["end_ms"]) if to_ms is None else to_ms
    markets = split_markets(market or str((meta.get("data") or {}).get("market") or ""))
    if not markets:
        raise ValueError("no market given and none recorded in the version's meta")
    horizons = tuple(sorted({*get_settings().label_horizons_s, cfg.horizon_s}))
    p = JobParams(
        market=",".join(markets),
        store_url=store.url,
        from_ms=None if from_ms is None else from_ms - PAD_MS,
        to_ms=None if to_ms is None else to_ms + 1 + PAD_MS,
    )
    states, labels, info = load_data(p, horizons)
    pooled = info.pop("pooled", None) or {}
    w = pooled.get("windows") or segment(states)
    first, last = states.tick_ms[w.begin], states.tick_ms[w.end - 1]
    inside = np.ones(len(w), bool)
    if from_ms is not None:
        inside &= first >= from_ms
    if to_ms is not None:
        inside &= last <= to_ms
    select = np.flatnonzero(inside)
    if select.size == 0:
        raise ValueError("no whole window of archived states in the range")
    batch = build_batch(states, w, select)
    env_kwargs = cfg.env_kwargs()
    model = run_policy(batch, weights_policy(weights), "model", env_kwargs)
    hi = horizon_index(labels, cfg.horizon_s) if labels is not None else 0
    base = baselines(batch, labels, hi, env_kwargs, seed=cfg.seed)
    comps = {k: compare(model.window_pnl, b.window_pnl, 0.0, cfg.seed) for k, b in base.items() if k != "oracle"}
    report: dict[str, Any] = {
        "policy": policy,
        "version": version,
        "market": ",".join(markets),
        "from_ms": int(first[select].min()),
        "to_ms": int(last[select].max()),
        "requested": {"from_ms": from_ms, "to_ms": to_ms, "holdout": holdout},
        "windows": int(select.size),
        "states": int((w.end[select] - w.begin[select]).sum()),
        "env": env_kwargs,
        "metrics": {"model": model.metrics, **{k: b.metrics for k, b in base.items()}},
        "comparisons": comps,
        "recorded_holdout": {"model": meta.get("holdout_metrics"), **(meta.get("baselines_metrics") or {})},
        "data": {k: v for k, v in info.items() if k in ("labels_source", "n_states", "markets")},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if write:
        stem = f"backtests/{policy}/{version}/{report['from_ms']}-{report['to_ms']}-{'_'.join(markets)}"
        equity = {"model": model.equity_curve().tolist(), **{k: b.equity_curve().tolist() for k, b in base.items()}}
        page = {"policy": policy, "version": version, "algorithm": meta.get("algorithm", ""),
                "backend": meta.get("backend", ""), "market": report["market"],
                "holdout": report["metrics"]}  # fmt: skip
        store.put(stem + ".json", json.dumps(report, indent=1, sort_keys=True, default=_num).encode())
        store.put(stem + ".html", render(page, [], equity, heading=_heading(report)).encode())
        report["report"] = {"json": stem + ".json", "html": stem + ".html"}
    return report


def _num(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


def _heading(rep: dict[str, Any]) -> str:
    beats = [k for k, c in rep["comparisons"].items() if c["beats"]]
    return (
        f"backtest of {rep['policy']}/{rep['version']} on {rep['market']}: {rep['windows']} windows, "
        f"ticks {rep['from_ms']}..{rep['to_ms']}; beats (95 % paired bootstrap): {', '.join(beats) or 'none'}"
    )


def summary_lines(rep: dict[str, Any]) -> list[str]:
    """A human summary: one line per policy (PnL, PnL/window with its interval, trades, win rate)."""
    out = [_heading(rep)]
    for name, m in rep["metrics"].items():
        lo, hi = m["pnl_per_window_ci95"]
        c = rep["comparisons"].get(name)
        diff = f"  model minus it {c['mean_diff']:+.4f} [{c['ci_lo']:+.4f}, {c['ci_hi']:+.4f}]" if c else ""
        out.append(f"  {name:<9} pnl {m['pnl']:+.4f}  per window {m['pnl_per_window']:+.5f} [{lo:+.5f}, {hi:+.5f}]"
                   f"  trades {m['trades']}  win rate {m['win_rate']}{diff}")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    """``fusion backtest --policy P [--version V] [--market M[,M2]] [--from ISO] [--to ISO] [--holdout]``."""
    import argparse
    import sys

    from common.log import setup_logging
    from common.names import name_arg
    from common.store import open_store
    from trainer_svc.cli import _ms

    s = get_settings()
    ap = argparse.ArgumentParser(prog="fusion backtest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True, type=name_arg("policy"))
    ap.add_argument("--version", type=name_arg("version"), help="model version (default: the champion)")
    ap.add_argument("--market", help="market or comma-separated markets (default: the version's training markets)")
    ap.add_argument("--from", dest="from_", help="start: ISO date/datetime (UTC) or epoch ms")
    ap.add_argument("--to", help="end (inclusive): ISO date/datetime (UTC) or epoch ms")
    ap.add_argument("--holdout", action="store_true", help="the version's own hold-out range (from its meta.json)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON instead of the summary")
    ap.add_argument("--no-write", action="store_true", help="do not write the report to the store")
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(s.log_level, s.log_json)
    store = open_store(s.store_url, s.s3_endpoint_url, s.s3_region)
    if a.market:
        for m in split_markets(a.market):
            check_name(m, "market")
    try:
        rep = run_backtest(store, a.policy, a.version, a.market, _ms(a.from_), _ms(a.to), a.holdout, not a.no_write)
    except (registry.ModelError, ValueError) as e:
        print(f"fusion backtest: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(rep, sort_keys=True, default=_num))
    else:
        print("\n".join(summary_lines(rep)))
        if "report" in rep:
            print(f"  report: {store.url.rstrip('/')}/{rep['report']['html']}")
    return 0
