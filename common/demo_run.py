"""The demo's run: start the stages, collect, train, swap, stop, report (see :mod:`common.demo`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from rich.live import Live

from common import keys
from common.demo import Demo, console
from common.log import redact_value
from common.markets import parse_market, split_markets
from common.store import LocalStore, ObjectStore, S3Store, open_store


def _env(d: Demo, sim_url: str, store: ObjectStore) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSION_")}
    env.update({
        "FUSION_REDIS_URL": d.redis_url,
        "FUSION_STORE_URL": store.url,
        **({"FUSION_S3_ENDPOINT_URL": os.environ["FUSION_S3_ENDPOINT_URL"]}
           if "FUSION_S3_ENDPOINT_URL" in os.environ else {}),
        "FUSION_CACHE_DIR": str(d.workdir / "cache"),
        "FUSION_FEED": "sim",
        "FUSION_SIM_URL": sim_url,
        "FUSION_MARKETS": ",".join(d.markets),
        "FUSION_REPLICAS": str(d.args.replicas),
        # the simulator runs 60x faster than the wall clock: discover the next window two windows ahead
        "FUSION_DISCOVERY_LEAD_S": "600",
        "FUSION_TRADER_MARKETS": ",".join(d.markets),
        "FUSION_TRADER_ID": "demo-trader",
        "FUSION_POLICY": "demo",
        "FUSION_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    })  # fmt: skip
    return env


def run_demo(a: argparse.Namespace) -> int:
    from observer_svc.sim.synthetic import SyntheticDriver
    from observer_svc.sim.thread import SimServerThread

    workdir = Path(a.dir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "logs").mkdir(parents=True)
    markets = [parse_market(m).name for m in split_markets(a.markets)]
    d = Demo(a, workdir, markets)
    r = d.start_redis()
    r.delete(*[k for m in markets for k in (keys.states_stream(m), keys.labels_stream(m))], keys.EVENTS_STREAM)
    store = _open_store(workdir)
    sim = SimServerThread(SyntheticDriver(markets, seed=a.seed, speed=a.speed, lead_lag=True, lag_s=a.lag_s)).start()
    d.env = _env(d, sim.url, store)
    interrupted = False
    report: dict[str, Any] = {}
    try:
        d.phase = "collecting"
        d.proc("observer-1", "observe", "--leases")
        d.proc("observer-2", "observe", "--leases")
        d.proc("archiver", "archive")
        d.proc("labeler", "label")
        d.proc("worker", "worker")
        d.proc("trader", "trade")
        live_view = not a.no_live and console.is_terminal
        with (
            Live(d.table(r, store), console=console, refresh_per_second=2, transient=False)
            if live_view
            else (contextlib.nullcontext()) as live
        ):
            last_line = [0.0]

            def wait(seconds: float, until: Any = None) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    d.poll_job(r)
                    if live is not None:
                        live.update(d.table(r, store))
                    elif time.monotonic() - last_line[0] > 10:
                        last_line[0] = time.monotonic()
                        console.print(d.status_line(r))
                    if until is not None and until():
                        return
                    time.sleep(0.5)

            wait(a.collect)
            report["pnl_before_swap"] = _trader(r)  # the trader so far: no model yet, so it held
            d.phase = "training"
            from trainer_svc.jobs import enqueue_training

            # no secret in the job: the worker uses its own Redis connection

            params = {"market": ",".join(markets), "algo": a.algo, "backend": "auto", "policy": "demo", "from_ms": None,
                      "to_ms": None, "synthetic": 0, "synthetic_lag_s": 0.0, "store_url": store.url,
                      "seed": 0, "margin": 0.0, "promote": True, "overrides": {}}  # fmt: skip
            d.job_id = enqueue_training(r, params).id
            wait(600, until=lambda: d.job_info.get("status") in ("finished", "failed", "stopped", "canceled"))
            # 2 cores cannot run the simulator and observers at 60x and let the trader decide on every tick
            # too: trade at a slower pace, so the new model's decisions are the ones it would make live
            sim.driver.speed = a.trade_speed
            d.phase = f"trading on the new model ({a.trade_speed:g}x)"
            wait(a.after)
            report["pnl_after_swap"] = _trader(r)
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]interrupted: stopping every stage gracefully[/]")
    finally:
        d.phase = "stopping"
        _stop_all(d)
        sim.stop()
    report.update(_report(d, r, store))
    report["interrupted"] = interrupted
    report = redact_value(report)  # credentials of any URL (Redis, store) never reach the report
    _print_report(report, d)
    if d.redis_server is not None:
        d.redis_server.stop()
    return 0 if not interrupted else 130


def _open_store(workdir: Path) -> ObjectStore:
    """S3 (or MinIO) when FUSION_STORE_URL says s3://, else a fresh local directory in the work dir."""
    url = os.environ.get("FUSION_STORE_URL", "")
    if url.startswith("s3://"):
        store = open_store(url, os.environ.get("FUSION_S3_ENDPOINT_URL"), os.environ.get("FUSION_S3_REGION"))
        assert isinstance(store, S3Store)
        store.ensure_bucket()
        return store
    return LocalStore(workdir / "store")


def _trader(r: Any) -> dict[str, Any]:
    from common.demo import _trader_status

    return _trader_status(r, "demo-trader")


def _stop_all(d: Demo) -> None:
    """Producers first, then consumers; the archiver flushes the windows still open. The observers
    are stopped together: stopping one first would hand its markets to the other, and the lease
    handover (seconds of wall time, minutes of simulated time) would show as a gap at the end."""
    with contextlib.suppress(KeyboardInterrupt):
        observers = [d.procs[n] for n in ("observer-1", "observer-2") if n in d.procs]
        for p in observers:
            p.terminate()
        for p in observers:
            p.stop()
        time.sleep(1.0)
        for name in ("trader", "labeler"):
            if name in d.procs:
                d.procs[name].stop()
        if "archiver" in d.procs:
            d.procs["archiver"].stop(60)
            final = d.proc("archiver-final", "archive", "--once", "--final")
            assert final.popen is not None
            final.popen.wait(120)
        if "worker" in d.procs:
            d.procs["worker"].stop(120)


def _report(d: Demo, r: Any, store: ObjectStore) -> dict[str, Any]:
    from archiver_svc.reader import load_market

    out: dict[str, Any] = {"workdir": str(d.workdir), "store": store.url, "redis": d.redis_url, "markets": {}}
    for m in d.markets:
        ids = [e for e, _ in r.xrange(keys.states_stream(m))]
        md = load_market(store, m)
        archived = md.states.tick_ms
        stream_ticks = [int(e.split(b"-")[0]) for e in ids]
        out["markets"][m] = {
            "states_in_stream": len(ids),
            "labels_in_stream": int(r.xlen(keys.labels_stream(m))),
            "archived_states": len(archived),
            "archived_labels": len(md.labels) if md.labels is not None else 0,
            "archive_exactly_once": sorted(set(stream_ticks)) == [int(t) for t in archived],
            "archive_problems": md.problems[:3],
            "gap_free": all(b - a == 500 for a, b in zip(stream_ticks, stream_ticks[1:], strict=False)),
        }
    events = [(e.decode(), f) for e, f in r.xrange(keys.EVENTS_STREAM)]
    out["events"] = [_decode_event(f) for _, f in events]
    out["training"] = d.job_info.get("result") or {k: v for k, v in d.job_info.items() if k != "result"}
    out["dead_letters"] = int(r.xlen(keys.DEAD_LETTER_STREAM)) if r.exists(keys.DEAD_LETTER_STREAM) else 0
    out["observer_summaries"] = {n: _last_line(p.log) for n, p in d.procs.items() if n.startswith("observer")}
    return out


def _decode_event(fields: dict[bytes, bytes]) -> dict[str, Any]:
    import msgpack

    with contextlib.suppress(Exception):
        return dict(msgpack.unpackb(fields[keys.PAYLOAD_FIELD], raw=False))
    return {"undecodable": True}


def _last_line(p: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln for ln in p.read_text(errors="replace").splitlines() if "states_added=" in ln]
        return lines[-1] if lines else ""
    return ""


def _print_report(rep: dict[str, Any], d: Demo) -> None:
    from rich.table import Table

    t = Table(title="fusion demo: what each stage produced")
    for c in ("market", "states", "labels", "archived states", "archived labels", "exactly once", "gap-free"):
        t.add_column(c, justify="right")
    for m, x in rep["markets"].items():
        t.add_row(m, f"{x['states_in_stream']:,}", f"{x['labels_in_stream']:,}", f"{x['archived_states']:,}",
                  f"{x['archived_labels']:,}", str(x["archive_exactly_once"]), str(x["gap_free"]))  # fmt: skip
    console.print(t)
    console.print({"training": rep.get("training"), "events": rep.get("events")})
    for label, key in (("before the swap", "pnl_before_swap"), ("after the swap", "pnl_after_swap")):
        st = rep.get(key) or {}
        pnl = st.get("pnl") or {}
        console.print(f"trader {label}: model={st.get('model')} ticks={st.get('ticks')} decisions="
                      f"{st.get('decisions')} missed={st.get('missed_ticks')} fills={pnl.get('fills')} "
                      f"realised=${pnl.get('realised_usd', 0):.2f} equity=${pnl.get('equity_usd', 0):.2f}")  # fmt: skip
    console.print(f"observers: {rep['observer_summaries']}")
    console.print(f"dead letters: {rep['dead_letters']}   files: {rep['workdir']} (store {rep['store']}, "
                  f"logs {d.workdir / 'logs'})")  # fmt: skip
    rep = redact_value(rep)
    (d.workdir / "report.json").write_text(json.dumps(rep, indent=2, default=str))
    print(json.dumps({k: rep[k] for k in ("markets", "training", "events")}, indent=2, default=str))
