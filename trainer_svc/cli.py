"""``fusion worker | train | models | schedule`` (each ``(argv) -> int``, dispatched by fusion/cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from common.log import setup_logging
from common.markets import joined_name
from common.metrics import serve_metrics
from common.names import InvalidName, check_name, name_arg, name_list_arg
from common.schema import DERIVED_MASK, ORIGIN_MASK
from common.settings import get_settings

# --fidelity: flag bits of the states left out of training
FIDELITY = {"any": 0, "no-derived": DERIVED_MASK, "live": ORIGIN_MASK | DERIVED_MASK}


def _ms(v: str | None) -> int | None:
    """Epoch ms, or an ISO date/datetime (UTC when no zone)."""
    if v is None:
        return None
    if v.isdigit():
        return int(v)
    d = datetime.fromisoformat(v)
    return int((d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp() * 1000)


def worker_main(argv: list[str] | None = None) -> int:
    s = get_settings()
    ap = argparse.ArgumentParser(prog="fusion worker", description="RQ worker on the training queue")
    ap.add_argument("--redis-url", default=s.redis_url)
    ap.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    ap.add_argument("--monitor-interval", type=int, default=10, help="heartbeat period while a job runs (s)")
    ap.add_argument("--maintenance-interval", type=int, default=60, help="abandoned-job cleanup period (s)")
    ap.add_argument("--heartbeat-grace", type=int, default=60, help="a job is abandoned this long after its last beat")
    ap.add_argument("--name")
    ap.add_argument("--no-scheduler", action="store_true", help="do not run RQ's scheduler (retry intervals)")
    a = ap.parse_args(argv)
    setup_logging(s.log_level, s.log_json)
    serve_metrics(s.metrics_port)
    from common.lifecycle import default_instance, service_started
    from trainer_svc.worker import run_worker

    service_started("worker", a.name or default_instance(), a.redis_url)

    run_worker(
        a.redis_url,
        burst=a.burst,
        monitor_interval=a.monitor_interval,
        maintenance_interval=a.maintenance_interval,
        heartbeat_grace=a.heartbeat_grace,
        name=a.name,
        with_scheduler=not a.no_scheduler,
    )
    return 0


def _follow(r: Any, job_id: str, poll_s: float = 0.5) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from trainer_svc.jobspec import fetch

    job = fetch(r, job_id)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task(f"{job_id} queued", total=1.0)
        while True:
            job.refresh()
            st = job.get_status(refresh=False)
            meta = job.meta or {}
            bar.update(
                task,
                completed=float(meta.get("progress", 0.0)),
                description=f"{job_id} {st.value if hasattr(st, 'value') else st} {meta.get('stage', '')}",
            )
            if job.is_finished or job.is_failed or job.is_canceled or job.is_stopped:
                break
            time.sleep(poll_s)
    if job.is_finished:
        result = job.return_value() or {}
        if isinstance(result, dict) and result.get("not_trainable"):  # as the inline path: exit 2 with the reason
            print(f"fusion train: not trainable: {result['not_trainable']}", file=sys.stderr)
            return 2
        print(json.dumps(result, indent=2, default=str))
        return 0
    last = job.latest_result()
    print(f"job {job_id} ended {job.get_status()}: {last.exc_string if last else ''}", file=sys.stderr)
    return 1


def train_main(argv: list[str] | None = None) -> int:
    s = get_settings()
    ap = argparse.ArgumentParser(prog="fusion train", description="enqueue (or run inline) a training job")
    ap.add_argument(
        "--market",
        required=True,
        type=name_list_arg("market"),
        help="a market, or several comma-separated (pooled into one dataset)",
    )
    ap.add_argument("--algo", choices=("awbc", "supervised", "ppo"), default="awbc")
    ap.add_argument(
        "--policy", type=name_arg("policy"), help="registry name (default: the market; several joined with _)"
    )
    ap.add_argument("--from", dest="from_", help="start (epoch ms or ISO time)")
    ap.add_argument("--to", help="end (epoch ms or ISO time)")
    ap.add_argument("--backend", choices=("mlx", "torch", "auto"), default=s.train_backend)
    ap.add_argument("--synthetic", type=int, default=0, help="train on N generated states instead of the store")
    ap.add_argument("--synthetic-lag", type=float, default=30.0, help="lead-lag of the generated data (s); 0 = none")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--margin", type=float, default=0.0, help="promotion margin (PnL per window)")
    ap.add_argument("--no-promote", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="K=V", help="TrainConfig override (JSON value)")
    ap.add_argument("--inline", action="store_true", help="run here instead of enqueueing")
    ap.add_argument("--follow", action="store_true", help="show the job's progress until it ends")
    ap.add_argument("--redis-url", default=s.redis_url)
    ap.add_argument("--store-url", default=s.store_url)
    ap.add_argument("--data-source", choices=("recorded", "imported", "both"), default="both",
                    help="archived states to train on: live recordings, imported/backfilled ones, or both")  # fmt: skip
    ap.add_argument("--fidelity", choices=tuple(FIDELITY), default="any",
                    help="any; no-derived: without states with derived fields; live: live recordings only")  # fmt: skip
    a = ap.parse_args(argv)
    try:  # the default policy name (markets joined with _) must follow the grammar too, before any work
        check_name(a.policy or joined_name(a.market), "policy")
    except InvalidName as e:
        ap.error(f"{e}; give --policy")
    setup_logging(s.log_level, s.log_json)
    overrides: dict[str, Any] = {}
    for kvs in a.set:
        k, _, v = kvs.partition("=")
        try:
            overrides[k] = json.loads(v)
        except json.JSONDecodeError:
            overrides[k] = v
    if a.epochs is not None:
        overrides["epochs" if a.algo != "ppo" else "ppo_iters"] = a.epochs
    params = {
        "market": a.market,
        "algo": a.algo,
        "backend": a.backend,
        "policy": a.policy,
        "from_ms": _ms(a.from_),
        "to_ms": _ms(a.to),
        "synthetic": a.synthetic,
        "synthetic_lag_s": a.synthetic_lag,
        "store_url": a.store_url,
        "seed": a.seed,
        "margin": a.margin,
        "promote": not a.no_promote,
        "overrides": overrides,
        "origin": a.data_source,
        "exclude_flags": FIDELITY[a.fidelity],
    }
    import redis

    from trainer_svc.jobspec import InvalidJob, TrainingParams

    try:  # names, numbers and overrides are checked before any data is loaded or anything is enqueued
        spec = TrainingParams.parse(params)
    except InvalidJob as e:
        ap.error(str(e))
    if a.inline:
        from trainer_svc.pipeline import run_training

        def prog(f: float, info: dict[str, Any]) -> None:
            if a.follow:
                print(f"[{f * 100:5.1f}%] {json.dumps(info, default=str)}", file=sys.stderr)

        from trainer_svc.preflight import NotTrainable

        try:
            summary = run_training(spec.to_pipeline(), prog, redis=redis.Redis.from_url(a.redis_url))
        except NotTrainable as e:
            print(f"fusion train: not trainable: {e}", file=sys.stderr)
            return 2
        print(json.dumps(summary, indent=2, default=str))
        return 0
    from trainer_svc.jobs import AlreadyRunning, enqueue_training

    r = redis.Redis.from_url(a.redis_url)
    try:
        job = enqueue_training(r, params)
    except AlreadyRunning as e:
        print(f"fusion train: {e}", file=sys.stderr)
        return 3
    print(job.id)
    return _follow(r, job.id) if a.follow else 0


def models_main(argv: list[str] | None = None) -> int:
    s = get_settings()
    ap = argparse.ArgumentParser(prog="fusion models", description="model registry")
    ap.add_argument("--store-url", default=s.store_url)
    ap.add_argument("--redis-url", default=s.redis_url)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_ls = sub.add_parser("ls", help="policies, or the versions of one policy")
    p_ls.add_argument("policy", nargs="?", type=name_arg("policy"))
    p_show = sub.add_parser("show", help="meta.json of a version (default: the champion)")
    p_show.add_argument("policy", type=name_arg("policy"))
    p_show.add_argument("version", nargs="?", type=name_arg("version"))
    p_pr = sub.add_parser("promote", help="make a version the champion (publishes model-updated)")
    p_pr.add_argument("policy", type=name_arg("policy"))
    p_pr.add_argument("version", type=name_arg("version"))
    p_rb = sub.add_parser("rollback", help="re-promote the previous champion (publishes model-rolled-back)")
    p_rb.add_argument("policy", type=name_arg("policy"))
    p_rb.add_argument("--reason", default="by hand", help="why (carried by the model-rolled-back event and the alert)")
    a = ap.parse_args(argv)
    from common import artefact as registry
    from common.store import open_store

    store = open_store(a.store_url, s.s3_endpoint_url, s.s3_region)
    try:
        if a.cmd == "ls":
            if not a.policy:
                for pol in registry.list_policies(store):
                    ch = registry.champion(store, pol)
                    print(f"{pol}\tchampion={ch['version'] if ch else '-'}")
                return 0
            ch = registry.champion(store, a.policy)
            for v in registry.list_versions(store, a.policy):
                m = registry.read_meta(store, a.policy, v)
                hm = m.get("holdout_metrics", {})
                mark = "*" if ch and ch["version"] == v else " "
                print(
                    f"{mark} {v}\t{m.get('algorithm')}\t{m.get('backend')}\tpnl={hm.get('pnl')}\t"
                    f"promote={m.get('decision', {}).get('promote')}"
                )
            return 0
        if a.cmd == "show":
            ver = a.version or (registry.champion(store, a.policy) or {}).get("version")
            if not ver:
                print(f"fusion models: {a.policy} has no champion", file=sys.stderr)
                return 1
            print(json.dumps(registry.read_meta(store, a.policy, ver), indent=2))
            return 0
        import redis

        r = redis.Redis.from_url(a.redis_url)
        ptr = (
            registry.promote(store, a.policy, a.version, r)
            if a.cmd == "promote"
            else registry.rollback(store, a.policy, r, reason=a.reason)
        )
        print(json.dumps(ptr, indent=2))
        return 0
    except registry.ModelError as e:
        print(f"fusion models: {e}", file=sys.stderr)
        return 1


def schedule_main(argv: list[str] | None = None) -> int:
    s = get_settings()
    ap = argparse.ArgumentParser(prog="fusion schedule", description="enqueue training every N hours or K new labels")
    ap.add_argument("--market", action="append", type=name_arg("market"), help="repeatable (default: FUSION_MARKETS)")
    ap.add_argument("--algo", choices=("awbc", "supervised", "ppo"), default="awbc")
    ap.add_argument("--every-h", type=float, default=s.train_every_h)
    ap.add_argument("--after-states", type=int, default=s.train_after_states)
    ap.add_argument("--poll-s", type=float, default=30.0)
    ap.add_argument("--once", action="store_true", help="check once and exit")
    ap.add_argument("--redis-url", default=s.redis_url)
    a = ap.parse_args(argv)
    setup_logging(s.log_level, s.log_json)
    serve_metrics(s.metrics_port)
    import redis

    from common.names import InvalidName, check_name
    from trainer_svc.schedule import run_schedule

    markets = a.market or s.market_names
    try:
        for m in markets:
            check_name(m, "market")
    except InvalidName as e:
        ap.error(str(e))
    from common.lifecycle import default_instance, service_started

    if not a.once:
        service_started("scheduler", default_instance(), a.redis_url)
    r = redis.Redis.from_url(a.redis_url)
    run_schedule(r, markets, a.algo, a.every_h, a.after_states, a.poll_s, once=a.once)
    return 0
